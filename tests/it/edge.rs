//! The edge (SPEC §15): one reading of every request. Each rule is sent as
//! raw bytes to the real sidecar in front of the echo upstream; a refusal is
//! checked for the JSON error shape and `X-Request-Id`, and the upstream for
//! what it received. `tests/differential/` runs the same rules against real
//! upstream servers.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::Value;

use crate::harness::*;

const ROUTES: &[&str] = &[
    r#"name = "public"
path = "/public/**"
auth = "public""#,
    r#"name = "admin-area"
path = "/admin-area/**"
roles = ["admin"]"#,
];

fn sidecar() -> Sidecar {
    Sidecar::start(Opts::new().routes(ROUTES))
}

fn send(sc: &Sidecar, request: &str) -> Resp {
    raw_bytes(sc.proxy_port, request.as_bytes())
}

/// `x-auth-*` headers in any spelling the upstream received.
fn identity_seen(rec: &Record) -> Vec<(String, String)> {
    rec.headers
        .iter()
        .filter(|(n, _)| {
            n.to_ascii_lowercase()
                .replace(['_', '.'], "-")
                .starts_with("x-auth-")
        })
        .cloned()
        .collect()
}

#[test]
fn pingora_refusals_before_routing_answer_in_the_json_shape() {
    let sc = sidecar();
    for request in [
        "GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nab",
        "GET /public/x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        "GET http://h.example/public/x HTTP/1.1\r\nHost: other.example\r\n\r\n",
    ] {
        let r = send(&sc, request);
        assert_error(&r, 400, "INVALID_REQUEST");
        assert_eq!(r.header("connection"), Some("close"), "{}", r.describe());
    }
    let huge = format!(
        "GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1_100_000)
    );
    assert_error(&send(&sc, &huge), 400, "INVALID_REQUEST");
    let r = send(
        &sc,
        "CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n",
    );
    assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    assert!(sc.echo.records().is_empty(), "{:?}", sc.echo.records());
}

#[test]
fn host_is_required_once_and_an_absolute_form_target_is_accepted() {
    let sc = sidecar();
    let r = send(&sc, "GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n");
    let body = assert_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(body["details"]["field"], "Host");
    // HTTP/1.0 does not require Host, but the upstream would get no host at all
    assert_error(
        &send(&sc, "GET /public/ten HTTP/1.0\r\n\r\n"),
        400,
        "INVALID_REQUEST",
    );
    let r = send(&sc, "GET /public/ten HTTP/1.0\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.describe());
    // absolute form: its authority is the host, its path follows the path rules
    let r = send(
        &sc,
        "GET http://app.example/public/abs?q=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let rec = sc.echo.for_path("/public/abs").pop().expect("forwarded");
    assert_eq!(rec.header("host").as_deref(), Some("app.example"));
    assert_eq!(
        rec.header("x-forwarded-host").as_deref(),
        Some("app.example")
    );
    assert_eq!(rec.query, "q=1");
    let r = send(
        &sc,
        "GET http://app.example/public/..;/admin-area/x HTTP/1.1\r\nHost: app.example\r\n\r\n",
    );
    assert_error(&r, 400, "INVALID_REQUEST");
}

#[test]
fn parameters_on_dot_segments_backslashes_and_bad_utf8_are_400() {
    let sc = sidecar();
    let admin = sc.admin_user();
    let auth = format!("Bearer {}", admin.access);
    for target in [
        "/public/..;/admin-area/x",
        "/public/.;/x",
        "/public/%2e%2e;x/admin-area/x",
        "/public/a/;x/b",
        "/public\\..\\admin-area/x",
        "/public/%5c../admin-area/x",
        "/public/%C0%AE%C0%AE/admin-area/x",
        "/public/%FF",
        "/public/%e2%82",
    ] {
        assert_error(&sc.raw("GET", target, &[]), 400, "INVALID_REQUEST");
        assert_error(
            &sc.raw("GET", target, &[("Authorization", &auth)]),
            400,
            "INVALID_REQUEST",
        );
    }
    assert!(sc.echo.records().is_empty(), "{:?}", sc.echo.records());
    // a parameter on a named segment is kept, as sent
    let r = sc.raw("GET", "/public/a;v=1/b", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["path"], "/public/a;v=1/b");
}

#[test]
fn every_reading_of_the_path_must_be_allowed() {
    let sc = sidecar();
    let member = sc.new_user();
    let admin = sc.admin_user();
    let bearer = |u: &User| format!("Bearer {}", u.access);
    for target in [
        "/ADMIN-AREA/x",
        "/Admin-Area/x",
        "/%41dmin-area/x",
        "/admin-area;x/y",
        "/ADMIN-AREA;jsessionid=1/y",
    ] {
        let r = sc.raw("GET", target, &[("Authorization", &bearer(&member))]);
        assert_error(&r, 403, "FORBIDDEN");
        let r = sc.raw("GET", target, &[]);
        assert_error(&r, 401, "UNAUTHENTICATED");
        let r = sc.raw("GET", target, &[("Authorization", &bearer(&admin))]);
        assert_eq!(r.status, 200, "{target}: {}", r.describe());
    }
    // public only when every reading is: `/PUBLIC/x` is not `/public/**` as sent
    assert_error(&sc.raw("GET", "/PUBLIC/x", &[]), 401, "UNAUTHENTICATED");
    assert_error(&sc.raw("GET", "/public;x/y", &[]), 401, "UNAUTHENTICATED");
    let r = sc.raw("GET", "/PUBLIC/x", &[("Authorization", &bearer(&member))]);
    assert_eq!(r.status, 200, "{}", r.describe());
    // the upstream gets the case and parameters as sent
    assert_eq!(r.json()["path"], "/PUBLIC/x");
    assert!(sc.echo.for_path("/ADMIN-AREA/x").len() == 1);
}

#[test]
fn identity_headers_in_any_spelling_never_reach_the_upstream() {
    let sc = sidecar();
    let member = sc.new_user();
    let spoof: &[(&str, &str)] = &[
        ("X-Auth-User-Id", "evil"),
        ("X_Auth_User_Id", "evil"),
        ("X.Auth.User.Id", "evil"),
        ("x-auth-roles", "admin"),
        ("X-AUTH-EMAIL", "evil@example.com"),
        ("X_AUTH.Tenant_Id", "evil"),
    ];
    let r = sc.raw("GET", "/public/spoof-anon", spoof);
    assert_eq!(r.status, 200, "{}", r.describe());
    let rec = sc.echo.for_path("/public/spoof-anon").pop().unwrap();
    assert_eq!(identity_seen(&rec), Vec::<(String, String)>::new());
    let auth = format!("Bearer {}", member.access);
    let mut headers = spoof.to_vec();
    headers.push(("Authorization", &auth));
    let r = sc.raw("GET", "/api/spoof-member", &headers);
    assert_eq!(r.status, 200, "{}", r.describe());
    let rec = sc.echo.for_path("/api/spoof-member").pop().unwrap();
    let seen = identity_seen(&rec);
    assert!(
        seen.iter().all(|(_, v)| v != "evil" && v != "admin"),
        "{seen:?}"
    );
    assert_eq!(rec.header("x-auth-user-id"), Some(member.id.clone()));
    assert_eq!(
        seen.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-auth-user-id"))
            .count(),
        1
    );
}

#[test]
fn forward_auth_refuses_a_described_request_with_identity_headers() {
    let sc = sidecar();
    let member = sc.new_user();
    let auth = format!("Bearer {}", member.access);
    for name in [
        "X-Auth-User-Id",
        "X_Auth_User_Id",
        "X.Auth.User.Id",
        "x-auth-anything",
    ] {
        let r = sc.raw(
            "GET",
            "/auth/verify",
            &[("X-Forwarded-Uri", "/public/x"), (name, "evil")],
        );
        assert_error(&r, 400, "INVALID_REQUEST");
        let r = sc.raw(
            "GET",
            "/auth/verify",
            &[
                ("X-Forwarded-Uri", "/api/x"),
                ("Authorization", &auth),
                (name, "evil"),
            ],
        );
        let body = assert_error(&r, 400, "INVALID_REQUEST");
        assert_eq!(body["details"]["field"], name.to_ascii_lowercase());
    }
    let r = sc.raw(
        "GET",
        "/auth/verify",
        &[("X-Forwarded-Uri", "/api/x"), ("Authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn one_credential_per_request() {
    let sc = sidecar();
    let alice = sc.new_user();
    let bob = sc.new_user();
    let (a, b) = (
        format!("Bearer {}", alice.access),
        format!("Bearer {}", bob.access),
    );
    let tenant = alice.tenant_id.clone();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("Authorization", &a), ("Authorization", &b)],
        vec![
            ("Authorization", &a),
            ("X-API-Key", "sk_live_a"),
            ("X-API-Key", "sk_live_b"),
        ],
        vec![
            ("Authorization", &a),
            ("X-Tenant-ID", &tenant),
            ("X-Tenant-ID", "other"),
        ],
        vec![("Authorization", &a), ("X_Tenant_ID", "other")],
        vec![
            ("Authorization", &a),
            ("X-OTP", "123456"),
            ("X-OTP", "654321"),
        ],
        vec![
            ("Authorization", &a),
            ("X-OTP", "123456"),
            ("otp", "654321"),
        ],
        vec![("Authorization", &a), ("X.API.Key", "sk_live_a")],
    ];
    for headers in &cases {
        for path in ["/api/dup", "/public/dup", "/auth/me"] {
            let r = sc.raw("GET", path, headers);
            assert_error(&r, 400, "INVALID_REQUEST");
        }
    }
    assert!(sc.echo.records().is_empty(), "{:?}", sc.echo.records());
    let r = sc.raw(
        "GET",
        "/api/one",
        &[("Authorization", &a), ("X-Tenant-ID", &tenant)],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn forwarding_headers_from_an_untrusted_peer_are_rebuilt() {
    let sc = sidecar();
    let sent: &[(&str, &str)] = &[
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "1"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Forwarded-Server", "evil"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Proto", "https"),
        ("X_Forwarded_Host", "evil.example"),
        ("Forwarded", "for=203.0.113.9;host=evil.example;proto=https"),
    ];
    let r = sc.raw("GET", "/public/fwd", sent);
    assert_eq!(r.status, 200, "{}", r.describe());
    let rec = sc.echo.for_path("/public/fwd").pop().unwrap();
    let host = format!("127.0.0.1:{}", sc.proxy_port);
    assert_eq!(rec.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(rec.header("x-forwarded-host"), Some(host));
    for (name, _) in &rec.headers {
        let folded = name.to_ascii_lowercase().replace(['_', '.'], "-");
        assert!(
            folded == "x-forwarded-for"
                || folded == "x-forwarded-proto"
                || folded == "x-forwarded-host"
                || !(folded.starts_with("x-forwarded-") || folded == "forwarded"),
            "{name} reached the upstream: {:?}",
            rec.headers
        );
    }
    assert!(
        rec.headers.iter().all(|(_, v)| !v.contains("evil")),
        "{:?}",
        rec.headers
    );
}

#[test]
fn from_a_trusted_peer_forwarding_headers_are_kept_and_the_walk_stops_at_a_non_ip() {
    let sc = Sidecar::start(
        Opts::new()
            .routes(ROUTES)
            .set("proxy", "trusted_proxies", r#"["127.0.0.0/8"]"#)
            .set("rate_limit", "per_ip_per_minute", "3"),
    );
    let r = sc.raw(
        "GET",
        "/public/trusted",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Host", "app.example"),
            ("X-Forwarded-Proto", "https"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let rec = sc.echo.for_path("/public/trusted").pop().unwrap();
    assert_eq!(
        rec.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        rec.header("x-forwarded-host").as_deref(),
        Some("app.example")
    );
    assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some("https"));
    // `198.51.100.N, unknown`: the client-written entries are never the key,
    // so six logins share the ingress' address and the limit of 3 holds
    let mut statuses = Vec::new();
    for n in 1..=6 {
        let xff = format!("198.51.100.{n}, unknown");
        let r = sc
            .req("POST", "/auth/login")
            .header("X-Forwarded-For", &xff)
            .json(
                &serde_json::json!({"email": "nobody@example.com", "password": "wrong-password-1"}),
            )
            .send();
        statuses.push(r.status);
    }
    assert!(statuses[..3].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // distinct real clients behind the trusted proxy each get their own limit
    let r = sc
        .req("POST", "/auth/login")
        .header("X-Forwarded-For", "192.0.2.77")
        .json(&serde_json::json!({"email": "nobody@example.com", "password": "wrong-password-1"}))
        .send();
    assert_error(&r, 401, "INVALID_CREDENTIALS");
}

#[test]
fn connection_nominations_never_drop_the_request_or_our_headers() {
    let sc = sidecar();
    let r = send(
        &sc,
        "GET /public/conn HTTP/1.1\r\nHost: a\r\nConnection: close, X-Forwarded-For, X-Forwarded-Proto, Host, X-Request-Id, X-Drop\r\nX-Forwarded-For: 6.6.6.6\r\nX-Request-Id: keep-me\r\nX-Drop: 1\r\nX-Keep: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let rec = sc.echo.for_path("/public/conn").pop().unwrap();
    assert_eq!(rec.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(rec.header("host").as_deref(), Some("a"));
    assert!(rec.header("x-request-id").is_some());
    assert_eq!(
        rec.header("x-drop"),
        None,
        "a nominated header is hop-by-hop"
    );
    assert_eq!(rec.header("x-keep").as_deref(), Some("1"));
    let many: Vec<String> = (0..12).map(|i| format!("X-H{i}")).collect();
    for connection in [
        "\"X-Forwarded-For\"",
        ":authority",
        many.join(", ").as_str(),
    ] {
        let r = send(
            &sc,
            &format!("GET /public/c HTTP/1.1\r\nHost: a\r\nConnection: {connection}\r\n\r\n"),
        );
        let body = assert_error(&r, 400, "INVALID_REQUEST");
        assert_eq!(body["details"]["field"], "Connection");
    }
}

#[test]
fn a_malformed_chunk_is_400_and_never_half_forwarded() {
    let sc = sidecar();
    for chunks in [
        "zz\r\nabc\r\n0\r\n\r\n",
        "3\r\nabcdef\r\n0\r\n\r\n",
        "-1\r\nabc\r\n0\r\n\r\n",
    ] {
        let r = send(
            &sc,
            &format!(
                "POST /public/chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}"
            ),
        );
        assert_error(&r, 400, "INVALID_REQUEST");
    }
    // Content-Length beside Transfer-Encoding: the length is ambiguous
    let r = send(
        &sc,
        "POST /public/both HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let body = assert_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(body["details"]["field"], "Transfer-Encoding");
    // a bad chunk after good ones, all in one packet: still nothing forwarded
    let r = send(
        &sc,
        "POST /public/chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nxyz\r\n\r\n",
    );
    assert_error(&r, 400, "INVALID_REQUEST");
    assert!(sc.echo.records().is_empty(), "{:?}", sc.echo.records());
    // a body longer than what is checked first still arrives whole
    let big: String = "x".repeat(200_000);
    let r = sc
        .req("POST", "/public/big")
        .body(big.as_bytes(), Some("text/plain"))
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());
    let mut chunked = String::new();
    for piece in big.as_bytes().chunks(7_000) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    let r = send(
        &sc,
        &format!(
            "POST /public/bigchunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked}0\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["body"].as_str().map(str::len), Some(big.len()));
    let r = send(
        &sc,
        "POST /public/chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["body"], "abcde");
}

#[test]
fn a_token_issued_in_the_future_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("hs256.secret");
    let secret = b"an-hs256-secret-of-at-least-32-bytes!!";
    std::fs::write(&secret_path, secret).unwrap();
    let sc = Sidecar::start(Opts::new().set_str("jwt", "algorithm", "HS256").set_str(
        "jwt",
        "hs256_secret_file",
        secret_path.to_str().unwrap(),
    ));
    let user = sc.new_user();
    let header: Header = serde_json::from_value(jwt_header(&user.access)).unwrap();
    let mut claims: Value = jwt_claims(&user.access);
    let key = EncodingKey::from_secret(secret);
    // re-signed as issued, it passes: the forging itself is sound
    let same = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(sc.get("/api/iat", Some(&same)).status, 200);
    let iat = claims["iat"].as_i64().unwrap();
    claims["iat"] = (iat + 30 * 86_400).into();
    let future = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_error(&sc.get("/api/iat", Some(&future)), 401, "INVALID_TOKEN");
    // within the leeway it is accepted (clocks differ a little)
    claims["iat"] = (iat + 10).into();
    let skewed = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(sc.get("/api/iat", Some(&skewed)).status, 200);
}

#[test]
fn config_check_warns_on_an_upper_case_route_glob() {
    let sc = Sidecar::new(Opts::new().routes(&[r#"name = "Admin"
path = "/Admin/**"
roles = ["admin"]"#]));
    let out = sc.cli(&["config", "check"], None);
    assert!(out.success(), "{}", out.describe());
    assert!(
        out.stderr
            .contains("route Admin: path `/Admin/**` has upper-case letters"),
        "{}",
        out.describe()
    );
    let sc = Sidecar::new(Opts::new().routes(ROUTES));
    let out = sc.cli(&["config", "check"], None);
    assert!(!out.stderr.contains("upper-case"), "{}", out.describe());
}
