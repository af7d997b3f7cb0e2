//! Registration and login (SPEC §4, §5, §6, §10, §14).

use serde_json::json;

use crate::harness::*;

#[test]
fn register_returns_201_with_the_token_response_and_a_member_user() {
    let sc = Sidecar::start(Opts::new());
    let email = unique_email("jane");
    let password = strong_password();
    let r = sc.register_with(
        json!({"email": email, "password": password, "firstName": "Jane", "familyName": "Doe"}),
        None,
    );
    let body = assert_status(&r, 201);
    check_token_response(&body);
    let user = &body["user"];
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["firstName"], "Jane");
    assert_eq!(user["familyName"], "Doe");
    assert_eq!(str_list(&user["roles"]), vec!["member".to_string()]);
    let mut perms = str_list(&user["permissions"]);
    perms.sort();
    let mut want: Vec<String> = MEMBER_PERMISSIONS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(perms, want, "member permissions: {user}");
    assert_eq!(user["mfaEnabled"], false);
    assert_eq!(user["emailVerified"], false);
    assert_eq!(user["status"], "active");
    assert!(
        parse_time(user["updatedAt"].as_str().unwrap())
            >= parse_time(user["createdAt"].as_str().unwrap())
    );
    // no password material anywhere in the response
    assert!(!r.body.contains("$argon2"), "{}", r.describe());
    assert!(
        !r.body.contains(&password),
        "the password is echoed: {}",
        r.describe()
    );
    // the access token belongs to this user
    let claims = jwt_claims(body["accessToken"].as_str().unwrap());
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["tid"], user["tenantId"]);
}

#[test]
fn register_with_a_display_name_only() {
    let sc = Sidecar::start(Opts::new());
    let r = sc.register_with(
        json!({"email": unique_email("john"), "password": strong_password(), "name": "John Doe"}),
        None,
    );
    let body = assert_status(&r, 201);
    check_token_response(&body);
    assert_eq!(body["user"]["name"], "John Doe", "{}", r.describe());
}

#[test]
fn register_ignores_privileged_and_unknown_fields() {
    let sc = Sidecar::start(Opts::new());
    let other_tenant = "6f1c1a52-5c57-4a8e-9a8e-0b8f0d6c2f11";
    let user = sc.new_user_with(
        None,
        json!({
            "roles": ["admin"],
            "permissions": ["*"],
            "status": "disabled",
            "tenantId": other_tenant,
            "emailVerified": true,
            "mfaEnabled": true,
            "favouriteColour": "green",
        }),
        None,
    );
    let u = &user.user;
    assert_eq!(str_list(&u["roles"]), vec!["member".to_string()], "{u}");
    assert!(
        !str_list(&u["permissions"]).contains(&"*".to_string()),
        "{u}"
    );
    assert_eq!(u["status"], "active", "{u}");
    assert_eq!(u["emailVerified"], false, "{u}");
    assert_eq!(u["mfaEnabled"], false, "{u}");
    assert_ne!(u["tenantId"], other_tenant, "{u}");
    assert!(u.get("favouriteColour").is_none(), "{u}");
    // the token carries no privilege either
    let claims = jwt_claims(&user.access);
    assert_eq!(claims["roles"], json!(["member"]), "{claims}");
    assert_error(
        &sc.get("/admin-area/x", Some(&user.access)),
        403,
        "FORBIDDEN",
    );
    // and the tenant is the default one, the same as the bootstrap admin's
    let admin = sc.admin_user();
    assert_eq!(user.tenant_id, admin.tenant_id);
}

#[test]
fn duplicate_email_is_409_email_exists_case_insensitively() {
    let sc = Sidecar::start(Opts::new());
    let email = unique_email("dup");
    assert_status(&sc.register(&email, &strong_password()), 201);
    assert_error(
        &sc.register(&email, &strong_password()),
        409,
        "EMAIL_EXISTS",
    );
    assert_error(
        &sc.register(&email.to_uppercase(), &strong_password()),
        409,
        "EMAIL_EXISTS",
    );
}

#[test]
fn emails_are_stored_lower_cased() {
    let sc = Sidecar::start(Opts::new());
    let lower = unique_email("mixed.case");
    let (local, _) = lower.split_once('@').unwrap();
    let mixed = format!("{}@Example.COM", local.to_uppercase());
    let password = strong_password();
    let r = sc.register(&mixed, &password);
    let body = assert_status(&r, 201);
    assert_eq!(body["user"]["email"], lower.as_str(), "{}", r.describe());
    let r = sc.login(&lower, &password);
    let b = assert_status(&r, 200);
    assert_eq!(b["user"]["email"], lower.as_str());
    assert_eq!(
        jwt_claims(b["accessToken"].as_str().unwrap())["email"],
        lower.as_str()
    );
}

#[test]
fn invalid_emails_are_400_invalid_request_naming_the_email_field() {
    let sc = Sidecar::start(Opts::new());
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_label = format!("a@{}.com", "b".repeat(64));
    let label = "b".repeat(60);
    let too_long = format!("{}@{label}.{label}.{label}.{label}.com", "a".repeat(10));
    assert!(too_long.len() > 254);
    let bad: Vec<String> = vec![
        "not-an-email".into(),
        "".into(),
        "@example.com".into(),
        "user@".into(),
        "a b@example.com".into(),
        "user@exam ple.com".into(),
        "a<b@example.com".into(),
        "<user@example.com>".into(),
        "user>@example.com".into(),
        "us\u{7}er@example.com".into(),
        "us\ner@example.com".into(),
        "jöhn@example.com".into(),
        long_local,
        long_label,
        too_long,
    ];
    for email in bad {
        let r = sc.register(&email, &strong_password());
        let err = assert_error(&r, 400, "INVALID_REQUEST");
        assert_eq!(
            err["details"]["field"],
            "email",
            "email {email:?} must be refused with details.field = email: {}",
            r.describe()
        );
    }
    // the longest valid forms pass: local part 64, a 63-character label
    let ok = format!("{}@{}.example.com", "c".repeat(64), "d".repeat(63));
    assert!(ok.len() <= 254);
    assert_status(&sc.register(&ok, &strong_password()), 201);
}

#[test]
fn missing_password_is_400_invalid_request() {
    let sc = Sidecar::start(Opts::new());
    let r = sc.post(
        "/auth/register",
        None,
        &json!({"email": unique_email("nopw")}),
    );
    let err = assert_error(&r, 400, "INVALID_REQUEST");
    if let Some(field) = err.get("details").and_then(|d| d.get("field")) {
        assert_eq!(field, "password", "{}", r.describe());
    }
    let r = sc.post("/auth/login", None, &json!({"email": unique_email("nopw")}));
    assert_error(&r, 400, "INVALID_REQUEST");
    let r = sc.post(
        "/auth/register",
        None,
        &json!({"password": strong_password()}),
    );
    assert_error(&r, 400, "INVALID_REQUEST");
}

#[test]
fn non_json_body_is_400_invalid_request() {
    let sc = Sidecar::start(Opts::new());
    let r = sc
        .req("POST", "/auth/register")
        .body(b"this is { not json", Some("application/json"))
        .send();
    assert_error(&r, 400, "INVALID_REQUEST");
    let r = sc
        .req("POST", "/auth/login")
        .body(
            b"email=a@example.com&password=x",
            Some("application/x-www-form-urlencoded"),
        )
        .send();
    assert_error(&r, 400, "INVALID_REQUEST");
    let r = sc
        .req("POST", "/auth/register")
        .body(b"[1, 2, 3]", Some("application/json"))
        .send();
    assert_error(&r, 400, "INVALID_REQUEST");
}

fn oversized_register_body() -> Vec<u8> {
    let body = json!({
        "email": unique_email("big"),
        "password": strong_password(),
        "padding": "x".repeat(70 * 1024),
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(bytes.len() > 64 * 1024);
    bytes
}

#[test]
fn auth_body_over_64_kib_is_413_payload_too_large() {
    let sc = Sidecar::start(Opts::new());
    let body = oversized_register_body();
    let r = raw_http(
        sc.proxy_port,
        "POST",
        "/auth/register",
        &[("Content-Type", "application/json")],
        RawBody::Fixed(&body),
    );
    assert_error(&r, 413, "PAYLOAD_TOO_LARGE");
}

#[test]
fn chunked_auth_body_over_64_kib_is_413_payload_too_large() {
    let sc = Sidecar::start(Opts::new());
    let body = oversized_register_body();
    let r = raw_http(
        sc.proxy_port,
        "POST",
        "/auth/register",
        &[("Content-Type", "application/json")],
        RawBody::Chunked(&body),
    );
    assert_error(&r, 413, "PAYLOAD_TOO_LARGE");
}

#[test]
fn weak_passwords_are_400_weak_password() {
    let sc = Sidecar::start(Opts::new());
    let email = unique_email("weak");
    let cases = [
        ("too short", "Ab1!xyz".to_string()),
        ("equal to the email", email.clone()),
        ("common", "password123".to_string()),
        ("over 128 characters", format!("Aa1!{}", "x9Q".repeat(42))),
    ];
    assert!(cases[3].1.len() > 128);
    for (why, pw) in cases {
        let r = sc.register(&email, &pw);
        let err = assert_error(&r, 400, "WEAK_PASSWORD");
        assert!(
            !err["message"].as_str().unwrap_or_default().is_empty(),
            "{why}: WEAK_PASSWORD without a reason: {}",
            r.describe()
        );
    }
    // none of the refused attempts created the account
    assert_status(&sc.register(&email, &strong_password()), 201);
}

#[test]
fn password_length_bounds_are_8_and_128_inclusive() {
    let sc = Sidecar::start(Opts::new());
    let eight = "Zq7!mK2p";
    let r = sc.register(&unique_email("eight"), eight);
    assert_status(&r, 201);
    let long = format!("Aa1!{}z", "k7W".repeat(41));
    assert_eq!(long.len(), 128);
    let email = unique_email("long");
    assert_status(&sc.register(&email, &long), 201);
    assert_status(&sc.login(&email, &long), 200);
}

#[test]
fn login_returns_the_token_response_and_a_new_session_each_time() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.login(&user.email, &user.password);
    let a = assert_status(&r, 200);
    check_token_response(&a);
    assert_eq!(a["user"]["id"], user.id.as_str());
    let b = sc.login_tokens(&user);
    let (ra, rb) = (
        a["refreshToken"].as_str().unwrap(),
        b["refreshToken"].as_str().unwrap(),
    );
    assert_ne!(ra, user.refresh, "a login must start a new session");
    assert_ne!(ra, rb, "a login must start a new session");
    let sids: Vec<String> = [
        &user.access,
        a["accessToken"].as_str().unwrap(),
        b["accessToken"].as_str().unwrap(),
    ]
    .iter()
    .map(|t| {
        jwt_claims(t)["sid"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
    .collect();
    assert!(sids.iter().all(|s| !s.is_empty()), "{sids:?}");
    assert!(
        sids[0] != sids[1] && sids[1] != sids[2] && sids[0] != sids[2],
        "each login must have its own session id: {sids:?}"
    );
}

#[test]
fn login_accepts_the_username_alias_and_an_upper_cased_email() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.post(
        "/auth/login",
        None,
        &json!({"username": user.email, "password": user.password}),
    );
    assert_eq!(assert_status(&r, 200)["user"]["id"], user.id.as_str());
    let r = sc.login(&user.email.to_uppercase(), &user.password);
    assert_eq!(assert_status(&r, 200)["user"]["id"], user.id.as_str());
}

#[test]
fn wrong_password_and_unknown_email_are_401_invalid_credentials() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let wrong = sc.login(&user.email, &format!("{}x", user.password));
    let e1 = assert_error(&wrong, 401, "INVALID_CREDENTIALS");
    let unknown = sc.login(&unique_email("nobody"), &user.password);
    let e2 = assert_error(&unknown, 401, "INVALID_CREDENTIALS");
    // nothing tells the two apart (no user enumeration)
    assert_eq!(e1["message"], e2["message"]);
    // a wrong password does not return tokens and the right one still works
    assert!(!wrong.body.contains("accessToken"));
    assert_status(&sc.login(&user.email, &user.password), 200);
}

#[test]
fn unknown_tenant_is_404_tenant_not_found_on_register_and_login() {
    let sc = Sidecar::start(Opts::new());
    let tenant = "no-such-tenant-0d1e2f";
    assert_error(
        &sc.register_with(
            json!({"email": unique_email("t"), "password": strong_password()}),
            Some(tenant),
        ),
        404,
        "TENANT_NOT_FOUND",
    );
    assert_error(
        &sc.login_in(&unique_email("t"), &strong_password(), Some(tenant)),
        404,
        "TENANT_NOT_FOUND",
    );
    let unknown_id = "0b7e4a5c-1d2e-4f30-8a9b-112233445566";
    assert_error(
        &sc.login_in(&unique_email("t"), &strong_password(), Some(unknown_id)),
        404,
        "TENANT_NOT_FOUND",
    );
}

#[test]
fn default_tenant_is_found_by_slug_and_by_id() {
    let sc = Sidecar::start(Opts::new());
    let plain = sc.new_user();
    let by_slug = sc.new_user_with(None, json!({}), Some("default"));
    assert_eq!(by_slug.tenant_id, plain.tenant_id);
    let by_id = sc.new_user_with(None, json!({}), Some(&plain.tenant_id));
    assert_eq!(by_id.tenant_id, plain.tenant_id);
    let r = sc.login_in(&by_slug.email, &by_slug.password, Some(&plain.tenant_id));
    assert_eq!(assert_status(&r, 200)["user"]["id"], by_slug.id.as_str());
    let r = sc.login_in(&by_id.email, &by_id.password, Some("default"));
    assert_eq!(assert_status(&r, 200)["user"]["id"], by_id.id.as_str());
}

#[test]
fn require_header_makes_a_missing_tenant_400_tenant_required() {
    let sc = Sidecar::start(Opts::new().set("tenancy", "require_header", "true"));
    let email = unique_email("req");
    let password = strong_password();
    assert_error(&sc.register(&email, &password), 400, "TENANT_REQUIRED");
    assert_error(&sc.login(&email, &password), 400, "TENANT_REQUIRED");
    let r = sc.register_with(
        json!({"email": email, "password": password}),
        Some("default"),
    );
    assert_status(&r, 201);
    assert_status(&sc.login_in(&email, &password, Some("default")), 200);
}

#[test]
fn closed_registration_is_403_registration_closed_but_the_admin_still_logs_in() {
    let sc = Sidecar::start(Opts::new().set_str("accounts", "registration", "closed"));
    let email = unique_email("closed");
    assert_error(
        &sc.register(&email, &strong_password()),
        403,
        "REGISTRATION_CLOSED",
    );
    let admin = sc.admin_user();
    check_user_object(&admin.user);
    // the refused registration created nobody
    assert_error(
        &sc.login(&email, &strong_password()),
        401,
        "INVALID_CREDENTIALS",
    );
}

#[test]
fn unknown_auth_route_is_404_and_wrong_method_is_405() {
    let sc = Sidecar::start(Opts::new());
    assert_error(&sc.get("/auth/does-not-exist", None), 404, "NOT_FOUND");
    assert_error(
        &sc.post("/auth/does-not-exist", None, &json!({})),
        404,
        "NOT_FOUND",
    );
    assert_error(&sc.get("/auth/login", None), 405, "METHOD_NOT_ALLOWED");
    assert_error(&sc.get("/auth/register", None), 405, "METHOD_NOT_ALLOWED");
    assert_error(&sc.delete("/auth/me", None), 405, "METHOD_NOT_ALLOWED");
    assert!(
        sc.echo.with_prefix("/auth").is_empty(),
        "an /auth request reached the upstream: {:?}",
        sc.echo.records()
    );
}

#[track_caller]
fn retry_after(r: &Resp) -> u64 {
    let v = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {}", r.describe()));
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not seconds: {v:?}"))
}

#[test]
fn repeated_failed_logins_lock_the_account_with_423_and_retry_after() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "3").set(
        "lockout",
        "lockout_seconds",
        "600",
    ));
    let user = sc.new_user();
    let wrong = format!("{}-wrong", user.password);
    // a success resets the count
    for _ in 0..2 {
        assert_error(&sc.login(&user.email, &wrong), 401, "INVALID_CREDENTIALS");
    }
    assert_status(&sc.login(&user.email, &user.password), 200);
    for _ in 0..2 {
        assert_error(&sc.login(&user.email, &wrong), 401, "INVALID_CREDENTIALS");
    }
    // the failure that reaches max_failures may answer 401 or 423
    let r = sc.login(&user.email, &wrong);
    assert_error_any(&r, r.status, &["INVALID_CREDENTIALS", "ACCOUNT_LOCKED"]);
    assert!([401, 423].contains(&r.status), "{}", r.describe());
    // afterwards the right and the wrong password both get 423
    for pw in [&user.password, &wrong] {
        let r = sc.login(&user.email, pw);
        assert_error(&r, 423, "ACCOUNT_LOCKED");
        let secs = retry_after(&r);
        assert!(secs > 0 && secs <= 600, "Retry-After {secs}");
        assert!(!r.body.contains("accessToken"));
    }
    // the existing session is not affected, another account is not locked
    assert_eq!(sc.get("/api/locked", Some(&user.access)).status, 200);
    let other = sc.new_user();
    assert_status(&sc.login(&other.email, &other.password), 200);
}

#[test]
fn public_auth_routes_are_rate_limited_per_client_ip_with_429_and_retry_after() {
    let sc = Sidecar::start(Opts::new().set("rate_limit", "per_ip_per_minute", "3"));
    let body = json!({"refreshToken": format!("rt_{}", "B".repeat(43))});
    for _ in 0..3 {
        assert_error(&sc.post("/auth/refresh", None, &body), 401, "INVALID_TOKEN");
    }
    let r = sc.post("/auth/refresh", None, &body);
    assert_error(&r, 429, "RATE_LIMITED");
    let secs = retry_after(&r);
    assert!(secs > 0 && secs <= 60, "Retry-After {secs}");
    let r = sc.login(&unique_email("rl"), &strong_password());
    assert_error(&r, 429, "RATE_LIMITED");
    // the proxy path is not an /auth route
    let r = sc.get("/public/not-limited", None);
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn logins_are_rate_limited_per_account() {
    let sc = Sidecar::start(
        Opts::new()
            .set("rate_limit", "login_per_account_per_minute", "2")
            .set("lockout", "max_failures", "100"),
    );
    let user = sc.new_user();
    let wrong = format!("{}-wrong", user.password);
    for _ in 0..2 {
        assert_error(&sc.login(&user.email, &wrong), 401, "INVALID_CREDENTIALS");
    }
    let r = sc.login(&user.email, &user.password);
    assert_error(&r, 429, "RATE_LIMITED");
    assert!(retry_after(&r) > 0);
    // another account from the same client is not limited
    let other = sc.new_user();
    assert_status(&sc.login(&other.email, &other.password), 200);
}
