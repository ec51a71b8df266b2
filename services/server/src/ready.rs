//! The readiness line: once a service listens, it prints one JSON line on stdout naming its
//! bound addresses, e.g. `{"ready":"relay","quic":"127.0.0.1:4500","ops":"127.0.0.1:9200"}`.
//! The supervisor's process runtime reads it, which lets every port be 0 in tests.

use std::io::Write;

use serde_json::{Map, Value};

/// Prints the readiness line for `service` with its named addresses.
pub fn announce(service: &str, addrs: &[(&str, String)]) {
    let mut obj = Map::new();
    obj.insert("ready".into(), Value::String(service.into()));
    for (name, addr) in addrs {
        obj.insert((*name).into(), Value::String(addr.clone()));
    }
    let mut out = std::io::stdout().lock();
    // Nobody may be reading stdout (a service run by hand); that is not an error.
    let _ = writeln!(out, "{}", Value::Object(obj));
    let _ = out.flush();
}
