//! What every Ghost Stream service shares.
//!
//! - [`quic`]: transport settings, ALPNs, session-stream messaging and close codes;
//! - [`tls`]: the stack's certificates (made once by `ghost up`) and rustls configs;
//! - [`track`]: the in-memory live buffer of one stream, holding only its newest groups;
//! - [`fanout`]: sending a track to one subscriber with group skipping, and receiving one;
//! - [`ops`]: the ops HTTP listener (`/health`, `/metrics`);
//! - [`telemetry`], [`shutdown`], [`clock`], [`ready`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod control;
pub mod fanout;
pub mod ops;
pub mod quic;
pub mod ready;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod track;
