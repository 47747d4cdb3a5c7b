//! Per-caller token buckets for the signing API (pure: the caller passes the time).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Token buckets keyed by caller (a local workload or a pod), refilled continuously.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    /// `burst` requests at once, then `per_second` on average.
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self { burst: f64::from(burst.max(1)), per_second: per_second.max(0.0), buckets: HashMap::new() }
    }

    /// Takes one token for `key`; `Err(wait)` says how long until one is available.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        self.refill(key, now)?;
        if let Some((tokens, _)) = self.buckets.get_mut(key) {
            *tokens -= 1.0;
        }
        Ok(())
    }

    /// Whether `key` has a token, without taking it (`Err(wait)` as for [`check`](Self::check)).
    pub fn peek(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        self.refill(key, now)
    }

    fn refill(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() > 100_000 {
            // Bound memory: forget callers whose bucket is full again.
            let (burst, rate) = (self.burst, self.per_second);
            self.buckets.retain(|_, (tokens, at)| *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = self.buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            Ok(())
        } else if self.per_second > 0.0 {
            // A tiny rate would overflow a Duration: cap the wait at a day.
            Err(Duration::try_from_secs_f64((1.0 - *tokens) / self.per_second).unwrap_or(Duration::MAX).min(Duration::from_secs(86_400)))
        } else {
            Err(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_caller() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(3, 1.0);
        for _ in 0..3 {
            assert_eq!(rl.check("a", t0), Ok(()));
        }
        let wait = rl.check("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(rl.check("b", t0), Ok(()), "another caller has its own bucket");
        assert_eq!(rl.check("a", t0 + Duration::from_secs(1)), Ok(()), "one token back after a second");
        assert!(rl.check("a", t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn peek_does_not_take_a_token() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1, 1.0);
        assert_eq!(rl.peek("a", t0), Ok(()));
        assert_eq!(rl.peek("a", t0), Ok(()), "peeking twice leaves the token");
        assert_eq!(rl.check("a", t0), Ok(()));
        assert!(rl.peek("a", t0).is_err(), "the only token is gone");
    }

    #[test]
    fn a_tiny_rate_waits_long_but_never_panics() {
        let mut l = RateLimiter::new(1, 1e-300);
        let now = Instant::now();
        l.check("a", now).unwrap();
        assert_eq!(l.check("a", now), Err(Duration::from_secs(86_400)));
    }
}
