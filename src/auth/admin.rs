//! The admin API (SPEC §6 "Admin routes"), scoped to the tenant of the
//! caller's token: users (paged list, create/invite, read, patch, delete,
//! unlock, MFA reset), roles, and the audit log. The route table checks each
//! route's permission (403 `FORBIDDEN`) first; ids of another tenant are 404.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::call::{Done, Items, Reply};
use super::views::{UserView, rfc3339};
use super::{account, validate};
use crate::app::App;
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::pipeline::authz::grants;
use crate::store::StoreEvent;
use crate::store::{AdminUserUpdate, Role, StoreError, User, UserQuery, UserStatus};
use crate::vocab::Identity;

pub const MAX_PAGE_SIZE: u32 = 100;

fn query_u32(
    pairs: &[(String, String)],
    key: &str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, Error> {
    match pairs.iter().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                Error::invalid(
                    key,
                    format!("{key} must be a whole number from {min} to {max}"),
                )
            }),
    }
}

fn user_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::NotFound)
}

async fn find_user(app: &App, tenant_id: Uuid, raw_id: &str) -> Result<User, Error> {
    app.store
        .user_by_id(tenant_id, user_id(raw_id)?)
        .await?
        .ok_or(Error::NotFound)
}

/// A page of `GET /auth/admin/users` (keys sorted, as always answered).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPage {
    pub items: Vec<UserView>,
    pub limit: u32,
    pub page: u32,
    pub total_items: u64,
}

/// `GET /auth/admin/users?page=&limit=&q=&status=`.
pub async fn list_users(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
) -> Result<Reply<UserPage>, Error> {
    let pairs = req.query_pairs();
    let page = query_u32(&pairs, "page", 1, 1, 1_000_000)?;
    let limit = query_u32(&pairs, "limit", 25, 1, MAX_PAGE_SIZE)?;
    let q = pairs
        .iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.trim().chars().take(254).collect::<String>());
    let status = match pairs
        .iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v.as_str())
    {
        None | Some("") => None,
        Some(s @ ("active" | "disabled" | "locked")) => Some(s.to_string()),
        Some(_) => {
            return Err(Error::invalid(
                "status",
                "status must be active, disabled or locked",
            ));
        }
    };
    let (users, total) = app
        .store
        .list_users(
            caller.tenant_id,
            UserQuery {
                q,
                status,
                page,
                limit,
            },
        )
        .await?;
    Ok(Reply::ok(UserPage {
        items: users.iter().map(UserView::from).collect(),
        limit,
        page,
        total_items: total,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserBody {
    email: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    family_name: Option<String>,
    roles: Option<Vec<String>>,
}

/// A user an admin created: the user, and the invitation token when no
/// password was given.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite_token: Option<String>,
}

/// `POST /auth/admin/users` → 201: with a password, or an invitation when none.
pub async fn create_user(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
    body: CreateUserBody,
) -> Result<Reply<CreatedUser>, Error> {
    let email = validate::email(body.email.as_deref().unwrap_or_default())?;
    let roles = body
        .roles
        .unwrap_or_else(|| app.config.accounts.default_roles.clone());
    validate_role_names(&roles)?;
    ensure_grantable(app, &caller, &roles).await?;
    let first_name = validate::name("firstName", body.first_name.as_deref())?;
    let family_name = validate::name("familyName", body.family_name.as_deref())?;
    let (user, invite) = account::create_user(
        app,
        account::NewAccount {
            tenant_id: caller.tenant_id,
            email,
            password: body.password,
            first_name,
            family_name,
            roles,
            email_verified: true,
        },
    )
    .await?;
    app.audit
        .record(
            Some(req),
            Some(caller.tenant_id),
            Some(user.id),
            "admin.user_created",
            "success",
            json!({ "by": caller.user_id, "roles": user.roles, "invited": invite.is_some() }),
        )
        .await;
    Ok(Reply::created(CreatedUser {
        user: UserView::from(&user),
        invite_token: invite,
    }))
}

pub async fn get_user(
    app: &App,
    _req: &AuthRequest,
    caller: Arc<Identity>,
    id: &str,
) -> Result<Reply<UserView>, Error> {
    let user = find_user(app, caller.tenant_id, id).await?;
    Ok(Reply::ok(UserView::from(&user)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchUserBody {
    first_name: Option<String>,
    family_name: Option<String>,
    roles: Option<Vec<String>>,
    status: Option<String>,
}

/// Ends every session (and cached credential) of the user at once.
pub async fn cut_off(app: &App, user_id: Uuid, reason: &str) -> Result<(), Error> {
    app.revocations
        .revoke_user_sessions(user_id, None, reason)
        .await?;
    // a cached API key of the user must not outlive the cut-off either
    app.revocations.revoke(StoreEvent::Owner { user_id }).await;
    Ok(())
}

pub async fn patch_user(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
    id: &str,
    body: PatchUserBody,
) -> Result<Reply<UserView>, Error> {
    let target = find_user(app, caller.tenant_id, id).await?;
    let status = match body.status.as_deref() {
        None => None,
        Some(s) => Some(
            UserStatus::parse(s)
                .ok_or_else(|| Error::invalid("status", "status must be active or disabled"))?,
        ),
    };
    if status == Some(UserStatus::Disabled) && target.id == caller.user_id {
        return Err(Error::invalid(
            "status",
            "you cannot disable your own account",
        ));
    }
    if let Some(roles) = &body.roles {
        validate_role_names(roles)?;
        ensure_grantable(app, &caller, roles).await?;
    }
    let update = AdminUserUpdate {
        first_name: validate::name("firstName", body.first_name.as_deref())?,
        family_name: validate::name("familyName", body.family_name.as_deref())?,
        roles: body.roles,
        status,
    };
    let user = app
        .store
        .admin_update_user(caller.tenant_id, target.id, update)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(what) if what.starts_with("role") => {
                Error::invalid("roles", format!("unknown {what}"))
            }
            StoreError::NotFound(_) => Error::NotFound,
            other => other.into(),
        })?;
    if status == Some(UserStatus::Disabled) && target.status != UserStatus::Disabled {
        cut_off(app, user.id, "user_disabled").await?;
    } else if user.roles != target.roles {
        // API keys take their permissions from the owner's roles on a cache miss
        app.revocations
            .revoke(StoreEvent::Owner { user_id: user.id })
            .await;
    }
    app.audit
        .record(
            Some(req),
            Some(caller.tenant_id),
            Some(user.id),
            "admin.user_updated",
            "success",
            json!({ "by": caller.user_id, "roles": user.roles, "status": user.status.as_str() }),
        )
        .await;
    Ok(Reply::ok(UserView::from(&user)))
}

pub async fn delete_user(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
    id: &str,
) -> Result<Reply<Done>, Error> {
    let target = find_user(app, caller.tenant_id, id).await?;
    if target.id == caller.user_id {
        return Err(Error::bad_request("you cannot delete your own account"));
    }
    cut_off(app, target.id, "user_deleted").await?;
    if !app.store.delete_user(caller.tenant_id, target.id).await? {
        return Err(Error::NotFound);
    }
    app.audit
        .record(
            Some(req),
            Some(caller.tenant_id),
            Some(target.id),
            "admin.user_deleted",
            "success",
            json!({ "by": caller.user_id }),
        )
        .await;
    Ok(Reply::ok(Done::new("User deleted")))
}

pub async fn unlock(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
    id: &str,
) -> Result<Reply<UserView>, Error> {
    let target = find_user(app, caller.tenant_id, id).await?;
    app.store.clear_login_failures(target.id).await?;
    app.audit
        .record(
            Some(req),
            Some(caller.tenant_id),
            Some(target.id),
            "admin.user_unlocked",
            "success",
            json!({ "by": caller.user_id }),
        )
        .await;
    let user = find_user(app, caller.tenant_id, id).await?;
    Ok(Reply::ok(UserView::from(&user)))
}

pub async fn mfa_reset(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
    id: &str,
) -> Result<Reply<UserView>, Error> {
    let target = find_user(app, caller.tenant_id, id).await?;
    app.store.disable_mfa(target.id).await?;
    app.revocations
        .revoke(StoreEvent::Mfa { user_id: target.id })
        .await;
    app.audit
        .record(
            Some(req),
            Some(caller.tenant_id),
            Some(target.id),
            "admin.mfa_reset",
            "success",
            json!({ "by": caller.user_id }),
        )
        .await;
    let user = find_user(app, caller.tenant_id, id).await?;
    Ok(Reply::ok(UserView::from(&user)))
}

/// A role as the admin API shows it (keys sorted, as always answered).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    pub built_in: bool,
    pub name: String,
    pub permissions: Vec<String>,
}

impl From<&Role> for RoleView {
    fn from(r: &Role) -> Self {
        RoleView {
            built_in: r.built_in,
            name: r.name.clone(),
            permissions: r.permissions.clone(),
        }
    }
}

/// An admin can grant only roles whose permissions they hold themselves, so
/// `user:write` alone cannot make anyone (themselves included) an admin.
async fn ensure_grantable(app: &App, caller: &Identity, roles: &[String]) -> Result<(), Error> {
    let defined = app.store.list_roles(caller.tenant_id).await?;
    for name in roles {
        let Some(role) = defined.iter().find(|r| &r.name == name) else {
            return Err(Error::invalid("roles", format!("unknown role {name}")));
        };
        if !role
            .permissions
            .iter()
            .all(|p| grants(&caller.permissions, p))
        {
            return Err(Error::Forbidden);
        }
    }
    Ok(())
}

fn validate_role_names(roles: &[String]) -> Result<(), Error> {
    if roles.iter().any(|r| !valid_role_name(r)) {
        return Err(Error::invalid(
            "roles",
            "role names are 1-63 characters of a-z, 0-9, - and _",
        ));
    }
    Ok(())
}

fn valid_role_name(name: &str) -> bool {
    crate::tenancy::valid_slug(name)
}

/// `resource:action`, `resource:*` or `*`.
fn valid_permission(p: &str) -> bool {
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    p == "*"
        || p.split_once(':')
            .is_some_and(|(res, act)| part(res) && (act == "*" || part(act)))
}

fn permissions(raw: Option<Vec<String>>) -> Result<Vec<String>, Error> {
    let perms = raw.ok_or_else(|| Error::invalid("permissions", "permissions is required"))?;
    if perms.len() > 100 || perms.iter().any(|p| !valid_permission(p)) {
        return Err(Error::invalid(
            "permissions",
            "permissions are resource:action strings (resource:* and * allowed)",
        ));
    }
    let mut perms = perms;
    perms.sort();
    perms.dedup();
    Ok(perms)
}

pub async fn list_roles(
    app: &App,
    _req: &AuthRequest,
    caller: Arc<Identity>,
) -> Result<Reply<Items<RoleView>>, Error> {
    let roles = app.store.list_roles(caller.tenant_id).await?;
    Ok(Reply::ok(Items {
        items: roles.iter().map(RoleView::from).collect(),
    }))
}

#[derive(Deserialize)]
pub struct RoleBody {
    name: Option<String>,
    permissions: Option<Vec<String>>,
}

/// `POST /auth/admin/roles` → 201.
pub async fn create_role(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
    body: RoleBody,
) -> Result<Reply<RoleView>, Error> {
    let name = body.name.unwrap_or_default();
    if !valid_role_name(&name) {
        return Err(Error::invalid(
            "name",
            "role names are 1-63 characters of a-z, 0-9, - and _",
        ));
    }
    let role = Role {
        name,
        permissions: permissions(body.permissions)?,
        built_in: false,
    };
    let role = app
        .store
        .create_role(caller.tenant_id, role)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Error::invalid("name", "a role with this name exists"),
            other => other.into(),
        })?;
    app.audit
        .record(
            Some(req),
            Some(caller.tenant_id),
            None,
            "admin.role_created",
            "success",
            json!({ "by": caller.user_id, "role": role.name }),
        )
        .await;
    Ok(Reply::created(RoleView::from(&role)))
}

pub async fn patch_role(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
    name: &str,
    body: RoleBody,
) -> Result<Reply<RoleView>, Error> {
    if name == "admin" {
        return Err(Error::bad_request(
            "the built-in admin role cannot be changed",
        ));
    }
    let role = app
        .store
        .update_role(caller.tenant_id, name, permissions(body.permissions)?)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => Error::NotFound,
            other => other.into(),
        })?;
    app.audit
        .record(
            Some(req),
            Some(caller.tenant_id),
            None,
            "admin.role_updated",
            "success",
            json!({ "by": caller.user_id, "role": role.name, "permissions": role.permissions }),
        )
        .await;
    Ok(Reply::ok(RoleView::from(&role)))
}

pub async fn delete_role(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
    name: &str,
) -> Result<Reply<Done>, Error> {
    let roles = app.store.list_roles(caller.tenant_id).await?;
    match roles.iter().find(|r| r.name == name) {
        None => return Err(Error::NotFound),
        Some(r) if r.built_in => {
            return Err(Error::bad_request("built-in roles cannot be deleted"));
        }
        Some(_) => {}
    }
    app.store.delete_role(caller.tenant_id, name).await?;
    app.audit
        .record(
            Some(req),
            Some(caller.tenant_id),
            None,
            "admin.role_deleted",
            "success",
            json!({ "by": caller.user_id, "role": name }),
        )
        .await;
    Ok(Reply::ok(Done::new("Role deleted")))
}

/// An audit event as the admin API shows it (keys sorted, as always answered).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditItem {
    pub at: String,
    pub details: serde_json::Value,
    pub id: Uuid,
    pub ip: Option<String>,
    pub outcome: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub user_agent: Option<String>,
    pub user_id: Option<Uuid>,
}

/// `GET /auth/admin/audit?limit=&userId=`: newest first.
pub async fn audit_log(
    app: &App,
    req: &AuthRequest,
    caller: Arc<Identity>,
) -> Result<Reply<Items<AuditItem>>, Error> {
    let pairs = req.query_pairs();
    let limit = query_u32(&pairs, "limit", 100, 1, 1000)?;
    let user = match pairs
        .iter()
        .find(|(k, _)| k == "userId")
        .map(|(_, v)| v.trim())
    {
        None | Some("") => None,
        Some(v) => Some(
            Uuid::parse_str(v).map_err(|_| Error::invalid("userId", "userId must be a UUID"))?,
        ),
    };
    let events = app
        .store
        .audit_events_of(caller.tenant_id, user, limit)
        .await?;
    let items = events
        .into_iter()
        .map(|e| AuditItem {
            at: rfc3339(e.at),
            details: e.details,
            id: e.id,
            ip: e.ip,
            outcome: e.outcome,
            kind: e.kind,
            user_agent: e.user_agent,
            user_id: e.user_id,
        })
        .collect();
    Ok(Reply::ok(Items { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_syntax() {
        for ok in ["*", "user:read", "payments:*", "a.b:c-d"] {
            assert!(valid_permission(ok), "{ok}");
        }
        for bad in [
            "",
            "user",
            ":read",
            "user:",
            "us er:read",
            "user:read:x",
            "*:read",
        ] {
            assert!(!valid_permission(bad), "{bad}");
        }
    }
}
