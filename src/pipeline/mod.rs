//! The proxy path as a pipeline (SPEC §7, §15), after Ory Oathkeeper:
//! request-level rules ([`edge`]) → [`path`] normalisation → route policies
//! of every reading of the path ([`authz`]) → authenticators
//! ([`authn`]) → tenant check → authorizer ([`authz`]) → mutator
//! ([`identity_headers`]). [`check`] runs the stages a request needs.

use std::sync::Arc;

use http::HeaderMap;
use uuid::Uuid;

use crate::app::App;
use crate::config::{AuthMode, CredentialKind};
use crate::error::Error;
use crate::metrics;

pub mod authn;
pub mod authz;
pub mod client;
pub mod edge;
pub mod identity_headers;
pub mod otp;
pub mod path;

/// Helpers the pipeline's unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use http::{HeaderMap, HeaderName};

    /// A header map with these (name, value) pairs, repeated names appended.
    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }
}

/// Who a verified credential speaks for; cached, so shared behind an `Arc`
/// (the credential's own expiry is kept beside it, [`authn::Verified`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub method: CredentialKind,
    /// The session of a JWT.
    pub session_id: Option<Uuid>,
    /// The id of an API key.
    pub key_id: Option<Uuid>,
    /// The credential proved a second factor (`amr` has `otp`).
    pub mfa: bool,
    /// The identity headers, built at the first request and kept with the
    /// cached identity; not part of `==`/`Hash`, empty in a clone.
    pub upstream_headers: identity_headers::Precomputed,
}

/// Authenticates and authorizes a request on the proxy path (or the one
/// `GET /auth/verify` describes) under the route policies its path selected
/// (every reading of it, SPEC §15).
/// `Ok(None)`: a public route passed without a (valid) credential.
pub async fn check(
    app: &App,
    policy: &authz::Selection<'_>,
    headers: &HeaderMap,
) -> Result<Option<Arc<Identity>>, Error> {
    let presented = authn::presented(headers, &app.config.api_keys.prefix);
    let credential = presented.label();
    let decide = |outcome: &str| metrics::auth_decision(credential, outcome);
    let auth = policy.auth();
    let identity = match (auth, authn::authenticate(app, &presented).await) {
        (_, Ok(Some(identity))) => identity,
        (AuthMode::Public, _) => {
            decide("anonymous");
            return Ok(None);
        }
        (AuthMode::Authenticated, Ok(None)) => {
            decide("unauthenticated");
            return Err(Error::Unauthenticated);
        }
        (AuthMode::Authenticated, Err(e)) => {
            decide(e.code());
            return Err(e);
        }
    };
    let tenant_header = headers
        .get(crate::tenancy::TENANT_HEADER)
        .and_then(|v| v.to_str().ok());
    let mut identity = identity;
    let verdict = match app
        .tenants
        .check_matches(tenant_header, identity.tenant_id)
        .await
    {
        Ok(()) if policy.require_otp() => match app.otp.check(app, &identity, headers).await {
            Ok(()) => {
                if !identity.mfa {
                    identity = Arc::new(Identity {
                        mfa: true,
                        ..(*identity).clone()
                    });
                }
                authz::authorize_all(policy, &identity)
            }
            Err(e) => Err(e),
        },
        Ok(()) => authz::authorize_all(policy, &identity),
        Err(e) => Err(e),
    };
    match verdict {
        Ok(()) => {
            decide("allowed");
            Ok(Some(identity))
        }
        // optional authentication: a credential that does not fit a public route is ignored
        Err(e) if auth == AuthMode::Public && e != Error::StoreUnavailable => {
            decide("anonymous");
            Ok(None)
        }
        Err(e) => {
            decide(e.code());
            Err(e)
        }
    }
}
