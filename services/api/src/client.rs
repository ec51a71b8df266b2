//! What the `ghost` clients print with `--json`: one line each, for scripts and tests.

use serde::{Deserialize, Serialize};

/// `ghost publish --json`: printed once the stream is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// The id control gave the stream.
    pub stream_id: String,
    /// The name it was announced under.
    pub name: String,
}

/// Why watching ended. Each maps to an exit code of `ghost watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The publisher stopped; the relay said so.
    Ended,
    /// `--duration` elapsed, or the viewer was stopped.
    Duration,
    /// The relay vanished or closed for another reason.
    RelayLost,
    /// Refused for capacity.
    Rejected,
}

/// Delay percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// `ghost watch --json`: one summary line at exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchSummary {
    /// The stream's id (the command may have named it instead).
    pub stream_id: String,
    /// The relay that served it.
    pub relay_id: String,
    /// Frames received and written.
    pub frames: u64,
    /// Groups received (at least their first frame).
    pub groups: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Groups the relay skipped for this viewer.
    pub skipped_groups: u64,
    /// Capture-to-receipt delay of live frames (captured after the join; the current
    /// group's earlier frames, sent at once on join, are counted in `catch_up_frames`).
    pub latency_ms: Latency,
    /// Frames of the join's group captured before the viewer joined.
    pub catch_up_frames: u64,
    /// Payload bytes received from the measurement start on (all of them without one).
    pub measured_bytes: u64,
    /// Why it ended.
    pub end_reason: EndReason,
    /// Sequence of the first group received (the join's keyframe).
    pub first_group: Option<u64>,
    /// Milliseconds from the join request to the first frame.
    pub first_frame_ms: Option<f64>,
    /// Wall clock (Unix microseconds) when the end was observed.
    pub ended_at_us: u64,
    /// How the connection ended, when the relay was lost.
    pub detail: String,
    /// How far the viewer's clock is off the relay's (the stack's), milliseconds, positive
    /// when behind: estimated from `Ping`/`Pong` on the session stream (the answer with the
    /// shortest round trip, its half taken as the one-way time, as NTP does) and added to
    /// the viewer's clock before any delay is measured. `None` when no answer came.
    #[serde(default)]
    pub clock_offset_ms: Option<f64>,
}

/// Why `ghost watch` could not watch at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Refused for capacity (exit 3).
    Rejected,
    /// No such stream (exit 4).
    NotFound,
    /// The relay could not be reached or vanished (exit 5).
    RelayLost,
    /// Anything else (exit 1).
    Error,
}

/// `ghost watch --json` when no watching started (refused, no such stream, no gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchFailure {
    /// Why.
    pub end_reason: FailureReason,
    /// The error, for people.
    pub error: String,
    /// Always 0: nothing was received.
    pub frames: u64,
}

/// `ghost bench fanout --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutReport {
    /// Normal viewers asked for.
    pub viewers: usize,
    /// Slow viewers asked for (`--slow-viewers`), reading at a tenth of the rate.
    #[serde(default)]
    pub slow_viewers: usize,
    /// Viewers admitted (normal and slow).
    pub admitted: usize,
    /// Viewers refused for capacity.
    pub rejected: usize,
    /// Frames the normal viewers got, over frames they should have got.
    pub delivered_ratio: f64,
    /// Groups skipped, normal viewers.
    pub skipped_groups: u64,
    /// Groups skipped, slow viewers.
    pub slow_skipped_groups: u64,
    /// Delay of the normal viewers.
    pub latency_ms: Latency,
    /// Media delivered to all viewers after the ramp, Mbit/s.
    pub egress_mbps: f64,
    /// Relay CPU seconds after the ramp, all relays.
    pub relay_cpu_s: f64,
    /// Relay CPU seconds per GB delivered.
    pub relay_cpu_s_per_gb: f64,
    /// Relay resident memory at its peak during the run, MB, all relays.
    pub relay_rss_mb: f64,
    /// Relay memory per admitted viewer, all included (peak RSS over viewers), KiB.
    pub relay_rss_kib_per_viewer: f64,
    /// Relay memory the viewers added: peak RSS minus RSS before they came, KiB per viewer
    /// (a relay that served a bigger run before keeps its peak: run on a fresh stack).
    pub relay_rss_added_kib_per_viewer: f64,
    /// The furthest any viewer (slow ones included) fell behind, in groups.
    pub max_behind_groups: f64,
    /// Streams published.
    pub streams: usize,
    /// This process's CPU seconds.
    pub bench_cpu_s: f64,
    /// Cores on this machine.
    pub cores: usize,
    /// Seconds measured (after the ramp).
    #[serde(default)]
    pub measured_s: f64,
    /// The relays' share of the machine while measured: their CPU seconds over the measured
    /// seconds times the cores (1.0: every core busy).
    #[serde(default)]
    pub relay_share: f64,
    /// This process's share of the machine while measured, likewise. Near 1.0 less the
    /// relays' share, the load generator, not the relay, bounds the figures.
    #[serde(default)]
    pub bench_share: f64,
    /// WebTransport viewers asked for (`--webtransport`); none of the figures above count
    /// them, except egress and relay memory per viewer.
    #[serde(default)]
    pub webtransport_viewers: usize,
    /// WebTransport viewers admitted.
    #[serde(default)]
    pub webtransport_admitted: usize,
    /// WebTransport viewers refused for capacity.
    #[serde(default)]
    pub webtransport_rejected: usize,
    /// Frames the WebTransport viewers got, over frames they should have got.
    #[serde(default)]
    pub webtransport_delivered_ratio: f64,
    /// Groups skipped, WebTransport viewers.
    #[serde(default)]
    pub webtransport_skipped_groups: u64,
    /// Delay of the WebTransport viewers: the worst viewer's percentiles.
    #[serde(default)]
    pub webtransport_latency_ms: Latency,
    /// WebSocket viewers asked for (`--websocket`), counted as the WebTransport ones are.
    #[serde(default)]
    pub websocket_viewers: usize,
    /// WebSocket viewers admitted.
    #[serde(default)]
    pub websocket_admitted: usize,
    /// WebSocket viewers refused for capacity.
    #[serde(default)]
    pub websocket_rejected: usize,
    /// Frames the WebSocket viewers got, over frames they should have got.
    #[serde(default)]
    pub websocket_delivered_ratio: f64,
    /// Groups skipped, WebSocket viewers.
    #[serde(default)]
    pub websocket_skipped_groups: u64,
    /// Delay of the WebSocket viewers: the worst viewer's percentiles.
    #[serde(default)]
    pub websocket_latency_ms: Latency,
    /// Carrier of the `--viewers` viewers (`--transport`): `quic` (native `ghost-view/1`),
    /// `webtransport` or `websocket`.
    #[serde(default)]
    pub transport: String,
    /// The network path the viewers were behind (`--impair`), in the form it is written
    /// in, as in `rtt=100ms,loss=2%`; empty when they were not behind one.
    #[serde(default)]
    pub impairment: String,
    /// Frames that arrived later than 250 ms after their capture, over all viewers but the
    /// slow ones (which fall behind by design).
    #[serde(default)]
    pub late_frames: u64,
    /// Frames whose delay was measured, over the same viewers: what `late_frames` is a
    /// part of.
    #[serde(default)]
    pub measured_frames: u64,
    /// Seconds of stall per viewer-minute, over the same viewers. A stall is a wait for the
    /// next frame longer than two frame intervals; it lasts the wait less one interval (the
    /// time the last frame is shown anyway). Waits from the measurement's start to a
    /// viewer's first frame and from its last frame to its end count too.
    #[serde(default)]
    pub stall_s_per_min: f64,
    /// Stalls, over the same viewers.
    #[serde(default)]
    pub stalls: u64,
    /// Packets the impaired path delivered to the viewers (0 without `--impair`).
    #[serde(default)]
    pub path_to_viewers_packets: u64,
    /// Packets its loss model dropped on the way to the viewers.
    #[serde(default)]
    pub path_to_viewers_lost: u64,
    /// Packets dropped on the way to the viewers because its rate cap's queue was full.
    #[serde(default)]
    pub path_to_viewers_overflowed: u64,
    /// Packets the impaired path delivered from the viewers to the stack.
    #[serde(default)]
    pub path_to_stack_packets: u64,
    /// Packets its loss model dropped on the way to the stack.
    #[serde(default)]
    pub path_to_stack_lost: u64,
    /// Packets dropped on the way to the stack because its rate cap's queue was full.
    #[serde(default)]
    pub path_to_stack_overflowed: u64,
}
