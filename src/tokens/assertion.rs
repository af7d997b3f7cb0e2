//! The signed identity assertion (SPEC §8 `X-Auth-Assertion`, the Pomerium
//! model): a 60 s JWT (`typ: JWT`, `aud` = `proxy.assertion_audience`) of the
//! identity the sidecar verified, signed with the current key and checkable
//! against the JWKS. One per identity is reused for half its lifetime.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Header;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::KeyRing;
use crate::config::Config;
use crate::error::Error;
use crate::vocab::CredentialKind;
use crate::vocab::Identity;

/// `typ` of an assertion: never `at+jwt`, so it cannot pass as an access token.
pub const ASSERTION_TYPE: &str = "JWT";
pub const ASSERTION_TTL_SECONDS: i64 = 60;

/// The claims of an identity assertion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssertionClaims {
    pub iss: String,
    pub aud: String,
    /// The user's id, or an external issuer's subject (`X-Auth-User-Id`).
    pub sub: String,
    pub tid: Uuid,
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub email: String,
    pub roles: Vec<String>,
    pub perms: Vec<String>,
    /// RFC 8176 methods of a JWT session (`pwd`, `otp`); empty for an API key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// `jwt`, `api_key` or an external issuer's name.
    pub method: String,
    /// The session of a JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// The id of an API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Uuid>,
}

impl AssertionClaims {
    pub fn new(config: &Config, identity: &Identity, at: i64) -> Self {
        let amr = match identity.method {
            CredentialKind::Jwt if identity.mfa => vec!["pwd".into(), "otp".into()],
            CredentialKind::Jwt => vec!["pwd".into()],
            CredentialKind::ApiKey | CredentialKind::Oidc => Vec::new(),
        };
        AssertionClaims {
            iss: config.jwt.issuer.clone(),
            aud: config.proxy.assertion_audience.clone(),
            sub: identity.subject(),
            tid: identity.tenant_id,
            jti: Uuid::new_v4(),
            iat: at,
            nbf: at,
            exp: at + ASSERTION_TTL_SECONDS,
            email: identity.email.clone(),
            roles: identity.roles.clone(),
            perms: identity.permissions.clone(),
            amr,
            method: identity.method_name().to_string(),
            sid: identity.session_id,
            api_key_id: identity.key_id,
        }
    }
}

/// Signs `claims` with the current key.
pub fn sign(keys: &KeyRing, claims: &AssertionClaims) -> Result<String, Error> {
    let set = keys.current();
    let mut header = Header::new(set.signer.algorithm);
    header.typ = Some(ASSERTION_TYPE.to_string());
    header.kid = Some(set.signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &set.signer.key).map_err(|e| {
        tracing::error!(error = %e, "signing an identity assertion failed");
        Error::Internal
    })
}

/// Signed assertions by identity, kept for half their lifetime so a busy
/// credential costs one signature per 30 s, not one per request.
pub struct Assertions {
    signed: Cache<Identity, Arc<str>>,
}

impl Assertions {
    pub fn new(max_entries: u64) -> Self {
        Assertions {
            signed: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(Duration::from_secs(ASSERTION_TTL_SECONDS as u64 / 2))
                .build(),
        }
    }

    /// The `X-Auth-Assertion` value for `identity`.
    pub fn for_identity(
        &self,
        keys: &KeyRing,
        config: &Config,
        identity: &Identity,
    ) -> Result<Arc<str>, Error> {
        if let Some(token) = self.signed.get(identity) {
            return Ok(token);
        }
        let claims = AssertionClaims::new(config, identity, crate::vocab::now());
        let token: Arc<str> = Arc::from(sign(keys, &claims)?);
        self.signed.insert(identity.clone(), token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, sqlite::SqliteStore};
    use jsonwebtoken::{DecodingKey, Validation};

    #[tokio::test]
    async fn assertions_verify_against_the_jwks_with_their_audience_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
        let mut config = Config::default();
        config.proxy.assertion_audience = "orders-api".into();
        let ring = KeyRing::load(&config, store).await.unwrap();
        let identity = Identity {
            user_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            email: "a@example.com".into(),
            roles: vec!["member".into()],
            permissions: vec!["profile:read".into()],
            method: CredentialKind::ApiKey,
            session_id: None,
            key_id: Some(Uuid::now_v7()),
            mfa: false,
            passkey: false,
            external: None,
        };
        let assertions = Assertions::new(10);
        let token = assertions.for_identity(&ring, &config, &identity).unwrap();
        assert_eq!(
            assertions.for_identity(&ring, &config, &identity).unwrap(),
            token
        );
        let header = jsonwebtoken::decode_header(&*token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&ring.current().jwks).unwrap();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&["orders-api"]);
        validation.set_issuer(&["portcullis"]);
        let claims = jsonwebtoken::decode::<AssertionClaims>(
            &*token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims.sub, identity.user_id.to_string());
        assert_eq!(claims.method, "api_key");
        assert_eq!(claims.api_key_id, identity.key_id);
        assert_eq!(claims.exp - claims.iat, 60);
        assert!(claims.amr.is_empty());
    }
}
