//! The commands that talk to a running stack: status, streams, publish, watch, chaos, and
//! the HTTP calls they make to the supervisor.

use super::*;
use clients::exit::Outcome as _;

pub(super) async fn get<T: serde::de::DeserializeOwned>(url: &str) -> Result<T> {
    answer(
        url,
        reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5)),
    )
    .await
}

/// An admin request to the supervisor, with the operator's token from the state directory.
pub(super) async fn admin_post<T: serde::de::DeserializeOwned>(
    state: &StateDir,
    url: &str,
    body: &impl serde::Serialize,
) -> Result<T> {
    let request = reqwest::Client::new()
        .post(url)
        .bearer_auth(state.read_admin_token()?)
        .json(body)
        .timeout(Duration::from_secs(30));
    answer(url, request).await
}

/// Sends `request` and reads its JSON answer; a refusal becomes an error carrying the
/// [`api::Problem`]'s reason (exit code 2 for a 400, 1 otherwise).
pub(super) async fn answer<T: serde::de::DeserializeOwned>(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<T> {
    let resp = request
        .send()
        .await
        .with_context(|| format!("requesting {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let code = if status == reqwest::StatusCode::BAD_REQUEST {
            exit::USAGE
        } else {
            exit::FAILURE
        };
        let reason = match resp.json::<api::Problem>().await {
            Ok(problem) => problem.reason,
            Err(_) => "request failed".into(),
        };
        return Err(Exit::new(code, format!("{url} answered {status}: {reason}")).into());
    }
    resp.json()
        .await
        .with_context(|| format!("reading the answer of {url}"))
}

pub(super) async fn status(state: &StateDir, json: bool) -> Result<i32> {
    let stack = state.read()?;
    let status: api::status::Status = get(&format!("{}/api/status", stack.supervisor_url)).await?;
    if json {
        out!("{}", serde_json::to_string(&status)?);
        return Ok(exit::OK);
    }
    out!(
        "runtime {}  ready {}  relays {}/{}  capacity {}/relay",
        status.runtime,
        status.ready,
        status.relays_wanted,
        status.max_relays,
        status.relay_capacity
    );
    // The node column and the node list only where services run on several machines.
    let nodes = !status.nodes.is_empty();
    if nodes {
        out!("\nSERVICE      STATE       HEALTH   RESTARTS  NODE             PID");
    } else {
        out!("\nSERVICE      STATE       HEALTH   RESTARTS  PID");
    }
    for s in &status.services {
        let node = match (nodes, s.instance.as_ref().and_then(|i| i.node.as_deref())) {
            (false, _) => String::new(),
            (true, node) => format!("{:<16} ", node.unwrap_or("-")),
        };
        out!(
            "{:<12} {:<11} {:<8} {:<9} {node}{}",
            s.name,
            s.state.as_str(),
            if s.healthy { "ok" } else { "down" },
            s.restarts,
            s.instance
                .as_ref()
                .and_then(|i| i.pid)
                .map_or_else(|| "-".to_string(), |pid| pid.to_string())
        );
    }
    if nodes {
        out!(
            "\nNODE             ROLE     STATE     AVAILABILITY  ADDRESS                CPUS  RELAYS"
        );
        for n in &status.nodes {
            out!(
                "{:<16} {:<8} {:<9} {:<13} {:<22} {:<5} {}",
                if n.hostname.is_empty() {
                    &n.id
                } else {
                    &n.hostname
                },
                n.role,
                n.state,
                n.availability,
                n.address,
                n.cpus,
                n.relays
            );
        }
    }
    out!("\nRELAY        ADDRESS                VIEWERS  CAPACITY  SENT");
    for r in &status.relays {
        out!(
            "{:<12} {:<22} {:<8} {:<9} {:.1} MB",
            r.id,
            r.addr,
            r.viewers,
            r.capacity,
            r.bytes_sent as f64 / 1e6
        );
    }
    out!("\nSTREAM            NAME                 PROTOCOL  VIEWERS");
    for s in &status.streams {
        out!(
            "{:<17} {:<20} {:<9} {}",
            s.id,
            s.name,
            s.protocol.as_str(),
            s.viewers
        );
    }
    if let Some(e) = &status.control_error {
        out!("\ncontrol: {e}");
    }
    if let Some(e) = &status.runtime_error {
        out!(
            "\n{} unreachable: {e}; services that stop meanwhile are restarted once it is back",
            status.runtime
        );
    }
    Ok(exit::OK)
}

pub(super) fn gateway_url(state: &StateDir, flag: Option<String>) -> Result<String> {
    match flag {
        Some(g) => Ok(g),
        None => Ok(state.read()?.gateway_url),
    }
}

pub(super) async fn streams(state: &StateDir, json: bool, gateway: Option<String>) -> Result<i32> {
    let gateway = gateway_url(state, gateway)?;
    let streams: Vec<api::gateway::Stream> =
        get(&format!("{}/streams", gateway.trim_end_matches('/'))).await?;
    if json {
        out!("{}", serde_json::to_string(&streams)?);
        return Ok(exit::OK);
    }
    out!(
        "{:<17} {:<24} {:<9} {:<26} VIEWERS",
        "ID",
        "NAME",
        "PROTOCOL",
        "STARTED_AT"
    );
    for s in &streams {
        out!(
            "{:<17} {:<24} {:<9} {:<26} {}",
            s.id,
            s.name,
            s.protocol.as_str(),
            s.started_at,
            s.viewers
        );
    }
    Ok(exit::OK)
}

pub(super) async fn publish_cmd(state: &StateDir, ca: PathBuf, args: PublishArgs) -> Result<i32> {
    // Warnings reach the streamer: a group cut at the byte limit, here or by ingest.
    server::telemetry::init(Default::default(), "warn");
    let ingest = match args.ingest {
        Some(i) => i,
        None => state.read()?.ingest_addr,
    };
    let source = if args.synthetic {
        publish::Source::Synthetic {
            fps: args.fps,
            frame_size: args.frame_size,
            group: args.group,
            duration: args.duration.map(Into::into),
        }
    } else {
        match args.input.as_deref() {
            Some("-") | None => publish::Source::Fmp4(Box::new(tokio::io::stdin())),
            Some(path) => publish::Source::Fmp4(Box::new(
                tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("opening {path}"))?,
            )),
        }
    };
    let stop = server::shutdown::on_signal();
    let json = args.json;
    let name = args.name.clone();
    let report = publish::publish(
        publish::Options {
            ingest,
            ca,
            name: args.name,
            key: args.key,
            source,
        },
        stop,
        |id| {
            // The stream goes on whether or not anyone still reads this line.
            use std::io::Write as _;
            let mut stdout = std::io::stdout();
            if json {
                let live = api::client::Live {
                    stream_id: id.to_string(),
                    name: name.clone(),
                };
                match serde_json::to_string(&live) {
                    Ok(line) => {
                        let _ = writeln!(stdout, "{line}");
                    }
                    Err(e) => eprintln!("ghost: {e}"),
                }
            } else {
                let _ = writeln!(stdout, "live: {id} ({name})");
            }
        },
    )
    .await?;
    eprintln!(
        "ghost: stream {} ended: {} frames in {} groups",
        report.stream_id, report.frames, report.groups
    );
    Ok(exit::OK)
}

pub(super) async fn watch_cmd(state: &StateDir, ca: PathBuf, args: WatchArgs) -> Result<i32> {
    // On stderr, beside the media on stdout: warnings, and what the viewer tells its user
    // (such as a codec setup that changed mid-stream). RUST_LOG overrides.
    server::telemetry::init(Default::default(), "warn,supervisor::client::watch=info");
    let gateway = gateway_url(state, args.gateway)?;
    let to_stdout = args.output.as_deref() == Some("-");
    let output: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>> = match args.output.as_deref()
    {
        None => None,
        Some("-") => Some(Box::new(tokio::io::stdout())),
        Some(path) => Some(Box::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("creating {path}"))?,
        )),
    };
    let stop = server::shutdown::on_signal();
    let result = watch::watch(
        watch::Options {
            gateway,
            stream: args.stream,
            ca,
            duration: args.duration.map(Into::into),
            read_delay: args.read_delay.map(Into::into),
            output,
            transport: match (args.transport, args.webtransport) {
                (_, true) | (TransportChoice::Webtransport, _) => watch::Transport::WebTransport,
                (TransportChoice::Websocket, false) => watch::Transport::WebSocket,
                (TransportChoice::Quic, false) => watch::Transport::Native,
            },
            endpoint: None,
            http: reqwest::Client::new(),
            measure_from_us: None,
            clock_skew_us: 0,
        },
        stop,
    )
    .await;
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            if args.json {
                use api::client::FailureReason;
                let end_reason = match e.code() {
                    exit::REJECTED => FailureReason::Rejected,
                    exit::NOT_FOUND => FailureReason::NotFound,
                    exit::LOST => FailureReason::RelayLost,
                    _ => FailureReason::Error,
                };
                let line = serde_json::to_string(&api::client::WatchFailure {
                    end_reason,
                    error: server::telemetry::Chain(&e).to_string(),
                    frames: 0,
                })?;
                if to_stdout {
                    eprintln!("{line}");
                } else {
                    out!("{line}");
                }
            }
            return Err(e.into());
        }
    };
    let line = serde_json::to_string(&summary)?;
    if args.json {
        if to_stdout {
            eprintln!("{line}");
        } else {
            out!("{line}");
        }
    } else {
        eprintln!(
            "ghost: {} frames, {} groups, {} skipped, latency p50 {:.1} ms p99 {:.1} ms; {:?}",
            summary.frames,
            summary.groups,
            summary.skipped_groups,
            summary.latency_ms.p50,
            summary.latency_ms.p99,
            summary.end_reason
        );
    }
    Ok(watch::exit_code(summary.end_reason))
}

pub(super) async fn chaos(state: &StateDir, cmd: ChaosCmd) -> Result<i32> {
    let stack = state.read()?;
    let url = format!("{}/api/kill", stack.supervisor_url);
    use api::admin::{Kill, Killed, Target};
    let kills: Vec<Kill> = match cmd {
        ChaosCmd::KillRelay { id: Some(id), .. } => vec![Kill {
            target: Target::Service(id),
            hold_ms: None,
        }],
        ChaosCmd::KillRelay { count, .. } => (0..count.max(1))
            .map(|_| Kill {
                target: Target::RandomRelay,
                hold_ms: None,
            })
            .collect(),
        ChaosCmd::Kill { service, hold } => vec![Kill {
            target: Target::Service(service),
            hold_ms: hold.map(|h| u64::try_from(Duration::from(h).as_millis()).unwrap_or(u64::MAX)),
        }],
    };
    for kill in kills {
        let killed: Killed = admin_post(state, &url, &kill).await?;
        let when = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(killed.at_ms),
        );
        for name in killed.killed {
            out!("killed {name} at {when}");
        }
    }
    Ok(exit::OK)
}
