//! The one `/auth` route table ([`ROUTES`]): method, path pattern, metrics
//! label, rate limit, caller and permission of every route, and the handler.
//! Dispatch, 404/405 (with `Allow`), labels, the per-IP limit and the OpenAPI
//! completeness test all read it; its adapters parse the JSON body once the
//! caller (or tenant) is known and render the handler's typed [`Reply`].

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use http::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::call::{Reply, note_caller, parse_body};
use super::{account, admin, api_keys, forward_auth, mfa, oidc, openapi, passkeys, session};
use crate::app::App;
use crate::error::Error;
use crate::http_types::{AuthRequest, HttpResponse};
use crate::pipeline::authz::grants;
use crate::store::Tenant;
use crate::tenancy::TENANT_HEADER;
use crate::vocab::Identity;

/// Metrics label of a path no route has.
pub const UNKNOWN_LABEL: &str = "auth_unknown";

/// What a route answers, boxed so that every handler fits one table.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Result<HttpResponse, Error>> + Send + 'a>>;

/// A handler about to run, or the error that refused the request before it
/// could (the body).
pub type Admitted<'a> = Result<Answer<'a>, Error>;

/// The request as the table hands it to a route's handler.
pub struct Call<'a> {
    pub app: &'a Arc<App>,
    pub req: &'a AuthRequest,
    /// The pattern's `{…}` segment (`{id}`, `{name}`); empty when it has none.
    pub param: &'a str,
}

/// The methods a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Patch,
    Delete,
    /// `GET`, and `HEAD` answered alike; `Allow` names `GET`.
    GetOrHead,
    /// Every method: forward auth describes a request, it does not act.
    Any,
}

impl Verb {
    fn accepts(self, method: &Method) -> bool {
        match self {
            Verb::Get => method == Method::GET,
            Verb::Post => method == Method::POST,
            Verb::Patch => method == Method::PATCH,
            Verb::Delete => method == Method::DELETE,
            Verb::GetOrHead => method == Method::GET || method == Method::HEAD,
            Verb::Any => true,
        }
    }

    /// As `Allow` spells it.
    fn name(self) -> &'static str {
        match self {
            Verb::Get | Verb::GetOrHead => "GET",
            Verb::Post => "POST",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
            Verb::Any => "*",
        }
    }

    /// As `openapi.json` spells the operation (`/auth/verify` is documented as GET).
    pub fn documented_as(self) -> &'static str {
        match self {
            Verb::Get | Verb::GetOrHead | Verb::Any => "get",
            Verb::Post => "post",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// Who may call a route, and the handler that answers once they are known.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Anyone; no credential is looked at.
    Anyone(for<'a> fn(&'a Call<'a>) -> Admitted<'a>),
    /// Anyone, in the tenant the request names (`X-Tenant-ID`, else the default).
    InTenant(for<'a> fn(&'a Call<'a>, Tenant) -> Admitted<'a>),
    /// A JWT session (the account routes take no API key).
    Session(for<'a> fn(&'a Call<'a>, Arc<Identity>) -> Admitted<'a>),
    /// A JWT session; an `X-Tenant-ID` must name its tenant.
    SessionInTenant(for<'a> fn(&'a Call<'a>, Arc<Identity>) -> Admitted<'a>),
    /// A JWT or an API key; an `X-Tenant-ID` must name its tenant.
    AnyInTenant(for<'a> fn(&'a Call<'a>, Arc<Identity>) -> Admitted<'a>),
}

impl Handler {
    /// Whether the route authenticates a caller before its handler runs.
    pub fn has_caller(self) -> bool {
        matches!(
            self,
            Handler::Session(_) | Handler::SessionInTenant(_) | Handler::AnyInTenant(_)
        )
    }
}

/// One row of the table.
#[derive(Clone, Copy)]
pub struct Route {
    pub verb: Verb,
    /// Below the auth prefix: literal segments, one `{name}` segment at
    /// most, or a final `{*rest}` of any segments (none included).
    pub path: &'static str,
    /// Metrics label (`portcullis_requests_total{route=…}`, the access log).
    pub label: &'static str,
    /// Anyone may call it: rate limited per client IP (`app.ip_limits`).
    pub public: bool,
    /// The permission the caller's token must grant (the admin API).
    pub permission: Option<&'static str>,
    pub handler: Handler,
    /// Counts a request refused before the handler ran (tenant, body) in
    /// the metric the handler keeps (`portcullis_logins_total`, …).
    pub refused: Option<fn(&Error)>,
}

impl Route {
    const fn new(verb: Verb, path: &'static str, label: &'static str, handler: Handler) -> Self {
        Route {
            verb,
            path,
            label,
            public: false,
            permission: None,
            handler,
            refused: None,
        }
    }

    const fn public(mut self) -> Self {
        self.public = true;
        self
    }

    const fn permission(mut self, permission: &'static str) -> Self {
        self.permission = Some(permission);
        self
    }

    const fn refused(mut self, count: fn(&Error)) -> Self {
        self.refused = Some(count);
        self
    }

    /// The `openapi.json` operation of the route: path and method.
    pub fn operation(&self) -> (String, &'static str) {
        let below = match self.path.find("/{*") {
            Some(i) => &self.path[..i],
            None => self.path,
        };
        (format!("/auth{below}"), self.verb.documented_as())
    }

    /// Runs the route: the caller (and its permission) or the tenant, the
    /// body, then the handler.
    async fn run(&self, c: &Call<'_>) -> Result<HttpResponse, Error> {
        match self.admit(c).await {
            Ok(answer) => answer.await,
            Err(e) => {
                if let Some(count) = self.refused {
                    count(&e);
                }
                Err(e)
            }
        }
    }

    /// Everything before the handler: who calls, and the body.
    async fn admit<'a>(&self, c: &'a Call<'a>) -> Admitted<'a> {
        match self.handler {
            Handler::Anyone(f) => f(c),
            Handler::InTenant(f) => {
                let tenant = c.app.tenants.resolve(c.req.header(TENANT_HEADER)).await?;
                f(c, tenant)
            }
            Handler::Session(f) => {
                let who = session(c).await?;
                self.authorize(&who)?;
                f(c, who)
            }
            Handler::SessionInTenant(f) => {
                let who = session(c).await?;
                in_tenant(c, &who).await?;
                self.authorize(&who)?;
                f(c, who)
            }
            Handler::AnyInTenant(f) => {
                let who = any_credential(c).await?;
                in_tenant(c, &who).await?;
                self.authorize(&who)?;
                f(c, who)
            }
        }
    }

    fn authorize(&self, who: &Identity) -> Result<(), Error> {
        match self.permission {
            Some(p) if !grants(&who.permissions, p) => Err(Error::Forbidden),
            _ => Ok(()),
        }
    }
}

/// Every route under the auth prefix. Rows of one path share its label and
/// its rate limit, and their order is the order of `Allow`.
pub static ROUTES: &[Route] = &[
    // sessions (src/auth/session.rs)
    Route::new(
        Verb::Post,
        "/register",
        "auth_register",
        Handler::InTenant(|c, t| {
            // a closed registration is refused before the body is read
            session::registration_open(c.app)?;
            json_as(c, t, session::register)
        }),
    )
    .public(),
    Route::new(
        Verb::Post,
        "/login",
        "auth_login",
        Handler::InTenant(|c, t| json_as(c, t, session::login)),
    )
    .public()
    .refused(session::login_refused),
    Route::new(
        Verb::Post,
        "/refresh",
        "auth_refresh",
        Handler::Anyone(|c| json(c, session::refresh)),
    )
    .public()
    .refused(session::refresh_refused),
    Route::new(
        Verb::Post,
        "/logout",
        "auth_logout",
        Handler::Session(|c, w| json_as(c, w, session::logout)),
    ),
    Route::new(
        Verb::Post,
        "/logout-all",
        "auth_logout_all",
        Handler::Session(|c, w| bare_as(c, w, session::logout_all)),
    ),
    // the caller's account (src/auth/account.rs)
    Route::new(
        Verb::Get,
        "/me",
        "auth_me",
        Handler::AnyInTenant(|c, w| bare_as(c, w, account::get_me)),
    ),
    Route::new(
        Verb::Patch,
        "/me",
        "auth_me",
        Handler::SessionInTenant(|c, w| json_as(c, w, account::patch_me)),
    ),
    Route::new(
        Verb::Post,
        "/change-password",
        "auth_change_password",
        Handler::Session(|c, w| json_as(c, w, account::change_password)),
    ),
    // MFA (src/auth/mfa.rs)
    Route::new(
        Verb::Post,
        "/mfa/enable",
        "auth_mfa_enable",
        Handler::Session(|c, w| bare_as(c, w, mfa::enable)),
    ),
    Route::new(
        Verb::Post,
        "/mfa/confirm",
        "auth_mfa_confirm",
        Handler::Session(|c, w| json_as(c, w, mfa::confirm)),
    ),
    Route::new(
        Verb::Post,
        "/mfa/disable",
        "auth_mfa_disable",
        Handler::Session(|c, w| json_as(c, w, mfa::disable)),
    ),
    Route::new(
        Verb::Post,
        "/mfa/backup-codes",
        "auth_mfa_backup_codes",
        Handler::Session(|c, w| json_as(c, w, mfa::regenerate_backup_codes)),
    ),
    Route::new(
        Verb::Post,
        "/mfa/verify",
        "auth_mfa_verify",
        Handler::Anyone(|c| json(c, mfa::verify)),
    )
    .public()
    .refused(mfa::verify_refused),
    // single-use tokens (src/auth/account.rs)
    Route::new(
        Verb::Post,
        "/verify-email",
        "auth_verify_email",
        Handler::Anyone(|c| json(c, account::verify_email)),
    )
    .public(),
    Route::new(
        Verb::Post,
        "/password/forgot",
        "auth_password_forgot",
        Handler::InTenant(|c, t| json_as(c, t, account::forgot_password)),
    )
    .public(),
    Route::new(
        Verb::Post,
        "/password/reset",
        "auth_password_reset",
        Handler::Anyone(|c| json(c, account::reset_password)),
    )
    .public(),
    Route::new(
        Verb::Post,
        "/invite/accept",
        "auth_invite_accept",
        Handler::Anyone(|c| json(c, account::accept_invite)),
    )
    .public(),
    // API keys (src/auth/api_keys.rs)
    Route::new(
        Verb::Get,
        "/api-keys",
        "auth_api_keys",
        Handler::SessionInTenant(|c, w| bare_as(c, w, api_keys::list)),
    ),
    Route::new(
        Verb::Post,
        "/api-keys",
        "auth_api_keys",
        Handler::SessionInTenant(|c, w| json_as(c, w, api_keys::create)),
    ),
    Route::new(
        Verb::Delete,
        "/api-keys/{id}",
        "auth_api_key",
        Handler::SessionInTenant(|c, w| param_as(c, w, api_keys::revoke)),
    ),
    // passkeys (src/auth/passkeys.rs)
    Route::new(
        Verb::Post,
        "/passkeys/register/begin",
        "auth_passkeys_register_begin",
        Handler::Session(|c, w| bare_as(c, w, passkeys::register_begin)),
    ),
    Route::new(
        Verb::Post,
        "/passkeys/register/finish",
        "auth_passkeys_register_finish",
        Handler::Session(|c, w| json_as(c, w, passkeys::register_finish)),
    ),
    Route::new(
        Verb::Get,
        "/passkeys",
        "auth_passkeys",
        Handler::Session(|c, w| bare_as(c, w, passkeys::list)),
    ),
    Route::new(
        Verb::Patch,
        "/passkeys/{id}",
        "auth_passkey",
        Handler::Session(|c, w| param_json_as(c, w, passkeys::rename)),
    ),
    Route::new(
        Verb::Delete,
        "/passkeys/{id}",
        "auth_passkey",
        Handler::Session(|c, w| param_json_as(c, w, passkeys::delete)),
    ),
    Route::new(
        Verb::Post,
        "/passkeys/login/begin",
        "auth_passkeys_login_begin",
        Handler::InTenant(|c, t| json_as(c, t, passkeys::login_begin)),
    )
    .public(),
    Route::new(
        Verb::Post,
        "/passkeys/login/finish",
        "auth_passkeys_login_finish",
        Handler::Anyone(|c| json(c, passkeys::login_finish)),
    )
    .public(),
    Route::new(
        Verb::Post,
        "/passkeys/mfa/begin",
        "auth_passkeys_mfa_begin",
        Handler::Anyone(|c| json(c, passkeys::mfa_begin)),
    )
    .public(),
    Route::new(
        Verb::Post,
        "/passkeys/mfa/finish",
        "auth_passkeys_mfa_finish",
        Handler::Anyone(|c| json(c, passkeys::mfa_finish)),
    )
    .public(),
    // login with an external OpenID Provider (src/auth/oidc.rs)
    Route::new(
        Verb::Get,
        "/oidc/{provider}/start",
        "auth_oidc_start",
        Handler::Anyone(|c| Ok(rendered(oidc::start(c.app, c.req, c.param)))),
    )
    .public(),
    Route::new(
        Verb::Get,
        "/oidc/{provider}/callback",
        "auth_oidc_callback",
        Handler::Anyone(|c| Ok(rendered(oidc::callback(c.app, c.req, c.param)))),
    )
    .public(),
    Route::new(
        Verb::Post,
        "/oidc/token",
        "auth_oidc_token",
        Handler::Anyone(|c| json(c, oidc::token)),
    )
    .public(),
    // forward auth (src/auth/forward_auth.rs); Envoy's path_prefix appends the path
    Route::new(
        Verb::Any,
        "/verify/{*path}",
        "auth_verify",
        Handler::Anyone(|c| Ok(Box::pin(forward_auth::verify(c.app, c.req)))),
    ),
    // the OpenAPI document (src/auth/openapi.rs)
    Route::new(
        Verb::GetOrHead,
        "/openapi.json",
        "auth_openapi",
        Handler::Anyone(|_| Ok(Box::pin(async { Ok(openapi::response()) }))),
    ),
    // the admin API (src/auth/admin.rs)
    Route::new(
        Verb::Get,
        "/admin/users",
        "auth_admin_users",
        Handler::SessionInTenant(|c, w| bare_as(c, w, admin::list_users)),
    )
    .permission("user:read"),
    Route::new(
        Verb::Post,
        "/admin/users",
        "auth_admin_users",
        Handler::SessionInTenant(|c, w| json_as(c, w, admin::create_user)),
    )
    .permission("user:write"),
    Route::new(
        Verb::Get,
        "/admin/users/{id}",
        "auth_admin_user",
        Handler::SessionInTenant(|c, w| param_as(c, w, admin::get_user)),
    )
    .permission("user:read"),
    Route::new(
        Verb::Patch,
        "/admin/users/{id}",
        "auth_admin_user",
        Handler::SessionInTenant(|c, w| param_json_as(c, w, admin::patch_user)),
    )
    .permission("user:write"),
    Route::new(
        Verb::Delete,
        "/admin/users/{id}",
        "auth_admin_user",
        Handler::SessionInTenant(|c, w| param_as(c, w, admin::delete_user)),
    )
    .permission("user:write"),
    Route::new(
        Verb::Get,
        "/admin/users/{id}/identities",
        "auth_admin_identities",
        Handler::SessionInTenant(|c, w| param_as(c, w, oidc::list_identities)),
    )
    .permission("user:read"),
    Route::new(
        Verb::Delete,
        "/admin/identities/{id}",
        "auth_admin_identity",
        Handler::SessionInTenant(|c, w| param_as(c, w, oidc::unlink_identity)),
    )
    .permission("user:write"),
    Route::new(
        Verb::Post,
        "/admin/users/{id}/unlock",
        "auth_admin_unlock",
        Handler::SessionInTenant(|c, w| param_as(c, w, admin::unlock)),
    )
    .permission("user:write"),
    Route::new(
        Verb::Post,
        "/admin/users/{id}/mfa/reset",
        "auth_admin_mfa_reset",
        Handler::SessionInTenant(|c, w| param_as(c, w, admin::mfa_reset)),
    )
    .permission("user:write"),
    Route::new(
        Verb::Get,
        "/admin/roles",
        "auth_admin_roles",
        Handler::SessionInTenant(|c, w| bare_as(c, w, admin::list_roles)),
    )
    .permission("role:read"),
    Route::new(
        Verb::Post,
        "/admin/roles",
        "auth_admin_roles",
        Handler::SessionInTenant(|c, w| json_as(c, w, admin::create_role)),
    )
    .permission("role:write"),
    Route::new(
        Verb::Patch,
        "/admin/roles/{name}",
        "auth_admin_role",
        Handler::SessionInTenant(|c, w| param_json_as(c, w, admin::patch_role)),
    )
    .permission("role:write"),
    Route::new(
        Verb::Delete,
        "/admin/roles/{name}",
        "auth_admin_role",
        Handler::SessionInTenant(|c, w| param_as(c, w, admin::delete_role)),
    )
    .permission("role:write"),
    Route::new(
        Verb::Get,
        "/admin/audit",
        "auth_admin_audit",
        Handler::SessionInTenant(|c, w| bare_as(c, w, admin::audit_log)),
    )
    .permission("audit:read"),
];

/// `Allow` of each row's path, by row: the methods of the path's rows in
/// table order. Built once; `Error::MethodNotAllowed` wants a `&'static str`.
static ALLOW: LazyLock<Vec<String>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|route| {
            let mut names: Vec<&str> = Vec::new();
            for r in ROUTES.iter().filter(|r| r.path == route.path) {
                if !names.contains(&r.verb.name()) {
                    names.push(r.verb.name());
                }
            }
            names.join(", ")
        })
        .collect()
});

/// The `{…}` segment of `pattern` in `path` (empty when the pattern has
/// none), or `None` when the pattern does not match. `path` has no trailing
/// slash.
fn matches<'p>(pattern: &str, path: &'p str) -> Option<&'p str> {
    let mut param = "";
    let mut segments = path.split('/');
    for want in pattern.split('/') {
        if want.starts_with("{*") {
            return Some(param);
        }
        let got = segments.next()?;
        if want.starts_with('{') {
            if got.is_empty() {
                return None;
            }
            param = got;
        } else if want != got {
            return None;
        }
    }
    segments.next().is_none().then_some(param)
}

/// The rows whose pattern matches `path` (trailing slashes do not count),
/// each with its index and the `{…}` segment.
fn rows(path: &str) -> impl Iterator<Item = (usize, &'static Route, &str)> + Clone {
    let path = path.trim_end_matches('/');
    ROUTES
        .iter()
        .enumerate()
        .filter_map(move |(i, r)| matches(r.path, path).map(|param| (i, r, param)))
}

/// Answers one `/auth` request; returns the response and the route label.
pub async fn handle(app: &Arc<App>, req: &AuthRequest) -> (HttpResponse, &'static str) {
    let (result, label) = answer(app, req).await;
    (result.unwrap_or_else(|e| e.render(&req.request_id)), label)
}

async fn answer(app: &Arc<App>, req: &AuthRequest) -> (Result<HttpResponse, Error>, &'static str) {
    let mut found = rows(&req.path);
    let Some((first, path_row, _)) = found.clone().next() else {
        return (Err(Error::NotFound), UNKNOWN_LABEL);
    };
    if path_row.public
        && let Err(e) = app.ip_limits.check(&req.client_ip.to_string()).await
    {
        return (Err(e), path_row.label);
    }
    let Some((_, route, param)) = found.find(|(_, r, _)| r.verb.accepts(&req.method)) else {
        let allow = ALLOW[first].as_str();
        return (Err(Error::MethodNotAllowed { allow }), path_row.label);
    };
    let call = Call { app, req, param };
    (route.run(&call).await, route.label)
}

/// The caller's JWT session, noted on the request for the access log.
async fn session(c: &Call<'_>) -> Result<Arc<Identity>, Error> {
    let who = c
        .app
        .pipeline
        .authenticators
        .require_session(&c.req.headers)
        .await?;
    Ok(note_caller(c.req, who.identity.clone()))
}

/// The caller's credential, JWT or API key, noted likewise.
async fn any_credential(c: &Call<'_>) -> Result<Arc<Identity>, Error> {
    let who = c
        .app
        .pipeline
        .authenticators
        .require_any(&c.req.headers)
        .await?;
    Ok(note_caller(c.req, who.identity.clone()))
}

/// An `X-Tenant-ID` on an authenticated request must name the caller's tenant.
async fn in_tenant(c: &Call<'_>, who: &Identity) -> Result<(), Error> {
    c.app
        .tenants
        .check_matches(c.req.header(TENANT_HEADER), who.tenant_id)
        .await
}

// The adapters: parse the body (if the handler takes one), call the handler,
// render its reply. `A` is `App` or `Arc<App>`, whichever the handler takes.

/// `handler(app, req, body)`.
fn json<'a, A, B, R, Fut>(
    c: &'a Call<'a>,
    handler: fn(&'a A, &'a AuthRequest, B) -> Fut,
) -> Admitted<'a>
where
    A: ?Sized + 'a,
    Arc<App>: Borrow<A>,
    B: DeserializeOwned + 'a,
    R: Serialize,
    Fut: Future<Output = Result<Reply<R>, Error>> + Send + 'a,
{
    let body = parse_body(c.req)?;
    Ok(rendered(handler(c.app.borrow(), c.req, body)))
}

/// `handler(app, req, who, body)`: `who` is the caller or the tenant.
fn json_as<'a, A, W, B, R, Fut>(
    c: &'a Call<'a>,
    who: W,
    handler: fn(&'a A, &'a AuthRequest, W, B) -> Fut,
) -> Admitted<'a>
where
    A: ?Sized + 'a,
    Arc<App>: Borrow<A>,
    B: DeserializeOwned + 'a,
    R: Serialize,
    Fut: Future<Output = Result<Reply<R>, Error>> + Send + 'a,
{
    let body = parse_body(c.req)?;
    Ok(rendered(handler(c.app.borrow(), c.req, who, body)))
}

/// `handler(app, req, who)`: no body is read.
fn bare_as<'a, W, R, Fut>(
    c: &'a Call<'a>,
    who: W,
    handler: fn(&'a App, &'a AuthRequest, W) -> Fut,
) -> Admitted<'a>
where
    R: Serialize,
    Fut: Future<Output = Result<Reply<R>, Error>> + Send + 'a,
{
    Ok(rendered(handler(c.app, c.req, who)))
}

/// `handler(app, req, who, param)`: no body is read.
fn param_as<'a, W, R, Fut>(
    c: &'a Call<'a>,
    who: W,
    handler: fn(&'a App, &'a AuthRequest, W, &'a str) -> Fut,
) -> Admitted<'a>
where
    R: Serialize,
    Fut: Future<Output = Result<Reply<R>, Error>> + Send + 'a,
{
    Ok(rendered(handler(c.app, c.req, who, c.param)))
}

/// `handler(app, req, who, param, body)`.
fn param_json_as<'a, W, B, R, Fut>(
    c: &'a Call<'a>,
    who: W,
    handler: fn(&'a App, &'a AuthRequest, W, &'a str, B) -> Fut,
) -> Admitted<'a>
where
    B: DeserializeOwned + 'a,
    R: Serialize,
    Fut: Future<Output = Result<Reply<R>, Error>> + Send + 'a,
{
    let body = parse_body(c.req)?;
    Ok(rendered(handler(c.app, c.req, who, c.param, body)))
}

fn rendered<'a, R, Fut>(reply: Fut) -> Answer<'a>
where
    R: Serialize,
    Fut: Future<Output = Result<Reply<R>, Error>> + Send + 'a,
{
    Box::pin(async move { reply.await.map(Reply::render) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path a request would take to the row: each `{…}` as `x`.
    fn example(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|s| match s {
                s if s.starts_with("{*") => "a/b",
                s if s.starts_with('{') => "x",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn found(path: &str) -> Vec<&'static str> {
        rows(path).map(|(_, r, _)| r.path).collect()
    }

    #[test]
    fn every_path_reaches_its_own_rows_only() {
        for route in ROUTES {
            let path = example(route.path);
            for (_, r, _) in rows(&path) {
                assert_eq!(r.path, route.path, "{path}");
            }
            let same: Vec<&Route> = ROUTES.iter().filter(|r| r.path == route.path).collect();
            assert_eq!(found(&path).len(), same.len(), "{path}");
            // rows of one path share label and rate limit, and no method twice
            for r in &same {
                assert_eq!(r.label, route.label, "{}", route.path);
                assert_eq!(r.public, route.public, "{}", route.path);
                assert!(
                    r.verb != route.verb || std::ptr::eq(*r, route),
                    "{} twice",
                    route.path
                );
            }
            assert!(
                route.path.matches('{').count() <= 1,
                "{}: one parameter at most",
                route.path
            );
        }
    }

    #[test]
    fn callers_and_permissions_agree() {
        for route in ROUTES {
            // a public route has no caller; a permission needs one
            if route.public {
                assert!(!route.handler.has_caller(), "{}", route.path);
            }
            if route.permission.is_some() {
                assert!(route.handler.has_caller(), "{}", route.path);
            }
            if route.path.starts_with("/admin/") {
                assert!(route.permission.is_some(), "{} unguarded", route.path);
            }
        }
    }

    /// Login, refresh and the MFA second step count every request that
    /// reaches them, a body or tenant the table refused included.
    #[test]
    fn refusals_before_the_handler_are_counted() {
        fn row(path: &str) -> &'static Route {
            rows(path).next().unwrap().1
        }
        for path in ["/login", "/refresh", "/mfa/verify"] {
            assert!(row(path).refused.is_some(), "{path}");
        }
        let invalid = || {
            crate::metrics::LOGINS
                .with_label_values(&["invalid_request"])
                .get()
        };
        let before = invalid();
        (row("/login").refused.unwrap())(&Error::bad_request("the body is not valid JSON"));
        assert!(invalid() > before);
    }

    #[test]
    fn paths_and_trailing_slashes() {
        assert_eq!(found("/login"), ["/login"]);
        assert_eq!(found("/login/"), ["/login"]);
        assert!(found("/nope").is_empty());
        assert!(found("/").is_empty());
        assert!(found("").is_empty());
        assert_eq!(found("/api-keys"), ["/api-keys", "/api-keys"]);
        assert_eq!(found("/api-keys/abc"), ["/api-keys/{id}"]);
        assert_eq!(found("/api-keys/abc/"), ["/api-keys/{id}"]);
        assert!(found("/api-keys/a/b").is_empty());
        assert_eq!(found("/verify"), ["/verify/{*path}"]);
        assert_eq!(found("/verify/"), ["/verify/{*path}"]);
        assert_eq!(found("/verify/api/x"), ["/verify/{*path}"]);
        assert!(found("/verifyx").is_empty());
        assert_eq!(found("/openapi.json/"), ["/openapi.json"]);
    }

    #[test]
    fn admin_paths() {
        assert_eq!(found("/admin/users").len(), 2);
        let (_, r, id) = rows("/admin/users/abc").next().unwrap();
        assert_eq!((r.path, id), ("/admin/users/{id}", "abc"));
        let (_, r, id) = rows("/admin/users/abc/mfa/reset").next().unwrap();
        assert_eq!((r.path, id), ("/admin/users/{id}/mfa/reset", "abc"));
        let (_, r, name) = rows("/admin/roles/ops").next().unwrap();
        assert_eq!((r.path, name), ("/admin/roles/{name}", "ops"));
        assert!(found("/admin/nope").is_empty());
        assert!(found("/admin").is_empty());
        assert!(found("/admins").is_empty());
        assert!(found("/admin/roles/member/extra").is_empty());
        assert!(found("/admin/users/abc/nope").is_empty());
    }

    fn allow(path: &str) -> &'static str {
        ALLOW[rows(path).next().unwrap().0].as_str()
    }

    /// `Allow` as the routers before the table spelled it.
    #[test]
    fn allow_lists_the_methods_of_the_path() {
        assert_eq!(allow("/login"), "POST");
        assert_eq!(allow("/me"), "GET, PATCH");
        assert_eq!(allow("/api-keys"), "GET, POST");
        assert_eq!(allow("/api-keys/x"), "DELETE");
        assert_eq!(allow("/openapi.json"), "GET");
        assert_eq!(allow("/admin/users"), "GET, POST");
        assert_eq!(allow("/admin/users/x"), "GET, PATCH, DELETE");
        assert_eq!(allow("/admin/users/x/unlock"), "POST");
        assert_eq!(allow("/admin/users/x/mfa/reset"), "POST");
        assert_eq!(allow("/admin/roles"), "GET, POST");
        assert_eq!(allow("/admin/roles/x"), "PATCH, DELETE");
        assert_eq!(allow("/admin/audit"), "GET");
    }

    #[test]
    fn verbs() {
        assert!(Verb::GetOrHead.accepts(&Method::HEAD));
        assert!(!Verb::Get.accepts(&Method::HEAD));
        assert!(Verb::Any.accepts(&Method::DELETE));
        assert!(!Verb::Post.accepts(&Method::PUT));
    }

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// Every row is an operation of `openapi.json`, and every `/auth`
    /// operation there is a row (`/.well-known/jwks.json` is the proxy's).
    #[test]
    fn the_table_and_the_openapi_document_agree() {
        let doc: serde_json::Value = serde_json::from_str(openapi::DOCUMENT).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let operations: Vec<(String, &str)> = ROUTES.iter().map(Route::operation).collect();
        for (path, method) in &operations {
            let item = paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} missing from openapi.json"));
            assert!(
                item.get(*method).is_some(),
                "{method} {path} missing from openapi.json"
            );
        }
        for (path, item) in paths {
            if !path.starts_with("/auth/") {
                assert_eq!(path, "/.well-known/jwks.json");
                continue;
            }
            for method in item.as_object().unwrap().keys() {
                if METHODS.contains(&method.as_str()) {
                    assert!(
                        operations.contains(&(path.clone(), method.as_str())),
                        "{method} {path} is documented but not routed"
                    );
                }
            }
        }
    }
}
