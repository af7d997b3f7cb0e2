//! TOTP step-up on proxied routes with `require_otp` (SPEC §7 step 4): the
//! code comes in `proxy.otp_header` (or `otp`); a user without MFA gets 403
//! `MFA_NOT_ENROLLED`. Enrolments and verified codes are cached, so a burst
//! of requests with one code costs one check; failures count toward lockout.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use moka::sync::Cache;
use uuid::Uuid;

use crate::config::Config;
use crate::crypto::seal::SecretBox;
use crate::crypto::totp;
use crate::error::Error;
use crate::services::lockout::Lockout;
use crate::store::Store;
use crate::vocab::{Identity, now};

pub const OTP_ALIAS: &str = "otp";

pub struct OtpStepUp {
    store: Arc<dyn Store>,
    /// Opens the stored (possibly sealed) TOTP secrets.
    secrets: Arc<SecretBox>,
    /// A wrong code counts toward the account's lockout.
    lockout: Arc<Lockout>,
    /// `proxy.otp_header`.
    header: String,
    /// `mfa.skew_steps`.
    skew: u8,
    /// user → the confirmed TOTP secret, or None when the user has no MFA.
    enrolled: Cache<Uuid, Option<Arc<Vec<u8>>>>,
    /// (user, code) → the time step it matched.
    verified: Cache<(Uuid, String), u64>,
}

impl OtpStepUp {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        secrets: Arc<SecretBox>,
        lockout: Arc<Lockout>,
    ) -> Self {
        OtpStepUp {
            store,
            secrets,
            lockout,
            header: config.proxy.otp_header.clone(),
            skew: config.mfa.skew_steps,
            enrolled: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            verified: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(120))
                .build(),
        }
    }

    /// Forgets every cached enrolment.
    pub fn flush(&self) {
        self.enrolled.invalidate_all();
    }

    /// Forget what is cached for the user (enable, confirm, disable, reset).
    pub fn forget(&self, user_id: Uuid) {
        self.enrolled.invalidate(&user_id);
    }

    async fn secret(&self, user_id: Uuid) -> Result<Option<Arc<Vec<u8>>>, Error> {
        if let Some(s) = self.enrolled.get(&user_id) {
            return Ok(s);
        }
        let secret = match self.store.mfa(user_id).await? {
            Some(m) if m.confirmed => {
                let bytes = self
                    .secrets
                    .open(&m.secret, &user_id.to_string())
                    .map_err(|e| {
                        tracing::error!(error = %e, "TOTP secret unreadable");
                        Error::Internal
                    })?;
                Some(Arc::new(bytes))
            }
            _ => None,
        };
        self.enrolled.insert(user_id, secret.clone());
        Ok(secret)
    }

    /// Checks the step-up code of `identity`'s user.
    pub async fn check(&self, identity: &Identity, headers: &HeaderMap) -> Result<(), Error> {
        let Some(secret) = self.secret(identity.user_id).await? else {
            return Err(Error::MfaNotEnrolled);
        };
        let code = headers
            .get(self.header.as_str())
            .or_else(|| headers.get(OTP_ALIAS))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(Error::OtpRequired)?;
        let skew = self.skew;
        let at = now() as u64;
        let key = (identity.user_id, code.to_string());
        if let Some(step) = self.verified.get(&key)
            && at / totp::PERIOD <= step + skew as u64
        {
            return Ok(());
        }
        match totp::check(&secret, code, at, skew) {
            Some(step) => {
                self.verified.insert(key, step);
                Ok(())
            }
            None => {
                if let Some(user) = self
                    .store
                    .user_by_id(identity.tenant_id, identity.user_id)
                    .await?
                {
                    self.lockout.failure(None, &user).await?;
                }
                Err(Error::InvalidOtp)
            }
        }
    }
}
