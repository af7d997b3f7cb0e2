//! The proxy path as a pipeline (SPEC §7, §15), after Ory Oathkeeper:
//! request-level rules ([`edge`]) → [`path`] normalisation → route policies
//! of every reading of the path ([`authz`]) → authenticators
//! ([`authn`]) → tenant check → authorizer ([`authz`]) → mutator
//! ([`identity_headers`]). [`Pipeline`] is built once from the config and
//! the services it needs; [`Pipeline::check`] runs the stages a request needs.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use crate::config::{AuthMode, Config, ProxySection, parse_cidr};
use crate::error::Error;
use crate::metrics;
use crate::tenancy::TenantDirectory;
use crate::tokens::KeyRing;
use crate::tokens::assertion::Assertions;
use crate::vocab::Identity;

pub mod authn;
pub mod authz;
pub mod client;
pub mod edge;
pub mod identity_headers;
pub mod otp;
pub mod path;
pub mod rendered;
#[cfg(test)]
pub(crate) mod test_support;

use authn::Authenticators;
use authn::credential::Authenticated;
use authz::RoutePolicies;
use client::ClientInfo;
use identity_headers::{IdentityHeaderNames, UpstreamEdits};
use otp::OtpStepUp;

/// The proxy path, built once at start from the config and the services it
/// needs, and called by both the proxy and `GET /auth/verify`. It holds no
/// reference to the application that owns it.
pub struct Pipeline {
    /// Compiled `[[routes]]`; swapped whole on SIGHUP ([`Pipeline::replace_routes`]).
    routes: RwLock<Arc<RoutePolicies>>,
    pub authenticators: Authenticators,
    tenants: Arc<TenantDirectory>,
    otp: Arc<OtpStepUp>,
    pub identity_headers: IdentityHeaderNames,
    trusted_proxies: Vec<IpNet>,
    proxy: ProxySection,
    /// Signs `X-Auth-Assertion` when `proxy.identity_assertion` is on.
    assertions: Option<(Assertions, Arc<KeyRing>, Arc<Config>)>,
}

impl Pipeline {
    pub fn new(
        config: &Arc<Config>,
        authenticators: Authenticators,
        tenants: Arc<TenantDirectory>,
        otp: Arc<OtpStepUp>,
        keys: Arc<KeyRing>,
    ) -> Result<Pipeline, String> {
        let routes = RoutePolicies::compile(config)?;
        let identity_headers = IdentityHeaderNames::new(&config.proxy.identity_header_prefix)?
            .with_api_key_prefix(&config.api_keys.prefix);
        let trusted_proxies = config
            .proxy
            .trusted_proxies
            .iter()
            .filter_map(|c| parse_cidr(c))
            .collect();
        let assertions = config.proxy.identity_assertion.then(|| {
            (
                Assertions::new(config.cache.max_entries),
                keys,
                config.clone(),
            )
        });
        Ok(Pipeline {
            routes: RwLock::new(Arc::new(routes)),
            authenticators,
            tenants,
            otp,
            identity_headers,
            trusted_proxies,
            proxy: config.proxy.clone(),
            assertions,
        })
    }

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

    /// Who is calling, seen through the trusted proxies.
    pub fn client_info(&self, peer: IpAddr, headers: &HeaderMap) -> ClientInfo {
        client::client_info(&self.trusted_proxies, peer, headers)
    }

    /// The signed `X-Auth-Assertion` for `identity` when `proxy.identity_assertion`
    /// is on; a signing failure is logged and the header left out.
    pub fn assertion(&self, identity: &Identity) -> Option<Arc<str>> {
        let (assertions, keys, config) = self.assertions.as_ref()?;
        assertions.for_identity(keys, config, identity).ok()
    }

    /// The upstream request's header edits (the mutator): identity headers
    /// of `who` (with its assertion), stripped spoofs, rebuilt forwarding headers.
    pub fn upstream_edits(
        &self,
        incoming: &HeaderMap,
        host: Option<&HeaderValue>,
        who: Option<&Authenticated>,
        request_id: &str,
        client: &ClientInfo,
    ) -> UpstreamEdits {
        let assertion = who.and_then(|w| self.assertion(&w.identity));
        identity_headers::upstream_edits(
            &self.identity_headers,
            &self.proxy,
            incoming,
            host,
            who,
            assertion.as_deref(),
            request_id,
            client,
        )
    }

    /// Authenticates and authorizes a request on the proxy path (or the one
    /// `GET /auth/verify` describes) under the route policies its path selected
    /// (every reading of it, SPEC §15).
    /// `Ok(None)`: a public route passed without a (valid) credential.
    pub async fn check(
        &self,
        policy: &authz::Selection<'_>,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Authenticated>>, Error> {
        let presented = self.authenticators.presented(headers);
        let credential = presented.label();
        let decide = |outcome: &str| metrics::auth_decision(credential, outcome);
        let auth = policy.auth();
        let identity = match (auth, self.authenticators.authenticate(&presented).await) {
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
        let verdict = match self
            .tenants
            .check_matches(tenant_header, identity.tenant_id)
            .await
        {
            Ok(()) if policy.require_otp() => match self.otp.check(&identity, headers).await {
                Ok(()) => {
                    if !identity.mfa {
                        identity = identity.stepped_up();
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
}
