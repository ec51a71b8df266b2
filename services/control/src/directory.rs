//! Control's in-memory state: live streams, ingest gateways and relays, and the placement of
//! viewers on relays. Pure logic: every method takes the current time, nothing here does I/O.
//!
//! All of it is soft state. Ingest gateways and relays send their full state in every
//! heartbeat, so a freshly started control knows everything again after one heartbeat round.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use api::Protocol;
use proto::control as pb;

/// How long a stream created through `CreateStream` is kept even though its ingest's
/// heartbeats do not list it yet (a heartbeat may have been built before the stream existed).
const CREATE_GRACE: Duration = Duration::from_secs(3);
/// How long an ended stream's id is remembered, so a heartbeat built before the end (and
/// arriving after it) does not bring the stream back.
const TOMBSTONE: Duration = Duration::from_secs(10);
/// How long a seat placed on a relay stays reserved for a viewer the relay has not reported
/// seated. A viewer reaches its relay a round trip or two after the join answer, and the
/// relay reports it within a heartbeat; a reservation older than this was a no-show (a join
/// answer nobody used), and is released so it neither fills placement nor counts as load.
pub const RESERVATION_TTL: Duration = Duration::from_secs(2);
/// A reservation still unconfirmed after this long is probably a no-show: a refusal caused
/// by such reservations is not demand for more relays (see [`Directory::refusal_is_demand`]).
pub const NO_SHOW_AFTER: Duration = Duration::from_secs(1);

/// Timeouts after which silent members are dropped.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A relay silent this long is gone: no more viewers are sent to it.
    pub relay: Duration,
    /// An ingest silent this long is gone, and its streams with it.
    pub ingest: Duration,
}

#[derive(Debug, Clone)]
struct StreamEntry {
    id: String,
    name: String,
    started_at_us: u64,
    ingest_id: String,
    /// Fixed for the stream's life: a heartbeat's listing never changes it.
    protocol: Protocol,
    created: Instant,
}

/// A seat placed on a relay that its heartbeats have not shown taken yet.
#[derive(Debug, Clone)]
struct Reservation {
    stream_id: String,
    at: Instant,
}

#[derive(Debug, Clone)]
struct RelayEntry {
    report: pb::RelayHeartbeatRequest,
    last_seen: Instant,
    /// Viewers placed here and not yet reported seated (so not in `report.viewers`), oldest
    /// first; none older than [`RESERVATION_TTL`].
    reservations: VecDeque<Reservation>,
}

impl RelayEntry {
    fn reserved(&self) -> u32 {
        u32::try_from(self.reservations.len()).unwrap_or(u32::MAX)
    }
    fn load(&self) -> u32 {
        self.report.viewers.saturating_add(self.reserved())
    }
    fn has_room(&self) -> bool {
        self.report.accepting && self.load() < self.report.capacity
    }
    fn carries(&self, stream_id: &str) -> bool {
        self.report.streams.iter().any(|s| s.stream_id == stream_id)
            || self.reservations.iter().any(|r| r.stream_id == stream_id)
    }
    /// Load counting only reservations young enough that their viewer may still come.
    fn likely_load(&self, now: Instant) -> u32 {
        let fresh = self
            .reservations
            .iter()
            .filter(|r| now.duration_since(r.at) < NO_SHOW_AFTER)
            .count();
        self.report
            .viewers
            .saturating_add(u32::try_from(fresh).unwrap_or(u32::MAX))
    }
}

#[derive(Debug, Clone)]
struct IngestEntry {
    addr: String,
    last_seen: Instant,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No stream with that id or name.
    NotFound(String),
    /// Another live stream already has that name.
    NameInUse(String),
    /// No relay has room; the reason says why.
    NoCapacity(String),
    /// The request itself is malformed.
    Invalid(String),
}

/// Where a viewer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The stream placed (the request may have named it instead).
    pub stream_id: String,
    /// The relay's report (address, certificate identity).
    pub relay_id: String,
    /// Relay address for viewers.
    pub relay_addr: String,
    /// TLS server name.
    pub server_name: String,
    /// Certificate hash.
    pub cert_sha256: String,
    /// The certificate is the operator's, from a public CA.
    pub cert_public: bool,
}

/// Control's whole state.
#[derive(Debug)]
pub struct Directory {
    timeouts: Timeouts,
    streams: HashMap<String, StreamEntry>,
    relays: HashMap<String, RelayEntry>,
    ingests: HashMap<String, IngestEntry>,
    ended: HashMap<String, Instant>,
    /// Viewers placed, since start.
    pub joins: u64,
    /// Viewers refused for capacity, since start.
    pub rejections: u64,
}

impl Directory {
    /// An empty directory.
    pub fn new(timeouts: Timeouts) -> Directory {
        Directory {
            timeouts,
            streams: HashMap::new(),
            relays: HashMap::new(),
            ingests: HashMap::new(),
            ended: HashMap::new(),
            joins: 0,
            rejections: 0,
        }
    }

    /// Registers a new live stream from `ingest_id`, published over `protocol` (as the
    /// request names it: empty is QUIC).
    pub fn create_stream(
        &mut self,
        name: &str,
        ingest_id: &str,
        protocol: &str,
        id: String,
        now: Instant,
        now_us: u64,
    ) -> Result<pb::Stream, Refusal> {
        validate_name(name)?;
        if ingest_id.is_empty() {
            return Err(Refusal::Invalid("ingest_id is empty".into()));
        }
        let protocol = parse_protocol(protocol)?;
        self.expire(now);
        if self.streams.values().any(|s| s.name == name) {
            return Err(Refusal::NameInUse(name.to_string()));
        }
        let entry = StreamEntry {
            id: id.clone(),
            name: name.to_string(),
            started_at_us: now_us,
            ingest_id: ingest_id.to_string(),
            protocol,
            created: now,
        };
        self.streams.insert(id.clone(), entry);
        Ok(self.stream_pb(&self.streams[&id]))
    }

    /// Ends a stream; whether it was live.
    pub fn end_stream(&mut self, id: &str, now: Instant) -> bool {
        self.ended
            .retain(|_, at| now.duration_since(*at) < TOMBSTONE);
        self.ended.insert(id.to_string(), now);
        self.streams.remove(id).is_some()
    }

    /// Live streams, newest first.
    pub fn list(&mut self, now: Instant) -> Vec<pb::Stream> {
        self.expire(now);
        let mut out: Vec<pb::Stream> = self.streams.values().map(|s| self.stream_pb(s)).collect();
        out.sort_by(|a, b| {
            b.started_at_us
                .cmp(&a.started_at_us)
                .then(a.name.cmp(&b.name))
        });
        out
    }

    fn stream_pb(&self, s: &StreamEntry) -> pb::Stream {
        let viewers = self
            .relays
            .values()
            .flat_map(|r| r.report.streams.iter())
            .filter(|l| l.stream_id == s.id)
            .map(|l| l.viewers)
            .sum();
        pb::Stream {
            id: s.id.clone(),
            name: s.name.clone(),
            started_at_us: s.started_at_us,
            viewers,
            ingest_id: s.ingest_id.clone(),
            protocol: s.protocol.as_str().to_string(),
        }
    }

    /// Finds a stream by id, else by name.
    pub fn find(&self, key: &str) -> Option<&str> {
        if let Some(s) = self.streams.get(key) {
            return Some(&s.id);
        }
        self.streams
            .values()
            .find(|s| s.name == key)
            .map(|s| s.id.as_str())
    }

    /// Places one viewer of `stream` (id or name) on a relay with room: first a relay that
    /// already carries the stream, else the relay with the most room (which then starts
    /// carrying it). A refusal for capacity is counted.
    pub fn join(&mut self, stream: &str, now: Instant) -> Result<Placement, Refusal> {
        self.expire(now);
        let stream_id = self
            .find(stream)
            .ok_or_else(|| Refusal::NotFound(stream.to_string()))?
            .to_string();
        let carrying = self
            .relays
            .values()
            .filter(|r| r.has_room() && r.carries(&stream_id))
            .min_by(|a, b| a.report.relay_id.cmp(&b.report.relay_id))
            .map(|r| r.report.relay_id.clone());
        let chosen = carrying.or_else(|| {
            self.relays
                .values()
                .filter(|r| r.has_room())
                .max_by(|a, b| {
                    (a.report.capacity - a.load())
                        .cmp(&(b.report.capacity - b.load()))
                        .then(b.report.relay_id.cmp(&a.report.relay_id))
                })
                .map(|r| r.report.relay_id.clone())
        });
        let Some(relay_id) = chosen else {
            self.rejections += 1;
            let reason = if self.relays.is_empty() {
                "no relay is running".to_string()
            } else {
                let (load, capacity) = self
                    .relays
                    .values()
                    .fold((0, 0), |(l, c), r| (l + r.load(), c + r.report.capacity));
                format!(
                    "all {} relays are full ({load}/{capacity} viewers)",
                    self.relays.len()
                )
            };
            return Err(Refusal::NoCapacity(reason));
        };
        self.joins += 1;
        let relay = self
            .relays
            .get_mut(&relay_id)
            .ok_or_else(|| Refusal::NoCapacity("relay vanished".into()))?;
        relay.reservations.push_back(Reservation {
            stream_id: stream_id.clone(),
            at: now,
        });
        Ok(Placement {
            stream_id,
            relay_id,
            relay_addr: relay.report.addr.clone(),
            server_name: relay.report.server_name.clone(),
            cert_sha256: relay.report.cert_sha256.clone(),
            cert_public: relay.report.cert_public,
        })
    }

    /// Whether a refusal for capacity now is demand for more relays: false when the relays
    /// would have room but for reservations that have waited past [`NO_SHOW_AFTER`] for
    /// their viewer (join answers nobody used, such as a join flood's), which are released
    /// soon anyway.
    pub fn refusal_is_demand(&self, now: Instant) -> bool {
        !self
            .relays
            .values()
            .any(|r| r.report.accepting && r.likely_load(now) < r.report.capacity)
    }

    /// Takes a relay's full report. Its count of viewers seated since the last report marks
    /// that many of the relay's reservations, oldest first, as used: they are in the
    /// report's viewers from now on. The others stay until they expire.
    pub fn relay_heartbeat(
        &mut self,
        report: pb::RelayHeartbeatRequest,
        now: Instant,
    ) -> Result<(), Refusal> {
        validate_member(&report.relay_id, &report.addr)?;
        let mut reservations = VecDeque::new();
        if let Some(old) = self.relays.remove(&report.relay_id) {
            reservations = old.reservations;
            // A relay that restarted under the same id counts from zero again.
            let seated = if report.seated >= old.report.seated {
                report.seated - old.report.seated
            } else {
                report.seated
            };
            let used = usize::try_from(seated).unwrap_or(usize::MAX);
            reservations.drain(..used.min(reservations.len()));
        }
        reservations.retain(|r| now.duration_since(r.at) < RESERVATION_TTL);
        self.relays.insert(
            report.relay_id.clone(),
            RelayEntry {
                report,
                last_seen: now,
                reservations,
            },
        );
        Ok(())
    }

    /// Takes an ingest's full report: its streams are exactly the ones it lists (plus any
    /// created too recently to be listed). A stream already known keeps what it was created
    /// with (an ingest older than the protocol field lists every stream without one); a
    /// stream control learns of here, after a restart, takes the listing's.
    pub fn ingest_heartbeat(
        &mut self,
        report: pb::IngestHeartbeatRequest,
        now: Instant,
    ) -> Result<(), Refusal> {
        validate_member(&report.ingest_id, &report.addr)?;
        let mut protocols = Vec::with_capacity(report.streams.len());
        for s in &report.streams {
            validate_name(&s.name)?;
            if s.id.is_empty() || s.id.len() > wire::limits::MAX_ID {
                return Err(Refusal::Invalid(format!("bad stream id {:?}", s.id)));
            }
            protocols.push(parse_protocol(&s.protocol)?);
        }
        let ingest_id = report.ingest_id.clone();
        self.streams.retain(|id, s| {
            s.ingest_id != ingest_id
                || report.streams.iter().any(|r| &r.id == id)
                || now.duration_since(s.created) < CREATE_GRACE
        });
        for (s, protocol) in report.streams.into_iter().zip(protocols) {
            if self
                .ended
                .get(&s.id)
                .is_some_and(|at| now.duration_since(*at) < TOMBSTONE)
            {
                continue;
            }
            self.streams.entry(s.id.clone()).or_insert(StreamEntry {
                id: s.id,
                name: s.name,
                started_at_us: s.started_at_us,
                ingest_id: ingest_id.clone(),
                protocol,
                created: now,
            });
        }
        self.ingests.insert(
            ingest_id,
            IngestEntry {
                addr: report.addr,
                last_seen: now,
            },
        );
        Ok(())
    }

    /// Drops a relay at once (it died); whether it was known.
    pub fn forget_relay(&mut self, relay_id: &str) -> bool {
        self.relays.remove(relay_id).is_some()
    }

    /// Relays that have room or viewers, as operators see them.
    pub fn relays(&self, now: Instant) -> Vec<pb::RelayInfo> {
        let mut out: Vec<pb::RelayInfo> = self
            .relays
            .values()
            .map(|r| pb::RelayInfo {
                relay_id: r.report.relay_id.clone(),
                addr: r.report.addr.clone(),
                capacity: r.report.capacity,
                viewers: r.report.viewers,
                streams: r.report.streams.clone(),
                bytes_sent: r.report.bytes_sent,
                groups_skipped: r.report.groups_skipped,
                accepting: r.report.accepting,
                last_seen_ms: now.duration_since(r.last_seen).as_millis() as u32,
            })
            .collect();
        out.sort_by(|a, b| a.relay_id.cmp(&b.relay_id));
        out
    }

    /// Relays accepting viewers now.
    pub fn accepting_relays(&self) -> usize {
        self.relays.values().filter(|r| r.report.accepting).count()
    }

    /// Address of an ingest, if known.
    pub fn ingest_addr(&self, ingest_id: &str) -> Option<&str> {
        self.ingests.get(ingest_id).map(|i| i.addr.as_str())
    }

    /// Drops relays and ingests that went silent, and the streams of a silent ingest.
    pub fn expire(&mut self, now: Instant) {
        let t = self.timeouts;
        self.relays
            .retain(|_, r| now.duration_since(r.last_seen) < t.relay);
        for relay in self.relays.values_mut() {
            relay
                .reservations
                .retain(|r| now.duration_since(r.at) < RESERVATION_TTL);
        }
        let before = self.ingests.len();
        self.ingests
            .retain(|_, i| now.duration_since(i.last_seen) < t.ingest);
        if self.ingests.len() != before {
            let ingests = &self.ingests;
            self.streams.retain(|_, s| {
                ingests.contains_key(&s.ingest_id) || now.duration_since(s.created) < t.ingest
            });
        }
    }
}

fn validate_name(name: &str) -> Result<(), Refusal> {
    wire::limits::check_stream_name(name)
        .map_err(|bad| Refusal::Invalid(format!("stream name {bad}")))
}

fn parse_protocol(name: &str) -> Result<Protocol, Refusal> {
    Protocol::from_name(name).ok_or_else(|| {
        Refusal::Invalid(format!(
            "unknown protocol {name:?} (expected \"quic\" or \"rtmp\")"
        ))
    })
}

fn validate_member(id: &str, addr: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > wire::limits::MAX_ID {
        return Err(Refusal::Invalid(format!("bad member id {id:?}")));
    }
    if addr.is_empty() || addr.len() > 256 || !addr.contains(':') {
        return Err(Refusal::Invalid(format!(
            "bad address {addr:?} (expected host:port)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        relay: Duration::from_millis(1_500),
        ingest: Duration::from_secs(3),
    };

    fn relay(
        id: &str,
        capacity: u32,
        viewers: u32,
        streams: &[(&str, u32)],
    ) -> pb::RelayHeartbeatRequest {
        pb::RelayHeartbeatRequest {
            relay_id: id.into(),
            addr: format!("127.0.0.1:{}", 4500 + id.len()),
            server_name: "relay.ghost".into(),
            cert_sha256: "00".into(),
            capacity,
            viewers,
            streams: streams
                .iter()
                .map(|(s, v)| pb::StreamLoad {
                    stream_id: s.to_string(),
                    viewers: *v,
                })
                .collect(),
            accepting: true,
            ..Default::default()
        }
    }

    fn with_stream() -> (Directory, Instant) {
        let now = Instant::now();
        let mut d = Directory::new(T);
        d.create_stream("cats", "ingest-1", "", "s1".into(), now, 1)
            .expect("created");
        (d, now)
    }

    #[test]
    fn names_are_unique_among_live_streams() {
        let (mut d, now) = with_stream();
        assert_eq!(
            d.create_stream("cats", "ingest-1", "", "s2".into(), now, 2),
            Err(Refusal::NameInUse("cats".into()))
        );
        assert!(d.end_stream("s1", now));
        assert!(
            d.create_stream("cats", "ingest-1", "", "s2".into(), now, 2)
                .is_ok()
        );
        assert!(
            d.create_stream("", "ingest-1", "", "s3".into(), now, 2)
                .is_err()
        );
    }

    fn listed(id: &str, name: &str, protocol: &str) -> pb::Stream {
        pb::Stream {
            id: id.into(),
            name: name.into(),
            started_at_us: 1,
            viewers: 0,
            ingest_id: String::new(),
            protocol: protocol.into(),
        }
    }

    fn ingest_hb(streams: Vec<pb::Stream>) -> pb::IngestHeartbeatRequest {
        pb::IngestHeartbeatRequest {
            ingest_id: "ingest-1".into(),
            addr: "127.0.0.1:4433".into(),
            streams,
        }
    }

    fn protocol_of(d: &mut Directory, id: &str, now: Instant) -> Option<String> {
        d.list(now)
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| s.protocol)
    }

    #[test]
    fn a_stream_keeps_the_protocol_it_was_created_with() {
        let (mut d, now) = with_stream();
        let rtmp = d
            .create_stream("obs", "ingest-1", "rtmp", "s2".into(), now, 2)
            .expect("created");
        assert_eq!(rtmp.protocol, "rtmp");
        assert_eq!(protocol_of(&mut d, "s1", now).as_deref(), Some("quic"));
        assert_eq!(protocol_of(&mut d, "s2", now).as_deref(), Some("rtmp"));
        // Heartbeats list both streams, without a protocol (an ingest older than the field)
        // or with another one: neither changes what the stream was created with.
        let later = now + CREATE_GRACE;
        d.ingest_heartbeat(
            ingest_hb(vec![listed("s1", "cats", ""), listed("s2", "obs", "")]),
            later,
        )
        .expect("hb");
        d.ingest_heartbeat(
            ingest_hb(vec![
                listed("s1", "cats", "rtmp"),
                listed("s2", "obs", "quic"),
            ]),
            later,
        )
        .expect("hb");
        assert_eq!(protocol_of(&mut d, "s1", later).as_deref(), Some("quic"));
        assert_eq!(protocol_of(&mut d, "s2", later).as_deref(), Some("rtmp"));
    }

    #[test]
    fn a_restarted_control_takes_the_protocol_from_the_heartbeat() {
        let now = Instant::now();
        let mut d = Directory::new(T);
        d.ingest_heartbeat(
            ingest_hb(vec![listed("s1", "cats", ""), listed("s2", "obs", "rtmp")]),
            now,
        )
        .expect("hb");
        assert_eq!(protocol_of(&mut d, "s1", now).as_deref(), Some("quic"));
        assert_eq!(protocol_of(&mut d, "s2", now).as_deref(), Some("rtmp"));
    }

    #[test]
    fn an_unknown_protocol_is_refused() {
        let (mut d, now) = with_stream();
        assert!(matches!(
            d.create_stream("dogs", "ingest-1", "srt", "s2".into(), now, 2),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            d.ingest_heartbeat(ingest_hb(vec![listed("s1", "cats", "Quic")]), now),
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(d.list(now).len(), 1, "the refused report changed nothing");
    }

    #[test]
    fn fills_the_relay_carrying_the_stream_then_spills_over() {
        let (mut d, now) = with_stream();
        d.relay_heartbeat(relay("r1", 2, 0, &[]), now).expect("hb");
        d.relay_heartbeat(relay("r2", 2, 0, &[]), now).expect("hb");
        let a = d.join("cats", now).expect("room");
        let b = d.join("s1", now).expect("room");
        assert_eq!(a.relay_id, b.relay_id, "second viewer joins the same relay");
        let c = d.join("s1", now).expect("room on the other relay");
        assert_ne!(c.relay_id, a.relay_id, "stream placed on a further relay");
        d.join("s1", now).expect("last seat");
        assert!(matches!(d.join("s1", now), Err(Refusal::NoCapacity(_))));
        assert_eq!((d.joins, d.rejections), (4, 1));
    }

    fn seated(mut report: pb::RelayHeartbeatRequest, seated: u64) -> pb::RelayHeartbeatRequest {
        report.seated = seated;
        report
    }

    #[test]
    fn a_reservation_holds_until_the_relay_reports_the_viewer_seated() {
        let (mut d, now) = with_stream();
        d.relay_heartbeat(relay("r1", 1, 0, &[]), now).expect("hb");
        d.join("s1", now).expect("room");
        assert!(
            d.join("s1", now).is_err(),
            "the reservation counts while its viewer is on its way"
        );
        // A heartbeat built before the viewer arrived releases nothing.
        let t1 = now + Duration::from_millis(500);
        d.relay_heartbeat(relay("r1", 1, 0, &[]), t1).expect("hb");
        assert!(d.join("s1", t1).is_err(), "still reserved");
        // The viewer is seated, then leaves: its reservation is used up, the seat free.
        let t2 = now + Duration::from_millis(1000);
        d.relay_heartbeat(seated(relay("r1", 1, 0, &[]), 1), t2)
            .expect("hb");
        assert!(d.join("s1", t2).is_ok());
    }

    #[test]
    fn unused_reservations_are_released_within_seconds() {
        let (mut d, now) = with_stream();
        d.relay_heartbeat(relay("r1", 3, 0, &[]), now).expect("hb");
        for _ in 0..3 {
            d.join("s1", now).expect("room");
        }
        assert!(
            d.join("s1", now).is_err(),
            "three join answers, nobody came"
        );
        assert!(
            d.refusal_is_demand(now),
            "fresh reservations are viewers on their way: demand"
        );
        let later = now + NO_SHOW_AFTER;
        assert!(
            !d.refusal_is_demand(later),
            "reservations nobody used are not demand"
        );
        let released = now + RESERVATION_TTL;
        d.relay_heartbeat(relay("r1", 3, 0, &[]), released)
            .expect("hb");
        for _ in 0..3 {
            d.join("s1", released)
                .expect("the no-shows' seats are free again");
        }
        // The second round's no-shows go the same way.
        let again = released + RESERVATION_TTL;
        d.relay_heartbeat(relay("r1", 3, 0, &[]), again)
            .expect("hb");
        assert!(d.join("s1", again).is_ok());
    }

    #[test]
    fn seated_viewers_use_up_the_oldest_reservations() {
        let (mut d, now) = with_stream();
        d.relay_heartbeat(seated(relay("r1", 4, 0, &[]), 10), now)
            .expect("hb");
        for _ in 0..4 {
            d.join("s1", now).expect("room");
        }
        // Two of four came; the report counts them as viewers.
        let t1 = now + Duration::from_millis(500);
        d.relay_heartbeat(seated(relay("r1", 4, 2, &[("s1", 2)]), 12), t1)
            .expect("hb");
        assert!(d.join("s1", t1).is_err(), "2 viewers + 2 on their way");
        // The other two never come: released after the TTL, the viewers stay counted.
        let t2 = now + RESERVATION_TTL;
        d.relay_heartbeat(seated(relay("r1", 4, 2, &[("s1", 2)]), 12), t2)
            .expect("hb");
        d.join("s1", t2).expect("room");
        d.join("s1", t2).expect("room");
        assert!(d.join("s1", t2).is_err());
        // A relay restarted under the same id counts from zero.
        let t3 = t2 + Duration::from_millis(500);
        d.relay_heartbeat(seated(relay("r1", 4, 3, &[("s1", 3)]), 1), t3)
            .expect("hb");
        assert!(d.join("s1", t3).is_err(), "3 viewers + 1 on its way");
    }

    #[test]
    fn silent_relays_get_no_viewers() {
        let (mut d, now) = with_stream();
        d.relay_heartbeat(relay("r1", 10, 0, &[]), now).expect("hb");
        let later = now + Duration::from_secs(2);
        assert!(matches!(d.join("s1", later), Err(Refusal::NoCapacity(_))));
        assert!(d.relays(later).is_empty());
    }

    #[test]
    fn a_forgotten_relay_gets_no_viewers_until_it_reports_again() {
        let (mut d, now) = with_stream();
        d.relay_heartbeat(relay("r1", 10, 0, &[]), now).expect("hb");
        assert!(d.forget_relay("r1"));
        assert!(matches!(d.join("s1", now), Err(Refusal::NoCapacity(_))));
        d.relay_heartbeat(relay("r1", 10, 0, &[]), now).expect("hb");
        assert!(d.join("s1", now).is_ok());
    }

    #[test]
    fn draining_relays_get_no_viewers() {
        let (mut d, now) = with_stream();
        let mut r = relay("r1", 10, 0, &[]);
        r.accepting = false;
        d.relay_heartbeat(r, now).expect("hb");
        assert!(matches!(d.join("s1", now), Err(Refusal::NoCapacity(_))));
    }

    #[test]
    fn unknown_stream_is_not_found() {
        let (mut d, now) = with_stream();
        assert_eq!(d.join("dogs", now), Err(Refusal::NotFound("dogs".into())));
    }

    #[test]
    fn restarted_control_rebuilds_from_heartbeats() {
        let now = Instant::now();
        let mut d = Directory::new(T);
        d.ingest_heartbeat(
            pb::IngestHeartbeatRequest {
                ingest_id: "ingest-1".into(),
                addr: "127.0.0.1:4433".into(),
                streams: vec![pb::Stream {
                    id: "s1".into(),
                    name: "cats".into(),
                    started_at_us: 5,
                    viewers: 0,
                    ingest_id: String::new(),
                    protocol: String::new(),
                }],
            },
            now,
        )
        .expect("hb");
        d.relay_heartbeat(relay("r1", 10, 3, &[("s1", 3)]), now)
            .expect("hb");
        let list = d.list(now);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].id.as_str(), list[0].viewers), ("s1", 3));
        assert_eq!(list[0].started_at_us, 5, "start time kept from ingest");
    }

    #[test]
    fn ingest_heartbeat_ends_streams_it_no_longer_has() {
        let (mut d, now) = with_stream();
        let hb = pb::IngestHeartbeatRequest {
            ingest_id: "ingest-1".into(),
            addr: "127.0.0.1:4433".into(),
            streams: vec![],
        };
        d.ingest_heartbeat(hb.clone(), now).expect("hb");
        assert_eq!(d.list(now).len(), 1, "just created: kept");
        d.ingest_heartbeat(hb, now + CREATE_GRACE).expect("hb");
        assert!(d.list(now + CREATE_GRACE).is_empty());
    }

    #[test]
    fn a_late_heartbeat_does_not_revive_an_ended_stream() {
        let (mut d, now) = with_stream();
        assert!(d.end_stream("s1", now));
        let stale = pb::IngestHeartbeatRequest {
            ingest_id: "ingest-1".into(),
            addr: "127.0.0.1:4433".into(),
            streams: vec![pb::Stream {
                id: "s1".into(),
                name: "cats".into(),
                started_at_us: 1,
                viewers: 0,
                ingest_id: String::new(),
                protocol: String::new(),
            }],
        };
        d.ingest_heartbeat(stale, now).expect("hb");
        assert!(d.list(now).is_empty());
    }

    #[test]
    fn silent_ingest_takes_its_streams_along() {
        let (mut d, now) = with_stream();
        d.ingest_heartbeat(
            pb::IngestHeartbeatRequest {
                ingest_id: "ingest-1".into(),
                addr: "127.0.0.1:4433".into(),
                streams: vec![],
            },
            now,
        )
        .expect("hb");
        assert!(d.list(now + Duration::from_secs(4)).is_empty());
    }

    #[test]
    fn bad_reports_are_refused() {
        let now = Instant::now();
        let mut d = Directory::new(T);
        let mut r = relay("r1", 1, 0, &[]);
        r.addr = "nonsense".into();
        assert!(matches!(
            d.relay_heartbeat(r, now),
            Err(Refusal::Invalid(_))
        ));
        let r = relay(&"x".repeat(100), 1, 0, &[]);
        assert!(matches!(
            d.relay_heartbeat(r, now),
            Err(Refusal::Invalid(_))
        ));
    }
}
