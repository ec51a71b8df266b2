//! The viewer gateway's JSON answers.

use serde::{Deserialize, Serialize};

/// `Problem::error` when no relay has room: the answer is 503 with `Retry-After`.
pub const NO_CAPACITY: &str = "no_capacity";
/// `Problem::error` for an unknown stream (404).
pub const NOT_FOUND: &str = "not_found";
/// `error` of a join refused because the client's address made too many (HTTP 429).
pub const TOO_MANY_JOINS: &str = "too_many_joins";

/// One live stream, as `GET /streams` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// Stream id, stable for the stream's life.
    pub id: String,
    /// The name its publisher announced.
    pub name: String,
    /// When it went live, RFC 3339, for people.
    pub started_at: String,
    /// When it went live, Unix microseconds, for programs.
    pub started_at_us: u64,
    /// Viewers as of the relays' last heartbeats (up to about half a second old).
    pub viewers: u32,
    /// How its publisher reaches ingest.
    #[serde(default)]
    pub protocol: crate::Protocol,
}

/// Where to watch a stream: the answer to `POST /streams/{id}/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Stream id (the request may have named the stream instead).
    pub stream_id: String,
    /// The relay chosen, as control's directory knows it.
    pub relay_id: String,
    /// The relay's QUIC address, host:port.
    pub relay_addr: String,
    /// The TLS server name the relay's certificate is valid for.
    pub server_name: String,
    /// SHA-256 of the relay's certificate, hex: a client without the stack's CA pins this.
    pub cert_sha256: String,
    /// The join ticket, hex, presented to the relay; short-lived and valid for that relay only.
    pub ticket: String,
    /// The relay's certificate is the operator's, from a public CA: verify it by name and do
    /// not pin it (browsers pin only certificates of at most 14 days). False: the stack's own,
    /// verified by the stack's CA or by `cert_sha256`.
    #[serde(default)]
    pub cert_public: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    #[test]
    fn a_stream_names_its_protocol_and_one_from_before_the_field_is_quic() {
        let stream = Stream {
            id: "s1".into(),
            name: "cats".into(),
            started_at: "2025-01-01T00:00:00.000Z".into(),
            started_at_us: 1,
            viewers: 2,
            protocol: Protocol::Rtmp,
        };
        let json = serde_json::to_string(&stream).expect("json");
        assert!(json.contains(r#""protocol":"rtmp""#), "{json}");
        assert_eq!(
            serde_json::from_str::<Stream>(&json).expect("parse"),
            stream
        );
        let older: Stream = serde_json::from_str(
            r#"{"id":"s1","name":"cats","started_at":"2025-01-01T00:00:00.000Z","started_at_us":1,"viewers":2}"#,
        )
        .expect("parse");
        assert_eq!(older.protocol, Protocol::Quic);
    }
}
