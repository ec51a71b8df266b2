//! What a service's container is made of: ports published, command line, labels, user,
//! log options and the state directory's files mounted read-only.

use super::*;

/// Docker's keys for a listener's port inside the container (`4433/udp`; a relay's port
/// both as `4500/udp` and `4500/tcp`).
pub(in crate::runtime) fn port_keys(listen: &Listen) -> impl Iterator<Item = String> + '_ {
    listen
        .transport
        .protocols()
        .iter()
        .map(|protocol| format!("{}/{protocol}", listen.container_port))
}

/// A host port free for every protocol of `transport`.
pub(in crate::runtime) fn free_port(transport: Transport) -> std::io::Result<u16> {
    let mut last = None;
    for _ in 0..32 {
        let port = match transport {
            Transport::Tcp => std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
            Transport::Udp => std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
            Transport::UdpAndTcp => {
                let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
                let port = udp.local_addr()?.port();
                match std::net::TcpListener::bind(("127.0.0.1", port)) {
                    Ok(_) => port,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
        };
        return Ok(port);
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

/// The host side of a `kind` container: its ports and mounts, restart policy `no` (the
/// supervisor restarts it), and what confines it: a read-only root file system (the
/// services write nothing; the mounts are read-only too), no capability at all (every port
/// inside a container is above 1024, and the service runs as the operator's uid),
/// `no-new-privileges`, memory without swap, a pids limit, and JSON logs rotated by size.
pub(in crate::runtime) fn host_config(
    kind: Kind,
    limits: &Limits,
    port_bindings: PortMap,
    binds: Vec<String>,
) -> HostConfig {
    let memory = i64::try_from(limits.memory_of(kind)).unwrap_or(i64::MAX);
    HostConfig {
        port_bindings: Some(port_bindings),
        binds: Some(binds),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory: Some(memory),
        // The same as the memory: no swap on top of it.
        memory_swap: Some(memory),
        pids_limit: Some(i64::from(limits.pids)),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(log_options(limits)),
        }),
        ..Default::default()
    }
}

/// `spec`'s command line inside its container at `site`; logs as JSON, which `docker logs`
/// (and `docker service logs`) keep.
pub(in crate::runtime) fn args(spec: &Spec, site: &dyn Site) -> Result<Vec<String>, Error> {
    let mut args = services::args(spec, site).map_err(|source| Error::CommandLine {
        name: spec.name.clone(),
        source,
    })?;
    args.extend(["--log-format".to_string(), "json".to_string()]);
    Ok(args)
}

/// The labels of instance `generation` of service `name` of stack `stack`: what the event
/// watcher, reconciliation and `ghost down` find it by.
pub(in crate::runtime) fn labels(
    stack: &str,
    name: &str,
    generation: u64,
) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_STACK.to_string(), stack.to_string()),
        (LABEL_SERVICE.to_string(), name.to_string()),
        (LABEL_GENERATION.to_string(), generation.to_string()),
    ])
}

/// The user services run as: the operator's uid and gid, so they read the state directory's
/// files and own nothing else.
pub(in crate::runtime) fn user() -> String {
    format!(
        "{}:{}",
        nix::unistd::Uid::current(),
        nix::unistd::Gid::current()
    )
}

/// Options of the json-file log driver: rotated at `limits`' size, so many files kept.
pub(in crate::runtime) fn log_options(limits: &Limits) -> HashMap<String, String> {
    HashMap::from([
        ("max-size".to_string(), limits.log_max_size.to_string()),
        ("max-file".to_string(), limits.log_max_files.to_string()),
    ])
}

/// Where `file` of the state directory appears inside a container.
pub(in crate::runtime) fn mount_point(file: File) -> String {
    match file {
        File::Tls(_) => format!("{MOUNT}/tls"),
        File::TicketKey => format!("{MOUNT}/ticket.key"),
        File::KeysDir => format!("{MOUNT}/keys"),
        File::AcmeChallenges => format!("{MOUNT}/acme-challenges"),
    }
}

/// The bind mounts of a `kind` container: each file of the state directory (at
/// `state_root`) that its flags name, read-only, and nothing else: a service sees its own
/// TLS directory and no other's, none sees the CA key, relays never see the stream keys.
pub(in crate::runtime) fn binds(kind: Kind, state_root: &std::path::Path) -> Vec<String> {
    let state = StateDir::new(state_root);
    services::service(kind)
        .files()
        .map(|file| {
            format!(
                "{}:{}:ro",
                file.path_in(&state).display(),
                mount_point(file)
            )
        })
        .collect()
}

/// Whether a running `kind` container with bind mounts `mounted` mounts exactly what this
/// version would give it.
pub(in crate::runtime) fn mounts_as_now(
    mounted: &[String],
    kind: Kind,
    state_root: &std::path::Path,
) -> bool {
    let mut mounted = mounted.to_vec();
    let mut now = binds(kind, state_root);
    mounted.sort();
    now.sort();
    mounted == now
}

/// The stack's container network: services reach each other by service name at the ports
/// inside their containers, and read the state directory where it is mounted. Connections
/// the host makes to a published port on its own loopback arrive through Docker's port
/// proxy from the network's `gateway`.
pub(in crate::runtime) struct Network {
    pub(in crate::runtime) gateway: IpAddr,
}

impl Site for Network {
    fn bind(&self, _spec: &Spec, listen: &Listen) -> String {
        format!("{}:{}", Ipv4Addr::UNSPECIFIED, listen.container_port)
    }

    fn peer(&self, _spec: &Spec, kind: Kind, listen: &Listen) -> String {
        format!("{}:{}", services::name(kind, 0), listen.container_port)
    }

    fn file(&self, file: File) -> String {
        mount_point(file)
    }

    fn advertise(&self, spec: &Spec, listen: &Listen, audience: Audience) -> Option<String> {
        Some(match audience {
            Audience::Services => format!("{}:{}", spec.name, listen.container_port),
            // The host port: picked before the start, so known here even when asked as 0.
            Audience::Viewers => format!(
                "{}:{}",
                spec.advertise_host.as_deref().unwrap_or("127.0.0.1"),
                spec.port(listen.role)
            ),
        })
    }

    fn local_source(&self) -> Option<IpAddr> {
        Some(self.gateway)
    }
}
