//! Passkeys (WebAuthn): registration for a logged-in user, the list, rename
//! and delete, a login without a password (discoverable, or for an email),
//! and a passkey as the second step of an MFA login. A ceremony's state is
//! kept in the store between begin and finish (single use, short-lived), so
//! any replica finishes what another began; the checks are `crypto::webauthn`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::call::{Done, Reply};
use super::issue::issue_tokens;
use super::mfa::{self, open_mfa_token};
use super::session::LoggedIn;
use super::validate;
use super::views::{TokenResponse, rfc3339};
use crate::app::App;
use crate::crypto::webauthn::{Asserted, Begun, Refused, RelyingParty, StoredCredential};
use crate::crypto::webauthn::{assertion_claims, registration_challenge};
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::metrics;
use crate::services::lockout;
use crate::store::{Passkey, PasskeyChallenge, StoreError, Tenant, User, UserStatus};
use crate::vocab::{Identity, now};

const NAME_MAX_CHARS: usize = 64;
const DEFAULT_NAME: &str = "Passkey";

/// The relying party, or 400 while `[passkeys]` is off.
fn relying_party(app: &App) -> Result<&RelyingParty, Error> {
    app.passkeys.as_ref().ok_or_else(|| {
        Error::bad_request("passkeys are not configured on this server (passkeys.rp_id)")
    })
}

/// Counts a finished ceremony in `portcullis_passkey_ceremonies_total`.
fn counted<T>(ceremony: &str, result: Result<T, Error>) -> Result<T, Error> {
    let outcome = match &result {
        Ok(_) => "success",
        Err(
            Error::PasskeyRejected(_)
            | Error::InvalidToken
            | Error::InvalidCredentials
            | Error::AccountLocked { .. }
            | Error::AccountDisabled
            | Error::AccountNotVerified
            | Error::RateLimited { .. }
            | Error::InvalidRequest { .. },
        ) => "rejected",
        Err(_) => "error",
    };
    metrics::PASSKEY_CEREMONIES
        .with_label_values(&[ceremony, outcome])
        .inc();
    result
}

fn rejected(reason: &str) -> Error {
    Error::PasskeyRejected(reason.to_string())
}

const CHALLENGE_GONE: &str = "challenge unknown, expired or already used";

/// The options of a ceremony begun: for `navigator.credentials.create/get`
/// (`PublicKeyCredential.parse…OptionsFromJSON`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ceremony {
    /// Seconds the challenge lives.
    pub expires_in: u64,
    pub public_key: Value,
}

/// A passkey as its owner sees it (the key itself is never shown).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub transports: Vec<String>,
}

impl From<&Passkey> for PasskeyView {
    fn from(p: &Passkey) -> Self {
        PasskeyView {
            id: p.id.to_string(),
            name: p.name.clone(),
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(rfc3339),
            transports: p.transports.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PasskeyList {
    pub passkeys: Vec<PasskeyView>,
}

/// Keeps a ceremony begun until its finish.
async fn keep(
    app: &App,
    begun: Begun,
    ceremony: &str,
    tenant_id: Uuid,
    user_id: Option<Uuid>,
    binding: Option<String>,
) -> Result<Reply<Ceremony>, Error> {
    let ttl = app.config.passkeys.challenge_ttl_seconds;
    app.store
        .create_passkey_challenge(PasskeyChallenge {
            challenge: begun.challenge,
            ceremony: ceremony.to_string(),
            tenant_id,
            user_id,
            binding,
            state: begun.state,
            expires_at: now() + ttl as i64,
        })
        .await?;
    Ok(Reply::ok(Ceremony {
        expires_in: ttl,
        public_key: begun.options,
    }))
}

/// Takes (single use) the ceremony of `challenge` if it is one of `kinds`
/// and has not expired (times are whole seconds: a challenge lives at least
/// `challenge_ttl_seconds` and less than one second more).
async fn take(app: &App, challenge: &str, kinds: &[&str]) -> Result<PasskeyChallenge, Error> {
    app.store
        .take_passkey_challenge(challenge)
        .await?
        .filter(|c| kinds.contains(&c.ceremony.as_str()) && c.expires_at >= now())
        .ok_or_else(|| rejected(CHALLENGE_GONE))
}

/// The caller's user, active.
async fn caller(app: &App, identity: &Identity) -> Result<User, Error> {
    app.store
        .user_by_id(identity.tenant_id, identity.user_id)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or(Error::TokenRevoked)
}

fn credential_bytes(credential: Option<Value>) -> Result<Vec<u8>, Error> {
    match credential {
        Some(v @ Value::Object(_)) => serde_json::to_vec(&v).map_err(|_| Error::Internal),
        Some(_) => Err(Error::invalid(
            "credential",
            "credential must be the JSON of a PublicKeyCredential",
        )),
        None => Err(Error::invalid("credential", "credential is required")),
    }
}

fn passkey_name(name: Option<&str>, default: Option<&str>) -> Result<String, Error> {
    let name = match (name.map(str::trim), default) {
        (Some(n), _) if !n.is_empty() => n,
        (_, Some(d)) => d,
        _ => return Err(Error::invalid("name", "name is required")),
    };
    if name.chars().count() > NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            format!("name must be 1 to {NAME_MAX_CHARS} characters without control characters"),
        ));
    }
    Ok(name.to_string())
}

fn descriptors(passkeys: &[Passkey]) -> Vec<(&[u8], &[String])> {
    passkeys
        .iter()
        .map(|p| (p.credential_id.as_slice(), p.transports.as_slice()))
        .collect()
}

/// `POST /auth/passkeys/register/begin`: creation options bound to the
/// caller's session.
pub async fn register_begin(
    app: &App,
    _req: &AuthRequest,
    identity: Arc<Identity>,
) -> Result<Reply<Ceremony>, Error> {
    let rp = relying_party(app)?;
    let user = caller(app, &identity).await?;
    let held = app.store.passkeys_of_user(user.tenant_id, user.id).await?;
    let display = user.name.clone().unwrap_or_else(|| user.email.clone());
    let begun = rp
        .begin_registration(
            user.id.into_bytes(),
            &user.email,
            &display,
            &descriptors(&held),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "passkey creation options");
            Error::Internal
        })?;
    let session = identity.session_id.map(|s| s.to_string());
    keep(
        app,
        begun,
        "register",
        user.tenant_id,
        Some(user.id),
        session,
    )
    .await
}

#[derive(Deserialize)]
pub struct RegisterFinishBody {
    credential: Option<Value>,
    name: Option<String>,
}

/// `POST /auth/passkeys/register/finish` → 201 with the new passkey.
pub async fn register_finish(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: RegisterFinishBody,
) -> Result<Reply<PasskeyView>, Error> {
    counted(
        "register",
        register_finish_inner(app, req, identity, body).await,
    )
}

async fn register_finish_inner(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: RegisterFinishBody,
) -> Result<Reply<PasskeyView>, Error> {
    let rp = relying_party(app)?;
    let name = passkey_name(body.name.as_deref(), Some(DEFAULT_NAME))?;
    let response = credential_bytes(body.credential)?;
    let user = caller(app, &identity).await?;
    let challenge = registration_challenge(&response).map_err(Error::PasskeyRejected)?;
    let ceremony = take(app, &challenge, &["register"]).await?;
    let session = identity.session_id.map(|s| s.to_string());
    if ceremony.user_id != Some(user.id) || ceremony.binding != session {
        return Err(rejected("the challenge was begun by another session"));
    }
    let new = rp
        .finish_registration(&ceremony.state, &response)
        .map_err(Error::PasskeyRejected)?;
    let passkey = Passkey {
        // time-ordered: the list is oldest first even within one second
        id: Uuid::now_v7(),
        tenant_id: user.tenant_id,
        user_id: user.id,
        credential_id: new.credential_id,
        public_key: new.public_key,
        state: new.state,
        transports: new.transports,
        name,
        created_at: now(),
        last_used_at: None,
    };
    app.store
        .create_passkey(passkey.clone())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => rejected("this passkey is already registered"),
            other => other.into(),
        })?;
    app.audit
        .user_event(
            Some(req),
            &user,
            "passkey.registered",
            "success",
            json!({ "passkeyId": passkey.id }),
        )
        .await;
    Ok(Reply::created(PasskeyView::from(&passkey)))
}

/// `GET /auth/passkeys`: the caller's passkeys, oldest first.
pub async fn list(
    app: &App,
    _req: &AuthRequest,
    identity: Arc<Identity>,
) -> Result<Reply<PasskeyList>, Error> {
    relying_party(app)?;
    let user = caller(app, &identity).await?;
    let held = app.store.passkeys_of_user(user.tenant_id, user.id).await?;
    Ok(Reply::ok(PasskeyList {
        passkeys: held.iter().map(PasskeyView::from).collect(),
    }))
}

#[derive(Deserialize)]
pub struct RenameBody {
    name: Option<String>,
}

/// `PATCH /auth/passkeys/{id}`: a new name; 404 for another user's passkey.
pub async fn rename(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    id: &str,
    body: RenameBody,
) -> Result<Reply<PasskeyView>, Error> {
    relying_party(app)?;
    let user = caller(app, &identity).await?;
    let id = Uuid::parse_str(id).map_err(|_| Error::NotFound)?;
    let name = passkey_name(body.name.as_deref(), None)?;
    let renamed = app
        .store
        .rename_passkey(user.tenant_id, user.id, id, &name)
        .await?
        .ok_or(Error::NotFound)?;
    app.audit
        .user_event(
            Some(req),
            &user,
            "passkey.renamed",
            "success",
            json!({ "passkeyId": id }),
        )
        .await;
    Ok(Reply::ok(PasskeyView::from(&renamed)))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    password: Option<String>,
}

/// `DELETE /auth/passkeys/{id}`: with the password, or from a session begun
/// with a passkey within `passkeys.reauth_seconds`.
pub async fn delete(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    id: &str,
    body: DeleteBody,
) -> Result<Reply<Done>, Error> {
    relying_party(app)?;
    let user = caller(app, &identity).await?;
    let id = Uuid::parse_str(id).map_err(|_| Error::NotFound)?;
    match body.password {
        Some(password) => mfa::password_again(app, req, &user, &password).await?,
        None => {
            let session = match identity.session_id {
                Some(sid) => app.store.session(sid).await?,
                None => None,
            };
            let recent = now() - app.config.passkeys.reauth_seconds as i64;
            if !session.is_some_and(|s| s.amr.iter().any(|m| m == "hwk") && s.created_at >= recent)
            {
                return Err(Error::invalid(
                    "password",
                    "password is required (or log in with a passkey again first)",
                ));
            }
        }
    }
    if !app
        .store
        .delete_passkey(user.tenant_id, user.id, id)
        .await?
    {
        return Err(Error::NotFound);
    }
    app.audit
        .user_event(
            Some(req),
            &user,
            "passkey.deleted",
            "success",
            json!({ "passkeyId": id }),
        )
        .await;
    Ok(Reply::ok(Done::new("Passkey deleted")))
}

#[derive(Deserialize)]
pub struct LoginBeginBody {
    email: Option<String>,
}

/// `POST /auth/passkeys/login/begin`: request options for any discoverable
/// passkey or, given the email of a user holding passkeys, for those. An
/// unknown email gets the discoverable options: no account enumeration.
pub async fn login_begin(
    app: &App,
    _req: &AuthRequest,
    tenant: Tenant,
    body: LoginBeginBody,
) -> Result<Reply<Ceremony>, Error> {
    let rp = relying_party(app)?;
    let mut held = Vec::new();
    if let Some(email) = body
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        && let Ok(email) = validate::email(email)
        && let Some(user) = app.store.user_by_email(tenant.id, &email).await?
    {
        held = app.store.passkeys_of_user(tenant.id, user.id).await?;
    }
    let begun = rp.begin_assertion(&descriptors(&held)).map_err(|e| {
        tracing::error!(error = %e, "passkey request options");
        Error::Internal
    })?;
    match held.first() {
        Some(p) => keep(app, begun, "login_allow", tenant.id, Some(p.user_id), None).await,
        None => keep(app, begun, "login", tenant.id, None, None).await,
    }
}

#[derive(Deserialize)]
pub struct LoginFinishBody {
    credential: Option<Value>,
}

/// `POST /auth/passkeys/login/finish`: the token response (`amr` has `hwk`,
/// `pop`, and `uv` + `mfa` when the authenticator verified the user); for a
/// user with TOTP whose authenticator did not verify them, the MFA step.
pub async fn login_finish(
    app: &App,
    req: &AuthRequest,
    body: LoginFinishBody,
) -> Result<Reply<LoggedIn>, Error> {
    counted("login", login_finish_inner(app, req, body).await)
}

/// The passkey an assertion names, and its user: the checks before the
/// signature's (tenant, the user the ceremony was for, the account usable).
async fn asserted_user(
    app: &App,
    ceremony: &PasskeyChallenge,
    credential_id: &[u8],
    user_handle: Option<[u8; 16]>,
) -> Result<(Passkey, User), Error> {
    let passkey = app
        .store
        .passkey_by_credential_id(credential_id)
        .await?
        .filter(|p| p.tenant_id == ceremony.tenant_id)
        .filter(|p| ceremony.user_id.is_none_or(|u| u == p.user_id))
        .ok_or_else(|| rejected("unknown passkey"))?;
    if user_handle.is_some_and(|h| h != passkey.user_id.into_bytes()) {
        return Err(rejected("the passkey is not this user's"));
    }
    let user = app
        .store
        .user_by_id(passkey.tenant_id, passkey.user_id)
        .await?
        .ok_or_else(|| rejected("unknown passkey"))?;
    Ok((passkey, user))
}

/// Checks the signature of `passkey` and records its use; a failure counts
/// toward the user's lockout, a counter that went backwards is audited.
async fn check_assertion(
    app: &App,
    req: &AuthRequest,
    ceremony: &PasskeyChallenge,
    response: &[u8],
    passkey: &Passkey,
    user: &User,
) -> Result<Asserted, Error> {
    let rp = relying_party(app)?;
    let stored = StoredCredential {
        credential_id: &passkey.credential_id,
        user_handle: passkey.user_id.into_bytes(),
        public_key: &passkey.public_key,
        state: &passkey.state,
    };
    let discoverable = ceremony.ceremony == "login";
    let asserted = match rp.finish_assertion(discoverable, &ceremony.state, response, &stored) {
        Ok(a) => a,
        Err(refused) => {
            let reason = match refused {
                Refused::CounterRegressed => {
                    app.audit
                        .user_event(
                            Some(req),
                            user,
                            "passkey.counter_regressed",
                            "failure",
                            json!({ "passkeyId": passkey.id }),
                        )
                        .await;
                    "the signature counter did not increase (a cloned authenticator?)".to_string()
                }
                Refused::Other(reason) => reason,
            };
            app.lockout.failure(Some(req), user).await?;
            app.audit
                .user_event(
                    Some(req),
                    user,
                    "login.passkey",
                    "failure",
                    json!({ "passkeyId": passkey.id, "reason": reason }),
                )
                .await;
            return Err(Error::PasskeyRejected(reason));
        }
    };
    if !app
        .store
        .record_passkey_use(passkey.id, &passkey.state, &asserted.state, now())
        .await?
    {
        return Err(rejected(
            "the passkey was used by another login at the same time",
        ));
    }
    Ok(asserted)
}

/// 403 unless the account may log in now (the same rules as a password).
fn ensure_may_log_in(app: &App, user: &User) -> Result<(), Error> {
    lockout::ensure_unlocked(user)?;
    if user.status == UserStatus::Disabled {
        return Err(Error::AccountDisabled);
    }
    if app.config.accounts.require_email_verification && !user.email_verified {
        return Err(Error::AccountNotVerified);
    }
    Ok(())
}

fn passkey_amr(asserted: &Asserted, first: &[&str]) -> Vec<String> {
    let mut amr: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    amr.extend(["hwk".to_string(), "pop".to_string()]);
    if asserted.user_verified {
        amr.push("uv".into());
    }
    if asserted.user_verified || !first.is_empty() {
        amr.push("mfa".into());
    }
    amr
}

async fn login_finish_inner(
    app: &App,
    req: &AuthRequest,
    body: LoginFinishBody,
) -> Result<Reply<LoggedIn>, Error> {
    relying_party(app)?;
    let response = credential_bytes(body.credential)?;
    let claims = assertion_claims(&response).map_err(Error::PasskeyRejected)?;
    let ceremony = take(app, &claims.challenge, &["login", "login_allow"]).await?;
    let (passkey, user) =
        asserted_user(app, &ceremony, &claims.credential_id, claims.user_handle).await?;
    app.login_limits
        .check(&format!(
            "{}:{}",
            user.tenant_id,
            user.email.to_ascii_lowercase()
        ))
        .await?;
    ensure_may_log_in(app, &user)?;
    let asserted = check_assertion(app, req, &ceremony, &response, &passkey, &user).await?;
    if user.mfa_enabled && !asserted.user_verified {
        let challenge = mfa::start_mfa_login(app, &user).await?;
        return Ok(Reply::ok(LoggedIn::MfaRequired(challenge)));
    }
    app.lockout.success(user.id).await?;
    app.audit
        .user_event(
            Some(req),
            &user,
            "login",
            "success",
            json!({ "method": "passkey", "mfa": asserted.user_verified, "passkeyId": passkey.id }),
        )
        .await;
    let tokens = issue_tokens(app, req, &user, &passkey_amr(&asserted, &[])).await?;
    Ok(Reply::ok(LoggedIn::Tokens(Box::new(tokens))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MfaBeginBody {
    mfa_token: Option<String>,
}

/// `POST /auth/passkeys/mfa/begin`: request options for the passkeys of
/// the user an `mfa_…` token is pending for.
pub async fn mfa_begin(
    app: &App,
    _req: &AuthRequest,
    body: MfaBeginBody,
) -> Result<Reply<Ceremony>, Error> {
    let rp = relying_party(app)?;
    let (hash, user) = open_mfa_token(app, body.mfa_token).await?;
    let held = app.store.passkeys_of_user(user.tenant_id, user.id).await?;
    if held.is_empty() {
        return Err(Error::bad_request(
            "no passkey is registered for this account: use a TOTP code",
        ));
    }
    let begun = rp.begin_assertion(&descriptors(&held)).map_err(|e| {
        tracing::error!(error = %e, "passkey request options");
        Error::Internal
    })?;
    keep(app, begun, "mfa", user.tenant_id, Some(user.id), Some(hash)).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MfaFinishBody {
    mfa_token: Option<String>,
    credential: Option<Value>,
}

/// `POST /auth/passkeys/mfa/finish`: the second step of an MFA login with a
/// passkey instead of a code; the `mfa_…` token is used up.
pub async fn mfa_finish(
    app: &App,
    req: &AuthRequest,
    body: MfaFinishBody,
) -> Result<Reply<TokenResponse>, Error> {
    counted("mfa", mfa_finish_inner(app, req, body).await)
}

async fn mfa_finish_inner(
    app: &App,
    req: &AuthRequest,
    body: MfaFinishBody,
) -> Result<Reply<TokenResponse>, Error> {
    relying_party(app)?;
    let response = credential_bytes(body.credential)?;
    let (hash, user) = open_mfa_token(app, body.mfa_token).await?;
    let result = async {
        let claims = assertion_claims(&response).map_err(Error::PasskeyRejected)?;
        let ceremony = take(app, &claims.challenge, &["mfa"]).await?;
        if ceremony.binding.as_deref() != Some(hash.as_str()) {
            return Err(rejected("the challenge was begun for another login"));
        }
        let (passkey, owner) =
            asserted_user(app, &ceremony, &claims.credential_id, claims.user_handle).await?;
        if owner.id != user.id {
            return Err(rejected("unknown passkey"));
        }
        check_assertion(app, req, &ceremony, &response, &passkey, &user).await
    }
    .await;
    let asserted = match result {
        Ok(a) => a,
        Err(e) => {
            if matches!(e, Error::PasskeyRejected(_)) {
                app.store.mfa_token_failure(&hash).await?;
            }
            return Err(e);
        }
    };
    if !app.store.consume_mfa_token(&hash, now()).await? {
        return Err(Error::InvalidToken);
    }
    app.lockout.success(user.id).await?;
    app.audit
        .user_event(
            Some(req),
            &user,
            "login",
            "success",
            json!({ "method": "password+passkey", "mfa": true }),
        )
        .await;
    let tokens = issue_tokens(app, req, &user, &passkey_amr(&asserted, &["pwd"])).await?;
    Ok(Reply::ok(tokens))
}
