//! The composition root: [`App::init`] builds every service bottom-up (store
//! → default tenant → keys → services → authenticators → [`Pipeline`] →
//! [`Revocations`]) and [`App`] holds them for the `/auth` handlers, the
//! proxy and the background tasks. Nothing below this module sees `App`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::Config;
use crate::crypto::password::PasswordHasher;
use crate::crypto::seal::SecretBox;
use crate::crypto::webauthn::RelyingParty;
use crate::metrics;
use crate::notify::Webhook;
use crate::pipeline::Pipeline;
use crate::pipeline::authn::Authenticators;
use crate::pipeline::authn::api_key::ApiKeyAuthenticator;
use crate::pipeline::authn::external::ExternalIssuers;
use crate::pipeline::authn::jwt::JwtAuthenticator;
use crate::pipeline::otp::OtpStepUp;
use crate::revocations::Revocations;
use crate::services::audit::Audit;
use crate::services::lockout::Lockout;
use crate::services::rate_limit::RateLimiter;
use crate::services::rate_limit::shared::SharedLimits;
use crate::store::{self, Store};
use crate::tenancy::TenantDirectory;
use crate::tokens::KeyRing;

pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyRing>,
    pub tenants: Arc<TenantDirectory>,
    pub passwords: PasswordHasher,
    /// Seals TOTP secrets at rest when `secrets.encryption_key_file` is set.
    pub secrets: Arc<SecretBox>,
    pub audit: Audit,
    pub lockout: Arc<Lockout>,
    /// The proxy path (also behind `GET /auth/verify`).
    pub pipeline: Pipeline,
    /// Every cache invalidation goes through here.
    pub revocations: Revocations,
    /// `[[issuers]]`: external providers' tokens and logins.
    pub external: Option<Arc<ExternalIssuers>>,
    /// `[passkeys]`: the WebAuthn relying party; None while passkeys are off.
    pub passkeys: Option<RelyingParty>,
    /// Notes API-key use; flushed in batches by a background task.
    pub api_keys: Arc<ApiKeyAuthenticator>,
    /// Public `/auth` requests per client IP (in Redis with `rate_limit.redis_url`).
    pub ip_limits: RateLimiter,
    /// Login and password-reset attempts per (tenant, email), likewise.
    pub login_limits: RateLimiter,
    /// `notifications.webhook_url`, parsed.
    pub webhook: Option<Webhook>,
    /// Also log notification tokens (`portcullis demo` only).
    pub log_tokens: bool,
    /// Set once start-up finished; cleared again when draining.
    ready: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
}

impl App {
    /// Opens the store, makes sure the default tenant and a signing key
    /// exist, and builds the services. The caller marks the app ready
    /// ([`App::set_ready`]) once it finished its own start-up (the bootstrap admin).
    pub async fn init(config: Config, log_tokens: bool) -> Result<Arc<App>, String> {
        metrics::init();
        let config = Arc::new(config);
        let store = store::open(&config).await?;
        store
            .ensure_tenant(&config.tenancy.default_tenant)
            .await
            .map_err(|e| format!("default tenant: {e}"))?;
        let keys = Arc::new(KeyRing::load(&config, store.clone()).await?);
        let secrets = Arc::new(SecretBox::new(
            Config::read_secret_file(
                "secrets.encryption_key_file",
                &config.secrets.encryption_key_file,
            )
            .map_err(|e| e.to_string())?
            .as_deref(),
        )?);
        if !secrets.is_sealing()
            && store
                .has_sealed_mfa_secrets()
                .await
                .map_err(|e| e.to_string())?
        {
            return Err("the store holds encrypted TOTP secrets but secrets.encryption_key_file is not set; set it to the key they were sealed with".into());
        }
        let webhook = Webhook::parse(&config.notifications.webhook_url)?;
        let tenants = Arc::new(TenantDirectory::new(
            store.clone(),
            config.tenancy.clone(),
            Duration::from_secs(config.cache.tenant_ttl_seconds.max(1)),
        ));
        let audit = Audit::new(store.clone());
        let lockout = Arc::new(Lockout::new(
            store.clone(),
            audit.clone(),
            config.lockout.clone(),
        ));
        let external = ExternalIssuers::new(&config, store.clone(), tenants.clone())?;
        let passkeys = RelyingParty::new(&config.passkeys)?;
        // connects on first use: a Redis that is down does not hold up the start
        let shared_limits = SharedLimits::new(&config.rate_limit)?;
        let jwt = Arc::new(
            JwtAuthenticator::new(&config, store.clone(), keys.clone())
                .with_external(external.clone()),
        );
        let api_keys = Arc::new(ApiKeyAuthenticator::new(
            store.clone(),
            config.cache.max_entries,
            Duration::from_secs(config.cache.ttl_seconds),
        ));
        let otp = Arc::new(OtpStepUp::new(
            &config,
            store.clone(),
            secrets.clone(),
            lockout.clone(),
        ));
        let pipeline = Pipeline::new(
            &config,
            Authenticators {
                jwt: jwt.clone(),
                api_keys: api_keys.clone(),
                api_key_prefix: config.api_keys.prefix.clone(),
            },
            tenants.clone(),
            otp.clone(),
            keys.clone(),
        )?;
        let revocations = Revocations {
            store: store.clone(),
            jwt,
            api_keys: api_keys.clone(),
            otp,
            tenants: tenants.clone(),
            keys: keys.clone(),
        };
        Ok(Arc::new(App {
            external,
            passkeys,
            webhook,
            log_tokens,
            tenants,
            passwords: PasswordHasher::start(&config.passwords),
            secrets,
            audit,
            lockout,
            pipeline,
            revocations,
            api_keys,
            ip_limits: RateLimiter::with_shared(
                "ip",
                config.rate_limit.per_ip_per_minute,
                shared_limits.clone(),
            ),
            login_limits: RateLimiter::with_shared(
                "login",
                config.rate_limit.login_per_account_per_minute,
                shared_limits,
            ),
            keys,
            store,
            config,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }))
    }

    /// Start-up finished: `/readyz` may answer 200.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// `/readyz`: started, not draining, and the store answers.
    pub async fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
            && self.store.ping().await.is_ok()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts a request until the guard drops.
    pub fn track_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// One request in flight (for the SIGTERM drain).
pub struct InFlight(Arc<App>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
