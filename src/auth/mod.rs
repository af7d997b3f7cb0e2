//! The `/auth` routes the sidecar answers itself (SPEC §6): the router maps
//! method + path to one handler in [`session`], [`account`], [`api_keys`] or
//! [`forward_auth`]; handlers are plain async functions from an [`AuthRequest`]
//! to an [`HttpResponse`] or an [`Error`]. JSON bodies are parsed here, the
//! user view lives in [`views`].

use std::sync::Arc;

use http::Method;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::error::Error;
use crate::http_types::{AuthRequest, HttpResponse};
use crate::vocab::Identity;

pub mod account;
pub mod admin;
pub mod api_keys;
pub mod forward_auth;
pub mod issue;
pub mod mfa;
pub mod openapi;
pub mod session;
pub mod validate;
pub mod views;

/// A route under the auth prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Register,
    Login,
    Refresh,
    Logout,
    LogoutAll,
    Me,
    ChangePassword,
    MfaEnable,
    MfaConfirm,
    MfaDisable,
    MfaBackupCodes,
    MfaVerify,
    VerifyEmail,
    PasswordForgot,
    PasswordReset,
    InviteAccept,
    ApiKeys,
    /// `/api-keys/{id}`
    ApiKey,
    /// `/verify` (and `/verify/<path>` for Envoy's `path_prefix`)
    Verify,
}

impl Route {
    fn find(path: &str) -> Option<Route> {
        let path = path.trim_end_matches('/');
        if path
            .strip_prefix("/api-keys/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        {
            return Some(Route::ApiKey);
        }
        if path.starts_with("/verify/") {
            return Some(Route::Verify);
        }
        Some(match path {
            "/register" => Route::Register,
            "/login" => Route::Login,
            "/refresh" => Route::Refresh,
            "/logout" => Route::Logout,
            "/logout-all" => Route::LogoutAll,
            "/me" => Route::Me,
            "/change-password" => Route::ChangePassword,
            "/mfa/enable" => Route::MfaEnable,
            "/mfa/confirm" => Route::MfaConfirm,
            "/mfa/disable" => Route::MfaDisable,
            "/mfa/backup-codes" => Route::MfaBackupCodes,
            "/mfa/verify" => Route::MfaVerify,
            "/verify-email" => Route::VerifyEmail,
            "/password/forgot" => Route::PasswordForgot,
            "/password/reset" => Route::PasswordReset,
            "/invite/accept" => Route::InviteAccept,
            "/api-keys" => Route::ApiKeys,
            "/verify" => Route::Verify,
            _ => return None,
        })
    }

    /// Metrics label.
    fn label(self) -> &'static str {
        match self {
            Route::Register => "auth_register",
            Route::Login => "auth_login",
            Route::Refresh => "auth_refresh",
            Route::Logout => "auth_logout",
            Route::LogoutAll => "auth_logout_all",
            Route::Me => "auth_me",
            Route::ChangePassword => "auth_change_password",
            Route::MfaEnable => "auth_mfa_enable",
            Route::MfaConfirm => "auth_mfa_confirm",
            Route::MfaDisable => "auth_mfa_disable",
            Route::MfaBackupCodes => "auth_mfa_backup_codes",
            Route::MfaVerify => "auth_mfa_verify",
            Route::VerifyEmail => "auth_verify_email",
            Route::PasswordForgot => "auth_password_forgot",
            Route::PasswordReset => "auth_password_reset",
            Route::InviteAccept => "auth_invite_accept",
            Route::ApiKeys => "auth_api_keys",
            Route::ApiKey => "auth_api_key",
            Route::Verify => "auth_verify",
        }
    }

    /// Routes anyone may call: rate limited per client IP.
    fn is_public(self) -> bool {
        matches!(
            self,
            Route::Register
                | Route::Login
                | Route::Refresh
                | Route::MfaVerify
                | Route::VerifyEmail
                | Route::PasswordForgot
                | Route::PasswordReset
                | Route::InviteAccept
        )
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Me => "GET, PATCH",
            Route::ApiKeys => "GET, POST",
            Route::ApiKey => "DELETE",
            _ => "POST",
        }
    }
}

/// Answers one `/auth` request; returns the response and the route label.
pub async fn handle(app: &Arc<App>, req: &AuthRequest) -> (HttpResponse, &'static str) {
    // GET /auth/openapi.json: the committed document (src/auth/openapi.rs).
    if let Some(result) = openapi::handle(req) {
        let response = result.unwrap_or_else(|e| e.render(&req.request_id));
        return (response, openapi::LABEL);
    }
    if let Some((result, label)) = admin::handle(app, req).await {
        return (result.unwrap_or_else(|e| e.render(&req.request_id)), label);
    }
    let Some(route) = Route::find(&req.path) else {
        return (Error::NotFound.render(&req.request_id), "auth_unknown");
    };
    if route.is_public()
        && let Err(e) = app.ip_limits.check(&req.client_ip.to_string())
    {
        return (e.render(&req.request_id), route.label());
    }
    let result = match (route, &req.method) {
        (Route::Register, &Method::POST) => session::register(app, req).await,
        (Route::Login, &Method::POST) => session::login(app, req).await,
        (Route::Refresh, &Method::POST) => session::refresh(app, req).await,
        (Route::Logout, &Method::POST) => session::logout(app, req).await,
        (Route::LogoutAll, &Method::POST) => session::logout_all(app, req).await,
        (Route::Me, &Method::GET) => account::get_me(app, req).await,
        (Route::Me, &Method::PATCH) => account::patch_me(app, req).await,
        (Route::ChangePassword, &Method::POST) => account::change_password(app, req).await,
        (Route::MfaEnable, &Method::POST) => mfa::enable(app, req).await,
        (Route::MfaConfirm, &Method::POST) => mfa::confirm(app, req).await,
        (Route::MfaDisable, &Method::POST) => mfa::disable(app, req).await,
        (Route::MfaBackupCodes, &Method::POST) => mfa::regenerate_backup_codes(app, req).await,
        (Route::MfaVerify, &Method::POST) => mfa::verify(app, req).await,
        (Route::VerifyEmail, &Method::POST) => account::verify_email(app, req).await,
        (Route::PasswordForgot, &Method::POST) => account::forgot_password(app, req).await,
        (Route::PasswordReset, &Method::POST) => account::reset_password(app, req).await,
        (Route::InviteAccept, &Method::POST) => account::accept_invite(app, req).await,
        (Route::ApiKeys, &Method::POST) => api_keys::create(app, req).await,
        (Route::ApiKeys, &Method::GET) => api_keys::list(app, req).await,
        (Route::ApiKey, &Method::DELETE) => api_keys::revoke(app, req).await,
        (Route::Verify, _) => forward_auth::verify(app, req).await,
        _ => Err(Error::MethodNotAllowed {
            allow: route.allow(),
        }),
    };
    let response = result.unwrap_or_else(|e| e.render(&req.request_id));
    (response, route.label())
}

/// The caller's JWT session (the account routes take no API key), noted on
/// the request for the access log.
pub async fn session_caller(app: &App, req: &AuthRequest) -> Result<Arc<Identity>, Error> {
    let who = app
        .pipeline
        .authenticators
        .require_session(&req.headers)
        .await?;
    Ok(note_caller(req, who.identity.clone()))
}

/// The caller's credential, JWT or API key (`GET /auth/me`), noted likewise.
pub async fn any_caller(app: &App, req: &AuthRequest) -> Result<Arc<Identity>, Error> {
    let who = app
        .pipeline
        .authenticators
        .require_any(&req.headers)
        .await?;
    Ok(note_caller(req, who.identity.clone()))
}

/// Remembers who the request authenticated as (first credential wins).
pub fn note_caller(req: &AuthRequest, identity: Arc<Identity>) -> Arc<Identity> {
    let _ = req.caller.set(Arc::clone(&identity));
    identity
}

/// Parses a JSON body into `T`; the error names the offending field.
pub fn parse_body<T: DeserializeOwned>(req: &AuthRequest) -> Result<T, Error> {
    let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &req.body
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::bad_request("the body must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let reason = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the body is not valid JSON".to_string()
            }
            _ => strip_position(&inner.to_string()),
        };
        if path.is_empty() || path == "." {
            if reason.starts_with("missing field") {
                let field = reason.split('`').nth(1).unwrap_or("body").to_string();
                return Error::invalid(&field, format!("{field} is required"));
            }
            Error::bad_request(reason)
        } else {
            Error::invalid(&path, reason)
        }
    })
}

/// serde_json appends " at line 1 column 12"; clients do not need it.
fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)] // fields exist to be parsed
    struct Body {
        email: String,
        age: Option<u32>,
    }

    fn req(body: &str) -> AuthRequest {
        AuthRequest {
            method: Method::POST,
            path: "/x".into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
            client_ip: "127.0.0.1".parse().unwrap(),
            request_id: "r".into(),
            caller: Default::default(),
        }
    }

    fn field(e: Error) -> Option<String> {
        match e {
            Error::InvalidRequest { field, .. } => field,
            other => panic!("expected INVALID_REQUEST, got {other:?}"),
        }
    }

    #[test]
    fn body_errors_name_the_field() {
        assert_eq!(
            field(parse_body::<Body>(&req("{}")).unwrap_err()).as_deref(),
            Some("email")
        );
        assert_eq!(
            field(parse_body::<Body>(&req(r#"{"email": 5}"#)).unwrap_err()).as_deref(),
            Some("email")
        );
        assert_eq!(
            field(parse_body::<Body>(&req(r#"{"email": "a", "age": "x"}"#)).unwrap_err())
                .as_deref(),
            Some("age")
        );
        assert_eq!(
            field(parse_body::<Body>(&req("not json")).unwrap_err()),
            None
        );
        assert_eq!(field(parse_body::<Body>(&req("[1]")).unwrap_err()), None);
        assert!(parse_body::<Body>(&req(r#"{"email": "a", "extra": true}"#)).is_ok());
    }

    /// A path of each route (as the OpenAPI document spells it) and its
    /// methods. The match is exhaustive: a new route does not compile until
    /// it is listed here, and the test then wants it in `openapi.json`.
    fn documented(route: Route) -> (&'static str, &'static [&'static str]) {
        match route {
            Route::Register => ("/auth/register", &["post"]),
            Route::Login => ("/auth/login", &["post"]),
            Route::Refresh => ("/auth/refresh", &["post"]),
            Route::Logout => ("/auth/logout", &["post"]),
            Route::LogoutAll => ("/auth/logout-all", &["post"]),
            Route::Me => ("/auth/me", &["get", "patch"]),
            Route::ChangePassword => ("/auth/change-password", &["post"]),
            Route::MfaEnable => ("/auth/mfa/enable", &["post"]),
            Route::MfaConfirm => ("/auth/mfa/confirm", &["post"]),
            Route::MfaDisable => ("/auth/mfa/disable", &["post"]),
            Route::MfaBackupCodes => ("/auth/mfa/backup-codes", &["post"]),
            Route::MfaVerify => ("/auth/mfa/verify", &["post"]),
            Route::VerifyEmail => ("/auth/verify-email", &["post"]),
            Route::PasswordForgot => ("/auth/password/forgot", &["post"]),
            Route::PasswordReset => ("/auth/password/reset", &["post"]),
            Route::InviteAccept => ("/auth/invite/accept", &["post"]),
            Route::ApiKeys => ("/auth/api-keys", &["get", "post"]),
            Route::ApiKey => ("/auth/api-keys/{id}", &["delete"]),
            Route::Verify => ("/auth/verify", &["get"]),
        }
    }

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(openapi::DOCUMENT).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let all = [
            Route::Register,
            Route::Login,
            Route::Refresh,
            Route::Logout,
            Route::LogoutAll,
            Route::Me,
            Route::ChangePassword,
            Route::MfaEnable,
            Route::MfaConfirm,
            Route::MfaDisable,
            Route::MfaBackupCodes,
            Route::MfaVerify,
            Route::VerifyEmail,
            Route::PasswordForgot,
            Route::PasswordReset,
            Route::InviteAccept,
            Route::ApiKeys,
            Route::ApiKey,
            Route::Verify,
        ];
        for route in all {
            let (path, methods) = documented(route);
            // the listed path is the route's own
            let below = path.strip_prefix("/auth").unwrap().replace("{id}", "x");
            assert_eq!(Route::find(&below), Some(route), "{path}");
            let item = paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} missing from openapi.json"));
            for m in methods {
                assert!(
                    item.get(*m).is_some(),
                    "{m} {path} missing from openapi.json"
                );
            }
        }
        // and the document names nothing the router does not answer
        for path in paths.keys() {
            let Some(below) = path.strip_prefix("/auth") else {
                assert_eq!(path, "/.well-known/jwks.json");
                continue;
            };
            let below = below.replace("{id}", "x").replace("{name}", "x");
            assert!(
                below == openapi::PATH
                    || below.starts_with("/admin/")
                    || Route::find(&below).is_some(),
                "{path} is documented but not routed"
            );
        }
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(Route::find("/login"), Some(Route::Login));
        assert_eq!(Route::find("/login/"), Some(Route::Login));
        assert_eq!(Route::find("/nope"), None);
        assert_eq!(Route::find("/api-keys"), Some(Route::ApiKeys));
        assert_eq!(Route::find("/api-keys/abc"), Some(Route::ApiKey));
        assert_eq!(Route::find("/api-keys/abc/"), Some(Route::ApiKey));
        assert_eq!(Route::find("/api-keys/a/b"), None);
        assert_eq!(Route::find("/verify"), Some(Route::Verify));
        assert_eq!(Route::find("/verify/api/x"), Some(Route::Verify));
        assert_eq!(Route::find("/verifyx"), None);
    }
}
