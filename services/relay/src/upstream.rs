//! The relay's side of ingest: a stream subscribed on its first viewer, shared by all of
//! them, carried until it ends or nobody has watched for [`LINGER`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Connection;
use transport::fanout;
use transport::quic::{self, Session};
use transport::track::{Track, TrackInfo};
use wire::{Code, Message};

use crate::State;
use crate::seats::{Refusal, refusal};

/// How long a relay keeps a stream with no viewer before dropping its subscription.
pub(crate) const LINGER: Duration = Duration::from_secs(3);

/// Where ingest is: a `host:port` looked up on each subscription (a restarted ingest
/// container may come back at another address), with the last address found kept for when
/// a lookup fails. A resolver that times out under load (a container network's DNS on a
/// busy host) then costs nothing while ingest stays where it was; if it moved, the connection
/// to the old address fails as it would have anyway.
pub(crate) struct Ingest {
    addr: String,
    last: Mutex<Option<SocketAddr>>,
}

impl Ingest {
    pub(crate) fn new(addr: String) -> Ingest {
        Ingest {
            addr,
            last: Mutex::new(None),
        }
    }

    /// Ingest's address now, or the last one found when the lookup fails.
    pub(crate) async fn resolve(&self) -> Result<SocketAddr, quic::ResolveError> {
        let last = || self.last.lock().unwrap_or_else(|e| e.into_inner());
        match quic::resolve(&self.addr).await {
            Ok(addr) => {
                *last() = Some(addr);
                Ok(addr)
            }
            Err(e) => match *last() {
                Some(addr) => {
                    tracing::warn!(ingest = %self.addr, error = %server::telemetry::Chain(&e), %addr, "lookup failed; using the last address found");
                    Ok(addr)
                }
                None => Err(e),
            },
        }
    }
}

/// The track of `stream_id`, subscribing at ingest on the first viewer. Concurrent first
/// viewers share one subscription.
pub(crate) async fn track(state: &Arc<State>, stream_id: &str) -> Result<Track, Refusal> {
    let slot = state
        .streams()
        .entry(stream_id.to_string())
        .or_default()
        .clone();
    let subscribed = slot
        .get_or_try_init(|| subscribe(state.clone(), stream_id.to_string()))
        .await
        .cloned();
    if subscribed.is_err() {
        let mut streams = state.streams();
        if streams
            .get(stream_id)
            .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.get().is_none())
        {
            streams.remove(stream_id);
        }
    }
    subscribed
}

async fn subscribe(state: Arc<State>, stream_id: String) -> Result<Track, Refusal> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(stream = %stream_id, error = %e, "{what}");
        refusal(Code::Unavailable, &format!("{what}: {e}"))
    };
    let addr = state
        .ingest
        .resolve()
        .await
        .map_err(|e| unavailable("cannot resolve ingest", &e))?;
    let connecting = state
        .upstream
        .connect(addr, identity::INGEST_NAME)
        .map_err(|e| unavailable("cannot reach ingest", &e))?;
    let conn = tokio::time::timeout(quic::SESSION_TIMEOUT, connecting)
        .await
        .map_err(|e| unavailable("ingest did not answer", &e))?
        .map_err(|e| unavailable("cannot reach ingest", &e))?;
    let mut session = Session::open(&conn)
        .await
        .map_err(|e| unavailable("ingest session failed", &e))?;
    let reply = async {
        session
            .send(&Message::Subscribe {
                stream_id: stream_id.clone(),
            })
            .await?;
        session.recv().await
    };
    let info = match tokio::time::timeout(quic::SESSION_TIMEOUT, reply).await {
        Ok(Ok(Some(Message::Init {
            stream_id: id,
            name,
            init,
        }))) => TrackInfo { id, name, init },
        Ok(Ok(Some(Message::Error { code, reason }))) => return Err(refusal(code, &reason)),
        Ok(Ok(_)) => return Err(refusal(Code::Internal, "ingest sent no init")),
        Ok(Err(e)) => return Err(unavailable("ingest session failed", &e)),
        Err(e) => return Err(unavailable("ingest did not answer", &e)),
    };
    let track = Track::new(info);
    state.metrics.streams.inc();
    tracing::info!(stream = %stream_id, "subscribed at ingest");
    let task_state = state.clone();
    let task_track = track.clone();
    state.tasks.spawn(async move {
        carry(&task_state, conn, session, &task_track).await;
        task_track.end();
        let mut streams = task_state.streams();
        if streams
            .get(&stream_id)
            .and_then(|s| s.get())
            .is_some_and(|t| t.info().id == task_track.info().id)
        {
            streams.remove(&stream_id);
        }
        task_state.metrics.streams.dec();
    });
    Ok(track)
}

/// Receives the stream from ingest until it ends, ingest goes away, or nobody has watched
/// for [`LINGER`].
async fn carry(state: &State, conn: Connection, mut session: Session, track: &Track) {
    let stream = track.info().id.clone();
    let idle = async {
        let mut since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if track.readers() > 0 {
                since = None;
            } else if since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
                >= LINGER
            {
                return;
            }
        }
    };
    tokio::select! {
        r = fanout::receive_track(&conn, &mut session, track, &state.metrics.fanout) => match r {
            Ok(()) => tracing::info!(%stream, "stream ended at ingest"),
            Err(error) => {
                tracing::warn!(%stream, %error, "lost the stream from ingest");
                if let Some(code) = error.code() {
                    quic::close(&conn, code, &error.to_string());
                }
            }
        },
        () = idle => {
            tracing::info!(%stream, "no viewer left; unsubscribing");
            quic::close(&conn, Code::Normal, "no viewers");
        }
        () = state.shutdown.cancelled() => quic::close(&conn, Code::Shutdown, "relay shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_lookup_falls_back_to_the_last_address_found() {
        let ingest = Ingest::new("127.0.0.1:4433".into());
        let found = ingest.resolve().await.expect("an address");
        assert_eq!(found, "127.0.0.1:4433".parse().expect("addr"));
        // A lookup that fails now (the name's resolver gone) gives the last address.
        let failing = Ingest {
            addr: "ingest-without-a-port".into(),
            last: Mutex::new(Some(found)),
        };
        assert_eq!(failing.resolve().await.expect("the last one"), found);
        // With none found before, the failure is the caller's to report.
        let never = Ingest::new("ingest-without-a-port".into());
        assert!(never.resolve().await.is_err());
    }
}
