//! Account lifecycle (SPEC §6, §10, §14): email verification, password
//! forgot/reset, closed registration, per-IP rate limits on the token routes.
//! Tokens are captured from the notification webhook, received by the
//! instance's echo server on loopback.
//!
//! The webhook helpers here are shared with `admin.rs` (invitations).

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// Path of `notifications.webhook_url` on the echo server.
pub(crate) const HOOK_PATH: &str = "/hooks/portcullis";
/// How long a notification may take to arrive (it is sent in the background).
pub(crate) const HOOK_WAIT: Duration = Duration::from_secs(10);

const REFRESH_DEAD: &[&str] = &["INVALID_TOKEN", "TOKEN_REVOKED", "REFRESH_TOKEN_REUSED"];

/// Starts an instance whose `notifications.webhook_url` points at its own
/// echo server (`http://127.0.0.1:<port>/hooks/portcullis`).
pub(crate) fn start_with_webhook(opts: Opts) -> Sidecar {
    let mut sc = Sidecar::new(opts);
    let url = format!("http://{}{HOOK_PATH}", sc.echo.address());
    sc.set_config("notifications", "webhook_url", &toml_str(&url));
    sc.launch();
    sc
}

/// The JSON bodies of every notification POSTed to the webhook so far.
pub(crate) fn hook_events(sc: &Sidecar) -> Vec<Value> {
    sc.echo
        .find(|r| r.path == HOOK_PATH)
        .into_iter()
        .map(|r| {
            assert_eq!(r.method, "POST", "the webhook is called with POST: {r:?}");
            let ct = r.header("content-type").unwrap_or_default();
            assert!(
                ct.contains("application/json"),
                "webhook Content-Type is not JSON: {r:?}"
            );
            serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("webhook body is not JSON ({e}): {r:?}"))
        })
        .collect()
}

/// Waits for a notification of `kind` for `email`; checks the SPEC §6 shape
/// `{type, tenantId, userId, email, token, expiresAt}` and returns it.
#[track_caller]
pub(crate) fn wait_hook(sc: &Sidecar, kind: &str, email: &str) -> Value {
    let found = poll_until(HOOK_WAIT, || {
        hook_events(sc)
            .into_iter()
            .find(|v| v["type"] == kind && v["email"] == email)
    });
    let hook = found.unwrap_or_else(|| {
        panic!(
            "no {kind:?} webhook for {email} within {HOOK_WAIT:?}; received: {:?}",
            hook_events(sc)
        )
    });
    for f in ["type", "tenantId", "userId", "email", "token", "expiresAt"] {
        assert!(
            hook[f].as_str().is_some_and(|s| !s.is_empty()),
            "webhook field {f:?} missing or empty: {hook}"
        );
    }
    assert!(
        is_uuid(hook["tenantId"].as_str().unwrap()),
        "tenantId: {hook}"
    );
    assert!(is_uuid(hook["userId"].as_str().unwrap()), "userId: {hook}");
    let expires = parse_time(hook["expiresAt"].as_str().unwrap());
    assert!(
        expires > time::OffsetDateTime::now_utc(),
        "the token expires in the past: {hook}"
    );
    hook
}

#[track_caller]
pub(crate) fn retry_after_secs(r: &Resp) -> u64 {
    let v = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {}", r.describe()));
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not seconds: {v:?}"))
}

#[test]
fn email_verification_gates_login_until_the_webhook_token_is_used_once() {
    let sc = start_with_webhook(Opts::new().set("accounts", "require_email_verification", "true"));
    let email = unique_email("verify");
    let password = strong_password();

    let r = sc.register(&email, &password);
    let body = assert_status(&r, 201);
    assert_eq!(body["verificationRequired"], true, "{}", r.describe());
    assert!(
        body.get("accessToken").is_none() && body.get("refreshToken").is_none(),
        "register must not log in an unverified user: {}",
        r.describe()
    );
    let user = &body["user"];
    check_user_object(user);
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["emailVerified"], false, "{user}");
    let user_id = user["id"].as_str().unwrap().to_string();

    // not verified yet: the right password is 403, a wrong one is still 401
    assert_error(&sc.login(&email, &password), 403, "ACCOUNT_NOT_VERIFIED");
    assert_error(
        &sc.login(&email, &format!("{password}-wrong")),
        401,
        "INVALID_CREDENTIALS",
    );

    let hook = wait_hook(&sc, "email.verification", &email);
    assert_eq!(hook["userId"], user_id.as_str(), "{hook}");
    assert_eq!(hook["tenantId"], user["tenantId"], "{hook}");
    let token = hook["token"].as_str().unwrap().to_string();
    assert!(
        !r.body.contains(&token),
        "the verification token must only travel by webhook: {}",
        r.describe()
    );

    // wrong tokens
    for bad in [format!("{token}x"), "not-a-token".to_string()] {
        let r = sc.post("/auth/verify-email", None, &json!({ "token": bad }));
        assert_error(&r, 401, "INVALID_TOKEN");
    }
    assert_error(&sc.login(&email, &password), 403, "ACCOUNT_NOT_VERIFIED");

    // the right one
    let r = sc.post("/auth/verify-email", None, &json!({ "token": token }));
    let verified = assert_status(&r, 200);
    check_user_object(&verified);
    assert_eq!(verified["id"], user_id.as_str());
    assert_eq!(verified["emailVerified"], true, "{verified}");

    let r = sc.login(&email, &password);
    let tokens = assert_status(&r, 200);
    check_token_response(&tokens);
    assert_eq!(tokens["user"]["id"], user_id.as_str());
    assert_eq!(tokens["user"]["emailVerified"], true);

    // single use
    let r = sc.post("/auth/verify-email", None, &json!({ "token": token }));
    assert_error(&r, 401, "INVALID_TOKEN");
    // the verified user keeps logging in
    assert_status(&sc.login(&email, &password), 200);
    assert!(
        !sc.logs().contains(&token),
        "the verification token is in the log of `serve`"
    );

    // users made by an admin need no verification
    let admin = sc.admin_user();
    let made = unique_email("made");
    let made_password = strong_password();
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": made, "password": made_password}),
    );
    assert_status(&r, 201);
    check_token_response(&assert_status(&sc.login(&made, &made_password), 200));
}

#[test]
fn password_reset_by_webhook_token_sets_the_password_once_and_revokes_every_session() {
    let sc = start_with_webhook(Opts::new());
    let user = sc.new_user();
    let other_session = sc.relogin(&user);
    // the access token is verified and cached before the reset
    for _ in 0..2 {
        let r = sc.get("/api/before-reset", Some(&user.access));
        assert_eq!(r.status, 200, "{}", r.describe());
    }

    // 202 whatever the email, with the same answer
    let unknown = unique_email("nobody");
    let mut answers = Vec::new();
    for email in [unknown.as_str(), "not-an-email", user.email.as_str()] {
        let r = sc.post("/auth/password/forgot", None, &json!({ "email": email }));
        answers.push(assert_status(&r, 202));
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "forgot answers differ by email (user enumeration): {answers:?}"
    );

    let hook = wait_hook(&sc, "password.reset", &user.email);
    assert_eq!(hook["userId"], user.id.as_str(), "{hook}");
    assert_eq!(hook["tenantId"], user.tenant_id.as_str(), "{hook}");
    let token = hook["token"].as_str().unwrap().to_string();
    // only the known email produced a notification (and registration sent none:
    // verification is off)
    thread::sleep(Duration::from_millis(1500));
    let events = hook_events(&sc);
    assert_eq!(
        events.len(),
        1,
        "only the known email may produce a webhook: {events:?}"
    );

    // a weak password is refused and does not use the token up
    let r = sc.post(
        "/auth/password/reset",
        None,
        &json!({ "token": token, "newPassword": "password" }),
    );
    assert_error(&r, 400, "WEAK_PASSWORD");
    // a bogus token
    let r = sc.post(
        "/auth/password/reset",
        None,
        &json!({ "token": "bogus-token", "newPassword": strong_password() }),
    );
    assert_error(&r, 401, "INVALID_TOKEN");
    // a reset token is neither a verification nor an invitation token
    let r = sc.post("/auth/verify-email", None, &json!({ "token": token }));
    assert_error(&r, 401, "INVALID_TOKEN");
    let r = sc.post(
        "/auth/invite/accept",
        None,
        &json!({ "token": token, "password": strong_password() }),
    );
    assert_error(&r, 401, "INVALID_TOKEN");
    // nothing changed so far
    let third_session = sc.relogin(&user);

    let new_password = strong_password();
    let r = sc.post(
        "/auth/password/reset",
        None,
        &json!({ "token": token, "newPassword": new_password }),
    );
    assert_status(&r, 200);

    assert_error(
        &sc.login(&user.email, &user.password),
        401,
        "INVALID_CREDENTIALS",
    );
    let r = sc.login(&user.email, &new_password);
    let fresh = assert_status(&r, 200);
    check_token_response(&fresh);
    assert_eq!(fresh["user"]["id"], user.id.as_str());

    // every earlier session is revoked at once, the cached one included
    for (what, s) in [
        ("first", &user),
        ("second", &other_session),
        ("third", &third_session),
    ] {
        let r = sc.get("/api/after-reset", Some(&s.access));
        assert_eq!(
            r.status,
            401,
            "{what} session survived the reset: {}",
            r.describe()
        );
        assert_error(&r, 401, "TOKEN_REVOKED");
        let r = sc.post("/auth/refresh", None, &json!({ "refreshToken": s.refresh }));
        assert_error_any(&r, 401, REFRESH_DEAD);
    }
    let r = sc.get("/api/after-reset", fresh["accessToken"].as_str());
    assert_eq!(r.status, 200, "{}", r.describe());

    // single use
    let r = sc.post(
        "/auth/password/reset",
        None,
        &json!({ "token": token, "newPassword": strong_password() }),
    );
    assert_error(&r, 401, "INVALID_TOKEN");
    assert_status(&sc.login(&user.email, &new_password), 200);

    // neither the token nor a password is in the log or the audit log
    let admin = sc.admin_user();
    let r = sc.get("/auth/admin/audit?limit=100", Some(&admin.access));
    let audit = assert_status(&r, 200).to_string();
    let logs = sc.logs();
    for (what, secret) in [
        ("reset token", &token),
        ("new password", &new_password),
        ("old password", &user.password),
    ] {
        assert!(
            !audit.contains(secret.as_str()),
            "audit holds the {what}: {audit}"
        );
        assert!(!logs.contains(secret.as_str()), "the log holds the {what}");
    }
}

#[test]
fn closed_registration_is_403_registration_closed_while_an_admin_still_creates_users() {
    let sc = Sidecar::start(Opts::new().set_str("accounts", "registration", "closed"));
    let r = sc.register(&unique_email("closed"), &strong_password());
    assert_error(&r, 403, "REGISTRATION_CLOSED");
    let r = sc.register_with(
        json!({"email": unique_email("closed"), "password": strong_password()}),
        Some("default"),
    );
    assert_error(&r, 403, "REGISTRATION_CLOSED");

    let admin = sc.admin_user();
    let email = unique_email("made-by-admin");
    let password = strong_password();
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": email, "password": password, "firstName": "Closed"}),
    );
    let created = assert_status(&r, 201);
    check_user_object(&created);
    assert_eq!(created["email"], email.as_str());
    assert_eq!(created["tenantId"], admin.tenant_id.as_str());

    let r = sc.login(&email, &password);
    let body = assert_status(&r, 200);
    check_token_response(&body);
    assert_eq!(body["user"]["id"], created["id"]);
}

#[test]
fn per_ip_rate_limit_counts_password_forgot_and_then_limits_verify_email_too() {
    let sc = Sidecar::start(Opts::new().set("rate_limit", "per_ip_per_minute", "3"));
    for _ in 0..3 {
        let r = sc.post(
            "/auth/password/forgot",
            None,
            &json!({"email": unique_email("rl")}),
        );
        assert_status(&r, 202);
    }
    let r = sc.post(
        "/auth/password/forgot",
        None,
        &json!({"email": unique_email("rl")}),
    );
    assert_error(&r, 429, "RATE_LIMITED");
    let secs = retry_after_secs(&r);
    assert!(
        secs > 0 && secs <= 60,
        "Retry-After {secs}: {}",
        r.describe()
    );

    let r = sc.post("/auth/verify-email", None, &json!({"token": "whatever"}));
    assert_error(&r, 429, "RATE_LIMITED");
    let secs = retry_after_secs(&r);
    assert!(
        secs > 0 && secs <= 60,
        "Retry-After {secs}: {}",
        r.describe()
    );

    // a client's own X-Forwarded-For does not buy a new budget (no trusted proxies)
    let r = sc
        .req("POST", "/auth/password/forgot")
        .header("X-Forwarded-For", "203.0.113.77")
        .json(&json!({"email": unique_email("rl")}))
        .send();
    assert_error(&r, 429, "RATE_LIMITED");
}

#[test]
fn per_ip_rate_limit_counts_verify_email_and_then_limits_the_other_token_routes() {
    let sc = Sidecar::start(Opts::new().set("rate_limit", "per_ip_per_minute", "3"));
    for _ in 0..3 {
        let r = sc.post("/auth/verify-email", None, &json!({"token": "nope"}));
        assert_error(&r, 401, "INVALID_TOKEN");
    }
    let r = sc.post("/auth/verify-email", None, &json!({"token": "nope"}));
    assert_error(&r, 429, "RATE_LIMITED");
    let secs = retry_after_secs(&r);
    assert!(
        secs > 0 && secs <= 60,
        "Retry-After {secs}: {}",
        r.describe()
    );

    let limited = [
        (
            "/auth/password/forgot",
            json!({"email": unique_email("rl")}),
        ),
        (
            "/auth/password/reset",
            json!({"token": "nope", "newPassword": strong_password()}),
        ),
        (
            "/auth/invite/accept",
            json!({"token": "nope", "password": strong_password()}),
        ),
    ];
    for (path, body) in limited {
        let r = sc.post(path, None, &body);
        assert_error(&r, 429, "RATE_LIMITED");
        let secs = retry_after_secs(&r);
        assert!(
            secs > 0 && secs <= 60,
            "Retry-After {secs}: {}",
            r.describe()
        );
    }
}

/// A webhook receiver that answers 500 to its first `failures` requests and
/// 200 afterwards, keeping every body.
struct FlakyReceiver {
    addr: String,
    bodies: Arc<Mutex<Vec<String>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FlakyReceiver {
    fn start(failures: usize) -> FlakyReceiver {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind receiver"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("IP address")
            .to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (srv, kept) = (server.clone(), bodies.clone());
        let thread = thread::spawn(move || {
            for mut req in srv.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let n = {
                    let mut b = kept.lock().unwrap();
                    b.push(body);
                    b.len()
                };
                let status = if n <= failures { 500 } else { 200 };
                let _ = req.respond(tiny_http::Response::from_string("").with_status_code(status));
            }
        });
        FlakyReceiver {
            addr,
            bodies,
            server,
            thread: Some(thread),
        }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for FlakyReceiver {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_refused_webhook_delivery_is_retried() {
    let hook = FlakyReceiver::start(2);
    let url = format!("http://{}{HOOK_PATH}", hook.addr);
    let sc = Sidecar::start(Opts::new().set("notifications", "webhook_url", &toml_str(&url)));
    let user = sc.new_user();
    let r = sc.post("/auth/password/forgot", None, &json!({"email": user.email}));
    assert_status(&r, 202);

    let bodies = poll_until(Duration::from_secs(20), || {
        let b = hook.bodies();
        (b.len() >= 3).then_some(b)
    })
    .unwrap_or_else(|| {
        panic!(
            "two refused deliveries were not retried: {:?}\n{}",
            hook.bodies(),
            sc.tails()
        )
    });
    let first: Value = serde_json::from_str(&bodies[0])
        .unwrap_or_else(|e| panic!("webhook body is not JSON ({e}): {bodies:?}"));
    assert_eq!(first["type"], "password.reset", "{first}");
    assert_eq!(first["email"], user.email.as_str(), "{first}");
    for b in &bodies[1..3] {
        let v: Value = serde_json::from_str(b).unwrap();
        assert_eq!(v, first, "a retry sent another message: {bodies:?}");
    }
    // delivered on the third attempt: no fourth one
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(hook.bodies().len(), 3, "{:?}", hook.bodies());

    let token = first["token"].as_str().unwrap();
    let r = sc.post(
        "/auth/password/reset",
        None,
        &json!({"token": token, "newPassword": strong_password()}),
    );
    assert_status(&r, 200);
}

#[test]
fn a_webhook_that_does_not_answer_never_delays_the_request() {
    let mut sc = Sidecar::new(Opts::new());
    // the echo server holds requests to a path ending in /slow
    let url = format!("http://{}{HOOK_PATH}/slow?delay=12", sc.echo.address());
    sc.set_config("notifications", "webhook_url", &toml_str(&url));
    sc.launch();
    let admin = sc.admin_user();
    let user = sc.new_user();

    let email = unique_email("invited-slow");
    let started = Instant::now();
    let r = sc.post(
        "/auth/admin/users",
        Some(&admin.access),
        &json!({"email": email}),
    );
    let invite_took = started.elapsed();
    let created = assert_status(&r, 201);
    assert!(created["inviteToken"].is_string(), "{}", r.describe());

    let started = Instant::now();
    let r = sc.post("/auth/password/forgot", None, &json!({"email": user.email}));
    let forgot_took = started.elapsed();
    assert_status(&r, 202);

    for (what, took) in [("invite", invite_took), ("forgot", forgot_took)] {
        assert!(
            took < Duration::from_secs(4),
            "{what} waited {took:?} for the webhook"
        );
    }
    // the notifications were sent all the same
    let hook_path = format!("{HOOK_PATH}/slow");
    for (kind, mail) in [
        ("user.invited", email.as_str()),
        ("password.reset", user.email.as_str()),
    ] {
        let got = sc.echo.wait_for(
            |r| {
                r.path == hook_path
                    && serde_json::from_str::<Value>(&r.body)
                        .is_ok_and(|v| v["type"] == kind && v["email"] == mail)
            },
            HOOK_WAIT,
        );
        assert!(got.is_some(), "no {kind} webhook: {:?}", sc.echo.records());
    }
}

#[test]
fn password_forgot_looks_the_email_up_in_the_requested_tenant_only() {
    let sc = start_with_webhook(Opts::new());
    let out = sc.cli(&["tenant", "create", "acme"], None);
    assert!(out.success(), "{}", out.describe());
    let local = sc.new_user();
    let foreign = sc.new_user_with(None, json!({}), Some("acme"));

    // each email asked for in the other tenant: 202, and no token is made
    let r = sc
        .req("POST", "/auth/password/forgot")
        .tenant("acme")
        .json(&json!({"email": local.email}))
        .send();
    assert_status(&r, 202);
    let r = sc.post(
        "/auth/password/forgot",
        None,
        &json!({"email": foreign.email}),
    );
    assert_status(&r, 202);
    // asked for in its own tenant: the token comes, for that tenant's user
    let r = sc
        .req("POST", "/auth/password/forgot")
        .tenant("acme")
        .json(&json!({"email": foreign.email}))
        .send();
    assert_status(&r, 202);
    let hook = wait_hook(&sc, "password.reset", &foreign.email);
    assert_eq!(hook["userId"], foreign.id.as_str(), "{hook}");
    assert_eq!(hook["tenantId"], foreign.tenant_id.as_str(), "{hook}");
    thread::sleep(Duration::from_millis(1500));
    let events = hook_events(&sc);
    assert_eq!(
        events.len(),
        1,
        "a reset was sent for an email of another tenant: {events:?}"
    );
}

#[test]
fn a_reset_token_is_single_use_under_concurrent_requests() {
    let sc = start_with_webhook(Opts::new());
    let user = sc.new_user();
    let r = sc.post("/auth/password/forgot", None, &json!({"email": user.email}));
    assert_status(&r, 202);
    let hook = wait_hook(&sc, "password.reset", &user.email);
    let token = hook["token"].as_str().unwrap().to_string();

    let passwords: Vec<String> = (0..4).map(|_| strong_password()).collect();
    let results: Vec<(String, Resp)> = thread::scope(|s| {
        let handles: Vec<_> = passwords
            .iter()
            .map(|pw| {
                let (sc, token) = (&sc, &token);
                s.spawn(move || {
                    let r = sc.post(
                        "/auth/password/reset",
                        None,
                        &json!({"token": token, "newPassword": pw}),
                    );
                    (pw.clone(), r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r.status == 200)
        .map(|(pw, _)| pw)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "one token, {} successful resets: {:?}",
        winners.len(),
        results
            .iter()
            .map(|(_, r)| r.describe())
            .collect::<Vec<_>>()
    );
    for (_, r) in results.iter().filter(|(_, r)| r.status != 200) {
        assert_error(r, 401, "INVALID_TOKEN");
    }
    // the winner's password is the one that works
    for pw in &passwords {
        let r = sc.login(&user.email, pw);
        if pw == winners[0] {
            assert_status(&r, 200);
        } else {
            assert_error(&r, 401, "INVALID_CREDENTIALS");
        }
    }
}

#[test]
fn changing_the_email_under_required_verification_does_not_lock_the_user_out() {
    let sc = start_with_webhook(Opts::new().set("accounts", "require_email_verification", "true"));
    let email = unique_email("mover");
    let password = strong_password();
    assert_status(&sc.register(&email, &password), 201);
    let hook = wait_hook(&sc, "email.verification", &email);
    let r = sc.post("/auth/verify-email", None, &json!({"token": hook["token"]}));
    assert_status(&r, 200);
    let login = assert_status(&sc.login(&email, &password), 200);
    let access = login["accessToken"].as_str().unwrap().to_string();

    let moved = unique_email("moved");
    let r = sc.patch("/auth/me", Some(&access), &json!({"email": moved}));
    let me = assert_status(&r, 200);
    assert_eq!(me["email"], moved.as_str());

    let r = sc.login(&moved, &password);
    if r.status == 200 {
        return; // the account stays usable
    }
    // the new address is unverified: then it must be sent a way to verify it
    assert_error(&r, 403, "ACCOUNT_NOT_VERIFIED");
    let found = poll_until(HOOK_WAIT, || {
        hook_events(&sc)
            .into_iter()
            .find(|v| v["type"] == "email.verification" && v["email"] == moved.as_str())
    });
    let hook = found.unwrap_or_else(|| {
        panic!(
            "after PATCH /auth/me changed the email, login answers 403 ACCOUNT_NOT_VERIFIED \
             but no email.verification webhook was sent for {moved}: the user is locked out \
             for good; webhooks received: {:?}",
            hook_events(&sc)
        )
    });
    let r = sc.post("/auth/verify-email", None, &json!({"token": hook["token"]}));
    assert_status(&r, 200);
    assert_status(&sc.login(&moved, &password), 200);
}
