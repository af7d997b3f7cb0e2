//! The JWT authenticator: a moka cache of verified access tokens in front of
//! signature verification and the session check (or, for a token of an
//! `[[issuers]]` provider, its verification by [`ExternalIssuers`]). A hit costs no crypto and
//! no store access; revoked sessions are remembered so a cached token dies at once.
//! The cache keys on the token's SHA-256 and the tokens of one session share
//! one [`Identity`], so an entry costs ~100 bytes beyond moka's own bookkeeping.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use uuid::Uuid;

use super::credential::{Authenticated, Authenticator, Digest, Verified, digest};
use super::external::ExternalIssuers;
use crate::config::{Config, JwtSection};
use crate::error::Error;
use crate::metrics;
use crate::store::Store;
use crate::tokens::{self, KeyRing};
use crate::vocab::{CredentialKind, Identity, now};

pub struct JwtAuthenticator {
    store: Arc<dyn Store>,
    keys: Arc<KeyRing>,
    cfg: JwtSection,
    /// Verified tokens by SHA-256: a collision-resistant key, so a forged
    /// token can never hit another token's entry, and 32 bytes instead of
    /// the whole token.
    verified: Cache<Digest, Verified>,
    /// The credential last built for each session, shared by the session's
    /// cached tokens while their claims agree.
    sessions: Cache<Uuid, Arc<Authenticated>>,
    /// Sessions revoked while their tokens may still be cached or alive.
    revoked: Cache<Uuid, ()>,
    leeway: i64,
    /// `[[issuers]]`: tokens whose `iss` names one are verified by it.
    external: Option<Arc<ExternalIssuers>>,
}

impl JwtAuthenticator {
    /// Caches sized and timed by `cache.*`; revoked sessions are remembered
    /// as long as one of their tokens can live (`jwt.access_ttl_seconds` + leeway).
    pub fn new(config: &Config, store: Arc<dyn Store>, keys: Arc<KeyRing>) -> Self {
        let max_entries = config.cache.max_entries;
        let ttl = Duration::from_secs(config.cache.ttl_seconds);
        let token_lifetime = Duration::from_secs(config.jwt.access_ttl_seconds);
        let leeway = config.jwt.leeway_seconds;
        JwtAuthenticator {
            store,
            keys,
            cfg: config.jwt.clone(),
            verified: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
            sessions: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
            revoked: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(token_lifetime + Duration::from_secs(leeway))
                .build(),
            leeway: leeway as i64,
            external: None,
        }
    }

    /// Also accepts the access tokens of these external issuers.
    pub fn with_external(mut self, external: Option<Arc<ExternalIssuers>>) -> Self {
        self.external = external;
        self
    }

    async fn verify(&self, token: &str) -> Result<Arc<Authenticated>, Error> {
        let key = digest(token);
        if let Some(Verified { who, expires_at }) = self.verified.get(&key) {
            metrics::JWT_CACHE_HIT.inc();
            if expires_at + self.leeway < now() {
                self.verified.invalidate(&key);
                return Err(Error::TokenExpired);
            }
            if who
                .session_id
                .is_some_and(|sid| self.revoked.contains_key(&sid))
            {
                return Err(Error::TokenRevoked);
            }
            return Ok(who);
        }
        metrics::JWT_CACHE_MISS.inc();
        if let Some(external) = &self.external
            && let Some(issuer) = external.issuer_of(token)
        {
            // boxed: a cache miss of an external token may fetch keys, and
            // its future is too deep to nest inline in every request's
            let verified = Box::pin(external.verify(issuer, token)).await?;
            let who = Authenticated::new(verified.identity);
            self.verified.insert(
                key,
                Verified {
                    who: who.clone(),
                    expires_at: verified.expires_at,
                },
            );
            return Ok(who);
        }
        let claims = tokens::verify(&self.keys, &self.cfg, token).await?;
        if self.revoked.contains_key(&claims.sid) {
            return Err(Error::TokenRevoked);
        }
        match self.store.session(claims.sid).await? {
            Some(s) if s.revoked_at.is_none() && s.user_id == claims.sub => {}
            _ => {
                self.revoked.insert(claims.sid, ());
                return Err(Error::TokenRevoked);
            }
        }
        let identity = Identity {
            user_id: claims.sub,
            tenant_id: claims.tid,
            email: claims.email,
            roles: claims.roles,
            permissions: claims.perms,
            method: CredentialKind::Jwt,
            session_id: Some(claims.sid),
            key_id: None,
            mfa: claims.amr.iter().any(|m| m == "otp" || m == "mfa"),
            passkey: claims.amr.iter().any(|m| m == "hwk"),
            external: None,
        };
        let who = match self.sessions.get(&claims.sid) {
            Some(shared) if *shared.identity == identity => shared,
            _ => {
                let fresh = Authenticated::new(identity);
                self.sessions.insert(claims.sid, fresh.clone());
                fresh
            }
        };
        self.verified.insert(
            key,
            Verified {
                who: who.clone(),
                expires_at: claims.exp,
            },
        );
        Ok(who)
    }

    /// Forgets every verified token (the revoked sessions stay known), so
    /// the next use re-reads its session from the store.
    pub fn flush(&self) {
        self.verified.invalidate_all();
        self.sessions.invalidate_all();
    }

    /// Makes the sessions' tokens fail at once on this replica.
    pub fn revoke_sessions(&self, ids: &[Uuid]) {
        for id in ids {
            self.revoked.insert(*id, ());
        }
    }
}

impl Authenticator for JwtAuthenticator {
    const KIND: CredentialKind = CredentialKind::Jwt;

    async fn authenticate(&self, token: &str) -> Result<Arc<Authenticated>, Error> {
        self.verify(token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewSession;
    use crate::store::sqlite::SqliteStore;
    use crate::store::tests::new_user;
    use crate::tokens::AccessClaims;

    /// What a test of the cache needs: the authenticator on a fresh SQLite
    /// store, its key ring, and the claims of a live session.
    struct Fixture {
        jwt: JwtAuthenticator,
        keys: Arc<KeyRing>,
        claims: AccessClaims,
    }

    async fn with_session(dir: &std::path::Path) -> Fixture {
        let config = Config::default();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("jwt.db")).await.unwrap());
        let keys = Arc::new(KeyRing::load(&config, store.clone()).await.unwrap());
        let tenant = store.ensure_tenant("default").await.unwrap();
        let user = store
            .create_user(new_user(tenant.id, "cache@example.com"))
            .await
            .unwrap();
        let session = store
            .create_session(NewSession {
                id: Uuid::now_v7(),
                tenant_id: tenant.id,
                user_id: user.id,
                amr: vec!["pwd".into()],
                refresh_hash: "unused".into(),
                refresh_expires_at: now() + 3600,
                ip: None,
                user_agent: None,
            })
            .await
            .unwrap();
        let at = now();
        let claims = AccessClaims {
            iss: config.jwt.issuer.clone(),
            aud: config.jwt.audience.clone(),
            sub: user.id,
            tid: tenant.id,
            sid: session.id,
            jti: Uuid::new_v4(),
            iat: at,
            nbf: at,
            exp: at + 900,
            email: user.email.clone(),
            roles: user.roles.clone(),
            perms: user.permissions.clone(),
            amr: vec!["pwd".into()],
        };
        Fixture {
            jwt: JwtAuthenticator::new(&config, store, keys.clone()),
            keys,
            claims,
        }
    }

    #[tokio::test]
    async fn tokens_of_one_session_share_one_cached_identity() {
        let dir = tempfile::tempdir().unwrap();
        let Fixture { jwt, keys, claims } = with_session(dir.path()).await;
        let first = tokens::sign(&keys, &claims).unwrap();
        let second = tokens::sign(
            &keys,
            &AccessClaims {
                jti: Uuid::new_v4(),
                exp: claims.exp + 1,
                ..claims.clone()
            },
        )
        .unwrap();
        let a = jwt.authenticate(&first).await.unwrap();
        let b = jwt.authenticate(&second).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one identity per session");
        // a hit answers the same shared identity
        let hit = jwt.authenticate(&second).await.unwrap();
        assert!(Arc::ptr_eq(&a, &hit));

        // claims that differ (roles changed at a refresh) get their own identity
        let promoted = tokens::sign(
            &keys,
            &AccessClaims {
                jti: Uuid::new_v4(),
                roles: vec!["member".into(), "admin".into()],
                ..claims.clone()
            },
        )
        .unwrap();
        let c = jwt.authenticate(&promoted).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.roles, ["member", "admin"]);
        let again = jwt.authenticate(&first).await.unwrap();
        assert_eq!(
            again.roles,
            ["member"],
            "the older token keeps its own claims"
        );
    }

    #[tokio::test]
    async fn a_cached_tokens_signature_does_not_vouch_for_other_claims() {
        let dir = tempfile::tempdir().unwrap();
        let Fixture { jwt, keys, claims } = with_session(dir.path()).await;
        let token = tokens::sign(&keys, &claims).unwrap();
        jwt.authenticate(&token).await.unwrap();
        let admin = tokens::sign(
            &keys,
            &AccessClaims {
                roles: vec!["admin".into()],
                ..claims.clone()
            },
        )
        .unwrap();
        // the admin payload under the cached token's header and signature
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = admin.split('.').nth(1).unwrap();
        let forged = parts.join(".");
        assert_eq!(
            jwt.authenticate(&forged).await.err(),
            Some(Error::InvalidToken)
        );
        // and the cached token still works
        assert!(jwt.authenticate(&token).await.is_ok());
    }

    #[tokio::test]
    async fn revoking_the_session_kills_its_cached_tokens_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let Fixture { jwt, keys, claims } = with_session(dir.path()).await;
        let token = tokens::sign(&keys, &claims).unwrap();
        jwt.authenticate(&token).await.unwrap();
        jwt.revoke_sessions(&[claims.sid]);
        assert_eq!(
            jwt.authenticate(&token).await.err(),
            Some(Error::TokenRevoked)
        );
    }
}
