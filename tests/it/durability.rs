//! Durability and shutdown: a SIGKILL in the middle of a burst of
//! registrations loses no acknowledged user and leaves a sound database; a
//! SIGTERM with several slow requests in flight lets them finish, refuses new
//! connections and exits 0 within the grace period (service.rs covers one
//! request; this adds several, the refused new connection and the deadline).

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[test]
fn sigkill_during_a_burst_of_registrations_loses_no_acknowledged_user() {
    let mut sc = Sidecar::start(Opts::new());
    let url = sc.url("/auth/register");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
            thread::spawn(move || {
                let c = client();
                while !stop.load(Ordering::SeqCst) {
                    let email = unique_email("burst");
                    let password = strong_password();
                    let r = c
                        .post(&url)
                        .json(&json!({"email": email, "password": password}))
                        .send();
                    match r {
                        Ok(resp) if resp.status().as_u16() == 201 => {
                            acked.lock().unwrap().push((email, password))
                        }
                        Ok(resp) => {
                            let s = resp.status().as_u16();
                            assert!(s == 503 || s == 429, "unexpected status {s} in the burst");
                        }
                        // the process died under us: expected after the kill
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // let the burst run, then kill -9 in the middle of it
    let started = Instant::now();
    while acked.lock().unwrap().len() < 10 && started.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(20));
    }
    sc.kill();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("a burst worker panicked");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "the burst acknowledged only {} registrations",
        acked.len()
    );

    // the database is sound before the sidecar touches it again
    {
        let db = rusqlite::Connection::open(&sc.db_path).expect("open the database");
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok", "integrity_check after SIGKILL");
    }

    sc.launch();
    for (email, password) in &acked {
        let r = sc.login(email, password);
        assert_eq!(
            r.status,
            200,
            "a registration acknowledged with 201 before the SIGKILL is lost: {}",
            r.describe()
        );
    }
    sc.stop();
    let db = rusqlite::Connection::open(&sc.db_path).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok", "integrity_check after the restart");
}

#[test]
fn sigterm_drains_several_slow_requests_refuses_new_connections_and_exits_0_in_time() {
    const GRACE: u64 = 6;
    let mut sc =
        Sidecar::start(Opts::new().set("server", "grace_period_seconds", &GRACE.to_string()));
    // three in flight (the echo upstream drops bursts of five or more)
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let url = sc.url(&format!("/public/s{i}/slow?delay=2"));
            thread::spawn(move || {
                client()
                    .get(&url)
                    .send()
                    .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
                    .map_err(|e| format!("{e:?}"))
            })
        })
        .collect();
    let arrived = poll_until(Duration::from_secs(10), || {
        (sc.echo.with_prefix("/public/s").len() == 3).then_some(())
    });
    assert!(
        arrived.is_some(),
        "the slow requests never reached the upstream"
    );
    let t0 = Instant::now();
    sc.terminate();

    // new connections are refused while the old requests drain
    let addr: SocketAddr = ([127, 0, 0, 1], sc.proxy_port).into();
    let refused = poll_until(Duration::from_millis(1500), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .is_err()
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the proxy listener still accepts connections 1.5 s after SIGTERM"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "checked too late to prove anything"
    );

    for h in handles {
        let (status, body) = h
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("an in-flight request failed during shutdown: {e}"));
        assert_eq!(status, 200, "in-flight request: {body}");
    }
    let st = sc
        .wait_exit(Duration::from_secs(GRACE + 5))
        .unwrap_or_else(|| panic!("still running {}s after SIGTERM\n{}", GRACE + 5, sc.tails()));
    assert_eq!(st.code(), Some(0), "exit status: {st}\n{}", sc.tails());
    assert!(
        t0.elapsed() < Duration::from_secs(GRACE + 2),
        "exit took {:?}, the grace period is {GRACE}s",
        t0.elapsed()
    );
}
