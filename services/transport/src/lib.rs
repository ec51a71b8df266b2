//! How media travels between Ghost Stream's processes: the data path of every frame. Its
//! certificates and rustls configurations come from the `identity` crate.
//!
//! - [`admit`]: who may open a connection (per-source caps, Retry under a flood);
//! - [`quic`]: transport settings, ALPNs and session-stream messaging;
//! - [`peer`]: what the data path needs of a connection, native QUIC or WebTransport;
//! - [`track`]: the in-memory live buffer of one stream, holding only its newest group;
//! - [`fanout`]: sending a track to one subscriber with group skipping, and receiving one;
//! - [`ws`]: the TCP carrier, QUIC-style streams over one WebSocket for viewers without UDP;
//! - [`one_stream`]: the TCP carrier's framing on one QUIC stream, a benchmark's control case.

#![forbid(unsafe_code)]

pub mod admit;
pub mod fanout;
pub mod one_stream;
pub mod peer;
pub mod quic;
pub mod track;
pub mod ws;
