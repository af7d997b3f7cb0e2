//! Every failure answer of SPEC end to end, on a real sidecar on loopback
//! ports: 503 `BUSY` (a login storm against a queue of one), 503
//! `STORE_UNAVAILABLE` (SQLite locked by another process; PostgreSQL down
//! and PostgreSQL partitioned behind a [`Forwarder`] the test controls), 502
//! `UPSTREAM_UNAVAILABLE` and 504 `UPSTREAM_TIMEOUT`, `/readyz` 503 through
//! the SIGTERM drain with the admin listener closing last, a taken port ending
//! the process, and `proxy.trusted_proxies` with the client-address walk.
//!
//! The store tests check what an operator relies on: the answer comes within
//! `database.timeout_ms`, `/readyz` says 503, credentials already cached keep
//! working on the proxy path, the request refused with 503 lost nothing (its
//! refresh token still works afterwards), and the sidecar recovers by itself.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::pg::{Forwarder, Link, TestDb};

/// `database.timeout_ms` in the store tests.
const STORE_DEADLINE: Duration = Duration::from_millis(1000);
/// What an answer may take beyond the deadline (scheduling on a busy 2-core machine).
const SLACK: Duration = Duration::from_millis(1500);

fn timed(f: impl FnOnce() -> Resp) -> (Resp, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

fn refresh(sc: &Sidecar, token: &str) -> Resp {
    sc.post("/auth/refresh", None, &json!({ "refreshToken": token }))
}

fn readyz(sc: &Sidecar) -> u16 {
    sc.admin_get("/readyz").status
}

/// Polls `/readyz` until it answers `status` (`within` at most).
fn wait_readyz(sc: &Sidecar, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    poll_until(within, || (readyz(sc) == status).then_some(())).unwrap_or_else(|| {
        panic!(
            "/readyz did not answer {status} within {within:?}\n{}",
            sc.tails()
        )
    });
    start.elapsed()
}

// --------------------------------------------------------------------------
// 503 BUSY
// --------------------------------------------------------------------------

#[test]
fn a_login_storm_against_a_queue_of_one_gets_503_busy_and_the_proxy_keeps_serving() {
    let sc = Sidecar::start(
        Opts::new()
            .set("passwords", "workers", "1")
            .set("passwords", "queue_capacity", "1")
            .set("passwords", "queue_timeout_ms", "5000"),
    );
    let user = sc.new_user();
    // the credential is cached: the proxy path needs no hashing
    assert_status(&sc.get("/api/warm", Some(&user.access)), 200);

    let url = sc.url("/auth/login");
    let body = json!({"email": user.email, "password": user.password});
    let mut busy = None;
    let mut served = 0;
    for _round in 0..5 {
        const STORM: usize = 12;
        let barrier = Arc::new(Barrier::new(STORM));
        let storm: Vec<_> = (0..STORM)
            .map(|_| {
                let (url, body, barrier) = (url.clone(), body.clone(), barrier.clone());
                thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .no_proxy()
                        .timeout(HTTP_TIMEOUT)
                        .build()
                        .unwrap();
                    barrier.wait();
                    let r = client.post(&url).json(&body).send().unwrap();
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    (status, retry_after, r.text().unwrap_or_default())
                })
            })
            .collect();
        // while the storm runs, the proxy path answers from the cache
        let (during, took) = timed(|| sc.get("/api/during-storm", Some(&user.access)));
        assert_status(&during, 200);
        assert!(took < Duration::from_secs(1), "proxied call took {took:?}");
        for h in storm {
            let (status, retry_after, text) = h.join().unwrap();
            match status {
                200 => served += 1,
                503 => busy = Some((retry_after, text)),
                other => panic!("login in the storm answered {other}: {text}"),
            }
        }
        if busy.is_some() && served > 0 {
            break;
        }
    }
    let (retry_after, text) = busy.expect("no login of the storm answered 503 BUSY");
    assert!(served > 0, "every login of the storm was refused");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "BUSY", "{text}");
    assert!(
        v["error"]["requestId"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let secs: u64 = retry_after
        .expect("503 BUSY without Retry-After")
        .parse()
        .unwrap();
    assert!(secs >= 1);
    // after the storm a login goes through again
    assert_status(&sc.login(&user.email, &user.password), 200);
}

// --------------------------------------------------------------------------
// 503 STORE_UNAVAILABLE
// --------------------------------------------------------------------------

/// The database URL of `db` with the host and port of `fwd`.
fn url_via(db: &TestDb, fwd: &Forwarder) -> String {
    let cfg: tokio_postgres::Config = db.url.parse().unwrap();
    let user = cfg.get_user().unwrap_or("postgres");
    let auth = match cfg.get_password() {
        Some(p) => format!("{user}:{}", String::from_utf8_lossy(p)),
        None => user.to_string(),
    };
    format!("postgres://{auth}@{}/{}", fwd.address(), db.name)
}

/// The PostgreSQL host:port of `db`.
fn postgres_address(db: &TestDb) -> String {
    let cfg: tokio_postgres::Config = db.url.parse().unwrap();
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    format!(
        "{host}:{}",
        cfg.get_ports().first().copied().unwrap_or(5432)
    )
}

/// A sidecar on `db` through a forwarder, with a logged-in user whose access
/// token is in the cache.
fn sidecar_behind_forwarder(db: &TestDb) -> (Forwarder, Sidecar, User) {
    let fwd = Forwarder::start(&postgres_address(db));
    let sc = Sidecar::start(
        Opts::new()
            .set_str("database", "url", &url_via(db, &fwd))
            .set(
                "database",
                "timeout_ms",
                &STORE_DEADLINE.as_millis().to_string(),
            ),
    );
    let user = sc.new_user();
    assert_status(&sc.get("/api/warm", Some(&user.access)), 200);
    (fwd, sc, user)
}

/// What must hold while the store cannot answer, and after it can again.
fn store_outage_is_honest(fwd: &Forwarder, sc: &Sidecar, user: &User, outage: Link) {
    fwd.set(outage);
    let (r, took) = timed(|| sc.login(&user.email, &user.password));
    assert_error(&r, 503, "STORE_UNAVAILABLE");
    assert!(
        took < STORE_DEADLINE + SLACK,
        "login answered after {took:?}"
    );
    let (r, took) = timed(|| refresh(sc, &user.refresh));
    assert_error(&r, 503, "STORE_UNAVAILABLE");
    assert!(
        took < STORE_DEADLINE + SLACK,
        "refresh answered after {took:?}"
    );
    // a credential the proxy already verified needs no store
    let (r, took) = timed(|| sc.get("/api/cached", Some(&user.access)));
    assert_status(&r, 200);
    assert!(
        took < Duration::from_millis(500),
        "cached call took {took:?}"
    );
    wait_readyz(sc, 503, STORE_DEADLINE + SLACK);
    assert_status(&sc.admin_get("/healthz"), 200);
    let metrics = sc.admin_get("/metrics").body;
    assert!(
        metrics.contains("portcullis_store_timeouts_total") || outage == Link::Down,
        "no store timeout counted"
    );

    fwd.set(Link::Open);
    let recovered = wait_readyz(sc, 200, Duration::from_secs(15));
    eprintln!("{outage:?}: /readyz 200 again {recovered:?} after the link opened");
    // the refresh refused with 503 lost nothing: the same token still rotates
    let r = refresh(sc, &user.refresh);
    let tokens = assert_status(&r, 200);
    check_token_response(&tokens);
    assert_error(&refresh(sc, &user.refresh), 401, "REFRESH_TOKEN_REUSED");
    assert_status(&sc.login(&user.email, &user.password), 200);
}

#[test]
fn postgres_partitioned_answers_503_within_the_deadline_and_recovers_without_a_restart() {
    let test = "postgres_partitioned_answers_503_within_the_deadline";
    let Some(db) = TestDb::create("postgres-faults", test) else {
        return;
    };
    let (fwd, sc, user) = sidecar_behind_forwarder(&db);
    store_outage_is_honest(&fwd, &sc, &user, Link::Partitioned);
    assert!(
        sc.admin_get("/metrics")
            .body
            .lines()
            .any(|l| l.starts_with("portcullis_store_timeouts_total ") && !l.ends_with(" 0")),
        "a partition must be counted in portcullis_store_timeouts_total"
    );
}

#[test]
fn postgres_down_answers_503_and_recovers_without_a_restart() {
    let test = "postgres_down_answers_503_and_recovers";
    let Some(db) = TestDb::create("postgres-faults", test) else {
        return;
    };
    let (fwd, sc, user) = sidecar_behind_forwarder(&db);
    store_outage_is_honest(&fwd, &sc, &user, Link::Down);
}

#[test]
fn sqlite_locked_by_another_process_answers_503_at_the_deadline_and_loses_nothing() {
    let sc = Sidecar::start(Opts::new().set(
        "database",
        "timeout_ms",
        &STORE_DEADLINE.as_millis().to_string(),
    ));
    let user = sc.new_user();
    assert_status(&sc.get("/api/warm", Some(&user.access)), 200);

    // another process (a backup, the CLI) holds the write lock
    let other = rusqlite::Connection::open(&sc.db_path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (r, took) = timed(|| refresh(&sc, &user.refresh));
    assert_error(&r, 503, "STORE_UNAVAILABLE");
    assert!(
        took >= STORE_DEADLINE && took < STORE_DEADLINE + SLACK,
        "refresh answered after {took:?}"
    );
    assert_status(&sc.get("/api/cached", Some(&user.access)), 200);
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);

    // the refused rotation rolled back: the token is still the live one
    let tokens = assert_status(&refresh(&sc, &user.refresh), 200);
    check_token_response(&tokens);
}

// --------------------------------------------------------------------------
// 502 and 504 from the upstream
// --------------------------------------------------------------------------

/// A TCP server that accepts connections and never answers.
fn silent_upstream() -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut s: TcpStream = stream;
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = s.read(&mut buf);
            held.push(s);
            if held.len() > 8 {
                return;
            }
        }
    });
    (addr, handle)
}

#[test]
fn an_upstream_that_never_answers_gives_504_upstream_timeout() {
    let (addr, _upstream) = silent_upstream();
    let sc = Sidecar::start(Opts::new().upstream(&addr.to_string()).set(
        "upstream",
        "read_timeout_ms",
        "500",
    ));
    let (r, took) = timed(|| sc.get("/public/stuck", None));
    // the error shape, with X-Request-Id equal to requestId
    assert_error(&r, 504, "UPSTREAM_TIMEOUT");
    assert!(took < Duration::from_secs(5), "504 after {took:?}");
}

#[test]
fn an_upstream_that_refuses_connections_gives_502_upstream_unavailable() {
    let sc = Sidecar::start(Opts::new().upstream(&dead_address()));
    let r = sc.get("/public/nowhere", None);
    assert_error(&r, 502, "UPSTREAM_UNAVAILABLE");
}

// --------------------------------------------------------------------------
// SIGTERM drain and listeners
// --------------------------------------------------------------------------

#[test]
fn readyz_is_503_through_the_drain_and_the_admin_listener_closes_last() {
    let mut sc = Sidecar::start(Opts::new().set("server", "grace_period_seconds", "10"));
    let url = sc.url("/public/drain/slow?delay=3");
    let in_flight = thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
            .get(&url)
            .send()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    });
    poll_until(Duration::from_secs(10), || {
        (!sc.echo.with_prefix("/public/drain").is_empty()).then_some(())
    })
    .expect("the slow request never reached the upstream");
    assert_eq!(readyz(&sc), 200);
    sc.terminate();

    // probes see the drain: /readyz 503, /healthz and /metrics answer
    wait_readyz(&sc, 503, Duration::from_secs(1));
    let proxy: SocketAddr = ([127, 0, 0, 1], sc.proxy_port).into();
    poll_until(Duration::from_secs(2), || {
        TcpStream::connect_timeout(&proxy, Duration::from_millis(200))
            .is_err()
            .then_some(())
    })
    .expect("the proxy listener still accepts 2 s after SIGTERM");
    // the proxy no longer accepts, the admin listener still answers
    assert_eq!(readyz(&sc), 503);
    assert_status(&sc.admin_get("/healthz"), 200);
    assert!(
        sc.admin_get("/metrics")
            .body
            .contains("portcullis_build_info")
    );
    assert!(sc.is_running(), "exited with a request in flight");

    assert_eq!(in_flight.join().unwrap(), Ok(200), "the in-flight request");
    let st = sc
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running after the drain\n{}", sc.tails()));
    assert_eq!(st.code(), Some(0), "{}", sc.tails());
    let admin: SocketAddr = ([127, 0, 0, 1], sc.admin_port).into();
    assert!(TcpStream::connect_timeout(&admin, Duration::from_millis(500)).is_err());
}

#[test]
fn a_listener_that_cannot_bind_ends_the_process_naming_the_address() {
    for key in ["proxy", "admin"] {
        let sc = Sidecar::new(Opts::new());
        let port = if key == "proxy" {
            sc.proxy_port
        } else {
            sc.admin_port
        };
        let _taken = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let start = Instant::now();
        let out = sc.cli(&["serve"], None);
        assert!(
            !out.success(),
            "serve with {key}.listen taken: {}",
            out.describe()
        );
        let address = format!("127.0.0.1:{port}");
        assert!(
            out.stderr.contains(&address) && out.stderr.contains(&format!("{key}.listen")),
            "the error names neither {address} nor {key}.listen: {}",
            out.describe()
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        // nothing answers on the other listener either: the process is gone
        let other = if key == "proxy" {
            sc.admin_port
        } else {
            sc.proxy_port
        };
        assert!(TcpStream::connect(("127.0.0.1", other)).is_err());
    }
}

// --------------------------------------------------------------------------
// trusted_proxies and the client address
// --------------------------------------------------------------------------

/// The `ip` of the newest audit event of `user_id`, read by the admin.
fn audit_ip(sc: &Sidecar, admin: &User, user_id: &str) -> String {
    let r = sc.get(
        &format!("/auth/admin/audit?limit=1&userId={user_id}"),
        Some(&admin.access),
    );
    let v = assert_status(&r, 200);
    v["items"][0]["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("no ip in {v}"))
        .to_string()
}

fn failed_login_from(sc: &Sidecar, email: &str, forwarded_for: &str) {
    let r = sc
        .req("POST", "/auth/login")
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"email": email, "password": "wrong-password-123"}))
        .send();
    assert_error(&r, 401, "INVALID_CREDENTIALS");
}

#[test]
fn behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_forwarded_address() {
    let sc = Sidecar::start(Opts::new().set(
        "proxy",
        "trusted_proxies",
        r#"["127.0.0.1/32", "10.0.0.0/8"]"#,
    ));
    let admin = sc.admin_user();
    let user = sc.new_user();

    // the walk from the right passes the trusted 10.1.2.3 and stops at 203.0.113.7
    failed_login_from(&sc, &user.email, "198.51.100.1, 203.0.113.7, 10.1.2.3");
    assert_eq!(audit_ip(&sc, &admin, &user.id), "203.0.113.7");

    // the upstream gets the chain with the trusted peer appended
    let r = sc
        .req("GET", "/public/chain")
        .header("X-Forwarded-For", "203.0.113.7, 10.1.2.3")
        .send();
    assert_status(&r, 200);
    let seen = sc.echo.for_path("/public/chain").pop().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 10.1.2.3, 127.0.0.1")
    );
}

#[test]
fn from_an_untrusted_peer_forwarded_addresses_are_replaced_and_ignored() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let user = sc.new_user();
    failed_login_from(&sc, &user.email, "203.0.113.7");
    assert_eq!(audit_ip(&sc, &admin, &user.id), "127.0.0.1");

    let r = sc
        .req("GET", "/public/spoof")
        .header("X-Forwarded-For", "203.0.113.7")
        .send();
    assert_status(&r, 200);
    let seen = sc.echo.for_path("/public/spoof").pop().unwrap();
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

#[test]
fn per_ip_rate_limits_count_the_walked_client_address_only_behind_trusted_proxies() {
    let forgot = |sc: &Sidecar, xff: &str| {
        sc.req("POST", "/auth/password/forgot")
            .header("X-Forwarded-For", xff)
            .json(&json!({"email": unique_email("rl")}))
            .send()
            .status
    };
    // trusted: two clients behind the proxy have a bucket each
    let sc = Sidecar::start(
        Opts::new()
            .set("proxy", "trusted_proxies", r#"["127.0.0.1/32"]"#)
            .set("rate_limit", "per_ip_per_minute", "2"),
    );
    assert_eq!(forgot(&sc, "198.51.100.1"), 202);
    assert_eq!(forgot(&sc, "198.51.100.1"), 202);
    assert_eq!(forgot(&sc, "198.51.100.1"), 429);
    assert_eq!(forgot(&sc, "198.51.100.2"), 202);

    // untrusted: a client cannot pick a fresh bucket by sending another address
    let sc = Sidecar::start(Opts::new().set("rate_limit", "per_ip_per_minute", "2"));
    assert_eq!(forgot(&sc, "198.51.100.1"), 202);
    assert_eq!(forgot(&sc, "198.51.100.2"), 202);
    assert_eq!(forgot(&sc, "198.51.100.3"), 429);
}
