//! Authenticators: find the credential a request presents and verify it.
//! "Nothing presented" is its own outcome (`Ok(None)`), distinct from a
//! presented credential that is bad (`Err`), as in Oathkeeper.

use std::sync::Arc;

use http::HeaderMap;

use super::Identity;
use crate::app::App;
use crate::error::Error;

pub mod jwt;

/// The credential a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<'a> {
    Nothing,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
}

impl Presented<'_> {
    /// Metrics label of the credential kind.
    pub fn label(&self) -> &'static str {
        match self {
            Presented::Nothing => "none",
            Presented::Bearer(_) => "jwt",
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

pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    match bearer_token(headers) {
        Some(token) => Presented::Bearer(token),
        None => Presented::Nothing,
    }
}

/// Verifies what was presented; `Ok(None)` when nothing was.
pub async fn authenticate(
    app: &App,
    presented: &Presented<'_>,
) -> Result<Option<Arc<Identity>>, Error> {
    match presented {
        Presented::Nothing => Ok(None),
        Presented::Bearer(token) => app.jwt.authenticate(app, token).await.map(Some),
    }
}

/// The identity a request must have (Bearer `/auth` routes): 401 `UNAUTHENTICATED` without one.
pub async fn require(app: &App, headers: &HeaderMap) -> Result<Arc<Identity>, Error> {
    authenticate(app, &presented(headers))
        .await?
        .ok_or(Error::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_extraction() {
        assert_eq!(presented(&auth("Bearer abc")), Presented::Bearer("abc"));
        assert_eq!(presented(&auth("bearer  abc ")), Presented::Bearer("abc"));
        assert_eq!(presented(&auth("Basic dXNlcjpwdw==")), Presented::Nothing);
        assert_eq!(presented(&auth("Bearer")), Presented::Nothing);
        assert_eq!(presented(&HeaderMap::new()), Presented::Nothing);
    }
}
