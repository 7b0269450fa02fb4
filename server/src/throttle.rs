//! Failed logins are answered late, later with each failure from the same address, so that
//! guessing passwords is slow (`auth_failure_delay`). Shared by pgwire and Flight.
//!
//! The first failure from an address waits the base delay before its error is sent; each
//! further failure from that address within [`FORGET_AFTER`] of the previous one doubles it,
//! up to [`DOUBLINGS_MAX`] doublings. A successful login from the address forgets its failures.
//! The waiting connection keeps its place under `max_connections`, so one address cannot try
//! more than that many passwords at once either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A failure this long after the previous one from the same address starts again at the base.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
/// The delay doubles at most this many times (32 × the base).
pub const DOUBLINGS_MAX: u32 = 5;
/// Addresses remembered at once; beyond, the longest quiet is forgotten first.
const ADDRESSES_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failed logins per client address.
#[derive(Debug)]
pub struct LoginThrottle {
    base: Duration,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginThrottle {
    /// `base`: the delay after a first failure; zero turns the delay off.
    pub fn new(base: Duration) -> Self {
        Self {
            base,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failed login from `ip`; returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        self.failed_at(ip, Instant::now())
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= ADDRESSES_MAX && !failures.contains_key(&ip) {
            failures.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if failures.len() >= ADDRESSES_MAX {
                if let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a) {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        self.base * 2u32.pow((entry.count - 1).min(DOUBLINGS_MAX))
    }

    /// Waits as long as a failed login from `ip` must wait, recording the failure.
    pub async fn delay_failure(&self, ip: IpAddr) {
        let delay = self.failed(ip);
        if !delay.is_zero() {
            tracing::info!(%ip, delay_ms = delay.as_millis() as u64, "failed login: answer delayed");
            tokio::time::sleep(delay).await;
        }
    }

    /// A successful login from `ip`: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_address_up_to_the_cap_and_reset() {
        let throttle = LoginThrottle::new(Duration::from_millis(100));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(throttle.failed_at(a, t0)), 100);
        assert_eq!(ms(throttle.failed_at(a, t0)), 200);
        assert_eq!(ms(throttle.failed_at(a, t0)), 400);
        // Another address has its own count.
        assert_eq!(ms(throttle.failed_at(b, t0)), 100);
        for _ in 0..10 {
            throttle.failed_at(a, t0);
        }
        assert_eq!(ms(throttle.failed_at(a, t0)), 3200);
        // Quiet for a while: back to the base.
        assert_eq!(ms(throttle.failed_at(a, t0 + FORGET_AFTER)), 100);
        assert_eq!(ms(throttle.failed_at(a, t0 + FORGET_AFTER)), 200);
        // A success forgets.
        throttle.succeeded(a);
        assert_eq!(ms(throttle.failed_at(a, t0 + FORGET_AFTER)), 100);
        // Zero: no delay.
        assert!(LoginThrottle::new(Duration::ZERO).failed(a).is_zero());
    }

    #[test]
    fn the_map_stays_bounded() {
        let throttle = LoginThrottle::new(Duration::from_millis(1));
        let t0 = Instant::now();
        for i in 0..(ADDRESSES_MAX as u32 + 50) {
            throttle.failed_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(throttle.failures.lock().unwrap().len() <= ADDRESSES_MAX);
    }
}
