//! The proxy path: authentication, identity headers, route policies, path
//! normalisation, upstream errors, tenancy (SPEC §4, §7, §8, §14).

use serde_json::{Value, json};

use crate::harness::*;

/// `x-auth-*` headers (any case, `_` read as `-`) the upstream received.
fn identity_headers(rec: &Value) -> Vec<(String, String)> {
    rec["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    k.to_ascii_lowercase()
                        .replace('_', "-")
                        .starts_with("x-auth-")
                })
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn up_header(rec: &Value, name: &str) -> Option<String> {
    rec["headers"][name].as_str().map(str::to_string)
}

fn list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn no_credential_is_401_unauthenticated_with_www_authenticate_and_nothing_reaches_upstream() {
    let sc = Sidecar::start(Opts::new());
    let path = format!("/api/anon-{}", rand_hex(8));
    let r = sc.get(&path, None);
    assert_error(&r, 401, "UNAUTHENTICATED");
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .starts_with("Bearer"),
        "WWW-Authenticate must name Bearer: {:?}",
        r.headers
    );
    let r = sc.post(&path, None, &json!({"x": 1}));
    assert_error(&r, 401, "UNAUTHENTICATED");
    assert!(
        sc.echo.for_path(&path).is_empty(),
        "unauthenticated request reached the upstream"
    );
}

#[test]
fn garbage_bearer_is_401_invalid_token() {
    let sc = Sidecar::start(Opts::new());
    for tok in ["abc.def.ghi", "nonsense", "eyJhbGciOiJFZERTQSJ9.e30.AAAA"] {
        let r = sc.get("/api/garbage", Some(tok));
        assert_error(&r, 401, "INVALID_TOKEN");
    }
    assert!(sc.echo.for_path("/api/garbage").is_empty());
}

#[test]
fn a_jwt_request_carries_the_identity_headers_upstream() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.get("/api/orders/42", Some(&user.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/orders/42");
    let h = |n: &str| up_header(&echo, n);
    assert_eq!(
        h("x-auth-user-id").as_deref(),
        Some(user.id.as_str()),
        "{echo}"
    );
    assert_eq!(
        h("x-auth-tenant-id").as_deref(),
        Some(user.tenant_id.as_str()),
        "{echo}"
    );
    assert_eq!(
        h("x-auth-email").as_deref(),
        Some(user.email.as_str()),
        "{echo}"
    );
    assert_eq!(h("x-auth-method").as_deref(), Some("jwt"), "{echo}");
    assert_eq!(
        h("x-auth-session-id").as_deref(),
        jwt_claims(&user.access)["sid"].as_str(),
        "{echo}"
    );
    assert_eq!(
        list(h("x-auth-roles")),
        vec!["member".to_string()],
        "{echo}"
    );
    let perms = list(h("x-auth-permissions"));
    for p in MEMBER_PERMISSIONS {
        assert!(
            perms.contains(&p.to_string()),
            "x-auth-permissions lacks {p}: {echo}"
        );
    }
    assert!(h("x-auth-key-id").is_none(), "{echo}");
    assert!(
        h("x-auth-mfa").is_none(),
        "X-Auth-MFA is `true` or absent: {echo}"
    );
    assert!(
        h("x-auth-assertion").is_none(),
        "identity_assertion is off: {echo}"
    );
    assert!(
        h("x-request-id").is_some_and(|v| !v.is_empty()),
        "X-Request-Id must be generated: {echo}"
    );
    assert!(
        h("x-forwarded-for")
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "{echo}"
    );
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"), "{echo}");
    assert_eq!(
        h("authorization"),
        Some(format!("Bearer {}", user.access)),
        "Authorization is forwarded by default"
    );
}

#[test]
fn authorization_is_not_forwarded_when_forward_authorization_is_false() {
    let sc = Sidecar::start(Opts::new().set("proxy", "forward_authorization", "false"));
    let user = sc.new_user();
    let r = sc.get("/api/no-authz", Some(&user.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    assert!(up_header(&echo, "authorization").is_none(), "{echo}");
    assert_eq!(
        up_header(&echo, "x-auth-user-id").as_deref(),
        Some(user.id.as_str())
    );
}

#[test]
fn client_forwarded_headers_are_replaced_not_appended() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc
        .req("GET", "/api/xff")
        .bearer(&user.access)
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Proto", "https")
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    let xff = up_header(&echo, "x-forwarded-for").unwrap_or_default();
    assert!(xff.contains("127.0.0.1"), "{echo}");
    assert!(
        !xff.contains("6.6.6.6"),
        "an untrusted X-Forwarded-For was kept: {echo}"
    );
    assert_eq!(
        up_header(&echo, "x-forwarded-proto").as_deref(),
        Some("http"),
        "{echo}"
    );
}

#[test]
fn method_query_and_body_pass_through() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let body = br#"{"hello": "world", "n": [1, 2, 3]}"#;
    let r = sc
        .req("PUT", "/api/items/7?colour=blue&size=2&q=a%20b")
        .bearer(&user.access)
        .body(body, Some("application/json"))
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/api/items/7");
    assert_eq!(echo["query"], "colour=blue&size=2&q=a%20b");
    assert_eq!(echo["body"], std::str::from_utf8(body).unwrap());
    assert_eq!(echo["headers"]["content-type"], "application/json");
    for method in ["DELETE", "PATCH", "POST"] {
        let r = sc.req(method, "/api/items/8").bearer(&user.access).send();
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.json()["method"], method);
    }
}

#[test]
fn a_client_request_id_is_kept_upstream_and_echoed_back() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let rid = format!("client-{}", rand_hex(16));
    let r = sc
        .req("GET", "/api/rid")
        .bearer(&user.access)
        .header("X-Request-Id", &rid)
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        up_header(&r.json(), "x-request-id").as_deref(),
        Some(rid.as_str())
    );
    assert_eq!(
        r.header("x-request-id"),
        Some(rid.as_str()),
        "{:?}",
        r.headers
    );
    // errors carry it too
    let rid2 = format!("client-{}", rand_hex(16));
    let r = sc
        .req("GET", "/api/rid")
        .header("X-Request-Id", &rid2)
        .send();
    let err = assert_error(&r, 401, "UNAUTHENTICATED");
    assert_eq!(err["requestId"], rid2.as_str());
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream_on_authenticated_routes() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc
        .req("GET", "/api/spoof")
        .bearer(&user.access)
        .headers(&[
            ("X-Auth-User-Id", "00000000-0000-0000-0000-000000000001"),
            ("X-Auth-Email", "boss@example.com"),
            ("X-Auth-Roles", "admin"),
            ("X-Auth-Permissions", "*"),
            ("X-Auth-Key-Id", "k"),
            ("X-Auth-MFA", "true"),
            ("X-Auth-Extra", "injected"),
            ("x_auth_user_id", "00000000-0000-0000-0000-000000000002"),
            ("x_auth_roles", "admin"),
        ])
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    let h = |n: &str| up_header(&echo, n);
    assert_eq!(
        h("x-auth-user-id").as_deref(),
        Some(user.id.as_str()),
        "{echo}"
    );
    assert_eq!(
        h("x-auth-email").as_deref(),
        Some(user.email.as_str()),
        "{echo}"
    );
    assert_eq!(h("x-auth-roles").as_deref(), Some("member"), "{echo}");
    assert!(
        !list(h("x-auth-permissions")).contains(&"*".to_string()),
        "{echo}"
    );
    assert!(h("x-auth-key-id").is_none(), "{echo}");
    assert!(h("x-auth-mfa").is_none(), "{echo}");
    assert!(h("x-auth-extra").is_none(), "{echo}");
    let underscored: Vec<_> = identity_headers(&echo)
        .into_iter()
        .filter(|(k, _)| k.contains('_'))
        .collect();
    assert!(
        underscored.is_empty(),
        "underscore spellings passed: {underscored:?}"
    );

    // odd spellings sent byte for byte
    let auth = format!("Bearer {}", user.access);
    let r = sc.raw(
        "GET",
        "/api/spoof-raw",
        &[
            ("Authorization", &auth),
            ("x-AUTH-user-ID", "00000000-0000-0000-0000-000000000003"),
            ("X_Auth_Email", "boss@example.com"),
            ("X-AUTH_ROLES", "admin"),
            ("x-auth-tenant-id", "00000000-0000-0000-0000-000000000004"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    let ids = identity_headers(&echo);
    for (k, v) in &ids {
        assert!(
            !k.contains('_'),
            "underscore spelling passed: {k}: {v} in {echo}"
        );
        assert!(
            !v.starts_with("00000000-") && v != "admin" && v != "boss@example.com",
            "spoofed value passed: {k}: {v} in {echo}"
        );
    }
    assert_eq!(
        up_header(&echo, "x-auth-user-id").as_deref(),
        Some(user.id.as_str())
    );
    assert_eq!(
        up_header(&echo, "x-auth-tenant-id").as_deref(),
        Some(user.tenant_id.as_str())
    );
}

#[test]
fn spoofed_identity_headers_are_stripped_on_public_routes() {
    let sc = Sidecar::start(Opts::new());
    let r = sc
        .req("GET", "/public/status")
        .headers(&[
            ("X-Auth-User-Id", "00000000-0000-0000-0000-000000000001"),
            ("X-Auth-Tenant-Id", "00000000-0000-0000-0000-000000000002"),
            ("X-Auth-Email", "boss@example.com"),
            ("X-Auth-Method", "jwt"),
            ("x_auth_user_id", "00000000-0000-0000-0000-000000000003"),
        ])
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    assert_eq!(echo["path"], "/public/status");
    assert_eq!(
        sc.echo.for_path("/public/status").len(),
        1,
        "the request did not reach the upstream once"
    );
    let leaked = identity_headers(&echo);
    assert!(
        leaked.is_empty(),
        "identity headers reached the upstream on a public route: {leaked:?}"
    );

    let r = sc.raw(
        "GET",
        "/public/status-raw",
        &[
            ("X-AUTH-ROLES", "admin"),
            ("X_AUTH_EMAIL", "boss@example.com"),
            ("x-Auth-Mfa", "true"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let rec = sc
        .echo
        .for_path("/public/status-raw")
        .pop()
        .expect("the raw request did not reach the upstream");
    assert!(
        rec.header("x-auth-roles").is_none() && rec.header("x_auth_email").is_none(),
        "{rec:?}"
    );
    let leaked = identity_headers(&r.json());
    assert!(
        leaked.is_empty(),
        "identity headers reached the upstream on a public route: {leaked:?}"
    );
}

#[test]
fn public_route_passes_anonymously_and_authenticates_optionally() {
    let sc = Sidecar::start(Opts::new());
    // no credential: passes, no identity
    let r = sc.get("/public/hello?x=1", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    assert_eq!(echo["path"], "/public/hello");
    assert_eq!(echo["query"], "x=1");
    assert!(identity_headers(&echo).is_empty(), "{echo}");
    // a valid token: identity headers are sent
    let user = sc.new_user();
    let r = sc.get("/public/hello", Some(&user.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    assert_eq!(
        up_header(&echo, "x-auth-user-id").as_deref(),
        Some(user.id.as_str()),
        "{echo}"
    );
    assert_eq!(
        up_header(&echo, "x-auth-method").as_deref(),
        Some("jwt"),
        "{echo}"
    );
    // an invalid one is ignored there
    let r = sc.get("/public/hello", Some("abc.def.ghi"));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(identity_headers(&r.json()).is_empty(), "{}", r.describe());
}

#[test]
fn route_permissions_are_enforced() {
    let sc = Sidecar::start(Opts::new());
    let member = sc.new_user();
    let admin = sc.admin_user();
    assert_error(
        &sc.get("/reports/q1", Some(&member.access)),
        403,
        "FORBIDDEN",
    );
    assert!(
        sc.echo.for_path("/reports/q1").is_empty(),
        "a forbidden request reached the upstream"
    );
    let r = sc.get("/reports/q1", Some(&admin.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        up_header(&r.json(), "x-auth-user-id").as_deref(),
        Some(admin.id.as_str())
    );
    // the member has profile:write
    let r = sc.get("/profile-write/me", Some(&member.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_error(&sc.get("/reports/q1", None), 401, "UNAUTHENTICATED");
}

#[test]
fn route_roles_are_enforced() {
    let sc = Sidecar::start(Opts::new());
    let member = sc.new_user();
    let admin = sc.admin_user();
    assert_error(
        &sc.get("/admin-area/dashboard", Some(&member.access)),
        403,
        "FORBIDDEN",
    );
    assert!(sc.echo.for_path("/admin-area/dashboard").is_empty());
    let r = sc.get("/admin-area/dashboard", Some(&admin.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(list(up_header(&r.json(), "x-auth-roles")).contains(&"admin".to_string()));
}

#[test]
fn route_methods_select_the_policy() {
    let sc = Sidecar::start(Opts::new());
    let member = sc.new_user();
    let admin = sc.admin_user();
    // the payments policy covers POST/PUT/DELETE only; GET falls to the default policy
    let r = sc.get("/payments/p-1", Some(&member.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_error(
        &sc.post("/payments/p-1", Some(&member.access), &json!({})),
        403,
        "FORBIDDEN",
    );
    assert_error(
        &sc.delete("/payments/p-1", Some(&member.access)),
        403,
        "FORBIDDEN",
    );
    let r = sc.post("/payments/p-1", Some(&admin.access), &json!({}));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_error(&sc.get("/payments/p-1", None), 401, "UNAUTHENTICATED");
    let posts = sc
        .echo
        .find(|r| r.path == "/payments/p-1" && r.method == "POST");
    assert_eq!(
        posts.len(),
        1,
        "only the admin's POST may reach the upstream"
    );
}

#[test]
fn default_policy_public_lets_unmatched_paths_through() {
    let sc = Sidecar::start(Opts::new().set_str("proxy", "default_policy", "public"));
    let r = sc.get("/anything/open", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(identity_headers(&r.json()).is_empty());
    // a route marked authenticated still needs a credential
    assert_error(&sc.get("/reports/x", None), 401, "UNAUTHENTICATED");
}

#[test]
fn dot_segments_are_resolved_before_the_route_policy_is_picked() {
    let sc = Sidecar::start(Opts::new());
    for target in [
        "/public/../reports/x",
        "/public/%2e%2e/reports/x",
        "/public/./../reports/x",
        "//public/../reports/x",
    ] {
        let r = sc.raw("GET", target, &[]);
        assert_error(&r, 401, "UNAUTHENTICATED");
    }
    assert!(
        sc.echo.records().is_empty(),
        "a path escaping /public reached the upstream: {:?}",
        sc.echo.records()
    );
    let user = sc.new_user();
    let auth = format!("Bearer {}", user.access);
    let id = rand_hex(8);
    let r = sc.raw(
        "GET",
        &format!("/public/../api/norm-{id}?a=1"),
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let echo = r.json();
    assert_eq!(
        echo["path"],
        format!("/api/norm-{id}"),
        "upstream must see the normalised path"
    );
    assert_eq!(echo["query"], "a=1");
    // merged slashes, `.` segments and decoded unreserved characters
    let r = sc.raw("GET", "/public//a/./b/%7Euser%2Dx", &[]);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["path"], "/public/a/b/~user-x");
}

#[test]
fn encoded_slash_nul_and_root_escape_in_the_path_are_400() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let auth = format!("Bearer {}", user.access);
    for target in [
        "/public/a%2Fb",
        "/public/a%2fb",
        "/public/a%00b",
        "/api/x%2F..%2Freports",
        "/../etc/passwd",
        "/public/../../etc",
    ] {
        let r = sc.raw("GET", target, &[]);
        assert_error_shape(&r, 400);
        let r = sc.raw("GET", target, &[("Authorization", &auth)]);
        assert_error_shape(&r, 400);
    }
    assert!(
        sc.echo.records().is_empty(),
        "a malformed path reached the upstream: {:?}",
        sc.echo.records()
    );
}

#[test]
fn upstream_down_is_502_upstream_unavailable_while_auth_routes_still_work() {
    let sc = Sidecar::start(Opts::new().upstream(&dead_address()));
    let user = sc.new_user();
    assert_error(
        &sc.get("/api/anything", Some(&user.access)),
        502,
        "UPSTREAM_UNAVAILABLE",
    );
    assert_error(
        &sc.get("/public/anything", None),
        502,
        "UPSTREAM_UNAVAILABLE",
    );
    // the credential is still checked first
    assert_error(&sc.get("/api/anything", None), 401, "UNAUTHENTICATED");
    let me = assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    assert_eq!(me["id"], user.id.as_str());
    assert_status(&sc.get("/.well-known/jwks.json", None), 200);
}

#[test]
fn a_disagreeing_tenant_header_is_403_tenant_mismatch() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    // unknown tenant on an authenticated request
    let r = sc
        .req("GET", "/api/tenant")
        .bearer(&user.access)
        .tenant("no-such-tenant-7f")
        .send();
    assert_error(&r, 403, "TENANT_MISMATCH");
    // a real, other tenant
    let out = sc.cli(&["tenant", "create", "other"], None);
    assert!(out.success(), "{}", out.describe());
    let other_id = find_uuids(&out.stdout)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("tenant create printed no id: {}", out.describe()));
    for t in ["other", other_id.as_str()] {
        let r = sc
            .req("GET", "/api/tenant")
            .bearer(&user.access)
            .tenant(t)
            .send();
        assert_error(&r, 403, "TENANT_MISMATCH");
        let r = sc
            .req("GET", "/auth/me")
            .bearer(&user.access)
            .tenant(t)
            .send();
        assert_error(&r, 403, "TENANT_MISMATCH");
    }
    assert!(
        sc.echo.for_path("/api/tenant").is_empty(),
        "a mismatched request reached the upstream"
    );
}

#[test]
fn an_agreeing_tenant_header_is_accepted_by_id_and_by_slug() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    for t in [user.tenant_id.as_str(), "default"] {
        let r = sc
            .req("GET", "/api/tenant-ok")
            .bearer(&user.access)
            .tenant(t)
            .send();
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(
            up_header(&r.json(), "x-auth-tenant-id").as_deref(),
            Some(user.tenant_id.as_str())
        );
        let r = sc
            .req("GET", "/auth/me")
            .bearer(&user.access)
            .tenant(t)
            .send();
        assert_eq!(assert_status(&r, 200)["id"], user.id.as_str());
    }
}

#[test]
fn auth_routes_and_the_jwks_are_never_forwarded_upstream() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    assert_status(&sc.get("/.well-known/jwks.json", None), 200);
    assert_error(
        &sc.get("/auth/nothing-here", Some(&user.access)),
        404,
        "NOT_FOUND",
    );
    let _ = sc.get("/.well-known/other", Some(&user.access));
    assert_error_shape(&sc.get("/auth/login", None), 405);
    let forwarded = sc
        .echo
        .find(|r| r.path.starts_with("/auth") || r.path.starts_with("/.well-known/jwks"));
    assert!(
        forwarded.is_empty(),
        "the sidecar forwarded its own routes upstream: {forwarded:?}"
    );
}
