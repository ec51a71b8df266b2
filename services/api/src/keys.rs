//! What `ghost keys list --json` prints: the stream keys a stack knows, by name. Never the
//! keys themselves: the store keeps only their SHA-256, and a key is shown once, when made.

use serde::{Deserialize, Serialize};

/// One stream key, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The stream name a publisher presenting this key goes live under.
    pub name: String,
    /// When the key was made (RFC 3339, UTC, seconds).
    pub created_at: String,
}
