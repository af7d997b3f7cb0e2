//! The JWT authenticator: a moka cache of verified access tokens in front of
//! signature verification and the session check. A hit costs no crypto and
//! no store access; revoked sessions are remembered so a cached token dies at once.
//! The cache keys on the token's SHA-256 and the tokens of one session share
//! one [`Identity`], so an entry costs ~100 bytes beyond moka's own bookkeeping.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use uuid::Uuid;

use super::{Digest, Verified, digest};
use crate::app::App;
use crate::config::CredentialKind;
use crate::error::Error;
use crate::metrics;
use crate::pipeline::Identity;
use crate::store::now;
use crate::tokens;

pub struct JwtAuthenticator {
    /// Verified tokens by SHA-256: a collision-resistant key, so a forged
    /// token can never hit another token's entry, and 32 bytes instead of
    /// the whole token.
    verified: Cache<Digest, Verified>,
    /// The identity last built for each session, shared by the session's
    /// cached tokens while their claims agree.
    sessions: Cache<Uuid, Arc<Identity>>,
    /// Sessions revoked while their tokens may still be cached or alive.
    revoked: Cache<Uuid, ()>,
    leeway: i64,
}

impl JwtAuthenticator {
    pub fn new(max_entries: u64, ttl: Duration, token_lifetime: Duration, leeway: u64) -> Self {
        JwtAuthenticator {
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
        }
    }

    pub async fn authenticate(&self, app: &App, token: &str) -> Result<Arc<Identity>, Error> {
        let key = digest(token);
        if let Some(Verified {
            identity,
            expires_at,
        }) = self.verified.get(&key)
        {
            metrics::JWT_CACHE_HIT.inc();
            if expires_at + self.leeway < now() {
                self.verified.invalidate(&key);
                return Err(Error::TokenExpired);
            }
            if identity
                .session_id
                .is_some_and(|sid| self.revoked.contains_key(&sid))
            {
                return Err(Error::TokenRevoked);
            }
            return Ok(identity);
        }
        metrics::JWT_CACHE_MISS.inc();
        let claims = tokens::verify(&app.keys, &app.config.jwt, token).await?;
        if self.revoked.contains_key(&claims.sid) {
            return Err(Error::TokenRevoked);
        }
        match app.store.session(claims.sid).await? {
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
            mfa: claims.amr.iter().any(|m| m == "otp"),
            upstream_headers: Default::default(),
        };
        let identity = match self.sessions.get(&claims.sid) {
            Some(shared) if *shared == identity => shared,
            _ => {
                let fresh = Arc::new(identity);
                self.sessions.insert(claims.sid, fresh.clone());
                fresh
            }
        };
        self.verified.insert(
            key,
            Verified {
                identity: identity.clone(),
                expires_at: claims.exp,
            },
        );
        Ok(identity)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::NewSession;
    use crate::store::tests::new_user;
    use crate::tokens::AccessClaims;

    /// An app on a fresh SQLite file, and the claims of a live session in it.
    async fn app_with_session(dir: &std::path::Path) -> (Arc<App>, AccessClaims) {
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.join("jwt.db").display());
        let app = App::init(config, false).await.unwrap();
        let tenant = app.store.ensure_tenant("default").await.unwrap();
        let user = app
            .store
            .create_user(new_user(tenant.id, "cache@example.com"))
            .await
            .unwrap();
        let session = app
            .store
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
            iss: app.config.jwt.issuer.clone(),
            aud: app.config.jwt.audience.clone(),
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
        (app, claims)
    }

    #[tokio::test]
    async fn tokens_of_one_session_share_one_cached_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (app, claims) = app_with_session(dir.path()).await;
        let first = tokens::sign(&app.keys, &claims).unwrap();
        let second = tokens::sign(
            &app.keys,
            &AccessClaims {
                jti: Uuid::new_v4(),
                exp: claims.exp + 1,
                ..claims.clone()
            },
        )
        .unwrap();
        let a = app.jwt.authenticate(&app, &first).await.unwrap();
        let b = app.jwt.authenticate(&app, &second).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one identity per session");
        // a hit answers the same shared identity
        let hit = app.jwt.authenticate(&app, &second).await.unwrap();
        assert!(Arc::ptr_eq(&a, &hit));

        // claims that differ (roles changed at a refresh) get their own identity
        let promoted = tokens::sign(
            &app.keys,
            &AccessClaims {
                jti: Uuid::new_v4(),
                roles: vec!["member".into(), "admin".into()],
                ..claims.clone()
            },
        )
        .unwrap();
        let c = app.jwt.authenticate(&app, &promoted).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.roles, ["member", "admin"]);
        let again = app.jwt.authenticate(&app, &first).await.unwrap();
        assert_eq!(
            again.roles,
            ["member"],
            "the older token keeps its own claims"
        );
    }

    #[tokio::test]
    async fn a_cached_tokens_signature_does_not_vouch_for_other_claims() {
        let dir = tempfile::tempdir().unwrap();
        let (app, claims) = app_with_session(dir.path()).await;
        let token = tokens::sign(&app.keys, &claims).unwrap();
        app.jwt.authenticate(&app, &token).await.unwrap();
        let admin = tokens::sign(
            &app.keys,
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
            app.jwt.authenticate(&app, &forged).await,
            Err(Error::InvalidToken)
        );
        // and the cached token still works
        assert!(app.jwt.authenticate(&app, &token).await.is_ok());
    }

    #[tokio::test]
    async fn revoking_the_session_kills_its_cached_tokens_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (app, claims) = app_with_session(dir.path()).await;
        let token = tokens::sign(&app.keys, &claims).unwrap();
        app.jwt.authenticate(&app, &token).await.unwrap();
        app.jwt.revoke_sessions(&[claims.sid]);
        assert_eq!(
            app.jwt.authenticate(&app, &token).await,
            Err(Error::TokenRevoked)
        );
    }
}
