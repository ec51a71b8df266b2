//! `ghost up` and `ghost down`: the daemon started in the foreground or detached, its
//! certificate prepared first, and everything it made taken down.

use super::*;

pub(super) async fn daemon(state: &StateDir, args: &UpArgs, foreground: bool) -> Result<i32> {
    let settings = settings(state, args)?;
    let shutdown = server::shutdown::on_signal();
    let progress = move |line: &str| {
        if foreground {
            eprintln!("ghost: {line}");
        } else {
            tracing::info!("{line}");
        }
    };
    crate::daemon::run(settings, args.runtime, shutdown, &progress).await?;
    Ok(exit::OK)
}

/// Puts the certificate this `ghost up` names where the relays and the gateway read it,
/// before anything starts (see [`orchestrator::certificate`]): a stack that is up keeps its own.
pub(super) async fn prepare_certificate(state: &StateDir, args: &UpArgs) -> Result<()> {
    let settings = settings(state, args)?;
    refuse_if_up(state)?;
    state.prepare()?;
    let operator = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    let progress = |line: &str| eprintln!("ghost: {line}");
    let source = args.certificate();
    let mut wait = Duration::from_secs(30);
    loop {
        let prepared = orchestrator::certificate::prepare(
            state,
            &source,
            operator,
            args.public,
            settings.ports.gateway,
            &progress,
        )
        .await;
        match prepared {
            Ok(_) => return Ok(()),
            // In the foreground (a service manager's `ghost up`) a CA that refuses is asked
            // again with back-off, not every few seconds by restarts: CAs limit failed
            // validations (Let's Encrypt: 5 an hour per name). `-d` says why and exits.
            Err(e) if !args.detach && e.is_issuance() => {
                let e = anyhow::Error::new(e);
                eprintln!(
                    "ghost: {e:#}\nghost: asking again in {} (Ctrl-C to stop)",
                    humantime::format_duration(wait)
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    r = tokio::signal::ctrl_c() => {
                        r.context("waiting for Ctrl-C")?;
                        return Err(e);
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(3600));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A clear error when this state directory's stack is up (a crashed supervisor's stack file
/// stays: a new daemon adopts its services).
pub(super) fn refuse_if_up(state: &StateDir) -> Result<()> {
    if let Ok(stack) = state.read()
        && orchestrator::runtime::process::alive(stack.supervisor_pid)
    {
        return Err(anyhow::anyhow!(
            "a stack is already up (status page {}); run `ghost down` first",
            stack.supervisor_url
        ));
    }
    Ok(())
}

pub(super) async fn up_detached(state: &StateDir, args: &UpArgs) -> Result<i32> {
    settings(state, args)?;
    state.prepare()?;
    refuse_if_up(state)?;
    let log_path = state.logs().join("supervisor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the ghost binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--state-dir")
        .arg(state.root())
        .arg("daemon")
        .args(args.to_args())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().context("starting the supervisor daemon")?;
    eprintln!("ghost: supervisor starting (log: {})", log_path.display());
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut last_ready = String::new();
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "the supervisor exited during start-up ({status}):\n{}",
                tail.join("\n")
            );
        }
        if let Ok(stack) = state.read()
            && stack.supervisor_pid == child.id()
            && let Ok(resp) = http
                .get(format!("{}/api/status", stack.supervisor_url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
        {
            let status: Option<api::status::Status> = resp.json().await.ok();
            if status.as_ref().is_some_and(|s| s.ready) {
                out!("stack up ({} runtime)", stack.runtime);
                out!("  viewer gateway  {}", stack.gateway_url);
                if let Some(url) = &stack.viewer_url {
                    out!("  viewers open    {url}");
                }
                out!("  certificate     {}", stack.certificate);
                out!("  ingest (QUIC)   {}", stack.ingest_addr);
                out!("  ingest (RTMP)   rtmp://{}/live", stack.rtmp_addr);
                out!("  status page     {}", stack.supervisor_url);
                if stack.require_keys {
                    out!("  publishing      with a stream key only (`ghost keys add NAME`)");
                }
                return Ok(exit::OK);
            }
            let names: Vec<&str> = status
                .iter()
                .flat_map(|s| &s.services)
                .filter(|s| s.healthy)
                .map(|s| s.name.as_str())
                .collect();
            let line = names.join(", ");
            if line != last_ready {
                eprintln!("ghost: healthy: {line}");
                last_ready = line;
            }
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!(
                "the stack did not become ready within 90 s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) async fn down(state: &StateDir) -> Result<i32> {
    let Ok(stack) = state.read() else {
        out!("no stack running");
        return Ok(exit::OK);
    };
    let alive = orchestrator::runtime::process::alive(stack.supervisor_pid);
    let token = match state.read_admin_token() {
        Ok(token) => token,
        // Only a supervisor that is gone may be cleaned up after without its token.
        Err(e) if alive => return Err(e.into()),
        Err(_) => String::new(),
    };
    let asked = reqwest::Client::new()
        .post(format!("{}/api/down", stack.supervisor_url))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let asked = match asked {
        Ok(refused) if refused.status() == reqwest::StatusCode::FORBIDDEN => {
            let reason = match refused.json::<api::Problem>().await {
                Ok(problem) => problem.reason,
                Err(_) => "forbidden".into(),
            };
            anyhow::bail!("the supervisor refused to stop: {reason}");
        }
        other => other,
    };
    if asked.is_err() && orchestrator::runtime::process::alive(stack.supervisor_pid) {
        // API unreachable: ask the process itself.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stack.supervisor_pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while orchestrator::runtime::process::alive(stack.supervisor_pid) {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the supervisor (pid {}) did not stop within 20 s",
                stack.supervisor_pid
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A supervisor that died without stopping its services leaves them in its process group
    // (`ghost up -d` makes the daemon its leader): stop whatever is left of it.
    if asked.is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-(stack.supervisor_pid as i32)),
            nix::sys::signal::Signal::SIGKILL,
        );
        // Its containers outlive it: remove them (and the network) by the stack's label.
        match stack.runtime {
            Backend::Docker => {
                let engine = orchestrator::runtime::docker::connect().await?;
                orchestrator::runtime::docker::DockerRuntime::new(
                    engine,
                    state.clone(),
                    beside_ghost()?,
                )
                .cleanup()
                .await?;
            }
            // Its relay services and secrets too.
            Backend::Swarm => {
                let engine = orchestrator::runtime::docker::connect().await?;
                orchestrator::runtime::swarm::SwarmRuntime::new(
                    engine,
                    state.clone(),
                    beside_ghost()?,
                )
                .cleanup()
                .await?;
            }
            Backend::Process => {}
        }
    }
    state.clear();
    out!("stack down");
    Ok(exit::OK)
}
