//! Attacks on tokens and sessions not covered by tokens.rs and session.rs
//! (RFC 8725; SPEC §7.3, §9, §14): claim defects in tokens signed with the
//! deployment's real key, tokens of another deployment, tokens of the wrong
//! kind in every place, concurrent refreshes, and revocations that must be
//! visible on the proxy path at once.

use std::sync::{Arc, Barrier};
use std::thread;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::*;

const HS_SECRET: &[u8] = b"attack-suite-hs256-secret-of-at-least-32-bytes";

/// An instance signing with HS256 and a secret the test knows, so that it can
/// sign tokens with exactly the deployment's key and change one thing at a time.
fn hs256_instance() -> (tempfile::TempDir, Sidecar) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs256.secret");
    std::fs::write(&secret, HS_SECRET).unwrap();
    let sc = Sidecar::start(Opts::new().set_str("jwt", "algorithm", "HS256").set_str(
        "jwt",
        "hs256_secret_file",
        secret.to_str().unwrap(),
    ));
    (dir, sc)
}

fn sign(header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(HS_SECRET)).unwrap()
}

/// A compact JWT with a raw JSON header, HMAC-signed with the deployment's secret.
fn sign_raw_header(header: &Value, claims: &Value) -> String {
    let msg = format!(
        "{}.{}",
        b64url_encode(header.to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HS_SECRET);
    let tag = aws_lc_rs::hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", b64url_encode(tag.as_ref()))
}

/// 401 with `code` on the proxy path (nothing reaches the upstream) and on
/// `GET /auth/me`.
#[track_caller]
fn assert_refused_with(sc: &Sidecar, token: &str, code: &str, why: &str) {
    let path = format!("/api/attack-{}", rand_hex(8));
    let r = sc.get(&path, Some(token));
    assert_eq!(r.status, 401, "{why}: {}", r.describe());
    assert_error(&r, 401, code);
    assert!(
        sc.echo.for_path(&path).is_empty(),
        "{why}: reached the upstream"
    );
    let r = sc.get("/auth/me", Some(token));
    assert_eq!(r.status, 401, "{why}: {}", r.describe());
    assert_error(&r, 401, code);
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn claim_and_header_defects_in_tokens_signed_with_the_real_key_are_401_invalid_token() {
    let (_dir, sc) = hs256_instance();
    let user = sc.new_user();
    let kid = jwt_header(&user.access)["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let claims = jwt_claims(&user.access);
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.clone());

    // control: re-signing the genuine claims gives a working token, so every
    // refusal below is due to the one defect it introduces
    let control = sign(&header, &claims);
    let r = sc.get("/api/control", Some(&control));
    assert_eq!(r.status, 200, "re-signed genuine token: {}", r.describe());

    let mut cases: Vec<(&str, String)> = Vec::new();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        f(&mut c);
        c
    };
    cases.push((
        "wrong iss",
        sign(
            &header,
            &with(&|c| c["iss"] = json!("https://evil.example")),
        ),
    ));
    cases.push((
        "wrong aud",
        sign(&header, &with(&|c| c["aud"] = json!("another-service"))),
    ));
    cases.push((
        "aud array without ours",
        sign(&header, &with(&|c| c["aud"] = json!(["a", "b"]))),
    ));
    cases.push((
        "iss missing",
        sign(
            &header,
            &with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
    ));
    cases.push((
        "exp missing",
        sign(
            &header,
            &with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
    ));
    cases.push((
        "nbf missing",
        sign(
            &header,
            &with(&|c| {
                c.as_object_mut().unwrap().remove("nbf");
            }),
        ),
    ));
    cases.push((
        "nbf 10 minutes ahead",
        sign(&header, &with(&|c| c["nbf"] = json!(now() + 600))),
    ));
    cases.push((
        "sub not a uuid",
        sign(&header, &with(&|c| c["sub"] = json!("admin"))),
    ));
    let mut h = header.clone();
    h.typ = Some("JWT".into());
    cases.push(("typ JWT", sign(&h, &claims)));
    let mut h = header.clone();
    h.typ = None;
    cases.push(("typ missing", sign(&h, &claims)));
    let mut h = header.clone();
    h.kid = None;
    cases.push(("kid missing", sign(&h, &claims)));
    cases.push((
        "embedded jku",
        sign_raw_header(
            &json!({"alg": "HS256", "typ": "at+jwt", "kid": kid, "jku": "https://evil.example/jwks.json"}),
            &claims,
        ),
    ));
    cases.push((
        "embedded jwk",
        sign_raw_header(
            &json!({"alg": "HS256", "typ": "at+jwt", "kid": kid,
                    "jwk": {"kty": "oct", "k": b64url_encode(HS_SECRET)}}),
            &claims,
        ),
    ));
    cases.push((
        "x5u",
        sign_raw_header(
            &json!({"alg": "HS256", "typ": "at+jwt", "kid": kid, "x5u": "https://evil.example/c.pem"}),
            &claims,
        ),
    ));
    cases.push((
        "crit",
        sign_raw_header(
            &json!({"alg": "HS256", "typ": "at+jwt", "kid": kid, "crit": ["exp"]}),
            &claims,
        ),
    ));
    cases.push((
        "HS512 with the same secret",
        jsonwebtoken::encode(
            &{
                let mut h = Header::new(Algorithm::HS512);
                h.typ = Some("at+jwt".into());
                h.kid = Some(kid.clone());
                h
            },
            &claims,
            &EncodingKey::from_secret(HS_SECRET),
        )
        .unwrap(),
    ));
    for (why, token) in &cases {
        assert_refused_with(&sc, token, "INVALID_TOKEN", why);
    }
    // expired beyond the leeway is its own code
    let expired = sign(
        &header,
        &with(&|c| {
            c["exp"] = json!(now() - 120);
            c["nbf"] = json!(now() - 1000);
            c["iat"] = json!(now() - 1000);
        }),
    );
    assert_refused_with(&sc, &expired, "TOKEN_EXPIRED", "exp 120 s ago");
    // the genuine token is unaffected by all of it
    assert_eq!(sc.get("/api/after", Some(&user.access)).status, 200);
}

#[test]
fn a_token_from_another_instance_is_401_invalid_token() {
    let a = Sidecar::start(Opts::new());
    let b = Sidecar::start(Opts::new());
    let on_b = b.new_user();
    assert_ne!(
        jwt_header(&on_b.access)["kid"],
        jwt_header(&a.new_user().access)["kid"],
        "two deployments must not share a signing key"
    );
    assert_eq!(b.get("/api/home", Some(&on_b.access)).status, 200);
    assert_refused_with(
        &a,
        &on_b.access,
        "INVALID_TOKEN",
        "token of instance B on A",
    );
    // twice: the unknown kid triggers at most a reload, never an acceptance
    assert_refused_with(&a, &on_b.access, "INVALID_TOKEN", "again");
}

/// Enrols MFA for the user (enable + confirm with the current TOTP code).
fn enrol_mfa(sc: &Sidecar, user: &User) -> totp_rs::Totp {
    let r = sc.post("/auth/mfa/enable", Some(&user.access), &json!({}));
    let body = assert_status(&r, 200);
    let totp = totp_rs::Totp::from_url(body["otpauthUrl"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("otpauth URL: {e:?}: {}", r.describe()));
    let code = totp.generate_current().to_string();
    let r = sc.post(
        "/auth/mfa/confirm",
        Some(&user.access),
        &json!({"code": code}),
    );
    assert_status(&r, 200);
    totp
}

#[test]
fn tokens_of_the_wrong_kind_are_refused_everywhere_and_burn_nothing() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.post(
        "/auth/api-keys",
        Some(&user.access),
        &json!({"name": "attack"}),
    );
    let api_key = assert_status(&r, 201)["key"].as_str().unwrap().to_string();
    let mfa_user = sc.new_user();
    enrol_mfa(&sc, &mfa_user);
    let r = sc.login(&mfa_user.email, &mfa_user.password);
    let mfa_token = assert_status(&r, 200)["mfaToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no mfaToken: {}", r.describe()))
        .to_string();

    // an MFA token where an access token belongs
    assert_refused_with(&sc, &mfa_token, "INVALID_TOKEN", "mfa token as bearer");
    // an access token in the API key header
    let path = format!("/api/attack-{}", rand_hex(8));
    let r = sc
        .req("GET", &path)
        .header("X-API-Key", &user.access)
        .send();
    assert_error(&r, 401, "INVALID_API_KEY");
    assert!(sc.echo.for_path(&path).is_empty());

    // anything but a refresh token at /auth/refresh
    for (why, t) in [
        ("access token", user.access.as_str()),
        ("api key", api_key.as_str()),
        ("mfa token", mfa_token.as_str()),
        (
            "refresh token with a changed character",
            &format!("{}x", &user.refresh[..user.refresh.len() - 1]),
        ),
        ("rt_ prefix only", "rt_"),
    ] {
        let r = sc.post("/auth/refresh", None, &json!({"refreshToken": t}));
        assert_eq!(r.status, 401, "{why} as refresh token: {}", r.describe());
        assert_error(&r, 401, "INVALID_TOKEN");
    }
    // anything but an MFA token at /auth/mfa/verify
    for (why, t) in [
        ("access token", mfa_user.access.as_str()),
        ("refresh token", mfa_user.refresh.as_str()),
        ("api key", api_key.as_str()),
    ] {
        let r = sc.post(
            "/auth/mfa/verify",
            None,
            &json!({"mfaToken": t, "code": "123456"}),
        );
        assert_eq!(r.status, 401, "{why} as mfa token: {}", r.describe());
        assert_error(&r, 401, "INVALID_TOKEN");
    }

    // none of that burnt the real ones
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    assert_status(&r, 200);
    let r = sc
        .req("GET", "/api/key-ok")
        .header("X-API-Key", &api_key)
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn concurrent_refreshes_of_one_token_give_exactly_one_success() {
    let sc = Arc::new(Sidecar::start(Opts::new()));
    let user = sc.new_user();
    const N: usize = 10;
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|_| {
            let (sc, barrier, rt) = (sc.clone(), barrier.clone(), user.refresh.clone());
            thread::spawn(move || {
                barrier.wait();
                sc.post("/auth/refresh", None, &json!({"refreshToken": rt}))
            })
        })
        .collect();
    let results: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok: Vec<&Resp> = results.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one refresh may win: {:?}",
        results.iter().map(Resp::describe).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != 200) {
        assert_error_any(
            r,
            401,
            &["REFRESH_TOKEN_REUSED", "INVALID_TOKEN", "TOKEN_REVOKED"],
        );
    }
}

#[test]
fn refresh_reuse_kills_the_newest_token_of_a_long_family() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    // rotate three times: rt0 -> rt1 -> rt2 -> rt3
    let mut refresh = user.refresh.clone();
    let mut access = user.access.clone();
    let mut family = vec![refresh.clone()];
    for _ in 0..3 {
        let r = sc.post("/auth/refresh", None, &json!({"refreshToken": refresh}));
        let b = assert_status(&r, 200);
        refresh = b["refreshToken"].as_str().unwrap().to_string();
        access = b["accessToken"].as_str().unwrap().to_string();
        family.push(refresh.clone());
    }
    assert_eq!(sc.get("/api/warm", Some(&access)).status, 200);
    // the attacker replays a middle one (rt1)
    let r = sc.post("/auth/refresh", None, &json!({"refreshToken": family[1]}));
    assert_error(&r, 401, "REFRESH_TOKEN_REUSED");
    // the legitimate newest refresh and access tokens are dead at once
    let r = sc.post("/auth/refresh", None, &json!({"refreshToken": refresh}));
    assert_error_any(
        &r,
        401,
        &["REFRESH_TOKEN_REUSED", "TOKEN_REVOKED", "INVALID_TOKEN"],
    );
    assert_refused_with(&sc, &access, "TOKEN_REVOKED", "newest access token");
}

#[test]
fn disabling_or_deleting_a_user_is_visible_on_the_proxy_path_at_once() {
    let sc = Sidecar::start(Opts::new());
    let admin = sc.admin_user();
    let victim = sc.new_user();
    let r = sc.post(
        "/auth/api-keys",
        Some(&victim.access),
        &json!({"name": "k"}),
    );
    let key = assert_status(&r, 201)["key"].as_str().unwrap().to_string();
    // warm the credential cache for both kinds
    assert_eq!(sc.get("/api/warm", Some(&victim.access)).status, 200);
    let r = sc
        .req("GET", "/api/warm-key")
        .header("X-API-Key", &key)
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());

    let r = sc.patch(
        &format!("/auth/admin/users/{}", victim.id),
        Some(&admin.access),
        &json!({"status": "disabled"}),
    );
    assert_status(&r, 200);
    assert_refused_with(&sc, &victim.access, "TOKEN_REVOKED", "disabled user");
    let path = format!("/api/disabled-key-{}", rand_hex(6));
    let r = sc.req("GET", &path).header("X-API-Key", &key).send();
    assert_error(&r, 401, "INVALID_API_KEY");
    assert!(sc.echo.for_path(&path).is_empty());
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": victim.refresh}),
    );
    assert_eq!(r.status / 100, 4, "{}", r.describe());
    assert_ne!(r.status, 200);

    // deletion: another user, same guarantees
    let gone = sc.new_user();
    let r = sc.post("/auth/api-keys", Some(&gone.access), &json!({"name": "k"}));
    let gone_key = assert_status(&r, 201)["key"].as_str().unwrap().to_string();
    assert_eq!(sc.get("/api/warm2", Some(&gone.access)).status, 200);
    let r = sc
        .req("GET", "/api/warm2-key")
        .header("X-API-Key", &gone_key)
        .send();
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = sc.delete(
        &format!("/auth/admin/users/{}", gone.id),
        Some(&admin.access),
    );
    assert_status(&r, 200);
    let path = format!("/api/deleted-{}", rand_hex(6));
    let r = sc.get(&path, Some(&gone.access));
    assert_eq!(r.status, 401, "{}", r.describe());
    assert_error_any(&r, 401, &["TOKEN_REVOKED", "INVALID_TOKEN"]);
    let r = sc.req("GET", &path).header("X-API-Key", &gone_key).send();
    assert_error(&r, 401, "INVALID_API_KEY");
    assert!(sc.echo.for_path(&path).is_empty());
}

#[test]
fn a_password_reset_revokes_every_session_at_once_and_its_token_works_once() {
    let mut sc = Sidecar::new(Opts::new());
    let hook = format!("http://{}/hook", sc.echo.address());
    sc.set_config("notifications", "webhook_url", &toml_str(&hook));
    sc.launch();
    let user = sc.new_user();
    let second = sc.relogin(&user);
    assert_eq!(sc.get("/api/warm", Some(&user.access)).status, 200);
    assert_eq!(sc.get("/api/warm", Some(&second.access)).status, 200);

    let r = sc.post("/auth/password/forgot", None, &json!({"email": user.email}));
    assert_eq!(r.status, 202, "{}", r.describe());
    let rec = sc
        .echo
        .wait_for(
            |r| r.path == "/hook" && r.body.contains("password.reset"),
            std::time::Duration::from_secs(10),
        )
        .expect("no password.reset webhook");
    let msg: Value = serde_json::from_str(&rec.body).unwrap();
    let token = msg["token"].as_str().unwrap().to_string();

    let new_password = strong_password();
    let r = sc.post(
        "/auth/password/reset",
        None,
        &json!({"token": token, "newPassword": new_password}),
    );
    assert_status(&r, 200);
    for (i, access) in [&user.access, &second.access].into_iter().enumerate() {
        assert_refused_with(
            &sc,
            access,
            "TOKEN_REVOKED",
            &format!("session {i} after reset"),
        );
    }
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    // the token is single use
    let r = sc.post(
        "/auth/password/reset",
        None,
        &json!({"token": token, "newPassword": strong_password()}),
    );
    assert_error(&r, 401, "INVALID_TOKEN");
    // the old password is dead, the new one works
    assert_error(
        &sc.login(&user.email, &user.password),
        401,
        "INVALID_CREDENTIALS",
    );
    assert_status(&sc.login(&user.email, &new_password), 200);
    // a forgot for an unknown email answers the same and sends nothing
    let before = sc.echo.for_path("/hook").len();
    let r = sc.post(
        "/auth/password/forgot",
        None,
        &json!({"email": unique_email("nobody")}),
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sc.echo.for_path("/hook").len(), before);
}
