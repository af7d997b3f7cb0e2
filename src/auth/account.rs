//! The caller's own account: `GET`/`PATCH /auth/me`, change-password, and
//! the user-creation path shared by the CLI (`portcullis user create`) and
//! the bootstrap admin (`PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL/PASSWORD`).

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use std::sync::Arc;

use super::call::{Done, Message, Reply};
use super::validate;
use super::views::{UserView, rfc3339};
use crate::app::App;
use crate::crypto::{policy, random_token, token_hash};
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::notify;
use crate::store::{
    NewUser, OneTimeKind, OneTimeToken, ProfileUpdate, StoreError, Tenant, User, UserStatus,
};
use crate::vocab::Identity;
use crate::vocab::now;

async fn current_user(app: &App, identity: &Identity) -> Result<User, Error> {
    app.store
        .user_by_id(identity.tenant_id, identity.user_id)
        .await?
        .ok_or(Error::TokenRevoked)
}

/// `GET /auth/me` (a JWT or an API key).
pub async fn get_me(
    app: &App,
    _req: &AuthRequest,
    identity: Arc<Identity>,
) -> Result<Reply<UserView>, Error> {
    let user = current_user(app, &identity).await?;
    Ok(Reply::ok(UserView::from(&user)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchMeBody {
    first_name: Option<String>,
    family_name: Option<String>,
    name: Option<String>,
    email: Option<String>,
}

/// `PATCH /auth/me`: names and email; privileged fields are ignored.
pub async fn patch_me(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: PatchMeBody,
) -> Result<Reply<UserView>, Error> {
    let update = ProfileUpdate {
        first_name: validate::name("firstName", body.first_name.as_deref())?,
        family_name: validate::name("familyName", body.family_name.as_deref())?,
        name: validate::name("name", body.name.as_deref())?,
        email: body.email.as_deref().map(validate::email).transpose()?,
    };
    let new_email = update.email.is_some();
    let user = app
        .store
        .update_profile(identity.tenant_id, identity.user_id, update)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Error::EmailExists,
            StoreError::NotFound(_) => Error::TokenRevoked,
            other => other.into(),
        })?;
    // the store clears `emailVerified` when the address really changed
    let email_changed = new_email && !user.email_verified;
    if email_changed && app.config.accounts.require_email_verification {
        // the new address must be verified before the next login
        send_token(app, &user, OneTimeKind::EmailVerification).await?;
    }
    app.audit
        .user_event(
            Some(req),
            &user,
            "profile.updated",
            "success",
            json!({ "emailChanged": email_changed }),
        )
        .await;
    Ok(Reply::ok(UserView::from(&user)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangePasswordBody {
    current_password: Option<String>,
    new_password: Option<String>,
}

/// `POST /auth/change-password`: every other session of the user is revoked.
pub async fn change_password(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: ChangePasswordBody,
) -> Result<Reply<Done>, Error> {
    let current = body
        .current_password
        .ok_or_else(|| Error::invalid("currentPassword", "currentPassword is required"))?;
    let new = body
        .new_password
        .ok_or_else(|| Error::invalid("newPassword", "newPassword is required"))?;
    let user = current_user(app, &identity).await?;
    if current.chars().count() > policy::MAX_PASSWORD_CHARS
        || !app
            .passwords
            .verify(&current, user.password_hash.as_deref())
            .await?
    {
        app.audit
            .user_event(Some(req), &user, "password.change", "failure", json!({}))
            .await;
        return Err(Error::InvalidCredentials);
    }
    policy::check_password(&new, &user.email, app.config.accounts.password_min_length)
        .map_err(Error::WeakPassword)?;
    let hash = app.passwords.hash(&new).await?;
    app.store
        .set_password(user.tenant_id, user.id, &hash)
        .await?;
    let revoked = app
        .revocations
        .revoke_user_sessions(user.id, identity.session_id, "password_changed")
        .await?;
    app.audit
        .user_event(
            Some(req),
            &user,
            "password.changed",
            "success",
            json!({ "sessionsRevoked": revoked.len() }),
        )
        .await;
    Ok(Reply::ok(Done::new("Password changed")))
}

/// An account an operator or an admin creates.
pub struct NewAccount {
    pub tenant_id: Uuid,
    /// Already validated and lower-cased.
    pub email: String,
    /// None: the user is invited and sets it with `/auth/invite/accept`.
    pub password: Option<String>,
    pub first_name: Option<String>,
    pub family_name: Option<String>,
    pub roles: Vec<String>,
    pub email_verified: bool,
}

pub const VERIFICATION_TTL: i64 = 24 * 3600;
pub const RESET_TTL: i64 = 3600;
pub const INVITE_TTL: i64 = 7 * 24 * 3600;

/// Creates a user (admin API, CLI, bootstrap): the password is checked and
/// hashed; without one an invitation token is made, sent, and returned.
pub async fn create_user(app: &App, new: NewAccount) -> Result<(User, Option<String>), Error> {
    if new.roles.is_empty() || new.roles.iter().any(|r| !crate::tenancy::valid_slug(r)) {
        return Err(Error::invalid("roles", "roles must name existing roles"));
    }
    let hash = match &new.password {
        Some(pw) => {
            policy::check_password(pw, &new.email, app.config.accounts.password_min_length)
                .map_err(Error::WeakPassword)?;
            Some(app.passwords.hash(pw).await?)
        }
        None => None,
    };
    let user = app
        .store
        .create_user(NewUser {
            tenant_id: new.tenant_id,
            email: new.email,
            password_hash: hash,
            first_name: new.first_name,
            family_name: new.family_name,
            name: None,
            email_verified: new.email_verified,
            roles: new.roles,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Error::EmailExists,
            StoreError::NotFound(what) => Error::invalid("roles", format!("unknown {what}")),
            other => other.into(),
        })?;
    let invite = if new.password.is_none() {
        Some(send_token(app, &user, OneTimeKind::Invite).await?)
    } else {
        None
    };
    Ok((user, invite))
}

/// Makes a single-use token of `kind` for the user and sends it by webhook.
pub async fn send_token(app: &App, user: &User, kind: OneTimeKind) -> Result<String, Error> {
    let (ttl, notification) = match kind {
        OneTimeKind::EmailVerification => (VERIFICATION_TTL, "email.verification"),
        OneTimeKind::PasswordReset => (RESET_TTL, "password.reset"),
        OneTimeKind::Invite => (INVITE_TTL, "user.invited"),
    };
    let token = random_token("");
    let expires_at = now() + ttl;
    app.store
        .create_one_time_token(
            &token_hash(&token),
            kind,
            user.id,
            user.tenant_id,
            expires_at,
        )
        .await?;
    notify::send(
        app.webhook.as_ref(),
        notify::Notification {
            kind: notification,
            tenant_id: user.tenant_id.to_string(),
            user_id: user.id.to_string(),
            email: user.email.clone(),
            token: token.clone(),
            expires_at: rfc3339(expires_at),
        },
        app.log_tokens,
    );
    Ok(token)
}

/// The live token of `kind`, or 401 `INVALID_TOKEN`.
async fn live_token(
    app: &App,
    raw: Option<String>,
    kind: OneTimeKind,
) -> Result<(String, OneTimeToken), Error> {
    let raw = raw.ok_or_else(|| Error::invalid("token", "token is required"))?;
    if raw.is_empty() || raw.len() > 128 {
        return Err(Error::InvalidToken);
    }
    let hash = token_hash(raw.trim());
    let token = app
        .store
        .one_time_token(&hash, kind)
        .await?
        .filter(|t| !t.used && t.expires_at > now())
        .ok_or(Error::InvalidToken)?;
    Ok((hash, token))
}

#[derive(Deserialize)]
pub struct TokenBody {
    token: Option<String>,
}

/// `POST /auth/verify-email`.
pub async fn verify_email(
    app: &App,
    req: &AuthRequest,
    body: TokenBody,
) -> Result<Reply<UserView>, Error> {
    let (hash, token) = live_token(app, body.token, OneTimeKind::EmailVerification).await?;
    if !app.store.consume_one_time_token(&hash, now()).await? {
        return Err(Error::InvalidToken);
    }
    let user = app
        .store
        .set_email_verified(token.tenant_id, token.user_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => Error::InvalidToken,
            other => other.into(),
        })?;
    app.audit
        .user_event(Some(req), &user, "email.verified", "success", json!({}))
        .await;
    Ok(Reply::ok(UserView::from(&user)))
}

#[derive(Deserialize)]
pub struct ForgotBody {
    email: Option<String>,
}

/// `POST /auth/password/forgot`: 202 at once, whatever the email; the lookup
/// and the webhook run in the background so timing tells nothing.
pub async fn forgot_password(
    app: &Arc<App>,
    req: &AuthRequest,
    tenant: Tenant,
    body: ForgotBody,
) -> Result<Reply<Message>, Error> {
    let raw = body
        .email
        .ok_or_else(|| Error::invalid("email", "email is required"))?;
    let accepted = Reply::with_status(
        202,
        Message {
            message: "If the account exists, a reset link has been sent",
        },
    );
    let Ok(email) = validate::email(raw.trim()) else {
        return Ok(accepted);
    };
    app.login_limits
        .check(&format!("{}:{email}", tenant.id))
        .await?;
    let app = app.clone();
    let req = req.clone();
    tokio::spawn(async move {
        let user = match app.store.user_by_email(tenant.id, &email).await {
            Ok(Some(u)) if u.status == UserStatus::Active => u,
            _ => return,
        };
        if let Err(e) = send_token(&app, &user, OneTimeKind::PasswordReset).await {
            tracing::warn!(error = %e, "password reset token not created");
            return;
        }
        app.audit
            .user_event(
                Some(&req),
                &user,
                "password.reset_requested",
                "success",
                json!({}),
            )
            .await;
    });
    Ok(accepted)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetBody {
    token: Option<String>,
    new_password: Option<String>,
}

/// Sets the password of the user a live token of `kind` names, then uses the
/// token up. A weak password is refused before, so it does not use the token.
async fn set_password_by_token(
    app: &App,
    raw_token: Option<String>,
    kind: OneTimeKind,
    password: &str,
) -> Result<User, Error> {
    let (hash, token) = live_token(app, raw_token, kind).await?;
    let user = app
        .store
        .user_by_id(token.tenant_id, token.user_id)
        .await?
        .ok_or(Error::InvalidToken)?;
    policy::check_password(
        password,
        &user.email,
        app.config.accounts.password_min_length,
    )
    .map_err(Error::WeakPassword)?;
    let password_hash = app.passwords.hash(password).await?;
    if !app.store.consume_one_time_token(&hash, now()).await? {
        return Err(Error::InvalidToken);
    }
    app.store
        .set_password(user.tenant_id, user.id, &password_hash)
        .await?;
    Ok(user)
}

/// `POST /auth/password/reset`: sets the password and revokes every session.
pub async fn reset_password(
    app: &App,
    req: &AuthRequest,
    body: ResetBody,
) -> Result<Reply<Done>, Error> {
    let new = body
        .new_password
        .ok_or_else(|| Error::invalid("newPassword", "newPassword is required"))?;
    let user = set_password_by_token(app, body.token, OneTimeKind::PasswordReset, &new).await?;
    app.store.clear_login_failures(user.id).await?;
    let revoked = app
        .revocations
        .revoke_user_sessions(user.id, None, "password_reset")
        .await?;
    app.audit
        .user_event(
            Some(req),
            &user,
            "password.reset",
            "success",
            json!({ "sessionsRevoked": revoked.len() }),
        )
        .await;
    Ok(Reply::ok(Done::new("Password has been reset")))
}

#[derive(Deserialize)]
pub struct AcceptInviteBody {
    token: Option<String>,
    password: Option<String>,
}

/// `POST /auth/invite/accept`: an invited user sets a password.
pub async fn accept_invite(
    app: &App,
    req: &AuthRequest,
    body: AcceptInviteBody,
) -> Result<Reply<UserView>, Error> {
    let password = body
        .password
        .ok_or_else(|| Error::invalid("password", "password is required"))?;
    let user = set_password_by_token(app, body.token, OneTimeKind::Invite, &password).await?;
    let user = app
        .store
        .set_email_verified(user.tenant_id, user.id)
        .await?;
    app.audit
        .user_event(Some(req), &user, "invite.accepted", "success", json!({}))
        .await;
    Ok(Reply::ok(UserView::from(&user)))
}

/// A user created by an operator (CLI, bootstrap): validated like a
/// registration, with explicit roles and a verified email.
pub async fn create_user_with_password(
    app: &App,
    tenant_id: Uuid,
    email: &str,
    password: &str,
    roles: Vec<String>,
) -> Result<User, String> {
    let email = validate::email(email.trim()).map_err(|e| e.message())?;
    let (user, _) = create_user(
        app,
        NewAccount {
            tenant_id,
            email,
            password: Some(password.to_string()),
            first_name: None,
            family_name: None,
            roles,
            email_verified: true,
        },
    )
    .await
    .map_err(|e| match e {
        Error::EmailExists => "a user with this email already exists in the tenant".to_string(),
        other => other.message(),
    })?;
    app.audit
        .record(
            None,
            Some(tenant_id),
            Some(user.id),
            "user.created",
            "success",
            json!({ "by": "operator", "roles": user.roles }),
        )
        .await;
    Ok(user)
}

/// Creates the first admin of the default tenant from
/// `PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL/PASSWORD` when that tenant has no users.
pub async fn bootstrap_admin_from_env(app: &App) -> Result<(), String> {
    let (Ok(email), Ok(password)) = (
        std::env::var("PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL"),
        std::env::var("PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD"),
    ) else {
        return Ok(());
    };
    if email.trim().is_empty() {
        return Ok(());
    }
    let tenant = app
        .store
        .ensure_tenant(&app.config.tenancy.default_tenant)
        .await
        .map_err(|e| e.to_string())?;
    if app
        .store
        .count_users(tenant.id)
        .await
        .map_err(|e| e.to_string())?
        > 0
    {
        return Ok(());
    }
    let user = create_user_with_password(app, tenant.id, &email, &password, vec!["admin".into()])
        .await
        .map_err(|e| format!("bootstrap admin: {e}"))?;
    tracing::info!(user_id = %user.id, tenant = %tenant.slug, "bootstrap admin created");
    Ok(())
}
