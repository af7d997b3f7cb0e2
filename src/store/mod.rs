//! Persistence: the [`Store`] trait, the records it speaks in, and [`open`]
//! which picks the backend from `database.url`. Only this folder speaks SQL:
//! [`sql`] implements the trait once (statements and [`rules`]) over the
//! [`sqlite`] and [`postgres`] backends; callers see typed records and outcomes.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::{Config, DatabaseLocation};
use crate::vocab::now;

pub mod deadline;
pub mod postgres;
pub mod rules;
pub mod sql;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

/// `database.timeout_ms`'s default: the deadline of a store call.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Built-in roles every tenant gets (SPEC §6).
pub const BUILT_IN_ROLES: &[(&str, &[&str])] = &[
    ("admin", &["*"]),
    (
        "member",
        &["profile:read", "profile:write", "apikey:manage"],
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. an email taken in the tenant).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The database cannot be reached or is broken.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(UserStatus::Active),
            "disabled" => Some(UserStatus::Disabled),
            _ => None,
        }
    }
}

/// A user with its roles and effective permissions resolved.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Lower-cased.
    pub email: String,
    /// PHC string; None for an invited user who has not set one yet.
    pub password_hash: Option<String>,
    pub first_name: Option<String>,
    pub family_name: Option<String>,
    pub name: Option<String>,
    pub status: UserStatus,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    pub roles: Vec<String>,
    /// Union of the roles' permissions, sorted, without duplicates.
    pub permissions: Vec<String>,
    /// Unix seconds until which logins are refused (account lockout).
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl User {
    /// Seconds left of a lockout, if one is running.
    pub fn lock_remaining(&self, at: i64) -> Option<u64> {
        self.locked_until
            .filter(|until| *until > at)
            .map(|until| (until - at) as u64)
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub tenant_id: Uuid,
    pub email: String,
    pub password_hash: Option<String>,
    pub first_name: Option<String>,
    pub family_name: Option<String>,
    pub name: Option<String>,
    pub email_verified: bool,
    pub roles: Vec<String>,
}

/// Profile fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    pub first_name: Option<String>,
    pub family_name: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub amr: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A session to create together with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub amr: Vec<String>,
    pub refresh_hash: String,
    pub refresh_expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// The token was live: it is now used and `new_hash` replaces it. The
    /// session's user is read in the same transaction, so the caller needs
    /// no store call after the rotation (one that failed would answer 503
    /// for a rotation that happened, and the client would lose its token).
    Rotated {
        session: Session,
        user: Option<Box<User>>,
    },
    /// No such token.
    Unknown,
    /// The token's lifetime is over.
    Expired,
    /// The session was revoked before (logout, reuse, password change).
    Revoked,
    /// The token had already been rotated: the session is now revoked.
    Reused {
        session_id: Uuid,
        user_id: Uuid,
        tenant_id: Uuid,
    },
}

#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    pub algorithm: String,
    /// PKCS#8 DER of the private key.
    pub private_der: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// A user's TOTP enrolment.
#[derive(Debug, Clone)]
pub struct MfaRecord {
    /// The secret as stored (`b32:` plain or `aes256gcm:` sealed).
    pub secret: String,
    /// False while the enrolment waits for `confirm`.
    pub confirmed: bool,
    /// The last TOTP time step accepted (replay guard).
    pub last_step: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct BackupCode {
    pub id: i64,
    pub code_hash: String,
}

/// A pending second step of an MFA login.
#[derive(Debug, Clone)]
pub struct MfaToken {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub expires_at: i64,
    pub failures: u32,
    pub used: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub permissions: Vec<String>,
    pub built_in: bool,
}

/// Filters and page of the admin user list.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Matches email, first, family or display name (case-insensitive substring).
    pub q: Option<String>,
    /// `active`, `disabled` or `locked`.
    pub status: Option<String>,
    /// 1-based.
    pub page: u32,
    pub limit: u32,
}

impl UserQuery {
    /// Rows to skip for the page.
    pub fn offset(&self) -> i64 {
        (self.page.max(1) as i64 - 1) * self.limit as i64
    }
}

/// What an admin may change on a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AdminUserUpdate {
    pub first_name: Option<String>,
    pub family_name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub status: Option<UserStatus>,
}

/// Kinds of single-use tokens sent by webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneTimeKind {
    EmailVerification,
    PasswordReset,
    Invite,
}

impl OneTimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OneTimeKind::EmailVerification => "email_verification",
            OneTimeKind::PasswordReset => "password_reset",
            OneTimeKind::Invite => "invite",
        }
    }
}

#[derive(Debug, Clone)]
pub struct OneTimeToken {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub expires_at: i64,
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub at: i64,
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub details: serde_json::Value,
}

/// Everything portcullis keeps. Implementations never block the caller's
/// event loop; every method is safe to call from the proxy's runtime.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the store is reachable (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    // tenants
    /// Creates the tenant with its built-in roles; `Conflict` if the slug is taken.
    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant>;
    /// The tenant with this slug, created with its built-in roles when missing.
    async fn ensure_tenant(&self, slug: &str) -> StoreResult<Tenant>;
    async fn tenant_by_id(&self, id: Uuid) -> StoreResult<Option<Tenant>>;
    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;

    // users
    /// `Conflict` when the email is taken in the tenant, `NotFound` for an unknown role.
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    async fn user_by_id(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, tenant_id: Uuid, email: &str) -> StoreResult<Option<User>>;
    async fn count_users(&self, tenant_id: Uuid) -> StoreResult<u64>;
    /// `Conflict` when the new email is taken.
    async fn update_profile(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: ProfileUpdate,
    ) -> StoreResult<User>;
    async fn set_password(&self, tenant_id: Uuid, id: Uuid, password_hash: &str)
    -> StoreResult<()>;

    // sessions and refresh tokens
    async fn create_session(&self, session: NewSession) -> StoreResult<Session>;
    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>>;
    /// Uses the refresh token `old_hash` and stores `new_hash` in its place, in
    /// one transaction; two concurrent calls with one token get one `Rotated`.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: i64,
        now: i64,
    ) -> StoreResult<RefreshOutcome>;
    /// The session a refresh token belongs to, if any.
    async fn session_of_refresh_token(&self, hash: &str) -> StoreResult<Option<Session>>;
    /// Revokes one session; returns false when it was already revoked or unknown.
    async fn revoke_session(&self, id: Uuid, reason: &str) -> StoreResult<bool>;
    /// Revokes every live session of the user except `keep`; returns their ids.
    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>>;

    // signing keys
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Adds `key` as the current key and retires every other live key at `now`.
    async fn rotate_signing_key(&self, key: SigningKeyRecord, now: i64) -> StoreResult<()>;

    // audit
    async fn record_audit(&self, event: AuditEvent) -> StoreResult<()>;

    /// Flushes what is pending before the process exits.
    async fn close(&self) -> StoreResult<()>;

    // account lockout
    /// Counts a failed login or code; when `max` failures fall within `window`
    /// seconds the account is locked for `lock_for` seconds. Returns the
    /// lock's end when this failure locked it.
    async fn record_login_failure(
        &self,
        user_id: Uuid,
        at: i64,
        window: i64,
        max: u32,
        lock_for: i64,
    ) -> StoreResult<Option<i64>>;
    /// Forgets failures and any lock (successful login, admin unlock).
    async fn clear_login_failures(&self, user_id: Uuid) -> StoreResult<()>;

    // TOTP MFA
    async fn mfa(&self, user_id: Uuid) -> StoreResult<Option<MfaRecord>>;
    /// Stores a new, unconfirmed enrolment and its backup codes, replacing an
    /// unconfirmed one; `Conflict` when MFA is already on.
    async fn begin_mfa(
        &self,
        user_id: Uuid,
        secret: &str,
        backup_code_hashes: Vec<String>,
    ) -> StoreResult<()>;
    /// Accepts TOTP `step` for the user if it is newer than the last one
    /// (replay guard); with `confirm` also turns MFA on. False on replay.
    async fn accept_totp_step(&self, user_id: Uuid, step: i64, confirm: bool) -> StoreResult<bool>;
    /// Removes the enrolment and backup codes; MFA off.
    async fn disable_mfa(&self, user_id: Uuid) -> StoreResult<()>;
    async fn unused_backup_codes(&self, user_id: Uuid) -> StoreResult<Vec<BackupCode>>;
    /// Marks a backup code used; false if it already was.
    async fn use_backup_code(&self, user_id: Uuid, id: i64) -> StoreResult<bool>;
    async fn replace_backup_codes(&self, user_id: Uuid, hashes: Vec<String>) -> StoreResult<()>;
    /// Whether any TOTP secret is stored sealed (start-up refuses to run without the key).
    async fn has_sealed_mfa_secrets(&self) -> StoreResult<bool>;

    // MFA login tokens
    async fn create_mfa_token(
        &self,
        hash: &str,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()>;
    async fn mfa_token(&self, hash: &str) -> StoreResult<Option<MfaToken>>;
    /// Counts a wrong code on the token; returns the failures so far.
    async fn mfa_token_failure(&self, hash: &str) -> StoreResult<u32>;
    /// Uses the token up; false if it was already used.
    async fn consume_mfa_token(&self, hash: &str, at: i64) -> StoreResult<bool>;

    // administration
    /// A page of the tenant's users and the total matching the filters.
    async fn list_users(&self, tenant_id: Uuid, query: UserQuery) -> StoreResult<(Vec<User>, u64)>;
    /// `NotFound` for an unknown user or role.
    async fn admin_update_user(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: AdminUserUpdate,
    ) -> StoreResult<User>;
    /// Deletes the user and everything of theirs; false when unknown.
    async fn delete_user(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool>;
    async fn set_email_verified(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<User>;
    async fn list_roles(&self, tenant_id: Uuid) -> StoreResult<Vec<Role>>;
    /// `Conflict` when the name is taken.
    async fn create_role(&self, tenant_id: Uuid, role: Role) -> StoreResult<Role>;
    /// `NotFound` for an unknown role.
    async fn update_role(
        &self,
        tenant_id: Uuid,
        name: &str,
        permissions: Vec<String>,
    ) -> StoreResult<Role>;
    /// False when unknown; built-in roles are refused by the caller.
    async fn delete_role(&self, tenant_id: Uuid, name: &str) -> StoreResult<bool>;
    async fn audit_events_of(
        &self,
        tenant_id: Uuid,
        user_id: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>>;

    // single-use tokens (verification, reset, invitation)
    async fn create_one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()>;
    async fn one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
    ) -> StoreResult<Option<OneTimeToken>>;
    /// Uses the token up; false if it was already used.
    async fn consume_one_time_token(&self, hash: &str, at: i64) -> StoreResult<bool>;
    // logins through external providers
    async fn create_oidc_login(&self, login: OidcLogin) -> StoreResult<()>;
    /// Removes and answers the login of this state (single use), expired or not.
    async fn take_oidc_login(&self, state_hash: &str) -> StoreResult<Option<OidcLogin>>;
    async fn create_oidc_code(&self, code: OidcCode) -> StoreResult<()>;
    /// Removes and answers the code with this hash (single use), expired or not.
    async fn take_oidc_code(&self, hash: &str) -> StoreResult<Option<OidcCode>>;
    /// The local user a provider's subject is linked to.
    async fn linked_user(
        &self,
        tenant_id: Uuid,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Option<Uuid>>;
    /// Links (or, when linked, notes a login of) a provider's subject.
    async fn link_identity(&self, identity: UserIdentity) -> StoreResult<()>;
    async fn identities_of_user(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
    ) -> StoreResult<Vec<UserIdentity>>;
    /// Unlinks identity `id` of the tenant; false when there is none.
    async fn unlink_identity(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool>;
    // passkeys
    /// Stores a ceremony's state (expired ones are purged on the way).
    async fn create_passkey_challenge(&self, challenge: PasskeyChallenge) -> StoreResult<()>;
    /// Removes and answers the ceremony of this challenge (single use), expired or not.
    async fn take_passkey_challenge(
        &self,
        challenge: &str,
    ) -> StoreResult<Option<PasskeyChallenge>>;
    /// Stores a new passkey; `Conflict` when its credential id is registered.
    async fn create_passkey(&self, passkey: Passkey) -> StoreResult<()>;
    /// The user's passkeys, oldest first.
    async fn passkeys_of_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<Passkey>>;
    async fn passkey_by_credential_id(&self, credential_id: &[u8]) -> StoreResult<Option<Passkey>>;
    /// Records a use: the new state, if the stored one is still `previous`
    /// (false: another login with this passkey came first).
    async fn record_passkey_use(
        &self,
        id: Uuid,
        previous: &[u8],
        state: &[u8],
        at: i64,
    ) -> StoreResult<bool>;
    /// Renames the user's passkey `id`; None when the user has no such passkey.
    async fn rename_passkey(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        id: Uuid,
        name: &str,
    ) -> StoreResult<Option<Passkey>>;
    /// Deletes the user's passkey `id`; false when the user has no such passkey.
    async fn delete_passkey(&self, tenant_id: Uuid, user_id: Uuid, id: Uuid) -> StoreResult<bool>;
    // api keys
    /// Stores a new key (its hash only); `Conflict` if the hash exists.
    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey>;
    /// The user's keys that are not revoked, newest first (expired ones included).
    async fn api_keys_of_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<ApiKey>>;
    /// The key with this hash, revoked or not, with its owner resolved.
    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyWithOwner>>;
    /// Revokes the key `id` of this owner; false when it is unknown, another
    /// user's, or already revoked.
    async fn revoke_api_key(&self, tenant_id: Uuid, user_id: Uuid, id: Uuid) -> StoreResult<bool>;
    /// Records when keys were last used (`(key id, unix seconds)`), in one
    /// write; a time never moves backwards.
    async fn record_api_key_use(&self, uses: Vec<(Uuid, i64)>) -> StoreResult<()>;

    // revocation propagation between replicas
    /// Tells every replica sharing this store (this one included) about a
    /// revocation. The default (single-process stores) does nothing.
    async fn publish(&self, _event: &StoreEvent) -> StoreResult<()> {
        Ok(())
    }
    /// Delivers the events other replicas publish to `events` until the
    /// receiver is dropped; sends [`StoreEvent::Resync`] after every
    /// (re)connection so caches are flushed. The default returns at once
    /// (a single process has nobody to hear from).
    async fn listen(&self, _events: tokio::sync::mpsc::UnboundedSender<StoreEvent>) {}

    /// A call was abandoned at its deadline ([`deadline::bounded`]): drop the
    /// connections that may be stuck (a network partition leaves them open
    /// and silent) so the next call opens a fresh one. The default does
    /// nothing.
    fn after_deadline(&self) {}
}

/// A revocation to apply on every replica's caches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum StoreEvent {
    /// Sessions revoked (logout, refresh reuse, password change, admin cut-off).
    Sessions { ids: Vec<Uuid> },
    /// The user was disabled, deleted or re-roled: their API keys re-verify.
    Owner { user_id: Uuid },
    /// One API key revoked.
    ApiKey { id: Uuid },
    /// The user's MFA enrolment changed.
    Mfa { user_id: Uuid },
    /// The signing keys changed (`keys rotate`).
    KeysRotated,
    /// Not published: the listener (re)connected and events may have been
    /// missed, so every cache is flushed.
    Resync,
}

/// Opens (creating and migrating when needed) the store `database.url` names.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, String> {
    match config.database_location().map_err(|e| e.to_string())? {
        DatabaseLocation::Sqlite(path) => {
            // bounds its calls itself (a call completes or rolls back)
            let store = sqlite::SqliteStore::open_with_timeout(&path, config.database.timeout())
                .await
                .map_err(|e| format!("cannot open SQLite database {}: {e}", path.display()))?;
            Ok(Arc::new(store))
        }
        DatabaseLocation::Postgres(url) => {
            // bounds each call as a whole (connection wait and query together)
            let store = postgres::PgStore::open_with_timeout(&url, config.database.timeout())
                .await
                .map_err(|e| format!("cannot open PostgreSQL database: {e}"))?;
            Ok(Arc::new(store))
        }
    }
}

// api keys

/// A user's passkey (a WebAuthn credential): its public key and counter as
/// `webauthn_rp` encodes them; nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub credential_id: Vec<u8>,
    pub public_key: Vec<u8>,
    pub state: Vec<u8>,
    pub transports: Vec<String>,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A passkey ceremony between its begin and its finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyChallenge {
    pub challenge: String,
    /// `register`, `login`, `login_allow` or `mfa`.
    pub ceremony: String,
    pub tenant_id: Uuid,
    pub user_id: Option<Uuid>,
    /// The session that began a registration, or the hash of an MFA token.
    pub binding: Option<String>,
    pub state: Vec<u8>,
    pub expires_at: i64,
}

/// A login through an external provider between its start and its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcLogin {
    pub state_hash: String,
    pub provider: String,
    pub tenant_id: Uuid,
    pub nonce: String,
    pub verifier: String,
    pub redirect_uri: String,
    pub app_state: String,
    pub binding_hash: String,
    pub expires_at: i64,
}

/// The one-time code a finished external login hands the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcCode {
    pub hash: String,
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub provider: String,
    pub expires_at: i64,
}

/// A user's account at an external provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub provider: String,
    pub subject: String,
    pub email: String,
    pub created_at: i64,
    pub last_login_at: i64,
}

/// An API key as stored: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// The first 12 characters of the key.
    pub key_prefix: String,
    /// `None`: the key carries its owner's permissions.
    pub scopes: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub key_prefix: String,
    /// SHA-256 of the key ([`crate::crypto::token_hash`]).
    pub key_hash: String,
    pub scopes: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A key found by its hash, with the owner it speaks for.
#[derive(Debug, Clone)]
pub struct ApiKeyWithOwner {
    pub key: ApiKey,
    pub owner: User,
}
