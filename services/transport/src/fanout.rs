//! Moving a [`Track`] over QUIC: [`send_track`] to one subscriber, [`receive_track`] from a
//! publisher or an upstream. Both are generic over the [`Peer`], so a WebTransport viewer
//! gets the very same fan-out as a native one.
//!
//! Every group goes on its own unidirectional stream, newer groups at higher priority. When
//! a newer group starts while a subscriber is still on an older one, the older one gets
//! [`SKIP_GRACE`] to finish (its last frames leaving the buffer); a subscriber still stuck
//! after that is behind, and the older stream is reset with [`Reset::GroupSkipped`]. So a
//! slow subscriber loses whole groups, never more than about one group behind, and the
//! sender never waits for it: other subscribers are untouched.

use std::time::Duration;

use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use quinn::{ConnectionError, WriteError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wire::{Code, GroupDecoder, GroupEvent, GroupHeader, Message, Reset, WireError};

use crate::peer::{Peer, RecvStream, SendStream};
use crate::quic::{self, Session, SessionError};
use crate::track::{GroupReader, GroupWriter, Over, Track, TrackReader};

/// How long a superseded group may keep sending before it is reset.
pub const SKIP_GRACE: Duration = Duration::from_millis(300);
/// How long the last group may take to leave once the track has ended.
pub const END_DRAIN: Duration = Duration::from_millis(1_000);
/// How long a sender waits for the subscriber to close after `End`, before closing itself.
pub const END_LINGER: Duration = Duration::from_millis(500);

/// Counters of media moved, registered once per service and shared by all its connections.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Groups sent completely.
    pub groups_sent: Counter,
    /// Groups skipped (reset or never opened) because a subscriber was behind.
    pub groups_skipped: Counter,
    /// Frames written.
    pub frames_sent: Counter,
    /// Bytes written (frame headers and payloads).
    pub bytes_sent: Counter,
    /// Groups whose stream was opened by the upstream, skipped ones included.
    pub groups_received: Counter,
    /// Frames decoded from the upstream.
    pub frames_received: Counter,
    /// Bytes read from the upstream's group streams (headers and payloads).
    pub bytes_received: Counter,
    /// Groups from the upstream cut at a byte limit (see [`crate::track::Limits`]).
    pub groups_cut: Counter,
    /// Groups a subscriber cut at its byte limit (it stopped the group's stream with
    /// [`Reset::GroupTooLarge`]).
    pub groups_cut_by_subscriber: Counter,
}

impl Metrics {
    /// Registers every counter under `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let counters: [(&str, &str, &Counter); 9] = [
            ("groups_sent", "Groups sent completely", &self.groups_sent),
            (
                "groups_skipped",
                "Groups skipped for a subscriber that fell behind",
                &self.groups_skipped,
            ),
            ("frames_sent", "Frames sent", &self.frames_sent),
            ("sent_bytes", "Media bytes sent", &self.bytes_sent),
            ("groups_received", "Groups received", &self.groups_received),
            ("frames_received", "Frames received", &self.frames_received),
            (
                "received_bytes",
                "Media bytes received",
                &self.bytes_received,
            ),
            (
                "groups_cut",
                "Groups received cut at the byte limit of a group or stream",
                &self.groups_cut,
            ),
            (
                "groups_cut_by_subscriber",
                "Groups sent that a subscriber cut at its byte limit",
                &self.groups_cut_by_subscriber,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
    }
}

/// Sends the track to one subscriber until it ends. Returns the sequence of the last group
/// sent (or started), `None` when none was; an error when the connection was lost.
pub async fn send_track<P: Peer>(
    conn: &P,
    mut reader: TrackReader,
    metrics: &Metrics,
) -> Result<Option<u64>, ConnectionError> {
    let mut tasks = JoinSet::new();
    let mut current: Option<CancellationToken> = None;
    let mut last = None;
    loop {
        tokio::select! {
            group = reader.next_group() => {
                let Some(group) = group else { break };
                if let Some(older) = current.take() {
                    older.cancel();
                }
                let skip = CancellationToken::new();
                last = Some(group.sequence());
                tasks.spawn(send_group(conn.clone(), group, skip.clone(), metrics.clone()));
                current = Some(skip);
            }
            Some(done) = tasks.join_next() => {
                if let Ok(Err(e)) = done {
                    return Err(e);
                }
            }
            e = conn.closed() => return Err(e),
        }
    }
    let drain = async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                return Err(e);
            }
        }
        Ok(())
    };
    tokio::pin!(drain);
    match tokio::time::timeout(END_DRAIN, &mut drain).await {
        Ok(result) => result?,
        Err(_) => {
            // Still stuck after the end: skip what is left, give the resets time to go out.
            if let Some(skip) = current {
                skip.cancel();
            }
            let _ = tokio::time::timeout(SKIP_GRACE * 2, &mut drain).await;
        }
    }
    Ok(last)
}

enum Stop {
    Skipped,
    Write(WriteError),
}

async fn send_group<P: Peer>(
    conn: P,
    mut group: GroupReader,
    skip: CancellationToken,
    metrics: Metrics,
) -> Result<(), ConnectionError> {
    let deadline = async {
        skip.cancelled().await;
        tokio::time::sleep(SKIP_GRACE).await;
    };
    tokio::pin!(deadline);
    let mut stream = tokio::select! {
        biased;
        s = conn.open_uni() => s?,
        _ = &mut deadline => {
            metrics.groups_skipped.inc();
            return Ok(());
        }
    };
    // Newer groups first: the sequence grows, so does the priority.
    stream.set_priority((group.sequence() % i32::MAX as u64) as i32);
    let outcome = tokio::select! {
        biased;
        r = write_group(&mut stream, &mut group, &metrics) => r.map_err(Stop::Write),
        _ = &mut deadline => Err(Stop::Skipped),
    };
    match outcome {
        Ok(()) => {
            stream.finish();
            metrics.groups_sent.inc();
            Ok(())
        }
        Err(Stop::Skipped) => {
            stream.reset(Reset::GroupSkipped.into());
            metrics.groups_skipped.inc();
            tracing::debug!(group = group.sequence(), "subscriber behind: group skipped");
            Ok(())
        }
        Err(Stop::Write(WriteError::ConnectionLost(e))) => Err(e),
        Err(Stop::Write(WriteError::Stopped(code)))
            if Reset::from_code(code.into_inner()) == Some(Reset::GroupTooLarge) =>
        {
            // The sender of a group past the limit is the one to hear of it: the publisher
            // (or an ingest of another version) learns that its group was cut, and why.
            tracing::warn!(
                group = group.sequence(),
                code = Reset::GroupTooLarge.name(),
                limit_bytes = wire::limits::MAX_GROUP,
                "the receiver cut this group at its byte limit; media resumes at the next keyframe"
            );
            metrics.groups_cut_by_subscriber.inc();
            Ok(())
        }
        Err(Stop::Write(e)) => {
            // The subscriber stopped this group (it moved on): nothing more to send on it.
            tracing::debug!(group = group.sequence(), error = %e, "group stream refused");
            metrics.groups_skipped.inc();
            Ok(())
        }
    }
}

async fn write_group<S: SendStream>(
    stream: &mut S,
    group: &mut GroupReader,
    metrics: &Metrics,
) -> Result<(), WriteError> {
    stream
        .write_chunk(
            GroupHeader {
                sequence: group.sequence(),
            }
            .to_bytes(),
        )
        .await?;
    while let Some(frame) = group.next_frame().await {
        let bytes = frame.encoded().clone();
        let len = bytes.len() as u64;
        stream.write_chunk(bytes).await?;
        metrics.frames_sent.inc();
        metrics.bytes_sent.inc_by(len);
    }
    Ok(())
}

/// Serves one subscriber whose session is open and whose request was accepted: sends
/// `Init`, the track until it ends, then `End`, and closes the connection with
/// [`Code::Ended`] once the subscriber has had [`END_LINGER`] to drain and close first.
pub async fn serve<P: Peer>(
    conn: &P,
    session: &mut Session<P>,
    track: &Track,
    metrics: &Metrics,
) -> Result<(), ServeError> {
    let reader = track.subscribe();
    let info = track.info();
    session
        .send(&Message::Init {
            stream_id: info.id.clone(),
            name: info.name.clone(),
            init: info.init.clone(),
        })
        .await?;
    let track = send_track(conn, reader, metrics);
    tokio::pin!(track);
    // The subscriber may ask for our clock meanwhile (`Ping`), to read its delay right on a
    // clock of its own that is off; anything else from it ends our listening, not the stream.
    let mut listening = true;
    let last_group = loop {
        tokio::select! {
            sent = &mut track => break sent?,
            msg = session.recv(), if listening => match msg {
                Ok(Some(Message::Ping { sent_us })) => {
                    let relay_us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
                    session.send(&Message::Pong { sent_us, relay_us }).await?;
                }
                Ok(Some(other)) => {
                    tracing::debug!(message = other.name(), "unexpected message from a subscriber");
                    listening = false;
                }
                Ok(None) | Err(_) => listening = false,
            },
        }
    };
    session.send(&Message::End { last_group }).await?;
    session.finish();
    let _ = tokio::time::timeout(END_LINGER, conn.closed()).await;
    quic::close(conn, Code::Ended, "stream ended");
    Ok(())
}

/// Why serving a subscriber stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The subscriber's connection is gone.
    #[error("subscriber connection lost: {0}")]
    Lost(#[from] ConnectionError),
    /// The session stream failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Why receiving a track stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The sender's connection is gone (crash, network, idle timeout, or its close code).
    #[error("connection lost: {0}")]
    Lost(#[from] ConnectionError),
    /// The session stream broke the protocol.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A group stream broke the protocol.
    #[error("bad group stream: {0}")]
    Group(#[from] WireError),
}

impl ReceiveError {
    /// The close code to send the peer, `None` when the connection is already gone.
    pub fn code(&self) -> Option<Code> {
        match self {
            ReceiveError::Lost(_) => None,
            ReceiveError::Session(e) => Some(e.code()),
            ReceiveError::Group(e) => Some(e.code()),
        }
    }
}

/// Receives groups from `conn` into `track` until the sender says `End` (or finishes its
/// session stream) and the groups up to its last one have arrived, bounded by
/// [`END_DRAIN`]. Does not end the track: the caller does, whatever the outcome.
pub async fn receive_track<P: Peer>(
    conn: &P,
    session: &mut Session<P>,
    track: &Track,
    metrics: &Metrics,
) -> Result<(), ReceiveError> {
    let mut readers = JoinSet::new();
    let last_group = loop {
        tokio::select! {
            stream = conn.accept_uni() => {
                readers.spawn(receive_group(stream?, track.clone(), metrics.clone()));
            }
            Some(done) = readers.join_next() => {
                if let Ok(Err(e)) = done {
                    return Err(e);
                }
            }
            msg = session.recv() => match msg? {
                Some(Message::End { last_group }) => break last_group,
                None => break None,
                Some(_) => return Err(SessionError::Unexpected("session").into()),
            },
        }
    };
    let arrived = |track: &Track| {
        last_group.is_none_or(|last| track.latest_sequence().is_some_and(|s| s >= last))
    };
    let drain = async {
        loop {
            if arrived(track) && readers.is_empty() {
                return Ok(());
            }
            tokio::select! {
                stream = conn.accept_uni() => {
                    readers.spawn(receive_group(stream?, track.clone(), metrics.clone()));
                }
                Some(done) = readers.join_next() => {
                    if let Ok(Err(e)) = done {
                        return Err(e);
                    }
                }
            }
        }
    };
    match tokio::time::timeout(END_DRAIN, drain).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!("groups still in flight at the end; dropped");
            Ok(())
        }
    }
}

async fn receive_group<R: RecvStream>(
    mut recv: R,
    track: Track,
    metrics: Metrics,
) -> Result<(), ReceiveError> {
    let mut decoder = GroupDecoder::new();
    let mut buf = BytesMut::new();
    let mut writer: Option<GroupWriter> = None;
    // Bytes read but not yet a whole frame count against the stream's limit too, so a
    // sender cannot park memory in half-sent frames on many group streams.
    let mut partial = track.hold();
    loop {
        while let Some(event) = decoder.decode(&mut buf)? {
            match event {
                GroupEvent::Header(h) => match track.start_group(h.sequence) {
                    Some(w) => {
                        metrics.groups_received.inc();
                        writer = Some(w);
                    }
                    None => {
                        // Older than what we have: not worth receiving.
                        recv.stop(Reset::GroupSkipped.into());
                        return Ok(());
                    }
                },
                GroupEvent::Frame(f) => {
                    metrics.frames_received.inc();
                    metrics.bytes_received.inc_by(f.encoded().len() as u64);
                    if let Some(w) = &mut writer
                        && let Err(over) = w.push(f)
                    {
                        cut(&mut recv, w.sequence(), over, &metrics);
                        return Ok(());
                    }
                }
            }
        }
        // What is left after decoding is at most one frame in the making: shrinking the
        // claim to it always succeeds.
        let _ = partial.resize(buf.len());
        match recv.read_chunk(64 * 1024).await {
            Ok(Some(chunk)) => {
                if let Err(over) = partial.resize(buf.len() + chunk.len()) {
                    // Returning drops the writer, which completes the group as it is.
                    let sequence = writer.as_ref().map_or(0, GroupWriter::sequence);
                    cut(&mut recv, sequence, over, &metrics);
                    return Ok(());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(decoder.finish(&buf)?),
            Err(quinn::ReadError::ConnectionLost(e)) => return Err(e.into()),
            // Reset by the sender (it skipped this group) or otherwise abandoned.
            Err(_) => return Ok(()),
        }
    }
}

/// Stops a group's stream that went past a byte limit: the sender is told why by the code,
/// the frames taken so far stay for the readers, and the connection goes on with the next
/// group.
fn cut<R: RecvStream>(recv: &mut R, sequence: u64, over: Over, metrics: &Metrics) {
    recv.stop(Reset::GroupTooLarge.into());
    metrics.groups_cut.inc();
    tracing::warn!(group = sequence, error = %over, "group cut at its byte limit");
}
