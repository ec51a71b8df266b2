//! What only the Swarm runtime meets, as one error type the runtime's own wraps.

use std::time::Duration;

/// What only the Swarm runtime meets: a swarm this engine does not manage, and relays
/// Swarm would not place or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This engine is no manager of an active swarm.
    #[error(
        "this Docker Engine is not a Swarm manager (swarm state: {state}); run `docker swarm init` \
         here (or join the swarm as a manager) first, or use --runtime docker"
    )]
    NotManager {
        /// The engine's swarm state (`inactive`, `pending`, ...).
        state: String,
    },
    /// No node can take a relay.
    #[error(transparent)]
    NoMachine(#[from] crate::policy::placement::NoMachine),
    /// A relay's task ended before it ran.
    #[error("{name} did not start: {reason}")]
    TaskEnded {
        /// The relay.
        name: String,
        /// Swarm's reason.
        reason: String,
    },
    /// A relay's task did not run in time.
    #[error("{name} did not run within {timeout:?}: {last}")]
    TaskTimeout {
        /// The relay.
        name: String,
        /// How long it was given.
        timeout: Duration,
        /// The last reason Swarm gave for waiting.
        last: String,
    },
}
