//! `/auth/api-keys`: create (the key is shown once), list (never the key) and
//! revoke the caller's API keys; a JWT session is required. A key is
//! `api_keys.prefix` + 43 base62 characters of 256 random bits, stored as SHA-256.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::call::{Done, Reply};
use super::views::rfc3339;
use crate::app::App;
use crate::crypto::token_hash;
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::pipeline::authz::grants;
use crate::store::StoreEvent;
use crate::store::{ApiKey, NewApiKey, User, UserStatus};
use crate::vocab::Identity;
use crate::vocab::now;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Base62 digits of 256 bits (62^43 > 2^256).
pub const KEY_BODY_LEN: usize = 43;
/// `keyPrefix`: the first characters of a key, safe to show and log.
pub const KEY_PREFIX_LEN: usize = 12;
/// The permission a user needs to create keys (built-in role `member` has it).
pub const MANAGE_PERMISSION: &str = "apikey:manage";
const MAX_EXPIRES_IN_DAYS: i64 = 3650;
const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 500;
const MAX_SCOPES: usize = 50;
const MAX_SCOPE_CHARS: usize = 100;

/// 32 bytes read as one big-endian number, written in base62 on 43 digits.
pub fn base62_256(bytes: &[u8; 32]) -> String {
    let mut num = *bytes;
    let mut digits = [b'0'; KEY_BODY_LEN];
    for slot in digits.iter_mut().rev() {
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 62) as u8;
            rem = cur % 62;
        }
        *slot = BASE62[rem as usize];
    }
    digits.iter().map(|&d| char::from(d)).collect()
}

/// A new key: `prefix` + 43 base62 characters of 256 random bits.
pub fn new_key(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{prefix}{}", base62_256(&bytes))
}

/// The list view of a key (`GET /auth/api-keys`): never the key itself.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub key_prefix: String,
    /// `null`: the key carries its owner's permissions.
    pub scopes: Option<Vec<String>>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl ApiKeyView {
    fn new(k: &ApiKey, last_used_at: Option<i64>) -> Self {
        ApiKeyView {
            id: k.id.to_string(),
            name: k.name.clone(),
            description: k.description.clone(),
            key_prefix: k.key_prefix.clone(),
            scopes: k.scopes.clone(),
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            last_used_at: last_used_at.map(rfc3339),
        }
    }
}

/// The answer to `POST /auth/api-keys`: the only time `key` is shown.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    id: String,
    name: String,
    description: Option<String>,
    key: String,
    key_prefix: String,
    scopes: Option<Vec<String>>,
    created_at: String,
    expires_at: Option<String>,
}

/// `{"apiKeys": […]}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    name: Option<String>,
    description: Option<String>,
    expires_in_days: Option<i64>,
    scopes: Option<Vec<String>>,
}

/// The caller's user as stored now, who must be active.
async fn caller(app: &App, identity: &Identity) -> Result<User, Error> {
    app.store
        .user_by_id(identity.tenant_id, identity.user_id)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or(Error::TokenRevoked)
}

fn text_field(
    field: &str,
    value: &str,
    max_chars: usize,
    allow_newlines: bool,
) -> Result<(), Error> {
    if value.chars().count() > max_chars {
        return Err(Error::invalid(
            field,
            format!("{field} must be at most {max_chars} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\t')))
    {
        return Err(Error::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// `scopes`: at most 50 `resource:action` permissions (wildcards allowed),
/// each one granted to the owner. Duplicates are dropped; order is kept.
pub fn validate_scopes(scopes: &[String], owner: &[String]) -> Result<Vec<String>, Error> {
    if scopes.len() > MAX_SCOPES {
        return Err(Error::invalid(
            "scopes",
            format!("at most {MAX_SCOPES} scopes"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        let well_formed = scope.len() <= MAX_SCOPE_CHARS
            && scope.bytes().all(|b| b.is_ascii_graphic() && b != b',')
            && (scope == "*"
                || scope
                    .split_once(':')
                    .is_some_and(|(r, a)| !r.is_empty() && !a.is_empty() && !a.contains(':')));
        if !well_formed {
            return Err(Error::invalid(
                "scopes",
                format!("`{scope}` is not a permission (resource:action)"),
            ));
        }
        if !grants(owner, scope) {
            return Err(Error::invalid(
                "scopes",
                format!("`{scope}` is not one of your permissions"),
            ));
        }
        if !out.contains(scope) {
            out.push(scope.clone());
        }
    }
    Ok(out)
}

/// `POST /auth/api-keys` → 201 with the key, shown this once.
pub async fn create(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    body: CreateBody,
) -> Result<Reply<CreatedApiKey>, Error> {
    let user = caller(app, &identity).await?;
    if !grants(&user.permissions, MANAGE_PERMISSION) {
        return Err(Error::Forbidden);
    }
    let name = body.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::invalid("name", "name is required"));
    }
    text_field("name", name, MAX_NAME_CHARS, false)?;
    let description = body
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if let Some(d) = description {
        text_field("description", d, MAX_DESCRIPTION_CHARS, true)?;
    }
    let created_at = now();
    let expires_at = match body.expires_in_days {
        None => None,
        Some(days) if (1..=MAX_EXPIRES_IN_DAYS).contains(&days) => Some(created_at + days * 86_400),
        Some(_) => {
            return Err(Error::invalid(
                "expiresInDays",
                format!("expiresInDays must be an integer from 1 to {MAX_EXPIRES_IN_DAYS}"),
            ));
        }
    };
    let scopes = body
        .scopes
        .as_deref()
        .map(|s| validate_scopes(s, &user.permissions))
        .transpose()?;
    let key = new_key(&app.config.api_keys.prefix);
    let key_prefix: String = key.chars().take(KEY_PREFIX_LEN).collect();
    let stored = app
        .store
        .create_api_key(NewApiKey {
            id: Uuid::now_v7(),
            tenant_id: user.tenant_id,
            user_id: user.id,
            name: name.to_string(),
            description: description.map(str::to_string),
            key_prefix: key_prefix.clone(),
            key_hash: token_hash(&key),
            scopes,
            created_at,
            expires_at,
        })
        .await?;
    app.audit
        .user_event(
            Some(req),
            &user,
            "api_key.created",
            "success",
            json!({
                "keyId": stored.id,
                "keyPrefix": stored.key_prefix,
                "name": stored.name,
                "scopes": stored.scopes,
                "expiresAt": stored.expires_at.map(rfc3339),
            }),
        )
        .await;
    Ok(Reply::created(CreatedApiKey {
        id: stored.id.to_string(),
        name: stored.name,
        description: stored.description,
        key,
        key_prefix,
        scopes: stored.scopes,
        created_at: rfc3339(stored.created_at),
        expires_at: stored.expires_at.map(rfc3339),
    }))
}

/// `GET /auth/api-keys`: the caller's live keys, newest first; `lastUsedAt`
/// includes uses this replica noted and has not written yet.
pub async fn list(
    app: &App,
    _req: &AuthRequest,
    identity: Arc<Identity>,
) -> Result<Reply<ApiKeyList>, Error> {
    let user = caller(app, &identity).await?;
    let keys = app.store.api_keys_of_user(user.tenant_id, user.id).await?;
    let views: Vec<ApiKeyView> = keys
        .iter()
        .map(|k| {
            let last_used = k.last_used_at.max(app.api_keys.pending_use(k.id));
            ApiKeyView::new(k, last_used)
        })
        .collect();
    Ok(Reply::ok(ApiKeyList { api_keys: views }))
}

/// `DELETE /auth/api-keys/{id}`: 404 for an unknown id or another user's key.
pub async fn revoke(
    app: &App,
    req: &AuthRequest,
    identity: Arc<Identity>,
    id: &str,
) -> Result<Reply<Done>, Error> {
    let user = caller(app, &identity).await?;
    let id = Uuid::parse_str(id).map_err(|_| Error::NotFound)?;
    if !app
        .store
        .revoke_api_key(user.tenant_id, user.id, id)
        .await?
    {
        return Err(Error::NotFound);
    }
    app.revocations.revoke(StoreEvent::ApiKey { id }).await;
    app.audit
        .user_event(
            Some(req),
            &user,
            "api_key.revoked",
            "success",
            json!({ "keyId": id }),
        )
        .await;
    Ok(Reply::ok(Done::new("API key revoked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_are_the_prefix_and_43_base62_characters() {
        let k = new_key("sk_live_");
        assert_eq!(k.len(), 8 + KEY_BODY_LEN);
        assert!(k.starts_with("sk_live_"));
        assert!(k[8..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(k, new_key("sk_live_"));
        assert!(new_key("pk_").starts_with("pk_"));
    }

    #[test]
    fn base62_encodes_the_whole_256_bit_range() {
        assert_eq!(base62_256(&[0; 32]), "0".repeat(43));
        let mut one = [0u8; 32];
        one[31] = 61;
        assert_eq!(base62_256(&one), format!("{}z", "0".repeat(42)));
        one[31] = 62;
        assert_eq!(base62_256(&one), format!("{}10", "0".repeat(41)));
        // 2^256 - 1 fits in 43 digits and does not wrap
        assert_eq!(
            base62_256(&[0xff; 32]),
            "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1"
        );
    }

    #[test]
    fn scopes_must_be_permissions_the_owner_holds() {
        let member = v(&["apikey:manage", "profile:read", "profile:write"]);
        assert_eq!(
            validate_scopes(&v(&["profile:read", "profile:read"]), &member).unwrap(),
            v(&["profile:read"])
        );
        assert!(validate_scopes(&[], &member).unwrap().is_empty());
        for bad in [
            "reports:read",
            "profile:*",
            "*",
            "profile",
            ":read",
            "a:b,c:d",
            "a b:c",
        ] {
            let e = validate_scopes(&v(&[bad]), &member).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidRequest { field: Some(f), .. } if f == "scopes"),
                "{bad}: {e:?}"
            );
        }
        // wildcards of the owner count
        let admin = v(&["*"]);
        assert_eq!(
            validate_scopes(&v(&["reports:read", "payments:*", "*"]), &admin).unwrap(),
            v(&["reports:read", "payments:*", "*"])
        );
        assert!(validate_scopes(&v(&["reports:read"]), &v(&["reports:*"])).is_ok());
        let many: Vec<String> = (0..51).map(|i| format!("r{i}:read")).collect();
        assert!(validate_scopes(&many, &admin).is_err());
    }
}
