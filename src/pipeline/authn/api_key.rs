//! The API key authenticator: a key is looked up by its SHA-256 through a moka
//! cache (a hit costs no store access) and refused when unknown, revoked,
//! expired, or when its owner is not active. Last use is noted in memory and
//! written to the store in batches ([`ApiKeyAuthenticator::flush_use`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use uuid::Uuid;

use super::credential::{Authenticated, Authenticator, Digest, Verified, digest};
use crate::crypto::digest_hash;
use crate::error::Error;
use crate::metrics;
use crate::pipeline::authz::grants;
use crate::store::{ApiKeyWithOwner, Store, StoreResult, UserStatus};
use crate::vocab::{CredentialKind, Identity, now};

/// Longer values are refused without a look-up (a key is 51 characters).
const MAX_KEY_LEN: usize = 256;

/// How often noted uses are written: each key gets at most one
/// `last_used_at` write per interval, and the stored value lags by at most this.
pub const USE_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

pub struct ApiKeyAuthenticator {
    store: Arc<dyn Store>,
    /// Verified keys by SHA-256 (no encoding or allocation on a hit).
    verified: Cache<Digest, Verified>,
    /// Hashes found dead (unknown, revoked, expired, owner not active), so a
    /// leaked or guessed key does not reach the store on every request.
    rejected: Cache<Digest, ()>,
    /// Keys revoked on this replica while a verified copy may still be cached.
    revoked: Cache<Uuid, ()>,
    /// Last use per key id since the last flush.
    pending_use: Mutex<HashMap<Uuid, i64>>,
}

impl ApiKeyAuthenticator {
    /// Caches of `max_entries` that keep an answer for `ttl` (`cache.*`).
    pub fn new(store: Arc<dyn Store>, max_entries: u64, ttl: Duration) -> Self {
        ApiKeyAuthenticator {
            store,
            verified: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            rejected: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
            revoked: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl * 2)
                .build(),
            pending_use: Mutex::new(HashMap::new()),
        }
    }

    async fn authenticate_at(&self, key: &str, at: i64) -> Result<Arc<Authenticated>, Error> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidApiKey);
        }
        let hash = digest(key);
        if let Some(Verified { who, expires_at }) = self.verified.get(&hash) {
            metrics::API_KEY_CACHE_HIT.inc();
            let revoked = who.key_id.is_some_and(|id| self.revoked.contains_key(&id));
            if revoked || expires_at <= at {
                self.verified.invalidate(&hash);
                return Err(Error::InvalidApiKey);
            }
            self.note_use(&who, at);
            return Ok(who);
        }
        metrics::API_KEY_CACHE_MISS.inc();
        if self.rejected.contains_key(&hash) {
            return Err(Error::InvalidApiKey);
        }
        let verified = match self.store.api_key_by_hash(&digest_hash(&hash)).await? {
            Some(found) if !self.revoked.contains_key(&found.key.id) => identity_of(&found, at),
            _ => Err(Error::InvalidApiKey),
        };
        match verified {
            Ok(verified) => {
                let who = verified.who.clone();
                self.verified.insert(hash, verified);
                self.note_use(&who, at);
                Ok(who)
            }
            Err(e) => {
                self.rejected.insert(hash, ());
                Err(e)
            }
        }
    }

    /// Makes a revoked key fail at once on this replica.
    pub fn evict_key(&self, key_id: Uuid) {
        self.revoked.insert(key_id, ());
        let _ = self
            .verified
            .invalidate_entries_if(move |_, v| v.who.key_id == Some(key_id));
    }

    /// Forgets every verified and rejected key: the next use re-reads the store.
    pub fn flush(&self) {
        self.verified.invalidate_all();
        self.rejected.invalidate_all();
    }

    /// Makes every key of a user fail over to the store at once (the owner was
    /// disabled, deleted, or their roles changed).
    pub fn evict_owner(&self, user_id: Uuid) {
        let _ = self
            .verified
            .invalidate_entries_if(move |_, v| v.who.user_id == user_id);
    }

    fn note_use(&self, identity: &Identity, at: i64) {
        if let (Some(id), Ok(mut pending)) = (identity.key_id, self.pending_use.lock()) {
            pending.insert(id, at);
        }
    }

    /// The last use of a key noted on this replica and not yet written.
    pub fn pending_use(&self, key_id: Uuid) -> Option<i64> {
        self.pending_use.lock().ok()?.get(&key_id).copied()
    }

    /// Writes the noted uses in one batch; on failure they are kept for the next flush.
    pub async fn flush_use(&self) -> StoreResult<usize> {
        let uses: Vec<(Uuid, i64)> = match self.pending_use.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(0),
        };
        let n = uses.len();
        if n == 0 {
            return Ok(0);
        }
        if let Err(e) = self.store.record_api_key_use(uses.clone()).await {
            if let Ok(mut pending) = self.pending_use.lock() {
                for (id, at) in uses {
                    let slot = pending.entry(id).or_insert(at);
                    *slot = (*slot).max(at);
                }
            }
            return Err(e);
        }
        Ok(n)
    }
}

impl Authenticator for ApiKeyAuthenticator {
    const KIND: CredentialKind = CredentialKind::ApiKey;

    /// Verifies `key`: 401 `INVALID_API_KEY` unless it is live and its owner active.
    async fn authenticate(&self, key: &str) -> Result<Arc<Authenticated>, Error> {
        self.authenticate_at(key, now()).await
    }
}

/// The identity a stored key speaks for at `at` and the key's expiry, or 401
/// `INVALID_API_KEY`.
pub fn identity_of(found: &ApiKeyWithOwner, at: i64) -> Result<Verified, Error> {
    let (key, owner) = (&found.key, &found.owner);
    if key.revoked_at.is_some()
        || key.expires_at.is_some_and(|e| e <= at)
        || owner.status != UserStatus::Active
        || owner.tenant_id != key.tenant_id
    {
        return Err(Error::InvalidApiKey);
    }
    let identity = Identity {
        user_id: owner.id,
        tenant_id: owner.tenant_id,
        email: owner.email.clone(),
        roles: owner.roles.clone(),
        permissions: effective_permissions(key.scopes.as_deref(), &owner.permissions),
        method: CredentialKind::ApiKey,
        session_id: None,
        key_id: Some(key.id),
        mfa: false,
        passkey: false,
        external: None,
    };
    Ok(Verified {
        who: Authenticated::new(identity),
        expires_at: key.expires_at.unwrap_or(i64::MAX),
    })
}

/// SPEC §7 step 5: the intersection of the key's scopes and its owner's
/// permissions, wildcards on both sides (`*`, `resource:*`); the owner's
/// permissions when the key has no scopes.
pub fn effective_permissions(scopes: Option<&[String]>, owner: &[String]) -> Vec<String> {
    let Some(scopes) = scopes else {
        return owner.to_vec();
    };
    let mut out: BTreeSet<String> = scopes
        .iter()
        .filter(|s| grants(owner, s))
        .cloned()
        .collect();
    out.extend(owner.iter().filter(|p| grants(scopes, p)).cloned());
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{ApiKey, NewApiKey, NewUser, User};

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scopes_narrow_the_owner_permissions_with_wildcards() {
        let owner = v(&["profile:read", "reports:*"]);
        assert_eq!(effective_permissions(None, &owner), owner);
        assert_eq!(
            effective_permissions(Some(&v(&["reports:read"])), &owner),
            v(&["reports:read"])
        );
        assert_eq!(
            effective_permissions(Some(&v(&["reports:read", "payments:write"])), &owner),
            v(&["reports:read"])
        );
        assert_eq!(
            effective_permissions(Some(&v(&["*"])), &owner),
            v(&["profile:read", "reports:*"])
        );
        assert_eq!(
            effective_permissions(Some(&v(&["reports:read"])), &v(&["*"])),
            v(&["reports:read"])
        );
        assert_eq!(
            effective_permissions(Some(&v(&["reports:*"])), &v(&["reports:read"])),
            v(&["reports:read"])
        );
        assert!(effective_permissions(Some(&[]), &owner).is_empty());
    }

    fn found(
        status: UserStatus,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
    ) -> ApiKeyWithOwner {
        let tenant = Uuid::now_v7();
        let owner = User {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            email: "a@example.com".into(),
            password_hash: None,
            first_name: None,
            family_name: None,
            name: None,
            status,
            email_verified: true,
            mfa_enabled: false,
            locked_until: None,
            roles: v(&["member"]),
            permissions: v(&["apikey:manage", "profile:read", "profile:write"]),
            created_at: 0,
            updated_at: 0,
        };
        ApiKeyWithOwner {
            key: ApiKey {
                id: Uuid::now_v7(),
                tenant_id: tenant,
                user_id: owner.id,
                name: "k".into(),
                description: None,
                key_prefix: "sk_live_abcd".into(),
                scopes: Some(v(&["profile:read"])),
                created_at: 0,
                expires_at,
                revoked_at,
                last_used_at: None,
            },
            owner,
        }
    }

    #[test]
    fn live_keys_speak_for_their_owner_with_the_key_id() {
        let f = found(UserStatus::Active, Some(2000), None);
        let verified = identity_of(&f, 1000).unwrap();
        let id = &verified.who;
        assert_eq!(id.method, CredentialKind::ApiKey);
        assert_eq!(id.key_id, Some(f.key.id));
        assert_eq!(id.session_id, None);
        assert_eq!(id.user_id, f.owner.id);
        assert_eq!(id.roles, v(&["member"]));
        assert_eq!(id.permissions, v(&["profile:read"]));
        assert_eq!(verified.expires_at, 2000);
        let forever = found(UserStatus::Active, None, None);
        assert_eq!(identity_of(&forever, 1000).unwrap().expires_at, i64::MAX);
    }

    #[test]
    fn expired_revoked_and_disabled_owner_keys_are_refused() {
        let cases = [
            found(UserStatus::Active, Some(1000), None),
            found(UserStatus::Active, Some(999), None),
            found(UserStatus::Active, None, Some(5)),
            found(UserStatus::Disabled, None, None),
        ];
        for f in &cases {
            assert_eq!(
                identity_of(f, 1000).map(|v| v.who.identity.clone()),
                Err(Error::InvalidApiKey),
                "{f:?}"
            );
        }
    }

    async fn store_with_key(
        expires_at: Option<i64>,
    ) -> (tempfile::TempDir, Arc<SqliteStore>, ApiKey, &'static str) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
        let t = store.ensure_tenant("default").await.unwrap();
        let u = store
            .create_user(NewUser {
                tenant_id: t.id,
                email: "a@example.com".into(),
                password_hash: None,
                first_name: None,
                family_name: None,
                name: None,
                email_verified: true,
                roles: v(&["member"]),
            })
            .await
            .unwrap();
        let key = "sk_live_0123456789abcdefghijABCDEFGHIJ0123456789xyz";
        let k = store
            .create_api_key(NewApiKey {
                id: Uuid::now_v7(),
                tenant_id: t.id,
                user_id: u.id,
                name: "k".into(),
                description: None,
                key_prefix: key[..12].into(),
                key_hash: crate::crypto::token_hash(key),
                scopes: None,
                created_at: now(),
                expires_at,
            })
            .await
            .unwrap();
        (dir, store, k, key)
    }

    #[tokio::test]
    async fn a_cached_key_needs_no_store_and_eviction_takes_effect_at_once() {
        let (_d, store, k, key) = store_with_key(None).await;
        let auth = ApiKeyAuthenticator::new(store.clone(), 100, Duration::from_secs(60));
        let id = auth.authenticate(key).await.unwrap();
        assert_eq!(id.key_id, Some(k.id));
        // revoked in the store behind the cache's back: the cached copy still answers
        assert!(
            store
                .revoke_api_key(k.tenant_id, k.user_id, k.id)
                .await
                .unwrap()
        );
        assert!(auth.authenticate(key).await.is_ok());
        auth.evict_key(k.id);
        assert_eq!(
            auth.authenticate(key).await.err(),
            Some(Error::InvalidApiKey)
        );
        assert_eq!(
            auth.authenticate("sk_live_unknown").await.err(),
            Some(Error::InvalidApiKey)
        );
    }

    #[tokio::test]
    async fn a_cached_key_past_its_expiry_is_refused_on_the_hit() {
        let at = now();
        let (_d, store, _k, key) = store_with_key(Some(at + 10)).await;
        let auth = ApiKeyAuthenticator::new(store.clone(), 100, Duration::from_secs(60));
        assert!(auth.authenticate_at(key, at).await.is_ok());
        assert_eq!(
            auth.authenticate_at(key, at + 10).await.err(),
            Some(Error::InvalidApiKey)
        );
        // already expired when first seen
        let (_d2, store2, _k2, key2) = store_with_key(Some(at - 1)).await;
        let auth2 = ApiKeyAuthenticator::new(store2, 100, Duration::from_secs(60));
        assert_eq!(
            auth2.authenticate(key2).await.err(),
            Some(Error::InvalidApiKey)
        );
    }

    #[tokio::test]
    async fn uses_are_noted_in_memory_and_flushed_in_one_batch() {
        let (_d, store, k, key) = store_with_key(None).await;
        let auth = ApiKeyAuthenticator::new(store.clone(), 100, Duration::from_secs(60));
        let at = now();
        auth.authenticate_at(key, at).await.unwrap();
        auth.authenticate_at(key, at + 1).await.unwrap();
        assert_eq!(auth.pending_use(k.id), Some(at + 1));
        let listed = store
            .api_keys_of_user(k.tenant_id, k.user_id)
            .await
            .unwrap();
        assert_eq!(listed[0].last_used_at, None, "no store write per request");
        assert_eq!(auth.flush_use().await.unwrap(), 1);
        assert_eq!(auth.pending_use(k.id), None);
        assert_eq!(auth.flush_use().await.unwrap(), 0);
        let listed = store
            .api_keys_of_user(k.tenant_id, k.user_id)
            .await
            .unwrap();
        assert_eq!(listed[0].last_used_at, Some(at + 1));
    }
}
