//! The stack's services in one table: for each kind its binary, the addresses it listens on
//! (with their default host ports and their ports inside a container), the files it reads and
//! the services it connects to.
//!
//! A service's command line is a value of the service's own `Wiring` type (`relay::Wiring`
//! and so on), the very type the service parses its flags into, built by [`wiring`] and
//! rendered by `server::flags`: a flag renamed in a service is rendered under its new name,
//! and a field renamed, added or retyped fails to compile here, not at run time. What differs between runtimes (loopback addresses and state paths for
//! processes, service names and mounts inside a container network for Docker) is a [`Site`].

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

/// One kind of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// What it is.
    pub kind: Kind,
    /// Its binary, beside `ghost`.
    pub binary: &'static str,
    /// What it listens on.
    pub listens: &'static [Listen],
    /// The files of the state directory it may read, which a container must mount.
    pub files: &'static [File],
    /// Whom it connects to.
    pub peers: &'static [Peer],
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
        self.files.iter().copied()
    }

    /// The services of the stack it connects to, at which listener.
    pub fn peers(&self) -> impl Iterator<Item = (Kind, Role)> + '_ {
        self.peers.iter().filter_map(|peer| match *peer {
            Peer::Service(kind, role) => Some((kind, role)),
            Peer::Supervisor => None,
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
        files: &[File::TicketKey, File::Tls(TlsRole::Control)],
        peers: &[Peer::Supervisor],
    },
    Service {
        kind: Kind::Ingest,
        binary: "ghost-ingest",
        listens: &[
            listen(Role::Quic, Base::Ingest, 0, 4433, Transport::Udp, true),
            listen(Role::Rtmp, Base::Rtmp, 0, 1935, Transport::Tcp, true),
            listen(Role::Ops, Base::Ops, 1, 9101, Transport::Tcp, false),
        ],
        files: &[File::Tls(TlsRole::Ingest), File::KeysDir],
        peers: &[Peer::Service(Kind::Control, Role::Grpc)],
    },
    Service {
        kind: Kind::Relay,
        binary: "ghost-relay",
        listens: &[
            listen(Role::Quic, Base::Relay, 0, 4500, Transport::UdpAndTcp, true),
            listen(Role::Ops, Base::Ops, 101, 9200, Transport::Tcp, false),
        ],
        files: &[File::Tls(TlsRole::Relay), File::TicketKey],
        peers: &[
            Peer::Service(Kind::Control, Role::Grpc),
            Peer::Service(Kind::Ingest, Role::Quic),
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
        files: &[File::AcmeChallenges, File::Tls(TlsRole::Gateway)],
        peers: &[Peer::Service(Kind::Control, Role::Grpc)],
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

/// Why a command line could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The table gives the service no listener of a role its command line needs.
    #[error("{kind:?} has no {role:?} listener in the service table")]
    NoListener {
        /// The service.
        kind: Kind,
        /// The role.
        role: Role,
    },
    /// A site's address that is not one (`host:port` where an IP address is needed).
    #[error("{kind:?}'s {role:?} address {addr:?} is not an IP address and port")]
    Address {
        /// The service.
        kind: Kind,
        /// The role.
        role: Role,
        /// What the site gave.
        addr: String,
        /// Why it is not one.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The flags could not be rendered.
    #[error("rendering the flags: {0}")]
    Flags(#[from] server::flags::Error),
}

/// A service's flags, as the value of the type the service itself parses them into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wiring {
    /// Control's.
    Control(control::Wiring),
    /// Ingest's.
    Ingest(ingest::Wiring),
    /// A relay's.
    Relay(relay::Wiring),
    /// The gateway's.
    Gateway(gateway::Wiring),
}

impl Wiring {
    /// The command line that gives these flags.
    pub fn render(&self) -> Result<Vec<String>, server::flags::Error> {
        match self {
            Wiring::Control(w) => server::flags::render(w),
            Wiring::Ingest(w) => server::flags::render(w),
            Wiring::Relay(w) => server::flags::render(w),
            Wiring::Gateway(w) => server::flags::render(w),
        }
    }
}

/// `spec`'s command line, as `site` spells it.
pub fn args(spec: &Spec, site: &dyn Site) -> Result<Vec<String>, Error> {
    Ok(wiring(spec, site)?.render()?)
}

/// `spec`'s flags, as `site` spells them: where it listens, whom it reaches, what it reads.
pub fn wiring(spec: &Spec, site: &dyn Site) -> Result<Wiring, Error> {
    let at = At { spec, site };
    let control = || -> Result<_, Error> {
        Ok(server::args::Control {
            url: format!("http://{}", at.peer(Kind::Control, Role::Grpc)?),
        })
    };
    Ok(match spec.kind {
        Kind::Control => Wiring::Control(control::Wiring {
            listen: at.bind(Role::Grpc)?,
            ops_listen: at.bind(Role::Ops)?,
            ticket_key: server::args::TicketKey {
                file: Some(at.file(File::TicketKey)),
            },
            supervisor: Some(format!("http://{}", spec.supervisor)),
            tls: server::args::OptionalTls {
                dir: Some(at.file(File::Tls(TlsRole::Control))),
            },
        }),
        Kind::Ingest => Wiring::Ingest(ingest::Wiring {
            listen: at.bind(Role::Quic)?,
            rtmp_listen: at.bind(Role::Rtmp)?,
            ops_listen: at.bind(Role::Ops)?,
            control: control()?,
            tls: server::args::Tls {
                dir: at.file(File::Tls(TlsRole::Ingest)),
            },
            advertise: at.advertise(Role::Quic, Audience::Services),
            keys: streamkeys::Flags {
                dir: Some(at.file(File::KeysDir)),
                require: spec.require_keys,
            },
            local: at.local_source(),
        }),
        Kind::Relay => Wiring::Relay(relay::Wiring {
            listen: at.bind(Role::Quic)?,
            ops_listen: at.bind(Role::Ops)?,
            control: control()?,
            ingest: at.peer(Kind::Ingest, Role::Quic)?,
            id: spec.name.clone(),
            capacity: spec.relay_capacity,
            congestion: spec.relay_congestion,
            tls: server::args::Tls {
                dir: at.file(File::Tls(TlsRole::Relay)),
            },
            ticket_key: server::args::TicketKey {
                file: Some(at.file(File::TicketKey)),
            },
            advertise: at.advertise(Role::Quic, Audience::Viewers),
            local: at.local_source(),
        }),
        Kind::Gateway => Wiring::Gateway(gateway::Wiring {
            listen: at.bind(Role::Http)?,
            https: gateway::https::Https {
                https_listen: at.bind_if_active(Role::Https)?,
                https_advertise: at.advertise(Role::Https, Audience::Viewers),
                acme_challenges: spec
                    .holds(When::Https)
                    .then(|| at.file(File::AcmeChallenges)),
            },
            control: control()?,
            tls: server::args::OptionalTls {
                dir: Some(at.file(File::Tls(TlsRole::Gateway))),
            },
            local: at.local_source(),
        }),
    })
}

/// A spec at a site: the table's listeners and peers spelled as the site spells them.
struct At<'a> {
    spec: &'a Spec,
    site: &'a dyn Site,
}

impl At<'_> {
    /// The listener of `role` of the service, if the stack's settings give it one.
    fn listen(&self, role: Role) -> Option<&'static Listen> {
        service(self.spec.kind)
            .listen(role)
            .filter(|l| l.active(self.spec))
    }

    fn bind_if_active(&self, role: Role) -> Result<Option<SocketAddr>, Error> {
        let Some(listen) = self.listen(role) else {
            return Ok(None);
        };
        let addr = self.site.bind(self.spec, listen);
        match addr.parse() {
            Ok(parsed) => Ok(Some(parsed)),
            Err(source) => Err(Error::Address {
                kind: self.spec.kind,
                role,
                addr,
                source,
            }),
        }
    }

    fn bind(&self, role: Role) -> Result<SocketAddr, Error> {
        self.bind_if_active(role)?.ok_or(Error::NoListener {
            kind: self.spec.kind,
            role,
        })
    }

    fn peer(&self, kind: Kind, role: Role) -> Result<String, Error> {
        let listen = service(kind)
            .listen(role)
            .ok_or(Error::NoListener { kind, role })?;
        Ok(self.site.peer(self.spec, kind, listen))
    }

    fn file(&self, file: File) -> PathBuf {
        PathBuf::from(self.site.file(file))
    }

    fn advertise(&self, role: Role, audience: Audience) -> Option<String> {
        self.listen(role)
            .and_then(|l| self.site.advertise(self.spec, l, audience))
    }

    fn local_source(&self) -> identity::peer::LocalSource {
        identity::peer::LocalSource {
            local_source: self.site.local_source(),
        }
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

    /// A site that spells every address plainly and records what a command line asks of it.
    #[derive(Default)]
    struct Recorder {
        files: std::cell::RefCell<Vec<File>>,
        peers: std::cell::RefCell<Vec<(Kind, Role)>>,
    }

    impl Site for Recorder {
        fn bind(&self, _spec: &Spec, listen: &Listen) -> String {
            format!("0.0.0.0:{}", listen.container_port)
        }

        fn peer(&self, _spec: &Spec, kind: Kind, listen: &Listen) -> String {
            self.peers.borrow_mut().push((kind, listen.role));
            format!("{}:{}", name(kind, 0), listen.container_port)
        }

        fn file(&self, file: File) -> String {
            self.files.borrow_mut().push(file);
            format!("/state/{file:?}")
        }

        fn advertise(&self, spec: &Spec, listen: &Listen, _: Audience) -> Option<String> {
            Some(format!("{}:{}", spec.name, listen.container_port))
        }

        fn local_source(&self) -> Option<std::net::IpAddr> {
            Some([172, 18, 0, 1].into())
        }
    }

    /// Every kind under every combination of the settings that turn flags on.
    fn specs() -> Vec<Spec> {
        let supervisor = "127.0.0.1:7071".parse().expect("addr");
        let mut out = Vec::new();
        for s in &SERVICES {
            for (require_keys, https) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                out.push(Spec {
                    require_keys,
                    https,
                    ..Spec::for_tests(s.kind, 2, &[], true, supervisor)
                });
            }
        }
        out
    }

    /// The command line the supervisor renders is parsed by the service's own `Config`
    /// into the very value it was rendered from.
    #[test]
    fn every_command_line_parses_back_into_the_services_config() {
        use clap::Parser;
        fn back<C: Parser>(binary: &str, args: &[String]) -> C {
            let argv = std::iter::once(binary.to_string()).chain(args.iter().cloned());
            C::try_parse_from(argv).unwrap_or_else(|e| panic!("{binary} {args:?}: {e}"))
        }
        for spec in specs() {
            let wiring = wiring(&spec, &Recorder::default()).expect("wiring");
            let args = wiring.render().expect("renders");
            let binary = service(spec.kind).binary;
            let parsed = match &wiring {
                Wiring::Control(_) => {
                    Wiring::Control(back::<control::Config>(binary, &args).wiring)
                }
                Wiring::Ingest(_) => Wiring::Ingest(back::<ingest::Config>(binary, &args).wiring),
                Wiring::Relay(_) => Wiring::Relay(back::<relay::Config>(binary, &args).wiring),
                Wiring::Gateway(_) => {
                    Wiring::Gateway(back::<gateway::Config>(binary, &args).wiring)
                }
            };
            assert_eq!(parsed, wiring, "{args:?}");
        }
    }

    /// What the table says a service reads and reaches (what a container mounts, what
    /// starts first) is what its command line asks for.
    #[test]
    fn the_table_names_the_files_and_peers_the_command_lines_use() {
        use std::collections::BTreeSet;
        for spec in specs().into_iter().filter(|s| s.require_keys && s.https) {
            let site = Recorder::default();
            wiring(&spec, &site).expect("wiring");
            let asked: BTreeSet<String> = site
                .files
                .borrow()
                .iter()
                .map(|f| format!("{f:?}"))
                .collect();
            let table: BTreeSet<String> = service(spec.kind)
                .files()
                .map(|f| format!("{f:?}"))
                .collect();
            assert_eq!(asked, table, "{:?} files", spec.kind);
            let asked: BTreeSet<String> = site
                .peers
                .borrow()
                .iter()
                .map(|p| format!("{p:?}"))
                .collect();
            let table: BTreeSet<String> = service(spec.kind)
                .peers()
                .map(|p| format!("{p:?}"))
                .collect();
            assert_eq!(asked, table, "{:?} peers", spec.kind);
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
