//! Rate limits on public `/auth` routes (SPEC §10): a token bucket per client
//! IP across those routes and one per (tenant, email) for logins. Buckets
//! refill continuously (no fixed wall-clock minutes) and live in memory, so
//! with several replicas each one enforces its own limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::error::Error;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    per_minute: u32,
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

impl RateLimiter {
    /// `per_minute = 0` turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
        }
    }

    /// Takes one request from `key`'s bucket; 429 `RATE_LIMITED` with the
    /// seconds until the next one is allowed.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = self.per_minute as f64;
        let rate = capacity / 60.0;
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: capacity,
                last: Instant::now(),
            }))
        });
        let Ok(mut b) = bucket.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let retry_after = ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64;
            Err(Error::RateLimited { retry_after })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_budget_then_refuses_with_retry_after() {
        let rl = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(rl.check("a").is_ok());
        }
        match rl.check("a") {
            Err(Error::RateLimited { retry_after }) => assert!((1..=20).contains(&retry_after)),
            other => panic!("{other:?}"),
        }
        assert!(rl.check("b").is_ok(), "buckets are per key");
        assert!(RateLimiter::new(0).check("a").is_ok());
    }
}
