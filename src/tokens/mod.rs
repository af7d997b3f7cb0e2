//! Tokens (SPEC §9): access JWTs (`typ: at+jwt`, `kid`, the listed claims)
//! signed and verified with the [`keys::KeyRing`], and the opaque refresh
//! tokens. Verification follows RFC 8725: the key decides the algorithm.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::JwtSection;
use crate::error::Error;
use crate::store::User;

pub mod assertion;
pub mod keys;

pub use keys::KeyRing;

pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub tid: Uuid,
    pub sid: Uuid,
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub email: String,
    pub roles: Vec<String>,
    pub perms: Vec<String>,
    pub amr: Vec<String>,
}

impl AccessClaims {
    pub fn new(cfg: &JwtSection, user: &User, session_id: Uuid, amr: &[String], at: i64) -> Self {
        AccessClaims {
            iss: cfg.issuer.clone(),
            aud: cfg.audience.clone(),
            sub: user.id,
            tid: user.tenant_id,
            sid: session_id,
            jti: Uuid::new_v4(),
            iat: at,
            nbf: at,
            exp: at + cfg.access_ttl_seconds as i64,
            email: user.email.clone(),
            roles: user.roles.clone(),
            perms: user.permissions.clone(),
            amr: amr.to_vec(),
        }
    }
}

/// Signs `claims` with the current key.
pub fn sign(keys: &KeyRing, claims: &AccessClaims) -> Result<String, Error> {
    let set = keys.current();
    let mut header = Header::new(set.signer.algorithm);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_string());
    header.kid = Some(set.signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &set.signer.key).map_err(|e| {
        tracing::error!(error = %e, "signing an access token failed");
        Error::Internal
    })
}

/// Verifies an access token: known `kid`, the key's own algorithm, `typ`,
/// signature, `exp`/`nbf`/`iat` with leeway, `iss`, `aud`. Expired → `TOKEN_EXPIRED`,
/// every other defect → `INVALID_TOKEN`.
pub async fn verify(keys: &KeyRing, cfg: &JwtSection, token: &str) -> Result<AccessClaims, Error> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    // embedded keys or key URLs are never trusted (RFC 8725 §3.10)
    let embedded = header.jwk.is_some()
        || header.jku.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some();
    if !typ_ok || embedded || header.crit.is_some() {
        return Err(Error::InvalidToken);
    }
    let kid = header.kid.as_deref().ok_or(Error::InvalidToken)?;
    let mut set = keys.current();
    if !set.verifiers.contains_key(kid) && keys.reload_for_unknown_kid().await {
        set = keys.current();
    }
    let verifier = set.verifiers.get(kid).ok_or(Error::InvalidToken)?;
    if header.alg != verifier.algorithm {
        return Err(Error::InvalidToken);
    }
    let mut validation = Validation::new(verifier.algorithm);
    validation.leeway = cfg.leeway_seconds;
    validation.validate_nbf = true;
    validation.set_issuer(&[cfg.issuer.as_str()]);
    validation.set_audience(&[cfg.audience.as_str()]);
    validation.required_spec_claims = ["exp", "nbf", "iat", "iss", "aud", "sub"]
        .into_iter()
        .map(String::from)
        .collect::<HashSet<_>>();
    match jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, &validation) {
        // jsonwebtoken does not look at `iat`: a token from the future is not ours (SPEC §15)
        Ok(data) if data.claims.iat > crate::vocab::now() + cfg.leeway_seconds as i64 => {
            Err(Error::InvalidToken)
        }
        Ok(data) => Ok(data.claims),
        Err(e) => match e.kind() {
            ErrorKind::ExpiredSignature => Err(Error::TokenExpired),
            _ => Err(Error::InvalidToken),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::{Store, UserStatus, sqlite::SqliteStore};
    use std::sync::Arc;

    fn user() -> User {
        User {
            id: Uuid::new_v4(),
            tenant_id: Uuid::new_v4(),
            email: "a@example.com".into(),
            password_hash: None,
            first_name: None,
            family_name: None,
            name: None,
            status: UserStatus::Active,
            email_verified: false,
            mfa_enabled: false,
            locked_until: None,
            roles: vec!["member".into()],
            permissions: vec!["profile:read".into()],
            created_at: 0,
            updated_at: 0,
        }
    }

    async fn ring() -> (tempfile::TempDir, KeyRing, Config) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
        let config = Config::default();
        let ring = KeyRing::load(&config, store).await.unwrap();
        (dir, ring, config)
    }

    #[tokio::test]
    async fn issued_tokens_verify_and_tampering_does_not() {
        let (_d, ring, config) = ring().await;
        let claims = AccessClaims::new(
            &config.jwt,
            &user(),
            Uuid::new_v4(),
            &["pwd".into()],
            crate::vocab::now(),
        );
        let token = sign(&ring, &claims).unwrap();
        assert_eq!(verify(&ring, &config.jwt, &token).await.unwrap(), claims);
        let mut bad = token.clone();
        bad.pop();
        bad.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            verify(&ring, &config.jwt, &bad).await,
            Err(Error::InvalidToken)
        );
    }

    #[tokio::test]
    async fn expired_beyond_leeway_is_token_expired() {
        let (_d, ring, config) = ring().await;
        let at = crate::vocab::now() - 2000;
        let claims = AccessClaims::new(&config.jwt, &user(), Uuid::new_v4(), &[], at);
        let token = sign(&ring, &claims).unwrap();
        assert_eq!(
            verify(&ring, &config.jwt, &token).await,
            Err(Error::TokenExpired)
        );
    }

    #[tokio::test]
    async fn wrong_audience_and_future_nbf_are_invalid() {
        let (_d, ring, config) = ring().await;
        let now = crate::vocab::now();
        let mut claims = AccessClaims::new(&config.jwt, &user(), Uuid::new_v4(), &[], now);
        claims.aud = "someone-else".into();
        let token = sign(&ring, &claims).unwrap();
        assert_eq!(
            verify(&ring, &config.jwt, &token).await,
            Err(Error::InvalidToken)
        );
        let mut claims = AccessClaims::new(&config.jwt, &user(), Uuid::new_v4(), &[], now);
        claims.nbf = now + 600;
        let token = sign(&ring, &claims).unwrap();
        assert_eq!(
            verify(&ring, &config.jwt, &token).await,
            Err(Error::InvalidToken)
        );
    }

    #[tokio::test]
    async fn alg_none_and_hs256_confusion_are_invalid() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (_d, ring, config) = ring().await;
        let claims = AccessClaims::new(
            &config.jwt,
            &user(),
            Uuid::new_v4(),
            &[],
            crate::vocab::now(),
        );
        let kid = ring.current().signer.kid.clone();
        let payload = b64.encode(serde_json::to_vec(&claims).unwrap());
        let none_header = b64.encode(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#));
        let none = format!("{none_header}.{payload}.");
        assert_eq!(
            verify(&ring, &config.jwt, &none).await,
            Err(Error::InvalidToken)
        );
        // HS256 "signed" with the published public key
        let jwks: serde_json::Value = serde_json::from_slice(&ring.current().jwks).unwrap();
        let x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid);
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify(&ring, &config.jwt, &forged).await,
            Err(Error::InvalidToken)
        );
    }
}
