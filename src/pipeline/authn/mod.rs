//! Authenticators: find the credential a request presents (a JWT, or an API
//! key in `X-API-Key` / `Authorization: Bearer <key prefix>…`) and verify it
//! with the [`Authenticator`] of its kind. "Nothing presented" is its own
//! outcome (`Ok(None)`), distinct from a presented credential that is bad
//! (`Err`), as in Oathkeeper. Each authenticator gets its store, keys and
//! caches when it is built; none sees the application.

use std::sync::Arc;

use http::HeaderMap;

use crate::error::Error;
use crate::vocab::CredentialKind;

pub mod api_key;
pub mod credential;
pub mod external;
pub mod jwt;

use api_key::ApiKeyAuthenticator;
use credential::{Authenticated, Authenticator};
use jwt::JwtAuthenticator;

/// The authenticators of every credential kind, chosen by what a request presents.
pub struct Authenticators {
    pub jwt: Arc<JwtAuthenticator>,
    pub api_keys: Arc<ApiKeyAuthenticator>,
    /// `api_keys.prefix`: a bearer token starting with it is an API key.
    pub api_key_prefix: String,
}

impl Authenticators {
    /// What the request presents (see [`presented`]).
    pub fn presented<'h>(&self, headers: &'h HeaderMap) -> Presented<'h> {
        presented(headers, &self.api_key_prefix)
    }

    /// Verifies what was presented; `Ok(None)` when nothing was.
    pub async fn authenticate(
        &self,
        presented: &Presented<'_>,
    ) -> Result<Option<Arc<Authenticated>>, Error> {
        match presented {
            Presented::Nothing => Ok(None),
            Presented::Bearer(token) => self.jwt.authenticate(token).await.map(Some),
            Presented::ApiKey(key) => self.api_keys.authenticate(key).await.map(Some),
        }
    }

    /// Any valid credential of this sidecar, JWT or API key (`GET
    /// /auth/me`): 401 `UNAUTHENTICATED` without one, 403 `FORBIDDEN` for an
    /// external issuer's token (it has no account here to describe).
    pub async fn require_any(&self, headers: &HeaderMap) -> Result<Arc<Authenticated>, Error> {
        let who = self
            .authenticate(&self.presented(headers))
            .await?
            .ok_or(Error::Unauthenticated)?;
        if who.method == CredentialKind::Oidc {
            return Err(Error::Forbidden);
        }
        Ok(who)
    }

    /// The JWT session a Bearer `/auth` route needs: 401 without a credential
    /// or for a bad one, 403 `FORBIDDEN` for a valid API key (keys cannot
    /// manage keys, passwords, sessions or MFA; SPEC §14).
    pub async fn require_session(&self, headers: &HeaderMap) -> Result<Arc<Authenticated>, Error> {
        let who = self.require_any(headers).await?;
        if who.method != CredentialKind::Jwt {
            return Err(Error::Forbidden);
        }
        Ok(who)
    }
}

/// The header an API key may come in (the other way is `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "x-api-key";

/// The credential a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<'a> {
    Nothing,
    /// `Authorization: Bearer <token>` that is not an API key.
    Bearer(&'a str),
    /// `X-API-Key: <key>`, or `Authorization: Bearer <key>` with the API key prefix.
    ApiKey(&'a str),
}

impl Presented<'_> {
    /// Metrics label of the credential kind.
    pub fn label(&self) -> &'static str {
        match self {
            Presented::Nothing => "none",
            Presented::Bearer(_) => "jwt",
            Presented::ApiKey(_) => "api_key",
        }
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// What the request presents; `Authorization` wins over `X-API-Key`. A bearer
/// token that starts with `api_key_prefix` (`api_keys.prefix`) is an API key.
pub fn presented<'h>(headers: &'h HeaderMap, api_key_prefix: &str) -> Presented<'h> {
    if let Some(token) = bearer_token(headers) {
        if !api_key_prefix.is_empty() && token.starts_with(api_key_prefix) {
            return Presented::ApiKey(token);
        }
        return Presented::Bearer(token);
    }
    match headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        Some(key) => Presented::ApiKey(key),
        None => Presented::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    const P: &str = "sk_live_";

    #[test]
    fn bearer_extraction() {
        assert_eq!(presented(&auth("Bearer abc"), P), Presented::Bearer("abc"));
        assert_eq!(
            presented(&auth("bearer  abc "), P),
            Presented::Bearer("abc")
        );
        assert_eq!(
            presented(&auth("Basic dXNlcjpwdw=="), P),
            Presented::Nothing
        );
        assert_eq!(presented(&auth("Bearer"), P), Presented::Nothing);
        assert_eq!(presented(&HeaderMap::new(), P), Presented::Nothing);
    }

    #[test]
    fn api_keys_come_from_x_api_key_or_a_prefixed_bearer() {
        assert_eq!(
            presented(&auth("Bearer sk_live_abc"), P),
            Presented::ApiKey("sk_live_abc")
        );
        assert_eq!(presented(&auth("Bearer sk_live_abc"), P).label(), "api_key");
        let mut h = HeaderMap::new();
        h.insert(API_KEY_HEADER, " sk_live_xyz ".parse().unwrap());
        assert_eq!(presented(&h, P), Presented::ApiKey("sk_live_xyz"));
        // Authorization wins over X-API-Key
        h.insert(http::header::AUTHORIZATION, "Bearer a.b.c".parse().unwrap());
        assert_eq!(presented(&h, P), Presented::Bearer("a.b.c"));
        let mut empty = HeaderMap::new();
        empty.insert(API_KEY_HEADER, "".parse().unwrap());
        assert_eq!(presented(&empty, P), Presented::Nothing);
    }
}
