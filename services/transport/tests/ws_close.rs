//! A WebSocket connection closed by this side while its peer is still sending: the peer reads
//! the CLOSE frame with its reason (a relay full, say), never a reset that destroyed it.

#![allow(missing_docs)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::ConnectionError;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use transport::peer::{Peer, SendStream};
use transport::ws::{Limits, Session, Side};
use wire::Code;

/// A client's socket that reads nothing until a moment has passed, as a busy client does:
/// what arrives meanwhile waits in the kernel.
struct LateReader {
    tcp: TcpStream,
    from: Pin<Box<tokio::time::Sleep>>,
}

impl AsyncRead for LateReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.from.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for LateReader {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_peer_still_sending_reads_why_it_was_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let session = Session::over(tcp, Side::Server, Limits::SERVER).await;
        // Let the peer fill what this side reads ahead (64 KiB) and the kernel's buffers
        // behind it: unread bytes wait when the close comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        session.close(Code::Capacity, "relay full");
        session.closed().await
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let late = LateReader {
        tcp,
        from: Box::pin(tokio::time::sleep(Duration::from_millis(800))),
    };
    let client = Session::over(late, Side::Client, Limits::CLIENT).await;
    let (mut send, _recv) = client.open_bi().await.expect("a stream");
    let flood = tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 16 << 10]);
        while send.write_chunk(chunk.clone()).await.is_ok() {}
    });
    let why = tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .expect("closed in time");
    flood.abort();
    match &why {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from(u32::from(Code::Capacity)),
                "{why:?}"
            );
            assert_eq!(&close.reason[..], b"relay full", "{why:?}");
        }
        other => panic!("the close was lost: {other:?}"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
