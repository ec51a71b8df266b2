//! The two halves of a stream over WebSocket: writes queued for the connection's writer
//! within its send budget, reads from what the reader put aside.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use quinn::{ReadError, VarInt, WriteError};

use super::{DATA, FIN, MAX_DATA, RESET, STOP, Shared, State, coded, frame};
use crate::peer::{RecvStream, SendStream};

/// The sending half of a stream over WebSocket.
pub struct WsSend {
    shared: Arc<Shared>,
    id: u32,
    over: bool,
}

impl std::fmt::Debug for WsSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSend").field("id", &self.id).finish()
    }
}

impl WsSend {
    pub(super) fn new(shared: Arc<Shared>, id: u32) -> WsSend {
        WsSend {
            shared,
            id,
            over: false,
        }
    }

    async fn write(&mut self, mut chunk: Bytes) -> Result<(), WriteError> {
        while !chunk.is_empty() {
            let notified = self.shared.sent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if let Some(e) = self.shared.reason.get() {
                    return Err(WriteError::ConnectionLost(e.clone()));
                }
                let waiting = state.waiting;
                let Some(outgoing) = state.sends.get_mut(&self.id) else {
                    return Err(WriteError::ClosedStream);
                };
                if let Some(code) = outgoing.stopped {
                    return Err(WriteError::Stopped(VarInt::from_u32(code)));
                }
                if outgoing.done {
                    return Err(WriteError::ClosedStream);
                }
                if waiting < self.shared.limits.send_buffer {
                    let mut queued = 0;
                    while !chunk.is_empty() {
                        let piece = chunk.split_to(chunk.len().min(MAX_DATA));
                        let f = frame(DATA, self.id, &piece);
                        queued += f.len();
                        outgoing.frames.push_back(f);
                    }
                    state.waiting += queued;
                    drop(state);
                    self.shared.queued.notify_one();
                    return Ok(());
                }
            }
            notified.await;
        }
        Ok(())
    }

    /// Ends the stream with FIN after what waits, or with RESET dropping it.
    fn end(&mut self, reset: Option<u32>) {
        if std::mem::replace(&mut self.over, true) {
            return;
        }
        let mut state = self.shared.lock();
        let Some(outgoing) = state.sends.get_mut(&self.id) else {
            return;
        };
        if outgoing.stopped.is_some() {
            // Stopped by the peer, and reset then: only our record of it is left.
            state.sends.remove(&self.id);
            self.shared.release(&mut state, self.id);
            return;
        }
        if outgoing.done {
            return;
        }
        outgoing.done = true;
        match reset {
            None => outgoing.frames.push_back(frame(FIN, self.id, &[])),
            Some(code) => {
                let dropped: usize = outgoing.frames.drain(..).map(|f| f.len()).sum();
                state.waiting -= dropped;
                state.sends.remove(&self.id);
                state.control.push_back(coded(RESET, self.id, code));
                self.shared.release(&mut state, self.id);
            }
        }
        drop(state);
        self.shared.queued.notify_one();
        self.shared.sent.notify_waiters();
    }
}

impl SendStream for WsSend {
    fn write_chunk(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send {
        self.write(chunk)
    }

    fn set_priority(&self, priority: i32) {
        if let Some(outgoing) = self.shared.lock().sends.get_mut(&self.id) {
            outgoing.priority = priority;
        }
    }

    fn finish(&mut self) {
        self.end(None);
    }

    fn reset(&mut self, code: u32) {
        self.end(Some(code));
    }
}

impl Drop for WsSend {
    fn drop(&mut self) {
        // As a dropped quinn stream: finished with what it wrote.
        self.end(None);
    }
}

/// The receiving half of a stream over WebSocket.
pub struct WsRecv {
    shared: Arc<Shared>,
    id: u32,
    over: bool,
}

impl std::fmt::Debug for WsRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsRecv").field("id", &self.id).finish()
    }
}

impl WsRecv {
    pub(super) fn new(shared: Arc<Shared>, id: u32) -> WsRecv {
        WsRecv {
            shared,
            id,
            over: false,
        }
    }

    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        loop {
            let notified = self.shared.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.shared.lock();
                let Some(incoming) = state.recvs.get_mut(&self.id) else {
                    return Err(ReadError::ClosedStream);
                };
                if let Some(mut chunk) = incoming.chunks.pop_front() {
                    if chunk.len() > max.max(1) {
                        let rest = chunk.split_off(max.max(1));
                        incoming.chunks.push_front(rest);
                    }
                    state.unread -= chunk.len();
                    drop(state);
                    self.shared.read.notify_waiters();
                    return Ok(Some(chunk));
                }
                if let Some(code) = incoming.reset {
                    self.over = true;
                    forget(&self.shared, &mut state, self.id);
                    return Err(ReadError::Reset(VarInt::from_u32(code)));
                }
                if incoming.fin {
                    self.over = true;
                    forget(&self.shared, &mut state, self.id);
                    return Ok(None);
                }
                if let Some(e) = self.shared.reason.get() {
                    return Err(ReadError::ConnectionLost(e.clone()));
                }
            }
            notified.await;
        }
    }
}

/// Drops what is left of receive stream `id`: its half is over here.
fn forget(shared: &Shared, state: &mut State, id: u32) {
    if let Some(incoming) = state.recvs.remove(&id) {
        state.unread -= incoming.chunks.iter().map(Bytes::len).sum::<usize>();
        shared.release(state, id);
    }
}

impl RecvStream for WsRecv {
    fn read_chunk(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Bytes>, ReadError>> + Send {
        self.read(max)
    }

    fn stop(&mut self, code: u32) {
        if std::mem::replace(&mut self.over, true) {
            return;
        }
        let mut state = self.shared.lock();
        let ended = state
            .recvs
            .get(&self.id)
            .is_none_or(|i| i.fin || i.reset.is_some());
        forget(&self.shared, &mut state, self.id);
        if !ended {
            state.control.push_back(coded(STOP, self.id, code));
        }
        drop(state);
        self.shared.read.notify_waiters();
        self.shared.queued.notify_one();
    }
}

impl Drop for WsRecv {
    fn drop(&mut self) {
        // As a dropped quinn stream: the peer is told to stop sending.
        self.stop(0);
    }
}
