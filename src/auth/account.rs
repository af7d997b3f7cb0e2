//! The caller's own account: `GET`/`PATCH /auth/me`, change-password, and
//! the user-creation path shared by the CLI (`portcullis user create`) and
//! the bootstrap admin (`PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL/PASSWORD`).

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::views::UserView;
use super::{audit, parse_body, validate};
use crate::app::App;
use crate::crypto::policy;
use crate::error::Error;
use crate::http_types::{AuthRequest, HttpResponse};
use crate::pipeline::{Identity, authn};
use crate::store::{NewUser, ProfileUpdate, StoreError, User};

async fn current_user(app: &App, identity: &Identity) -> Result<User, Error> {
    app.store
        .user_by_id(identity.tenant_id, identity.user_id)
        .await?
        .ok_or(Error::TokenRevoked)
}

/// `GET /auth/me` (a JWT or an API key).
pub async fn get_me(app: &App, req: &AuthRequest) -> Result<HttpResponse, Error> {
    let identity = authn::require_any(app, &req.headers).await?;
    check_tenant(app, req, &identity).await?;
    let user = current_user(app, &identity).await?;
    Ok(HttpResponse::json(200, &UserView::from(&user)))
}

async fn check_tenant(app: &App, req: &AuthRequest, identity: &Identity) -> Result<(), Error> {
    app.tenants
        .check_matches(
            req.header(crate::tenancy::TENANT_HEADER),
            identity.tenant_id,
        )
        .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatchMeBody {
    first_name: Option<String>,
    family_name: Option<String>,
    name: Option<String>,
    email: Option<String>,
}

/// `PATCH /auth/me`: names and email; privileged fields are ignored.
pub async fn patch_me(app: &App, req: &AuthRequest) -> Result<HttpResponse, Error> {
    let identity = authn::require(app, &req.headers).await?;
    check_tenant(app, req, &identity).await?;
    let body: PatchMeBody = parse_body(req)?;
    let update = ProfileUpdate {
        first_name: validate::name("firstName", body.first_name.as_deref())?,
        family_name: validate::name("familyName", body.family_name.as_deref())?,
        name: validate::name("name", body.name.as_deref())?,
        email: body.email.as_deref().map(validate::email).transpose()?,
    };
    let user = app
        .store
        .update_profile(identity.tenant_id, identity.user_id, update)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Error::EmailExists,
            StoreError::NotFound(_) => Error::TokenRevoked,
            other => other.into(),
        })?;
    audit::record(
        app,
        Some(req),
        Some(user.tenant_id),
        Some(user.id),
        "profile.updated",
        "success",
        json!({}),
    )
    .await;
    Ok(HttpResponse::json(200, &UserView::from(&user)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePasswordBody {
    current_password: Option<String>,
    new_password: Option<String>,
}

/// `POST /auth/change-password`: every other session of the user is revoked.
pub async fn change_password(app: &App, req: &AuthRequest) -> Result<HttpResponse, Error> {
    let identity = authn::require(app, &req.headers).await?;
    let body: ChangePasswordBody = parse_body(req)?;
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
        audit::record(
            app,
            Some(req),
            Some(user.tenant_id),
            Some(user.id),
            "password.change",
            "failure",
            json!({}),
        )
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
        .store
        .revoke_user_sessions(user.id, identity.session_id, "password_changed")
        .await?;
    app.jwt.revoke_sessions(&revoked);
    audit::record(
        app,
        Some(req),
        Some(user.tenant_id),
        Some(user.id),
        "password.changed",
        "success",
        json!({ "sessionsRevoked": revoked.len() }),
    )
    .await;
    Ok(HttpResponse::json(
        200,
        &json!({ "success": true, "message": "Password changed" }),
    ))
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
    policy::check_password(password, &email, app.config.accounts.password_min_length)
        .map_err(|r| format!("password {r}"))?;
    let hash = app
        .passwords
        .hash(password)
        .await
        .map_err(|e| e.message())?;
    let user = app
        .store
        .create_user(NewUser {
            tenant_id,
            email,
            password_hash: Some(hash),
            first_name: None,
            family_name: None,
            name: None,
            email_verified: true,
            roles,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                "a user with this email already exists in the tenant".to_string()
            }
            StoreError::NotFound(what) => format!("unknown {what}"),
            other => other.to_string(),
        })?;
    audit::record(
        app,
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
