//! Exit codes of the `ghost` CLI, a stable interface for scripts:
//! 0 success or the stream ended normally; 2 usage; 3 rejected for capacity; 4 no such
//! stream; 5 connection lost (relay or ingest died); 1 anything else. The codes and the
//! [`Exit`] error are the clients' outcomes ([`clients::exit`]).

pub use clients::exit::{Exit, FAILURE, LOST, NOT_FOUND, OK, REJECTED, USAGE};

/// The exit code for an error: [`USAGE`] for a certificate the operator named that cannot be
/// used, else that of the first error in its chain that carries one
/// ([`clients::exit_code_in`]), else [`FAILURE`].
pub fn code_of(error: &anyhow::Error) -> i32 {
    if error
        .chain()
        .filter_map(|e| e.downcast_ref::<orchestrator::certificate::Error>())
        .any(orchestrator::certificate::Error::is_usage)
    {
        USAGE
    } else {
        error
            .chain()
            .find_map(clients::exit_code_in)
            .unwrap_or(FAILURE)
    }
}

/// The CLI's standard output was closed by its reader (`ghost status | head -1`): the
/// command ends quietly with [`OK`], as any Unix filter does.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed by its reader")]
pub struct StdoutClosed;

/// The error of a write to standard output: [`StdoutClosed`] for a reader that went away.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}
