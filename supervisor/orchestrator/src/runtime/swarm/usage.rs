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
    let read = async {
        let mut answer = http
            .get(format!("http://{ops}/metrics"))
            .send()
            .await?
            .error_for_status()?;
        // A relay's page is a few KiB; whatever answers there gets no more than MAX_PAGE
        // of this supervisor's memory.
        let mut page = Vec::new();
        while let Some(chunk) = answer.chunk().await? {
            if page.len() + chunk.len() > MAX_PAGE {
                return Ok(None);
            }
            page.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>(Some(page))
    };
    match read.await {
        Ok(Some(page)) => parse(&String::from_utf8_lossy(&page)),
        Ok(None) => {
            tracing::debug!(%ops, "a relay's /metrics page is over {MAX_PAGE} bytes; ignored");
            None
        }
        Err(error) => {
            tracing::debug!(%ops, error = %server::telemetry::Chain(&error), "reading a relay's usage failed");
            None
        }
    }
}

/// The most of a relay's `/metrics` page read.
const MAX_PAGE: usize = 1 << 20;

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

    /// Serves `body` as the answer to one request on a port of loopback.
    async fn serve(body: Vec<u8>) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let _ = tcp.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(&body).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_page_past_the_bound_is_not_read_whole() {
        let figures = "ghost_relay_process_cpu_seconds_total 1.5\n\
                       ghost_relay_process_resident_memory_bytes 4096\n";
        let ok = serve(figures.as_bytes().to_vec()).await;
        assert_eq!(
            scrape(&client(), ok).await,
            Some(Usage {
                cpu_s: 1.5,
                rss_bytes: 4096
            })
        );
        // The same figures after 2 MiB of padding: refused, not buffered.
        let mut huge = vec![b'#'; 2 << 20];
        huge.extend_from_slice(b"\n");
        huge.extend_from_slice(figures.as_bytes());
        let big = serve(huge).await;
        assert_eq!(scrape(&client(), big).await, None);
    }
}
