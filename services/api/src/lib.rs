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
//! - [`Problem`]: the body of every HTTP error answer.

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
