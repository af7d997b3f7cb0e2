//! Access tokens, the JWKS and key rotation (SPEC §7.3, §9, §14).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::harness::*;

const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "k", "oth"];

/// An Ed25519 private key that is not the sidecar's (PKCS#8 v1 DER).
fn foreign_ed25519_der() -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed = uuid::Uuid::new_v4().as_bytes().repeat(2);
    der.extend_from_slice(&seed);
    der
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&["portcullis"]);
    v.set_issuer(&["portcullis"]);
    v.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    v
}

fn key_for(jwks: &[Value], kid: &str) -> Value {
    jwks.iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .unwrap_or_else(|| panic!("kid {kid:?} not in JWKS {jwks:?}"))
}

fn kids(jwks: &[Value]) -> Vec<String> {
    jwks.iter()
        .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Header and payload of `token` with a different last part.
fn with_signature(token: &str, sig: &str) -> String {
    let mut parts = token.split('.');
    format!("{}.{}.{sig}", parts.next().unwrap(), parts.next().unwrap())
}

/// A token with the given header JSON and claims JSON, signed by `sign`.
fn compact(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url_encode(header.to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes()),
        b64url_encode(sig)
    )
}

#[track_caller]
fn assert_refused(sc: &Sidecar, token: &str, why: &str) {
    let path = format!("/api/forged-{}", rand_hex(8));
    let r = sc.get(&path, Some(token));
    assert_eq!(r.status, 401, "{why}: {}", r.describe());
    assert_error(&r, 401, "INVALID_TOKEN");
    assert!(
        sc.echo.for_path(&path).is_empty(),
        "{why}: reached the upstream"
    );
    assert_error(&sc.get("/auth/me", Some(token)), 401, "INVALID_TOKEN");
}

#[test]
fn jwks_lists_public_ed25519_keys_only() {
    let sc = Sidecar::start(Opts::new());
    let r = sc.get("/.well-known/jwks.json", None);
    assert_status(&r, 200);
    let ctype = r.header("content-type").unwrap_or_default();
    assert!(
        ctype.starts_with("application/json") || ctype.starts_with("application/jwk-set+json"),
        "{ctype:?}"
    );
    let keys = sc.jwks();
    for k in &keys {
        assert!(
            k["kid"].as_str().is_some_and(|s| !s.is_empty()),
            "key without kid: {k}"
        );
        assert_eq!(k["kty"], "OKP", "{k}");
        assert_eq!(k["crv"], "Ed25519", "{k}");
        assert_eq!(
            b64url_decode(k["x"].as_str().unwrap_or_default()).len(),
            32,
            "{k}"
        );
        for m in PRIVATE_MEMBERS {
            assert!(
                k.get(*m).is_none(),
                "JWKS exposes private member {m:?}: {k}"
            );
        }
    }
    let mut ids = kids(&keys);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), keys.len(), "duplicate kids: {keys:?}");
}

#[test]
fn access_token_verifies_against_the_jwks_with_the_documented_claims() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let header = jwt_header(&user.access);
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], "EdDSA", "{header}");
    let kid = header["kid"].as_str().unwrap_or_default();
    assert!(!kid.is_empty(), "{header}");
    assert!(
        header.get("jwk").is_none() && header.get("jku").is_none(),
        "{header}"
    );

    let jwk = key_for(&sc.jwks(), kid);
    let key = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).expect("Ed25519 x");
    let data = jsonwebtoken::decode::<Value>(&user.access, &key, &validation())
        .unwrap_or_else(|e| panic!("access token does not verify against the JWKS: {e}"));
    let c = data.claims;
    assert_eq!(c["iss"], "portcullis", "{c}");
    let aud_ok = c["aud"] == "portcullis" || c["aud"] == json!(["portcullis"]);
    assert!(aud_ok, "{c}");
    assert_eq!(c["sub"], user.id.as_str(), "{c}");
    assert_eq!(c["tid"], user.tenant_id.as_str(), "{c}");
    assert!(c["sid"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    assert!(c["jti"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    assert_eq!(c["email"], user.email.as_str(), "{c}");
    assert_eq!(c["roles"], json!(["member"]), "{c}");
    let perms = str_list(&c["perms"]);
    for p in MEMBER_PERMISSIONS {
        assert!(perms.contains(&p.to_string()), "perms lacks {p}: {c}");
    }
    assert_eq!(c["amr"], json!(["pwd"]), "{c}");
    let (iat, nbf, exp) = (
        c["iat"].as_i64().unwrap(),
        c["nbf"].as_i64().unwrap(),
        c["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 900, "{c}");
    assert!(nbf <= iat + 1, "{c}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((iat - now).abs() < 120, "iat {iat} is far from now {now}");

    // the same verification fails for a modified signature
    let sig = user.access.rsplit('.').next().unwrap();
    let mut bytes = b64url_decode(sig);
    bytes[0] ^= 0x01;
    let tampered = with_signature(&user.access, &b64url_encode(&bytes));
    assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &validation()).is_err());
}

#[test]
fn each_login_gets_its_own_session_and_token_id() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let again = sc.relogin(&user);
    let (a, b) = (jwt_claims(&user.access), jwt_claims(&again.access));
    assert_eq!(a["sub"], b["sub"]);
    assert_ne!(a["sid"], b["sid"], "two logins share a session id");
    assert_ne!(a["jti"], b["jti"], "two tokens share a jti");
    let r = sc.get("/api/second-session", Some(&again.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["headers"]["x-auth-session-id"], b["sid"]);
}

#[test]
fn a_tampered_signature_or_payload_is_401_invalid_token() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let sig = user.access.rsplit('.').next().unwrap();
    let mut bytes = b64url_decode(sig);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    assert_refused(
        &sc,
        &with_signature(&user.access, &b64url_encode(&bytes)),
        "flipped signature bit",
    );
    assert_refused(&sc, &with_signature(&user.access, ""), "empty signature");
    // a payload promoted to admin, original signature
    let mut claims = jwt_claims(&user.access);
    claims["roles"] = json!(["admin"]);
    claims["perms"] = json!(["*"]);
    let parts: Vec<&str> = user.access.split('.').collect();
    let promoted = format!(
        "{}.{}.{}",
        parts[0],
        b64url_encode(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(&sc, &promoted, "payload changed");
    assert_error(
        &sc.get("/admin-area/x", Some(&promoted)),
        401,
        "INVALID_TOKEN",
    );
    // the genuine token still works
    assert_eq!(sc.get("/api/genuine", Some(&user.access)).status, 200);
}

#[test]
fn alg_none_and_hs256_signed_with_the_public_key_are_401_invalid_token() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let header = jwt_header(&user.access);
    let kid = header["kid"].as_str().unwrap().to_string();
    let claims = jwt_claims(&user.access);

    for alg in ["none", "None", "NONE"] {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
        assert_refused(&sc, &compact(&h, &claims, b""), "alg none");
    }

    let x = key_for(&sc.jwks(), &kid)["x"].as_str().unwrap().to_string();
    let mut h = Header::new(Algorithm::HS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.clone());
    for secret in [b64url_decode(&x), x.as_bytes().to_vec()] {
        let token = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        assert_refused(&sc, &token, "HS256 with the public key as secret");
    }
}

#[test]
fn a_token_signed_by_another_key_is_401_invalid_token() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let kid = jwt_header(&user.access)["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let claims = jwt_claims(&user.access);
    let enc = EncodingKey::from_ed_der(&foreign_ed25519_der());

    // same kid as the real key
    let mut h = Header::new(Algorithm::EdDSA);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.clone());
    let forged = jsonwebtoken::encode(&h, &claims, &enc).unwrap();
    assert_refused(&sc, &forged, "foreign key, real kid");

    // the attacker's key embedded in the header
    let mut h2 = h.clone();
    h2.jwk = Some(jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::EdDSA).unwrap());
    let forged = jsonwebtoken::encode(&h2, &claims, &enc).unwrap();
    assert_refused(&sc, &forged, "embedded jwk");

    // unknown and missing kid
    let mut h3 = h.clone();
    h3.kid = Some("no-such-kid".into());
    assert_refused(
        &sc,
        &jsonwebtoken::encode(&h3, &claims, &enc).unwrap(),
        "unknown kid",
    );
    let mut h4 = h.clone();
    h4.kid = None;
    assert_refused(
        &sc,
        &jsonwebtoken::encode(&h4, &claims, &enc).unwrap(),
        "no kid",
    );
}

#[test]
fn a_refresh_token_used_as_bearer_is_401_invalid_token() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    assert_refused(&sc, &user.refresh, "refresh token as bearer");
    // and it still works where it belongs
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    assert_status(&r, 200);
}

#[test]
fn an_expired_access_token_is_401_token_expired() {
    let sc = Sidecar::start(Opts::new().set("jwt", "access_ttl_seconds", "2").set(
        "jwt",
        "leeway_seconds",
        "0",
    ));
    let password = strong_password();
    let email = unique_email("exp");
    let r = sc.register(&email, &password);
    let body = assert_status(&r, 201);
    assert_eq!(body["expiresIn"], 2, "{}", r.describe());
    let access = body["accessToken"].as_str().unwrap().to_string();
    let c = jwt_claims(&access);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        2,
        "{c}"
    );
    assert_eq!(sc.get("/api/fresh", Some(&access)).status, 200);
    let r = poll_until(Duration::from_secs(10), || {
        let r = sc.get("/api/stale", Some(&access));
        (r.status != 200).then_some(r)
    })
    .expect("the access token still works 10 s after it expired");
    assert_error(&r, 401, "TOKEN_EXPIRED");
    assert_error(&sc.get("/auth/me", Some(&access)), 401, "TOKEN_EXPIRED");
    // the refresh token still gets a new one
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": body["refreshToken"]}),
    );
    let fresh = assert_status(&r, 200);
    let r = sc.get(
        "/api/fresh-again",
        Some(fresh["accessToken"].as_str().unwrap()),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn keys_rotate_adds_a_new_signing_key_and_keeps_the_old_one_valid() {
    let mut sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let old_kid = jwt_header(&user.access)["kid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(kids(&sc.jwks()).contains(&old_kid));
    let st = sc.stop().expect("portcullis did not stop on SIGTERM");
    assert!(st.success(), "exit status after SIGTERM: {st}");

    let out = sc.cli(&["keys", "rotate"], None);
    assert!(out.success(), "{}", out.describe());
    let listed = sc.cli(&["keys", "list"], None);
    assert!(listed.success(), "{}", listed.describe());
    assert!(
        listed.stdout.contains(&old_kid),
        "keys list lacks the old kid: {}",
        listed.describe()
    );

    sc.launch();
    let jwks_kids = kids(&sc.jwks());
    assert!(
        jwks_kids.contains(&old_kid),
        "the old key left the JWKS: {jwks_kids:?}"
    );
    assert!(
        jwks_kids.len() >= 2,
        "no new key in the JWKS: {jwks_kids:?}"
    );
    let new_kid = jwks_kids
        .iter()
        .find(|k| **k != old_kid && out.stdout.contains(k.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "keys rotate must print the new kid (one of {jwks_kids:?}): {}",
                out.describe()
            )
        })
        .clone();
    assert!(
        listed.stdout.contains(&new_kid),
        "keys list lacks the new kid: {}",
        listed.describe()
    );

    // a token signed by the previous key still verifies on the proxy path
    let r = sc.get("/api/after-rotate", Some(&user.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    // new logins are signed with the new key
    let again = sc.relogin(&user);
    let header = jwt_header(&again.access);
    assert_eq!(header["kid"], new_kid.as_str(), "{header}");
    let jwk = key_for(&sc.jwks(), &new_kid);
    let key = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    jsonwebtoken::decode::<Value>(&again.access, &key, &validation())
        .unwrap_or_else(|e| panic!("a new token does not verify with the new key: {e}"));
    assert_eq!(
        sc.get("/api/after-rotate-2", Some(&again.access)).status,
        200
    );
}

/// The access token of a sidecar configured with `alg` verifies against its
/// JWKS with the matching JWK, and the proxy accepts it.
fn selectable_algorithm_round_trip(alg: &str, kty: &str, decoding: fn(&Value) -> DecodingKey) {
    let sc = Sidecar::start(Opts::new().set_str("jwt", "algorithm", alg));
    let user = sc.new_user();
    let header = jwt_header(&user.access);
    assert_eq!(header["alg"], alg, "{header}");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    let jwk = key_for(&sc.jwks(), header["kid"].as_str().unwrap_or_default());
    assert_eq!(jwk["kty"], kty, "{jwk}");
    for private in PRIVATE_MEMBERS {
        assert!(jwk.get(*private).is_none(), "JWKS leaks {private}: {jwk}");
    }
    let mut v = validation();
    v.algorithms = vec![header["alg"].as_str().unwrap().parse().unwrap()];
    jsonwebtoken::decode::<Value>(&user.access, &decoding(&jwk), &v)
        .unwrap_or_else(|e| panic!("{alg} token does not verify against the JWKS: {e}"));
    let r = sc.get("/api/alg", Some(&user.access));
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn es256_is_selectable_and_published_as_an_ec_key() {
    selectable_algorithm_round_trip("ES256", "EC", |jwk| {
        DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
            .unwrap()
    });
}

#[test]
fn rs256_is_selectable_and_published_as_an_rsa_key() {
    selectable_algorithm_round_trip("RS256", "RSA", |jwk| {
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap()
    });
}

#[test]
fn hs256_needs_a_secret_file_and_is_never_published() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs256.secret");
    std::fs::write(&secret, "an-hs256-secret-of-at-least-32-bytes!!").unwrap();
    let sc = Sidecar::start(Opts::new().set_str("jwt", "algorithm", "HS256").set_str(
        "jwt",
        "hs256_secret_file",
        secret.to_str().unwrap(),
    ));
    let user = sc.new_user();
    assert_eq!(jwt_header(&user.access)["alg"], "HS256");
    let jwks = assert_status(&sc.get("/.well-known/jwks.json", None), 200);
    assert_eq!(
        jwks["keys"],
        json!([]),
        "a symmetric key must not be published"
    );
    let mut v = validation();
    v.algorithms = vec![Algorithm::HS256];
    jsonwebtoken::decode::<Value>(
        &user.access,
        &DecodingKey::from_secret(b"an-hs256-secret-of-at-least-32-bytes!!"),
        &v,
    )
    .expect("HS256 token verifies with the configured secret");
    assert_eq!(sc.get("/api/hs", Some(&user.access)).status, 200);
    // without the secret file the configuration is refused
    let out = sc.cli_env(
        &["config", "check"],
        None,
        &[("PORTCULLIS_JWT__HS256_SECRET_FILE", "")],
    );
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("hs256_secret_file"),
        "{}",
        out.describe()
    );
}
