//! The JWT authenticator: a moka cache of verified access tokens in front of
//! signature verification and the session check. A hit costs no crypto and
//! no store access; revoked sessions are remembered so a cached token dies at once.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use uuid::Uuid;

use crate::app::App;
use crate::config::CredentialKind;
use crate::error::Error;
use crate::metrics;
use crate::pipeline::Identity;
use crate::store::now;
use crate::tokens;

pub struct JwtAuthenticator {
    verified: Cache<String, Arc<Identity>>,
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
            revoked: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(token_lifetime + Duration::from_secs(leeway))
                .build(),
            leeway: leeway as i64,
        }
    }

    pub async fn authenticate(&self, app: &App, token: &str) -> Result<Arc<Identity>, Error> {
        if let Some(identity) = self.verified.get(token) {
            metrics::JWT_CACHE_HIT.inc();
            if identity.expires_at + self.leeway < now() {
                self.verified.invalidate(token);
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
        let identity = Arc::new(Identity {
            user_id: claims.sub,
            tenant_id: claims.tid,
            email: claims.email,
            roles: claims.roles,
            permissions: claims.perms,
            method: CredentialKind::Jwt,
            session_id: Some(claims.sid),
            key_id: None,
            mfa: claims.amr.iter().any(|m| m == "otp"),
            expires_at: claims.exp,
            upstream_headers: Default::default(),
        });
        self.verified.insert(token.to_string(), identity.clone());
        Ok(identity)
    }

    /// Forgets every verified token (the revoked sessions stay known), so
    /// the next use re-reads its session from the store.
    pub fn flush(&self) {
        self.verified.invalidate_all();
    }

    /// Makes the sessions' tokens fail at once on this replica.
    pub fn revoke_sessions(&self, ids: &[Uuid]) {
        for id in ids {
            self.revoked.insert(*id, ());
        }
    }
}
