//! TOTP multi-factor routes (SPEC §6, §9): enable (pending until confirm),
//! confirm, disable, backup-codes, and the second step of an MFA login
//! (`/auth/mfa/verify` with the `mfa_…` token). [`verify_code`] is the one
//! check of a TOTP (replay-guarded) or backup code (single use).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::call::{Done, Reply};
use super::issue::issue_tokens;
use super::views::TokenResponse;
use crate::app::App;
use crate::crypto::{random_token, token_hash, totp};
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::metrics;
use crate::services::lockout;
use crate::store::StoreEvent;
use crate::store::{MfaRecord, StoreError, User, UserStatus};
use crate::vocab::Identity;
use crate::vocab::now;

pub const MFA_TOKEN_PREFIX: &str = "mfa_";
pub const MFA_TOKEN_TTL: i64 = 300;
/// Wrong codes that burn an MFA token.
pub const MFA_TOKEN_MAX_FAILURES: u32 = 5;

/// Which factor a code proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Totp,
    BackupCode,
}

/// Checks `code` for the user: a current TOTP whose step was not used before
/// (recorded, and with `confirm` MFA turns on), or — when `backup` is allowed
/// and it has 8 digits — an unused backup code (used up). None: wrong code.
pub async fn verify_code(
    app: &App,
    user_id: Uuid,
    mfa: &MfaRecord,
    code: &str,
    backup: bool,
    confirm: bool,
) -> Result<Option<Factor>, Error> {
    let code = code.trim();
    if backup && totp::is_backup_code_shape(code) {
        let codes = app.store.unused_backup_codes(user_id).await?;
        let hashes = codes.iter().map(|c| c.code_hash.clone()).collect();
        if let Some(i) = app.passwords.verify_any(code, hashes).await?
            && app.store.use_backup_code(user_id, codes[i].id).await?
        {
            return Ok(Some(Factor::BackupCode));
        }
        return Ok(None);
    }
    let secret = app
        .secrets
        .open(&mfa.secret, &user_id.to_string())
        .map_err(|e| {
            tracing::error!(error = %e, "TOTP secret unreadable");
            Error::Internal
        })?;
    let Some(step) = totp::check(&secret, code, now() as u64, app.config.mfa.skew_steps) else {
        return Ok(None);
    };
    if app
        .store
        .accept_totp_step(user_id, step as i64, confirm)
        .await?
    {
        Ok(Some(Factor::Totp))
    } else {
        // the step was used before: a replay
        Ok(None)
    }
}

/// The caller's user as stored now, and that user's enrolment.
async fn caller(app: &App, identity: &Identity) -> Result<(User, Option<MfaRecord>), Error> {
    let user = app
        .store
        .user_by_id(identity.tenant_id, identity.user_id)
        .await?
        .ok_or(Error::TokenRevoked)?;
    let mfa = app.store.mfa(user.id).await?;
    Ok((user, mfa))
}

async fn wrong_code(app: &App, req: &AuthRequest, user: &User, kind: &str) -> Error {
    if let Err(e) = app.lockout.failure(Some(req), user).await {
        return e;
    }
    app.audit
        .user_event(Some(req), user, kind, "failure", json!({}))
        .await;
    Error::InvalidMfaCode
}

/// Backup codes for the user: the plain codes (shown once) and their hashes.
async fn backup_codes(app: &App) -> Result<(Vec<String>, Vec<String>), Error> {
    let codes = totp::new_backup_codes();
    let hashes = app.passwords.hash_many(codes.clone()).await?;
    Ok((codes, hashes))
}

/// The answer to `/auth/mfa/enable`: what the authenticator app needs, and
/// the backup codes, shown this once (keys sorted, as always answered).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolment {
    pub backup_codes: Vec<String>,
    pub otpauth_url: String,
    /// A `data:image/png;base64,…` QR code of `otpauthUrl`.
    pub qr_code: String,
    /// Base32.
    pub secret: String,
}

/// `POST /auth/mfa/enable`.
pub async fn enable(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
) -> Result<Reply<Enrolment>, Error> {
    let (user, mfa) = caller(app, &identity).await?;
    if user.mfa_enabled || mfa.is_some_and(|m| m.confirmed) {
        return Err(Error::MfaAlreadyEnabled);
    }
    let secret = totp::new_secret();
    let stored = app
        .secrets
        .seal(&secret, &user.id.to_string())
        .map_err(|_| Error::Internal)?;
    let url =
        totp::otpauth_url(&secret, &app.config.mfa.issuer, &user.email).ok_or(Error::Internal)?;
    let qr = totp::qr_data_uri(&url).ok_or(Error::Internal)?;
    let (codes, hashes) = backup_codes(app).await?;
    app.store
        .begin_mfa(user.id, &stored, hashes)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Error::MfaAlreadyEnabled,
            other => other.into(),
        })?;
    mfa_changed(app, req, &user, "mfa.enrolment_started").await;
    Ok(Reply::ok(Enrolment {
        backup_codes: codes,
        otpauth_url: url,
        qr_code: qr,
        secret: totp::base32(&secret),
    }))
}

#[derive(Deserialize)]
pub struct CodeBody {
    code: Option<String>,
}

fn required_code(code: Option<String>) -> Result<String, Error> {
    code.filter(|c| !c.trim().is_empty())
        .ok_or_else(|| Error::invalid("code", "code is required"))
}

/// `POST /auth/mfa/confirm`: the first code turns MFA on.
pub async fn confirm(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: CodeBody,
) -> Result<Reply<Done>, Error> {
    let (user, mfa) = caller(app, &identity).await?;
    let code = required_code(body.code)?;
    let Some(mfa) = mfa else {
        return Err(Error::bad_request(
            "no MFA enrolment is pending: call /auth/mfa/enable first",
        ));
    };
    if mfa.confirmed {
        return Err(Error::MfaAlreadyEnabled);
    }
    lockout::ensure_unlocked(&user)?;
    if verify_code(app, user.id, &mfa, &code, false, true)
        .await?
        .is_none()
    {
        return Err(wrong_code(app, req, &user, "mfa.confirm").await);
    }
    mfa_changed(app, req, &user, "mfa.enabled").await;
    Ok(Reply::ok(Done::new("MFA enabled")))
}

#[derive(Deserialize)]
pub struct DisableBody {
    password: Option<String>,
    code: Option<String>,
}

/// `POST /auth/mfa/disable`: needs the password and a code.
pub async fn disable(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: DisableBody,
) -> Result<Reply<Done>, Error> {
    let (user, mfa) = caller(app, &identity).await?;
    let password = body
        .password
        .ok_or_else(|| Error::invalid("password", "password is required"))?;
    let code = required_code(body.code)?;
    let Some(mfa) = mfa.filter(|m| m.confirmed) else {
        return Err(Error::bad_request("MFA is not enabled"));
    };
    password_again(app, req, &user, &password).await?;
    if verify_code(app, user.id, &mfa, &code, true, false)
        .await?
        .is_none()
    {
        return Err(wrong_code(app, req, &user, "mfa.disable").await);
    }
    app.store.disable_mfa(user.id).await?;
    mfa_changed(app, req, &user, "mfa.disabled").await;
    Ok(Reply::ok(Done::new("MFA disabled")))
}

/// The password of a logged-in user, asked again before a sensitive change
/// (MFA off, a passkey deleted): 401 `INVALID_CREDENTIALS` when wrong, which
/// counts toward the lockout; 423 while locked.
pub async fn password_again(
    app: &App,
    req: &AuthRequest,
    user: &User,
    password: &str,
) -> Result<(), Error> {
    lockout::ensure_unlocked(user)?;
    if !app
        .passwords
        .verify(password, user.password_hash.as_deref())
        .await?
    {
        app.lockout.failure(Some(req), user).await?;
        return Err(Error::InvalidCredentials);
    }
    Ok(())
}

/// The user's MFA changed: cached enrolments are revoked everywhere and the
/// change is audited as `kind`.
async fn mfa_changed(app: &App, req: &AuthRequest, user: &User, kind: &str) {
    app.revocations
        .revoke(StoreEvent::Mfa { user_id: user.id })
        .await;
    app.audit
        .user_event(Some(req), user, kind, "success", json!({}))
        .await;
}

/// `{"backupCodes": […]}`, shown this once.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupCodes {
    pub backup_codes: Vec<String>,
}

/// `POST /auth/mfa/backup-codes`: ten new codes; the old ones die.
pub async fn regenerate_backup_codes(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: CodeBody,
) -> Result<Reply<BackupCodes>, Error> {
    let (user, mfa) = caller(app, &identity).await?;
    let code = required_code(body.code)?;
    let Some(mfa) = mfa.filter(|m| m.confirmed) else {
        return Err(Error::bad_request("MFA is not enabled"));
    };
    lockout::ensure_unlocked(&user)?;
    if verify_code(app, user.id, &mfa, &code, false, false)
        .await?
        .is_none()
    {
        return Err(wrong_code(app, req, &user, "mfa.backup_codes").await);
    }
    let (codes, hashes) = backup_codes(app).await?;
    app.store.replace_backup_codes(user.id, hashes).await?;
    app.audit
        .user_event(
            Some(req),
            &user,
            "mfa.backup_codes_regenerated",
            "success",
            json!({}),
        )
        .await;
    Ok(Reply::ok(BackupCodes {
        backup_codes: codes,
    }))
}

/// The answer to a correct password of a user with MFA (keys sorted, as
/// always answered).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MfaChallenge {
    /// Seconds.
    pub expires_in: i64,
    /// How the step may be taken: `totp` (a TOTP or backup code at
    /// `/auth/mfa/verify`) and, for a user holding one, `passkey`.
    pub methods: Vec<&'static str>,
    pub mfa_required: bool,
    pub mfa_token: String,
}

/// Starts the second step of an MFA login: a single-use `mfa_…` token.
pub async fn start_mfa_login(app: &App, user: &User) -> Result<MfaChallenge, Error> {
    let token = random_token(MFA_TOKEN_PREFIX);
    app.store
        .create_mfa_token(
            &token_hash(&token),
            user.id,
            user.tenant_id,
            now() + MFA_TOKEN_TTL,
        )
        .await?;
    let mut methods = vec!["totp"];
    if app.passkeys.is_some()
        && !app
            .store
            .passkeys_of_user(user.tenant_id, user.id)
            .await?
            .is_empty()
    {
        methods.push("passkey");
    }
    Ok(MfaChallenge {
        expires_in: MFA_TOKEN_TTL,
        methods,
        mfa_required: true,
        mfa_token: token,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyBody {
    mfa_token: Option<String>,
    code: Option<String>,
}

/// `POST /auth/mfa/verify`: the second step of an MFA login.
pub async fn verify(
    app: &App,
    req: &AuthRequest,
    body: VerifyBody,
) -> Result<Reply<TokenResponse>, Error> {
    let result = verify_inner(app, req, body).await;
    let outcome = match &result {
        Ok(_) => "mfa_success",
        Err(e) => verify_failure(e),
    };
    metrics::LOGINS.with_label_values(&[outcome]).inc();
    result.map(Reply::ok)
}

/// The `portcullis_logins_total` outcome of a second step that failed.
fn verify_failure(e: &Error) -> &'static str {
    match e {
        Error::InvalidMfaCode => "mfa_invalid_code",
        Error::AccountLocked { .. } => "locked",
        _ => "mfa_error",
    }
}

/// Counts a second step the route table refused before [`verify`] ran (body).
pub fn verify_refused(e: &Error) {
    metrics::LOGINS
        .with_label_values(&[verify_failure(e)])
        .inc();
}

/// The pending MFA login of an `mfa_…` token: its hash and its user (401
/// `INVALID_TOKEN` when unknown, used, expired or burnt; the user's account
/// must be usable).
pub async fn open_mfa_token(app: &App, token: Option<String>) -> Result<(String, User), Error> {
    let token = token.ok_or_else(|| Error::invalid("mfaToken", "mfaToken is required"))?;
    if !token.starts_with(MFA_TOKEN_PREFIX) || token.len() > 128 {
        return Err(Error::InvalidToken);
    }
    let hash = token_hash(&token);
    let record = app
        .store
        .mfa_token(&hash)
        .await?
        .filter(|t| !t.used && t.expires_at > now() && t.failures < MFA_TOKEN_MAX_FAILURES)
        .ok_or(Error::InvalidToken)?;
    let user = app
        .store
        .user_by_id(record.tenant_id, record.user_id)
        .await?
        .ok_or(Error::InvalidToken)?;
    if user.status == UserStatus::Disabled {
        return Err(Error::AccountDisabled);
    }
    lockout::ensure_unlocked(&user)?;
    Ok((hash, user))
}

async fn verify_inner(
    app: &App,
    req: &AuthRequest,
    body: VerifyBody,
) -> Result<TokenResponse, Error> {
    let code = required_code(body.code)?;
    let (hash, user) = open_mfa_token(app, body.mfa_token).await?;
    let mfa = app
        .store
        .mfa(user.id)
        .await?
        .filter(|m| m.confirmed)
        .ok_or(Error::InvalidToken)?;
    if verify_code(app, user.id, &mfa, &code, true, false)
        .await?
        .is_none()
    {
        app.store.mfa_token_failure(&hash).await?;
        return Err(wrong_code(app, req, &user, "login.mfa").await);
    }
    if !app.store.consume_mfa_token(&hash, now()).await? {
        return Err(Error::InvalidToken);
    }
    app.lockout.success(user.id).await?;
    app.audit
        .user_event(Some(req), &user, "login", "success", json!({ "mfa": true }))
        .await;
    issue_tokens(app, req, &user, &["pwd".to_string(), "otp".to_string()]).await
}
