//! Built-in generators: `datagen` (typed random columns) and `nexmark` (the Nexmark person,
//! auction and bid streams). They behave like a topic being filled at `rate` events per second
//! since the source was created: a snapshot holds the events generated so far (or all
//! `events` of them at once when `events` is given without `rate`). Every value is a pure
//! function of (seed, column, event number), so the same source gives the same rows on every
//! read, in any split, after any restart.

mod datagen;
mod nexmark;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub use datagen::DatagenConnector;
pub use nexmark::NexmarkConnector;

use crate::source::{ConnectorError, Options, Split};

/// SplitMix64's finaliser: a fast, well-mixed hash of a counter.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random number for (seed, stream, index); `stream` separates columns or uses.
pub(crate) fn random(seed: u64, stream: u64, index: u64) -> u64 {
    mix(seed ^ mix(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ mix(index)))
}

/// Pace and extent of a generator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Event-time start, nanoseconds since the epoch.
    pub start_ns: i64,
    /// Event time between consecutive events.
    pub interval_ns: i64,
    /// Events per second of wall time, when availability is paced.
    pub paced_rate: Option<f64>,
    /// Total events, when bounded.
    pub events: Option<u64>,
    /// How many splits a snapshot is cut into.
    pub splits: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Timing {
    /// Reads `rate`, `events`, `start_time` (epoch milliseconds or RFC 3339 … stored as ms),
    /// and `splits`; `state` holds the start time fixed at creation.
    pub(crate) fn from_options(
        options: &mut Options<'_>,
        state: &BTreeMap<String, String>,
        default_rate: f64,
    ) -> Result<Self, ConnectorError> {
        let rate_given = options.get("rate").is_some();
        let rate: f64 = options.parsed("rate", default_rate)?;
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(ConnectorError::InvalidOption {
                option: "rate".to_string(),
                value: rate.to_string(),
                reason: "must be a positive number of events per second".to_string(),
            });
        }
        let events: Option<u64> = match options.get("events") {
            None => None,
            Some(_) => Some(options.parsed("events", 0u64)?),
        };
        let start_ms: i64 = match state.get("start_time_ms").and_then(|s| s.parse().ok()) {
            Some(ms) => ms,
            None => options.parsed("start_time_ms", now_ms())?,
        };
        let default_splits = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let splits: usize = options.parsed("splits", default_splits)?;
        Ok(Timing {
            start_ns: start_ms.saturating_mul(1_000_000),
            interval_ns: (1e9 / rate).round().max(1.0) as i64,
            // With `events` and no `rate`, everything is available at once (a bounded replay).
            paced_rate: if events.is_some() && !rate_given {
                None
            } else {
                Some(rate)
            },
            events,
            splits: splits.clamp(1, 64),
        })
    }

    pub(crate) fn state(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "start_time_ms".to_string(),
            (self.start_ns / 1_000_000).to_string(),
        )])
    }

    /// Events available now.
    pub(crate) fn available(&self) -> u64 {
        let paced = match self.paced_rate {
            None => u64::MAX,
            Some(rate) => {
                let elapsed_s = (now_ms() - self.start_ns / 1_000_000).max(0) as f64 / 1000.0;
                (elapsed_s * rate) as u64
            }
        };
        paced.min(self.events.unwrap_or(u64::MAX))
    }

    /// `[0, end)` cut into splits of about equal size.
    pub(crate) fn splits_of(&self, end: u64) -> Vec<Split> {
        let end = end as i64;
        let count = self.splits as i64;
        (0..count)
            .map(|i| Split {
                partition: i as i32,
                start: end * i / count,
                end: end * (i + 1) / count,
            })
            .filter(|s| s.start < s.end)
            .collect()
    }

    /// Continuous reading sees one partition, the event numbers `[0, end)`.
    pub(crate) fn continuous_split(&self, end: u64) -> Vec<Split> {
        vec![Split {
            partition: 0,
            start: 0,
            end: end.min(i64::MAX as u64) as i64,
        }]
    }

    /// Event time of event `index`.
    pub(crate) fn event_time_ns(&self, index: u64) -> i64 {
        self.start_ns
            .saturating_add(self.interval_ns.saturating_mul(index as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_range_exactly_once() {
        let timing = Timing {
            start_ns: 0,
            interval_ns: 1,
            paced_rate: None,
            events: Some(10),
            splits: 3,
        };
        let splits = timing.splits_of(10);
        assert_eq!(splits.first().unwrap().start, 0);
        assert_eq!(splits.last().unwrap().end, 10);
        for pair in splits.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert!(timing.splits_of(0).is_empty());
    }

    #[test]
    fn random_numbers_depend_on_seed_stream_and_index() {
        assert_eq!(random(1, 2, 3), random(1, 2, 3));
        assert_ne!(random(1, 2, 3), random(2, 2, 3));
        assert_ne!(random(1, 2, 3), random(1, 3, 3));
        assert_ne!(random(1, 2, 3), random(1, 2, 4));
    }
}
