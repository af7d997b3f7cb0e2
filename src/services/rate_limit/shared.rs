//! Rate limits shared by every replica through Redis (`rate_limit.redis_url`).
//!
//! Each check is one round trip: a Lua script ([`GCRA`], run with EVALSHA,
//! loaded again after a Redis restart) that takes one request from the key's
//! bucket atomically, on Redis' clock, and gives the key a TTL (the time
//! until the bucket is full again, at most a minute). Key names are
//! `redis_key_prefix` + the limit's name + a SHA-256 of the name and the key,
//! so neither an email nor an IP address is stored in clear.
//!
//! Redis trouble never takes `/auth` down nor holds it up:
//! - every check has a deadline (`redis_timeout_ms`), the wait for a
//!   connection included; the connection is made on first use, in the
//!   background, so a Redis that is down does not hold up the start;
//! - on an error or at the deadline the check returns `None` and the caller
//!   counts the request in its own in-memory bucket (fail-open to the local
//!   limit);
//! - a lost connection (refused, reset, closed), or
//!   [`FAILURES_BEFORE_PAUSE`] failures in a row with no answer for
//!   [`SILENCE_BEFORE_PAUSE`], mean Redis is down: the
//!   connection is dropped and Redis is left alone for
//!   [`PAUSE_AFTER_FAILURE`], so a dead or hung Redis costs one deadline per
//!   second, not one per request. A lone late answer (a busy Redis, a busy
//!   replica) only sends that one request to the local bucket;
//! - every such request counts in `portcullis_rate_limit_redis_fallbacks_total`,
//!   a warning is logged at most every [`WARN_EVERY`], and the first answer
//!   after the pause puts the limits back on Redis by itself.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use tokio::sync::watch;

use crate::config::{RateLimitSection, mask_url};
use crate::crypto;
use crate::metrics;

/// When Redis is down it is not asked again for this long.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Failures in a row (timeouts, error answers) that mean Redis is down,
/// when it has not answered for [`SILENCE_BEFORE_PAUSE`] either (concurrent
/// checks caught by one hiccup fail together); a lost connection means it at
/// once.
pub const FAILURES_BEFORE_PAUSE: u32 = 3;
pub const SILENCE_BEFORE_PAUSE: Duration = Duration::from_millis(250);
/// A failing Redis is logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(30);
/// One connection attempt (TCP and the client's handshake) gives up after
/// this long; a check waits for it at most its own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The connection's own deadline for an answer is this much past the
/// per-check one: a backstop that clears commands nobody waits for any more.
const RESPONSE_BACKSTOP: Duration = Duration::from_secs(1);

/// The bucket of `local.rs` kept in Redis as one number (GCRA): the
/// "theoretical arrival time" (TAT), in microseconds of Redis' clock. The
/// bucket is full when TAT <= now and empty when TAT >= now + 60 s; a
/// request moves TAT one interval (60 s / capacity) later. `KEYS[1]` is the
/// bucket, `ARGV[1]` its capacity (requests per minute). Answers `{1, 0}`
/// when the request is allowed, `{0, seconds to wait}` when it is not.
pub const GCRA: &str = r#"
local capacity = tonumber(ARGV[1])
local period = 60000000
local interval = period / capacity
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local ahead = tat + interval - now
-- half an interval of slack absorbs the rounding of interval
if ahead > period + interval / 2 then
  return {0, math.ceil((ahead - period) / 1000000)}
end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil(ahead / 1000))
return {1, 0}
"#;

/// Why a check was counted locally: the `reason` label of the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Redis answered with an error, refused the connection or closed it.
    Error,
    /// No answer (or no connection) within `redis_timeout_ms`.
    Timeout,
    /// Not asked: within [`PAUSE_AFTER_FAILURE`] of Redis going down.
    Paused,
}

impl Fallback {
    pub const ALL: [Fallback; 3] = [Fallback::Error, Fallback::Timeout, Fallback::Paused];

    pub fn label(self) -> &'static str {
        match self {
            Fallback::Error => "error",
            Fallback::Timeout => "timeout",
            Fallback::Paused => "paused",
        }
    }
}

/// The connection, as every check sees it.
#[derive(Clone)]
enum Link {
    /// None yet, or dropped after a failure: the next check makes one.
    Down,
    Connecting,
    /// A connection and its generation (so that a failed check drops the
    /// connection it used, not a newer one).
    Up(u64, MultiplexedConnection),
    /// The last attempt failed, and why.
    Failed(String),
}

/// What the log says about an outage.
#[derive(Default)]
struct Outage {
    last_warning: Option<Instant>,
    /// The current outage was logged (so its end is logged too).
    warned: bool,
    /// Checks counted locally since the last line about it.
    fallbacks: u64,
}

/// The shared limits: one Redis connection for every [`super::RateLimiter`].
pub struct SharedLimits {
    client: Client,
    /// `redis_url` with its password masked, for the log.
    url: String,
    prefix: String,
    timeout: Duration,
    script: Script,
    link: watch::Sender<Link>,
    generation: AtomicU64,
    /// Milliseconds since `epoch` until which Redis is left alone.
    paused_until: AtomicU64,
    epoch: Instant,
    /// Failures since the last answer.
    failures: AtomicU32,
    /// Milliseconds since `epoch` of the last answer.
    last_answer: AtomicU64,
    /// Redis is down (paused) since the last answer.
    failing: AtomicBool,
    outage: Mutex<Outage>,
}

impl SharedLimits {
    /// None without `redis_url`; an error when it does not parse. Nothing is
    /// connected yet: the first check connects.
    pub fn new(config: &RateLimitSection) -> Result<Option<Arc<SharedLimits>>, String> {
        let url = config.redis_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let client = Client::open(url)
            .map_err(|e| format!("rate_limit.redis_url: `{}`: {e}", mask_url(url)))?;
        Ok(Some(Arc::new(SharedLimits {
            client,
            url: mask_url(url),
            prefix: config.redis_key_prefix.clone(),
            timeout: Duration::from_millis(config.redis_timeout_ms),
            script: Script::new(GCRA),
            link: watch::Sender::new(Link::Down),
            generation: AtomicU64::new(0),
            paused_until: AtomicU64::new(0),
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            last_answer: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            outage: Mutex::new(Outage::default()),
        })))
    }

    /// The Redis key of `key` under the limit `limit` (`ip`, `login`).
    pub fn redis_key(&self, limit: &str, key: &str) -> String {
        let digest = crypto::token_hash(&format!("{limit}\n{key}"));
        format!("{}{limit}:{digest}", self.prefix)
    }

    /// Takes one request from `key`'s shared bucket of `per_minute` (> 0):
    /// `Some(Ok(()))` allowed, `Some(Err(seconds))` refused for that long,
    /// `None` when Redis failed, was late or is paused (counted and logged
    /// here; the caller uses its local bucket).
    pub async fn take(
        self: &Arc<Self>,
        limit: &str,
        key: &str,
        per_minute: u32,
    ) -> Option<Result<(), u64>> {
        if self.paused() {
            self.fell_back(Fallback::Paused);
            return None;
        }
        let started = Instant::now();
        let redis_key = self.redis_key(limit, key);
        // the generation of the connection the call used, read after a timeout
        let used = AtomicU64::new(0);
        let call = async {
            let (generation, mut conn) = match self.connection().await {
                Ok(link) => link,
                Err(why) => return Err((0, why, true)),
            };
            used.store(generation, Ordering::Relaxed);
            self.script
                .key(&redis_key)
                .arg(per_minute)
                .invoke_async::<(i64, i64)>(&mut conn)
                .await
                .map_err(|e| {
                    let lost = e.is_io_error() || e.is_unrecoverable_error();
                    (generation, e.to_string(), lost)
                })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, retry_after))) => {
                metrics::RATE_LIMIT_REDIS_SECONDS.observe(started.elapsed().as_secs_f64());
                self.answered();
                Some(if allowed == 1 {
                    Ok(())
                } else {
                    Err(retry_after.max(1) as u64)
                })
            }
            Ok(Err((generation, why, lost))) => {
                self.failed(Fallback::Error, generation, &why, lost);
                None
            }
            Err(_) => {
                let why = format!("no answer within {} ms", self.timeout.as_millis());
                self.failed(Fallback::Timeout, used.load(Ordering::Relaxed), &why, false);
                None
            }
        }
    }

    /// The current connection, made (in the background) when there is none.
    async fn connection(self: &Arc<Self>) -> Result<(u64, MultiplexedConnection), String> {
        if let Link::Up(generation, conn) = &*self.link.borrow() {
            return Ok((*generation, conn.clone()));
        }
        let mut link = self.link.subscribe();
        let mut waited = false;
        loop {
            let now = link.borrow_and_update().clone();
            match now {
                Link::Up(generation, conn) => return Ok((generation, conn)),
                Link::Failed(why) if waited => return Err(why),
                Link::Down | Link::Failed(_) => self.connect_in_background(),
                Link::Connecting => {}
            }
            waited = true;
            if link.changed().await.is_err() {
                return Err("the connection state is gone".into());
            }
        }
    }

    /// Starts one connection attempt unless one is under way.
    fn connect_in_background(self: &Arc<Self>) {
        let start = self.link.send_if_modified(|link| {
            if matches!(link, Link::Down | Link::Failed(_)) {
                *link = Link::Connecting;
                true
            } else {
                false
            }
        });
        if !start {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(this.timeout + RESPONSE_BACKSTOP));
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                this.client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await;
            match attempt {
                Ok(Ok(conn)) => {
                    let generation = this.generation.fetch_add(1, Ordering::Relaxed) + 1;
                    this.link.send_replace(Link::Up(generation, conn));
                }
                Ok(Err(e)) => this.connect_failed(format!("cannot connect: {e}")),
                Err(_) => this.connect_failed(format!(
                    "no connection within {} ms",
                    CONNECT_TIMEOUT.as_millis()
                )),
            }
        });
    }

    fn connect_failed(&self, why: String) {
        self.trouble(&why);
        self.link.send_replace(Link::Failed(why));
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn paused(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
            && self.now_ms() < self.paused_until.load(Ordering::Relaxed)
    }

    /// A check failed: count it; when the connection is lost or too many
    /// failed in a row, drop the connection it used (unless it was replaced
    /// meanwhile), pause and maybe log.
    fn failed(&self, reason: Fallback, generation: u64, why: &str, lost: bool) {
        self.fell_back(reason);
        let in_a_row = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let silent_for = self
            .now_ms()
            .saturating_sub(self.last_answer.load(Ordering::Relaxed));
        if !lost
            && (in_a_row < FAILURES_BEFORE_PAUSE
                || silent_for < SILENCE_BEFORE_PAUSE.as_millis() as u64)
        {
            return;
        }
        if generation != 0 {
            self.link.send_if_modified(|link| {
                if matches!(link, Link::Up(current, _) if *current == generation) {
                    *link = Link::Down;
                    true
                } else {
                    false
                }
            });
        }
        self.trouble(why);
    }

    /// Redis is down: leave it alone for a while, and say so (at most every
    /// [`WARN_EVERY`]).
    fn trouble(&self, why: &str) {
        metrics::RATE_LIMIT_REDIS_UP.set(0);
        let until = self.now_ms() + PAUSE_AFTER_FAILURE.as_millis() as u64;
        self.paused_until.store(until, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        let Ok(mut outage) = self.outage.lock() else {
            return;
        };
        if outage
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY)
        {
            tracing::warn!(
                redis = %self.url,
                error = why,
                fallbacks = outage.fallbacks,
                "rate limits: Redis failed; counting in this replica's memory (its own limits) and trying Redis again every second"
            );
            outage.last_warning = Some(Instant::now());
            outage.warned = true;
            outage.fallbacks = 0;
        }
    }

    fn fell_back(&self, reason: Fallback) {
        metrics::rate_limit_redis_fallback(reason.label());
        if let Ok(mut outage) = self.outage.lock() {
            outage.fallbacks += 1;
        }
    }

    /// Redis answered: after an outage, the limits are shared again.
    fn answered(&self) {
        self.last_answer.store(self.now_ms(), Ordering::Relaxed);
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.failing.load(Ordering::Relaxed)
            && self.failing.swap(false, Ordering::Relaxed)
            && let Ok(mut outage) = self.outage.lock()
            && outage.warned
        {
            tracing::info!(
                redis = %self.url,
                fallbacks = outage.fallbacks,
                "rate limits: Redis answers again; the limits are shared again"
            );
            outage.warned = false;
            outage.fallbacks = 0;
        }
        metrics::RATE_LIMIT_REDIS_UP.set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: &str, timeout_ms: u64) -> RateLimitSection {
        RateLimitSection {
            redis_url: url.into(),
            redis_timeout_ms: timeout_ms,
            ..RateLimitSection::default()
        }
    }

    #[test]
    fn no_url_no_shared_limits_and_a_bad_url_is_refused() {
        assert!(SharedLimits::new(&section("", 5)).unwrap().is_none());
        assert!(SharedLimits::new(&section("not a url", 5)).is_err());
    }

    #[test]
    fn every_reason_is_shown_from_the_start() {
        let labels = Fallback::ALL.map(Fallback::label);
        assert_eq!(labels, metrics::RATE_LIMIT_FALLBACK_REASONS);
    }

    #[test]
    fn keys_are_prefixed_and_hashed() {
        let shared = SharedLimits::new(&section("redis://127.0.0.1:1/", 5))
            .unwrap()
            .unwrap();
        let key = shared.redis_key("login", "tenant:alice@example.com");
        assert!(key.starts_with("portcullis:rl:login:"), "{key}");
        assert!(!key.contains("alice") && !key.contains('@'), "{key}");
        assert_ne!(key, shared.redis_key("ip", "tenant:alice@example.com"));
        assert_eq!(key, shared.redis_key("login", "tenant:alice@example.com"));
    }

    #[tokio::test]
    async fn a_redis_nobody_listens_on_falls_back_at_once_then_pauses() {
        // a port that was free a moment ago: the connection is refused
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let shared = SharedLimits::new(&section(&format!("redis://127.0.0.1:{port}/"), 200))
            .unwrap()
            .unwrap();
        let started = Instant::now();
        assert_eq!(shared.take("ip", "1.2.3.4", 5).await, None);
        assert!(started.elapsed() < Duration::from_millis(250));
        assert!(shared.paused());
        let started = Instant::now();
        assert_eq!(shared.take("ip", "1.2.3.4", 5).await, None);
        assert!(
            started.elapsed() < Duration::from_millis(20),
            "a paused Redis is not asked"
        );
    }
}
