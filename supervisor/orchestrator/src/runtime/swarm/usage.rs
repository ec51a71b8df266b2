//! A relay's CPU time and memory on a node other than this manager: its engine is out of
//! this supervisor's reach, so the figures come from the relay itself, which reports its
//! getrusage CPU seconds and resident memory on its ops listener's `/metrics`. The manager
//! reaches that listener at the node's swarm address, as it does for health probes.

use std::net::SocketAddr;
use std::time::Duration;

use api::status::Usage;

/// How long a scrape may take: the status page waits on it.
pub(super) const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
/// The relay's CPU seconds, user and system, counted since it started.
const CPU: &str = "ghost_relay_process_cpu_seconds_total";
/// The relay's resident memory now, bytes.
const RSS: &str = "ghost_relay_process_resident_memory_bytes";

/// A client for [`scrape`], its requests bounded by [`SCRAPE_TIMEOUT`].
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// The usage a relay reports on the ops listener at `ops`; `None` when it does not answer
/// or reports none.
pub(super) async fn scrape(http: &reqwest::Client, ops: SocketAddr) -> Option<Usage> {
    let answer = http.get(format!("http://{ops}/metrics")).send().await;
    let text = match answer.and_then(reqwest::Response::error_for_status) {
        Ok(answer) => answer.text().await,
        Err(error) => Err(error),
    };
    match text {
        Ok(text) => parse(&text),
        Err(error) => {
            tracing::debug!(%ops, error = %server::telemetry::Chain(&error), "reading a relay's usage failed");
            None
        }
    }
}

/// The usage in a Prometheus text exposition: both figures, or `None`.
pub(super) fn parse(text: &str) -> Option<Usage> {
    let value = |name: &str| {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let rss = value(RSS)?;
    Some(Usage {
        cpu_s: value(CPU)?,
        rss_bytes: if rss.is_finite() && rss > 0.0 {
            rss as u64
        } else {
            0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_a_relays_metrics() {
        let text = "\
# HELP ghost_relay_viewers Viewers connected
# TYPE ghost_relay_viewers gauge
ghost_relay_viewers 3
# HELP ghost_relay_process_cpu_seconds User and system CPU time spent
# TYPE ghost_relay_process_cpu_seconds counter
# UNIT ghost_relay_process_cpu_seconds seconds
ghost_relay_process_cpu_seconds_total 12.5
# TYPE ghost_relay_process_resident_memory_bytes gauge
ghost_relay_process_resident_memory_bytes 41943040
# EOF
";
        assert_eq!(
            parse(text),
            Some(Usage {
                cpu_s: 12.5,
                rss_bytes: 41_943_040
            })
        );
        // A relay of a release without the figures reports none, rather than zeros.
        assert_eq!(parse("ghost_relay_viewers 3\n# EOF\n"), None);
    }
}
