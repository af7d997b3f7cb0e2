//! The authorizer: `[[routes]]` compiled into [`RoutePolicies`] (first glob +
//! method match wins, else `proxy.default_policy`) and [`authorize`], which
//! checks the credential kind, the permissions (all) and the roles (any of).

use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use http::Method;

use super::Identity;
use crate::config::{AuthMode, Config, CredentialKind};
use crate::error::Error;

pub struct RoutePolicy {
    pub name: Arc<str>,
    matcher: Option<GlobMatcher>,
    methods: Vec<Method>,
    pub auth: AuthMode,
    pub permissions: Vec<String>,
    pub roles: Vec<String>,
    pub require_otp: bool,
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
                credentials: vec![CredentialKind::Jwt, CredentialKind::ApiKey],
            },
        })
    }

    pub fn select(&self, method: &Method, path: &str) -> &RoutePolicy {
        self.routes
            .iter()
            .find(|r| r.matches(method, path))
            .unwrap_or(&self.default)
    }
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

/// 403 `FORBIDDEN` unless the identity may use the route.
pub fn authorize(policy: &RoutePolicy, identity: &Identity) -> Result<(), Error> {
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
            upstream_headers: Default::default(),
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
