//! Revocations: the one way a change that invalidates credentials reaches
//! the caches. [`Revocations::revoke`] applies it on this replica and
//! publishes it to the others; [`Revocations::apply`] is the only mapping from
//! a [`StoreEvent`] to its effect, for local and remote events alike.

use std::sync::Arc;

use uuid::Uuid;

use crate::error::Error;
use crate::pipeline::authn::api_key::ApiKeyAuthenticator;
use crate::pipeline::authn::jwt::JwtAuthenticator;
use crate::pipeline::otp::OtpStepUp;
use crate::store::{Store, StoreEvent};
use crate::tenancy::TenantDirectory;
use crate::tokens::KeyRing;

/// The caches a revocation reaches, and the store that carries it to the
/// other replicas.
pub struct Revocations {
    pub store: Arc<dyn Store>,
    pub jwt: Arc<JwtAuthenticator>,
    pub api_keys: Arc<ApiKeyAuthenticator>,
    pub otp: Arc<OtpStepUp>,
    pub tenants: Arc<TenantDirectory>,
    pub keys: Arc<KeyRing>,
}

impl Revocations {
    /// Applies `change` here at once and tells the other replicas; a failure
    /// to publish is logged (they catch up by cache TTL).
    pub async fn revoke(&self, change: StoreEvent) {
        self.apply(&change).await;
        if let Err(e) = self.store.publish(&change).await {
            tracing::warn!(error = %e, event = ?change, "publishing a revocation to other replicas");
        }
    }

    /// Revokes every live session of the user except `keep`: in the store,
    /// then as a [`StoreEvent::Sessions`]. Returns the sessions revoked.
    pub async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> Result<Vec<Uuid>, Error> {
        let ids = self
            .store
            .revoke_user_sessions(user_id, keep, reason)
            .await?;
        self.revoke(StoreEvent::Sessions { ids: ids.clone() }).await;
        Ok(ids)
    }

    /// The effect of `event` on this replica's caches; `Resync` flushes them all.
    pub async fn apply(&self, event: &StoreEvent) {
        tracing::debug!(?event, "revocation");
        match event {
            StoreEvent::Sessions { ids } => self.jwt.revoke_sessions(ids),
            StoreEvent::Owner { user_id } => {
                self.api_keys.evict_owner(*user_id);
                self.otp.forget(*user_id);
            }
            StoreEvent::ApiKey { id } => self.api_keys.evict_key(*id),
            StoreEvent::Mfa { user_id } => self.otp.forget(*user_id),
            StoreEvent::KeysRotated => self.reload_keys().await,
            StoreEvent::Resync => {
                self.jwt.flush();
                self.api_keys.flush();
                self.otp.flush();
                self.tenants.flush();
                self.reload_keys().await;
            }
        }
    }

    async fn reload_keys(&self) {
        if let Err(e) = self.keys.reload().await {
            tracing::warn!(error = %e, "reloading signing keys");
        }
    }
}
