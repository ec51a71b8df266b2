//! Logs at the Docker Engine: a container's json-file log (the Docker runtime, and the
//! services Swarm's runtime keeps on its manager), or a Swarm service's, wherever its task
//! runs. The engine stamps every line with the time it was written, which `--since` and the
//! merge of services go by.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{LogsOptions, LogsOptionsBuilder};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use api::ready::Ready;

use super::{Batch, Line, Stamper, Window};

/// Whose log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Target {
    /// A container, by id: a container replaced under the same name is another target.
    Container(String),
    /// A Swarm service, by name; `generation` tells a relay's service from the one that
    /// replaced it under the same name.
    Service { name: String, generation: u64 },
}

impl Target {
    fn logs(
        &self,
        docker: &Docker,
        options: LogsOptions,
    ) -> BoxStream<'static, Result<LogOutput, bollard::errors::Error>> {
        match self {
            Target::Container(id) => docker.logs(id, Some(options)).boxed(),
            Target::Service { name, .. } => docker.service_logs(name, Some(options)).boxed(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Container(id) => format!("container {}", &id[..id.len().min(12)]),
            Target::Service { name, .. } => format!("Swarm service {name}"),
        }
    }
}

/// Both streams, each line with the engine's time, from `since` (the engine counts whole
/// seconds: the caller drops what came before the exact time), the last `tail` lines.
fn options(follow: bool, since: Option<SystemTime>, tail: Option<usize>) -> LogsOptions {
    let since = since
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX));
    let tail = tail.map_or_else(|| "all".to_string(), |n| n.to_string());
    LogsOptionsBuilder::default()
        .follow(follow)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(since)
        .tail(&tail)
        .build()
}

/// The lines of one chunk of the engine's output: `TIME text` each. The readiness line a
/// service prints for the supervisor is left out, as the process runtime's logs never hold it.
fn lines(chunk: LogOutput, stamper: &mut Stamper) -> Vec<Line> {
    let bytes = chunk.into_bytes();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((time, text)) => match humantime::parse_rfc3339_weak(time) {
                Ok(at) => stamper.with(Some(at), text),
                Err(_) => stamper.with(None, line),
            },
            None => match humantime::parse_rfc3339_weak(line) {
                // An empty line, stamped.
                Ok(at) => stamper.with(Some(at), ""),
                Err(_) => stamper.with(None, line),
            },
        })
        .filter(|line| Ready::parse(&line.text).is_none())
        .collect()
}

/// What `window` asks for of `target`'s log, and the time to follow it from: its last
/// line's, else when it was asked.
pub(super) async fn backlog(
    docker: &Docker,
    target: &Target,
    window: Window,
) -> Result<(Vec<Line>, Option<SystemTime>)> {
    let asked = SystemTime::now();
    // One line more than asked for: the readiness line, left out, may be among them.
    let tail = window.tail.map(|n| n.saturating_add(1));
    let mut logs = target.logs(docker, options(false, window.since, tail));
    let mut stamper = Stamper::default();
    let mut read = Vec::new();
    while let Some(chunk) = logs.next().await {
        let chunk = chunk.with_context(|| format!("reading the log of {}", target.describe()))?;
        read.extend(lines(chunk, &mut stamper));
    }
    let read = window.apply(read);
    let after = read.last().and_then(|l| l.at).unwrap_or(asked);
    Ok((read, Some(after)))
}

/// Sends `service`'s lines written after `after` as they come, until its log ends (the
/// container stopped, the service went) or `stop`.
pub(super) async fn follow(
    docker: &Docker,
    target: &Target,
    after: Option<SystemTime>,
    service: &str,
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) {
    let mut logs = target.logs(docker, options(true, after, None));
    let mut stamper = Stamper::default();
    loop {
        let chunk = tokio::select! {
            () = stop.cancelled() => return,
            chunk = logs.next() => chunk,
        };
        // An error is the instance going away: its successor is a target of its own.
        let Some(Ok(chunk)) = chunk else {
            return;
        };
        let new: Vec<Line> = lines(chunk, &mut stamper)
            .into_iter()
            .filter(|l| after.is_none_or(|after| l.order > after))
            .collect();
        if !new.is_empty() && tx.send((service.to_string(), new)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_carries_the_engines_time() {
        let chunk = LogOutput::StdErr {
            message: "2025-06-01T12:00:00.123456789Z {\"level\":\"INFO\"}\n\
                      2025-06-01T12:00:00.5Z {\"ready\":\"relay\",\"quic\":\"0.0.0.0:4500\"}\n\
                      2025-06-01T12:00:01Z second\n"
                .into(),
        };
        let got = lines(chunk, &mut Stamper::default());
        let texts: Vec<&str> = got.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["{\"level\":\"INFO\"}", "second"]);
        assert_eq!(
            got[0].at,
            Some(humantime::parse_rfc3339("2025-06-01T12:00:00.123456789Z").expect("time"))
        );
        let untimed = lines(
            LogOutput::StdOut {
                message: "no time here\n".into(),
            },
            &mut Stamper::default(),
        );
        assert_eq!(untimed[0].text, "no time here");
        assert_eq!(untimed[0].at, None);
    }

    #[test]
    fn the_engine_is_asked_in_whole_seconds_for_both_streams() {
        let since = humantime::parse_rfc3339("2025-06-01T12:00:00.750Z").expect("time");
        let o = options(true, Some(since), Some(5));
        assert_eq!(
            (o.follow, o.stdout, o.stderr, o.timestamps),
            (true, true, true, true)
        );
        assert_eq!(o.since, 1_748_779_200);
        assert_eq!(o.tail, "5");
        assert_eq!(options(false, None, None).tail, "all");
    }
}
