//! Account lockout (SPEC §10, §14): failed passwords and codes within
//! `lockout.window_seconds` lock the account for `lockout.lockout_seconds`
//! (423 `ACCOUNT_LOCKED` with `Retry-After`); success resets; attempts made
//! while locked do not extend the lock. Login, MFA and the proxy's step-up
//! all count through [`Lockout`].

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use super::audit::Audit;
use crate::config::LockoutSection;
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::store::{Store, User};
use crate::vocab::{now, rfc3339};

/// 423 while the user is locked.
pub fn ensure_unlocked(user: &User) -> Result<(), Error> {
    match user.lock_remaining(now()) {
        Some(retry_after) => Err(Error::AccountLocked { retry_after }),
        None => Ok(()),
    }
}

pub struct Lockout {
    store: Arc<dyn Store>,
    audit: Audit,
    cfg: LockoutSection,
}

impl Lockout {
    pub fn new(store: Arc<dyn Store>, audit: Audit, cfg: LockoutSection) -> Self {
        Lockout { store, audit, cfg }
    }

    /// Counts one failure (password or code) for the user; audits the lock
    /// it causes.
    pub async fn failure(&self, req: Option<&AuthRequest>, user: &User) -> Result<(), Error> {
        let cfg = &self.cfg;
        if cfg.max_failures == 0 {
            return Ok(());
        }
        let locked = self
            .store
            .record_login_failure(
                user.id,
                now(),
                cfg.window_seconds as i64,
                cfg.max_failures,
                cfg.lockout_seconds as i64,
            )
            .await?;
        if let Some(until) = locked {
            self.audit
                .user_event(
                    req,
                    user,
                    "account.locked",
                    "locked",
                    json!({ "until": rfc3339(until) }),
                )
                .await;
        }
        Ok(())
    }

    /// Clears failures after a complete, successful login.
    pub async fn success(&self, user_id: Uuid) -> Result<(), Error> {
        self.store.clear_login_failures(user_id).await?;
        Ok(())
    }
}
