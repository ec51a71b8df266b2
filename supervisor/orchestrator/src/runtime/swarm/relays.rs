//! The relays the runtime placed and the swarm's nodes as last read: what the runtime's
//! calls and its poller share.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::nodes::NodeView;

/// Where one relay runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) generation: u64,
    /// Swarm's service id; empty until created.
    pub(super) service: String,
    /// The node it is pinned to.
    pub(super) node: String,
    /// Started and ready: from now on, its end is an exit the poller reports.
    pub(super) running: bool,
}

/// What the runtime's calls and its poller share.
#[derive(Default)]
pub(super) struct Shared {
    /// Relays being started, started or adopted, and not stopped since.
    relays: Mutex<HashMap<String, Placed>>,
    /// The swarm's nodes as last read.
    nodes: Mutex<Vec<NodeView>>,
    /// This manager's node id.
    self_id: Mutex<String>,
    /// The node each relay was last lost on (it died there, or never ran), which its
    /// replacement avoids.
    lost_on: Mutex<HashMap<String, String>>,
}

impl Shared {
    pub(super) fn relays(&self) -> MutexGuard<'_, HashMap<String, Placed>> {
        self.relays.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn nodes(&self) -> Vec<NodeView> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn set_nodes(&self, nodes: Vec<NodeView>) {
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes;
    }

    pub(super) fn self_id(&self) -> String {
        self.self_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn set_self_id(&self, id: String) {
        *self.self_id.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// Notes that relay `name` was lost on `node`.
    pub(super) fn lost(&self, name: &str, node: String) {
        self.lost_on
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), node);
    }

    /// The node relay `name` was last lost on, forgotten as it is read.
    pub(super) fn take_lost(&self, name: &str) -> Option<String> {
        self.lost_on
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// Forgets `name`'s relay if it is still generation `generation`.
    pub(super) fn forget(&self, name: &str, generation: u64) -> Option<Placed> {
        let mut relays = self.relays();
        if relays.get(name).is_some_and(|p| p.generation == generation) {
            relays.remove(name)
        } else {
            None
        }
    }
}
