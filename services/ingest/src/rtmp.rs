//! RTMP ingest: OBS, hardware encoders and phones publish to `rtmp://HOST/live/STREAM_KEY`.
//!
//! scuffle-rtmp speaks the protocol (handshake, chunk streams, commands); this module decides
//! who may publish, remuxes the FLV media to the stream's CMAF ([`crate::remux`]) and feeds
//! the same [`Track`] a QUIC publisher would, so relays and viewers cannot tell the two apart.
//!
//! Failure behaviour, as for a QUIC publisher:
//! - "Stop Streaming" (`deleteStream`) ends the stream at once;
//! - a killed encoder closes the TCP connection: the read fails and the stream ends at once;
//! - a connection that goes silent ends the stream after [`MEDIA_TIMEOUT`] without media
//!   (TCP keep-alive alone takes minutes);
//! - each connection is its own task with bounded buffers: a slow or stalled publisher holds
//!   up nobody else;
//! - a group (keyframe to keyframe) past the track's byte limit is cut: its frames up to the
//!   limit stay, the rest are dropped until the next keyframe (see
//!   [`transport::track::Limits`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use scuffle_rtmp::ServerSession;
use scuffle_rtmp::chunk::CHUNK_SIZE;
use scuffle_rtmp::chunk::writer::ChunkWriter;
use scuffle_rtmp::command_messages::on_status::{OnStatus, OnStatusCode};
use scuffle_rtmp::command_messages::{Command, CommandResultLevel, CommandType};
use scuffle_rtmp::session::server::{ServerSessionError, SessionData, SessionHandler};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use transport::admit::{Admission, Decision};
use transport::track::{GroupWriter, Track, TrackInfo};
use wire::{Code, Frame};

use crate::State;
use crate::remux::{Output, Remuxer};
use api::Protocol;

/// The RTMP application streamers publish to: `rtmp://HOST/live`.
pub const APP: &str = "live";

/// A publishing connection that sends no media for this long is taken as gone.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(1);

/// Time from TCP connect to a started publish, at most (handshake, connect, publish).
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

/// Time from TCP connect to the client's whole handshake opening (C0 and C1, 1,537 bytes),
/// at most: an encoder sends it at once, so an idle connection is cut in seconds.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);

/// RTMP connections one address may hold at once, by default: an encoder holds one, a
/// studio a few.
pub const PER_SOURCE: u32 = 8;

/// C0 (the version byte) and C1 (1,536 bytes): what a client sends first.
const HANDSHAKE_OPENING: usize = 1 + 1536;

/// The RTMP version every encoder speaks (C0).
const RTMP_VERSION: u8 = 3;

/// Waits until the client has sent its handshake's opening (C0 and C1) without reading it,
/// so the protocol crate reads it as ever; `false` when the client closed, sent something
/// that is not RTMP, or took longer than [`HANDSHAKE_DEADLINE`]. A client that sent part of
/// it is looked at again every 20 ms, so a trickle costs at most 100 looks.
async fn handshake_opened(tcp: &TcpStream) -> bool {
    tokio::time::timeout(HANDSHAKE_DEADLINE, async {
        let mut first = [0u8; HANDSHAKE_OPENING];
        loop {
            if tcp.readable().await.is_err() {
                return false;
            }
            match tcp.peek(&mut first).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if first[0] != RTMP_VERSION => {
                    tracing::debug!(bytes = n, "not an RTMP handshake");
                    return false;
                }
                Ok(n) if n >= HANDSHAKE_OPENING => return true,
                // Part of it so far: readiness stays set while bytes wait unread, so wait a
                // little rather than spin.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// RTMP connection slots kept for addresses holding no other connection (at most half of
/// all).
const RESERVE: usize = 32;

/// How often the watchdog looks at a connection's last media.
const WATCHDOG_TICK: Duration = Duration::from_millis(50);

/// Runs the RTMP listener until `shutdown`; each connection is its own task, at most
/// `max_connections` at once (connections past it are closed at once).
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    max_connections: usize,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    // A reserve of the slots goes only to an address holding no other connection: addresses
    // that each keep idle connections open, up to their cap, fill the rest and no more, so
    // a streamer from anywhere else still gets in.
    let reserve_size = RESERVE.min(max_connections / 2);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections - reserve_size));
    let reserve = Arc::new(tokio::sync::Semaphore::new(reserve_size));
    let tasks = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, never spin.
                    tracing::warn!(%error, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // One address cannot hold every slot: past its share it is closed at once, and the
        // slots it holds free within the handshake deadline unless it publishes. TCP's own
        // handshake has proved the address, so there is no Retry to ask for.
        let mut held = match admission.decide(peer.ip(), true) {
            Decision::Accept(held) => held,
            Decision::Retry | Decision::Refuse => {
                tracing::debug!(%peer, "RTMP connection refused: too many from this address");
                continue;
            }
        };
        held.established();
        let slot = slots.clone().try_acquire_owned().or_else(|full| {
            if held.alone() {
                reserve.clone().try_acquire_owned()
            } else {
                Err(full)
            }
        });
        let Ok(slot) = slot else {
            state.metrics.rtmp_refused.inc();
            tracing::warn!(%peer, "RTMP connection refused: too many connections");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("rtmp", %peer);
        tasks.spawn(tracing::Instrument::instrument(
            async move {
                if handshake_opened(&tcp).await {
                    connection(state, tcp, shutdown).await;
                } else {
                    state.metrics.rtmp_handshake_timeouts.inc();
                    tracing::debug!("RTMP connection dropped: no handshake in time, or not RTMP");
                }
                drop((slot, held));
            },
            span,
        ));
    }
    tasks.close();
    // Every connection ends its stream at control on shutdown; give them a moment.
    let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
}

/// When the connection last did something that counts, shared with its watchdog.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    publishing: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            publishing: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Why the connection should be dropped now, if it should.
    fn expired(&self) -> Option<&'static str> {
        let now = self.start.elapsed();
        if self.publishing.load(Ordering::Relaxed) {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            (now.saturating_sub(last) > MEDIA_TIMEOUT).then_some("no media in time")
        } else {
            (now > PUBLISH_DEADLINE).then_some("no publish in time")
        }
    }
}

/// Why a publish was refused or cut, told to the encoder as an RTMP `onStatus` error.
#[derive(Debug, Clone)]
struct Refusal {
    /// The status code (`NetStream.Publish.BadName`, …).
    status: &'static str,
    /// What the streamer reads.
    reason: String,
}

/// One RTMP connection's publish: from the `publish` command to its end.
struct Publish {
    state: Arc<State>,
    activity: Arc<Activity>,
    /// Set once the encoder asked to publish and was let in.
    live: Option<Live>,
    /// Why the session was stopped by us, to tell the encoder.
    refusal: Option<Refusal>,
}

/// A publish that was let in: its stream at control, and its track once media flows.
struct Live {
    stream_id: u32,
    name: String,
    stream: proto::control::Stream,
    remuxer: Remuxer,
    track: Option<Track>,
    group: Option<GroupWriter>,
    next_group: u64,
    /// Per track (video, audio), the smallest (arrival − decode time) seen, in µs: a frame's
    /// capture time is its decode time on this clock, so delay building up anywhere between
    /// the encoder's output and the viewer shows, while the encoder's own delay (B-frame
    /// reordering, lookahead), which differs between the tracks, does not.
    anchor_us: [Option<i128>; 2],
    _permit: OwnedSemaphorePermit,
}

impl Publish {
    fn refuse(&mut self, status: &'static str, reason: impl Into<String>) -> ServerSessionError {
        let reason = reason.into();
        tracing::warn!(%reason, status, "RTMP publish refused");
        self.refusal = Some(Refusal { status, reason });
        // The crate's error type is closed; the real reason is in `refusal`.
        ServerSessionError::PublishBeforeConnect
    }

    async fn publish(
        &mut self,
        stream_id: u32,
        app: &str,
        key: &str,
    ) -> Result<(), ServerSessionError> {
        if self.live.is_some() {
            return Err(self.refuse(
                "NetStream.Publish.BadName",
                "one publish per connection: this connection is already live",
            ));
        }
        if app != APP {
            return Err(self.refuse(
                "NetStream.Publish.BadName",
                format!("unknown application {app:?}: publish to rtmp://HOST/{APP}/STREAM_KEY"),
            ));
        }
        // The URL's last part is the key; on a stack without required keys, an unknown key is
        // taken as the stream's name.
        let name = match crate::authorize(&self.state, Some(key), Some(key)) {
            Ok(name) => name,
            Err(refusal) => {
                return Err(self.refuse("NetStream.Publish.Unauthorized", refusal.to_string()));
            }
        };
        let Ok(permit) = self.state.publishers.clone().try_acquire_owned() else {
            self.state.metrics.publishers_refused.inc();
            return Err(self.refuse(
                "NetStream.Publish.Failed",
                "ingest has no room for more streamers",
            ));
        };
        let stream = match crate::create(&self.state, &name, Protocol::Rtmp).await {
            Ok(stream) => stream,
            Err((code, reason)) => {
                let status = match code {
                    Code::NameInUse | Code::Protocol => "NetStream.Publish.BadName",
                    _ => "NetStream.Publish.Failed",
                };
                return Err(self.refuse(status, reason));
            }
        };
        tracing::info!(stream = %stream.id, %name, "RTMP publish started");
        // Relays may subscribe before the sequence headers arrive: they wait for the track.
        self.state
            .pending()
            .insert(stream.id.clone(), tokio::sync::watch::Sender::new(None));
        self.activity.touch();
        self.activity.publishing.store(true, Ordering::Relaxed);
        self.live = Some(Live {
            stream_id,
            name,
            stream,
            remuxer: Remuxer::new(),
            track: None,
            group: None,
            next_group: 0,
            anchor_us: [None, None],
            _permit: permit,
        });
        Ok(())
    }

    async fn media(
        &mut self,
        video: bool,
        timestamp: u32,
        data: Bytes,
    ) -> Result<(), ServerSessionError> {
        let Some(live) = self.live.as_mut() else {
            // Media before publish, or after unpublish: nothing to feed.
            return Ok(());
        };
        self.activity.touch();
        let outputs = if video {
            live.remuxer.video(timestamp, data)
        } else {
            live.remuxer.audio(timestamp, data)
        };
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(error) => {
                let reason = error.to_string();
                self.end().await;
                return Err(self.refuse("NetStream.Publish.Failed", reason));
            }
        };
        for output in outputs {
            if let Err(reason) = self.output(output, video) {
                self.end().await;
                return Err(self.refuse("NetStream.Publish.Failed", reason));
            }
        }
        Ok(())
    }

    /// Takes one remuxer output (from a video message or an audio one) into the track.
    fn output(&mut self, output: Output, video: bool) -> Result<(), String> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        match output {
            Output::Init(init) => {
                if live.track.is_some() {
                    return Ok(());
                }
                let track = Track::new(TrackInfo {
                    id: live.stream.id.clone(),
                    name: live.name.clone(),
                    init,
                });
                crate::go_live(
                    &self.state,
                    &track,
                    live.stream.started_at_us,
                    Protocol::Rtmp,
                );
                live.track = Some(track);
            }
            Output::Fragment {
                payload,
                keyframe,
                dts_us,
            } => {
                let Some(track) = &live.track else {
                    return Ok(());
                };
                let now = i128::from(server::clock::now_us());
                let dts = i128::from(dts_us);
                let slot = &mut live.anchor_us[usize::from(!video)];
                let anchor = slot.map_or(now - dts, |a| a.min(now - dts));
                *slot = Some(anchor);
                let capture_us = u64::try_from(anchor + dts).unwrap_or(0);
                let frame = Frame::new(capture_us, &payload).map_err(|e| e.to_string())?;
                // Counted as a QUIC publisher's frames are, so ingest's received figures
                // (its bitrate) cover every protocol.
                let fanout = &self.state.metrics.fanout;
                fanout.frames_received.inc();
                fanout.bytes_received.inc_by(frame.encoded().len() as u64);
                if keyframe {
                    // Dropping the previous writer completes that group.
                    live.group = track.start_group(live.next_group);
                    live.next_group += 1;
                    if live.group.is_some() {
                        fanout.groups_received.inc();
                    }
                }
                // Frames before the first keyframe have no group to join and are dropped.
                if let Some(group) = &mut live.group
                    && let Err(over) = group.push(frame)
                {
                    // RTMP has no way to refuse part of a stream, so the encoder keeps
                    // sending; its frames are dropped until the next keyframe starts a
                    // group, and viewers move on to that group as usual.
                    tracing::warn!(
                        stream = %live.stream.id,
                        group = group.sequence(),
                        error = %over,
                        "RTMP group cut at its byte limit; frames dropped until the next keyframe"
                    );
                    self.state.metrics.fanout.groups_cut.inc();
                    live.group = None;
                }
            }
        }
        Ok(())
    }

    /// Ends the stream, if it is live: viewers first, then control. Idempotent.
    async fn end(&mut self) {
        let Some(mut live) = self.live.take() else {
            return;
        };
        self.activity.publishing.store(false, Ordering::Relaxed);
        drop(live.group.take());
        match &live.track {
            Some(track) => crate::finish(&self.state, track).await,
            None => {
                // Never got media: not listed here, but control has it.
                let track = Track::new(TrackInfo {
                    id: live.stream.id.clone(),
                    name: live.name.clone(),
                    init: Bytes::new(),
                });
                crate::finish(&self.state, &track).await;
            }
        }
        tracing::info!(stream = %live.stream.id, rtmp_stream = live.stream_id, "RTMP publish ended");
    }
}

/// The crate's view of a [`Publish`]: the session calls it as commands and media arrive.
struct Handler<'a>(&'a mut Publish);

impl SessionHandler for Handler<'_> {
    async fn on_publish(
        &mut self,
        stream_id: u32,
        app_name: &str,
        stream_name: &str,
    ) -> Result<(), ServerSessionError> {
        self.0.publish(stream_id, app_name, stream_name).await
    }

    async fn on_unpublish(&mut self, stream_id: u32) -> Result<(), ServerSessionError> {
        if self
            .0
            .live
            .as_ref()
            .is_some_and(|l| l.stream_id == stream_id)
        {
            self.0.end().await;
        }
        Ok(())
    }

    async fn on_data(
        &mut self,
        _stream_id: u32,
        data: SessionData,
    ) -> Result<(), ServerSessionError> {
        match data {
            SessionData::Video { timestamp, data } => self.0.media(true, timestamp, data).await,
            SessionData::Audio { timestamp, data } => self.0.media(false, timestamp, data).await,
            // onMetaData and the like: the sequence headers carry all the remux needs.
            SessionData::Amf0 { .. } => Ok(()),
        }
    }
}

/// Serves one TCP connection to its end.
async fn connection(state: Arc<State>, mut tcp: TcpStream, shutdown: CancellationToken) {
    state.metrics.rtmp_connections.inc();
    let activity = Activity::new();
    let mut publish = Publish {
        state: state.clone(),
        activity: activity.clone(),
        live: None,
        refusal: None,
    };
    let outcome = {
        let session = ServerSession::new(&mut tcp, Handler(&mut publish));
        // A panic in the protocol crate ends this connection (and its stream, below), never
        // leaves the stream listed with nobody feeding it.
        let run = std::panic::AssertUnwindSafe(session.run()).catch_unwind();
        tokio::pin!(run);
        let mut tick = tokio::time::interval(WATCHDOG_TICK);
        loop {
            tokio::select! {
                result = &mut run => break match result {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => {
                        tracing::error!("the RTMP session panicked: connection dropped");
                        Err("the RTMP session panicked".to_string())
                    }
                },
                () = shutdown.cancelled() => break Err("ingest shutting down".to_string()),
                _ = tick.tick() => {
                    if let Some(why) = activity.expired() {
                        break Err(why.to_string());
                    }
                }
            }
        }
    };
    let was_live = publish.live.is_some();
    publish.end().await;
    match (&publish.refusal, outcome) {
        (Some(refusal), _) => {
            // Tell the encoder why before closing: OBS and ffmpeg show the description.
            let _ =
                tokio::time::timeout(Duration::from_millis(500), send_status(&mut tcp, refusal))
                    .await;
        }
        (None, Ok(())) => tracing::debug!("RTMP connection closed"),
        (None, Err(reason)) if was_live => tracing::info!(%reason, "RTMP publisher gone"),
        (None, Err(reason)) => tracing::debug!(%reason, "RTMP connection dropped"),
    }
    let _ = tcp.shutdown().await;
    state.metrics.rtmp_connections.dec();
}

/// Writes an `onStatus` error with `refusal`'s code and description.
async fn send_status(tcp: &mut TcpStream, refusal: &Refusal) -> std::io::Result<()> {
    let mut writer = ChunkWriter::default();
    // The session told the encoder this chunk size after the handshake.
    writer.set_chunk_size(CHUNK_SIZE);
    let mut buf = Vec::new();
    Command {
        command_type: CommandType::OnStatus(OnStatus {
            level: CommandResultLevel::Error,
            code: OnStatusCode(refusal.status),
            description: Some(refusal.reason.clone().into()),
            others: None,
        }),
        transaction_id: 0.0,
    }
    .write(&mut buf, &writer)
    .map_err(std::io::Error::other)?;
    tcp.write_all(&buf).await?;
    tcp.flush().await
}
