//! Several replicas on one PostgreSQL database (issue 7): two sidecar
//! processes share users, sessions, API keys and signing keys, and a
//! revocation on one is honoured by the other within a second, also after
//! the database dropped every connection.
//!
//! Needs a PostgreSQL server ([`crate::pg::TestDb`]): without one the test
//! fails when `CI` is set, and elsewhere is skipped and listed in the
//! summary at the end of `make test`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::pg::TestDb;

fn replica(db: &TestDb) -> Sidecar {
    Sidecar::start(Opts::new().set_str("database", "url", &db.url))
}

/// Polls `f` every 20 ms for up to `within`; the time it took when it held.
fn within(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    poll_until(within, || f().then(|| start.elapsed()))
}

fn status(r: &Resp) -> u16 {
    r.status
}

#[test]
fn two_replicas_share_one_postgres_and_propagate_revocations() {
    let Some(db) = TestDb::create("replicas", "two_replicas_share_one_postgres") else {
        return;
    };
    let a = replica(&db);
    let b = replica(&db);
    let second = Duration::from_secs(1);

    // register on A, log in on B; the token works on both
    let user = a.new_user();
    let r = b.login(&user.email, &user.password);
    let tokens = assert_status(&r, 200);
    let access = tokens["accessToken"].as_str().unwrap().to_string();
    let refresh = tokens["refreshToken"].as_str().unwrap().to_string();
    for sc in [&a, &b] {
        for _ in 0..2 {
            let r = sc.get("/api/replicas", Some(&access));
            assert_eq!(r.status, 200, "{}", r.describe());
        }
    }

    // log out on A: B (which has the token cached) refuses it within 1 s
    let r = a.post(
        "/auth/logout",
        Some(&access),
        &json!({ "refreshToken": refresh }),
    );
    assert_status(&r, 200);
    let took = within(second, || {
        status(&b.get("/api/replicas-after-logout", Some(&access))) == 401
    });
    assert!(took.is_some(), "B still accepts a token logged out on A");
    eprintln!("logout on A refused by B after {took:?}");
    assert_error(
        &b.get("/api/replicas-after-logout", Some(&access)),
        401,
        "TOKEN_REVOKED",
    );

    // a key made on A works on B; revoked on B, A refuses it within 1 s
    let user = a.relogin(&user);
    let r = a.post(
        "/auth/api-keys",
        Some(&user.access),
        &json!({ "name": "replicas" }),
    );
    let created = assert_status(&r, 201);
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    for sc in [&b, &a, &b, &a] {
        let r = sc
            .req("GET", "/api/with-key")
            .header("X-API-Key", &key)
            .send();
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    let r = b.delete(&format!("/auth/api-keys/{id}"), Some(&user.access));
    assert_status(&r, 200);
    let took = within(second, || {
        status(
            &a.req("GET", "/api/with-revoked-key")
                .header("X-API-Key", &key)
                .send(),
        ) == 401
    });
    assert!(took.is_some(), "A still accepts a key revoked on B");
    eprintln!("key revoked on B refused by A after {took:?}");

    // `keys rotate` (the CLI, on the shared database): both replicas publish
    // the new key within 1 s, and a token it signs verifies on both
    let before: Vec<String> = b
        .jwks()
        .iter()
        .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
        .collect();
    let out = a.cli(&["keys", "rotate"], None);
    assert!(out.success(), "{}", out.describe());
    for sc in [&a, &b] {
        let took = within(second, || {
            sc.jwks()
                .iter()
                .any(|k| !before.contains(&k["kid"].as_str().unwrap_or_default().to_string()))
        });
        assert!(took.is_some(), "a replica did not reload the rotated key");
    }
    let fresh = a.relogin(&user);
    let kid = jwt_header(&fresh.access)["kid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !before.contains(&kid),
        "the new token is not signed by the new key"
    );
    for sc in [&a, &b] {
        let r = sc.get("/api/new-key", Some(&fresh.access));
        assert_eq!(r.status, 200, "{}", r.describe());
    }

    // the database drops every connection: both recover within a few seconds
    let killed = db.terminate_connections();
    assert!(killed > 0, "no connection to terminate");
    for sc in [&a, &b] {
        let took = within(Duration::from_secs(10), || {
            sc.login(&user.email, &user.password).status == 200
        });
        assert!(took.is_some(), "a replica did not recover:\n{}", sc.tails());
        eprintln!("replica serving logins again after {took:?}");
        let took = within(Duration::from_secs(5), || {
            status(&sc.admin_get("/readyz")) == 200
        });
        assert!(took.is_some(), "a replica is not ready again");
    }
    // ...and revocations still propagate (the listeners reconnected)
    std::thread::sleep(Duration::from_millis(500));
    let late = b.relogin(&user);
    for sc in [&a, &b] {
        let r = sc.get("/api/after-blip", Some(&late.access));
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    let r = b.post(
        "/auth/logout",
        Some(&late.access),
        &json!({ "refreshToken": late.refresh }),
    );
    assert_status(&r, 200);
    let took = within(second, || {
        status(&a.get("/api/after-blip-logout", Some(&late.access))) == 401
    });
    assert!(
        took.is_some(),
        "after the blip, A still accepts a token logged out on B:\n{}",
        a.tails()
    );
    eprintln!("after the blip, logout on B refused by A after {took:?}");
}
