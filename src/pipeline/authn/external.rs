//! Access tokens of external OpenID Providers (`[[issuers]]`): the key set of
//! each issuer (from its discovery document or `jwks_url`), kept for its
//! `Cache-Control: max-age`, refetched for an unknown `kid` at most once per
//! `jwks_refresh_interval_seconds`, the last good set kept while the provider
//! is down; the token's signature, `iss`, `aud`, `typ`, `exp`/`nbf` checked,
//! its claims mapped to an [`Identity`]. The JWT authenticator's cache keeps
//! the result, so a hit costs what a local token's does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::config::{Config, IssuerConfig};
use crate::error::Error;
use crate::metrics;
use crate::outbound::Endpoint;
use crate::store::{Store, UserStatus};
use crate::tenancy::TenantDirectory;
use crate::vocab::{CredentialKind, ExternalOrigin, Identity};

/// Largest discovery document or key set read.
const MAX_DOCUMENT: usize = 512 * 1024;
/// Bounds of a key set's lifetime, whatever `max-age` says.
const MAX_KEYS_AGE: Duration = Duration::from_secs(24 * 3600);

/// Every configured external issuer.
pub struct ExternalIssuers {
    issuers: Vec<Issuer>,
    tenants: Arc<TenantDirectory>,
    store: Arc<dyn Store>,
    default_tenant: String,
}

/// A token verified by an issuer, and when it dies.
pub struct ExternalToken {
    pub identity: Identity,
    pub expires_at: i64,
}

impl ExternalIssuers {
    /// `None` without `[[issuers]]`. A URL that does not parse is an error
    /// naming the issuer; nothing is fetched until the first token.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        tenants: Arc<TenantDirectory>,
    ) -> Result<Option<Arc<ExternalIssuers>>, String> {
        if config.issuers.is_empty() {
            return Ok(None);
        }
        let issuers = config
            .issuers
            .iter()
            .map(Issuer::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Arc::new(ExternalIssuers {
            issuers,
            tenants,
            store,
            default_tenant: config.tenancy.default_tenant.clone(),
        })))
    }

    /// The issuer whose token this is, by its unverified `iss` (the
    /// signature is checked with that issuer's keys only).
    pub fn issuer_of(&self, token: &str) -> Option<usize> {
        #[derive(Deserialize)]
        struct Iss {
            iss: String,
        }
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
            .ok()?
            .iss;
        self.issuers.iter().position(|i| i.cfg.issuer == iss)
    }

    /// Verifies `token` with issuer `index` (from [`Self::issuer_of`]).
    pub async fn verify(&self, index: usize, token: &str) -> Result<ExternalToken, Error> {
        let issuer = &self.issuers[index];
        let outcome = self.verify_with(issuer, token).await;
        let label = match &outcome {
            Ok(_) => "valid",
            Err(Verdict::Expired) => "expired",
            Err(Verdict::UnknownKey) => "unknown_key",
            Err(Verdict::UnknownTenant) => "unknown_tenant",
            Err(Verdict::Invalid) => "invalid",
            Err(Verdict::Store(_)) => "store_error",
        };
        metrics::OIDC_TOKENS
            .with_label_values(&[issuer.cfg.name.as_str(), label])
            .inc();
        outcome.map_err(|v| match v {
            Verdict::Expired => Error::TokenExpired,
            Verdict::Store(e) => e,
            _ => Error::InvalidToken,
        })
    }

    async fn verify_with(&self, issuer: &Issuer, token: &str) -> Result<ExternalToken, Verdict> {
        let header = issuer.header(token).ok_or(Verdict::Invalid)?;
        let typ = header.typ.as_deref().unwrap_or("");
        let at_jwt =
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt");
        let plain = typ.is_empty() || typ.eq_ignore_ascii_case("jwt");
        if !(at_jwt || (issuer.cfg.token_type == "any" && plain)) {
            return Err(Verdict::Invalid);
        }
        let key = issuer
            .key(header.kid.as_deref(), header.alg)
            .await
            .ok_or(Verdict::UnknownKey)?;
        let validation = issuer.validation(header.alg, &issuer.cfg.audiences);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Verdict::Expired,
                _ => Verdict::Invalid,
            })?
            .claims;
        self.identity(issuer, &claims).await
    }

    async fn identity(&self, issuer: &Issuer, claims: &Value) -> Result<ExternalToken, Verdict> {
        let sub = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or(Verdict::Invalid)?;
        let expires_at = claims["exp"].as_i64().ok_or(Verdict::Invalid)?;
        let tenant_name = match claim(claims, &issuer.cfg.tenant_claim) {
            Some(v) => v.as_str().ok_or(Verdict::UnknownTenant)?.to_string(),
            None if !issuer.cfg.tenant.is_empty() => issuer.cfg.tenant.clone(),
            None => self.default_tenant.clone(),
        };
        let tenant = self
            .tenants
            .lookup(&tenant_name)
            .await
            .map_err(Verdict::Store)?
            .ok_or(Verdict::UnknownTenant)?;
        let email = claims["email"].as_str().unwrap_or("").to_ascii_lowercase();
        let origin = |subject: Option<String>| {
            Some(Arc::new(ExternalOrigin {
                issuer: issuer.name.clone(),
                subject,
            }))
        };
        // a local account speaks only for a token whose provider verified the email
        if issuer.cfg.link_by_email
            && !email.is_empty()
            && claims["email_verified"].as_bool() == Some(true)
            && let Some(user) = self
                .store
                .user_by_email(tenant.id, &email)
                .await
                .map_err(|e| Verdict::Store(e.into()))?
            && user.status == UserStatus::Active
        {
            return Ok(ExternalToken {
                identity: Identity {
                    user_id: user.id,
                    tenant_id: tenant.id,
                    email: user.email,
                    roles: user.roles,
                    permissions: user.permissions,
                    method: CredentialKind::Oidc,
                    session_id: None,
                    key_id: None,
                    mfa: false,
                    passkey: false,
                    external: origin(None),
                },
                expires_at,
            });
        }
        let roles = claim(claims, &issuer.cfg.roles_claim)
            .map(strings)
            .unwrap_or_default();
        let mut permissions = if issuer.cfg.scopes_as_permissions {
            claims
                .get("scope")
                .or_else(|| claims.get("scp"))
                .map(strings)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        permissions.sort();
        permissions.dedup();
        Ok(ExternalToken {
            identity: Identity {
                user_id: Uuid::nil(),
                tenant_id: tenant.id,
                email,
                roles,
                permissions,
                method: CredentialKind::Oidc,
                session_id: None,
                key_id: None,
                mfa: false,
                passkey: false,
                external: origin(Some(format!("{}{sub}", issuer.subject_prefix))),
            },
            expires_at,
        })
    }
}

/// Where a login with an issuer goes (its discovery document), and how
/// this client authenticates at its token endpoint.
pub struct LoginEndpoints<'a> {
    pub authorization: &'a str,
    pub token: &'a Endpoint,
    /// `Authorization: Basic …` (`client_secret_basic`); `None`: a public client.
    pub client_authorization: Option<&'a str>,
}

impl ExternalIssuers {
    /// The issuer configured under `name`.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.issuers.iter().position(|i| i.cfg.name == name)
    }

    /// The configuration of issuer `index`.
    pub fn config(&self, index: usize) -> &IssuerConfig {
        &self.issuers[index].cfg
    }

    /// The authorization and token endpoints of issuer `index`; 503
    /// `PROVIDER_UNAVAILABLE` while its discovery document cannot be read.
    pub async fn login_endpoints(&self, index: usize) -> Result<LoginEndpoints<'_>, Error> {
        let issuer = &self.issuers[index];
        let found = issuer.discovered().await.map_err(|e| {
            tracing::warn!(issuer = %issuer.cfg.name, error = %e, "discovery document not read");
            metrics::OIDC_JWKS_FETCHES
                .with_label_values(&[issuer.cfg.name.as_str(), "error"])
                .inc();
            Error::ProviderUnavailable
        })?;
        match (&found.authorization_endpoint, &found.token) {
            (Some(authorization), Some(token)) => Ok(LoginEndpoints {
                authorization,
                token,
                client_authorization: issuer.client_authorization.as_deref(),
            }),
            _ => Err(Error::ExternalLoginFailed(
                "the provider's discovery document has no authorization or token endpoint".into(),
            )),
        }
    }

    /// Verifies an ID token of issuer `index` for this sidecar's client
    /// (OpenID Connect Core §3.1.3.7): signature by the issuer's keys, `iss`,
    /// `aud` holding `client_id` (and `azp` naming it when there are
    /// several audiences), `exp`, and the login's `nonce`. Answers its claims.
    pub async fn verify_id_token(
        &self,
        index: usize,
        token: &str,
        nonce: &str,
    ) -> Result<Value, Error> {
        let issuer = &self.issuers[index];
        let failed = |why: &str| Error::ExternalLoginFailed(format!("ID token: {why}"));
        let header = issuer
            .header(token)
            .ok_or_else(|| failed("not a JWT of an accepted algorithm"))?;
        let key = issuer
            .key(header.kid.as_deref(), header.alg)
            .await
            .ok_or_else(|| failed("signed by an unknown key"))?;
        let validation = issuer.validation(header.alg, &[issuer.cfg.client_id.as_str()]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => failed("expired"),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => failed("wrong audience"),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => failed("wrong issuer"),
                _ => failed("invalid signature or claims"),
            })?
            .claims;
        let several = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
        match claims["azp"].as_str() {
            Some(azp) if azp != issuer.cfg.client_id => {
                return Err(failed("azp is another client"));
            }
            None if several => return Err(failed("several audiences and no azp")),
            _ => {}
        }
        let sent = claims["nonce"].as_str().unwrap_or("");
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            sent.as_bytes(),
            nonce.as_bytes(),
        )) {
            return Err(failed("nonce does not match the login"));
        }
        Ok(claims)
    }
}

enum Verdict {
    Expired,
    UnknownKey,
    UnknownTenant,
    Invalid,
    Store(Error),
}

/// The value at a dot path (`realm_access.roles`); `None` for an empty path.
fn claim<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return None;
    }
    path.split('.')
        .try_fold(claims, |v, part| v.get(part))
        .filter(|v| !v.is_null())
}

/// A claim as a list of strings: an array of strings, or one string of
/// space-separated words (`scope`).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// One issuer and its key set.
struct Issuer {
    cfg: IssuerConfig,
    name: Arc<str>,
    subject_prefix: String,
    algorithms: Vec<Algorithm>,
    /// The discovery document's URL.
    discovery_url: Endpoint,
    /// `jwks_url`, when configured.
    jwks_url: Option<Endpoint>,
    /// The discovery document, once read.
    discovered: tokio::sync::OnceCell<Discovered>,
    /// `client_secret_basic` from `client_secret_file`, read at start.
    client_authorization: Option<String>,
    keys: RwLock<Arc<KeySet>>,
    /// One fetch at a time; when the last one began.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    /// Keys without a `kid` (used only when the token has none either).
    anonymous: Vec<Arc<DecodingKey>>,
    fresh_until: Option<Instant>,
}

/// What the discovery document says about an issuer.
struct Discovered {
    jwks: Endpoint,
    authorization_endpoint: Option<String>,
    token: Option<Endpoint>,
}

impl Issuer {
    fn new(cfg: &IssuerConfig) -> Result<Issuer, String> {
        let key = format!("issuers ({})", cfg.name);
        let url = format!(
            "{}/.well-known/openid-configuration",
            cfg.issuer.trim_end_matches('/')
        );
        let discovery_url = Endpoint::parse(&key, &url, &cfg.ca_file)?;
        let jwks_url = (!cfg.jwks_url.is_empty())
            .then(|| discovery_url.join(&key, &cfg.jwks_url))
            .transpose()?;
        let algorithms = cfg
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|e| format!("{key}: `{a}`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_authorization = Config::read_secret_file(
            &format!("{key} client_secret_file"),
            &cfg.client_secret_file,
        )
        .map_err(|e| e.to_string())?
        .map(|secret| {
            use base64::Engine;
            // RFC 6749 §2.3.1: both form-encoded, then Basic
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let secret = String::from_utf8_lossy(&secret).trim().to_string();
            let pair = format!("{}:{}", enc(&cfg.client_id), enc(&secret));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Issuer {
            client_authorization,
            name: Arc::from(cfg.name.as_str()),
            subject_prefix: if cfg.subject_prefix.is_empty() {
                format!("{}:", cfg.name)
            } else {
                cfg.subject_prefix.clone()
            },
            cfg: cfg.clone(),
            algorithms,
            discovery_url,
            jwks_url,
            discovered: tokio::sync::OnceCell::new(),
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: tokio::sync::Mutex::new(None),
        })
    }

    /// The token's header, when its algorithm is one this issuer accepts.
    fn header(&self, token: &str) -> Option<jsonwebtoken::Header> {
        jsonwebtoken::decode_header(token)
            .ok()
            .filter(|h| self.algorithms.contains(&h.alg))
    }

    /// What every token of this issuer must satisfy: `alg` only, its `iss`,
    /// one of `audiences`, `exp` (and `nbf`) within the leeway, a `sub`.
    fn validation<A: ToString>(&self, alg: Algorithm, audiences: &[A]) -> Validation {
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_issuer(&[self.cfg.issuer.as_str()]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.cfg.leeway_seconds;
        validation.validate_nbf = true;
        validation
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The key for `kid`: from the set in hand while it is fresh; a stale
    /// set or an unknown `kid` refetches, at most once per refresh interval.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let set = self.current();
        let fresh = set.fresh_until.is_some_and(|t| Instant::now() < t);
        if let Some(found) = set.find(kid, alg)
            && fresh
        {
            return Some(found);
        }
        self.refresh().await;
        self.current().find(kid, alg)
    }

    /// Fetches the key set unless a fetch began less than the refresh
    /// interval ago; on error the set in hand stays.
    async fn refresh(&self) {
        let mut last = self.fetching.lock().await;
        let interval = Duration::from_secs(self.cfg.jwks_refresh_interval_seconds);
        if last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        *last = Some(Instant::now());
        let result = match self.fetch().await {
            Ok(set) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                "ok"
            }
            Err(e) => {
                tracing::warn!(issuer = %self.cfg.name, error = %e, "issuer key set not fetched; the last good set stays in use");
                "error"
            }
        };
        metrics::OIDC_JWKS_FETCHES
            .with_label_values(&[self.cfg.name.as_str(), result])
            .inc();
    }

    /// The discovery document, read once (a failed read is retried next time).
    async fn discovered(&self) -> Result<&Discovered, String> {
        self.discovered
            .get_or_try_init(|| async {
                #[derive(Deserialize)]
                struct Document {
                    issuer: String,
                    jwks_uri: String,
                    authorization_endpoint: Option<String>,
                    token_endpoint: Option<String>,
                }
                let deadline = Duration::from_millis(self.cfg.fetch_timeout_ms);
                let answer = get(&self.discovery_url, deadline).await?;
                let doc: Document = serde_json::from_slice(&answer.body).map_err(|e| {
                    format!(
                        "{}: not a discovery document: {e}",
                        self.discovery_url.url()
                    )
                })?;
                // OpenID Connect Discovery §4.3: the document speaks for this issuer exactly
                if doc.issuer != self.cfg.issuer {
                    return Err(format!(
                        "the discovery document names issuer `{}`, not `{}`",
                        doc.issuer, self.cfg.issuer
                    ));
                }
                Ok(Discovered {
                    jwks: self.discovery_url.join("jwks_uri", &doc.jwks_uri)?,
                    authorization_endpoint: doc.authorization_endpoint,
                    token: doc
                        .token_endpoint
                        .map(|t| self.discovery_url.join("token_endpoint", &t))
                        .transpose()?,
                })
            })
            .await
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let deadline = Duration::from_millis(self.cfg.fetch_timeout_ms);
        let jwks = match &self.jwks_url {
            Some(url) => url.clone(),
            None => self.discovered().await?.jwks.clone(),
        };
        let answer = get(&jwks, deadline).await?;
        let set: JwkSet = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("{}: not a JWK set: {e}", jwks.url()))?;
        let mut keys = KeySet::default();
        for jwk in &set.keys {
            let Some(key) = usable(jwk) else { continue };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), key);
                }
                None => keys.anonymous.push(key),
            }
        }
        let floor = Duration::from_secs(self.cfg.jwks_refresh_interval_seconds);
        let age = max_age(&answer.headers)
            .unwrap_or(Duration::from_secs(self.cfg.jwks_cache_seconds))
            .clamp(floor.min(MAX_KEYS_AGE), MAX_KEYS_AGE);
        keys.fresh_until = Some(Instant::now() + age);
        Ok(keys)
    }
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let key = match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            // without a kid, only an issuer with a single key is unambiguous
            None if self.by_kid.len() + self.anonymous.len() == 1 => self
                .anonymous
                .first()
                .or_else(|| self.by_kid.values().next())
                .cloned(),
            None => None,
        }?;
        (key.family() == alg.family()).then_some(key)
    }
}

/// A verification key of the set: `use` absent or `sig`, a type jsonwebtoken reads.
fn usable(jwk: &Jwk) -> Option<Arc<DecodingKey>> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok().map(Arc::new)
}

async fn get(endpoint: &Endpoint, deadline: Duration) -> Result<crate::outbound::Response, String> {
    let answer = endpoint
        .send(
            "GET",
            &[("accept", "application/json")],
            None,
            deadline,
            MAX_DOCUMENT,
        )
        .await?;
    if answer.status != 200 {
        return Err(format!("{}: HTTP {}", endpoint.url(), answer.status));
    }
    Ok(answer)
}

/// `Cache-Control: max-age=N` of an answer (`no-store`/`no-cache`: zero).
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    for directive in value.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        if let Some((name, secs)) = directive.split_once('=')
            && name.trim().eq_ignore_ascii_case("max-age")
        {
            return secs
                .trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_by_dot_path_and_as_lists() {
        let c = json!({"realm_access": {"roles": ["admin", "ops"]}, "scope": "read  write", "groups": "one"});
        assert_eq!(
            strings(claim(&c, "realm_access.roles").unwrap()),
            ["admin", "ops"]
        );
        assert_eq!(strings(claim(&c, "scope").unwrap()), ["read", "write"]);
        assert_eq!(strings(claim(&c, "groups").unwrap()), ["one"]);
        assert!(claim(&c, "").is_none());
        assert!(claim(&c, "realm_access.nope").is_none());
        assert!(strings(&json!(42)).is_empty());
    }

    /// ID tokens signed by a real key, its key set served over HTTP: what a
    /// provider will not issue (another audience, expired, another nonce…).
    #[tokio::test]
    async fn id_tokens_are_checked_for_issuer_audience_azp_nonce_and_expiry() {
        use crate::store::sqlite::SqliteStore;
        use crate::tokens::KeyRing;
        use jsonwebtoken::Header;

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
        let keys = KeyRing::load(&Config::default(), store.clone())
            .await
            .unwrap();
        let set = keys.current();
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let body = set.jwks.to_vec();
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                let _ = req.respond(tiny_http::Response::from_data(body.clone()));
            }
        });
        let mut config = Config::default();
        config.issuers.push(IssuerConfig {
            name: "idp".into(),
            issuer: "https://idp.example".into(),
            jwks_url: format!("http://{addr}/jwks"),
            audiences: vec!["api".into()],
            algorithms: vec!["EdDSA".into()],
            client_id: "rp".into(),
            leeway_seconds: 0,
            ..IssuerConfig::default()
        });
        let tenants = Arc::new(TenantDirectory::new(
            store.clone(),
            config.tenancy.clone(),
            Duration::from_secs(60),
        ));
        let external = ExternalIssuers::new(&config, store, tenants)
            .unwrap()
            .unwrap();
        let sign = |claims: Value| {
            let mut header = Header::new(set.signer.algorithm);
            header.kid = Some(set.signer.kid.clone());
            jsonwebtoken::encode(&header, &claims, &set.signer.key).unwrap()
        };
        let at = crate::vocab::now();
        let good = json!({"iss": "https://idp.example", "sub": "u1", "aud": "rp",
                          "iat": at, "exp": at + 60, "nonce": "n1"});
        let claims = external
            .verify_id_token(0, &sign(good.clone()), "n1")
            .await
            .unwrap();
        assert_eq!(claims["sub"], "u1");
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            sign(c)
        };
        for (token, nonce, says) in [
            (with("aud", json!("api")), "n1", "wrong audience"),
            (
                with("iss", json!("https://other.example")),
                "n1",
                "wrong issuer",
            ),
            (with("exp", json!(at - 3600)), "n1", "expired"),
            (sign(good.clone()), "n2", "nonce"),
            (with("azp", json!("another-client")), "n1", "azp"),
            (with("aud", json!(["rp", "api"])), "n1", "several audiences"),
            (with("nonce", Value::Null), "n1", "nonce"),
        ] {
            match external.verify_id_token(0, &token, nonce).await {
                Err(Error::ExternalLoginFailed(why)) => {
                    assert!(why.contains(says), "{says}: {why}")
                }
                other => panic!("{says}: {other:?}"),
            }
        }
        // several audiences with azp naming us pass
        let both = sign(
            json!({"iss": "https://idp.example", "sub": "u1", "aud": ["rp", "api"],
                               "azp": "rp", "iat": at, "exp": at + 60, "nonce": "n1"}),
        );
        assert!(external.verify_id_token(0, &both, "n1").await.is_ok());
        // a signature by another key
        let mut forged = sign(good).rsplit_once('.').unwrap().0.to_string();
        forged.push_str(".AAAA");
        assert!(external.verify_id_token(0, &forged, "n1").await.is_err());
    }

    #[test]
    fn cache_control_max_age() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            http::header::CACHE_CONTROL,
            "public, max-age=600".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(600)));
        h.insert(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::ZERO));
        h.insert(http::header::CACHE_CONTROL, "max-age=soon".parse().unwrap());
        assert_eq!(max_age(&h), None);
    }
}
