//! Ghost Stream's JSON contracts.
//!
//! Every JSON shape that crosses a process boundary is declared here once, as a serde type,
//! and used by the server that writes it, by the `ghost` CLI that reads it and by the tests.
//! A field renamed on one side therefore fails to compile on the other, instead of turning
//! into a silent `null` at run time. These shapes are a stable interface: scripts read
//! `ghost ... --json`, and operators read `/api/status`.
//!
//! - [`gateway`]: the viewer gateway's answers (`GET /streams`, `POST /streams/{id}/join`);
//! - [`status`]: the supervisor's `/api/status` and `ghost status --json`;
//! - [`admin`]: the supervisor's admin requests and their answers;
//! - [`ready`]: the readiness line every service prints once it listens;
//! - [`client`]: what `ghost publish`, `ghost watch` and `ghost bench` print with `--json`;
//! - [`keys`]: what `ghost keys list --json` prints;
//! - [`Problem`]: the body of every HTTP error answer;
//! - [`Protocol`]: how a stream's publisher reaches ingest, in the gateway's and the status's
//!   streams.

#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod gateway;
pub mod keys;
pub mod ready;
pub mod status;

use serde::{Deserialize, Serialize};

/// The body of an HTTP error answer, from the gateway and the supervisor alike: a stable,
/// machine-readable `error` kind and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A stable kind, e.g. `not_found`, `no_capacity`, `bad_request`, `forbidden`.
    pub error: String,
    /// What went wrong, for people.
    pub reason: String,
}

impl Problem {
    /// A problem of `kind`, explained by `reason`.
    pub fn new(kind: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            error: kind.into(),
            reason: reason.into(),
        }
    }
}

/// How a stream's publisher reaches the ingest gateway. In JSON, `"quic"` or `"rtmp"`; in
/// control's gRPC messages, the same names in a string field, where empty (from an ingest
/// older than the field) means QUIC.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Ghost Stream's own publishing over QUIC (`ghost publish`). The default, so JSON from
    /// before the field reads as what every stream then was.
    #[default]
    Quic,
    /// RTMP, as OBS and most hardware and software encoders speak it.
    Rtmp,
}

impl Protocol {
    /// Lower-case name, as in the JSON and in control's gRPC messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Quic => "quic",
            Protocol::Rtmp => "rtmp",
        }
    }

    /// The protocol a gRPC message names; empty is QUIC, anything unknown is `None`.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "" | "quic" => Some(Protocol::Quic),
            "rtmp" => Some(Protocol::Rtmp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_keep_their_names_and_empty_is_quic() {
        for p in [Protocol::Quic, Protocol::Rtmp] {
            assert_eq!(Protocol::from_name(p.as_str()), Some(p));
            let json = serde_json::to_string(&p).expect("json");
            assert_eq!(json, format!("\"{p}\""));
        }
        assert_eq!(Protocol::from_name(""), Some(Protocol::Quic));
        assert_eq!(Protocol::from_name("RTMP"), None);
        assert_eq!(Protocol::from_name("srt"), None);
    }
}
