//! Outcomes of a client, as the exit codes of the `ghost` CLI, a stable interface for scripts:
//! 0 success or the stream ended normally; 2 usage; 3 rejected for capacity; 4 no such
//! stream; 5 connection lost (relay or ingest died); 1 anything else.

/// Success, or the stream ended normally.
pub const OK: i32 = 0;
/// Anything else.
pub const FAILURE: i32 = 1;
/// Bad usage (clap's own code for it).
pub const USAGE: i32 = 2;
/// Refused for capacity.
pub const REJECTED: i32 = 3;
/// No such stream.
pub const NOT_FOUND: i32 = 4;
/// The connection to a relay or to ingest was lost.
pub const LOST: i32 = 5;

/// An error that carries the exit code the CLI ends with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// Process exit code.
    pub code: i32,
    /// What to tell the user.
    pub message: String,
}

impl Exit {
    /// An error ending the CLI with `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Exit {
        Exit {
            code,
            message: message.into(),
        }
    }
}

/// A client's error that may carry an outcome for scripts.
pub trait Outcome {
    /// The outcome this error carries, if it is one.
    fn exit(&self) -> Option<&Exit>;

    /// The exit code this error ends the CLI with: its outcome's, else [`FAILURE`].
    fn code(&self) -> i32 {
        self.exit().map_or(FAILURE, |e| e.code)
    }
}
