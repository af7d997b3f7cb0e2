//! The in-memory token buckets: what each replica enforces on its own
//! without `rate_limit.redis_url`, and its fallback when Redis fails. A
//! bucket holds `per_minute` requests and refills continuously (no fixed
//! wall-clock minutes); idle buckets are forgotten after two minutes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct LocalBuckets {
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

impl LocalBuckets {
    pub fn new() -> Self {
        LocalBuckets {
            buckets: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
        }
    }

    /// Takes one request from `key`'s bucket of `per_minute` (> 0); when it
    /// is empty, the seconds until the next request is allowed.
    pub fn take(&self, key: &str, per_minute: u32) -> Result<(), u64> {
        let capacity = per_minute as f64;
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
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

impl Default for LocalBuckets {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_budget_then_refuses_with_retry_after() {
        let buckets = LocalBuckets::new();
        for _ in 0..3 {
            assert!(buckets.take("a", 3).is_ok());
        }
        match buckets.take("a", 3) {
            Err(retry_after) => assert!((1..=20).contains(&retry_after), "{retry_after}"),
            Ok(()) => panic!("the fourth request passed"),
        }
        assert!(buckets.take("b", 3).is_ok(), "buckets are per key");
    }
}
