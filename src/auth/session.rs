//! Sessions: register, login, refresh with rotation and reuse detection,
//! logout and logout-all. One session = one refresh-token family; revoking
//! it kills its access tokens on the proxy path at once.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::call::{Message, Reply};
use super::issue::{REFRESH_PREFIX, issue_tokens, token_response};
use super::views::{TokenResponse, UserView};
use super::{account, mfa, validate};
use crate::app::App;
use crate::config::Registration;
use crate::crypto::{policy, random_token, token_hash};
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::metrics;
use crate::services::lockout;
use crate::store::StoreEvent;
use crate::store::{NewUser, OneTimeKind, RefreshOutcome, StoreError, Tenant, UserStatus};
use crate::tokens::{self, AccessClaims};
use crate::vocab::{Identity, now};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBody {
    email: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    family_name: Option<String>,
    name: Option<String>,
}

/// The answer to a registration.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Registered {
    /// Logged in at once.
    Tokens(TokenResponse),
    /// The email must be verified before the first login.
    #[serde(rename_all = "camelCase")]
    VerificationRequired {
        user: UserView,
        verification_required: bool,
    },
}

/// 403 `REGISTRATION_CLOSED` unless anyone may register; the route table
/// asks before it reads the body.
pub fn registration_open(app: &App) -> Result<(), Error> {
    if app.config.accounts.registration == Registration::Closed {
        return Err(Error::RegistrationClosed);
    }
    Ok(())
}

/// `POST /auth/register` → 201 (once [`registration_open`] said yes).
pub async fn register(
    app: &App,
    req: &AuthRequest,
    tenant: Tenant,
    body: RegisterBody,
) -> Result<Reply<Registered>, Error> {
    let email = validate::email(body.email.as_deref().unwrap_or_default())?;
    let password = body
        .password
        .ok_or_else(|| Error::invalid("password", "password is required"))?;
    let first_name = validate::name("firstName", body.first_name.as_deref())?;
    let family_name = validate::name("familyName", body.family_name.as_deref())?;
    let name = validate::name("name", body.name.as_deref())?;
    policy::check_password(&password, &email, app.config.accounts.password_min_length)
        .map_err(Error::WeakPassword)?;
    if app.store.user_by_email(tenant.id, &email).await?.is_some() {
        return Err(Error::EmailExists);
    }
    let password_hash = app.passwords.hash(&password).await?;
    let user = app
        .store
        .create_user(NewUser {
            tenant_id: tenant.id,
            email,
            password_hash: Some(password_hash),
            first_name,
            family_name,
            name,
            email_verified: false,
            roles: app.config.accounts.default_roles.clone(),
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Error::EmailExists,
            other => other.into(),
        })?;
    app.audit
        .record(
            Some(req),
            Some(tenant.id),
            Some(user.id),
            "user.registered",
            "success",
            json!({}),
        )
        .await;
    if app.config.accounts.require_email_verification {
        account::send_token(app, &user, OneTimeKind::EmailVerification).await?;
        return Ok(Reply::created(Registered::VerificationRequired {
            user: UserView::from(&user),
            verification_required: true,
        }));
    }
    let tokens = issue_tokens(app, req, &user, &["pwd".to_string()]).await?;
    Ok(Reply::created(Registered::Tokens(tokens)))
}

#[derive(Deserialize)]
pub struct LoginBody {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// TOTP or backup code, completing an MFA login in one step.
    otp: Option<String>,
}

/// The answer to a correct password.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LoggedIn {
    /// Boxed: the challenge is small.
    Tokens(Box<TokenResponse>),
    /// The user has MFA and sent no code: `/auth/mfa/verify` comes next.
    MfaRequired(mfa::MfaChallenge),
}

/// `POST /auth/login` (password path).
pub async fn login(
    app: &App,
    req: &AuthRequest,
    tenant: Tenant,
    body: LoginBody,
) -> Result<Reply<LoggedIn>, Error> {
    let result = login_inner(app, req, tenant, body).await;
    let outcome = match &result {
        Ok((_, outcome)) => outcome,
        Err(e) => login_failure(e),
    };
    metrics::LOGINS.with_label_values(&[outcome]).inc();
    result.map(|(response, _)| response)
}

/// The `portcullis_logins_total` outcome of a login that failed.
fn login_failure(e: &Error) -> &'static str {
    match e {
        Error::InvalidCredentials => "invalid_credentials",
        Error::InvalidMfaCode => "mfa_invalid_code",
        Error::AccountLocked { .. } => "locked",
        Error::AccountDisabled => "disabled",
        Error::InvalidRequest { .. } => "invalid_request",
        Error::Busy { .. } => "busy",
        Error::StoreUnavailable => "store_unavailable",
        _ => "error",
    }
}

/// Counts a login the route table refused before [`login`] ran (tenant,
/// body), as [`login`] counts its own failures.
pub fn login_refused(e: &Error) {
    metrics::LOGINS.with_label_values(&[login_failure(e)]).inc();
}

/// The answer and the metrics outcome of a login.
async fn login_inner(
    app: &App,
    req: &AuthRequest,
    tenant: Tenant,
    body: LoginBody,
) -> Result<(Reply<LoggedIn>, &'static str), Error> {
    let raw_email = body
        .email
        .or(body.username)
        .ok_or_else(|| Error::invalid("email", "email is required"))?;
    let password = body
        .password
        .ok_or_else(|| Error::invalid("password", "password is required"))?;
    if password.is_empty() || password.chars().count() > policy::MAX_PASSWORD_CHARS {
        return Err(Error::InvalidCredentials);
    }
    app.login_limits
        .check(&format!(
            "{}:{}",
            tenant.id,
            raw_email.trim().to_ascii_lowercase()
        ))
        .await?;
    // a malformed email cannot match anyone: same answer and cost as a wrong password
    let user = match validate::email(raw_email.trim()) {
        Ok(email) => app.store.user_by_email(tenant.id, &email).await?,
        Err(_) => None,
    };
    // a locked account answers 423 to right and wrong passwords alike, and
    // attempts while locked neither count nor extend the lock
    if let Some(u) = &user {
        lockout::ensure_unlocked(u)?;
    }
    let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    let ok = app.passwords.verify(&password, hash).await?;
    let user = match (user, ok) {
        (Some(u), true) => u,
        (user, _) => {
            if let Some(u) = &user {
                app.lockout.failure(Some(req), u).await?;
            }
            app.audit
                .record(
                    Some(req),
                    Some(tenant.id),
                    user.map(|u| u.id),
                    "login",
                    "failure",
                    json!({ "reason": "invalid_credentials" }),
                )
                .await;
            return Err(Error::InvalidCredentials);
        }
    };
    if user.status == UserStatus::Disabled {
        app.audit
            .record(
                Some(req),
                Some(tenant.id),
                Some(user.id),
                "login",
                "failure",
                json!({ "reason": "disabled" }),
            )
            .await;
        return Err(Error::AccountDisabled);
    }
    if app.config.accounts.require_email_verification && !user.email_verified {
        return Err(Error::AccountNotVerified);
    }
    let mut amr = vec!["pwd".to_string()];
    if user.mfa_enabled {
        let Some(code) = body.otp.filter(|c| !c.trim().is_empty()) else {
            let challenge = mfa::start_mfa_login(app, &user).await?;
            return Ok((Reply::ok(LoggedIn::MfaRequired(challenge)), "mfa_required"));
        };
        let record = app
            .store
            .mfa(user.id)
            .await?
            .filter(|m| m.confirmed)
            .ok_or(Error::Internal)?;
        if mfa::verify_code(app, user.id, &record, &code, true, false)
            .await?
            .is_none()
        {
            app.lockout.failure(Some(req), &user).await?;
            return Err(Error::InvalidMfaCode);
        }
        amr.push("otp".to_string());
    }
    app.lockout.success(user.id).await?;
    app.audit
        .record(
            Some(req),
            Some(tenant.id),
            Some(user.id),
            "login",
            "success",
            json!({ "mfa": amr.len() > 1 }),
        )
        .await;
    let tokens = issue_tokens(app, req, &user, &amr).await?;
    Ok((Reply::ok(LoggedIn::Tokens(Box::new(tokens))), "success"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshBody {
    refresh_token: Option<String>,
}

/// `POST /auth/refresh`: rotates the refresh token; a rotated one presented
/// again revokes the whole session.
pub async fn refresh(
    app: &App,
    req: &AuthRequest,
    body: RefreshBody,
) -> Result<Reply<TokenResponse>, Error> {
    let result = refresh_inner(app, req, body).await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(e) => refresh_failure(e),
    };
    metrics::TOKEN_REFRESHES.with_label_values(&[outcome]).inc();
    result
}

/// The `portcullis_token_refreshes_total` outcome of a refresh that failed.
fn refresh_failure(e: &Error) -> &'static str {
    match e {
        Error::RefreshTokenReused => "reused",
        Error::TokenExpired => "expired",
        Error::TokenRevoked => "revoked",
        Error::InvalidToken | Error::InvalidRequest { .. } => "invalid",
        Error::StoreUnavailable => "store_unavailable",
        _ => "error",
    }
}

/// Counts a refresh the route table refused before [`refresh`] ran (body).
pub fn refresh_refused(e: &Error) {
    metrics::TOKEN_REFRESHES
        .with_label_values(&[refresh_failure(e)])
        .inc();
}

async fn refresh_inner(
    app: &App,
    req: &AuthRequest,
    body: RefreshBody,
) -> Result<Reply<TokenResponse>, Error> {
    let presented = body
        .refresh_token
        .ok_or_else(|| Error::invalid("refreshToken", "refreshToken is required"))?;
    if !presented.starts_with(REFRESH_PREFIX) || presented.len() > 128 {
        return Err(Error::InvalidToken);
    }
    let cfg = &app.config.jwt;
    let at = now();
    let next = random_token(REFRESH_PREFIX);
    let outcome = app
        .store
        .rotate_refresh_token(
            &token_hash(&presented),
            &token_hash(&next),
            at + cfg.refresh_ttl_seconds as i64,
            at,
        )
        .await?;
    // from here on no store call may fail before the answer: the rotation
    // is done, and a 503 now would cost the client its session
    let (session, user) = match outcome {
        RefreshOutcome::Rotated { session, user } => (session, user),
        RefreshOutcome::Unknown => return Err(Error::InvalidToken),
        RefreshOutcome::Expired => return Err(Error::TokenExpired),
        RefreshOutcome::Revoked => return Err(Error::TokenRevoked),
        RefreshOutcome::Reused {
            session_id,
            user_id,
            tenant_id,
        } => {
            app.revocations
                .revoke(StoreEvent::Sessions {
                    ids: vec![session_id],
                })
                .await;
            app.audit
                .record(
                    Some(req),
                    Some(tenant_id),
                    Some(user_id),
                    "refresh_token.reused",
                    "session_revoked",
                    json!({ "sessionId": session_id }),
                )
                .await;
            return Err(Error::RefreshTokenReused);
        }
    };
    let Some(user) = user.map(|u| *u).filter(|u| u.status == UserStatus::Active) else {
        app.store
            .revoke_session(session.id, "user_inactive")
            .await?;
        app.revocations
            .revoke(StoreEvent::Sessions {
                ids: vec![session.id],
            })
            .await;
        return Err(Error::TokenRevoked);
    };
    // fresh roles and permissions go into the new access token
    let access = tokens::sign(
        &app.keys,
        &AccessClaims::new(cfg, &user, session.id, &session.amr, at),
    )?;
    Ok(Reply::ok(token_response(app, &user, access, next)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogoutBody {
    refresh_token: Option<String>,
}

fn logged_out() -> Reply<Message> {
    Reply::ok(Message {
        message: "Logged out successfully",
    })
}

/// `POST /auth/logout`: revokes the caller's session (and the one of the
/// refresh token in the body, when it belongs to the same user).
pub async fn logout(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: LogoutBody,
) -> Result<Reply<Message>, Error> {
    let mut sessions = Vec::new();
    sessions.extend(identity.session_id);
    let other = match body.refresh_token.filter(|t| t.starts_with(REFRESH_PREFIX)) {
        Some(rt) => app.store.session_of_refresh_token(&token_hash(&rt)).await?,
        None => None,
    };
    if let Some(s) = other.filter(|s| s.user_id == identity.user_id && !sessions.contains(&s.id)) {
        sessions.push(s.id);
    }
    for sid in &sessions {
        app.store.revoke_session(*sid, "logout").await?;
    }
    app.revocations
        .revoke(StoreEvent::Sessions {
            ids: sessions.clone(),
        })
        .await;
    app.audit
        .record(
            Some(req),
            Some(identity.tenant_id),
            Some(identity.user_id),
            "logout",
            "success",
            json!({}),
        )
        .await;
    Ok(logged_out())
}

/// `POST /auth/logout-all`: revokes every session of the caller.
pub async fn logout_all(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
) -> Result<Reply<Message>, Error> {
    let revoked = app
        .revocations
        .revoke_user_sessions(identity.user_id, None, "logout_all")
        .await?;
    app.audit
        .record(
            Some(req),
            Some(identity.tenant_id),
            Some(identity.user_id),
            "logout_all",
            "success",
            json!({ "sessions": revoked.len() }),
        )
        .await;
    Ok(logged_out())
}
