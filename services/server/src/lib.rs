//! The plumbing every Ghost Stream service binary shares, kept apart from the data path
//! (`transport`) so that a change to logging or probes never touches how a frame travels.
//!
//! - [`ops`]: the ops listener (`/health`, `/metrics`), apart from the public ports;
//! - [`telemetry`]: the tracing subscriber, installed once per binary;
//! - [`shutdown`]: one drain signal per process, from SIGINT or SIGTERM;
//! - [`ready`]: the readiness line the supervisor reads to learn the bound ports;
//! - [`binary`]: the `main` of every service binary, with the `health` subcommand;
//! - [`args`]: the flags several services share;
//! - [`control`]: the control-plane client and the heartbeat loop;
//! - [`clock`]: wall-clock times, as frames and timelines carry them;
//! - [`challenge`]: ACME http-01 challenge responses, served from files.

#![forbid(unsafe_code)]

pub mod args;
pub mod binary;
pub mod challenge;
pub mod clock;
pub mod control;
pub mod flags;
pub mod ops;
pub mod process;
pub mod ready;
pub mod shutdown;
pub mod telemetry;
