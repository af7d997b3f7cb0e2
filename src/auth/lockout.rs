//! Account lockout (SPEC §10, §14): failed passwords and codes within
//! `lockout.window_seconds` lock the account for `lockout.lockout_seconds`
//! (423 `ACCOUNT_LOCKED` with `Retry-After`); success resets; attempts made
//! while locked do not extend the lock.

use serde_json::json;
use uuid::Uuid;

use super::audit;
use crate::app::App;
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::store::{User, now};

/// 423 while the user is locked.
pub fn ensure_unlocked(user: &User) -> Result<(), Error> {
    match user.lock_remaining(now()) {
        Some(retry_after) => Err(Error::AccountLocked { retry_after }),
        None => Ok(()),
    }
}

/// Counts one failure (password or code) for the user.
pub async fn failure(app: &App, req: Option<&AuthRequest>, user: &User) -> Result<(), Error> {
    let cfg = &app.config.lockout;
    if cfg.max_failures == 0 {
        return Ok(());
    }
    let locked = app
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
        audit::record(
            app,
            req,
            Some(user.tenant_id),
            Some(user.id),
            "account.locked",
            "locked",
            json!({ "until": super::views::rfc3339(until) }),
        )
        .await;
    }
    Ok(())
}

/// Clears failures after a complete, successful login.
pub async fn success(app: &App, user_id: Uuid) -> Result<(), Error> {
    app.store.clear_login_failures(user_id).await?;
    Ok(())
}
