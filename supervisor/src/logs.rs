//! `ghost logs`: every service's log, whatever the runtime, each line prefixed by its service
//! as `docker compose logs` does, and followed across restarts and replaced relays.
//!
//! Where the lines come from:
//! - the process runtime: each service's rotated files in the state directory's `logs/`
//!   (`relay-1.log`, `relay-1.log.1`, ...; see [`orchestrator::logfile`]), read by [`file`], which
//!   follows a file by polling it and notices a rotated or new file by its inode;
//! - Docker: each container's json-file log through the Engine API, by container id, so a
//!   relay replaced under the same name is a new source ([`engine`]);
//! - Swarm: a relay's service logs (its task may run on any node); the other services are
//!   containers of the manager, as under Docker;
//! - the supervisor's own log, `logs/supervisor.log`, under every runtime (`ghost up -d`).
//!
//! Which services there are, and which instance each runs now, come from the supervisor's
//! `/api/status`, asked again every [`POLL`] while following: a new container (a relay
//! replaced) or a new service (a relay added) is a new source, read from the moment the
//! command started. The supervisor gone (`ghost down`) ends the command.
//!
//! What was written before the command is printed first, all services merged in time order
//! (a line without a time of its own, such as a panic's later lines, goes with the line
//! before it); what follows is printed as it comes.

mod engine;
mod file;
mod render;

use std::collections::{BinaryHeap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use api::status::{Kind, Status};
use bollard::Docker;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Exit};
use orchestrator::runtime::{Backend, docker, process};
use orchestrator::stack::StateDir;
use render::Printer;

/// How often the stack is asked which instances run, while following.
const POLL: Duration = Duration::from_millis(500);
/// How often a followed file is looked at.
const FILE_POLL: Duration = Duration::from_millis(250);
/// How long the last lines may take to arrive once the stack went down.
const LAST_LINES: Duration = Duration::from_secs(3);
/// The name the supervisor's own log goes by.
pub const SUPERVISOR: &str = "supervisor";

/// `ghost logs` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Services to show, as `ghost status` names them (`relay-1`); `relay` for every relay,
    /// those added later too; `supervisor` for the supervisor's own log. Default: all.
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Keep printing lines as they are written, across restarts and replaced relays, until
    /// Ctrl-C or the stack goes down.
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines written since then: a duration ago (`10m`, `1h30m`) or a time (RFC 3339
    /// in UTC, `2025-06-01T12:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = since)]
    pub since: Option<SystemTime>,
    /// Only the last N lines of each service (`all`: every line).
    #[arg(long, value_name = "N", value_parser = tail)]
    pub tail: Option<usize>,
    /// One JSON object per line: `{"service":..,"timestamp":..,"line":..}`, the timestamp
    /// (RFC 3339) where known.
    #[arg(long)]
    pub json: bool,
}

/// One line of `ghost logs --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The service that wrote it (`relay-1`, `supervisor`).
    pub service: String,
    /// When it was written (RFC 3339, UTC), where the runtime or the line itself says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The line as the service wrote it, without its line end and terminal colours.
    pub line: String,
}

/// `--since`: a duration ago, or a time.
fn since(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{text} ago is too long ago"));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!("{text:?} is neither a duration (10m, 1h30m) nor a time (2025-06-01T12:00:00Z)")
    })
}

/// `--tail`: a number of lines, or `all` (as many as there are).
fn tail(text: &str) -> Result<usize, String> {
    match text.trim() {
        "all" => Ok(usize::MAX),
        n => n
            .parse()
            .map_err(|e| format!("{e} (a number of lines, or all)")),
    }
}

/// A line of a service's log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    /// When it was written, where the runtime or the line says.
    at: Option<SystemTime>,
    /// Where it goes among other services' lines: `at`, else the time of the line before.
    order: SystemTime,
    /// The text, without its line end.
    text: String,
}

/// Gives each line of one log its time: its own, else the last one seen before it.
#[derive(Debug, Clone, Default)]
struct Stamper {
    last: Option<SystemTime>,
}

impl Stamper {
    /// A line whose time, if any, starts it (a tracing line's timestamp).
    fn line(&mut self, text: &str) -> Line {
        self.with(render::timestamp(text), text)
    }

    /// A line written at `at`, where known.
    fn with(&mut self, at: Option<SystemTime>, text: &str) -> Line {
        if at.is_some() {
            self.last = at;
        }
        Line {
            at,
            order: self.last.unwrap_or(UNIX_EPOCH),
            text: text.to_string(),
        }
    }
}

/// Which of a log's lines are read before following it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    /// Those written since then.
    since: Option<SystemTime>,
    /// The last this many of those.
    tail: Option<usize>,
}

impl Window {
    fn apply(&self, mut lines: Vec<Line>) -> Vec<Line> {
        if let Some(since) = self.since {
            lines.retain(|l| l.order >= since);
        }
        if let Some(n) = self.tail {
            let cut = lines.len().saturating_sub(n);
            lines.drain(..cut);
        }
        lines
    }
}

/// Where one instance's log is read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    /// A log file of this host, with its rotated predecessors.
    File(PathBuf),
    /// A container's or a Swarm service's log at the Docker Engine.
    Engine(engine::Target),
}

/// A service of the stack, and where its log is read now.
#[derive(Debug, Clone)]
struct Service {
    name: String,
    /// Unknown for the supervisor, and for the files a stack left behind.
    kind: Option<Kind>,
    /// None while it runs no instance (between a crash and its restart, under Docker).
    source: Option<Source>,
}

/// What the stack looks like now.
enum Look {
    /// Up: its services, as its supervisor reports them.
    Up(Vec<Service>),
    /// No stack: no stack.json, or its supervisor is gone.
    Down(anyhow::Error),
    /// Its supervisor runs but did not answer.
    Silent(anyhow::Error),
}

async fn look(state: &StateDir, http: &reqwest::Client) -> Look {
    let stack = match state.read() {
        Ok(stack) => stack,
        Err(e) => return Look::Down(e.into()),
    };
    let url = format!("{}/api/status", stack.supervisor_url);
    let asked = async {
        http.get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .error_for_status()?
            .json::<Status>()
            .await
    };
    match asked.await {
        Ok(status) => match services_of(state, stack.runtime, &status) {
            Ok(services) => Look::Up(services),
            Err(e) => Look::Down(e),
        },
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("asking the supervisor at {url}"));
            if process::alive(stack.supervisor_pid) {
                Look::Silent(e)
            } else {
                Look::Down(e.context("the supervisor is gone"))
            }
        }
    }
}

/// The services of `status`, a stack on `runtime`, and where each one's log is, plus the
/// supervisor's own log where it has one.
fn services_of(state: &StateDir, runtime: Backend, status: &Status) -> Result<Vec<Service>> {
    let stack = docker::stack_id(state);
    let mut services = Vec::with_capacity(status.services.len() + 1);
    for s in &status.services {
        let instance = s.instance.as_ref();
        let source = match runtime {
            Backend::Process => Some(Source::File(process::log_path(state, &s.name))),
            // A relay is a Swarm service of its own, its task on whichever node.
            Backend::Swarm if s.kind == Kind::Relay => instance.map(|i| {
                Source::Engine(engine::Target::Service {
                    name: docker::object_name(&stack, &s.name),
                    generation: i.generation,
                })
            }),
            Backend::Docker | Backend::Swarm => instance
                .and_then(|i| i.container.clone())
                .map(|id| Source::Engine(engine::Target::Container(id))),
        };
        services.push(Service {
            name: s.name.clone(),
            kind: Some(s.kind),
            source,
        });
    }
    let own = process::log_path(state, SUPERVISOR);
    if own.exists() {
        services.push(Service {
            name: SUPERVISOR.into(),
            kind: None,
            source: Some(Source::File(own)),
        });
    }
    Ok(services)
}

/// The log files a stack left in the state directory (a process stack's, and the
/// supervisor's), for when no supervisor answers (`why`, said on stderr); `error` where
/// there are none.
fn left_behind(state: &StateDir, error: anyhow::Error, why: &str) -> Result<Vec<Service>> {
    let logs = state.logs();
    let Ok(dir) = std::fs::read_dir(&logs) else {
        return Err(error);
    };
    let mut names: Vec<String> = dir
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            Some(name.to_str()?.strip_suffix(".log")?.to_string())
        })
        .collect();
    if names.is_empty() {
        return Err(error);
    }
    names.sort();
    eprintln!("ghost: {why}; showing the log files in {}", logs.display());
    Ok(names
        .into_iter()
        .map(|name| Service {
            source: Some(Source::File(process::log_path(state, &name))),
            kind: None,
            name,
        })
        .collect())
}

/// The services asked for: by name or by kind; all when none is named.
#[derive(Debug)]
struct Selection(Vec<String>);

impl Selection {
    /// Checks every name in `wanted` against `services`: an unknown one is a usage error
    /// naming the valid ones.
    fn new(services: &[Service], wanted: &[String]) -> Result<Selection> {
        for w in wanted {
            if !services.iter().any(|s| s.name == *w || Self::kind_is(s, w)) {
                let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                return Err(Exit::new(
                    exit::USAGE,
                    format!(
                        "no service {w:?} in this stack; its services are {}",
                        names.join(", ")
                    ),
                )
                .into());
            }
        }
        Ok(Selection(wanted.to_vec()))
    }

    fn kind_is(service: &Service, name: &str) -> bool {
        service.kind.is_some_and(|k| k.as_str() == name)
    }

    fn matches(&self, service: &Service) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|w| service.name == *w || Self::kind_is(service, w))
    }
}

/// Lines of several logs in one time order, each log's own order kept.
fn merge(logs: Vec<(String, Vec<Line>)>) -> Vec<(usize, Line)> {
    use std::cmp::Reverse;
    let total = logs.iter().map(|(_, l)| l.len()).sum();
    let mut iters: Vec<_> = logs.into_iter().map(|(_, l)| l.into_iter()).collect();
    let mut heads: Vec<Option<Line>> = iters.iter_mut().map(Iterator::next).collect();
    let mut heap: BinaryHeap<Reverse<(SystemTime, usize)>> = heads
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some(Reverse((l.as_ref()?.order, i))))
        .collect();
    let mut out = Vec::with_capacity(total);
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(line) = heads[i].take() else {
            continue;
        };
        out.push((i, line));
        heads[i] = iters[i].next();
        if let Some(next) = &heads[i] {
            heap.push(Reverse((next.order, i)));
        }
    }
    out
}

/// Where reading goes on after what was read first.
enum Cursor {
    File(file::Follower),
    /// Lines written after `after` (the last one read, else when reading began).
    Engine {
        target: engine::Target,
        after: Option<SystemTime>,
    },
}

/// Reads what `window` asks for of `source`, and where to follow it from.
async fn open(
    docker: Option<&Docker>,
    source: &Source,
    window: Window,
) -> Result<(Vec<Line>, Cursor)> {
    match source {
        Source::File(path) => {
            let path = path.clone();
            let (lines, follower) = tokio::task::spawn_blocking(move || {
                file::open(&path, window).with_context(|| format!("reading {}", path.display()))
            })
            .await
            .context("reading a log file")??;
            Ok((lines, Cursor::File(follower)))
        }
        Source::Engine(target) => {
            let docker = docker.context("no Docker Engine to read the logs from")?;
            let (lines, after) = engine::backlog(docker, target, window).await?;
            Ok((
                lines,
                Cursor::Engine {
                    target: target.clone(),
                    after,
                },
            ))
        }
    }
}

/// New lines of one service, for the printer.
type Batch = (String, Vec<Line>);

/// Follows `cursor` until `stop`, sending what it reads on `tx`. A file gets a last look
/// when stopped, so the lines of a stack going down are not lost.
async fn pursue(
    name: String,
    cursor: Cursor,
    docker: Option<Docker>,
    tx: mpsc::Sender<Batch>,
    stop: CancellationToken,
) {
    match cursor {
        Cursor::File(mut follower) => loop {
            let stopped = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(FILE_POLL) => false,
            };
            let lines = follower.poll();
            if !lines.is_empty() && tx.send((name.clone(), lines)).await.is_err() {
                return;
            }
            if stopped {
                return;
            }
        },
        Cursor::Engine { target, after } => {
            if let Some(docker) = docker {
                engine::follow(&docker, &target, after, &name, &tx, &stop).await;
            }
        }
    }
}

/// A source that appeared while following (a relay replaced or added): what it wrote since
/// `window.since`, then what it writes.
async fn arrive(
    name: String,
    source: Source,
    window: Window,
    docker: Option<Docker>,
    tx: mpsc::Sender<Batch>,
    stop: CancellationToken,
) {
    let opened = tokio::select! {
        () = stop.cancelled() => return,
        opened = open(docker.as_ref(), &source, window) => opened,
    };
    // A container removed before it could be read (replaced again at once) has nothing
    // more to say: the next one is found at the next look.
    let Ok((lines, cursor)) = opened else {
        return;
    };
    if !lines.is_empty() && tx.send((name.clone(), lines)).await.is_err() {
        return;
    }
    pursue(name, cursor, docker, tx, stop).await;
}

/// Whether stdout takes colours: a terminal, and no `NO_COLOR` (<https://no-color.org>).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `ghost logs`.
pub async fn run(state: &StateDir, args: Args) -> Result<i32> {
    let started = SystemTime::now();
    let http = reqwest::Client::new();
    let services = match look(state, &http).await {
        Look::Up(services) => services,
        Look::Down(e) | Look::Silent(e) if args.follow => return Err(e),
        // What a stack that is gone left behind still tells why it went.
        Look::Down(e) => left_behind(state, e, "no stack is up")?,
        Look::Silent(e) => {
            let why = format!("{e:#}");
            left_behind(state, e, &why)?
        }
    };
    let selection = Selection::new(&services, &args.services)?;
    let chosen: Vec<&Service> = services.iter().filter(|s| selection.matches(s)).collect();
    let mut printer = Printer::new(args.json, colour());
    for s in &chosen {
        printer.add(&s.name);
    }
    let engine = |s: &&Service| matches!(s.source, Some(Source::Engine(_)));
    let docker = if chosen.iter().any(engine) {
        Some(docker::connect().await?)
    } else {
        None
    };
    let window = Window {
        since: args.since,
        tail: args.tail.filter(|n| *n != usize::MAX),
    };

    let opening = chosen.iter().filter_map(|s| {
        let source = s.source.clone()?;
        let docker = docker.as_ref();
        Some(async move {
            let opened = open(docker, &source, window).await;
            (s.name.clone(), source, opened)
        })
    });
    let mut backlogs = Vec::new();
    let mut cursors = Vec::new();
    let mut known = HashSet::new();
    for (name, source, opened) in futures_util::future::join_all(opening).await {
        known.insert((name.clone(), source));
        match opened {
            Ok((lines, cursor)) => {
                backlogs.push((name.clone(), lines));
                cursors.push((name, cursor));
            }
            Err(e) => eprintln!("ghost: {name}: {e:#}"),
        }
    }
    let names: Vec<String> = backlogs.iter().map(|(n, _)| n.clone()).collect();
    printer.print(
        merge(backlogs)
            .iter()
            .map(|(i, line)| (names[*i].as_str(), line)),
    )?;
    if !args.follow {
        return Ok(exit::OK);
    }
    Following {
        state,
        http,
        selection,
        printer,
        docker,
        known,
        fresh: Window {
            since: Some(args.since.map_or(started, |s| s.max(started))),
            tail: None,
        },
    }
    .run(cursors)
    .await
}

/// What `ghost logs -f` keeps while it follows.
struct Following<'a> {
    state: &'a StateDir,
    http: reqwest::Client,
    selection: Selection,
    printer: Printer,
    docker: Option<Docker>,
    /// Every source read so far, by service.
    known: HashSet<(String, Source)>,
    /// What is read of a source that appears: what it wrote since the command started.
    fresh: Window,
}

impl Following<'_> {
    /// Follows each of `cursors`, and each source that appears, until Ctrl-C or the stack
    /// goes down.
    async fn run(mut self, cursors: Vec<(String, Cursor)>) -> Result<i32> {
        // Only now: a Ctrl-C while reading what came before ends the process at once.
        let stop = server::shutdown::on_signal();
        let readers = stop.child_token();
        let (tx, mut rx) = mpsc::channel::<Batch>(256);
        let mut tasks = JoinSet::new();
        for (name, cursor) in cursors {
            let docker = self.docker.clone();
            tasks.spawn(pursue(name, cursor, docker, tx.clone(), readers.clone()));
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(exit::OK),
                Some((name, lines)) = rx.recv() => {
                    self.printer.print(lines.iter().map(|l| (name.as_str(), l)))?;
                }
                _ = tick.tick() => match look(self.state, &self.http).await {
                    Look::Up(services) => {
                        for (name, source) in self.arrived(services).await {
                            let docker = self.docker.clone();
                            let (tx, readers) = (tx.clone(), readers.clone());
                            tasks.spawn(arrive(name, source, self.fresh, docker, tx, readers));
                        }
                    }
                    Look::Silent(_) => {}
                    Look::Down(_) => break,
                },
            }
        }

        // The stack went down: the last lines of its files, then done.
        readers.cancel();
        drop(tx);
        let last = async {
            while let Some((name, lines)) = rx.recv().await {
                self.printer
                    .print(lines.iter().map(|l| (name.as_str(), l)))?;
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::select! {
            () = stop.cancelled() => {}
            r = tokio::time::timeout(LAST_LINES, last) => {
                if let Ok(r) = r {
                    r?;
                }
            }
        }
        eprintln!("ghost: the stack is down");
        Ok(exit::OK)
    }

    /// The sources of `services` not read yet: a relay replaced (under Docker, a new
    /// container) or added.
    async fn arrived(&mut self, services: Vec<Service>) -> Vec<(String, Source)> {
        let mut new = Vec::new();
        for s in services {
            let Some(source) = s.source.clone() else {
                continue;
            };
            if !self.selection.matches(&s) || !self.known.insert((s.name.clone(), source.clone())) {
                continue;
            }
            if matches!(source, Source::Engine(_)) && self.docker.is_none() {
                match docker::connect().await {
                    Ok(d) => self.docker = Some(d),
                    Err(e) => eprintln!("ghost: {}: {}", s.name, server::telemetry::Chain(&e)),
                }
            }
            self.printer.add(&s.name);
            new.push((s.name, source));
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn line(order: u64, text: &str) -> Line {
        Line {
            at: Some(at(order)),
            order: at(order),
            text: text.into(),
        }
    }

    #[test]
    fn services_merge_in_time_order_each_keeping_its_own() {
        let merged = merge(vec![
            (
                "a".into(),
                vec![line(1, "a1"), line(5, "a5"), line(5, "a5b")],
            ),
            (
                "b".into(),
                vec![line(2, "b2"), line(5, "b5"), line(9, "b9")],
            ),
            ("c".into(), vec![]),
        ]);
        let texts: Vec<(usize, &str)> = merged.iter().map(|(i, l)| (*i, l.text.as_str())).collect();
        assert_eq!(
            texts,
            [
                (0, "a1"),
                (1, "b2"),
                (0, "a5"),
                (0, "a5b"),
                (1, "b5"),
                (1, "b9")
            ]
        );
    }

    #[test]
    fn a_line_without_a_time_goes_with_the_line_before() {
        let mut stamper = Stamper::default();
        let first = stamper.line("no time yet");
        assert_eq!((first.at, first.order), (None, UNIX_EPOCH));
        let timed = stamper.line("2025-06-01T12:00:00.250000Z  INFO relay: listening");
        let when = humantime::parse_rfc3339("2025-06-01T12:00:00.250Z").expect("time");
        assert_eq!(timed.at, Some(when));
        let panic = stamper.line("  at src/main.rs:10");
        assert_eq!((panic.at, panic.order), (None, when));
    }

    #[test]
    fn a_window_keeps_what_came_since_then_the_last_lines() {
        let lines: Vec<Line> = (1..=6).map(|i| line(i, &i.to_string())).collect();
        let texts = |w: Window| -> Vec<String> {
            w.apply(lines.clone()).into_iter().map(|l| l.text).collect()
        };
        assert_eq!(texts(Window::default()).len(), 6);
        assert_eq!(
            texts(Window {
                since: None,
                tail: Some(2)
            }),
            ["5", "6"]
        );
        assert_eq!(
            texts(Window {
                since: Some(at(3)),
                tail: None
            }),
            ["3", "4", "5", "6"]
        );
        assert_eq!(
            texts(Window {
                since: Some(at(5)),
                tail: Some(3)
            }),
            ["5", "6"]
        );
        assert!(
            texts(Window {
                since: None,
                tail: Some(0)
            })
            .is_empty()
        );
    }

    #[test]
    fn since_takes_a_duration_ago_or_a_time() {
        let ten = since("10m").expect("duration");
        let ago = SystemTime::now()
            .duration_since(ten)
            .expect("in the past")
            .as_secs();
        assert!((599..=601).contains(&ago), "{ago}");
        assert_eq!(
            since("2025-06-01T12:00:00Z"),
            Ok(humantime::parse_rfc3339("2025-06-01T12:00:00Z").expect("time"))
        );
        let e = since("yesterday").expect_err("refused");
        assert!(
            e.contains("10m") && e.contains("2025-06-01T12:00:00Z"),
            "{e}"
        );
        assert_eq!(tail("all"), Ok(usize::MAX));
        assert_eq!(tail("20"), Ok(20));
        assert!(tail("-1").is_err());
    }

    #[test]
    fn each_runtime_reads_its_own_place_and_a_replaced_instance_is_a_new_source() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::new(dir.path());
        let service = |name: &str, kind, generation| api::status::Service {
            name: name.into(),
            kind,
            state: api::status::State::Running,
            healthy: true,
            restarts: 0,
            instance: Some(api::status::Instance {
                name: name.into(),
                pid: None,
                container: Some(format!("{name}-{generation}")),
                addrs: Default::default(),
                generation,
                node: None,
            }),
            usage: None,
            last_exit: None,
        };
        let status = |generation| Status {
            services: vec![
                service("control", Kind::Control, 1),
                service("relay-1", Kind::Relay, generation),
            ],
            ..Status::default()
        };
        let sources = |runtime: Backend, generation| -> Vec<(String, Option<Source>)> {
            services_of(&state, runtime, &status(generation))
                .expect("a runtime")
                .into_iter()
                .map(|s| (s.name, s.source))
                .collect()
        };
        let file = |name: &str| Some(Source::File(process::log_path(&state, name)));
        let container = |id: &str| Some(Source::Engine(engine::Target::Container(id.into())));
        assert_eq!(
            sources(Backend::Process, 1),
            [
                ("control".into(), file("control")),
                ("relay-1".into(), file("relay-1"))
            ]
        );
        // A restarted process writes on in the same file: nothing new to follow.
        assert_eq!(sources(Backend::Process, 2), sources(Backend::Process, 1));
        assert_eq!(
            sources(Backend::Docker, 2),
            [
                ("control".into(), container("control-1")),
                ("relay-1".into(), container("relay-1-2"))
            ]
        );
        let swarm = sources(Backend::Swarm, 3);
        assert_eq!(swarm[0].1, container("control-1"));
        let relay = Source::Engine(engine::Target::Service {
            name: docker::object_name(&docker::stack_id(&state), "relay-1"),
            generation: 3,
        });
        assert_eq!(swarm[1].1, Some(relay));
        // A stack file naming a runtime this ghost does not know is refused when read.
        let unknown = serde_json::from_str::<Backend>("\"kubernetes\"").expect_err("unknown");
        assert!(unknown.to_string().contains("process"), "{unknown}");
        // The supervisor's own log, once it has one.
        std::fs::create_dir_all(state.logs()).expect("logs dir");
        std::fs::write(process::log_path(&state, SUPERVISOR), "").expect("write");
        let with = sources(Backend::Docker, 1);
        assert_eq!(with.last(), Some(&(SUPERVISOR.into(), file(SUPERVISOR))));
    }

    #[test]
    fn an_unknown_service_is_a_usage_error_naming_the_services() {
        let service = |name: &str, kind| Service {
            name: name.into(),
            kind,
            source: None,
        };
        let services = [
            service("control", Some(Kind::Control)),
            service("relay-1", Some(Kind::Relay)),
            service("relay-2", Some(Kind::Relay)),
            service(SUPERVISOR, None),
        ];
        let e = Selection::new(&services, &["relay-9".into()]).expect_err("unknown");
        assert_eq!(exit::code_of(&e), exit::USAGE);
        assert_eq!(
            e.to_string(),
            "no service \"relay-9\" in this stack; its services are control, relay-1, relay-2, supervisor"
        );
        let relays = Selection::new(&services, &["relay".into()]).expect("a kind");
        let chosen: Vec<&str> = services
            .iter()
            .filter(|s| relays.matches(s))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(chosen, ["relay-1", "relay-2"]);
        let all = Selection::new(&services, &[]).expect("all");
        assert!(services.iter().all(|s| all.matches(s)));
    }
}
