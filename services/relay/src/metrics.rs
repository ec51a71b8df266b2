//! What a relay counts, on its `/metrics` as `ghost_relay_*`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
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
    }
}
