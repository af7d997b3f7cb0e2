//! The deadline of every store call (SPEC §14, `database.timeout_ms`) for a
//! backend whose calls can hang on the network: [`Bounded`] wraps a [`Store`]
//! and gives up on any call, the wait for a pooled connection and the query
//! together, at the deadline with [`StoreError::Unavailable`], so a
//! partition (connections open, no bytes) answers 503 `STORE_UNAVAILABLE`
//! within the deadline instead of hanging the request.
//!
//! A call that gave up is dropped mid-flight. Before the answer the backend
//! hears of it ([`Store::after_deadline`]) so that the connections that may
//! be stuck leave its pool: the next call opens a fresh one, and the store
//! recovers as soon as the database answers again, without a restart.
//!
//! SQLite enforces the same deadline inside its own calls (see
//! [`super::sqlite`]), where a call either completes or rolls back.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    AdminUserUpdate, ApiKey, ApiKeyWithOwner, AuditEvent, BackupCode, MfaRecord, MfaToken,
    NewApiKey, NewSession, NewUser, OneTimeKind, OneTimeToken, ProfileUpdate, RefreshOutcome, Role,
    Session, SigningKeyRecord, Store, StoreError, StoreEvent, StoreResult, Tenant, User, UserQuery,
};

/// A store whose every call ends within `timeout`.
pub struct Bounded<S> {
    inner: S,
    timeout: Duration,
}

impl<S: Store> Bounded<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Bounded { inner, timeout }
    }

    /// Runs one call of the inner store, or gives up at the deadline.
    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        // `let`, not `match` on the expression: the abandoned call (and the
        // connection it holds) must be dropped before `after_deadline` runs
        let outcome = tokio::time::timeout(self.timeout, call).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                crate::metrics::store_deadline_exceeded();
                self.inner.after_deadline();
                Err(StoreError::Unavailable(format!(
                    "{what}: no answer within {} ms (deadline)",
                    self.timeout.as_millis()
                )))
            }
        }
    }
}

#[async_trait]
impl<S: Store> Store for Bounded<S> {
    async fn ping(&self) -> StoreResult<()> {
        self.bounded("ping", self.inner.ping()).await
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant> {
        self.bounded("create_tenant", self.inner.create_tenant(slug, name))
            .await
    }

    async fn ensure_tenant(&self, slug: &str) -> StoreResult<Tenant> {
        self.bounded("ensure_tenant", self.inner.ensure_tenant(slug))
            .await
    }

    async fn tenant_by_id(&self, id: Uuid) -> StoreResult<Option<Tenant>> {
        self.bounded("tenant_by_id", self.inner.tenant_by_id(id))
            .await
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        self.bounded("tenant_by_slug", self.inner.tenant_by_slug(slug))
            .await
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.bounded("list_tenants", self.inner.list_tenants())
            .await
    }

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.bounded("create_user", self.inner.create_user(user))
            .await
    }

    async fn user_by_id(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<User>> {
        self.bounded("user_by_id", self.inner.user_by_id(tenant_id, id))
            .await
    }

    async fn user_by_email(&self, tenant_id: Uuid, email: &str) -> StoreResult<Option<User>> {
        self.bounded("user_by_email", self.inner.user_by_email(tenant_id, email))
            .await
    }

    async fn count_users(&self, tenant_id: Uuid) -> StoreResult<u64> {
        self.bounded("count_users", self.inner.count_users(tenant_id))
            .await
    }

    async fn update_profile(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: ProfileUpdate,
    ) -> StoreResult<User> {
        self.bounded(
            "update_profile",
            self.inner.update_profile(tenant_id, id, update),
        )
        .await
    }

    async fn set_password(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        password_hash: &str,
    ) -> StoreResult<()> {
        self.bounded(
            "set_password",
            self.inner.set_password(tenant_id, id, password_hash),
        )
        .await
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<Session> {
        self.bounded("create_session", self.inner.create_session(session))
            .await
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        self.bounded("session", self.inner.session(id)).await
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: i64,
        now: i64,
    ) -> StoreResult<RefreshOutcome> {
        self.bounded(
            "rotate_refresh_token",
            self.inner
                .rotate_refresh_token(old_hash, new_hash, new_expires_at, now),
        )
        .await
    }

    async fn session_of_refresh_token(&self, hash: &str) -> StoreResult<Option<Session>> {
        self.bounded(
            "session_of_refresh_token",
            self.inner.session_of_refresh_token(hash),
        )
        .await
    }

    async fn revoke_session(&self, id: Uuid, reason: &str) -> StoreResult<bool> {
        self.bounded("revoke_session", self.inner.revoke_session(id, reason))
            .await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>> {
        self.bounded(
            "revoke_user_sessions",
            self.inner.revoke_user_sessions(user_id, keep, reason),
        )
        .await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        self.bounded("signing_keys", self.inner.signing_keys())
            .await
    }

    async fn rotate_signing_key(&self, key: SigningKeyRecord, now: i64) -> StoreResult<()> {
        self.bounded(
            "rotate_signing_key",
            self.inner.rotate_signing_key(key, now),
        )
        .await
    }

    async fn record_audit(&self, event: AuditEvent) -> StoreResult<()> {
        self.bounded("record_audit", self.inner.record_audit(event))
            .await
    }

    async fn close(&self) -> StoreResult<()> {
        self.bounded("close", self.inner.close()).await
    }

    async fn record_login_failure(
        &self,
        user_id: Uuid,
        at: i64,
        window: i64,
        max: u32,
        lock_for: i64,
    ) -> StoreResult<Option<i64>> {
        self.bounded(
            "record_login_failure",
            self.inner
                .record_login_failure(user_id, at, window, max, lock_for),
        )
        .await
    }

    async fn clear_login_failures(&self, user_id: Uuid) -> StoreResult<()> {
        self.bounded(
            "clear_login_failures",
            self.inner.clear_login_failures(user_id),
        )
        .await
    }

    async fn mfa(&self, user_id: Uuid) -> StoreResult<Option<MfaRecord>> {
        self.bounded("mfa", self.inner.mfa(user_id)).await
    }

    async fn begin_mfa(
        &self,
        user_id: Uuid,
        secret: &str,
        backup_code_hashes: Vec<String>,
    ) -> StoreResult<()> {
        self.bounded(
            "begin_mfa",
            self.inner.begin_mfa(user_id, secret, backup_code_hashes),
        )
        .await
    }

    async fn accept_totp_step(&self, user_id: Uuid, step: i64, confirm: bool) -> StoreResult<bool> {
        self.bounded(
            "accept_totp_step",
            self.inner.accept_totp_step(user_id, step, confirm),
        )
        .await
    }

    async fn disable_mfa(&self, user_id: Uuid) -> StoreResult<()> {
        self.bounded("disable_mfa", self.inner.disable_mfa(user_id))
            .await
    }

    async fn unused_backup_codes(&self, user_id: Uuid) -> StoreResult<Vec<BackupCode>> {
        self.bounded(
            "unused_backup_codes",
            self.inner.unused_backup_codes(user_id),
        )
        .await
    }

    async fn use_backup_code(&self, user_id: Uuid, id: i64) -> StoreResult<bool> {
        self.bounded("use_backup_code", self.inner.use_backup_code(user_id, id))
            .await
    }

    async fn replace_backup_codes(&self, user_id: Uuid, hashes: Vec<String>) -> StoreResult<()> {
        self.bounded(
            "replace_backup_codes",
            self.inner.replace_backup_codes(user_id, hashes),
        )
        .await
    }

    async fn has_sealed_mfa_secrets(&self) -> StoreResult<bool> {
        self.bounded(
            "has_sealed_mfa_secrets",
            self.inner.has_sealed_mfa_secrets(),
        )
        .await
    }

    async fn create_mfa_token(
        &self,
        hash: &str,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()> {
        self.bounded(
            "create_mfa_token",
            self.inner
                .create_mfa_token(hash, user_id, tenant_id, expires_at),
        )
        .await
    }

    async fn mfa_token(&self, hash: &str) -> StoreResult<Option<MfaToken>> {
        self.bounded("mfa_token", self.inner.mfa_token(hash)).await
    }

    async fn mfa_token_failure(&self, hash: &str) -> StoreResult<u32> {
        self.bounded("mfa_token_failure", self.inner.mfa_token_failure(hash))
            .await
    }

    async fn consume_mfa_token(&self, hash: &str, at: i64) -> StoreResult<bool> {
        self.bounded("consume_mfa_token", self.inner.consume_mfa_token(hash, at))
            .await
    }

    async fn list_users(&self, tenant_id: Uuid, query: UserQuery) -> StoreResult<(Vec<User>, u64)> {
        self.bounded("list_users", self.inner.list_users(tenant_id, query))
            .await
    }

    async fn admin_update_user(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        update: AdminUserUpdate,
    ) -> StoreResult<User> {
        self.bounded(
            "admin_update_user",
            self.inner.admin_update_user(tenant_id, id, update),
        )
        .await
    }

    async fn delete_user(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool> {
        self.bounded("delete_user", self.inner.delete_user(tenant_id, id))
            .await
    }

    async fn set_email_verified(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<User> {
        self.bounded(
            "set_email_verified",
            self.inner.set_email_verified(tenant_id, id),
        )
        .await
    }

    async fn list_roles(&self, tenant_id: Uuid) -> StoreResult<Vec<Role>> {
        self.bounded("list_roles", self.inner.list_roles(tenant_id))
            .await
    }

    async fn create_role(&self, tenant_id: Uuid, role: Role) -> StoreResult<Role> {
        self.bounded("create_role", self.inner.create_role(tenant_id, role))
            .await
    }

    async fn update_role(
        &self,
        tenant_id: Uuid,
        name: &str,
        permissions: Vec<String>,
    ) -> StoreResult<Role> {
        self.bounded(
            "update_role",
            self.inner.update_role(tenant_id, name, permissions),
        )
        .await
    }

    async fn delete_role(&self, tenant_id: Uuid, name: &str) -> StoreResult<bool> {
        self.bounded("delete_role", self.inner.delete_role(tenant_id, name))
            .await
    }

    async fn audit_events_of(
        &self,
        tenant_id: Uuid,
        user_id: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        self.bounded(
            "audit_events_of",
            self.inner.audit_events_of(tenant_id, user_id, limit),
        )
        .await
    }

    async fn create_one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
        user_id: Uuid,
        tenant_id: Uuid,
        expires_at: i64,
    ) -> StoreResult<()> {
        self.bounded(
            "create_one_time_token",
            self.inner
                .create_one_time_token(hash, kind, user_id, tenant_id, expires_at),
        )
        .await
    }

    async fn one_time_token(
        &self,
        hash: &str,
        kind: OneTimeKind,
    ) -> StoreResult<Option<OneTimeToken>> {
        self.bounded("one_time_token", self.inner.one_time_token(hash, kind))
            .await
    }

    async fn consume_one_time_token(&self, hash: &str, at: i64) -> StoreResult<bool> {
        self.bounded(
            "consume_one_time_token",
            self.inner.consume_one_time_token(hash, at),
        )
        .await
    }

    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey> {
        self.bounded("create_api_key", self.inner.create_api_key(key))
            .await
    }

    async fn api_keys_of_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        self.bounded(
            "api_keys_of_user",
            self.inner.api_keys_of_user(tenant_id, user_id),
        )
        .await
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyWithOwner>> {
        self.bounded("api_key_by_hash", self.inner.api_key_by_hash(hash))
            .await
    }

    async fn revoke_api_key(&self, tenant_id: Uuid, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        self.bounded(
            "revoke_api_key",
            self.inner.revoke_api_key(tenant_id, user_id, id),
        )
        .await
    }

    async fn record_api_key_use(&self, uses: Vec<(Uuid, i64)>) -> StoreResult<()> {
        self.bounded("record_api_key_use", self.inner.record_api_key_use(uses))
            .await
    }

    async fn publish(&self, event: &StoreEvent) -> StoreResult<()> {
        self.bounded("publish", self.inner.publish(event)).await
    }

    /// Not bounded: the listener lives as long as the process and bounds its
    /// own connection attempts and keep-alive queries.
    async fn listen(&self, events: tokio::sync::mpsc::UnboundedSender<StoreEvent>) {
        self.inner.listen(events).await
    }

    fn after_deadline(&self) {
        self.inner.after_deadline()
    }
}
