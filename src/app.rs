//! The composition root: [`App`] holds the validated config, the store, the
//! keys, the caches and the argon2 pool that every request path shares, and
//! [`App::init`] builds them in order (store → default tenant → keys →
//! bootstrap admin) before any listener opens.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;

use crate::auth::rate_limit::RateLimiter;
use crate::config::{Config, parse_cidr};
use crate::crypto::password::PasswordHasher;
use crate::crypto::seal::SecretBox;
use crate::notify::Webhook;
use crate::pipeline::Identity;
use crate::pipeline::authn::api_key::ApiKeyAuthenticator;
use crate::pipeline::authn::jwt::JwtAuthenticator;
use crate::pipeline::authz::RoutePolicies;
use crate::pipeline::identity_headers::IdentityHeaderNames;
use crate::pipeline::otp::OtpStepUp;
use crate::store::{self, Store, StoreEvent};
use crate::tenancy::TenantDirectory;
use crate::tokens::KeyRing;
use crate::tokens::assertion::Assertions;
use crate::{auth, metrics};

pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub keys: KeyRing,
    pub tenants: TenantDirectory,
    pub passwords: PasswordHasher,
    pub jwt: JwtAuthenticator,
    /// Seals TOTP secrets at rest when `secrets.encryption_key_file` is set.
    pub secrets: SecretBox,
    pub otp: OtpStepUp,
    /// Public `/auth` requests per client IP.
    pub ip_limits: RateLimiter,
    /// Login attempts per (tenant, email).
    pub login_limits: RateLimiter,
    /// Compiled `[[routes]]`; swapped whole on SIGHUP ([`crate::reload`]).
    routes: RwLock<Arc<RoutePolicies>>,
    pub identity_headers: IdentityHeaderNames,
    pub trusted_proxies: Vec<IpNet>,
    /// `notifications.webhook_url`, parsed.
    pub webhook: Option<Webhook>,
    /// Also log notification tokens (`portcullis demo` only).
    pub log_tokens: bool,
    pub api_keys: ApiKeyAuthenticator,
    /// Signed `X-Auth-Assertion` values (when `proxy.identity_assertion`).
    pub assertions: Assertions,
    /// Set once start-up finished; cleared again when draining.
    ready: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
}

impl App {
    /// The route policies in force (an `Arc` clone under a read lock).
    pub fn routes(&self) -> Arc<RoutePolicies> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in new route policies; requests already matched keep theirs.
    pub fn replace_routes(&self, routes: RoutePolicies) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
    }

    /// Opens the store, makes sure the default tenant and a signing key exist,
    /// and creates the bootstrap admin when asked to.
    pub async fn init(config: Config, log_tokens: bool) -> Result<Arc<App>, String> {
        metrics::init();
        let config = Arc::new(config);
        let store = store::open(&config).await?;
        store
            .ensure_tenant(&config.tenancy.default_tenant)
            .await
            .map_err(|e| format!("default tenant: {e}"))?;
        let keys = KeyRing::load(&config, store.clone()).await?;
        let secrets = SecretBox::new(
            Config::read_secret_file(
                "secrets.encryption_key_file",
                &config.secrets.encryption_key_file,
            )
            .map_err(|e| e.to_string())?
            .as_deref(),
        )?;
        if !secrets.is_sealing()
            && store
                .has_sealed_mfa_secrets()
                .await
                .map_err(|e| e.to_string())?
        {
            return Err("the store holds encrypted TOTP secrets but secrets.encryption_key_file is not set; set it to the key they were sealed with".into());
        }
        let routes = RoutePolicies::compile(&config)?;
        let identity_headers = IdentityHeaderNames::new(&config.proxy.identity_header_prefix)?
            .with_api_key_prefix(&config.api_keys.prefix);
        let trusted_proxies = config
            .proxy
            .trusted_proxies
            .iter()
            .filter_map(|c| parse_cidr(c))
            .collect();
        let webhook = Webhook::parse(&config.notifications.webhook_url)?;
        let app = Arc::new(App {
            webhook,
            log_tokens,
            tenants: TenantDirectory::new(
                store.clone(),
                config.tenancy.clone(),
                Duration::from_secs(config.cache.tenant_ttl_seconds.max(1)),
            ),
            passwords: PasswordHasher::start(&config.passwords),
            jwt: JwtAuthenticator::new(
                config.cache.max_entries,
                Duration::from_secs(config.cache.ttl_seconds),
                Duration::from_secs(config.jwt.access_ttl_seconds),
                config.jwt.leeway_seconds,
            ),
            secrets,
            otp: OtpStepUp::default(),
            ip_limits: RateLimiter::new(config.rate_limit.per_ip_per_minute),
            login_limits: RateLimiter::new(config.rate_limit.login_per_account_per_minute),
            routes: RwLock::new(Arc::new(routes)),
            identity_headers,
            trusted_proxies,
            api_keys: ApiKeyAuthenticator::new(
                config.cache.max_entries,
                Duration::from_secs(config.cache.ttl_seconds),
            ),
            assertions: Assertions::new(config.cache.max_entries),
            keys,
            store,
            config,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        });
        auth::account::bootstrap_admin_from_env(&app).await?;
        app.ready.store(true, Ordering::SeqCst);
        Ok(app)
    }

    /// `/readyz`: started, not draining, and the store answers.
    pub async fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
            && self.store.ping().await.is_ok()
    }

    /// Tells the other replicas about a revocation this one already applied
    /// locally; a failure is logged (they catch up by cache TTL).
    /// Revokes every live session of the user except `keep`: in the store, in
    /// this replica's caches at once, and on the others through the store's
    /// events. Returns the sessions revoked.
    pub async fn revoke_user_sessions(
        &self,
        user_id: uuid::Uuid,
        keep: Option<uuid::Uuid>,
        reason: &str,
    ) -> Result<Vec<uuid::Uuid>, crate::error::Error> {
        let revoked = self
            .store
            .revoke_user_sessions(user_id, keep, reason)
            .await?;
        self.jwt.revoke_sessions(&revoked);
        self.publish(StoreEvent::Sessions {
            ids: revoked.clone(),
        })
        .await;
        Ok(revoked)
    }

    pub async fn publish(&self, event: StoreEvent) {
        if let Err(e) = self.store.publish(&event).await {
            tracing::warn!(error = %e, ?event, "publishing a revocation to other replicas");
        }
    }

    /// Applies a revocation published by a replica (this one included) to
    /// the caches; `Resync` flushes them all.
    pub async fn apply_event(&self, event: StoreEvent) {
        tracing::debug!(?event, "store event");
        match event {
            StoreEvent::Sessions { ids } => self.jwt.revoke_sessions(&ids),
            StoreEvent::Owner { user_id } => {
                self.api_keys.evict_owner(user_id);
                self.otp.forget(user_id);
            }
            StoreEvent::ApiKey { id } => self.api_keys.evict_key(id),
            StoreEvent::Mfa { user_id } => self.otp.forget(user_id),
            StoreEvent::KeysRotated => {
                if let Err(e) = self.keys.reload().await {
                    tracing::warn!(error = %e, "reloading signing keys");
                }
            }
            StoreEvent::Resync => {
                self.jwt.flush();
                self.api_keys.flush();
                self.otp.flush();
                self.tenants.flush();
                if let Err(e) = self.keys.reload().await {
                    tracing::warn!(error = %e, "reloading signing keys");
                }
            }
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The signed `X-Auth-Assertion` for `identity` when `proxy.identity_assertion`
    /// is on; a signing failure is logged and the header left out.
    pub fn identity_assertion(&self, identity: &Identity) -> Option<Arc<str>> {
        if !self.config.proxy.identity_assertion {
            return None;
        }
        self.assertions
            .for_identity(&self.keys, &self.config, identity)
            .ok()
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
