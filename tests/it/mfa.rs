//! TOTP multi-factor authentication: enrolment, MFA login, replay guard,
//! backup codes, the mfaToken, lockout, disable, step-up on `require_otp`
//! routes and what the store keeps (SPEC §3, §6, §7 step 4, §9, §10, §14).
//!
//! Codes are computed here from the secret that `/auth/mfa/enable` returns
//! (RFC 6238 through totp-rs). A code accepted at login, verify or confirm is
//! not accepted again, so [`Totp::fresh`] hands out codes of strictly
//! increasing time steps and waits for the next 30 s boundary only when no
//! unused step is left. Every test makes its own users, so steps are per test.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Builder, Secret};

use crate::harness::*;

const PERIOD: u64 = 30;
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const QR_PREFIX: &str = "data:image/png;base64,";

// --------------------------------------------------------------------------
// TOTP codes
// --------------------------------------------------------------------------

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Hands out TOTP codes of one secret with strictly increasing time steps
/// (like the conformance suite's `Totp`).
struct Totp {
    totp: totp_rs::Totp,
    last_step: Option<u64>,
}

impl Totp {
    fn new(secret_base32: &str) -> Totp {
        let secret = Secret::try_from_base32(secret_base32.trim_end_matches('='))
            .unwrap_or_else(|e| panic!("secret is not base32 ({e:?}): {secret_base32:?}"));
        let totp = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_skew(0)
            .with_step_duration(PERIOD)
            .with_secret(secret)
            .build()
            .unwrap_or_else(|e| panic!("unusable TOTP secret ({e:?}): {secret_base32:?}"));
        Totp {
            totp,
            last_step: None,
        }
    }

    fn at_step(&self, step: u64) -> String {
        self.totp.generate(step * PERIOD).to_string()
    }

    fn current_step() -> u64 {
        now_secs() as u64 / PERIOD
    }

    /// A code the server accepts now (±1 step) whose step is after every step
    /// handed out before. The previous step is used only while more than 6 s
    /// are left in the current one; sleeps to the next boundary when
    /// step - 1, step and step + 1 are all used up.
    fn fresh(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(32);
        loop {
            let now = now_secs();
            let step = now as u64 / PERIOD;
            let remaining = ((step + 1) * PERIOD) as f64 - now;
            let low = if remaining > 6.0 { step - 1 } else { step };
            let cand = match self.last_step {
                None => low,
                Some(last) => low.max(last + 1),
            };
            if cand <= step + 1 {
                self.last_step = Some(cand);
                return self.at_step(cand);
            }
            assert!(
                Instant::now() < deadline,
                "no fresh TOTP step became available"
            );
            thread::sleep(Duration::from_secs_f64(remaining + 0.25));
        }
    }

    /// A 6-digit code valid for no step in [step - 3, step + 3].
    fn wrong(&self) -> String {
        let step = Self::current_step();
        let valid: Vec<String> = (step - 3..=step + 3).map(|s| self.at_step(s)).collect();
        let mut n: u32 = self.at_step(step).parse().unwrap();
        loop {
            n = (n + 104_729) % 1_000_000;
            let code = format!("{n:06}");
            if !valid.contains(&code) {
                return code;
            }
        }
    }

    /// Whether a server with skew 1 would match `code` to a step right now.
    fn in_window_now(&self, code: &str) -> bool {
        let step = Self::current_step();
        (step - 1..=step + 1).any(|s| self.at_step(s) == code)
    }
}

// --------------------------------------------------------------------------
// helpers
// --------------------------------------------------------------------------

/// What `/auth/mfa/enable` handed out.
struct Enrolment {
    secret: String,
    backup_codes: Vec<String>,
    totp: Totp,
}

/// `POST /auth/mfa/enable` (pending enrolment); returns the secret and codes.
#[track_caller]
fn enable(sc: &Sidecar, user: &User) -> Enrolment {
    let r = sc.post("/auth/mfa/enable", Some(&user.access), &json!({}));
    let body = assert_status(&r, 200);
    let secret = body["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("enable without secret: {}", r.describe()))
        .to_string();
    Enrolment {
        totp: Totp::new(&secret),
        backup_codes: str_list(&body["backupCodes"]),
        secret,
    }
}

/// Enable, then confirm with a fresh code: MFA is on.
#[track_caller]
fn enrol(sc: &Sidecar, user: &User) -> Enrolment {
    let mut e = enable(sc, user);
    let code = e.totp.fresh();
    let r = sc.post(
        "/auth/mfa/confirm",
        Some(&user.access),
        &json!({"code": code}),
    );
    let ok = assert_status(&r, 200);
    assert_eq!(ok["success"], true, "{}", r.describe());
    e
}

/// The password step of an MFA login; asserts the `mfaRequired` answer and
/// returns the mfaToken.
#[track_caller]
fn mfa_login(sc: &Sidecar, user: &User) -> String {
    let r = sc.login(&user.email, &user.password);
    let body = assert_status(&r, 200);
    assert_eq!(body["mfaRequired"], true, "{}", r.describe());
    assert_eq!(body["expiresIn"], 300, "{}", r.describe());
    assert!(
        body.get("accessToken").is_none() && body.get("refreshToken").is_none(),
        "the password step of an MFA login must not hand out tokens: {}",
        r.describe()
    );
    let token = body["mfaToken"].as_str().unwrap_or_default().to_string();
    assert!(
        token.starts_with("mfa_") && token.len() > "mfa_".len() + 16,
        "mfaToken must be mfa_…: {}",
        r.describe()
    );
    token
}

fn verify(sc: &Sidecar, mfa_token: &str, code: &str) -> Resp {
    sc.post(
        "/auth/mfa/verify",
        None,
        &json!({"mfaToken": mfa_token, "code": code}),
    )
}

fn login_with_otp(sc: &Sidecar, user: &User, otp: &str) -> Resp {
    sc.post(
        "/auth/login",
        None,
        &json!({"email": user.email, "password": user.password, "otp": otp}),
    )
}

/// A token response whose access token says `amr: ["pwd","otp"]`.
#[track_caller]
fn assert_otp_tokens(r: &Resp, user: &User) -> Value {
    let body = assert_status(r, 200);
    check_token_response(&body);
    assert_eq!(body["user"]["id"], user.id.as_str(), "{}", r.describe());
    assert_eq!(body["user"]["mfaEnabled"], true, "{}", r.describe());
    let claims = jwt_claims(body["accessToken"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["pwd", "otp"]), "claims: {claims}");
    body
}

/// A 401 with `code`, or the 423 that the failure reaching the lockout limit
/// may answer instead (SPEC §14).
#[track_caller]
fn assert_failure_or_locked(r: &Resp, code: &str) {
    if r.status == 423 {
        assert_error(r, 423, "ACCOUNT_LOCKED");
    } else {
        assert_error(r, 401, code);
    }
}

/// 423 `ACCOUNT_LOCKED` with a `Retry-After` in (0, lockout_seconds]; returns it.
#[track_caller]
fn assert_locked(r: &Resp, lockout_seconds: u64) -> u64 {
    assert_error(r, 423, "ACCOUNT_LOCKED");
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("423 without Retry-After: {}", r.describe()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After is not whole seconds ({e}): {:?}", r.headers));
    assert!(
        retry > 0 && retry <= lockout_seconds,
        "Retry-After {retry} not in (0, {lockout_seconds}]: {}",
        r.describe()
    );
    retry
}

/// A proxied GET with the bearer and extra headers.
fn proxied(sc: &Sidecar, path: &str, token: &str, headers: &[(&str, &str)]) -> Resp {
    sc.req("GET", path).bearer(token).headers(headers).send()
}

/// The one request the upstream received on `path`.
#[track_caller]
fn upstream_got(sc: &Sidecar, path: &str) -> Record {
    let recs = sc.echo.for_path(path);
    assert_eq!(
        recs.len(),
        1,
        "the upstream should have received {path} once: {recs:?}"
    );
    recs.into_iter().next().unwrap()
}

/// A read connection to the instance's SQLite file (WAL: sees what is committed).
fn open_db(sc: &Sidecar) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(
        &sc.db_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", sc.db_path.display()));
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// The text values of a one-column query with the user id as ?1.
fn column(sc: &Sidecar, sql: &str, user_id: &str) -> Vec<String> {
    let c = open_db(sc);
    let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    stmt.query_map([user_id], |row| row.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .map(|v| v.unwrap())
        .collect()
}

/// `k=v` pairs of a query string, percent-decoded.
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .unwrap_or_else(|e| panic!("bad percent-encoding ({e}): {s:?}"))
        .to_string()
}

// --------------------------------------------------------------------------
// enrolment
// --------------------------------------------------------------------------

#[test]
fn enable_returns_secret_otpauth_url_png_qr_and_ten_backup_codes() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.post("/auth/mfa/enable", Some(&user.access), &json!({}));
    let body = assert_status(&r, 200);

    let secret = body["secret"].as_str().unwrap_or_default();
    let unpadded = secret.trim_end_matches('=');
    assert!(
        unpadded.len() >= 16
            && unpadded
                .chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)),
        "secret is not base32: {secret:?}"
    );
    assert!(
        Secret::try_from_base32(unpadded).is_ok_and(|s| s.as_ref().len() >= 20),
        "secret must hold at least 160 bits: {secret:?}"
    );

    let url = body["otpauthUrl"].as_str().unwrap_or_default();
    let rest = url
        .strip_prefix("otpauth://totp/")
        .unwrap_or_else(|| panic!("not an otpauth TOTP URL: {url:?}"));
    let (label, query) = rest
        .split_once('?')
        .unwrap_or_else(|| panic!("otpauth URL without query: {url:?}"));
    assert_eq!(
        pct_decode(label),
        format!("portcullis:{}", user.email),
        "label of {url:?}"
    );
    let q = query_params(query);
    let param = |name: &str| {
        q.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("otpauth URL lacks {name}: {url:?}"))
    };
    assert_eq!(param("secret").trim_end_matches('='), unpadded, "{url}");
    assert_eq!(param("issuer"), "portcullis", "{url}");
    assert_eq!(param("algorithm"), "SHA1", "{url}");
    assert_eq!(param("digits"), "6", "{url}");
    assert_eq!(param("period"), "30", "{url}");

    let qr = body["qrCode"].as_str().unwrap_or_default();
    let b64 = qr.strip_prefix(QR_PREFIX).unwrap_or_else(|| {
        panic!(
            "qrCode must be a {QR_PREFIX} URI: {:?}",
            &qr[..qr.len().min(60)]
        )
    });
    let png = STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("qrCode payload is not base64: {e}"));
    assert!(png.starts_with(PNG_MAGIC), "qrCode is not a PNG");

    let codes = str_list(&body["backupCodes"]);
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit())),
        "backup codes must be 8 digits: {codes:?}"
    );
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), 10, "backup codes repeat: {codes:?}");
}

#[test]
fn mfa_is_pending_until_confirmed_with_a_right_code_then_enable_again_is_409() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enable(&sc, &user);

    // pending: login still hands out tokens, the user has no MFA yet
    let tokens = sc.login_tokens(&user);
    check_token_response(&tokens);
    assert_eq!(tokens["user"]["mfaEnabled"], false, "{tokens}");
    let me = assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    assert_eq!(me["mfaEnabled"], false, "{me}");

    let r = sc.post(
        "/auth/mfa/confirm",
        Some(&user.access),
        &json!({"code": e.totp.wrong()}),
    );
    assert_error(&r, 401, "INVALID_MFA_CODE");
    let me = assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    assert_eq!(me["mfaEnabled"], false, "a wrong code turned MFA on: {me}");

    let r = sc.post(
        "/auth/mfa/confirm",
        Some(&user.access),
        &json!({"code": e.totp.fresh()}),
    );
    let ok = assert_status(&r, 200);
    assert_eq!(ok["success"], true, "{}", r.describe());
    assert!(ok["message"].is_string(), "{}", r.describe());
    let me = assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    assert_eq!(me["mfaEnabled"], true, "{me}");

    let r = sc.post("/auth/mfa/enable", Some(&user.access), &json!({}));
    assert_error(&r, 409, "MFA_ALREADY_ENABLED");
    // the enrolment did not change: the same secret still gives codes
    let token = mfa_login(&sc, &user);
    assert_otp_tokens(&verify(&sc, &token, &e.totp.fresh()), &user);
}

#[test]
fn confirm_without_a_pending_enrolment_is_400() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = sc.post(
        "/auth/mfa/confirm",
        Some(&user.access),
        &json!({"code": "123456"}),
    );
    assert_error(&r, 400, "INVALID_REQUEST");
    let me = assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    assert_eq!(me["mfaEnabled"], false, "{me}");
}

// --------------------------------------------------------------------------
// MFA login
// --------------------------------------------------------------------------

#[test]
fn mfa_login_gives_an_mfa_token_and_verify_gives_otp_tokens_seen_upstream_as_mfa() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let token = mfa_login(&sc, &user);
    let tokens = assert_otp_tokens(&verify(&sc, &token, &e.totp.fresh()), &user);

    let path = format!("/api/mfa-session-{}", rand_hex(8));
    let r = proxied(&sc, &path, tokens["accessToken"].as_str().unwrap(), &[]);
    assert_status(&r, 200);
    let rec = upstream_got(&sc, &path);
    assert_eq!(rec.header("x-auth-mfa").as_deref(), Some("true"), "{rec:?}");
    assert_eq!(
        rec.header("x-auth-user-id").as_deref(),
        Some(user.id.as_str()),
        "{rec:?}"
    );

    // the mfaToken is no access token
    let other = mfa_login(&sc, &user);
    assert_error(&sc.get("/auth/me", Some(&other)), 401, "INVALID_TOKEN");
    let r = proxied(&sc, "/api/with-mfa-token", &other, &[]);
    assert_error(&r, 401, "INVALID_TOKEN");
    assert!(sc.echo.for_path("/api/with-mfa-token").is_empty());

    // a password-only session of the same user is not MFA upstream
    let path = format!("/api/pwd-session-{}", rand_hex(8));
    assert_status(&proxied(&sc, &path, &user.access, &[]), 200);
    let rec = upstream_got(&sc, &path);
    assert_eq!(rec.header("x-auth-mfa"), None, "{rec:?}");
}

#[test]
fn mfa_token_is_single_use_and_an_unknown_one_is_invalid_token() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let token = mfa_login(&sc, &user);
    assert_otp_tokens(&verify(&sc, &token, &e.totp.fresh()), &user);

    // a code the server would accept, so only the token can be the reason
    let good = e.totp.fresh();
    assert_error(&verify(&sc, &token, &good), 401, "INVALID_TOKEN");
    let unknown = format!("mfa_{}", b64url_encode(&[7u8; 32]));
    assert_error(&verify(&sc, &unknown, &good), 401, "INVALID_TOKEN");
    assert_error(&verify(&sc, "garbage", &good), 401, "INVALID_TOKEN");
    let r = sc.post("/auth/mfa/verify", None, &json!({"mfaToken": unknown}));
    assert_error(&r, 400, "INVALID_REQUEST");

    // neither refusal used up the code
    let token = mfa_login(&sc, &user);
    assert_otp_tokens(&verify(&sc, &token, &good), &user);
}

#[test]
fn a_replayed_totp_code_is_refused_on_a_new_mfa_token() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enable(&sc, &user);
    let confirmed_with = e.totp.fresh();
    let r = sc.post(
        "/auth/mfa/confirm",
        Some(&user.access),
        &json!({"code": confirmed_with}),
    );
    assert_status(&r, 200);

    // the code that confirmed the enrolment does not log in
    let token = mfa_login(&sc, &user);
    assert!(
        e.totp.in_window_now(&confirmed_with),
        "test timing: the code left the ±1 step window before it could be replayed"
    );
    assert_error(
        &verify(&sc, &token, &confirmed_with),
        401,
        "INVALID_MFA_CODE",
    );

    let code = e.totp.fresh();
    assert_otp_tokens(&verify(&sc, &token, &code), &user);

    let token = mfa_login(&sc, &user);
    assert!(
        e.totp.in_window_now(&code),
        "test timing: the code left the ±1 step window before it could be replayed"
    );
    assert_error(&verify(&sc, &token, &code), 401, "INVALID_MFA_CODE");
    // the same code in the login body is a replay too
    assert!(e.totp.in_window_now(&code), "test timing");
    assert_error(&login_with_otp(&sc, &user, &code), 401, "INVALID_MFA_CODE");

    // the refused replay did not burn the new mfaToken: a fresh code works
    assert_otp_tokens(&verify(&sc, &token, &e.totp.fresh()), &user);
}

#[test]
fn otp_in_the_login_body_completes_the_login_in_one_step() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let r = login_with_otp(&sc, &user, &e.totp.fresh());
    let tokens = assert_otp_tokens(&r, &user);
    assert!(tokens.get("mfaToken").is_none(), "{tokens}");

    let r = login_with_otp(&sc, &user, &e.totp.wrong());
    assert_error(&r, 401, "INVALID_MFA_CODE");
}

// --------------------------------------------------------------------------
// backup codes
// --------------------------------------------------------------------------

#[test]
fn a_backup_code_works_once_and_another_still_works_on_the_same_mfa_token() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let e = enrol(&sc, &user);
    let (first, second) = (&e.backup_codes[0], &e.backup_codes[1]);

    let token = mfa_login(&sc, &user);
    assert_otp_tokens(&verify(&sc, &token, first), &user);

    let token = mfa_login(&sc, &user);
    assert_error(&verify(&sc, &token, first), 401, "INVALID_MFA_CODE");
    assert_otp_tokens(&verify(&sc, &token, second), &user);

    // in the login body too: used ones are refused, unused ones work
    assert_error(&login_with_otp(&sc, &user, second), 401, "INVALID_MFA_CODE");
    assert_otp_tokens(&login_with_otp(&sc, &user, &e.backup_codes[2]), &user);
}

#[test]
fn regenerating_backup_codes_with_a_totp_gives_ten_new_ones_and_the_old_ones_die() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let r = sc.post(
        "/auth/mfa/backup-codes",
        Some(&user.access),
        &json!({"code": e.totp.wrong()}),
    );
    assert_error(&r, 401, "INVALID_MFA_CODE");

    let r = sc.post(
        "/auth/mfa/backup-codes",
        Some(&user.access),
        &json!({"code": e.totp.fresh()}),
    );
    let body = assert_status(&r, 200);
    let fresh = str_list(&body["backupCodes"]);
    assert_eq!(fresh.len(), 10, "{fresh:?}");
    assert!(
        fresh
            .iter()
            .all(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit())),
        "{fresh:?}"
    );
    let distinct: std::collections::HashSet<_> = fresh.iter().collect();
    assert_eq!(distinct.len(), 10, "{fresh:?}");
    assert!(
        fresh.iter().all(|c| !e.backup_codes.contains(c)),
        "new codes repeat old ones: {fresh:?} vs {:?}",
        e.backup_codes
    );

    let token = mfa_login(&sc, &user);
    assert_error(
        &verify(&sc, &token, &e.backup_codes[0]),
        401,
        "INVALID_MFA_CODE",
    );
    assert_error(
        &verify(&sc, &token, &e.backup_codes[9]),
        401,
        "INVALID_MFA_CODE",
    );
    assert_otp_tokens(&verify(&sc, &token, &fresh[0]), &user);
}

// --------------------------------------------------------------------------
// the mfaToken and the lockout
// --------------------------------------------------------------------------

#[test]
fn five_wrong_codes_burn_the_mfa_token_even_for_a_right_sixth_code() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "100"));
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let token = mfa_login(&sc, &user);
    for _ in 0..5 {
        assert_error(
            &verify(&sc, &token, &e.totp.wrong()),
            401,
            "INVALID_MFA_CODE",
        );
    }
    let right = e.totp.fresh();
    assert_error(&verify(&sc, &token, &right), 401, "INVALID_TOKEN");
    // a backup code cannot revive it either
    assert_error(
        &verify(&sc, &token, &e.backup_codes[0]),
        401,
        "INVALID_TOKEN",
    );

    // the account is fine and the code was not used up: a new token works
    let token = mfa_login(&sc, &user);
    assert_otp_tokens(&verify(&sc, &token, &right), &user);
}

#[test]
fn wrong_codes_at_mfa_verify_lock_the_account_for_right_and_wrong_passwords() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "3"));
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let token = mfa_login(&sc, &user);
    assert_error(
        &verify(&sc, &token, &e.totp.wrong()),
        401,
        "INVALID_MFA_CODE",
    );
    assert_error(
        &verify(&sc, &token, &e.totp.wrong()),
        401,
        "INVALID_MFA_CODE",
    );
    assert_failure_or_locked(&verify(&sc, &token, &e.totp.wrong()), "INVALID_MFA_CODE");

    let first = assert_locked(&sc.login(&user.email, &user.password), 600);
    assert_locked(&sc.login(&user.email, "Wrong-password-123"), 600);
    // the body otp path is locked as well, and so is the mfaToken from before
    assert_locked(&login_with_otp(&sc, &user, &e.backup_codes[0]), 600);
    assert_locked(&verify(&sc, &token, &e.totp.fresh()), 600);

    // attempts while locked do not extend the lock
    thread::sleep(Duration::from_millis(1100));
    assert_locked(&sc.login(&user.email, "Wrong-password-123"), 600);
    let later = assert_locked(&sc.login(&user.email, &user.password), 600);
    assert!(
        later < first,
        "Retry-After went from {first} to {later}: attempts while locked extended the lock"
    );
}

#[test]
fn wrong_passwords_and_wrong_codes_count_together_toward_the_lockout() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "3").set(
        "lockout",
        "lockout_seconds",
        "120",
    ));
    let user = sc.new_user();
    let e = enrol(&sc, &user);

    assert_error(
        &sc.login(&user.email, "Wrong-password-123"),
        401,
        "INVALID_CREDENTIALS",
    );
    assert_error(
        &login_with_otp(&sc, &user, &e.totp.wrong()),
        401,
        "INVALID_MFA_CODE",
    );
    let token = mfa_login(&sc, &user);
    assert_failure_or_locked(&verify(&sc, &token, &e.totp.wrong()), "INVALID_MFA_CODE");

    assert_locked(&sc.login(&user.email, &user.password), 120);
    assert_locked(&sc.login(&user.email, "Wrong-password-123"), 120);
}

#[test]
fn a_success_before_the_limit_resets_the_failure_count() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "3"));
    let user = sc.new_user();
    let bad = "Wrong-password-123";

    assert_error(&sc.login(&user.email, bad), 401, "INVALID_CREDENTIALS");
    assert_error(&sc.login(&user.email, bad), 401, "INVALID_CREDENTIALS");
    sc.login_tokens(&user);
    // without the reset the first of these would be the third failure
    assert_error(&sc.login(&user.email, bad), 401, "INVALID_CREDENTIALS");
    assert_error(&sc.login(&user.email, bad), 401, "INVALID_CREDENTIALS");
    sc.login_tokens(&user);

    // three in a row do lock
    assert_error(&sc.login(&user.email, bad), 401, "INVALID_CREDENTIALS");
    assert_error(&sc.login(&user.email, bad), 401, "INVALID_CREDENTIALS");
    assert_failure_or_locked(&sc.login(&user.email, bad), "INVALID_CREDENTIALS");
    assert_locked(&sc.login(&user.email, &user.password), 600);
}

#[test]
fn a_completed_mfa_login_resets_the_failure_count() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "3"));
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let token = mfa_login(&sc, &user);
    assert_error(
        &verify(&sc, &token, &e.totp.wrong()),
        401,
        "INVALID_MFA_CODE",
    );
    assert_error(
        &verify(&sc, &token, &e.totp.wrong()),
        401,
        "INVALID_MFA_CODE",
    );
    assert_otp_tokens(&verify(&sc, &token, &e.totp.fresh()), &user);

    assert_error(
        &sc.login(&user.email, "Wrong-password-123"),
        401,
        "INVALID_CREDENTIALS",
    );
    assert_error(
        &sc.login(&user.email, "Wrong-password-123"),
        401,
        "INVALID_CREDENTIALS",
    );
    mfa_login(&sc, &user);
}

#[test]
fn wrong_step_up_codes_count_toward_the_lockout() {
    let sc = Sidecar::start(Opts::new().set("lockout", "max_failures", "3"));
    let user = sc.new_user();
    let e = enrol(&sc, &user);

    for i in 0..2 {
        let r = proxied(
            &sc,
            &format!("/secure/wrong-{i}"),
            &user.access,
            &[("X-OTP", &e.totp.wrong())],
        );
        assert_error(&r, 401, "INVALID_OTP");
    }
    let r = proxied(
        &sc,
        "/secure/wrong-2",
        &user.access,
        &[("X-OTP", &e.totp.wrong())],
    );
    assert!(
        r.status == 401 || r.status == 423,
        "third wrong step-up code: {}",
        r.describe()
    );
    assert_error_shape(&r, r.status);
    assert_locked(&sc.login(&user.email, &user.password), 600);
    assert!(sc.echo.with_prefix("/secure/").is_empty());
}

// --------------------------------------------------------------------------
// disable
// --------------------------------------------------------------------------

#[test]
fn disable_needs_the_password_and_a_code_then_login_gives_tokens_directly() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let r = sc.post(
        "/auth/mfa/disable",
        Some(&user.access),
        &json!({"password": format!("{}x", user.password), "code": e.totp.fresh()}),
    );
    assert_error(&r, 401, "INVALID_CREDENTIALS");
    let r = sc.post(
        "/auth/mfa/disable",
        Some(&user.access),
        &json!({"password": user.password, "code": e.totp.wrong()}),
    );
    assert_error(&r, 401, "INVALID_MFA_CODE");
    // still on
    mfa_login(&sc, &user);

    let r = sc.post(
        "/auth/mfa/disable",
        Some(&user.access),
        &json!({"password": user.password, "code": e.totp.fresh()}),
    );
    let ok = assert_status(&r, 200);
    assert_eq!(ok["success"], true, "{}", r.describe());

    let tokens = sc.login_tokens(&user);
    check_token_response(&tokens);
    assert_eq!(tokens["user"]["mfaEnabled"], false, "{tokens}");
    let claims = jwt_claims(tokens["accessToken"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["pwd"]), "{claims}");
    let me = assert_status(&sc.get("/auth/me", Some(&user.access)), 200);
    assert_eq!(me["mfaEnabled"], false, "{me}");
    // step-up routes now treat the user as not enrolled
    let r = proxied(
        &sc,
        "/secure/after-disable",
        &user.access,
        &[("X-OTP", &e.totp.at_step(Totp::current_step()))],
    );
    assert_error(&r, 403, "MFA_NOT_ENROLLED");
}

// --------------------------------------------------------------------------
// step-up on require_otp routes
// --------------------------------------------------------------------------

#[test]
fn step_up_route_needs_a_current_code_of_the_user() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);

    let r = proxied(&sc, "/secure/no-otp", &user.access, &[]);
    assert_error(&r, 401, "OTP_REQUIRED");
    let r = proxied(
        &sc,
        "/secure/wrong-otp",
        &user.access,
        &[("X-OTP", &e.totp.wrong())],
    );
    assert_error(&r, 401, "INVALID_OTP");
    // a real code of the user, but three steps old
    let stale = e.totp.at_step(Totp::current_step() - 3);
    let r = proxied(&sc, "/secure/stale-otp", &user.access, &[("X-OTP", &stale)]);
    assert_error(&r, 401, "INVALID_OTP");
    // a current code of another user
    let other = sc.new_user();
    let other_e = enrol(&sc, &other);
    let foreign = other_e.totp.at_step(Totp::current_step());
    assert!(
        !e.totp.in_window_now(&foreign),
        "test luck: both users share a current code; rerun"
    );
    let r = proxied(
        &sc,
        "/secure/foreign-otp",
        &user.access,
        &[("X-OTP", &foreign)],
    );
    assert_error(&r, 401, "INVALID_OTP");
    for path in [
        "/secure/no-otp",
        "/secure/wrong-otp",
        "/secure/stale-otp",
        "/secure/foreign-otp",
    ] {
        assert!(sc.echo.for_path(path).is_empty(), "{path} reached upstream");
    }

    let code = e.totp.fresh();
    let r = proxied(&sc, "/secure/right-otp", &user.access, &[("X-OTP", &code)]);
    assert_status(&r, 200);
    let rec = upstream_got(&sc, "/secure/right-otp");
    assert_eq!(rec.header("x-auth-mfa").as_deref(), Some("true"), "{rec:?}");
    assert_eq!(
        rec.header("x-auth-user-id").as_deref(),
        Some(user.id.as_str()),
        "{rec:?}"
    );

    // the `otp` alias
    let code = e.totp.fresh();
    let r = proxied(&sc, "/secure/alias", &user.access, &[("otp", &code)]);
    assert_status(&r, 200);
    let rec = upstream_got(&sc, "/secure/alias");
    assert_eq!(rec.header("x-auth-mfa").as_deref(), Some("true"), "{rec:?}");
}

#[test]
fn a_burst_of_step_up_requests_with_one_code_all_pass() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);
    let code = e.totp.fresh();

    // three at once on a cold cache: the echo upstream (tiny_http 0.12) can
    // leave a 5th simultaneous new connection unserved, whatever the sidecar does
    let paths: Vec<String> = (0..8).map(|i| format!("/secure/burst-{i}")).collect();
    let parallel: Vec<Resp> = thread::scope(|s| {
        let handles: Vec<_> = paths[..3]
            .iter()
            .map(|path| {
                let (sc, user, code) = (&sc, &user, &code);
                s.spawn(move || proxied(sc, path, &user.access, &[("X-OTP", code)]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &parallel {
        assert_status(r, 200);
    }
    // then five back to back
    for path in &paths[3..] {
        assert_status(&proxied(&sc, path, &user.access, &[("X-OTP", &code)]), 200);
    }
    for path in &paths {
        let rec = upstream_got(&sc, path);
        assert_eq!(rec.header("x-auth-mfa").as_deref(), Some("true"), "{rec:?}");
        assert_eq!(
            rec.header("x-auth-user-id").as_deref(),
            Some(user.id.as_str()),
            "{rec:?}"
        );
    }
}

#[test]
fn step_up_reads_the_configured_otp_header_and_still_the_otp_alias() {
    let sc = Sidecar::start(Opts::new().set_str("proxy", "otp_header", "X-Second-Factor"));
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);
    let code = e.totp.fresh();

    let r = proxied(
        &sc,
        "/secure/custom-header",
        &user.access,
        &[("X-Second-Factor", &code)],
    );
    assert_status(&r, 200);
    let rec = upstream_got(&sc, "/secure/custom-header");
    assert_eq!(rec.header("x-auth-mfa").as_deref(), Some("true"), "{rec:?}");
    let r = proxied(&sc, "/secure/custom-alias", &user.access, &[("otp", &code)]);
    assert_status(&r, 200);
    let r = proxied(
        &sc,
        "/secure/custom-wrong",
        &user.access,
        &[("X-Second-Factor", &e.totp.wrong())],
    );
    assert_error(&r, 401, "INVALID_OTP");
    assert!(sc.echo.for_path("/secure/custom-wrong").is_empty());
}

#[test]
fn step_up_for_a_user_without_mfa_is_403_mfa_not_enrolled_with_or_without_a_code() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let r = proxied(&sc, "/secure/plain-none", &user.access, &[]);
    assert_error(&r, 403, "MFA_NOT_ENROLLED");
    let r = proxied(
        &sc,
        "/secure/plain-code",
        &user.access,
        &[("X-OTP", "123456")],
    );
    assert_error(&r, 403, "MFA_NOT_ENROLLED");

    // a pending (unconfirmed) enrolment is not MFA yet
    let pending = sc.new_user();
    let e = enable(&sc, &pending);
    let now_code = e.totp.at_step(Totp::current_step());
    let r = proxied(
        &sc,
        "/secure/pending-code",
        &pending.access,
        &[("X-OTP", &now_code)],
    );
    assert_error(&r, 403, "MFA_NOT_ENROLLED");
    let r = proxied(&sc, "/secure/pending-none", &pending.access, &[]);
    assert_error(&r, 403, "MFA_NOT_ENROLLED");

    assert!(
        sc.echo.with_prefix("/secure/").is_empty(),
        "a refused step-up reached the upstream: {:?}",
        sc.echo.with_prefix("/secure/")
    );
}

// --------------------------------------------------------------------------
// at rest
// --------------------------------------------------------------------------

#[test]
fn totp_secrets_are_encrypted_at_rest_and_a_start_without_the_key_fails() {
    let mut sc = Sidecar::new(Opts::new());
    let key_path = sc.workdir.join("totp-secrets.key");
    let mut key = [0u8; 32];
    rand::fill(&mut key[..]);
    std::fs::write(&key_path, STANDARD.encode(key)).unwrap();
    sc.set_config(
        "secrets",
        "encryption_key_file",
        &toml_str(&key_path.to_string_lossy()),
    );
    sc.launch();

    let user = sc.new_user();
    let mut e = enrol(&sc, &user);
    let token = mfa_login(&sc, &user);
    assert_otp_tokens(&verify(&sc, &token, &e.totp.fresh()), &user);

    let stored = column(
        &sc,
        "SELECT secret FROM mfa_secrets WHERE user_id = ?1",
        &user.id,
    );
    assert_eq!(stored.len(), 1, "{stored:?}");
    let unpadded = e.secret.trim_end_matches('=');
    assert!(
        stored[0].starts_with("aes256gcm:"),
        "secret not sealed: {:?}",
        stored[0]
    );
    assert!(
        !stored[0].contains(unpadded) && !stored[0].contains(&unpadded.to_ascii_lowercase()),
        "the stored secret holds the base32 secret: {:?}",
        stored[0]
    );

    // the same store without the key: refuses to start, and says why
    let st = sc.stop();
    assert!(
        st.is_some_and(|s| s.success()),
        "SIGTERM should exit 0: {st:?}"
    );
    let out_len = std::fs::metadata(sc.stdout_path()).map_or(0, |m| m.len() as usize);
    let err_len = std::fs::metadata(sc.stderr_path()).map_or(0, |m| m.len() as usize);
    sc.unset_config("secrets", "encryption_key_file");
    sc.launch_no_wait();
    let probe = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let deadline = Instant::now() + READY_TIMEOUT;
    let status = loop {
        if let Some(st) = sc.wait_exit(Duration::from_millis(50)) {
            break st;
        }
        if let Ok(r) = probe.get(sc.admin_url("/readyz")).send() {
            assert_ne!(
                r.status().as_u16(),
                200,
                "became ready without the key that sealed its TOTP secrets"
            );
        }
        assert!(
            Instant::now() < deadline,
            "still running {READY_TIMEOUT:?} after a start without the key\n{}",
            sc.tails()
        );
    };
    assert!(
        !status.success(),
        "a start without the key must exit non-zero: {status:?}"
    );
    let out = std::fs::read(sc.stdout_path()).unwrap_or_default();
    let err = std::fs::read(sc.stderr_path()).unwrap_or_default();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(out.get(out_len..).unwrap_or_default()),
        String::from_utf8_lossy(err.get(err_len..).unwrap_or_default())
    );
    assert!(
        said.contains("encryption_key_file"),
        "the failed start should name secrets.encryption_key_file: {said:?}"
    );

    // with the key again, everything is readable
    sc.set_config(
        "secrets",
        "encryption_key_file",
        &toml_str(&key_path.to_string_lossy()),
    );
    sc.launch();
    let token = mfa_login(&sc, &user);
    assert_otp_tokens(&verify(&sc, &token, &e.totp.fresh()), &user);
}

#[test]
fn backup_codes_and_mfa_tokens_are_stored_only_hashed() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let mut e = enrol(&sc, &user);
    let token = mfa_login(&sc, &user);

    let hashes = column(
        &sc,
        "SELECT code_hash FROM backup_codes WHERE user_id = ?1",
        &user.id,
    );
    assert_eq!(hashes.len(), 10, "{hashes:?}");
    for h in &hashes {
        assert!(
            h.starts_with("$argon2id$"),
            "backup code not hashed with argon2id: {h:?}"
        );
        for code in &e.backup_codes {
            assert!(
                h != code && !h.contains(code.as_str()),
                "backup code {code} stored in clear: {h:?}"
            );
        }
    }

    let stored = column(
        &sc,
        "SELECT hash FROM mfa_tokens WHERE user_id = ?1",
        &user.id,
    );
    assert!(!stored.is_empty(), "no mfa_tokens row for the user");
    let random_part = token.trim_start_matches("mfa_");
    for h in &stored {
        assert!(
            h != &token && !h.contains(random_part),
            "mfaToken stored in clear: {h:?}"
        );
    }
    // and the token still works (the check above read the right rows)
    assert_otp_tokens(&verify(&sc, &token, &e.totp.fresh()), &user);
}
