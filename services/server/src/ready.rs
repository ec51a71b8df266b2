//! The readiness line ([`api::ready::Ready`]): once a service listens, it prints one JSON
//! line on stdout naming its bound addresses. The supervisor reads it, which lets every port
//! be 0 in tests and tells it where each service really listens.

use std::io::Write;
use std::net::SocketAddr;

use api::ready::Ready;
use api::status::{Kind, Role};

/// Prints the readiness line for `service` with its bound addresses.
pub fn announce(service: Kind, addrs: &[(Role, SocketAddr)]) {
    let ready = Ready {
        ready: service,
        addrs: addrs.iter().copied().collect(),
    };
    let Ok(line) = serde_json::to_string(&ready) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    // Nobody may be reading stdout (a service run by hand); that is not an error.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
