//! `ghost bench fanout`: many viewers on one stream, in this one process, against the
//! running stack. Prints delivery, delay and the relays' CPU and memory per delivered GB.
//! With `--impair`, the viewers sit behind a network lab's impaired path while the
//! streamer stays near the stack, as in the field.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::client::FanoutReport;
use server::telemetry::Chain;
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Exit, Outcome};
use crate::timing::Timing;
use crate::{publish, watch};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network lab could not start (`--impair`); without root, says so.
    #[error("starting the network lab (--impair)")]
    Lab(#[source] netlab::Error),
    /// The synthetic stream's publisher failed before it went live.
    #[error("the benchmark's publisher did not go live")]
    PublisherNotLive(#[source] tokio::sync::oneshot::error::RecvError),
    /// The viewers' QUIC endpoints could not be set up.
    #[error(transparent)]
    Endpoint(#[from] watch::Error),
    /// The supervisor did not answer for the relays (`--profile`).
    #[error("asking the supervisor for the relays")]
    AskRelays(#[source] reqwest::Error),
    /// The supervisor's status was not understood (`--profile`).
    #[error("reading the supervisor's status")]
    ReadStatus(#[source] reqwest::Error),
    /// `--profile` with no relay process to record.
    #[error("--profile: the supervisor names no relay process to record")]
    NoRelayToProfile,
    /// `--profile` without `perf`.
    #[error("--profile needs perf (Debian: apt-get install linux-perf)")]
    NoPerf,
    /// `perf` could not be run.
    #[error("running perf")]
    RunPerf(#[source] std::io::Error),
    /// `perf record` failed.
    #[error("perf record failed ({status}): {stderr}")]
    PerfFailed {
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// The delay histogram could not be made.
    #[error(transparent)]
    Histogram(#[from] hdrhistogram::CreationError),
}

impl Outcome for Error {
    fn exit(&self) -> Option<&Exit> {
        match self {
            Error::Endpoint(e) => e.exit(),
            _ => None,
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Viewers per shared QUIC endpoint (one UDP socket and driver task each).
const VIEWERS_PER_ENDPOINT: usize = 25;

/// The carrier a benchmark's viewers reach their relay on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Carrier {
    /// Native QUIC, ALPN `ghost-view/1`.
    #[default]
    Quic,
    /// WebTransport over HTTP/3, as a browser.
    Webtransport,
    /// WebSocket over TCP, as a browser without WebTransport.
    Websocket,
    /// Native QUIC with every group on one ordered stream, in the WebSocket carrier's
    /// framing: TCP's head-of-line blocking with QUIC's loss recovery. A control case, to
    /// tell what a stream per group buys from what QUIC buys; no real viewer uses it.
    QuicOneStream,
}

impl Carrier {
    /// The carriers viewers use, in the order reports list them.
    pub const ALL: [Carrier; 3] = [Carrier::Quic, Carrier::Webtransport, Carrier::Websocket];

    /// Every carrier the benchmark knows, the control case last, in the order charts list
    /// them.
    pub const WITH_CONTROL: [Carrier; 4] = [
        Carrier::Quic,
        Carrier::Webtransport,
        Carrier::Websocket,
        Carrier::QuicOneStream,
    ];

    /// The name the command line and the reports use.
    pub fn name(self) -> &'static str {
        match self {
            Carrier::Quic => "quic",
            Carrier::Webtransport => "webtransport",
            Carrier::Websocket => "websocket",
            Carrier::QuicOneStream => "quic-one-stream",
        }
    }

    fn transport(self) -> watch::Transport {
        match self {
            Carrier::Quic => watch::Transport::Native,
            Carrier::Webtransport => watch::Transport::WebTransport,
            Carrier::Websocket => watch::Transport::WebSocket,
            Carrier::QuicOneStream => watch::Transport::QuicOneStream,
        }
    }
}

/// `ghost bench fanout` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Normal viewers, each on its own connection (QUIC unless `--transport` says otherwise).
    #[arg(long)]
    pub viewers: usize,
    /// The carrier of the `--viewers` viewers.
    #[arg(long, value_enum, default_value_t = Carrier::Quic)]
    pub transport: Carrier,
    /// Put every viewer behind an impaired network path, as `rtt=100ms,jitter=5ms,loss=2%,
    /// burst=4,rate=8mbit` (keys: rtt, jitter, loss, burst — the mean length of a loss
    /// burst in packets — and rate, a cap on each direction). The streamer stays unimpaired,
    /// near the stack. Needs root (CAP_NET_ADMIN) for the network lab.
    #[arg(long, value_name = "SPEC")]
    pub impair: Option<netlab::Impairment>,
    /// Watch this stream (id or name) instead of publishing a synthetic one.
    #[arg(long, conflicts_with = "streams")]
    pub stream: Option<String>,
    /// Synthetic streams to publish; the viewers are spread over them evenly.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Extra viewers that read at a tenth of the rate.
    #[arg(long, default_value_t = 0)]
    pub slow_viewers: usize,
    /// Extra viewers over WebTransport (as browsers), reported apart from the others.
    #[arg(long, default_value_t = 0)]
    pub webtransport: usize,
    /// Extra viewers over WebSocket (the TCP carrier), reported apart from the others.
    #[arg(long, default_value_t = 0)]
    pub websocket: usize,
    /// Frames per second of the synthetic stream.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Bytes per frame.
    #[arg(long, default_value_t = 8000)]
    pub frame_size: usize,
    /// Frames per group.
    #[arg(long, default_value_t = 60)]
    pub group: u32,
    /// Measurement time, after the ramp and the settling.
    #[arg(long, default_value = "60s")]
    pub duration: humantime::Duration,
    /// Time over which viewers join.
    #[arg(long, default_value = "10s")]
    pub ramp: humantime::Duration,
    /// Time between the ramp and the measurement, so that the last viewers' joins (the
    /// catch-up burst of the current group, through a congestion window still opening
    /// across a long path) are not measured as delay.
    #[arg(long, default_value = "0s")]
    pub settle: humantime::Duration,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Record a profile of the relays with `perf record -g` over the measured time (after
    /// the ramp) into FILE; read it with `perf report -i FILE`. Needs `perf` (Debian's
    /// `linux-perf`) and the right to trace the relays' processes.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<std::path::PathBuf>,
}

/// Host pids of the running relays, as the supervisor's status names them.
async fn relay_pids(supervisor_url: &str) -> Result<Vec<u32>> {
    let status: api::status::Status = reqwest::get(format!("{supervisor_url}/api/status"))
        .await
        .map_err(Error::AskRelays)?
        .json()
        .await
        .map_err(Error::ReadStatus)?;
    Ok(status
        .services
        .iter()
        .filter(|s| s.kind == api::status::Kind::Relay)
        .filter_map(|s| s.instance.as_ref().and_then(|i| i.pid))
        .collect())
}

/// Starts `perf record -g` of `pids` for `duration` into `file`, after `delay`.
fn record_profile(
    file: std::path::PathBuf,
    pids: Vec<u32>,
    delay: Duration,
    duration: Duration,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let out = tokio::process::Command::new("perf")
            // DWARF call graphs: release builds keep no frame pointers, so `-g` alone loses
            // every caller above quinn's and tokio's functions. 499 Hz keeps a 60 s record of
            // a busy relay near 100 MB.
            .args([
                "record",
                "--call-graph",
                "dwarf,16384",
                "-F",
                "499",
                "--quiet",
                "-o",
            ])
            .arg(&file)
            .args(["-p", &pids.join(","), "--", "sleep"])
            .arg(format!("{:.3}", duration.as_secs_f64()))
            .kill_on_drop(true)
            .output()
            .await
            .map_err(Error::RunPerf)?;
        if !out.status.success() {
            return Err(Error::PerfFailed {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    })
}

/// Which kind of viewer a benchmark task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    Slow,
    WebTransport,
    WebSocket,
}

/// A browser carrier's viewers' figures, apart from the native ones so the two compare.
#[derive(Debug, Default)]
struct Tally {
    admitted: usize,
    rejected: usize,
    frames: u64,
    expected: u64,
    skipped: u64,
    // The worst viewer's percentiles: a handful of browsers, not a distribution.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Tally {
    fn add(&mut self, s: &api::client::WatchSummary, group: u32) {
        self.admitted += 1;
        self.frames += s.frames;
        self.expected += s.frames + s.skipped_groups * u64::from(group);
        self.skipped += s.skipped_groups;
        self.p50_ms = self.p50_ms.max(s.latency_ms.p50);
        self.p99_ms = self.p99_ms.max(s.latency_ms.p99);
        self.max_ms = self.max_ms.max(s.latency_ms.max);
    }

    fn delivered_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.frames as f64 / self.expected as f64
        }
    }
}

/// CPU seconds and resident bytes of all relays, as the supervisor's status API reports
/// them (read from the relays' processes when the status is asked for).
async fn relay_usage(supervisor_url: &str) -> (f64, u64) {
    let status = match reqwest::get(format!("{supervisor_url}/api/status")).await {
        Ok(resp) => resp.json::<api::status::Status>().await.ok(),
        Err(_) => None,
    };
    status
        .iter()
        .flat_map(|s| &s.services)
        .filter(|s| s.kind == api::status::Kind::Relay)
        .filter_map(|s| s.usage)
        .fold((0.0, 0), |(cpu, rss), u| (cpu + u.cpu_s, rss + u.rss_bytes))
}

/// The running stack a benchmark measures: where its streamer, viewers and supervisor
/// connect, and the CA its certificates chain to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Ingest's QUIC address.
    pub ingest_addr: String,
    /// The viewer gateway's URL.
    pub gateway_url: String,
    /// The supervisor's URL, which reports the relays' usage.
    pub supervisor_url: String,
    /// The stack's CA certificate (PEM).
    pub ca: std::path::PathBuf,
}

/// CPU time this process has used so far, seconds (the bench's own cost).
fn own_cpu_s() -> f64 {
    server::process::cpu_seconds().unwrap_or(0.0)
}

/// Runs the fan-out benchmark.
pub async fn fanout(stack: &Target, args: FanoutArgs) -> Result<Fanout> {
    // The lab first: without the right to make it, the run fails before it publishes.
    let lab = match args.impair {
        Some(impairment) => Some(Arc::new(
            netlab::Lab::start(impairment).map_err(Error::Lab)?,
        )),
        None => None,
    };
    let run = fanout_in(stack, &args, lab.as_ref()).await;
    if let Some(lab) = lab {
        // Let the viewers' last packets (their closes) cross the path before it goes.
        tokio::time::sleep(lab.impairment().rtt + Duration::from_millis(20)).await;
        // Dropping the lab joins its thread, which takes a moment: not on a runtime worker.
        let _ = tokio::task::spawn_blocking(move || drop(lab)).await;
    }
    run
}

/// Merged frame timing of a group of viewers.
#[derive(Debug)]
struct Merged {
    delays_us: hdrhistogram::Histogram<u64>,
    late: u64,
    stalled: Duration,
    stalls: u64,
    watched: Duration,
}

impl Merged {
    fn new() -> Result<Self> {
        Ok(Merged {
            delays_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
            late: 0,
            stalled: Duration::ZERO,
            stalls: 0,
            watched: Duration::ZERO,
        })
    }

    fn add(&mut self, timing: &Timing) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.delays_us.add(timing.delays_us());
        self.late += timing.late_frames();
        self.stalled += timing.stalled();
        self.stalls += timing.stalls();
        self.watched += timing.watched();
    }

    fn latency(&self) -> api::client::Latency {
        api::client::Latency {
            p50: self.delays_us.value_at_quantile(0.5) as f64 / 1e3,
            p99: self.delays_us.value_at_quantile(0.99) as f64 / 1e3,
            max: self.delays_us.max() as f64 / 1e3,
        }
    }

    fn stall_s_per_min(&self) -> f64 {
        let minutes = self.watched.as_secs_f64() / 60.0;
        if minutes > 0.0 {
            self.stalled.as_secs_f64() / minutes
        } else {
            0.0
        }
    }
}

/// The fan-out run itself, its viewers behind `lab` when there is one.
async fn fanout_in(
    stack: &Target,
    args: &FanoutArgs,
    lab: Option<&Arc<netlab::Lab>>,
) -> Result<Fanout> {
    let stop = CancellationToken::new();
    let ca = stack.ca.clone();
    // Figures cover the time after the ramp and the settling: joins (TLS handshakes, the
    // first window of media) are not the fan-out.
    let warmup: Duration = *args.ramp + *args.settle;
    let total_time: Duration = warmup + *args.duration;

    let mut publishers = Vec::new();
    let streams: Vec<String> = match &args.stream {
        Some(s) => vec![s.clone()],
        None => {
            let run = format!("{:08x}", rand::random::<u32>());
            let mut ids = Vec::new();
            for i in 0..args.streams.max(1) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let options = publish::Options {
                    ingest: stack.ingest_addr.clone(),
                    ca: ca.clone(),
                    name: format!("bench-{run}-{i}"),
                    key: None,
                    source: publish::Source::Synthetic {
                        fps: args.fps,
                        frame_size: args.frame_size,
                        group: args.group,
                        duration: Some(total_time + Duration::from_secs(3)),
                    },
                };
                let pstop = stop.clone();
                publishers.push(tokio::spawn(async move {
                    publish::publish(options, pstop, move |id| {
                        let _ = tx.send(id.to_string());
                    })
                    .await
                }));
                ids.push(rx.await.map_err(Error::PublisherNotLive)?);
            }
            ids
        }
    };
    // Let the first group start so every viewer joins at a keyframe with frames flowing.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (_, rss0) = relay_usage(&stack.supervisor_url).await;
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss0));
    let sampler = {
        let peak = peak.clone();
        let url = stack.supervisor_url.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (_, rss) = relay_usage(&url).await;
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let profile = match &args.profile {
        Some(file) => {
            let pids = relay_pids(&stack.supervisor_url).await?;
            if pids.is_empty() {
                return Err(Error::NoRelayToProfile);
            }
            let perf = tokio::process::Command::new("perf")
                .arg("--version")
                .output()
                .await;
            if !perf.is_ok_and(|o| o.status.success()) {
                return Err(Error::NoPerf);
            }
            Some(record_profile(file.clone(), pids, warmup, *args.duration))
        }
        None => None,
    };
    let started = tokio::time::Instant::now();
    let measure_from_us = server::clock::now_us() + warmup.as_micros() as u64;
    let cpu_at_ramp_end = {
        let url = stack.supervisor_url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            (relay_usage(&url).await.0, own_cpu_s())
        })
    };

    let native = args.viewers + args.slow_viewers;
    let browsers = native + args.webtransport;
    let total = browsers + args.websocket;
    let make_endpoint = |transport| match lab {
        Some(lab) => watch::endpoint_in(&ca, transport, lab),
        None => watch::endpoint(&ca, transport),
    };
    // An endpoint offers one ALPN, so each transport has its own. The normal viewers' are
    // of their carrier (none for WebSocket), the slow viewers' native.
    let normal_quic = match args.transport {
        Carrier::Websocket => 0,
        Carrier::Quic | Carrier::Webtransport | Carrier::QuicOneStream => args.viewers,
    };
    let mut endpoints = Vec::new();
    for _ in 0..normal_quic.div_ceil(VIEWERS_PER_ENDPOINT) {
        endpoints.push(make_endpoint(args.transport.transport())?);
    }
    let mut slow_endpoints = Vec::new();
    for _ in 0..args.slow_viewers.div_ceil(VIEWERS_PER_ENDPOINT) {
        slow_endpoints.push(make_endpoint(watch::Transport::Native)?);
    }
    let mut wt_endpoints = Vec::new();
    for _ in 0..args.webtransport.div_ceil(VIEWERS_PER_ENDPOINT) {
        wt_endpoints.push(make_endpoint(watch::Transport::WebTransport)?);
    }
    let frame_interval = Duration::from_secs_f64(1.0 / f64::from(args.fps.max(1)));
    let measure_from = (started + warmup).into_std();
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    let ramp_step = args.ramp.as_secs_f64() / total.max(1) as f64;
    let slow_delay = Duration::from_secs_f64(10.0 / f64::from(args.fps.max(1)));
    for i in 0..total {
        let kind = if i < args.viewers {
            Kind::Normal
        } else if i < native {
            Kind::Slow
        } else if i < browsers {
            Kind::WebTransport
        } else {
            Kind::WebSocket
        };
        let (transport, endpoint) = match kind {
            Kind::WebTransport => (
                watch::Transport::WebTransport,
                wt_endpoints
                    .get((i - native) / VIEWERS_PER_ENDPOINT)
                    .cloned(),
            ),
            // A TCP connection of its own each, as each browser has.
            Kind::WebSocket => (watch::Transport::WebSocket, None),
            Kind::Normal => (
                args.transport.transport(),
                endpoints.get(i / VIEWERS_PER_ENDPOINT).cloned(),
            ),
            Kind::Slow => (
                watch::Transport::Native,
                slow_endpoints
                    .get((i - args.viewers) / VIEWERS_PER_ENDPOINT)
                    .cloned(),
            ),
        };
        let join_at = started + Duration::from_secs_f64(ramp_step * i as f64);
        let options = watch::Options {
            gateway: stack.gateway_url.clone(),
            stream: streams[i % streams.len()].clone(),
            ca: ca.clone(),
            duration: Some(total_time.saturating_sub(join_at - started)),
            read_delay: (kind == Kind::Slow).then_some(slow_delay),
            output: None,
            transport,
            endpoint,
            http: http.clone(),
            measure_from_us: Some(measure_from_us),
            clock_skew_us: 0,
        };
        let probe = watch::Probe {
            lab: lab.cloned(),
            timing: Some(Timing::new(frame_interval, measure_from)),
            // The lab's path leads only to the stack on this machine's loopback addresses.
            shared_clock: lab.is_some(),
        };
        let vstop = stop.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(join_at).await;
            (kind, watch::watch_probed(options, vstop, probe).await)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }
    let (cpu0, bench_cpu0) = cpu_at_ramp_end.await.unwrap_or_default();
    let elapsed = (started.elapsed().as_secs_f64() - warmup.as_secs_f64()).max(1e-3);
    let (cpu1, _) = relay_usage(&stack.supervisor_url).await;
    sampler.abort();
    let rss = peak.load(std::sync::atomic::Ordering::Relaxed);
    let bench_cpu_s = own_cpu_s();
    stop.cancel();
    for p in publishers {
        let _ = p.await;
    }

    let (mut admitted, mut rejected) = (0, 0);
    // The normal viewers' timing, and everyone's but the slow viewers'.
    let mut normal = Merged::new()?;
    let mut all = Merged::new()?;
    let mut wt = Tally::default();
    let mut ws = Tally::default();
    // Why viewers failed, other than a full relay (which an overload run asks for): each
    // reason once, with how many it struck.
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let (mut frames, mut expected, mut bytes, mut skipped, mut slow_skipped) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut max_delay_ms: f64 = 0.0;
    for (kind, r) in &results {
        let browser = match kind {
            Kind::WebTransport => Some((&mut wt, "WebTransport")),
            Kind::WebSocket => Some((&mut ws, "WebSocket")),
            Kind::Normal | Kind::Slow => None,
        };
        if let (Ok((_, Some(timing))), Kind::Normal | Kind::WebTransport | Kind::WebSocket) =
            (r, kind)
        {
            all.add(timing);
            if *kind == Kind::Normal {
                normal.add(timing);
            }
        }
        let r = r.as_ref().map(|(summary, _)| summary);
        if let Some((tally, carrier)) = browser {
            match r {
                Ok(s) => {
                    bytes += s.measured_bytes;
                    tally.add(s, args.group);
                }
                Err(e) if e.code() == exit::REJECTED => tally.rejected += 1,
                Err(e) => {
                    *failures
                        .entry(format!("{carrier} viewer: {}", Chain(e)))
                        .or_default() += 1
                }
            }
            continue;
        }
        match r {
            Ok(s) => {
                admitted += 1;
                bytes += s.measured_bytes;
                max_delay_ms = max_delay_ms.max(s.latency_ms.max);
                if *kind == Kind::Slow {
                    slow_skipped += s.skipped_groups;
                } else {
                    frames += s.frames;
                    expected += s.frames + s.skipped_groups * u64::from(args.group);
                    skipped += s.skipped_groups;
                }
            }
            Err(e) if e.code() == exit::REJECTED => rejected += 1,
            Err(e) => *failures.entry(format!("viewer: {}", Chain(e))).or_default() += 1,
        }
    }
    let relay_cpu = cpu1 - cpu0;
    let path = lab.map(|lab| lab.stats()).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Memory per viewer counts every viewer the relay held, of either kind.
    let held = admitted + wt.admitted + ws.admitted;
    let gb = bytes as f64 / 1e9;
    let report = FanoutReport {
        viewers: args.viewers,
        slow_viewers: args.slow_viewers,
        admitted,
        rejected,
        delivered_ratio: if expected == 0 {
            0.0
        } else {
            frames as f64 / expected as f64
        },
        skipped_groups: skipped,
        slow_skipped_groups: slow_skipped,
        latency_ms: normal.latency(),
        egress_mbps: bytes as f64 * 8.0 / 1e6 / elapsed.max(1e-9),
        relay_cpu_s: relay_cpu,
        relay_cpu_s_per_gb: if gb > 0.0 { relay_cpu / gb } else { 0.0 },
        relay_rss_mb: rss as f64 / 1e6,
        relay_rss_kib_per_viewer: if held > 0 {
            rss as f64 / 1024.0 / held as f64
        } else {
            0.0
        },
        relay_rss_added_kib_per_viewer: if held > 0 {
            rss.saturating_sub(rss0) as f64 / 1024.0 / held as f64
        } else {
            0.0
        },
        max_behind_groups: max_delay_ms
            / (f64::from(args.group) / f64::from(args.fps.max(1)) * 1e3),
        streams: streams.len(),
        bench_cpu_s: bench_cpu_s - bench_cpu0,
        cores,
        measured_s: elapsed,
        relay_share: relay_cpu / (elapsed * cores as f64),
        bench_share: (bench_cpu_s - bench_cpu0) / (elapsed * cores as f64),
        webtransport_viewers: args.webtransport,
        webtransport_admitted: wt.admitted,
        webtransport_rejected: wt.rejected,
        webtransport_delivered_ratio: wt.delivered_ratio(),
        webtransport_skipped_groups: wt.skipped,
        webtransport_latency_ms: api::client::Latency {
            p50: wt.p50_ms,
            p99: wt.p99_ms,
            max: wt.max_ms,
        },
        websocket_viewers: args.websocket,
        websocket_admitted: ws.admitted,
        websocket_rejected: ws.rejected,
        websocket_delivered_ratio: ws.delivered_ratio(),
        websocket_skipped_groups: ws.skipped,
        websocket_latency_ms: api::client::Latency {
            p50: ws.p50_ms,
            p99: ws.p99_ms,
            max: ws.max_ms,
        },
        transport: args.transport.name().to_owned(),
        impairment: args.impair.map(|i| i.to_string()).unwrap_or_default(),
        late_frames: all.late,
        measured_frames: all.delays_us.len(),
        stall_s_per_min: all.stall_s_per_min(),
        stalls: all.stalls,
        path_to_viewers_packets: path.to_viewers.delivered,
        path_to_viewers_lost: path.to_viewers.lost,
        path_to_viewers_overflowed: path.to_viewers.overflowed,
        path_to_stack_packets: path.to_stack.delivered,
        path_to_stack_lost: path.to_stack.lost,
        path_to_stack_overflowed: path.to_stack.overflowed,
    };
    let profile = match (profile, &args.profile) {
        (Some(recording), Some(file)) => Some(match recording.await {
            Ok(Ok(())) => Ok(file.clone()),
            Ok(Err(e)) => Err(Chain(&e).to_string()),
            Err(e) => Err(e.to_string()),
        }),
        _ => None,
    };
    Ok(Fanout {
        report,
        failures,
        profile,
    })
}

/// What a fan-out run measured, and what went wrong on the way.
#[derive(Debug)]
pub struct Fanout {
    /// The figures.
    pub report: FanoutReport,
    /// Viewers that failed for a reason other than capacity, counted by reason.
    pub failures: BTreeMap<String, usize>,
    /// The relays' profile (`--profile`): the file written, or why there is none.
    pub profile: Option<Result<std::path::PathBuf, String>>,
}

impl Fanout {
    /// The run's verdict: figures of viewers that never watched are no figures, and figures
    /// that leave failed viewers out are not the whole story; both are failures.
    pub fn verdict(&self) -> Result<(), Exit> {
        let r = &self.report;
        if r.admitted + r.webtransport_admitted + r.websocket_admitted == 0 {
            return Err(Exit::new(
                exit::FAILURE,
                "no viewer was admitted: the figures above measure nothing (see why above)",
            ));
        }
        if !self.failures.is_empty() {
            return Err(Exit::new(
                exit::FAILURE,
                format!(
                    "{} viewers failed (see why above): the figures count only the others",
                    self.failures.values().sum::<usize>()
                ),
            ));
        }
        Ok(())
    }
}

/// The report as a table, a line per figure.
pub fn table(report: &FanoutReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    macro_rules! line {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    line!(
        "viewers           {} over {} (+{} slow)",
        report.viewers,
        report.transport,
        report.slow_viewers
    );
    if !report.impairment.is_empty() {
        line!(
            "impaired path     {}: to viewers {} packets delivered, {} lost, {} over the cap; \
             to the stack {} delivered, {} lost, {} over the cap",
            report.impairment,
            report.path_to_viewers_packets,
            report.path_to_viewers_lost,
            report.path_to_viewers_overflowed,
            report.path_to_stack_packets,
            report.path_to_stack_lost,
            report.path_to_stack_overflowed
        );
    }
    line!("admitted/rejected {}/{}", report.admitted, report.rejected);
    if report.webtransport_viewers > 0 {
        line!(
            "WebTransport      {} viewers, {}/{} admitted/rejected, delivered {:.5}, \
             {} groups skipped, latency ms p50 {:.1}  p99 {:.1}  max {:.1}",
            report.webtransport_viewers,
            report.webtransport_admitted,
            report.webtransport_rejected,
            report.webtransport_delivered_ratio,
            report.webtransport_skipped_groups,
            report.webtransport_latency_ms.p50,
            report.webtransport_latency_ms.p99,
            report.webtransport_latency_ms.max
        );
    }
    if report.websocket_viewers > 0 {
        line!(
            "WebSocket         {} viewers, {}/{} admitted/rejected, delivered {:.5}, \
             {} groups skipped, latency ms p50 {:.1}  p99 {:.1}  max {:.1}",
            report.websocket_viewers,
            report.websocket_admitted,
            report.websocket_rejected,
            report.websocket_delivered_ratio,
            report.websocket_skipped_groups,
            report.websocket_latency_ms.p50,
            report.websocket_latency_ms.p99,
            report.websocket_latency_ms.max
        );
    }
    line!("delivered ratio   {:.5}", report.delivered_ratio);
    line!(
        "skipped groups    {} (slow viewers: {})",
        report.skipped_groups,
        report.slow_skipped_groups
    );
    line!(
        "latency ms        p50 {:.1}  p99 {:.1}  max {:.1}",
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.latency_ms.max
    );
    line!(
        "late frames       {} of {} (later than {} ms)",
        report.late_frames,
        report.measured_frames,
        crate::timing::LATE.as_millis()
    );
    line!(
        "stalls            {} ({:.2} s per viewer-minute)",
        report.stalls,
        report.stall_s_per_min
    );
    line!("egress            {:.1} Mbit/s", report.egress_mbps);
    line!(
        "relay CPU         {:.2} s ({:.2} s per GB)",
        report.relay_cpu_s,
        report.relay_cpu_s_per_gb
    );
    line!(
        "relay RSS         {:.1} MB peak, {:.0} KiB per viewer all included ({:.0} KiB added)",
        report.relay_rss_mb,
        report.relay_rss_kib_per_viewer,
        report.relay_rss_added_kib_per_viewer
    );
    line!("furthest behind   {:.2} groups", report.max_behind_groups);
    line!(
        "bench CPU         {:.2} s on {} cores",
        report.bench_cpu_s,
        report.cores
    );
    line!(
        "machine share     relays {:.0}%, bench {:.0}% of {} cores over {:.1} s{}",
        report.relay_share * 100.0,
        report.bench_share * 100.0,
        report.cores,
        report.measured_s,
        if report.relay_share + report.bench_share > 0.9 {
            " (the machine is full: the bench competes with the relays)"
        } else {
            ""
        }
    );
    out
}
