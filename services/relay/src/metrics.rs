//! What a relay counts, on its `/metrics` as `ghost_relay_*`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};
use transport::fanout;

#[derive(Debug, Default, Clone)]
pub(crate) struct Metrics {
    pub(crate) viewers: Gauge,
    /// The part of `viewers` on WebTransport: how many are browsers.
    pub(crate) webtransport_viewers: Gauge,
    /// The part of `viewers` on WebSocket, the TCP carrier.
    pub(crate) websocket_viewers: Gauge,
    /// WebSocket connections that never completed their handshake (timeout, not a
    /// WebSocket, refused origin or subprotocol).
    pub(crate) websocket_handshake_failures: Counter,
    /// WebSocket connections refused at the connection cap.
    pub(crate) websocket_refused: Counter,
    pub(crate) streams: Gauge,
    pub(crate) rejections: Counter,
    pub(crate) joins: Counter,
    /// Viewers seated on a valid ticket, since start (control's reservations, used).
    pub(crate) seated: Counter,
    pub(crate) fanout: fanout::Metrics,
}

impl Metrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register("viewers", "Viewers connected", self.viewers.clone());
        registry.register(
            "webtransport_viewers",
            "Viewers connected over WebTransport (included in viewers)",
            self.webtransport_viewers.clone(),
        );
        registry.register(
            "websocket_viewers",
            "Viewers connected over WebSocket (included in viewers)",
            self.websocket_viewers.clone(),
        );
        registry.register(
            "websocket_handshake_failures",
            "WebSocket connections closed before a complete handshake",
            self.websocket_handshake_failures.clone(),
        );
        registry.register(
            "websocket_refused",
            "WebSocket connections refused: too many from one address, or in all",
            self.websocket_refused.clone(),
        );
        registry.register("streams", "Streams carried", self.streams.clone());
        registry.register(
            "rejections",
            "Viewers refused: at capacity, bad ticket or unknown stream",
            self.rejections.clone(),
        );
        registry.register("joins", "Viewers admitted", self.joins.clone());
        registry.register(
            "seated",
            "Viewers seated on a valid ticket",
            self.seated.clone(),
        );
        self.fanout.register(registry);
        registry.register_collector(Box::new(Process));
    }
}

/// The relay's own CPU time and resident memory, read at each scrape: a relay on another
/// Swarm node is beyond the reach of the supervisor's engine, which reads them here
/// instead (`ghost_relay_process_cpu_seconds_total`, `ghost_relay_process_resident_memory_bytes`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Process;

impl Process {
    /// Resident memory now, bytes (getrusage has only the peak).
    fn resident_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(4096);
        Some(pages * page)
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(seconds) = server::process::cpu_seconds() {
            let cpu = ConstCounter::new(seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
        }
        if let Some(bytes) = Process::resident_bytes() {
            let rss = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size",
                Some(&Unit::Bytes),
                rss.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_figures_are_on_metrics() {
        let mut registry = Registry::with_prefix("ghost_relay");
        Metrics::default().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert!(value("ghost_relay_process_cpu_seconds_total") > 0.0);
        assert!(value("ghost_relay_process_resident_memory_bytes") > 0.0);
    }
}
