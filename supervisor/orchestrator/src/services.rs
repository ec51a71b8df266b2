//! The stack's services in one table: for each kind its binary, the addresses it listens on
//! (with their default host ports and their ports inside a container), and its command line,
//! flag by flag, including the services it connects to.
//!
//! Both runtimes build command lines from this table through [`args`]; what differs between
//! them (loopback addresses and state paths for processes, service names and mounts inside a
//! container network for Docker) is a [`Site`]. A flag changes here, once, for both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use api::status::{Kind, Role};
use serde::Serialize;

use identity::Role as TlsRole;

use crate::stack::StateDir;

/// Host ports of the stack; 0 everywhere gives ephemeral ports (tests), pinned after the
/// first bind so a restarted service keeps its address.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ports {
    /// Control gRPC.
    pub control: u16,
    /// Ingest QUIC/UDP.
    pub ingest: u16,
    /// Ingest RTMP/TCP (encoders such as OBS).
    pub rtmp: u16,
    /// First relay's QUIC/UDP port; relay N uses base + N - 1.
    pub relay_base: u16,
    /// Viewer gateway HTTP: the page and API on a loopback stack; ACME challenges and the
    /// redirect to HTTPS on a stack with a public certificate.
    pub gateway: u16,
    /// Viewer gateway HTTPS, on a stack with a public certificate only.
    pub https: u16,
    /// Supervisor HTTP (status page, API, /metrics).
    pub http: u16,
    /// Supervisor gRPC (capacity requests).
    pub grpc: u16,
    /// Ops listeners: control base, ingest base + 1, relay N base + 100 + N.
    pub ops_base: u16,
}

impl Ports {
    /// The documented defaults.
    pub const DEFAULT: Ports = Ports {
        control: 7000,
        ingest: 4433,
        rtmp: 1935,
        relay_base: 4500,
        gateway: 8080,
        https: 443,
        http: 7070,
        grpc: 7071,
        ops_base: 9100,
    };

    /// The gateway's plain-HTTP port on a stack that serves HTTPS: where a CA looks for
    /// http-01 challenges and where browsers go for `http://NAME/`.
    pub const PUBLIC_HTTP: u16 = 80;

    /// Every port ephemeral.
    pub const EPHEMERAL: Ports = Ports {
        control: 0,
        ingest: 0,
        rtmp: 0,
        relay_base: 0,
        gateway: 0,
        https: 0,
        http: 0,
        grpc: 0,
        ops_base: 0,
    };
}

/// Which of [`Ports`] a listener's default host port counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// [`Ports::control`].
    Control,
    /// [`Ports::ingest`].
    Ingest,
    /// [`Ports::rtmp`].
    Rtmp,
    /// [`Ports::relay_base`].
    Relay,
    /// [`Ports::gateway`].
    Gateway,
    /// [`Ports::https`].
    Https,
    /// [`Ports::ops_base`].
    Ops,
}

/// A default host port: `base + step`, plus N - 1 for relay N, so relays side by side never
/// share one. A base of 0 means ephemeral, whatever the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// Where it counts from.
    pub base: Base,
    /// How far from the base.
    pub step: u16,
}

impl Port {
    /// The host port for the service of `index` (relay number, 0 for the others).
    pub fn resolve(self, ports: &Ports, index: u32) -> u16 {
        let base = match self.base {
            Base::Control => ports.control,
            Base::Ingest => ports.ingest,
            Base::Rtmp => ports.rtmp,
            Base::Relay => ports.relay_base,
            Base::Gateway => ports.gateway,
            Base::Https => ports.https,
            Base::Ops => ports.ops_base,
        };
        if base == 0 {
            return 0;
        }
        let ordinal = u16::try_from(index.saturating_sub(1)).unwrap_or(u16::MAX);
        base.saturating_add(self.step).saturating_add(ordinal)
    }
}

/// The transport of a listener, which Docker needs to publish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP (QUIC).
    Udp,
    /// UDP and TCP on the same port number: a relay's QUIC and its WebSocket carrier.
    UdpAndTcp,
}

impl Transport {
    /// The protocols it needs published, as in Docker's port keys (`4500/udp`).
    pub fn protocols(self) -> &'static [&'static str] {
        match self {
            Transport::Tcp => &["tcp"],
            Transport::Udp => &["udp"],
            Transport::UdpAndTcp => &["udp", "tcp"],
        }
    }
}

/// One address a service listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// What it is for.
    pub role: Role,
    /// Its default host port.
    pub port: Port,
    /// The port inside a container, the same for every instance: each container has its
    /// own network namespace, and the host port is what tells relays apart.
    pub container_port: u16,
    /// Its transport.
    pub transport: Transport,
    /// Whether `--public` exposes it beyond this host (viewers and streamers reach it);
    /// the others stay on loopback whatever the flag.
    pub public: bool,
    /// The stack's setting it exists under; `None`: always.
    pub when: Option<When>,
}

impl Listen {
    /// Whether `spec`'s service has this listener.
    pub fn active(&self, spec: &Spec) -> bool {
        self.when.is_none_or(|when| spec.holds(when))
    }
}

/// A service another one connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A service of the stack, at its listener of that role.
    Service(Kind, Role),
    /// The supervisor's capacity API.
    Supervisor,
}

/// A file of the state directory a service reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    /// A service's own TLS directory: the CA certificate and that service's certificates
    /// and keys, never another's nor the CA key. A directory, so that a renewed
    /// certificate replaced by rename is seen through a container's mount.
    Tls(TlsRole),
    /// The join-ticket key shared by control and relays.
    TicketKey,
    /// The stream keys' directory, read by ingest. A directory, so that a key file
    /// replaced by rename is seen through a container's mount.
    KeysDir,
    /// ACME http-01 challenge responses, read by the gateway.
    AcmeChallenges,
}

impl File {
    /// Where it is in the state directory `state`.
    pub fn path_in(self, state: &StateDir) -> PathBuf {
        match self {
            File::Tls(role) => state.tls_dir_of(role),
            File::TicketKey => state.ticket_key(),
            File::KeysDir => state.keys_dir(),
            File::AcmeChallenges => state.acme().challenges(),
        }
    }
}

/// A setting of the stack that turns a flag on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Publishers need a stream key (`--require-keys`, implied by `--public`).
    KeysRequired,
    /// The gateway serves HTTPS with a public certificate (`--acme`, `--tls-cert`).
    Https,
}

/// Who uses an advertised address, which decides how it is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The stack's own services (relays reaching ingest): an address inside the stack.
    Services,
    /// Viewers (a relay's address handed out by control): the host's address as seen from
    /// outside, `--advertise-host` when set.
    Viewers,
}

/// One flag of a service's command line, with what its value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// Where to listen for this role.
    Listen(&'static str, Role),
    /// A peer's address as a URL (`http://host:port`).
    Url(&'static str, Peer),
    /// A peer's address (`host:port`).
    Addr(&'static str, Peer),
    /// The service's name in the stack, as its id.
    Id(&'static str),
    /// Viewers a relay admits.
    Capacity(&'static str),
    /// A relay's congestion controller toward viewers.
    Congestion(&'static str),
    /// A file of the state directory.
    File(&'static str, File),
    /// The address to announce for this role, to this audience.
    Advertise(&'static str, Role, Audience),
    /// A flag without a value, given when the stack's setting holds.
    Flag(&'static str, When),
    /// Where the host's own connections come from besides loopback, if the site has such
    /// an address (exempt from per-source limits).
    LocalSource(&'static str),
    /// The flag, only when the stack's setting holds.
    If(When, &'static Arg),
}

/// One kind of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// What it is.
    pub kind: Kind,
    /// Its binary, beside `ghost`.
    pub binary: &'static str,
    /// What it listens on.
    pub listens: &'static [Listen],
    /// Its command line, in order.
    pub args: &'static [Arg],
}

impl Service {
    /// Its listener of `role`, if it has one.
    pub fn listen(&self, role: Role) -> Option<&'static Listen> {
        self.listens.iter().find(|l| l.role == role)
    }

    /// The listeners `spec`'s service has, under the stack's settings.
    pub fn listens_for<'a>(&self, spec: &'a Spec) -> impl Iterator<Item = &'static Listen> + 'a {
        self.listens.iter().filter(|l| l.active(spec))
    }

    /// The files of the state directory it may read, which a container must mount.
    pub fn files(&self) -> impl Iterator<Item = File> + '_ {
        self.args.iter().filter_map(|arg| match *arg {
            Arg::File(_, file) => Some(file),
            Arg::If(_, Arg::File(_, file)) => Some(*file),
            _ => None,
        })
    }

    /// The services of the stack it connects to, at which listener.
    pub fn peers(&self) -> impl Iterator<Item = (Kind, Role)> + '_ {
        self.args.iter().filter_map(|arg| match *arg {
            Arg::Url(_, Peer::Service(kind, role)) | Arg::Addr(_, Peer::Service(kind, role)) => {
                Some((kind, role))
            }
            _ => None,
        })
    }
}

const fn listen(
    role: Role,
    base: Base,
    step: u16,
    container_port: u16,
    transport: Transport,
    public: bool,
) -> Listen {
    Listen {
        role,
        port: Port { base, step },
        container_port,
        transport,
        public,
        when: None,
    }
}

/// Every service, in start order: each starts once those it connects to are up.
pub const SERVICES: [Service; 4] = [
    Service {
        kind: Kind::Control,
        binary: "ghost-control",
        listens: &[
            listen(Role::Grpc, Base::Control, 0, 7000, Transport::Tcp, false),
            listen(Role::Ops, Base::Ops, 0, 9100, Transport::Tcp, false),
        ],
        args: &[
            Arg::Listen("--listen", Role::Grpc),
            Arg::Listen("--ops-listen", Role::Ops),
            Arg::File("--ticket-key-file", File::TicketKey),
            Arg::Url("--supervisor", Peer::Supervisor),
            Arg::File("--tls-dir", File::Tls(TlsRole::Control)),
        ],
    },
    Service {
        kind: Kind::Ingest,
        binary: "ghost-ingest",
        listens: &[
            listen(Role::Quic, Base::Ingest, 0, 4433, Transport::Udp, true),
            listen(Role::Rtmp, Base::Rtmp, 0, 1935, Transport::Tcp, true),
            listen(Role::Ops, Base::Ops, 1, 9101, Transport::Tcp, false),
        ],
        args: &[
            Arg::Listen("--listen", Role::Quic),
            Arg::Listen("--rtmp-listen", Role::Rtmp),
            Arg::Listen("--ops-listen", Role::Ops),
            Arg::Url("--control", Peer::Service(Kind::Control, Role::Grpc)),
            Arg::File("--tls-dir", File::Tls(TlsRole::Ingest)),
            Arg::Advertise("--advertise", Role::Quic, Audience::Services),
            Arg::File("--keys-dir", File::KeysDir),
            Arg::Flag("--require-keys", When::KeysRequired),
            Arg::LocalSource("--local-source"),
        ],
    },
    Service {
        kind: Kind::Relay,
        binary: "ghost-relay",
        listens: &[
            listen(Role::Quic, Base::Relay, 0, 4500, Transport::UdpAndTcp, true),
            listen(Role::Ops, Base::Ops, 101, 9200, Transport::Tcp, false),
        ],
        args: &[
            Arg::Listen("--listen", Role::Quic),
            Arg::Listen("--ops-listen", Role::Ops),
            Arg::Url("--control", Peer::Service(Kind::Control, Role::Grpc)),
            Arg::Addr("--ingest", Peer::Service(Kind::Ingest, Role::Quic)),
            Arg::Id("--id"),
            Arg::Capacity("--capacity"),
            Arg::Congestion("--congestion"),
            Arg::File("--tls-dir", File::Tls(TlsRole::Relay)),
            Arg::File("--ticket-key-file", File::TicketKey),
            Arg::Advertise("--advertise", Role::Quic, Audience::Viewers),
            Arg::LocalSource("--local-source"),
        ],
    },
    Service {
        kind: Kind::Gateway,
        binary: "ghost-gateway",
        listens: &[
            listen(Role::Http, Base::Gateway, 0, 8080, Transport::Tcp, true),
            Listen {
                when: Some(When::Https),
                ..listen(Role::Https, Base::Https, 0, 8443, Transport::Tcp, true)
            },
        ],
        args: &[
            Arg::Listen("--listen", Role::Http),
            Arg::Listen("--https-listen", Role::Https),
            Arg::Advertise("--https-advertise", Role::Https, Audience::Viewers),
            Arg::If(
                When::Https,
                &Arg::File("--acme-challenges", File::AcmeChallenges),
            ),
            Arg::Url("--control", Peer::Service(Kind::Control, Role::Grpc)),
            Arg::File("--tls-dir", File::Tls(TlsRole::Gateway)),
            Arg::LocalSource("--local-source"),
        ],
    },
];

/// The table's row for `kind`.
pub fn service(kind: Kind) -> &'static Service {
    match kind {
        Kind::Control => &SERVICES[0],
        Kind::Ingest => &SERVICES[1],
        Kind::Relay => &SERVICES[2],
        Kind::Gateway => &SERVICES[3],
    }
}

/// A service's name in the stack: its kind, numbered for relays (`relay-2`).
pub fn name(kind: Kind, index: u32) -> String {
    match kind {
        Kind::Relay => format!("relay-{index}"),
        _ => kind.as_str().to_string(),
    }
}

/// Where a runtime runs services: how it spells what the table names.
pub trait Site {
    /// The address to bind `listen` on.
    fn bind(&self, spec: &Spec, listen: &Listen) -> String;
    /// Where `spec`'s service reaches `kind`'s listener `listen`.
    fn peer(&self, spec: &Spec, kind: Kind, listen: &Listen) -> String;
    /// The path of `file` as the service sees it.
    fn file(&self, file: File) -> String;
    /// The address to announce for `listen` to `audience`; `None` leaves the service to
    /// announce the address it bound.
    fn advertise(&self, spec: &Spec, listen: &Listen, audience: Audience) -> Option<String>;
    /// The address the host's own connections arrive from besides loopback (a container
    /// network's gateway, where Docker's port proxy forwards from); `None` where they come
    /// over loopback.
    fn local_source(&self) -> Option<std::net::IpAddr> {
        None
    }
}

/// `spec`'s command line, as `site` spells it.
pub fn args(spec: &Spec, site: &dyn Site) -> Vec<String> {
    let service = service(spec.kind);
    let mut out = Vec::new();
    for arg in service.args {
        let arg = match *arg {
            Arg::If(when, _) if !spec.holds(when) => continue,
            Arg::If(_, inner) => inner,
            _ => arg,
        };
        // A listener the stack's settings leave out takes its flags along.
        let inactive = |role: Role| service.listen(role).is_none_or(|l| !l.active(spec));
        let (flag, value) = match *arg {
            Arg::If(..) => continue,
            Arg::Listen(_, role) | Arg::Advertise(_, role, _) if inactive(role) => continue,
            Arg::Flag(flag, when) => {
                if spec.holds(when) {
                    out.push(flag.to_string());
                }
                continue;
            }
            Arg::Listen(flag, role) => (flag, service.listen(role).map(|l| site.bind(spec, l))),
            Arg::Url(flag, peer) => (
                flag,
                peer_addr(spec, site, peer).map(|a| format!("http://{a}")),
            ),
            Arg::Addr(flag, peer) => (flag, peer_addr(spec, site, peer)),
            Arg::Id(flag) => (flag, Some(spec.name.clone())),
            Arg::Capacity(flag) => (flag, Some(spec.relay_capacity.to_string())),
            Arg::Congestion(flag) => (flag, Some(spec.relay_congestion.to_string())),
            Arg::File(flag, file) => (flag, Some(site.file(file))),
            Arg::LocalSource(flag) => (flag, site.local_source().map(|ip| ip.to_string())),
            Arg::Advertise(flag, role, audience) => (
                flag,
                service
                    .listen(role)
                    .and_then(|l| site.advertise(spec, l, audience)),
            ),
        };
        if let Some(value) = value {
            out.push(flag.to_string());
            out.push(value);
        }
    }
    out
}

fn peer_addr(spec: &Spec, site: &dyn Site, peer: Peer) -> Option<String> {
    match peer {
        Peer::Supervisor => Some(spec.supervisor.to_string()),
        Peer::Service(kind, role) => service(kind).listen(role).map(|l| site.peer(spec, kind, l)),
    }
}

/// `addr` with an unspecified IP (a service bound on all addresses) replaced by loopback,
/// where this host reaches it.
pub fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// Everything needed to start one service instance. Each runtime turns it into a command
/// line through [`args`]: host addresses for processes, service names
/// inside a container network for Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Unique name in the stack: `control`, `ingest`, `gateway`, `relay-1`, ...
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Relay number (1-based), 0 for the others.
    pub index: u32,
    /// Host port wanted for each role it listens on; 0 for any free port.
    pub ports: BTreeMap<Role, u16>,
    /// Host port of each service it connects to, at the role it connects to.
    pub peer_ports: BTreeMap<Kind, u16>,
    /// Publish the public roles (QUIC, the gateway's HTTP) on all addresses, not loopback.
    pub public: bool,
    /// Host name viewers use to reach relays.
    pub advertise_host: Option<String>,
    /// Viewers a relay admits.
    pub relay_capacity: u32,
    /// The relays' congestion controller toward viewers.
    pub relay_congestion: transport::quic::Congestion,
    /// Publishers need a stream key.
    pub require_keys: bool,
    /// The gateway serves HTTPS with the stack's public certificate.
    pub https: bool,
    /// The supervisor's capacity API, as the services reach it.
    pub supervisor: SocketAddr,
}

impl Spec {
    /// A spec for the runtimes' command-line tests: control on 7000 and ingest on 4433,
    /// a relay capacity of 50.
    #[cfg(test)]
    pub(crate) fn for_tests(
        kind: Kind,
        index: u32,
        ports: &[(Role, u16)],
        public: bool,
        supervisor: SocketAddr,
    ) -> Spec {
        Spec {
            name: name(kind, index),
            kind,
            index,
            ports: ports.iter().copied().collect(),
            peer_ports: BTreeMap::from([(Kind::Control, 7000), (Kind::Ingest, 4433)]),
            public,
            advertise_host: None,
            relay_capacity: 50,
            relay_congestion: transport::quic::Congestion::Cubic,
            require_keys: false,
            https: false,
            supervisor,
        }
    }
}

impl Spec {
    /// The host port wanted for `role` (0 when unset: any free port).
    pub fn port(&self, role: Role) -> u16 {
        self.ports.get(&role).copied().unwrap_or(0)
    }

    /// The host port of peer `kind` (0 when unknown).
    pub fn peer_port(&self, kind: Kind) -> u16 {
        self.peer_ports.get(&kind).copied().unwrap_or(0)
    }

    /// Whether the stack's setting `when` holds, which turns its flag on.
    pub fn holds(&self, when: When) -> bool {
        match when {
            When::KeysRequired => self.require_keys,
            When::Https => self.https,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(kind: Kind, role: Role, ports: &Ports, index: u32) -> Option<u16> {
        service(kind)
            .listen(role)
            .map(|l| l.port.resolve(ports, index))
    }

    #[test]
    fn default_ports_follow_the_documented_layout() {
        let p = &Ports::DEFAULT;
        assert_eq!(port(Kind::Control, Role::Grpc, p, 0), Some(7000));
        assert_eq!(port(Kind::Control, Role::Ops, p, 0), Some(9100));
        assert_eq!(port(Kind::Ingest, Role::Quic, p, 0), Some(4433));
        assert_eq!(port(Kind::Ingest, Role::Rtmp, p, 0), Some(1935));
        assert_eq!(port(Kind::Ingest, Role::Ops, p, 0), Some(9101));
        assert_eq!(port(Kind::Relay, Role::Quic, p, 1), Some(4500));
        assert_eq!(port(Kind::Relay, Role::Ops, p, 1), Some(9201));
        assert_eq!(port(Kind::Relay, Role::Quic, p, 3), Some(4502));
        assert_eq!(port(Kind::Relay, Role::Ops, p, 3), Some(9203));
        assert_eq!(port(Kind::Gateway, Role::Http, p, 0), Some(8080));
        assert_eq!(port(Kind::Gateway, Role::Ops, p, 0), None);
    }

    #[test]
    fn a_zero_base_is_ephemeral_whatever_the_offset() {
        for s in &SERVICES {
            for l in s.listens {
                assert_eq!(
                    l.port.resolve(&Ports::EPHEMERAL, 5),
                    0,
                    "{:?} {:?}",
                    s.kind,
                    l.role
                );
            }
        }
    }

    #[test]
    fn the_table_is_complete_and_in_order() {
        let kinds: Vec<Kind> = SERVICES.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Control, Kind::Ingest, Kind::Relay, Kind::Gateway]
        );
        for kind in kinds {
            assert_eq!(service(kind).kind, kind);
        }
        assert_eq!(name(Kind::Relay, 2), "relay-2");
        assert_eq!(name(Kind::Gateway, 0), "gateway");
    }
}
