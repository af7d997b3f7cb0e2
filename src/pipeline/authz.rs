//! The authorizer: `[[routes]]` compiled into [`RoutePolicies`] (first glob +
//! method match wins, else `proxy.default_policy`), selected under every
//! reading of the path ([`Selection`], SPEC §15), and [`authorize`], which
//! checks the credential kind, the permissions (all) and the roles (any of).

use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use http::Method;

use crate::config::{AuthMode, Config};
use crate::error::Error;
use crate::vocab::CredentialKind;
use crate::vocab::Identity;

pub struct RoutePolicy {
    pub name: Arc<str>,
    matcher: Option<GlobMatcher>,
    methods: Vec<Method>,
    pub auth: AuthMode,
    pub permissions: Vec<String>,
    pub roles: Vec<String>,
    pub require_otp: bool,
    pub require_passkey: bool,
    pub credentials: Vec<CredentialKind>,
}

impl RoutePolicy {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(path))
            && (self.methods.is_empty() || self.methods.contains(method))
    }
}

pub struct RoutePolicies {
    routes: Vec<RoutePolicy>,
    default: RoutePolicy,
}

impl RoutePolicies {
    /// Compiles the globs once at start; the hot path only matches.
    pub fn compile(config: &Config) -> Result<RoutePolicies, String> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let glob = GlobBuilder::new(&r.path)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("route {}: {e}", r.name))?;
            let methods = r
                .methods
                .iter()
                .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("route {}: {e}", r.name))?;
            routes.push(RoutePolicy {
                name: Arc::from(r.name.as_str()),
                matcher: Some(glob.compile_matcher()),
                methods,
                auth: r.auth,
                permissions: r.permissions.clone(),
                roles: r.roles.clone(),
                require_otp: r.require_otp,
                require_passkey: r.require_passkey,
                credentials: r.credentials.clone(),
            });
        }
        Ok(RoutePolicies {
            routes,
            default: RoutePolicy {
                name: Arc::from("default"),
                matcher: None,
                methods: Vec::new(),
                auth: config.proxy.default_policy,
                permissions: Vec::new(),
                roles: Vec::new(),
                require_otp: false,
                require_passkey: false,
                credentials: vec![
                    CredentialKind::Jwt,
                    CredentialKind::ApiKey,
                    CredentialKind::Oidc,
                ],
            },
        })
    }

    pub fn select(&self, method: &Method, path: &str) -> &RoutePolicy {
        self.routes
            .iter()
            .find(|r| r.matches(method, path))
            .unwrap_or(&self.default)
    }

    /// The policies of every reading of the normalised `path` (as sent,
    /// without `;` parameters, lower-cased; SPEC §15). The request must
    /// satisfy all of them; the one for the path as sent names the route.
    pub fn select_all(&self, method: &Method, path: &str) -> Selection<'_> {
        let readings = super::path::readings(path);
        let primary = self.select(method, readings.sent);
        let mut sel = Selection {
            primary,
            others: [None; 3],
        };
        for reading in readings.others() {
            let p = self.select(method, reading);
            let known = std::ptr::eq(p, primary)
                || sel.others.iter().flatten().any(|o| std::ptr::eq(*o, p));
            if !known && let Some(slot) = sel.others.iter_mut().find(|s| s.is_none()) {
                *slot = Some(p);
            }
        }
        sel
    }
}

/// The route policies a request falls under: one for most requests, up to
/// four when its readings select different routes. Public only when every
/// one is; otherwise it needs what each of them requires.
#[derive(Clone, Copy)]
pub struct Selection<'a> {
    /// The route of the path as sent: the metrics label and `/auth/verify`'s `route`.
    pub primary: &'a RoutePolicy,
    others: [Option<&'a RoutePolicy>; 3],
}

impl<'a> Selection<'a> {
    /// Only the one policy (tests, and callers that selected it themselves).
    pub fn one(policy: &'a RoutePolicy) -> Self {
        Selection {
            primary: policy,
            others: [None; 3],
        }
    }

    fn all(&self) -> impl Iterator<Item = &'a RoutePolicy> {
        std::iter::once(self.primary).chain(self.others.into_iter().flatten())
    }

    /// Public only when every reading selects a public route.
    pub fn auth(&self) -> AuthMode {
        if self.all().all(|p| p.auth == AuthMode::Public) {
            AuthMode::Public
        } else {
            AuthMode::Authenticated
        }
    }

    /// Step-up when any selected route asks for it.
    pub fn require_otp(&self) -> bool {
        self.all().any(|p| p.require_otp)
    }

    /// Whether the readings selected more than one route.
    pub fn is_merged(&self) -> bool {
        self.others[0].is_some()
    }
}

/// 403 `FORBIDDEN` unless the identity may use every selected route.
pub fn authorize_all(selection: &Selection<'_>, identity: &Identity) -> Result<(), Error> {
    selection.all().try_for_each(|p| authorize(p, identity))
}

/// Whether `granted` (with `resource:*` and `*` wildcards) covers `required`.
pub fn grants(granted: &[String], required: &str) -> bool {
    granted.iter().any(|g| {
        g == "*"
            || g == required
            || g.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with(':') && required.starts_with(prefix))
    })
}

/// 403 `FORBIDDEN` unless the identity may use the route; 401
/// `PASSKEY_REQUIRED` on a `require_passkey` route for a credential that is
/// not the token of a session begun with a passkey.
pub fn authorize(policy: &RoutePolicy, identity: &Identity) -> Result<(), Error> {
    if policy.require_passkey && !identity.passkey {
        return Err(Error::PasskeyRequired);
    }
    if !policy.credentials.contains(&identity.method) {
        return Err(Error::Forbidden);
    }
    if !policy
        .permissions
        .iter()
        .all(|p| grants(&identity.permissions, p))
    {
        return Err(Error::Forbidden);
    }
    if !policy.roles.is_empty() && !policy.roles.iter().any(|r| identity.roles.contains(r)) {
        return Err(Error::Forbidden);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(toml: &str) -> RoutePolicies {
        RoutePolicies::compile(&Config::from_sources("t", toml, &[]).unwrap()).unwrap()
    }

    fn identity(roles: &[&str], perms: &[&str]) -> Identity {
        Identity {
            user_id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            email: "a@example.com".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            permissions: perms.iter().map(|s| s.to_string()).collect(),
            method: CredentialKind::Jwt,
            session_id: None,
            key_id: None,
            mfa: false,
            passkey: false,
            external: None,
        }
    }

    const ROUTES: &str = r#"
[[routes]]
name = "public"
path = "/public/**"
auth = "public"
[[routes]]
name = "payments"
path = "/payments/**"
methods = ["POST", "delete"]
permissions = ["payments:write"]
[[routes]]
name = "admin"
path = "/admin/*"
roles = ["admin", "ops"]
"#;

    #[test]
    fn first_matching_route_wins_else_default() {
        let p = policies(ROUTES);
        assert_eq!(&*p.select(&Method::GET, "/public/a/b").name, "public");
        assert_eq!(&*p.select(&Method::POST, "/payments/1").name, "payments");
        assert_eq!(&*p.select(&Method::DELETE, "/payments/1").name, "payments");
        assert_eq!(&*p.select(&Method::GET, "/payments/1").name, "default");
        // `*` stays within one segment
        assert_eq!(&*p.select(&Method::GET, "/admin/x").name, "admin");
        assert_eq!(&*p.select(&Method::GET, "/admin/x/y").name, "default");
        assert_eq!(
            p.select(&Method::GET, "/other").auth,
            AuthMode::Authenticated
        );
    }

    #[test]
    fn every_reading_of_the_path_must_be_satisfied() {
        let p = policies(ROUTES);
        // as sent: default; lower-cased: admin
        let sel = p.select_all(&Method::GET, "/ADMIN/x");
        assert_eq!(&*sel.primary.name, "default");
        assert!(sel.is_merged());
        assert_eq!(
            authorize_all(&sel, &identity(&["member"], &["*"])),
            Err(Error::Forbidden)
        );
        assert!(authorize_all(&sel, &identity(&["ops"], &[])).is_ok());
        // public only when every reading is public
        let sel = p.select_all(&Method::GET, "/PUBLIC/x");
        assert_eq!(sel.auth(), AuthMode::Authenticated);
        // as sent, `/public;x/y` is no `/public/**` path: the default policy
        let sel = p.select_all(&Method::GET, "/public;x/y");
        assert_eq!(sel.auth(), AuthMode::Authenticated);
        assert!(sel.is_merged());
        let sel = p.select_all(&Method::GET, "/public/y;x");
        assert_eq!(sel.auth(), AuthMode::Public);
        // parameters dropped: /admin;v=1/x is /admin/x to Tomcat
        let sel = p.select_all(&Method::GET, "/admin;v=1/x");
        assert_eq!(&*sel.primary.name, "default");
        assert_eq!(
            authorize_all(&sel, &identity(&["member"], &[])),
            Err(Error::Forbidden)
        );
        // a lower-case path without parameters has one reading
        assert!(!p.select_all(&Method::GET, "/admin/x").is_merged());
    }

    #[test]
    fn wildcard_permissions() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(grants(&g(&["*"]), "payments:write"));
        assert!(grants(&g(&["payments:*"]), "payments:write"));
        assert!(grants(&g(&["payments:write"]), "payments:write"));
        assert!(!grants(&g(&["payments:read"]), "payments:write"));
        assert!(!grants(&g(&["pay*"]), "payments:write"));
        assert!(!grants(&g(&["payment:*"]), "payments:write"));
    }

    #[test]
    fn permissions_all_roles_any() {
        let p = policies(ROUTES);
        let payments = p.select(&Method::POST, "/payments/1");
        assert_eq!(
            authorize(payments, &identity(&["member"], &["profile:read"])),
            Err(Error::Forbidden)
        );
        assert!(authorize(payments, &identity(&["x"], &["payments:*"])).is_ok());
        let admin = p.select(&Method::GET, "/admin/x");
        assert!(authorize(admin, &identity(&["ops"], &[])).is_ok());
        assert_eq!(
            authorize(admin, &identity(&["member"], &["*"])),
            Err(Error::Forbidden)
        );
    }
}
