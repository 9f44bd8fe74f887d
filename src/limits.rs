//! Per-user write rate limiting: a token bucket per caller (sustained rate + burst).
//! In-process: with N hub processes a user can reach N times the rate; quotas, which must
//! be exact, are enforced by the database instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use crate::error::ApiError;

/// Buckets kept before idle (full) ones are dropped.
const MAX_TRACKED: usize = 10_000;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// `rate_limited`: every refusal, whether the write came over HTTP or a socket.
    refused: Counter,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket { tokens: burst, updated: now }
    }

    /// Refills at `rate` up to `burst`, then takes `cost` tokens; or answers how many
    /// seconds until they are there.
    fn take(&mut self, rate: f64, burst: f64, cost: f64, now: Instant) -> Result<(), f64> {
        self.tokens = (self.tokens + now.duration_since(self.updated).as_secs_f64() * rate).min(burst);
        self.updated = now;
        let cost = cost.min(burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err((cost - self.tokens) / rate)
        }
    }
}

/// One caller's token bucket, unshared (a socket's own limits): no map, lock or counter of
/// its own (issue 16: memory per idle socket).
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    bucket: Bucket,
}

impl TokenBucket {
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        let (rate, burst) = (rate_per_sec.max(0.001), burst.max(1.0));
        TokenBucket { rate, burst, bucket: Bucket::full(burst, Instant::now()) }
    }

    /// Takes one token; false when none is left.
    pub fn take(&mut self) -> bool {
        self.bucket.take(self.rate, self.burst, 1.0, Instant::now()).is_ok()
    }
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: f64, refused: Counter) -> Self {
        RateLimiter {
            rate: rate_per_sec.max(0.001),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
            refused,
        }
    }

    /// Takes `cost` tokens from `key`'s bucket, or answers 429 with the wait in seconds.
    pub fn check(&self, key: &str, cost: f64) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket::full(self.burst, now));
        bucket.take(self.rate, self.burst, cost, now).map_err(|wait| {
            self.refused.inc();
            ApiError::RateLimited { retry_after_secs: wait.ceil().max(1.0) as u64 }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limiter = RateLimiter::new(1.0, 3.0, Counter::default());
        for _ in 0..3 {
            limiter.check("alice", 1.0).unwrap();
        }
        match limiter.check("alice", 1.0) {
            Err(ApiError::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another user has their own bucket.
        limiter.check("bob", 1.0).unwrap();
    }

    #[test]
    fn a_token_bucket_allows_its_burst_then_refuses() {
        let mut bucket = TokenBucket::new(1.0, 3.0);
        assert!((0..3).all(|_| bucket.take()));
        assert!(!bucket.take());
    }
}
