//! The readiness line: once a service listens, it prints one JSON line on stdout naming its
//! bound addresses, e.g. `{"ready":"relay","quic":"127.0.0.1:4500","ops":"127.0.0.1:9200"}`.
//! The supervisor reads it from a process's stdout or a container's log, which lets every
//! port be 0 in tests and tells the supervisor where each service really listens.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::status::{Kind, Role};

/// One readiness line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Which service is ready.
    pub ready: Kind,
    /// Where it listens, by role.
    #[serde(flatten)]
    pub addrs: BTreeMap<Role, SocketAddr>,
}

impl Ready {
    /// Reads a line of a service's output: `Some` only for a readiness line, so log lines
    /// that share the stream are passed over.
    pub fn parse(line: &str) -> Option<Ready> {
        let line = line.trim();
        if !line.starts_with('{') || !line.contains("\"ready\"") {
            return None;
        }
        serde_json::from_str(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readiness_line_reads_back_and_a_log_line_does_not() {
        let ready = Ready {
            ready: Kind::Relay,
            addrs: BTreeMap::from([
                (Role::Quic, "127.0.0.1:4500".parse().expect("addr")),
                (Role::Ops, "127.0.0.1:9200".parse().expect("addr")),
            ]),
        };
        let line = serde_json::to_string(&ready).expect("json");
        assert_eq!(
            line,
            r#"{"ready":"relay","quic":"127.0.0.1:4500","ops":"127.0.0.1:9200"}"#
        );
        assert_eq!(Ready::parse(&line), Some(ready));
        assert_eq!(Ready::parse(r#"{"level":"INFO","msg":"ready soon"}"#), None);
        assert_eq!(Ready::parse("ready"), None);
    }
}
