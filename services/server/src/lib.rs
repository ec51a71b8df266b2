//! The plumbing every Ghost Stream service binary shares, kept apart from the data path
//! (`transport`) so that a change to logging or probes never touches how a frame travels.
//!
//! - [`ops`]: the ops listener (`/health`, `/metrics`), apart from the public ports;
//! - [`telemetry`]: the tracing subscriber, installed once per binary;
//! - [`shutdown`]: one drain signal per process, from SIGINT or SIGTERM;
//! - [`ready`]: the readiness line the supervisor reads to learn the bound ports;
//! - [`health`]: the `health` subcommand an image's HEALTHCHECK runs;
//! - [`control`]: the control-plane client and the heartbeat loop.

#![forbid(unsafe_code)]

pub mod control;
pub mod health;
pub mod ops;
pub mod ready;
pub mod shutdown;
pub mod telemetry;
