//! Configuration: SPEC §13's TOML file, `PORTCULLIS_<SECTION>__<KEY>`
//! environment overrides, unknown keys rejected by name (and line), secrets
//! read from `*_file` keys, and the masked rendering `config check` prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vocab::CredentialKind;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub proxy: ProxySection,
    pub admin: AdminSection,
    pub upstream: UpstreamSection,
    pub database: DatabaseSection,
    pub tenancy: TenancySection,
    pub jwt: JwtSection,
    pub accounts: AccountsSection,
    pub mfa: MfaSection,
    pub passkeys: PasskeysSection,
    pub lockout: LockoutSection,
    pub rate_limit: RateLimitSection,
    pub cache: CacheSection,
    pub api_keys: ApiKeysSection,
    pub secrets: SecretsSection,
    pub notifications: NotificationsSection,
    pub log: LogSection,
    pub passwords: PasswordsSection,
    pub routes: Vec<RouteConfig>,
    /// External OpenID Providers whose access tokens the proxy path accepts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<IssuerConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Worker threads of the proxy; 0 = one per core.
    pub threads: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub grace_period_seconds: u64,
    /// Seconds the runtimes get to stop after the grace period.
    pub graceful_shutdown_timeout_seconds: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            threads: 0,
            grace_period_seconds: 10,
            graceful_shutdown_timeout_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Public,
    Authenticated,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    pub listen: String,
    pub auth_prefix: String,
    pub default_policy: AuthMode,
    pub forward_authorization: bool,
    pub identity_header_prefix: String,
    pub identity_assertion: bool,
    pub assertion_audience: String,
    pub otp_header: String,
    pub trusted_proxies: Vec<String>,
    pub max_auth_body_bytes: usize,
    /// PEM certificate chain: with `tls_key_file`, TLS on the proxy listener.
    pub tls_cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: String,
}

impl ProxySection {
    /// Whether the proxy listener speaks TLS.
    pub fn tls(&self) -> bool {
        !self.tls_cert_file.is_empty()
    }
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            auth_prefix: "/auth".into(),
            default_policy: AuthMode::Authenticated,
            forward_authorization: true,
            identity_header_prefix: "X-Auth-".into(),
            identity_assertion: false,
            assertion_audience: "upstream".into(),
            otp_header: "X-OTP".into(),
            trusted_proxies: Vec::new(),
            max_auth_body_bytes: 65536,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    pub address: String,
    /// The protocol spoken to the upstream: `http1`, `h2c` (HTTP/2 with
    /// prior knowledge, what a gRPC server speaks in clear text) or `h2`
    /// (HTTP/2 over TLS, by ALPN).
    pub protocol: UpstreamProtocol,
    pub tls: bool,
    /// The TLS server name sent and verified; empty = the host of `address`.
    #[serde(alias = "tls_server_name")]
    pub sni: String,
    /// PEM file of the CAs that may sign the upstream's certificate; empty =
    /// the system's roots.
    pub ca_file: String,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:3000".into(),
            protocol: UpstreamProtocol::Http1,
            tls: false,
            sni: String::new(),
            ca_file: String::new(),
            connect_timeout_ms: 2000,
            read_timeout_ms: 30000,
        }
    }
}

/// `upstream.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    Http1,
    H2c,
    H2,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    pub url: String,
    /// Deadline of every store call in milliseconds: the wait for a
    /// connection and the query together (SPEC §14).
    pub timeout_ms: u64,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: "sqlite://data/portcullis.db".into(),
            timeout_ms: 3000,
        }
    }
}

impl DatabaseSection {
    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancySection {
    pub default_tenant: String,
    pub require_header: bool,
}

impl Default for TenancySection {
    fn default() -> Self {
        Self {
            default_tenant: "default".into(),
            require_header: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    EdDSA,
    ES256,
    RS256,
    HS256,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSection {
    pub algorithm: JwtAlgorithm,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_seconds: u64,
    pub refresh_ttl_seconds: u64,
    pub leeway_seconds: u64,
    pub private_key_file: String,
    pub hs256_secret_file: String,
}

impl Default for JwtSection {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::EdDSA,
            issuer: "portcullis".into(),
            audience: "portcullis".into(),
            access_ttl_seconds: 900,
            refresh_ttl_seconds: 604800,
            leeway_seconds: 30,
            private_key_file: String::new(),
            hs256_secret_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsSection {
    pub registration: Registration,
    pub require_email_verification: bool,
    pub default_roles: Vec<String>,
    pub password_min_length: usize,
}

impl Default for AccountsSection {
    fn default() -> Self {
        Self {
            registration: Registration::Open,
            require_email_verification: false,
            default_roles: vec!["member".into()],
            password_min_length: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaSection {
    pub issuer: String,
    pub skew_steps: u8,
}

impl Default for MfaSection {
    fn default() -> Self {
        Self {
            issuer: "portcullis".into(),
            skew_steps: 1,
        }
    }
}

/// Passkeys (WebAuthn). Off while `rp_id` is empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasskeysSection {
    /// The relying party id: the site's domain (`example.com`), never an IP.
    pub rp_id: String,
    /// The name authenticators show.
    pub rp_name: String,
    /// The exact origins a ceremony may come from; empty = `https://<rp_id>`.
    pub origins: Vec<String>,
    /// How long a ceremony's challenge lives (1–300 s; 60–300 recommended).
    pub challenge_ttl_seconds: u64,
    pub user_verification: UserVerification,
    /// A passkey login this recent stands in for the password when a
    /// passkey is deleted.
    pub reauth_seconds: u64,
}

impl Default for PasskeysSection {
    fn default() -> Self {
        Self {
            rp_id: String::new(),
            rp_name: "portcullis".into(),
            origins: Vec::new(),
            challenge_ttl_seconds: 120,
            user_verification: UserVerification::Preferred,
            reauth_seconds: 300,
        }
    }
}

impl PasskeysSection {
    pub fn enabled(&self) -> bool {
        !self.rp_id.is_empty()
    }

    /// The origins ceremonies may come from.
    pub fn allowed_origins(&self) -> Vec<String> {
        if self.origins.is_empty() {
            vec![format!("https://{}", self.rp_id)]
        } else {
            self.origins.clone()
        }
    }
}

/// WebAuthn's `userVerification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserVerification {
    Required,
    Preferred,
    Discouraged,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutSection {
    pub max_failures: u32,
    pub window_seconds: u64,
    pub lockout_seconds: u64,
}

impl Default for LockoutSection {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_seconds: 600,
            lockout_seconds: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    pub per_ip_per_minute: u32,
    pub login_per_account_per_minute: u32,
    /// `redis://[:password@]host:port/db`: every replica counts in Redis;
    /// empty = each replica counts in memory.
    pub redis_url: String,
    /// Deadline of one Redis call; past it the request is counted locally.
    pub redis_timeout_ms: u64,
    /// Prepended to every Redis key.
    pub redis_key_prefix: String,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 20,
            login_per_account_per_minute: 10,
            redis_url: String::new(),
            redis_timeout_ms: 5,
            redis_key_prefix: "portcullis:rl:".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    pub ttl_seconds: u64,
    pub max_entries: u64,
    /// How long a tenant looked up by id or slug is remembered.
    pub tenant_ttl_seconds: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            ttl_seconds: 60,
            max_entries: 100_000,
            tenant_ttl_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysSection {
    pub prefix: String,
}

impl Default for ApiKeysSection {
    fn default() -> Self {
        Self {
            prefix: "sk_live_".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSection {
    pub encryption_key_file: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsSection {
    pub webhook_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// The bounded argon2 pool (SPEC §3, §14 "Overload").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsSection {
    /// Hashing threads; 0 = one per spare core (cores - 1, at least 1).
    pub workers: usize,
    /// Hash requests that may wait; more answer 503 `BUSY`.
    pub queue_capacity: usize,
    /// A request that waited this long answers 503 `BUSY`.
    pub queue_timeout_ms: u64,
}

impl Default for PasswordsSection {
    fn default() -> Self {
        Self {
            workers: 0,
            queue_capacity: 64,
            queue_timeout_ms: 5000,
        }
    }
}

/// One `[[issuers]]` entry: an external OpenID Provider whose JWT access
/// tokens are accepted on the proxy path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerConfig {
    /// Names the issuer in logs and metrics, and is the `X-Auth-Method` value.
    pub name: String,
    /// The `iss` of its tokens, exactly; discovery is read from
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The key set's URL; empty = the `jwks_uri` of the discovery document.
    pub jwks_url: String,
    /// PEM CAs for an `https://` issuer with a private CA; empty = system roots.
    pub ca_file: String,
    /// Accepted `aud` values (any of them); at least one.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms; asymmetric only.
    pub algorithms: Vec<String>,
    pub leeway_seconds: u64,
    /// `at+jwt`: only RFC 9068 access tokens (`typ: at+jwt`); `any`: also
    /// plain JWTs (`typ: JWT` or none), as Keycloak and Auth0 issue them.
    pub token_type: String,
    /// Put before `sub` in `X-Auth-User-Id` (`{name}:` when empty).
    pub subject_prefix: String,
    /// A token whose verified email belongs to a local user of the tenant
    /// speaks for that user (its id, roles and permissions).
    pub link_by_email: bool,
    /// Dot path of the claim holding the roles (`realm_access.roles`,
    /// `groups`); empty = no roles.
    pub roles_claim: String,
    /// Dot path of the claim naming the tenant (slug or id); empty = `tenant`.
    pub tenant_claim: String,
    /// The tenant of every token (slug or id); empty = tenancy.default_tenant.
    pub tenant: String,
    /// The token's scopes (`scope` or `scp`) become its permissions.
    pub scopes_as_permissions: bool,
    /// Unknown `kid`s refetch the key set at most this often.
    pub jwks_refresh_interval_seconds: u64,
    /// How long a key set is kept when its answer has no `Cache-Control: max-age`.
    pub jwks_cache_seconds: u64,
    /// Deadline of one discovery or key-set request.
    pub fetch_timeout_ms: u64,
    /// Login with this provider (`/auth/oidc/{name}/start`): the client id
    /// registered there; empty = no login.
    pub client_id: String,
    /// File holding the client secret (`client_secret_basic`); empty = a
    /// public client (PKCE only).
    pub client_secret_file: String,
    /// This sidecar's callback as the browser reaches it
    /// (`https://api.example.com/auth/oidc/{name}/callback`), registered at the provider.
    pub callback_url: String,
    /// The applications' URIs a login may end at, exactly.
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    /// Create a local user at the first login of an unknown email.
    pub create_users: bool,
    /// Roles of a user created at login.
    pub default_roles: Vec<String>,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            name: "oidc".into(),
            issuer: String::new(),
            jwks_url: String::new(),
            ca_file: String::new(),
            audiences: Vec::new(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            leeway_seconds: 30,
            token_type: "at+jwt".into(),
            subject_prefix: String::new(),
            link_by_email: false,
            roles_claim: String::new(),
            tenant_claim: String::new(),
            tenant: String::new(),
            scopes_as_permissions: true,
            jwks_refresh_interval_seconds: 30,
            jwks_cache_seconds: 300,
            fetch_timeout_ms: 3000,
            client_id: String::new(),
            client_secret_file: String::new(),
            callback_url: String::new(),
            redirect_uris: Vec::new(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            create_users: true,
            default_roles: vec!["member".into()],
        }
    }
}

/// The algorithms `[[issuers]].algorithms` may name.
pub const ISSUER_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Used as the metrics label and in logs.
    pub name: String,
    /// Glob over the normalised path: `*` stays within a segment, `**` spans segments.
    pub path: String,
    /// Empty = every method.
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default = "default_route_auth")]
    pub auth: AuthMode,
    /// All required.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Any of.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub require_otp: bool,
    /// The access token must be of a session begun with a passkey.
    #[serde(default)]
    pub require_passkey: bool,
    #[serde(default = "default_credentials")]
    pub credentials: Vec<CredentialKind>,
}

fn default_route_auth() -> AuthMode {
    AuthMode::Authenticated
}

fn default_credentials() -> Vec<CredentialKind> {
    vec![
        CredentialKind::Jwt,
        CredentialKind::ApiKey,
        CredentialKind::Oidc,
    ]
}

/// Where the store lives, from `database.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

/// A configuration problem, naming the key (and line where known).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

const ENV_PREFIX: &str = "PORTCULLIS_";

impl Config {
    /// Reads `path` (or the defaults when `path` is None), applies the
    /// environment overrides and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?,
            None => String::new(),
        };
        let name = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into());
        Self::from_sources(&name, &text, &env)
    }

    /// Parses `text`, applies overrides from `env` (`PORTCULLIS_<SECTION>__<KEY>`)
    /// and validates. `name` labels error messages.
    pub fn from_sources(
        name: &str,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        // First pass straight from the text: serde's errors then carry line and column.
        toml::from_str::<Config>(text).map_err(|e| ConfigError(format!("{name}: {e}")))?;
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError(format!("{name}: {e}")))?;
        for (key, value) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, field)) = rest.split_once("__") else {
                continue;
            };
            let (section, field) = (section.to_ascii_lowercase(), field.to_ascii_lowercase());
            if section == "routes" {
                return Err(ConfigError(format!(
                    "{key}: [[routes]] cannot be set from the environment"
                )));
            }
            // each override alone must fit the schema, so its error names the variable
            let value = env_value(value);
            let alone = toml::Table::from_iter([(
                section.clone(),
                toml::Value::Table(toml::Table::from_iter([(field.clone(), value.clone())])),
            )]);
            if let Err(e) = toml::Value::Table(alone).try_into::<Config>() {
                return Err(ConfigError(format!(
                    "{key}: {}",
                    e.to_string().trim().replace('\n', " ")
                )));
            }
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section_table) = entry else {
                return Err(ConfigError(format!("{key}: `{section}` is not a section")));
            };
            section_table.insert(field, value);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError(format!("environment override: {e}")))?;
        config
            .validate()
            .map_err(|e| ConfigError(where_from(name, text, env, &e.0)))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        for (key, addr) in [
            ("proxy.listen", &self.proxy.listen),
            ("admin.listen", &self.admin.listen),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                return err(key, format!("`{addr}` is not an address like 0.0.0.0:8080"));
            }
        }
        if self.upstream.address.trim().is_empty() || !self.upstream.address.contains(':') {
            return err(
                "upstream.address",
                format!("`{}` is not host:port", self.upstream.address),
            );
        }
        match (self.upstream.protocol, self.upstream.tls) {
            (UpstreamProtocol::H2, false) => {
                return err(
                    "upstream.protocol",
                    "`h2` is HTTP/2 over TLS: set upstream.tls = true (or protocol = \"h2c\" for clear text)".into(),
                );
            }
            (UpstreamProtocol::H2c, true) => {
                return err(
                    "upstream.protocol",
                    "`h2c` is HTTP/2 in clear text: with upstream.tls = true use protocol = \"h2\""
                        .into(),
                );
            }
            _ => {}
        }
        if !self.upstream.tls && !self.upstream.ca_file.is_empty() {
            return err(
                "upstream.ca_file",
                "is only read with upstream.tls = true".into(),
            );
        }
        if self.proxy.tls_cert_file.is_empty() != self.proxy.tls_key_file.is_empty() {
            return err(
                "proxy.tls_cert_file",
                "set both proxy.tls_cert_file and proxy.tls_key_file (TLS on) or neither".into(),
            );
        }
        let prefix = &self.proxy.auth_prefix;
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            return err(
                "proxy.auth_prefix",
                format!("`{prefix}` must look like /auth"),
            );
        }
        let ident = &self.proxy.identity_header_prefix;
        if ident.len() < 2
            || !ident
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return err(
                "proxy.identity_header_prefix",
                format!("`{ident}` is not a header-name prefix"),
            );
        }
        if http::HeaderName::from_bytes(self.proxy.otp_header.as_bytes()).is_err() {
            return err(
                "proxy.otp_header",
                format!("`{}` is not a header name", self.proxy.otp_header),
            );
        }
        for cidr in &self.proxy.trusted_proxies {
            if parse_cidr(cidr).is_none() {
                return err(
                    "proxy.trusted_proxies",
                    format!("`{cidr}` is not an IP or CIDR"),
                );
            }
        }
        if self.proxy.max_auth_body_bytes < 1024 {
            return err("proxy.max_auth_body_bytes", "must be at least 1024".into());
        }
        self.database_location()?;
        if !(10..=600_000).contains(&self.database.timeout_ms) {
            return err(
                "database.timeout_ms",
                format!(
                    "{} is out of range (10 to 600000 milliseconds)",
                    self.database.timeout_ms
                ),
            );
        }
        self.check_rate_limit()?;
        if !self.notifications.webhook_url.trim().is_empty() {
            crate::outbound::check_url(
                "notifications.webhook_url",
                &self.notifications.webhook_url,
            )
            .map_err(ConfigError)?;
        }
        if self.jwt.access_ttl_seconds == 0 || self.jwt.refresh_ttl_seconds == 0 {
            return err("jwt", "token lifetimes must be positive".into());
        }
        if self.jwt.algorithm == JwtAlgorithm::HS256 && self.jwt.hs256_secret_file.is_empty() {
            return err(
                "jwt.hs256_secret_file",
                "algorithm HS256 needs an explicit secret file".into(),
            );
        }
        if self.accounts.password_min_length < 8 || self.accounts.password_min_length > 128 {
            return err(
                "accounts.password_min_length",
                "must be between 8 and 128".into(),
            );
        }
        if self.cache.ttl_seconds == 0 {
            return err("cache.ttl_seconds", "must be positive".into());
        }
        let key_prefix = &self.api_keys.prefix;
        if key_prefix.is_empty()
            || key_prefix.len() > 11
            || !key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return err(
                "api_keys.prefix",
                format!("`{key_prefix}` must be 1-11 letters, digits, `_` or `-`"),
            );
        }
        if self.proxy.identity_assertion && self.proxy.assertion_audience.trim().is_empty() {
            return err(
                "proxy.assertion_audience",
                "must not be empty when identity_assertion is on".into(),
            );
        }
        if self.passwords.queue_capacity == 0 {
            return err("passwords.queue_capacity", "must be positive".into());
        }
        for (i, route) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}] ({})", route.name);
            if route.name.is_empty() {
                return err(&key, "`name` must not be empty".into());
            }
            if !route.path.starts_with('/') {
                return err(&key, format!("path `{}` must start with /", route.path));
            }
            if let Err(e) = globset::GlobBuilder::new(&route.path)
                .literal_separator(true)
                .build()
            {
                return err(&key, format!("path `{}`: {e}", route.path));
            }
            for m in &route.methods {
                if http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() {
                    return err(&key, format!("`{m}` is not an HTTP method"));
                }
            }
            if route.credentials.is_empty() {
                return err(&key, "`credentials` must name at least one kind".into());
            }
            if route.auth == AuthMode::Public
                && (route.require_otp
                    || route.require_passkey
                    || !route.permissions.is_empty()
                    || !route.roles.is_empty())
            {
                return err(
                    &key,
                    "a public route cannot require permissions, roles, an OTP or a passkey".into(),
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        if self.passkeys.enabled() {
            let pk = &self.passkeys;
            if pk.rp_id.parse::<std::net::IpAddr>().is_ok()
                || pk.rp_id.contains([':', '/', ' '])
                || pk.rp_id.starts_with('.')
            {
                return err(
                    "passkeys.rp_id",
                    format!("`{}` is not a domain name like example.com", pk.rp_id),
                );
            }
            if !(1..=300).contains(&pk.challenge_ttl_seconds) {
                return err(
                    "passkeys.challenge_ttl_seconds",
                    "must be between 1 and 300".into(),
                );
            }
            for o in &pk.origins {
                let host = o
                    .strip_prefix("https://")
                    .or_else(|| o.strip_prefix("http://"));
                if !host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', ' '])) {
                    return err(
                        "passkeys.origins",
                        format!("`{o}` is not an origin like https://app.example.com"),
                    );
                }
            }
        }
        for (i, iss) in self.issuers.iter().enumerate() {
            let key = format!("issuers[{i}] ({})", iss.name);
            if iss.name.is_empty()
                || !iss
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return err(&key, "`name` must be letters, digits, `-` or `_`".into());
            }
            if !names.insert(iss.name.as_str()) {
                return err(&key, "two issuers have this name".into());
            }
            crate::outbound::check_url(&format!("{key} issuer"), &iss.issuer)
                .map_err(ConfigError)?;
            if !iss.jwks_url.is_empty() {
                crate::outbound::check_url(&format!("{key} jwks_url"), &iss.jwks_url)
                    .map_err(ConfigError)?;
            }
            if iss.issuer == self.jwt.issuer {
                return err(&key, "issuer is this sidecar's own jwt.issuer".into());
            }
            if iss.audiences.iter().all(|a| a.trim().is_empty()) {
                return err(&key, "`audiences` must name at least one audience".into());
            }
            if iss.algorithms.is_empty() {
                return err(&key, "`algorithms` must name at least one".into());
            }
            for a in &iss.algorithms {
                if !ISSUER_ALGORITHMS.contains(&a.as_str()) {
                    return err(
                        &key,
                        format!(
                            "algorithm `{a}` is not one of {}",
                            ISSUER_ALGORITHMS.join(", ")
                        ),
                    );
                }
            }
            if iss.token_type != "at+jwt" && iss.token_type != "any" {
                return err(&key, "`token_type` is `at+jwt` or `any`".into());
            }
            if !iss.client_id.is_empty() {
                crate::outbound::check_url(&format!("{key} callback_url"), &iss.callback_url)
                    .map_err(ConfigError)?;
                if iss.redirect_uris.is_empty() {
                    return err(&key, "a login (client_id) needs redirect_uris".into());
                }
                for uri in &iss.redirect_uris {
                    crate::outbound::check_url(&format!("{key} redirect_uris"), uri)
                        .map_err(ConfigError)?;
                }
                if !iss.scopes.iter().any(|s| s == "openid") {
                    return err(&key, "scopes must include openid".into());
                }
            }
            if iss.jwks_refresh_interval_seconds == 0 || iss.fetch_timeout_ms == 0 {
                return err(
                    &key,
                    "jwks_refresh_interval_seconds and fetch_timeout_ms must be positive".into(),
                );
            }
        }
        Ok(())
    }

    /// `[rate_limit]`'s Redis keys.
    fn check_rate_limit(&self) -> Result<(), ConfigError> {
        let rl = &self.rate_limit;
        let url = rl.redis_url.trim();
        if url.starts_with("rediss://") {
            return Err(ConfigError(format!(
                "rate_limit.redis_url: `{}`: TLS to Redis is not built in; use redis:// (inside the cluster or over a TLS tunnel)",
                mask_url(url)
            )));
        }
        if !url.is_empty()
            && !["redis://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(ConfigError(format!(
                "rate_limit.redis_url: `{}` must start with redis:// (or unix:// for a socket)",
                mask_url(url)
            )));
        }
        if !(1..=10_000).contains(&rl.redis_timeout_ms) {
            return Err(ConfigError(format!(
                "rate_limit.redis_timeout_ms: {} is out of range (1 to 10000 milliseconds)",
                rl.redis_timeout_ms
            )));
        }
        let prefix = &rl.redis_key_prefix;
        if prefix.len() > 64
            || prefix
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(ConfigError(format!(
                "rate_limit.redis_key_prefix: `{prefix}` must be at most 64 characters without spaces"
            )));
        }
        Ok(())
    }

    /// `database.url` as a location: `sqlite://relative/path.db`,
    /// `sqlite:///absolute/path.db` or `postgres://…`.
    pub fn database_location(&self) -> Result<DatabaseLocation, ConfigError> {
        let url = self.database.url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(ConfigError("database.url: sqlite:// needs a path".into()));
            }
            return Ok(DatabaseLocation::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseLocation::Postgres(url.to_string()));
        }
        Err(ConfigError(format!(
            "database.url: `{}` must start with sqlite:// or postgres://",
            mask_url(url)
        )))
    }

    /// What is valid but probably not meant, for `config check` and the start
    /// log: a route glob with upper-case letters never matches the
    /// lower-cased reading of a path (SPEC §15), so it protects less than it
    /// seems to.
    pub fn warnings(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.path.bytes().any(|b| b.is_ascii_uppercase()))
            .map(|r| {
                format!(
                    "route {}: path `{}` has upper-case letters; write route globs in lower case \
                     (requests are matched as sent and lower-cased, and must satisfy both)",
                    r.name, r.path
                )
            })
            .collect()
    }

    /// The effective configuration as TOML with secrets masked, for `config check`.
    pub fn render_masked(&self) -> String {
        let mut masked = self.clone();
        masked.database.url = mask_url(&masked.database.url);
        masked.notifications.webhook_url = mask_url(&masked.notifications.webhook_url);
        masked.rate_limit.redis_url = mask_url(&masked.rate_limit.redis_url);
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// Reads a `*_file` secret; empty path = not configured.
    pub fn read_secret_file(key: &str, path: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        if path.is_empty() {
            return Ok(None);
        }
        std::fs::read(path)
            .map(Some)
            .map_err(|e| ConfigError(format!("{key}: cannot read `{path}`: {e}")))
    }
}

/// An environment value as TOML when it parses as one (numbers, booleans,
/// arrays), else as a plain string.
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Hides the password and query of a URL (`postgres://u:****@h/db`).
pub fn mask_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find('/')
            .map(|i| rest_start + i)
            .unwrap_or(out.len());
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "****");
            }
        }
    }
    if let Some(q) = out.find('?') {
        out.truncate(q);
        out.push_str("?****");
    }
    out
}

/// Parses `10.0.0.0/8`, `::1/128` or a single address.
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Some(net);
    }
    s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from)
}

/// Prefixes a validation error (`key: why`) with where the key was set: the
/// file and line, or the environment variable.
fn where_from(name: &str, text: &str, env: &[(String, String)], msg: &str) -> String {
    let key = msg.split(": ").next().unwrap_or("");
    if let Some((section, field)) = key.split_once('.') {
        let var = format!("{ENV_PREFIX}{}__{}", section, field).to_ascii_uppercase();
        if env.iter().any(|(k, _)| k.to_ascii_uppercase() == var) {
            return format!("{msg} (set by {var})");
        }
    }
    match key_line(text, msg) {
        Some(line) => format!("{name}: line {line}: {msg}"),
        None => format!("{name}: {msg}"),
    }
}

/// The 1-based line of the key a validation message names: `section.key`,
/// `section`, or `routes[i] (name)` (then the field the reason names, else
/// the `[[routes]]` header of that entry).
fn key_line(text: &str, msg: &str) -> Option<usize> {
    let (key, why) = msg.split_once(": ").unwrap_or((msg, ""));
    let lines: Vec<&str> = text.lines().collect();
    let assigns = |line: &str, field: &str| {
        line.trim_start()
            .strip_prefix(field)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let is_header = |line: &str| line.trim_start().starts_with('[');
    // (start of the block after its header, header line index)
    let block = |header: usize| -> (usize, usize) {
        let end = (header + 1..lines.len())
            .find(|&i| is_header(lines[i]))
            .unwrap_or(lines.len());
        (header, end)
    };
    let find_in = |(header, end): (usize, usize), field: &str| {
        (header + 1..end)
            .find(|&i| assigns(lines[i], field))
            .map(|i| i + 1)
            .or(Some(header + 1))
    };
    if let Some(rest) = key.strip_prefix("routes[") {
        let index: usize = rest.split(']').next()?.parse().ok()?;
        let header = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim() == "[[routes]]")
            .nth(index)?
            .0;
        let field = [
            "path",
            "name",
            "methods",
            "credentials",
            "permissions",
            "roles",
        ]
        .into_iter()
        .find(|f| why.starts_with(f) || why.starts_with(&format!("`{f}`")))
        .or_else(|| why.contains("HTTP method").then_some("methods"))
        .unwrap_or("auth");
        return find_in(block(header), field);
    }
    let (section, field) = key.split_once('.').unwrap_or((key, ""));
    let header = lines
        .iter()
        .position(|l| l.trim() == format!("[{section}]"))?;
    if field.is_empty() {
        return Some(header + 1);
    }
    let (_, end) = block(header);
    (header + 1..end)
        .find(|&i| assigns(lines[i], field))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_file_gives_spec_defaults() {
        let c = Config::from_sources("t", "", &[]).unwrap();
        assert_eq!(c.proxy.listen, "0.0.0.0:8080");
        assert_eq!(c.admin.listen, "0.0.0.0:9464");
        assert_eq!(c.jwt.access_ttl_seconds, 900);
        assert_eq!(c.server.grace_period_seconds, 10);
        assert_eq!(c.lockout.max_failures, 5);
        assert_eq!(c.proxy.default_policy, AuthMode::Authenticated);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = Config::from_sources("c.toml", "[proxy]\n\nlistn = \"x\"\n", &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("listn"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn env_overrides_win_and_are_typed() {
        let c = Config::from_sources(
            "t",
            "[upstream]\naddress = \"127.0.0.1:3000\"\n",
            &env(&[
                ("PORTCULLIS_UPSTREAM__ADDRESS", "127.0.0.1:5000"),
                ("PORTCULLIS_SERVER__THREADS", "2"),
                ("PORTCULLIS_PROXY__FORWARD_AUTHORIZATION", "false"),
                ("PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL", "a@b.c"),
            ]),
        )
        .unwrap();
        assert_eq!(c.upstream.address, "127.0.0.1:5000");
        assert_eq!(c.server.threads, 2);
        assert!(!c.proxy.forward_authorization);
    }

    #[test]
    fn unknown_env_override_is_an_error() {
        let e =
            Config::from_sources("t", "", &env(&[("PORTCULLIS_PROXY__NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn env_override_errors_name_the_variable() {
        for (var, value, why) in [
            ("PORTCULLIS_PROXY__LISTN", "127.0.0.1:1", "listn"),
            ("PORTCULLIS_SERVER__THREADS", "many", "invalid"),
            ("PORTCULLIS_NOSECTION__KEY", "1", "nosection"),
            ("PORTCULLIS_DATABASE__TIMEOUT_MS", "-5", "invalid"),
        ] {
            let e = Config::from_sources("c.toml", "", &env(&[(var, value)]))
                .unwrap_err()
                .0;
            assert!(e.starts_with(&format!("{var}: ")), "{e}");
            assert!(e.contains(why), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = Config::from_sources(
            "c.toml",
            "",
            &env(&[("PORTCULLIS_DATABASE__TIMEOUT_MS", "0")]),
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("database.timeout_ms: ")
                && e.ends_with("(set by PORTCULLIS_DATABASE__TIMEOUT_MS)"),
            "{e}"
        );
    }

    #[test]
    fn redis_keys_are_checked_and_the_password_masked() {
        let check = |k: &str, v: &str| {
            Config::from_sources("c.toml", &format!("[rate_limit]\n{k} = {v}\n"), &[])
        };
        assert!(check("redis_url", "\"\"").is_ok());
        assert!(check("redis_url", "\"redis://127.0.0.1:6379/0\"").is_ok());
        assert!(check("redis_url", "\"unix:///run/redis.sock\"").is_ok());
        for (key, value, why) in [
            ("redis_url", "\"rediss://h:6380\"", "TLS"),
            ("redis_url", "\"http://h:6379\"", "redis://"),
            ("redis_timeout_ms", "0", "out of range"),
            ("redis_key_prefix", "\"a b\"", "without spaces"),
        ] {
            let e = check(key, value).unwrap_err().0;
            assert!(
                e.contains(&format!("rate_limit.{key}: ")) && e.contains(why),
                "{e}"
            );
        }
        let mut c = Config::default();
        c.rate_limit.redis_url = "redis://:hunter2@redis:6379/0".into();
        let text = c.render_masked();
        assert!(
            !text.contains("hunter2") && text.contains("redis://:****@redis:6379/0"),
            "{text}"
        );
    }

    #[test]
    fn database_urls() {
        let mut c = Config::default();
        c.database.url = "sqlite:///abs/p.db".into();
        assert_eq!(
            c.database_location().unwrap(),
            DatabaseLocation::Sqlite("/abs/p.db".into())
        );
        c.database.url = "sqlite://rel/p.db".into();
        assert_eq!(
            c.database_location().unwrap(),
            DatabaseLocation::Sqlite("rel/p.db".into())
        );
        c.database.url = "mysql://x".into();
        assert!(c.database_location().is_err());
    }

    #[test]
    fn masking_hides_passwords() {
        assert_eq!(
            mask_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:****@db:5432/x"
        );
        assert_eq!(mask_url("https://h/hook?token=abc"), "https://h/hook?****");
        let mut c = Config::default();
        c.database.url = "postgres://u:hunter2@127.0.0.1/db".into();
        assert!(!c.render_masked().contains("hunter2"));
    }

    #[test]
    fn routes_are_validated() {
        let bad = "[[routes]]\nname = \"x\"\npath = \"/a/**\"\nmethods = [\"GE T\"]\n";
        assert!(Config::from_sources("t", bad, &[]).is_err());
        let ok = "[[routes]]\nname = \"p\"\npath = \"/public/**\"\nauth = \"public\"\n";
        let c = Config::from_sources("t", ok, &[]).unwrap();
        assert_eq!(c.routes[0].auth, AuthMode::Public);
        assert_eq!(c.routes[0].credentials.len(), 3);
    }

    #[test]
    fn shipped_default_config_is_valid() {
        let text = include_str!("../config/portcullis.toml");
        Config::from_sources("config/portcullis.toml", text, &[]).unwrap();
    }

    #[test]
    fn validation_errors_name_the_line_or_the_variable() {
        let text = "[server]\nthreads = 2\n\n[proxy]\nauth_prefix = \"/auth\"\nlisten = \"nonsense\"\n\n[[routes]]\nname = \"a\"\npath = \"/a/**\"\nauth = \"public\"\n\n[[routes]]\nname = \"b\"\nauth = \"public\"\npath = \"/b/[**\"\n";
        let e = Config::from_sources("c.toml", text, &[]).unwrap_err().0;
        assert!(e.starts_with("c.toml: line 6: proxy.listen: "), "{e}");
        let fixed = text.replace("nonsense", "127.0.0.1:1");
        let e = Config::from_sources("c.toml", &fixed, &[]).unwrap_err().0;
        assert!(
            e.starts_with("c.toml: line 16: routes[1] (b): path "),
            "{e}"
        );
        let env = vec![("PORTCULLIS_ADMIN__LISTEN".to_string(), "bad".to_string())];
        let e = Config::from_sources("c.toml", "", &env).unwrap_err().0;
        assert!(e.ends_with("(set by PORTCULLIS_ADMIN__LISTEN)"), "{e}");
    }

    #[test]
    fn upstream_protocol_is_http1_h2c_or_h2_and_tls_agrees_with_it() {
        assert_eq!(Config::default().upstream.protocol, UpstreamProtocol::Http1);
        let h2c = Config::from_sources("t", "[upstream]\nprotocol = \"h2c\"\n", &[]).unwrap();
        assert_eq!(h2c.upstream.protocol, UpstreamProtocol::H2c);
        let h2 =
            Config::from_sources("t", "[upstream]\nprotocol = \"h2\"\ntls = true\n", &[]).unwrap();
        assert_eq!(h2.upstream.protocol, UpstreamProtocol::H2);
        let e = Config::from_sources("t", "[upstream]\nprotocol = \"h3\"\n", &[])
            .expect_err("h3 is refused")
            .to_string();
        assert!(e.contains("h2c") && e.contains("line 2"), "{e}");
        for (text, says) in [
            ("protocol = \"h2\"\n", "upstream.tls = true"),
            ("protocol = \"h2c\"\ntls = true\n", "protocol = \"h2\""),
            ("ca_file = \"/x.pem\"\n", "upstream.tls = true"),
        ] {
            let e = Config::from_sources("t", &format!("[upstream]\n{text}"), &[])
                .expect_err(text)
                .to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        let alias = Config::from_sources(
            "t",
            "[upstream]\ntls = true\ntls_server_name = \"api.internal\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(alias.upstream.sni, "api.internal");
    }

    #[test]
    fn proxy_tls_needs_both_files() {
        let e = Config::from_sources("t", "[proxy]\ntls_cert_file = \"/c.pem\"\n", &[])
            .expect_err("cert without key")
            .to_string();
        assert!(e.contains("proxy.tls_key_file"), "{e}");
        let both = Config::from_sources(
            "t",
            "[proxy]\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n",
            &[],
        )
        .unwrap();
        assert!(both.proxy.tls());
        assert!(!Config::default().proxy.tls());
    }
}
