//! Cost of a TOTP step-up check on the proxy path (issue 3): an uncached
//! check (HMAC-SHA1 over up to three time steps, totp-rs) against a cached
//! one (a moka lookup of the (user, code) pair, what a burst of requests
//! with one code pays). Run: `cargo bench --bench step_up`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use portcullis::crypto::totp;

fn per_op(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / iterations as f64
}

fn main() {
    let secret = totp::new_secret();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // a wrong code walks all three steps: the worst case of an uncached check
    let uncached_wrong = per_op(200_000, || {
        black_box(totp::check(black_box(&secret), black_box("000000"), now, 1));
    });
    let cache: Cache<(uuid::Uuid, String), u64> = Cache::builder()
        .max_capacity(100_000)
        .time_to_live(Duration::from_secs(120))
        .build();
    let user = uuid::Uuid::new_v4();
    cache.insert((user, "123456".to_string()), now / 30);
    let cached = per_op(1_000_000, || {
        black_box(cache.get(&(black_box(user), black_box("123456".to_string()))));
    });
    println!("step-up check, uncached (3 HMAC-SHA1 steps): {uncached_wrong:.2} µs");
    println!("step-up check, cached (moka hit):            {cached:.2} µs");
}
