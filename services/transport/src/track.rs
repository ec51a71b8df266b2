//! The live buffer of one stream: its init segment and its newest group, nothing older.
//!
//! A [`Track`] is shared by one producer (the task reading a publisher, or a relay's
//! subscription at ingest) and any number of readers (subscribers). The producer opens groups
//! with [`Track::start_group`] and appends frames; readers follow with
//! [`TrackReader::next_group`] and [`GroupReader::next_frame`], each at its own pace.
//!
//! Invariants:
//! - the track holds only its newest group; an older group lives on only while a reader
//!   is still sending it, so memory per stream is bounded by about two groups whatever the
//!   number of readers;
//! - frames are shared (`Bytes`), never copied per reader;
//! - a reader joining mid-group starts at the group's first frame, its keyframe;
//! - group sequences only grow: a group older than the newest is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::watch;
use wire::Frame;

/// What a track is.
#[derive(Debug, Clone)]
pub struct TrackInfo {
    /// Stream id (from control).
    pub id: String,
    /// Stream name (from the streamer).
    pub name: String,
    /// Init segment (ftyp+moov), empty for synthetic media.
    pub init: Bytes,
}

#[derive(Debug, Clone, Default)]
struct TrackState {
    latest: Option<Arc<Group>>,
    ended: bool,
}

#[derive(Debug)]
struct Shared {
    info: TrackInfo,
    state: watch::Sender<TrackState>,
    readers: AtomicUsize,
}

/// A live stream's buffer. Cheap to clone; all clones are the same track.
#[derive(Debug, Clone)]
pub struct Track {
    shared: Arc<Shared>,
}

impl Track {
    /// A new, live track with no group yet.
    pub fn new(info: TrackInfo) -> Track {
        Track {
            shared: Arc::new(Shared {
                info,
                state: watch::Sender::new(TrackState::default()),
                readers: AtomicUsize::new(0),
            }),
        }
    }

    /// Id, name and init segment.
    pub fn info(&self) -> &TrackInfo {
        &self.shared.info
    }

    /// Opens group `sequence`, which becomes the newest. `None` when it is not newer than the
    /// newest group so far (a late, stale group) or the track has ended.
    pub fn start_group(&self, sequence: u64) -> Option<GroupWriter> {
        let group = Arc::new(Group {
            sequence,
            frames: watch::Sender::new(GroupFrames::default()),
        });
        let mut accepted = false;
        self.shared.state.send_if_modified(|st| {
            let newer = st.latest.as_ref().is_none_or(|g| sequence > g.sequence);
            if newer && !st.ended {
                st.latest = Some(group.clone());
                accepted = true;
            }
            accepted
        });
        accepted.then_some(GroupWriter { group })
    }

    /// Sequence of the newest group, if any.
    pub fn latest_sequence(&self) -> Option<u64> {
        self.shared
            .state
            .borrow()
            .latest
            .as_ref()
            .map(|g| g.sequence)
    }

    /// Ends the track: readers finish the group they are on and see no more.
    pub fn end(&self) {
        self.shared.state.send_if_modified(|st| {
            let was = st.ended;
            st.ended = true;
            !was
        });
    }

    /// Resolves once the track has ended.
    pub async fn ended(&self) {
        let mut rx = self.shared.state.subscribe();
        // The sender lives as long as `self`, so wait_for cannot fail here.
        let _ = rx.wait_for(|st| st.ended).await;
    }

    /// A reader that starts with the newest group (from its first frame).
    pub fn subscribe(&self) -> TrackReader {
        self.shared.readers.fetch_add(1, Ordering::Relaxed);
        let mut rx = self.shared.state.subscribe();
        rx.mark_changed();
        TrackReader {
            track: self.clone(),
            rx,
            last: None,
        }
    }

    /// Readers alive now.
    pub fn readers(&self) -> usize {
        self.shared.readers.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct GroupFrames {
    frames: Vec<Frame>,
    done: bool,
}

/// One group: frames from a keyframe to the next keyframe.
#[derive(Debug)]
pub struct Group {
    sequence: u64,
    frames: watch::Sender<GroupFrames>,
}

/// The producer's handle on the group it is filling. Dropping it completes the group.
#[derive(Debug)]
pub struct GroupWriter {
    group: Arc<Group>,
}

impl GroupWriter {
    /// The group's sequence number.
    pub fn sequence(&self) -> u64 {
        self.group.sequence
    }

    /// Appends a frame; readers waiting on this group wake up.
    pub fn push(&self, frame: Frame) {
        self.group.frames.send_modify(|g| g.frames.push(frame));
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        self.group.frames.send_modify(|g| g.done = true);
    }
}

/// Follows a track's groups, always jumping to the newest.
#[derive(Debug)]
pub struct TrackReader {
    track: Track,
    rx: watch::Receiver<TrackState>,
    last: Option<u64>,
}

impl TrackReader {
    /// The newest group not yet returned, waiting for one if needed; `None` once the track
    /// has ended and no newer group is left. Groups between the last returned one and the
    /// newest are skipped: a reader never gets older media than the newest group.
    ///
    /// Cancel safe.
    pub async fn next_group(&mut self) -> Option<GroupReader> {
        loop {
            {
                let st = self.rx.borrow_and_update();
                if let Some(g) = &st.latest
                    && self.last.is_none_or(|l| g.sequence > l)
                {
                    self.last = Some(g.sequence);
                    return Some(GroupReader {
                        rx: g.frames.subscribe(),
                        group: g.clone(),
                        index: 0,
                    });
                }
                if st.ended {
                    return None;
                }
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The track this reader follows.
    pub fn track(&self) -> &Track {
        &self.track
    }
}

impl Drop for TrackReader {
    fn drop(&mut self) {
        self.track.shared.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Follows one group's frames in order, from its first.
#[derive(Debug)]
pub struct GroupReader {
    group: Arc<Group>,
    rx: watch::Receiver<GroupFrames>,
    index: usize,
}

impl GroupReader {
    /// The group's sequence number.
    pub fn sequence(&self) -> u64 {
        self.group.sequence
    }

    /// The next frame, waiting for it if needed; `None` once the group is complete.
    ///
    /// Cancel safe.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            {
                let g = self.rx.borrow_and_update();
                if let Some(f) = g.frames.get(self.index) {
                    self.index += 1;
                    return Some(f.clone());
                }
                if g.done {
                    return None;
                }
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Frame {
        Frame::new(n, &n.to_be_bytes()).expect("small frame")
    }

    fn track() -> Track {
        Track::new(TrackInfo {
            id: "s".into(),
            name: "n".into(),
            init: Bytes::new(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn late_reader_starts_at_the_current_groups_first_frame() {
        let t = track();
        let g1 = t.start_group(1).expect("first group");
        g1.push(frame(10));
        g1.push(frame(11));
        let mut r = t.subscribe();
        let mut g = r.next_group().await.expect("group");
        assert_eq!(g.sequence(), 1);
        assert_eq!(g.next_frame().await, Some(frame(10)));
        assert_eq!(g.next_frame().await, Some(frame(11)));
        g1.push(frame(12));
        assert_eq!(g.next_frame().await, Some(frame(12)));
        drop(g1);
        assert_eq!(g.next_frame().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_reader_jumps_to_the_newest_group() {
        let t = track();
        let mut r = t.subscribe();
        for seq in 1..=5 {
            let w = t.start_group(seq).expect("newer group");
            w.push(frame(seq));
        }
        let g = r.next_group().await.expect("group");
        assert_eq!(g.sequence(), 5, "groups 1-4 are skipped, not queued");
        assert!(t.start_group(3).is_none(), "an older group is refused");
        t.end();
        assert!(r.next_group().await.is_none());
        assert!(t.start_group(9).is_none(), "no group after the end");
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_newest_group_is_retained() {
        let t = track();
        let w1 = t.start_group(1).expect("group");
        let weak = Arc::downgrade(&w1.group);
        drop(w1);
        let _w2 = t.start_group(2).expect("group");
        assert!(weak.upgrade().is_none(), "group 1 freed once superseded");
    }

    #[tokio::test(start_paused = true)]
    async fn reader_count_follows_subscriptions() {
        let t = track();
        let a = t.subscribe();
        let b = t.subscribe();
        assert_eq!(t.readers(), 2);
        drop(a);
        drop(b);
        assert_eq!(t.readers(), 0);
    }
}
