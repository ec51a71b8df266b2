//! The supervisor's status: `GET /api/status` and `ghost status --json`. The status page
//! renders this very shape.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The control plane (gRPC, in memory only).
    Control,
    /// The ingest gateway (QUIC from streamers).
    Ingest,
    /// A relay (QUIC to viewers); there may be many.
    Relay,
    /// The viewer gateway (HTTP).
    Gateway,
}

impl Kind {
    /// Lower-case name, as in image names, labels and service names.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Control => "control",
            Kind::Ingest => "ingest",
            Kind::Relay => "relay",
            Kind::Gateway => "gateway",
        }
    }
}

/// What a listening address is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Control's gRPC.
    Grpc,
    /// Media over QUIC (UDP): ingest and relays.
    Quic,
    /// The viewer gateway's HTTP API.
    Http,
    /// The viewer gateway's HTTPS (a stack reached at a public name or address).
    Https,
    /// RTMP (TCP) from encoders such as OBS: ingest.
    Rtmp,
    /// The ops listener (`/health`, `/metrics`).
    Ops,
}

impl Role {
    /// Lower-case name, as in the readiness line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Grpc => "grpc",
            Role::Quic => "quic",
            Role::Http => "http",
            Role::Https => "https",
            Role::Rtmp => "rtmp",
            Role::Ops => "ops",
        }
    }
}

/// Where a service is in its life, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not started yet, or stopped by `ghost down` or a scale-down.
    Stopped,
    /// A start is under way.
    Starting,
    /// Started and announced ready.
    Running,
    /// Exited; a restart is due after back-off.
    Restarting,
    /// Killed with a hold-down (`ghost chaos kill --hold`); restarted when it ends.
    Held,
    /// Restarted too often: left down for a long back-off, then tried again.
    Failed,
}

impl State {
    /// Lower-case name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Held => "held",
            State::Failed => "failed",
        }
    }
}

/// A running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service's name in the stack (`relay-2`).
    pub name: String,
    /// Process id on this host (the container's main process under Docker).
    pub pid: Option<u32>,
    /// Container id, under Docker.
    pub container: Option<String>,
    /// Where it listens, by role, as reachable from this host.
    pub addrs: BTreeMap<Role, SocketAddr>,
    /// Which start of the service this is (1 for the first), to tell an old instance's exit
    /// from the current one's.
    pub generation: u64,
    /// The Swarm node it runs on (its host name), under the Swarm runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A machine of the cluster, under the Swarm runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Swarm's node id.
    pub id: String,
    /// Its host name.
    pub hostname: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `active`, `pause` or `drain`: whether it takes new relays.
    pub availability: String,
    /// `ready`, `down`, `disconnected` or `unknown`, as Swarm last saw it.
    pub state: String,
    /// The address viewers reach its relays at.
    pub address: String,
    /// CPUs it offers.
    pub cpus: f64,
    /// Relays of the stack placed there.
    pub relays: u32,
}

/// Resources an instance uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU seconds since it started, user and system.
    pub cpu_s: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// One service of the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Its name in the stack: `control`, `ingest`, `gateway`, `relay-1`, ...
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Where it is in its life.
    pub state: State,
    /// Whether its last health probe answered.
    pub healthy: bool,
    /// Restarts since the stack came up.
    pub restarts: u64,
    /// The running instance.
    pub instance: Option<Instance>,
    /// Its resource use, read when the status was asked for.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// How the previous instance ended.
    pub last_exit: Option<String>,
}

/// What a timeline entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A service started.
    Start,
    /// A start failed; a retry follows after back-off.
    StartFailed,
    /// An instance exited (crash, kill or stop).
    Exit,
    /// A service is being restarted.
    Restart,
    /// A service stopped answering its health probe and was killed.
    Unhealthy,
    /// Killed on purpose (`ghost chaos`).
    Kill,
    /// The relay count changed.
    Scale,
    /// A relay was removed.
    ScaleDown,
    /// Control asked for capacity: viewers were refused.
    Capacity,
    /// A service restarted too often and was left down.
    CrashLoop,
    /// An idle relay stopped taking viewers before its removal.
    Drain,
    /// A restarted supervisor kept a service already running.
    Adopt,
    /// The stack is stopping.
    Down,
    /// The runtime (the Docker Engine) stopped answering; restarts wait for it.
    RuntimeLost,
    /// The runtime answers again; what went meanwhile is restarted.
    RuntimeBack,
}

/// One entry of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// To which service.
    pub service: String,
    /// Details for people.
    pub detail: String,
}

/// One point of the status page's charts, taken every second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Viewers on all relays.
    pub viewers: u32,
    /// Bytes sent by all relays since they started; the page derives egress from it.
    pub bytes_sent: u64,
    /// Viewers refused for capacity since control started.
    pub rejections: u64,
}

/// A live stream, as control knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// Its id, stable for the stream's life.
    pub id: String,
    /// The name its publisher announced.
    pub name: String,
    /// When it went live, Unix microseconds.
    pub started_at_us: u64,
    /// Viewers on all relays.
    pub viewers: u32,
    /// How its publisher reaches ingest.
    #[serde(default)]
    pub protocol: crate::Protocol,
}

/// Viewers of one stream on one relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStream {
    /// The stream carried.
    pub stream_id: String,
    /// Its viewers on this relay.
    pub viewers: u32,
}

/// A relay, as control's directory knows it from its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// Relay id (its service name).
    pub id: String,
    /// Where viewers reach it.
    pub addr: String,
    /// Viewers it admits at most.
    pub capacity: u32,
    /// Viewers now.
    pub viewers: u32,
    /// Bytes sent to viewers since it started.
    pub bytes_sent: u64,
    /// Groups skipped for slow viewers since it started.
    pub groups_skipped: u64,
    /// False while draining: no new viewer is placed there.
    pub accepting: bool,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    /// The streams it carries.
    pub streams: Vec<RelayStream>,
}

/// The whole status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `process` or `docker`.
    pub runtime: String,
    /// Whether every service is up and healthy.
    pub ready: bool,
    /// Services in start order.
    pub services: Vec<Service>,
    /// Relays the supervisor keeps running now.
    pub relays_wanted: u32,
    /// Relays at most, when scaling on demand.
    pub max_relays: u32,
    /// Viewers per relay, at most.
    pub relay_capacity: u32,
    /// Live streams (empty when control cannot be reached: see `control_error`).
    pub streams: Vec<Stream>,
    /// Relays in control's directory.
    pub relays: Vec<Relay>,
    /// Viewers placed since control started.
    pub joins: u64,
    /// Viewers refused for capacity since control started.
    pub rejections: u64,
    /// Why control's view is missing, when it is.
    pub control_error: Option<String>,
    /// Why the runtime (the Docker Engine) cannot be reached, while it cannot: services
    /// that stop meanwhile are restarted once it is back.
    #[serde(default)]
    pub runtime_error: Option<String>,
    /// The viewer gateway as this host reaches it: where the web app and each stream's
    /// watch page are (`{gateway_url}/watch/{id}`).
    #[serde(default)]
    pub gateway_url: Option<String>,
    /// The cluster's machines, under the Swarm runtime (empty otherwise).
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// The timeline, oldest first.
    pub events: Vec<Event>,
    /// Chart samples, oldest first.
    pub history: Vec<Sample>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    #[test]
    fn a_stream_names_its_protocol_and_one_from_before_the_field_is_quic() {
        let stream = Stream {
            id: "s1".into(),
            name: "cats".into(),
            started_at_us: 1,
            viewers: 0,
            protocol: Protocol::Rtmp,
        };
        let json = serde_json::to_string(&stream).expect("json");
        assert_eq!(
            json,
            r#"{"id":"s1","name":"cats","started_at_us":1,"viewers":0,"protocol":"rtmp"}"#
        );
        let older: Stream =
            serde_json::from_str(r#"{"id":"s1","name":"cats","started_at_us":1,"viewers":0}"#)
                .expect("parse");
        assert_eq!(older.protocol, Protocol::Quic);
    }
}
