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
//! - group sequences only grow: a group older than the newest is refused;
//! - a group holds at most [`Limits::group`] bytes, and all the media a track holds at once
//!   (its groups still alive, superseded ones included, and frames half received, see
//!   [`Track::hold`]) at most [`Limits::stream`]: a push past either cuts the group (it
//!   completes with the frames it has) and is refused, so one publisher cannot grow a hop's
//!   memory without bound, and readers move on to the next group as usual.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::watch;
use wire::Frame;
use wire::limits::{MAX_GROUP, MAX_STREAM};

/// Byte limits of one track (frame headers and payloads, as they travel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in one group, at most.
    pub group: usize,
    /// Bytes the whole track holds at once, at most: every group still alive plus the
    /// frames its producer has half received.
    pub stream: usize,
}

impl Default for Limits {
    /// The wire's limits, the same at every hop: [`MAX_GROUP`] and [`MAX_STREAM`].
    fn default() -> Limits {
        Limits {
            group: MAX_GROUP,
            stream: MAX_STREAM,
        }
    }
}

/// Why a group was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Over {
    /// The group would pass its byte limit.
    #[error("group over its limit of {limit} bytes: cut until the next keyframe")]
    Group {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The stream would hold more media at once than its limit.
    #[error("stream holds over its limit of {limit} bytes of media: group cut")]
    Stream {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Bytes a track holds, against its limit; shared by its groups, which give their bytes
/// back when the last reader lets go of them.
#[derive(Debug)]
struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// Takes `n` bytes; false (taking nothing) when that would pass the limit.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

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
    limits: Limits,
    budget: Arc<Budget>,
}

/// A live stream's buffer. Cheap to clone; all clones are the same track.
#[derive(Debug, Clone)]
pub struct Track {
    shared: Arc<Shared>,
}

impl Track {
    /// A new, live track with no group yet, under the wire's [`Limits`].
    pub fn new(info: TrackInfo) -> Track {
        Track::with_limits(info, Limits::default())
    }

    /// A new, live track with no group yet, under `limits`.
    pub fn with_limits(info: TrackInfo, limits: Limits) -> Track {
        Track {
            shared: Arc::new(Shared {
                info,
                state: watch::Sender::new(TrackState::default()),
                readers: AtomicUsize::new(0),
                limits,
                budget: Arc::new(Budget {
                    used: AtomicUsize::new(0),
                    limit: limits.stream,
                }),
            }),
        }
    }

    /// The track's byte limits.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Media bytes the track holds now (groups still alive, half-received frames).
    pub fn held_bytes(&self) -> usize {
        self.shared.budget.used.load(Ordering::Acquire)
    }

    /// A claim on the track's byte budget for media on its way in (a frame half received),
    /// empty at first; see [`Held::resize`].
    pub fn hold(&self) -> Held {
        Held {
            budget: self.shared.budget.clone(),
            bytes: 0,
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
            budget: self.shared.budget.clone(),
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
        accepted.then_some(GroupWriter {
            group,
            limit: self.shared.limits.group,
            cut: None,
        })
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

/// Bytes of a track's budget taken for media not in a group yet; given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Held {
    /// Holds `bytes` in all, growing or shrinking the claim. Growing past the track's limit
    /// fails and keeps the claim as it was.
    pub fn resize(&mut self, bytes: usize) -> Result<(), Over> {
        if bytes > self.bytes {
            if !self.budget.take(bytes - self.bytes) {
                return Err(Over::Stream {
                    limit: self.budget.limit,
                });
            }
        } else {
            self.budget.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[derive(Debug, Default)]
struct GroupFrames {
    frames: Vec<Frame>,
    /// Encoded bytes of `frames`.
    bytes: usize,
    done: bool,
}

/// One group: frames from a keyframe to the next keyframe.
#[derive(Debug)]
pub struct Group {
    sequence: u64,
    frames: watch::Sender<GroupFrames>,
    budget: Arc<Budget>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.budget.give_back(self.frames.borrow().bytes);
    }
}

/// The producer's handle on the group it is filling. Dropping it completes the group.
#[derive(Debug)]
pub struct GroupWriter {
    group: Arc<Group>,
    limit: usize,
    /// Why the group was cut, once it was.
    cut: Option<Over>,
}

impl GroupWriter {
    /// The group's sequence number.
    pub fn sequence(&self) -> u64 {
        self.group.sequence
    }

    /// Appends a frame; readers waiting on this group wake up. A frame that would take the
    /// group or the track past its byte limit is refused and cuts the group: readers get
    /// the frames before it, then the group's end, and every later push is refused too.
    pub fn push(&mut self, frame: Frame) -> Result<(), Over> {
        if let Some(over) = self.cut {
            return Err(over);
        }
        let len = frame.encoded().len();
        let bytes = self.group.frames.borrow().bytes;
        let over = if bytes.saturating_add(len) > self.limit {
            Some(Over::Group { limit: self.limit })
        } else if !self.group.budget.take(len) {
            Some(Over::Stream {
                limit: self.group.budget.limit,
            })
        } else {
            None
        };
        if let Some(over) = over {
            self.cut = Some(over);
            self.group.frames.send_modify(|g| g.done = true);
            return Err(over);
        }
        self.group.frames.send_modify(|g| {
            g.frames.push(frame);
            g.bytes += len;
        });
        Ok(())
    }

    /// Why the group was cut, if it was.
    pub fn cut(&self) -> Option<Over> {
        self.cut
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
        let mut g1 = t.start_group(1).expect("first group");
        g1.push(frame(10)).expect("room");
        g1.push(frame(11)).expect("room");
        let mut r = t.subscribe();
        let mut g = r.next_group().await.expect("group");
        assert_eq!(g.sequence(), 1);
        assert_eq!(g.next_frame().await, Some(frame(10)));
        assert_eq!(g.next_frame().await, Some(frame(11)));
        g1.push(frame(12)).expect("room");
        assert_eq!(g.next_frame().await, Some(frame(12)));
        drop(g1);
        assert_eq!(g.next_frame().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_reader_jumps_to_the_newest_group() {
        let t = track();
        let mut r = t.subscribe();
        for seq in 1..=5 {
            let mut w = t.start_group(seq).expect("newer group");
            w.push(frame(seq)).expect("room");
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

    fn sized(n: u64, payload: usize) -> Frame {
        Frame::new(n, &vec![0u8; payload]).expect("frame")
    }

    fn limited(group: usize, stream: usize) -> Track {
        Track::with_limits(
            TrackInfo {
                id: "s".into(),
                name: "n".into(),
                init: Bytes::new(),
            },
            Limits { group, stream },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_past_its_byte_limit_is_cut_and_the_next_one_flows() {
        let one = sized(0, 1000).encoded().len();
        let t = limited(3 * one, 100 * one);
        let mut r = t.subscribe();
        let mut w = t.start_group(1).expect("group");
        for n in 0..3 {
            w.push(sized(n, 1000)).expect("within the group limit");
        }
        let over = w.push(sized(3, 1000));
        assert_eq!(over, Err(Over::Group { limit: 3 * one }));
        assert_eq!(
            w.push(sized(4, 10)),
            over,
            "once cut, the group takes nothing more"
        );
        assert_eq!(w.cut(), Some(Over::Group { limit: 3 * one }));
        // Readers get what came before the cut, then the group's end, while the writer
        // still exists: nobody waits on a group that takes no more frames.
        let mut g = r.next_group().await.expect("group");
        for n in 0..3 {
            assert_eq!(g.next_frame().await.map(|f| f.capture_us()), Some(n));
        }
        assert_eq!(g.next_frame().await, None);
        // The next group starts afresh.
        let mut w2 = t.start_group(2).expect("next group");
        w2.push(sized(9, 1000)).expect("a new group has room");
        drop(w);
        let mut g2 = r.next_group().await.expect("next group");
        assert_eq!(g2.sequence(), 2);
        assert_eq!(g2.next_frame().await.map(|f| f.capture_us()), Some(9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_holds_at_most_its_limit_across_groups_and_half_frames() {
        let one = sized(0, 1000).encoded().len();
        let t = limited(10 * one, 4 * one);
        let mut w1 = t.start_group(1).expect("group");
        w1.push(sized(0, 1000)).expect("room");
        w1.push(sized(1, 1000)).expect("room");
        // A slow reader keeps group 1 alive after group 2 supersedes it.
        let mut r = t.subscribe();
        let g1 = r.next_group().await.expect("group 1");
        drop(w1);
        let mut w2 = t.start_group(2).expect("group");
        w2.push(sized(2, 1000)).expect("room");
        // A frame half received holds its bytes too.
        let mut partial = t.hold();
        partial.resize(one).expect("room for one more");
        assert_eq!(t.held_bytes(), 4 * one);
        assert_eq!(
            partial.resize(2 * one),
            Err(Over::Stream { limit: 4 * one }),
            "no room: the claim stays as it was"
        );
        assert_eq!(
            w2.push(sized(3, 1000)),
            Err(Over::Stream { limit: 4 * one })
        );
        // Once the reader lets go of group 1 and the half frame is done, room comes back.
        drop(g1);
        drop(partial);
        assert_eq!(t.held_bytes(), one);
        let mut w3 = t.start_group(3).expect("group");
        w3.push(sized(4, 1000)).expect("room again");
        drop(w2);
        drop(r);
        drop(w3);
        let _w4 = t.start_group(4).expect("group");
        assert_eq!(t.held_bytes(), 0, "superseded groups give every byte back");
    }
}
