//! `ghost publish`: goes live from fragmented MP4 (ffmpeg) or from a synthetic source.
//!
//! Frames go into a local [`Track`] and leave through the same fan-out code the servers use,
//! so a publisher on a congested uplink skips whole groups instead of building up delay.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fmp4::Item;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use transport::fanout;
use transport::quic::{self, Closed, Session, Windows};
use transport::track::{GroupWriter, Track, TrackInfo};
use wire::{Code, Frame, Message};

use crate::exit::{self, Exit, Outcome};

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An outcome with an exit code of its own: refused, lost, bad usage.
    #[error(transparent)]
    Exit(#[from] Exit),
    /// The QUIC endpoint could not be set up.
    #[error(transparent)]
    Endpoint(#[from] quic::EndpointError),
    /// Ingest's address does not resolve.
    #[error(transparent)]
    Resolve(#[from] quic::ResolveError),
    /// The connection could not even start (a bad address or server name).
    #[error("connecting to ingest at {ingest}")]
    Connect {
        /// Ingest's address.
        ingest: String,
        /// quinn's error.
        #[source]
        source: quinn::ConnectError,
    },
    /// The session stream failed.
    #[error(transparent)]
    Session(#[from] quic::SessionError),
    /// Ingest answered the announce with another message than `Announced` or `Error`.
    #[error("ingest answered the announce with something else")]
    UnexpectedAnswer,
    /// The input is not fragmented MP4 as we take it.
    #[error("reading the input as fragmented MP4")]
    Fmp4(#[source] fmp4::Error),
    /// The input had a fragment before its init segment.
    #[error("input has a fragment before its init segment")]
    FragmentBeforeInit,
    /// The input had a second init segment.
    #[error("input has a second init segment")]
    SecondInit,
    /// Stopped before the input gave its init segment.
    #[error("stopped before the input started")]
    StoppedBeforeInput,
    /// The input could not be read.
    #[error("reading the input")]
    Read(#[source] std::io::Error),
    /// The input ended before its init segment (inside a box, when the reader says so).
    #[error("input ended before its init segment")]
    EndedBeforeInit(#[source] Option<fmp4::Error>),
    /// The input ended inside a box.
    #[error("input ended inside a box")]
    EndedInsideBox(#[source] fmp4::Error),
    /// A frame could not be made (beyond the wire's limit).
    #[error(transparent)]
    Frame(#[from] wire::WireError),
    /// The task sending to ingest panicked or was cancelled.
    #[error("publisher task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl Outcome for Error {
    fn exit(&self) -> Option<&Exit> {
        match self {
            Error::Exit(e) => Some(e),
            _ => None,
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Where frames come from.
pub enum Source {
    /// Fragmented MP4 / CMAF, one moof+mdat per frame (ffmpeg's `frag_every_frame`).
    Fmp4(Box<dyn AsyncRead + Unpin + Send>),
    /// Made-up frames of a fixed size and rate, for load tests.
    Synthetic {
        /// Frames per second.
        fps: u32,
        /// Bytes per frame.
        frame_size: usize,
        /// Frames per group.
        group: u32,
        /// Stop after this long (runs until stopped otherwise).
        duration: Option<Duration>,
    },
}

/// What `ghost publish` needs.
pub struct Options {
    /// Ingest QUIC address.
    pub ingest: String,
    /// CA certificate to verify ingest with.
    pub ca: PathBuf,
    /// Stream name.
    pub name: String,
    /// The stream key the operator gave for `name`, where ingest requires one.
    pub key: Option<String>,
    /// Media source.
    pub source: Source,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The id control gave the stream.
    pub stream_id: String,
    /// Frames published.
    pub frames: u64,
    /// Groups published.
    pub groups: u64,
    /// Wall clock (Unix microseconds) when the source ended and the publisher began to stop.
    pub stopped_at_us: u64,
}

/// A live publication: announced, now sending.
pub struct Live {
    /// The id control gave the stream.
    pub stream_id: String,
    conn: quinn::Connection,
    session: Session,
    endpoint: quinn::Endpoint,
}

/// Connects to ingest and announces `name`, presenting `key` if any, with `init`. Returns
/// once the stream is live.
pub async fn announce(
    ingest: &str,
    ca: &std::path::Path,
    name: &str,
    key: Option<&str>,
    init: Bytes,
) -> Result<Live> {
    let endpoint = quic::client(ca, quic::ALPN_PUBLISH, Windows::PUBLISHER)?;
    let addr = quic::resolve(ingest).await?;
    let conn = tokio::time::timeout(
        quic::SESSION_TIMEOUT,
        endpoint
            .connect(addr, identity::INGEST_NAME)
            .map_err(|source| Error::Connect {
                ingest: ingest.to_string(),
                source,
            })?,
    )
    .await
    .map_err(|_| Exit::new(exit::LOST, format!("ingest at {ingest} did not answer")))?
    .map_err(|e| {
        Exit::new(
            exit::LOST,
            format!("cannot connect to ingest at {ingest}: {e}"),
        )
    })?;
    let mut session = Session::open(&conn).await?;
    session
        .send(&Message::Announce {
            name: name.to_string(),
            key: key.unwrap_or_default().to_string(),
            init,
        })
        .await?;
    let reply = tokio::time::timeout(quic::SESSION_TIMEOUT, session.recv()).await;
    match reply {
        Ok(Ok(Some(Message::Announced { stream_id }))) => Ok(Live {
            stream_id,
            conn,
            session,
            endpoint,
        }),
        Ok(Ok(Some(Message::Error { code: c, reason }))) => Err(Exit::new(
            if c == Code::Capacity {
                exit::REJECTED
            } else {
                exit::FAILURE
            },
            format!("ingest refused the stream ({}): {reason}", c.name()),
        )
        .into()),
        Ok(Ok(_)) => Err(Error::UnexpectedAnswer),
        Ok(Err(e)) => {
            let closed = conn.close_reason().map(|c| Closed::from(&c));
            let exit_code = match &closed {
                Some(Closed::ByPeer {
                    code: Code::Capacity,
                    ..
                }) => exit::REJECTED,
                Some(Closed::ByPeer { .. }) => exit::FAILURE,
                _ => exit::LOST,
            };
            let why = closed.map_or_else(|| e.to_string(), |c| describe(&c));
            Err(Exit::new(exit_code, format!("ingest closed the connection: {why}")).into())
        }
        Err(_) => Err(Exit::new(exit::LOST, "ingest did not confirm the stream in time").into()),
    }
}

fn describe(c: &Closed) -> String {
    match c {
        Closed::ByPeer { code: c, reason } => format!("{} ({reason})", c.name()),
        Closed::Locally => "closed locally".into(),
        Closed::Lost(e) => e.clone(),
    }
}

impl Live {
    /// Sends what `track` gets until it ends (or `stop`), then says `End` and waits, bounded,
    /// for ingest to confirm by closing.
    pub async fn run(mut self, track: Track) -> Result<()> {
        let metrics = fanout::Metrics::default();
        let last_group = fanout::send_track(&self.conn, track.subscribe(), &metrics)
            .await
            .map_err(|e| Exit::new(exit::LOST, format!("lost the connection to ingest: {e}")))?;
        self.session.send(&Message::End { last_group }).await?;
        self.session.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.closed()).await;
        transport::quic::close(&self.conn, Code::Normal, "done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        Ok(())
    }
}

/// Goes live and publishes until the source ends or `stop` fires. `on_live` is called with
/// the stream id once the stream is listed.
pub async fn publish(
    options: Options,
    stop: CancellationToken,
    on_live: impl FnOnce(&str),
) -> Result<Report> {
    match options.source {
        Source::Fmp4(mut input) => {
            let mut reader = fmp4::Reader::new();
            let mut buf = vec![0u8; 64 * 1024];
            let init = loop {
                match reader.next_item().map_err(Error::Fmp4)? {
                    Some(Item::Init(init)) => break init,
                    // The reader refuses fragments before the init segment; defence in depth.
                    Some(Item::Fragment { .. }) => return Err(Error::FragmentBeforeInit),
                    None => {}
                }
                let n = tokio::select! {
                    n = input.read(&mut buf) => n.map_err(Error::Read)?,
                    () = stop.cancelled() => return Err(Error::StoppedBeforeInput),
                };
                if n == 0 {
                    reader
                        .finish()
                        .map_err(|e| Error::EndedBeforeInit(Some(e)))?;
                    return Err(Error::EndedBeforeInit(None));
                }
                reader.push(&buf[..n]);
            };
            let live = announce(
                &options.ingest,
                &options.ca,
                &options.name,
                options.key.as_deref(),
                init.clone(),
            )
            .await?;
            on_live(&live.stream_id);
            let track = Track::new(TrackInfo {
                id: live.stream_id.clone(),
                name: options.name.clone(),
                init,
            });
            let stream_id = live.stream_id.clone();
            let sender = tokio::spawn(live.run(track.clone()));
            let fed = feed_fmp4(&track, reader, input, buf, &stop).await;
            let stopped_at_us = server::clock::now_us();
            track.end();
            let sent = sender.await.map_err(Error::Task)?;
            let (frames, groups) = fed?;
            sent?;
            Ok(Report {
                stream_id,
                frames,
                groups,
                stopped_at_us,
            })
        }
        Source::Synthetic {
            fps,
            frame_size,
            group,
            duration,
        } => {
            let live = announce(
                &options.ingest,
                &options.ca,
                &options.name,
                options.key.as_deref(),
                Bytes::new(),
            )
            .await?;
            on_live(&live.stream_id);
            let track = Track::new(TrackInfo {
                id: live.stream_id.clone(),
                name: options.name.clone(),
                init: Bytes::new(),
            });
            let stream_id = live.stream_id.clone();
            let sender = tokio::spawn(live.run(track.clone()));
            let (frames, groups) =
                feed_synthetic(&track, fps, frame_size, group, duration, &stop).await?;
            let stopped_at_us = server::clock::now_us();
            track.end();
            sender.await.map_err(Error::Task)??;
            Ok(Report {
                stream_id,
                frames,
                groups,
                stopped_at_us,
            })
        }
    }
}

async fn feed_fmp4(
    track: &Track,
    mut reader: fmp4::Reader,
    mut input: Box<dyn AsyncRead + Unpin + Send>,
    mut buf: Vec<u8>,
    stop: &CancellationToken,
) -> Result<(u64, u64)> {
    let mut group: Option<GroupWriter> = None;
    let mut sequence = 0u64;
    let (mut frames, mut groups) = (0u64, 0u64);
    loop {
        while let Some(item) = reader.next_item().map_err(Error::Fmp4)? {
            let Item::Fragment { data, keyframe } = item else {
                return Err(Error::SecondInit);
            };
            if keyframe {
                drop(group.take());
                group = track.start_group(sequence);
                sequence += 1;
                groups += 1;
            }
            // Fragments before the first keyframe cannot be decoded by anyone: dropped.
            if let Some(g) = &mut group {
                if let Err(over) = g.push(Frame::new(server::clock::now_us(), &data)?) {
                    warn_cut(g.sequence(), over);
                    group = None;
                } else {
                    frames += 1;
                }
            }
        }
        let n = tokio::select! {
            n = input.read(&mut buf) => n.map_err(Error::Read)?,
            () = stop.cancelled() => return Ok((frames, groups)),
        };
        if n == 0 {
            reader.finish().map_err(Error::EndedInsideBox)?;
            return Ok((frames, groups));
        }
        reader.push(&buf[..n]);
    }
}

async fn feed_synthetic(
    track: &Track,
    fps: u32,
    frame_size: usize,
    group_len: u32,
    duration: Option<Duration>,
    stop: &CancellationToken,
) -> Result<(u64, u64)> {
    if fps == 0 || group_len == 0 {
        return Err(Exit::new(exit::USAGE, "--fps and --group must be at least 1").into());
    }
    let payload = vec![0x5a_u8; frame_size];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut group: Option<GroupWriter> = None;
    let (mut frames, mut groups) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        if frames % u64::from(group_len) == 0 {
            drop(group.take());
            group = track.start_group(groups);
            groups += 1;
        }
        if let Some(g) = &mut group
            && let Err(over) = g.push(Frame::new(server::clock::now_us(), &payload)?)
        {
            warn_cut(g.sequence(), over);
            group = None;
        }
        frames += 1;
    }
    Ok((frames, groups))
}

/// A group of the input went past the byte limit every hop applies: ingest would cut it
/// anyway, so the publisher cuts it first (and keeps its own memory bounded) and says so.
fn warn_cut(group: u64, over: transport::track::Over) {
    tracing::warn!(group, error = %over, "input group too large: cut");
}
