//! The supervisor's admin requests (`POST /api/scale`, `/api/kill`, `/api/down`) and their
//! answers. Errors come back as [`crate::Problem`].

use serde::{Deserialize, Serialize};

/// `POST /api/scale`: set the relay count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    /// Relays wanted, from 1 to the stack's `--max-relays`.
    pub relays: u32,
}

/// What `ghost chaos` kills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// One running relay, picked at random (`relay:random` on the wire).
    RandomRelay,
    /// The service of this name (`relay-2`, `control`, ...).
    Service(String),
}

const RANDOM_RELAY: &str = "relay:random";

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Target, String> {
        match s.as_str() {
            RANDOM_RELAY => Ok(Target::RandomRelay),
            "" => Err("the target names no service".into()),
            _ => Ok(Target::Service(s)),
        }
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        match t {
            Target::RandomRelay => RANDOM_RELAY.into(),
            Target::Service(name) => name,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::RandomRelay => f.write_str("a random relay"),
            Target::Service(name) => f.write_str(name),
        }
    }
}

/// The longest a killed service may be held down: long enough for any drill, short enough
/// that a mistake does not leave the stack broken for long.
pub const MAX_HOLD_MS: u64 = 10 * 60 * 1000;

/// `POST /api/kill`: kill a service as a crash would (SIGKILL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// What to kill.
    pub target: Target,
    /// Keep it down this long before the supervisor may restart it, milliseconds; at most
    /// [`MAX_HOLD_MS`].
    #[serde(default)]
    pub hold_ms: Option<u64>,
}

/// The answer to a kill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    /// The services killed.
    pub killed: Vec<String>,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// The answer to `POST /api/down`, once every service has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    /// Always true: the stack is down.
    pub down: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_targets_keep_their_wire_form() {
        let random = Kill {
            target: Target::RandomRelay,
            hold_ms: None,
        };
        let json = serde_json::to_string(&random).expect("json");
        assert_eq!(json, r#"{"target":"relay:random","hold_ms":null}"#);
        let named: Kill = serde_json::from_str(r#"{"target":"relay-2"}"#).expect("parse");
        assert_eq!(named.target, Target::Service("relay-2".into()));
        assert!(serde_json::from_str::<Kill>(r#"{"target":""}"#).is_err());
    }
}
