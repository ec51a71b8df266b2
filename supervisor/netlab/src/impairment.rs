//! What a lab does to packets, written the way a person types it on a command line:
//! `rtt=100ms,jitter=5ms,loss=2%,burst=4,rate=8mbit`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The network path a lab puts between viewers and the stack. Every part applies to both
/// directions alike; the default is a path that changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Round-trip time added by the path; each direction delays packets by half of it.
    pub rtt: Duration,
    /// Spread of the round-trip time: each direction adds a uniform random delay in
    /// ±`jitter / 2` to its half of `rtt`. Packets of one direction are never reordered (a
    /// packet is held until the one before it has left), as on a single physical path.
    pub jitter: Duration,
    /// Long-run share of packets lost in each direction, in percent (0 to 100). A request and
    /// its answer cross the path once each, so a round trip is lost with probability
    /// `1 - (1 - loss)²`.
    pub loss_percent: f64,
    /// Mean length of a loss burst in packets (Gilbert–Elliott model); `None` for independent
    /// random loss.
    pub burst: Option<f64>,
    /// Bandwidth cap of each direction in bits per second; `None` for no cap. Packets beyond
    /// the cap wait in a queue that holds what the cap sends in 100 ms (at least 16 full-size
    /// packets) and are dropped at its tail when it is full, as at a router's bottleneck.
    pub rate_bps: Option<u64>,
}

/// Why an impairment string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A `key=value` item has a key the lab does not know.
    #[error("unknown impairment `{0}` (known: rtt, jitter, loss, burst, rate)")]
    UnknownKey(String),
    /// An item has no `=value`.
    #[error("impairment `{0}` needs a value, as in `{0}=…`")]
    MissingValue(String),
    /// The same key appears twice.
    #[error("impairment `{0}` is given twice")]
    Duplicate(String),
    /// A value does not parse or is out of range.
    #[error("bad value `{value}` for `{key}`: {why}")]
    BadValue {
        /// The key whose value is wrong.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What the value should look like.
        why: String,
    },
}

impl Impairment {
    /// The transition probabilities of the two-state loss model, as (good → bad, bad → good)
    /// per packet; `None` when losses are independent. The bad state loses every packet and
    /// the good one none (Gilbert's case of the model), so a burst lasts `1 / (bad → good)`
    /// packets on average and the bad state's share of time, `p / (p + r)`, is the loss rate.
    pub(crate) fn burst_transitions(&self) -> Option<(f64, f64)> {
        let burst = self.burst?;
        let loss = self.loss_percent / 100.0;
        let leave_bad = 1.0 / burst;
        let enter_bad = loss * leave_bad / (1.0 - loss);
        Some((enter_bad, leave_bad))
    }

    fn check(&self) -> Result<(), ParseError> {
        let bad = |key, value: String, why: &str| ParseError::BadValue {
            key,
            value,
            why: why.into(),
        };
        if let Some(burst) = self.burst {
            let loss = self.loss_percent / 100.0;
            // The model's entry probability `loss / (burst · (1 - loss))` must be a
            // probability: at high loss rates, short bursts cannot reach the rate.
            if loss >= 1.0 || loss / (burst * (1.0 - loss)) > 1.0 {
                return Err(bad(
                    "burst",
                    burst.to_string(),
                    "too short to reach the loss rate (needs burst ≥ loss / (1 - loss) and loss < 100%)",
                ));
            }
        }
        Ok(())
    }
}

impl FromStr for Impairment {
    type Err = ParseError;

    /// Parses `key=value` items separated by commas; `none` or an empty string is the
    /// path that changes nothing.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut impairment = Impairment::default();
        let mut seen: Vec<&str> = Vec::new();
        let text = text.trim();
        if text.is_empty() || text == "none" {
            return Ok(impairment);
        }
        for item in text.split(',').map(str::trim) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(ParseError::MissingValue(item.to_owned()));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(ParseError::Duplicate(key.to_owned()));
            }
            seen.push(key);
            match key {
                "rtt" => impairment.rtt = parse_duration("rtt", value)?,
                "jitter" => impairment.jitter = parse_duration("jitter", value)?,
                "loss" => impairment.loss_percent = parse_percent(value)?,
                "burst" => impairment.burst = Some(parse_burst(value)?),
                "rate" => impairment.rate_bps = Some(parse_rate(value)?),
                _ => return Err(ParseError::UnknownKey(key.to_owned())),
            }
        }
        impairment.check()?;
        Ok(impairment)
    }
}

impl fmt::Display for Impairment {
    /// The form [`Impairment::from_str`] reads, with only the parts that change something.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        if !self.rtt.is_zero() {
            items.push(format!("rtt={}", DurationText(self.rtt)));
        }
        if !self.jitter.is_zero() {
            items.push(format!("jitter={}", DurationText(self.jitter)));
        }
        if self.loss_percent > 0.0 {
            items.push(format!("loss={}%", self.loss_percent));
        }
        if let Some(burst) = self.burst {
            items.push(format!("burst={burst}"));
        }
        if let Some(rate) = self.rate_bps {
            items.push(format!("rate={}", RateText(rate)));
        }
        if items.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&items.join(","))
        }
    }
}

fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ParseError> {
    humantime::parse_duration(value).map_err(|e| ParseError::BadValue {
        key,
        value: value.to_owned(),
        why: format!("{e} (write a duration such as 100ms)"),
    })
}

fn parse_percent(value: &str) -> Result<f64, ParseError> {
    let bad = |why: &str| ParseError::BadValue {
        key: "loss",
        value: value.to_owned(),
        why: why.into(),
    };
    let number = value
        .strip_suffix('%')
        .ok_or_else(|| bad("write a percentage such as 2%"))?;
    let percent: f64 = number
        .trim()
        .parse()
        .map_err(|e| bad(&format!("{e} (write a percentage such as 2%)")))?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(bad("must lie between 0% and 100%"));
    }
    Ok(percent)
}

fn parse_burst(value: &str) -> Result<f64, ParseError> {
    let bad = |why: String| ParseError::BadValue {
        key: "burst",
        value: value.to_owned(),
        why,
    };
    let burst: f64 = value.parse().map_err(|e| {
        bad(format!(
            "{e} (write a mean burst length in packets, such as 4)"
        ))
    })?;
    // A mean run of losses is at least one packet; NaN and infinity are no lengths.
    if !burst.is_finite() || burst < 1.0 {
        return Err(bad("a mean burst length is at least 1 packet".into()));
    }
    Ok(burst)
}

/// Rate units as `tc` writes them: decimal multiples of bits per second.
const RATE_UNITS: [(&str, u64); 4] = [
    ("gbit", 1_000_000_000),
    ("mbit", 1_000_000),
    ("kbit", 1_000),
    ("bit", 1),
];

fn parse_rate(value: &str) -> Result<u64, ParseError> {
    let bad = |why: &str| ParseError::BadValue {
        key: "rate",
        value: value.to_owned(),
        why: why.into(),
    };
    let lower = value.to_ascii_lowercase();
    let (number, scale) = RATE_UNITS
        .iter()
        .find_map(|(unit, scale)| lower.strip_suffix(unit).map(|n| (n.trim(), *scale)))
        .ok_or_else(|| bad("write a rate with a unit: bit, kbit, mbit or gbit, as in 8mbit"))?;
    let number: f64 = number
        .parse()
        .map_err(|_| bad("write a rate such as 8mbit or 1.5mbit"))?;
    let bits = number * scale as f64;
    // Below 1 kbit/s a single full-size packet would take over ten seconds to leave.
    if !(1_000.0..=1e12).contains(&bits) {
        return Err(bad("must lie between 1kbit and 1000gbit"));
    }
    Ok(bits.round() as u64)
}

/// A duration in the largest unit that shows it exactly, for [`Impairment`]'s text form.
struct DurationText(Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let (scale, unit) = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")]
            .into_iter()
            .find(|(scale, _)| nanos.is_multiple_of(*scale))
            .unwrap_or((1, "ns"));
        write!(f, "{}{unit}", nanos / scale)
    }
}

/// A rate in the largest `tc` unit that shows it exactly.
struct RateText(u64);

impl fmt::Display for RateText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, scale) = RATE_UNITS
            .into_iter()
            .find(|(_, scale)| self.0.is_multiple_of(*scale))
            .unwrap_or(("bit", 1));
        write!(f, "{}{unit}", self.0 / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let parsed: Impairment = "rtt=100ms,jitter=5ms,loss=2%,burst=4,rate=8mbit"
            .parse()
            .expect("valid");
        assert_eq!(
            parsed,
            Impairment {
                rtt: Duration::from_millis(100),
                jitter: Duration::from_millis(5),
                loss_percent: 2.0,
                burst: Some(4.0),
                rate_bps: Some(8_000_000),
            }
        );
    }

    #[test]
    fn display_gives_back_the_same_form() {
        for text in [
            "rtt=100ms,jitter=5ms,loss=2%,burst=4,rate=8mbit",
            "rtt=1500ms",
            "loss=0.5%",
            "rate=1500kbit",
            "rtt=2s,rate=64kbit",
            "jitter=250us",
            "none",
        ] {
            let parsed: Impairment = text.parse().expect(text);
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parsed.to_string().parse::<Impairment>(), Ok(parsed));
        }
    }

    #[test]
    fn empty_and_spaced_forms() {
        assert_eq!("".parse::<Impairment>(), Ok(Impairment::default()));
        let parsed: Impairment = " rtt = 60ms , loss = 1 % ".parse().expect("spaces");
        assert_eq!(parsed.rtt, Duration::from_millis(60));
        assert_eq!(parsed.loss_percent, 1.0);
        assert_eq!(
            "rate=1.5mbit".parse::<Impairment>().map(|i| i.rate_bps),
            Ok(Some(1_500_000))
        );
    }

    #[test]
    fn refuses_bad_keys_and_values() {
        let error = |text: &str| text.parse::<Impairment>().expect_err(text);
        assert_eq!(error("delay=5ms"), ParseError::UnknownKey("delay".into()));
        assert_eq!(error("rtt"), ParseError::MissingValue("rtt".into()));
        assert_eq!(
            error("rtt=1ms,rtt=2ms"),
            ParseError::Duplicate("rtt".into())
        );
        for (text, key) in [
            ("rtt=fast", "rtt"),
            ("jitter=-1ms", "jitter"),
            ("loss=2", "loss"),
            ("loss=150%", "loss"),
            ("loss=x%", "loss"),
            ("burst=0.5", "burst"),
            ("burst=NaN", "burst"),
            ("rate=8", "rate"),
            ("rate=8mbps", "rate"),
            ("rate=0mbit", "rate"),
            ("loss=80%,burst=2", "burst"),
        ] {
            match error(text) {
                ParseError::BadValue { key: k, .. } => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let message = error("loss=2").to_string();
        assert!(message.contains("2%"), "{message}");
    }

    #[test]
    fn burst_transitions_reach_the_loss_rate() {
        let parsed: Impairment = "loss=5%,burst=4".parse().expect("valid");
        let (enter, leave) = parsed.burst_transitions().expect("bursty");
        assert!((leave - 0.25).abs() < 1e-12);
        assert!((enter / (enter + leave) - 0.05).abs() < 1e-12);
    }
}
