//! An RTMP publisher for tests that need more control than ffmpeg gives (huge frames, a
//! connection that goes silent, a replayed FLV file), on the rml_rtmp client session.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a publish attempt ended when it did not start.
#[derive(Debug)]
pub enum Refused {
    /// The server answered an `onStatus` error with this code.
    Status(String),
    /// The connection closed or failed first.
    Closed(String),
}

pub struct Publisher {
    pub tcp: TcpStream,
    session: ClientSession,
}

impl Publisher {
    /// Connects to `addr`, application `app`, and publishes `key`.
    pub async fn publish(addr: SocketAddr, app: &str, key: &str) -> Result<Publisher, Refused> {
        let closed = |e: &dyn std::fmt::Display| Refused::Closed(e.to_string());
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| closed(&e))?;
        let mut handshake = Handshake::new(PeerType::Client);
        let p0p1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| closed(&format!("{e:?}")))?;
        tcp.write_all(&p0p1).await.map_err(|e| closed(&e))?;
        let mut buf = vec![0u8; 64 * 1024];
        let leftover = loop {
            let n = tcp.read(&mut buf).await.map_err(|e| closed(&e))?;
            if n == 0 {
                return Err(Refused::Closed("closed during the handshake".into()));
            }
            match handshake
                .process_bytes(&buf[..n])
                .map_err(|e| closed(&format!("{e:?}")))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    tcp.write_all(&response_bytes)
                        .await
                        .map_err(|e| closed(&e))?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    tcp.write_all(&response_bytes)
                        .await
                        .map_err(|e| closed(&e))?;
                    break remaining_bytes;
                }
            }
        };
        let (session, _) = ClientSession::new(ClientSessionConfig::new())
            .map_err(|e| closed(&format!("{e:?}")))?;
        let mut publisher = Publisher { tcp, session };
        let mut events = publisher.feed(&leftover).await?;
        let request = publisher
            .session
            .request_connection(app.to_string())
            .map_err(|e| closed(&format!("{e:?}")))?;
        publisher.send(vec![request]).await?;
        let mut published = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            for event in std::mem::take(&mut events) {
                match event {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let request = publisher
                            .session
                            .request_publishing(key.to_string(), PublishRequestType::Live)
                            .map_err(|e| closed(&format!("{e:?}")))?;
                        publisher.send(vec![request]).await?;
                    }
                    ClientSessionEvent::PublishRequestAccepted => published = true,
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(Refused::Status(description));
                    }
                    ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                        return Err(Refused::Status(code));
                    }
                    _ => {}
                }
            }
            if published {
                return Ok(publisher);
            }
            let n = tokio::time::timeout_at(deadline, publisher.tcp.read(&mut buf))
                .await
                .map_err(|_| Refused::Closed("no answer in time".into()))?
                .map_err(|e| closed(&e))?;
            if n == 0 {
                return Err(Refused::Closed("closed by the server".into()));
            }
            let input = buf[..n].to_vec();
            events = publisher.feed(&input).await?;
        }
    }

    /// Hands `bytes` from the server to the session: writes its responses, returns its events.
    async fn feed(&mut self, bytes: &[u8]) -> Result<Vec<ClientSessionEvent>, Refused> {
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let results = self
            .session
            .handle_input(bytes)
            .map_err(|e| Refused::Closed(format!("{e:?}")))?;
        let mut events = Vec::new();
        let mut out = Vec::new();
        for result in results {
            match result {
                ClientSessionResult::RaisedEvent(event) => events.push(event),
                other => out.push(other),
            }
        }
        self.send(out).await?;
        Ok(events)
    }

    async fn send(&mut self, results: Vec<ClientSessionResult>) -> Result<(), Refused> {
        for result in results {
            if let ClientSessionResult::OutboundResponse(packet) = result {
                self.tcp
                    .write_all(&packet.bytes)
                    .await
                    .map_err(|e| Refused::Closed(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Sends one FLV video tag body at `ms`.
    pub async fn video(&mut self, ms: u32, data: Bytes) -> std::io::Result<()> {
        let result = self
            .session
            .publish_video_data(data, RtmpTimestamp::new(ms), false)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.send(vec![result])
            .await
            .map_err(|e| std::io::Error::other(format!("{e:?}")))
    }

    /// Sends one FLV audio tag body at `ms`.
    pub async fn audio(&mut self, ms: u32, data: Bytes) -> std::io::Result<()> {
        let result = self
            .session
            .publish_audio_data(data, RtmpTimestamp::new(ms), false)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.send(vec![result])
            .await
            .map_err(|e| std::io::Error::other(format!("{e:?}")))
    }

    /// Stops publishing (`deleteStream`), as OBS's "Stop Streaming" does.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        let result = self
            .session
            .stop_publishing()
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.send(result)
            .await
            .map_err(|e| std::io::Error::other(format!("{e:?}")))
    }

    /// Waits until the server closes the connection (or `limit` passes): whether it did.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// One tag of an FLV file.
#[derive(Debug, Clone)]
pub struct Tag {
    /// 8 audio, 9 video, 18 script data.
    pub kind: u8,
    pub ms: u32,
    pub body: Bytes,
}

/// The tags of an FLV file (9-byte header, then tag, previous-tag-size pairs).
pub fn flv_tags(file: &[u8]) -> Vec<Tag> {
    let mut tags = Vec::new();
    let mut at = 9 + 4;
    while at + 11 <= file.len() {
        let h = &file[at..at + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let start = at + 11;
        if start + size > file.len() {
            break;
        }
        tags.push(Tag {
            kind: h[0] & 0x1f,
            ms,
            body: Bytes::copy_from_slice(&file[start..start + size]),
        });
        at = start + size + 4;
    }
    tags
}

/// Encodes `seconds` of ffmpeg's test pattern at `size` with a tone, as OBS would (x264 with
/// B-frames, 2 s keyframe interval, AAC), to an FLV file's tags.
pub fn encode_flv(dir: &std::path::Path, size: &str, seconds: u32) -> Vec<Tag> {
    let out = dir.join(format!("source-{size}.flv"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-bf", "2",
        ])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg encode failed");
    flv_tags(&std::fs::read(&out).expect("read flv"))
}

/// Sends `tags` in real time (by their timestamps plus `offset_ms`), from `start`.
pub async fn replay(
    publisher: &mut Publisher,
    tags: &[Tag],
    offset_ms: u32,
    start: tokio::time::Instant,
) -> std::io::Result<()> {
    for tag in tags {
        let ms = tag.ms + offset_ms;
        tokio::time::sleep_until(start + Duration::from_millis(u64::from(ms))).await;
        match tag.kind {
            8 => publisher.audio(ms, tag.body.clone()).await?,
            9 => publisher.video(ms, tag.body.clone()).await?,
            _ => {}
        }
    }
    Ok(())
}
