//! What a relay tells control (its heartbeat) and how it follows its certificate.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use proto::control as pb;
use tokio_util::sync::CancellationToken;

use crate::State;

/// The certificate a relay serves, and whether it is the operator's (from a public CA).
pub(crate) struct Certificate {
    pub(crate) reloading: Arc<identity::Reloading>,
    pub(crate) public: Arc<AtomicBool>,
    pub(crate) files: identity::Files,
}

/// Takes the renewed certificate for new connections (the heartbeat then reports its hash,
/// which the gateway hands to browsers) until `shutdown`.
pub(crate) async fn follow_certificate(
    cert: Certificate,
    every: Duration,
    shutdown: CancellationToken,
) {
    let follow = cert.reloading.follow(every, |certs| {
        // An operator may swap their certificate in, or take it out, while we run.
        let public = cert.files.relay_cert_is_public().unwrap_or(false);
        cert.public
            .store(public, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(cert_sha256 = %certs.leaf_sha256(), public, "certificate renewed");
    });
    tokio::select! {
        () = follow => {}
        () = shutdown.cancelled() => {}
    }
}

#[derive(Clone)]
pub(crate) struct Report {
    pub(crate) state: Arc<State>,
    pub(crate) control: proto::control::control_client::ControlClient<tonic::transport::Channel>,
    pub(crate) addr: String,
    pub(crate) certs: Arc<identity::Reloading>,
    pub(crate) cert_public: Arc<AtomicBool>,
}

impl Report {
    pub(crate) async fn beat(&self) -> Result<Duration, tonic::Status> {
        let state = &self.state;
        let streams: Vec<pb::StreamLoad> = state
            .streams()
            .iter()
            .filter_map(|(id, slot)| {
                slot.get().map(|t| pb::StreamLoad {
                    stream_id: id.clone(),
                    viewers: t.readers() as u32,
                })
            })
            .collect();
        let m = &state.metrics;
        let req = pb::RelayHeartbeatRequest {
            relay_id: state.id.clone(),
            addr: self.addr.clone(),
            server_name: identity::RELAY_NAME.to_string(),
            cert_sha256: self.certs.leaf_sha256(),
            cert_public: self.cert_public.load(std::sync::atomic::Ordering::Relaxed),
            capacity: state.seats.capacity(),
            viewers: m.viewers.get().max(0) as u32,
            streams,
            bytes_sent: m.fanout.bytes_sent.get(),
            groups_sent: m.fanout.groups_sent.get(),
            groups_skipped: m.fanout.groups_skipped.get(),
            rejected: m.rejections.get(),
            seated: m.seated.get(),
            accepting: state.seats.accepting(),
        };
        let resp = self.control.clone().relay_heartbeat(req).await?;
        Ok(Duration::from_millis(u64::from(
            resp.into_inner().interval_ms,
        )))
    }
}
