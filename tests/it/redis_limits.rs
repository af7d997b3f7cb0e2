//! Rate limits shared by the replicas in Redis (issue 21): two sidecars on
//! one Redis enforce one limit between them; a Redis that is stopped, or
//! that accepts connections and never answers, leaves `/auth` answering
//! within its deadline under each replica's own limit (never without one);
//! and a Redis that comes back is used again without a restart.
//!
//! Needs the Redis at `PORTCULLIS_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`) and the `redis-server` binary (for private
//! servers a test stops and starts): without them a test fails when `CI` is
//! set, and elsewhere is skipped and listed in the summary of `make test`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

const COMPONENT: &str = "redis";

/// A connection to a Redis server, or why there is none.
fn connect(url: &str) -> Result<redis::Connection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The Redis every test may share (keys under a prefix of its own).
struct SharedRedis {
    url: String,
    conn: redis::Connection,
}

impl SharedRedis {
    fn get(test: &str) -> Option<SharedRedis> {
        let url = std::env::var("PORTCULLIS_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        match connect(&url) {
            Ok(conn) => {
                component_ran(COMPONENT, test);
                Some(SharedRedis { url, conn })
            }
            Err(e) => {
                component_missing(COMPONENT, test, &format!("Redis at {url}: {e}"));
                None
            }
        }
    }

    /// The keys under `prefix`.
    fn keys(&mut self, prefix: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut self.conn)
            .unwrap()
    }

    /// Milliseconds `key` has to live (-1: no TTL, -2: no key).
    fn pttl(&mut self, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query(&mut self.conn).unwrap()
    }
}

/// The `redis-server` binary for private servers, or None (noted missing).
fn redis_server_binary(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PORTCULLIS_TEST_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
    if path.is_file() {
        component_ran(COMPONENT, test);
        Some(path)
    } else {
        component_missing(
            COMPONENT,
            test,
            &format!("no redis-server at {}", path.display()),
        );
        None
    }
}

/// A redis-server of this test on a port of its own, stopped and started
/// at will (in memory only: a restart starts empty).
struct PrivateRedis {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(binary: PathBuf) -> PrivateRedis {
        let mut redis = PrivateRedis {
            binary,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.resume();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again) on its port; returns once it answers PING.
    fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        let up = poll_until(Duration::from_secs(10), || connect(&url).ok());
        assert!(
            up.is_some(),
            "redis-server on port {} did not answer: {}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
        );
    }

    /// SIGKILL: connections reset, new ones refused.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many keys the server holds.
    fn dbsize(&self) -> i64 {
        let mut conn = connect(&self.url()).unwrap();
        redis::cmd("DBSIZE").query(&mut conn).unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A "Redis" that accepts connections and never answers: what a hung
/// server or a network partition looks like.
struct SilentRedis {
    port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentRedis {
    fn start() -> SilentRedis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // read nothing, answer nothing, close nothing
                keep.lock().unwrap().push(stream);
            }
        });
        SilentRedis { port, held }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

/// A sidecar whose limits live in Redis at `url` under `prefix`.
fn limited(url: &str, prefix: &str, per_ip: u32, timeout_ms: u64) -> Opts {
    Opts::new()
        .set("rate_limit", "per_ip_per_minute", &per_ip.to_string())
        .set_str("rate_limit", "redis_url", url)
        .set_str("rate_limit", "redis_key_prefix", prefix)
        .set("rate_limit", "redis_timeout_ms", &timeout_ms.to_string())
}

fn unique_prefix() -> String {
    format!("portcullis-it:{}:", rand_hex(12))
}

/// A public `/auth` request that costs nothing: a refresh with an unknown
/// token (401) until the per-IP limit answers 429.
fn refresh(sc: &Sidecar) -> Resp {
    let body = json!({"refreshToken": format!("rt_{}", "C".repeat(43))});
    sc.post("/auth/refresh", None, &body)
}

/// The value of one series of the sidecar's `/metrics` (0 when absent).
fn metric(sc: &Sidecar, series: &str) -> f64 {
    let scrape = sc.admin_get("/metrics").body;
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn fallbacks(sc: &Sidecar, reason: &str) -> f64 {
    metric(
        sc,
        &format!("portcullis_rate_limit_redis_fallbacks_total{{reason=\"{reason}\"}}"),
    )
}

fn all_fallbacks(sc: &Sidecar) -> f64 {
    ["error", "timeout", "paused"]
        .iter()
        .map(|r| fallbacks(sc, r))
        .sum()
}

#[test]
fn two_replicas_on_one_redis_share_the_per_ip_limit() {
    let test = "two_replicas_on_one_redis_share_the_per_ip_limit";
    let Some(mut redis) = SharedRedis::get(test) else {
        return;
    };
    let prefix = unique_prefix();
    // 7 a minute: one every 60/7 s, not a whole number of microseconds
    let opts = limited(&redis.url, &prefix, 7, 500);
    let a = Sidecar::start(opts.clone());
    let b = Sidecar::start(opts);

    // seven requests spread over both replicas pass; an 8th is refused by
    // either, until the bucket has refilled one request (60/7 s, rounded up)
    for i in 0..7 {
        let sc = if i % 2 == 0 { &a } else { &b };
        assert_error(&refresh(sc), 401, "INVALID_TOKEN");
    }
    for sc in [&a, &b] {
        let r = refresh(sc);
        assert_error(&r, 429, "RATE_LIMITED");
        let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=9).contains(&secs), "Retry-After {secs}");
    }
    for sc in [&a, &b] {
        assert_eq!(all_fallbacks(sc), 0.0, "{}", sc.tails());
        assert_eq!(metric(sc, "portcullis_rate_limit_redis_up"), 1.0);
    }

    // one key: prefixed, hashed (no address in clear), with a TTL of at most a minute
    let keys = redis.keys(&prefix);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(key.starts_with(&format!("{prefix}ip:")), "{key}");
    assert!(!key.contains("127.0.0.1"), "{key}");
    let ttl = redis.pttl(key);
    assert!((1..=60_000).contains(&ttl), "PTTL {ttl}");
}

#[test]
fn the_login_limit_lives_in_redis_across_a_restart_and_no_email_is_stored_in_clear() {
    let test = "the_login_limit_lives_in_redis_across_a_restart_and_no_email_is_stored_in_clear";
    let Some(mut redis) = SharedRedis::get(test) else {
        return;
    };
    let prefix = unique_prefix();
    let mut sc = Sidecar::start(
        limited(&redis.url, &prefix, 0, 500)
            .set("rate_limit", "login_per_account_per_minute", "2")
            .set("lockout", "max_failures", "100"),
    );
    let user = sc.new_user();
    let wrong = format!("{}-wrong", user.password);
    for _ in 0..2 {
        assert_error(&sc.login(&user.email, &wrong), 401, "INVALID_CREDENTIALS");
    }
    assert_error(&sc.login(&user.email, &user.password), 429, "RATE_LIMITED");
    // password/forgot counts in the same bucket
    let r = sc.post("/auth/password/forgot", None, &json!({"email": user.email}));
    assert_error(&r, 429, "RATE_LIMITED");

    // a restart forgets the memory, not Redis: still refused
    sc.restart();
    assert_error(&sc.login(&user.email, &user.password), 429, "RATE_LIMITED");
    assert_eq!(all_fallbacks(&sc), 0.0, "{}", sc.tails());

    let keys = redis.keys(&prefix);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let local_part = user.email.split('@').next().unwrap();
    for key in &keys {
        assert!(key.starts_with(&format!("{prefix}login:")), "{key}");
        assert!(!key.contains(local_part) && !key.contains('@'), "{key}");
    }
}

#[test]
fn a_stopped_redis_falls_back_to_the_local_limit() {
    let test = "a_stopped_redis_falls_back_to_the_local_limit";
    let Some(binary) = redis_server_binary(test) else {
        return;
    };
    let mut redis = PrivateRedis::start(binary);
    let sc = Sidecar::start(limited(&redis.url(), &unique_prefix(), 3, 50));

    // the first request is counted in Redis (and, along, in the local bucket)
    assert_error(&refresh(&sc), 401, "INVALID_TOKEN");
    assert_eq!(redis.dbsize(), 1);
    assert_eq!(all_fallbacks(&sc), 0.0, "{}", sc.tails());

    redis.kill();
    // /auth still answers, promptly, and the local bucket still holds the limit:
    // two more pass (3 per minute, one taken), the next is refused
    for _ in 0..2 {
        let started = Instant::now();
        assert_error(&refresh(&sc), 401, "INVALID_TOKEN");
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert_error(&refresh(&sc), 429, "RATE_LIMITED");
    assert!(fallbacks(&sc, "error") >= 1.0, "{}", sc.tails());
    assert!(all_fallbacks(&sc) >= 3.0, "{}", sc.tails());
    assert_down_but_ready(&sc);
}

#[test]
fn a_redis_that_never_answers_costs_at_most_the_deadline() {
    // no Redis needed: the "server" is a listener of the test
    let silent = SilentRedis::start();
    // the default deadline (5 ms)
    let sc = Sidecar::start(
        Opts::new()
            .set("rate_limit", "per_ip_per_minute", "8")
            .set_str("rate_limit", "redis_url", &silent.url()),
    );
    let mut slowest = Duration::ZERO;
    let mut timed = |f: &dyn Fn() -> Resp| {
        let started = Instant::now();
        let r = f();
        slowest = slowest.max(started.elapsed());
        r
    };
    let email = unique_email("silent");
    let password = strong_password();
    let r = timed(&|| sc.register(&email, &password));
    assert_status(&r, 201);
    let r = timed(&|| sc.login(&email, &password));
    assert_status(&r, 200);
    // a third failure in a row, Redis silent for over 250 ms: it is down,
    // and the next requests do not wait for it
    thread::sleep(Duration::from_millis(300));
    for _ in 0..6 {
        let r = timed(&|| refresh(&sc));
        assert_error(&r, 401, "INVALID_TOKEN");
    }
    assert!(fallbacks(&sc, "paused") >= 1.0, "{}", sc.tails());
    // the local limit applies: 8 per minute
    let r = timed(&|| refresh(&sc));
    assert_error(&r, 429, "RATE_LIMITED");
    // past the pause Redis is tried again: still within the deadline
    thread::sleep(Duration::from_millis(1200));
    let r = timed(&|| refresh(&sc));
    assert_error(&r, 429, "RATE_LIMITED");
    eprintln!("slowest answer with a silent Redis: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(700),
        "an answer took {slowest:?}"
    );
    assert!(silent.connections() >= 1, "the sidecar never tried Redis");
    assert!(fallbacks(&sc, "timeout") >= 1.0, "{}", sc.tails());
    assert!(all_fallbacks(&sc) >= 10.0, "{}", sc.tails());
    assert_down_but_ready(&sc);
}

/// Redis is reported down (the gauge, the log), and readiness does not
/// depend on it.
fn assert_down_but_ready(sc: &Sidecar) {
    assert_eq!(metric(sc, "portcullis_rate_limit_redis_up"), 0.0);
    assert_eq!(sc.admin_get("/readyz").status, 200);
    assert!(
        sc.logs().contains("rate limits: Redis failed"),
        "{}",
        sc.tails()
    );
}

#[test]
fn a_redis_that_comes_back_is_used_again_without_a_restart() {
    let test = "a_redis_that_comes_back_is_used_again_without_a_restart";
    let Some(binary) = redis_server_binary(test) else {
        return;
    };
    let mut redis = PrivateRedis::start(binary);
    let sc = Sidecar::start(limited(&redis.url(), &unique_prefix(), 1000, 200));
    assert_error(&refresh(&sc), 401, "INVALID_TOKEN");
    assert_eq!(redis.dbsize(), 1);

    redis.kill();
    assert_error(&refresh(&sc), 401, "INVALID_TOKEN");
    assert!(all_fallbacks(&sc) >= 1.0, "{}", sc.tails());

    // back on the same port, empty (and without the script): the next
    // requests past the pause count in it again
    redis.resume();
    assert_eq!(redis.dbsize(), 0);
    let back = poll_until(Duration::from_secs(15), || {
        assert_error(&refresh(&sc), 401, "INVALID_TOKEN");
        (redis.dbsize() >= 1).then_some(())
    });
    assert!(
        back.is_some(),
        "the sidecar did not return to Redis within 15 s\n{}",
        sc.tails()
    );
    assert_eq!(metric(&sc, "portcullis_rate_limit_redis_up"), 1.0);
    assert!(
        sc.logs().contains("rate limits: Redis answers again"),
        "{}",
        sc.tails()
    );
}
