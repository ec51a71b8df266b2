//! The supervisor daemon: binds its listeners, brings the stack up, writes `stack.json`,
//! serves the status page, API and capacity gRPC, and runs until stopped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::http;
use orchestrator::actor::{Settings, Supervisor};
use orchestrator::runtime::Runtime;
use orchestrator::runtime::docker::{self, DockerRuntime};
use orchestrator::runtime::process::ProcessRuntime;
use orchestrator::runtime::swarm::SwarmRuntime;
use orchestrator::stack::StackFile;

/// Which runtime to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// Docker when an engine answers, else local processes.
    Auto,
    /// Docker containers (through bollard).
    Docker,
    /// Local processes.
    Process,
    /// Relays as Docker Swarm services across the swarm's nodes, the rest as containers of
    /// this manager (run on a Swarm manager).
    Swarm,
}

async fn runtime(
    choice: RuntimeChoice,
    settings: &Settings,
    progress: &orchestrator::runtime::Progress,
) -> Result<Arc<dyn Runtime>> {
    let process = || -> Arc<dyn Runtime> {
        Arc::new(
            ProcessRuntime::new(settings.bin_dir.clone(), settings.state.clone())
                .with_limits(settings.limits),
        )
    };
    let docker = || async {
        let engine = docker::connect().await?;
        Ok::<Arc<dyn Runtime>, anyhow::Error>(Arc::new(
            DockerRuntime::new(engine, settings.state.clone(), settings.bin_dir.clone())
                .with_limits(settings.limits),
        ))
    };
    match choice {
        RuntimeChoice::Process => Ok(process()),
        RuntimeChoice::Swarm => {
            let engine = docker::connect()
                .await
                .context("the Swarm runtime needs a Docker Engine that manages a swarm")?;
            orchestrator::runtime::swarm::manager_node(&engine).await?;
            Ok(Arc::new(
                SwarmRuntime::new(engine, settings.state.clone(), settings.bin_dir.clone())
                    .with_limits(settings.limits),
            ))
        }
        RuntimeChoice::Docker => docker()
            .await
            .context("the Docker runtime needs a Docker Engine (or use --runtime process)"),
        RuntimeChoice::Auto => match docker().await {
            Ok(rt) => Ok(rt),
            Err(e) => {
                progress(&format!(
                    "no Docker Engine ({e:#}); running services as local processes"
                ));
                Ok(process())
            }
        },
    }
}

/// Runs the whole stack until `shutdown` (or `POST /api/down`). `progress` hears each
/// bring-up step; `on_ready` is called once everything is up.
pub async fn run(
    settings: Settings,
    choice: RuntimeChoice,
    shutdown: CancellationToken,
    progress: &orchestrator::runtime::Progress,
) -> Result<()> {
    let mut settings = settings;
    let state = settings.state.clone();
    let stack_state = state.clone();
    if let Ok(existing) = state.read() {
        if orchestrator::runtime::process::alive(existing.supervisor_pid)
            && existing.supervisor_pid != std::process::id()
        {
            anyhow::bail!(
                "a stack is already up (supervisor pid {}, status {}); run `ghost down` first",
                existing.supervisor_pid,
                existing.supervisor_url
            );
        }
        // A supervisor that crashed: take its ports back, its services may still be running
        // and pointed at them.
        let (http, grpc) = existing.supervisor_ports;
        if settings.ports.http == 0 && http != 0 {
            settings.ports.http = http;
            settings.ports.grpc = grpc;
        }
    }
    state.prepare()?;
    let admin_token = http::AdminToken::new(state.new_admin_token()?);
    let public_ip = if settings.public {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let http_listener = tokio::net::TcpListener::bind((public_ip, settings.ports.http))
        .await
        .with_context(|| format!("binding the status page on port {}", settings.ports.http))?;
    let http_addr = http_listener.local_addr()?;
    let runtime = runtime(choice, &settings, progress).await?;
    progress(&format!("preparing the {} runtime", runtime.backend()));
    let (exits_tx, exits) = tokio::sync::mpsc::channel(64);
    runtime.prepare(exits_tx, progress).await?;
    // The capacity API listens only where the stack's own services reach it.
    let internal = runtime.internal_ip();
    let grpc_listener = tokio::net::TcpListener::bind((internal, settings.ports.grpc))
        .await
        .with_context(|| {
            format!(
                "binding the capacity API on {internal}:{}",
                settings.ports.grpc
            )
        })?;
    let grpc_addr = grpc_listener.local_addr()?;
    let backend = runtime.backend();
    let (public, advertise_host, require_keys) = (
        settings.public,
        settings.advertise_host.clone(),
        settings.require_keys,
    );
    let certificate = settings.certificate.clone();
    let renewals_acme = match &settings.certificate {
        orchestrator::certificate::Source::Acme(acme) => Some(orchestrator::certificate::renew(
            state.clone(),
            acme.clone(),
            settings.ports.gateway,
        )),
        _ => None,
    };
    let (mut supervisor, handle) = Supervisor::new(settings, runtime, exits, grpc_addr);
    // Prometheus' targets follow the stack for as long as the supervisor runs.
    let targets_file = crate::monitoring::targets_file(&stack_state);
    let targets = {
        let follow =
            crate::monitoring::keep_targets(targets_file.clone(), http_addr, handle.snapshots());
        async move {
            follow.await;
            std::future::pending::<()>().await
        }
    };

    let app = http::routes(handle.clone(), admin_token);
    let http_server = axum::serve(
        server::ops::nodelay(http_listener),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Mutual TLS: only control, by its client certificate, may ask for relays.
    let grpc_tls =
        server::control::server_tls(&stack_state.tls_dir_of(identity::Role::Supervisor))?;
    let grpc_server = tonic::transport::Server::builder()
        .tls_config(grpc_tls)
        .context("setting up the capacity API's TLS")?
        .add_service(proto::supervisor::supervisor_server::SupervisorServer::new(
            http::Capacity {
                handle: handle.clone(),
            },
        ))
        .serve_with_incoming_shutdown(
            server::ops::nodelay_incoming(grpc_listener),
            shutdown.clone().cancelled_owned(),
        );
    let stop = shutdown.clone();
    let stack = async move {
        supervisor.bring_up(progress).await?;
        let orchestrator::actor::Endpoints {
            gateway_url,
            ingest_addr,
            rtmp_addr,
            control_url,
            https_port,
        } = supervisor
            .endpoints()
            .context("services announced no addresses")?;
        let supervisor_url = format!(
            "http://{}",
            if http_addr.ip().is_unspecified() {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), http_addr.port())
            } else {
                http_addr
            }
        );
        let viewer_url = https_port.map(|port| {
            let host = advertise_host.as_deref().unwrap_or("localhost");
            let bound = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            format!("{}/", server::args::https_url(Some(host), bound))
        });
        state.write(&StackFile {
            runtime: backend,
            supervisor_pid: std::process::id(),
            supervisor_url: supervisor_url.clone(),
            gateway_url: gateway_url.clone(),
            ingest_addr: ingest_addr.clone(),
            rtmp_addr: rtmp_addr.clone(),
            control_url,
            supervisor_ports: (http_addr.port(), grpc_addr.port()),
            public,
            advertise_host,
            require_keys,
            viewer_url,
            certificate: certificate.describe(),
        })?;
        progress(&format!(
            "stack up: viewer gateway {gateway_url}, ingest {ingest_addr} (QUIC) and rtmp://{rtmp_addr}/live, status page {supervisor_url}"
        ));
        supervisor.run(stop.clone()).await;
        stop.cancel();
        Ok::<_, anyhow::Error>(())
    };
    let renewals = renew_relay_certificates(stack_state.pki());
    let renewals_acme = async move {
        match renewals_acme {
            Some(renew) => renew.await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = stack => r,
        () = renewals => Ok(()),
        () = renewals_acme => Ok(()),
        () = targets => Ok(()),
        r = http_server => r.context("status page server failed"),
        r = grpc_server => r.context("capacity API failed"),
    };
    shutdown.cancel();
    // Nothing is left to scrape.
    if let Err(error) = crate::monitoring::write_targets(&targets_file, &[]) {
        tracing::warn!(error = %format!("{error:#}"), "clearing the Prometheus targets failed");
    }
    if stack_state
        .read()
        .is_ok_and(|s| s.supervisor_pid == std::process::id())
    {
        stack_state.clear();
    }
    result
}

/// How often the relays' certificate is checked for renewal: far more often than its week of
/// margin needs, so a supervisor that was down for a while catches up within the hour.
const RENEW_CHECK: std::time::Duration = std::time::Duration::from_secs(3600);

/// Renews the relays' certificate from the stack's CA before it ends; relays pick the new
/// files up for their new connections. Runs until the daemon stops.
async fn renew_relay_certificates(pki: identity::Pki) {
    loop {
        tokio::time::sleep(RENEW_CHECK).await;
        match pki.ensure_relay(std::time::SystemTime::now()) {
            Ok(identity::RelayCert::Issued { not_after }) => tracing::info!(
                until = %humantime::format_rfc3339_seconds(not_after),
                "relay certificate renewed"
            ),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "relay certificate renewal failed; retrying")
            }
        }
    }
}
