//! Per-source join limits: a token bucket per client address, no I/O and no clock of its
//! own (the caller passes the time), so tests drive it directly.
//!
//! An IPv6 client is counted by its /64, the block one host or home network gets: its many
//! addresses are one source. The table forgets a source once its bucket is full again, so it
//! holds only the sources seen in the last `burst / rate` seconds, and at most
//! [`MAX_SOURCES`] of them: past that, new sources are refused until old ones refill.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use identity::peer::source_key;

/// Sources tracked at once, at most (about 100 bytes each).
pub const MAX_SOURCES: usize = 65_536;

/// How many joins a source may make: `burst` at once, then `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JoinRate {
    /// Joins per second, sustained.
    pub rate: f64,
    /// Joins at once after a quiet spell.
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by source.
#[derive(Debug)]
pub struct Limiter {
    limit: JoinRate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    /// A limiter allowing each source `limit`.
    pub fn new(limit: JoinRate) -> Limiter {
        Limiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// What each source may do.
    pub fn limit(&self) -> JoinRate {
        self.limit
    }

    /// Takes one join for `source` at `now`; `Err(wait)` when it has none left, with how
    /// long until it has one.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let JoinRate { rate, burst } = self.limit;
        let burst = f64::from(burst.max(1));
        let rate = rate.max(f64::MIN_POSITIVE);
        let key = source_key(source);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_SOURCES {
            // Forget the sources whose buckets have refilled: they are as if never seen.
            buckets.retain(|_, b| {
                b.tokens + rate * now.saturating_duration_since(b.at).as_secs_f64() < burst
            });
            if buckets.len() >= MAX_SOURCES {
                return Err(Duration::from_secs_f64(1.0 / rate));
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled =
            bucket.tokens + rate * now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = refilled.min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let l = Limiter::new(JoinRate {
            rate: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check(ip("203.0.113.7"), t0).expect("within the burst");
        }
        let wait = l.check(ip("203.0.113.7"), t0).expect_err("burst used up");
        assert_eq!(wait, Duration::from_millis(500));
        // Another source is not affected.
        l.check(ip("198.51.100.1"), t0).expect("another source");
        // Half a second later, one more.
        let t1 = t0 + Duration::from_millis(500);
        l.check(ip("203.0.113.7"), t1).expect("refilled one");
        assert!(l.check(ip("203.0.113.7"), t1).is_err());
        // After a quiet spell, the whole burst again, never more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            l.check(ip("203.0.113.7"), t2).expect("burst again");
        }
        assert!(l.check(ip("203.0.113.7"), t2).is_err());
    }

    #[test]
    fn an_ipv6_host_is_one_source_by_its_64() {
        let l = Limiter::new(JoinRate {
            rate: 1.0,
            burst: 2,
        });
        let t0 = Instant::now();
        l.check(ip("2001:db8:1:2::1"), t0).expect("first");
        l.check(ip("2001:db8:1:2:ffff::9"), t0).expect("second");
        assert!(
            l.check(ip("2001:db8:1:2:abcd::5"), t0).is_err(),
            "the same /64"
        );
        l.check(ip("2001:db8:1:3::1"), t0).expect("another /64");
        l.check(ip("::ffff:203.0.113.7"), t0).expect("mapped");
        l.check(ip("203.0.113.7"), t0)
            .expect("the same IPv4 source");
        assert!(l.check(ip("203.0.113.7"), t0).is_err());
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let l = Limiter::new(JoinRate {
            rate: 1.0,
            burst: 1,
        });
        let t0 = Instant::now();
        for n in 0..MAX_SOURCES as u32 {
            l.check(IpAddr::V4(n.into()), t0).expect("new source");
        }
        assert!(
            l.check(ip("255.255.255.255"), t0).is_err(),
            "full: a new source waits"
        );
        // Once the old buckets refill they are forgotten, and new sources get in.
        let later = t0 + Duration::from_secs(2);
        l.check(ip("255.255.255.255"), later).expect("room again");
    }
}
