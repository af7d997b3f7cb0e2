//! Login with an external OpenID Provider (an `[[issuers]]` entry with a
//! `client_id`): authorization code flow with PKCE, `state` and `nonce`
//! (`start`, `callback`), the user linked by subject, else by verified email,
//! else created; then a one-time code for the application, exchanged at
//! `POST /auth/oidc/token` for this sidecar's own tokens, which never travel
//! in a URL. Admins list and remove a user's linked identities.

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::call::Done;
use super::call::Reply;
use super::issue::issue_tokens;
use super::mfa;
use super::session::LoggedIn;
use crate::app::App;
use crate::crypto::{constant_time_eq, digest_hash, random_token, token_digest, token_hash};
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::metrics;
use crate::pipeline::authn::external::ExternalIssuers;
use crate::store::{NewUser, OidcCode, OidcLogin, User, UserIdentity, UserStatus};
use crate::tenancy::TENANT_HEADER;
use crate::vocab::{Identity, now, rfc3339};

/// How long a login may take between `start` and `callback`.
const LOGIN_SECONDS: i64 = 300;
/// How long the application has to exchange its code.
const CODE_SECONDS: i64 = 60;
/// The cookie binding a login to the browser that started it.
const BINDING_COOKIE: &str = "portcullis_oidc";
/// The `amr` of a session begun at an external provider.
pub const AMR_FEDERATED: &str = "fed";

fn param<'q>(q: &'q [(String, String)], name: &str) -> Option<&'q str> {
    q.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The issuer named by the path, if it offers a login (else 400: a 404
/// would read as "no such route").
fn login_issuer<'a>(app: &'a App, name: &str) -> Result<(&'a ExternalIssuers, usize), Error> {
    let unknown = || {
        Error::invalid(
            "provider",
            "no [[issuers]] entry of this name offers a login",
        )
    };
    let issuers = app.external.as_deref().ok_or_else(unknown)?;
    let index = issuers.by_name(name).ok_or_else(unknown)?;
    if issuers.config(index).client_id.is_empty() {
        return Err(unknown());
    }
    Ok((issuers, index))
}

/// `url` with `params` added to its query.
fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        out.append_pair(k, v);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", out.finish())
}

/// The body of a redirect: where it goes (browsers follow `Location`).
#[derive(Debug, Serialize)]
pub struct Redirect {
    location: String,
}

fn redirect(location: String) -> Reply<Redirect> {
    let mut reply = Reply::with_status(
        302,
        Redirect {
            location: location.clone(),
        },
    );
    reply.headers.push(("location".into(), location));
    reply
        .headers
        .push(("cache-control".into(), "no-store".into()));
    reply
}

/// `GET /auth/oidc/{provider}/start?redirect_uri=…[&state=…][&tenant=…]`:
/// 302 to the provider's authorization endpoint.
pub async fn start(app: &App, req: &AuthRequest, provider: &str) -> Result<Reply<Redirect>, Error> {
    let (issuers, index) = login_issuer(app, provider)?;
    let cfg = issuers.config(index);
    let q = req.query_pairs();
    let redirect_uri = param(&q, "redirect_uri")
        .ok_or_else(|| Error::invalid("redirect_uri", "redirect_uri is required"))?;
    // exact match only: a login never ends anywhere else (no open redirect)
    if !cfg.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(Error::invalid(
            "redirect_uri",
            "redirect_uri is not one of this provider's redirect_uris",
        ));
    }
    let app_state = param(&q, "state").unwrap_or("");
    if app_state.len() > 512 {
        return Err(Error::invalid(
            "state",
            "state is longer than 512 characters",
        ));
    }
    let requested = param(&q, "tenant").or(req.header(TENANT_HEADER));
    let tenant = match (requested, cfg.tenant.is_empty()) {
        (Some(name), true) => app.tenants.lookup(name).await?,
        (None, true) => {
            app.tenants
                .lookup(&app.config.tenancy.default_tenant)
                .await?
        }
        // a provider of one tenant logs users into that tenant only
        (requested, false) => {
            let own = app.tenants.lookup(&cfg.tenant).await?;
            if let (Some(name), Some(own)) = (requested, &own) {
                let asked = app
                    .tenants
                    .lookup(name)
                    .await?
                    .ok_or(Error::TenantNotFound)?;
                if asked.id != own.id {
                    return Err(Error::TenantMismatch);
                }
            }
            own
        }
    }
    .ok_or(Error::TenantNotFound)?;
    let endpoints = issuers.login_endpoints(index).await?;
    let (state, nonce, verifier, binding) = (
        random_token(""),
        random_token(""),
        random_token(""),
        random_token(""),
    );
    // PKCE S256: base64url(SHA-256(verifier)), the stored form of a token digest
    let challenge = digest_hash(&token_digest(&verifier));
    app.store
        .create_oidc_login(OidcLogin {
            state_hash: token_hash(&state),
            provider: cfg.name.clone(),
            tenant_id: tenant.id,
            nonce: nonce.clone(),
            verifier,
            redirect_uri: redirect_uri.to_string(),
            app_state: app_state.to_string(),
            binding_hash: token_hash(&binding),
            expires_at: now() + LOGIN_SECONDS,
        })
        .await?;
    let scope = cfg.scopes.join(" ");
    let location = with_query(
        endpoints.authorization,
        &[
            ("response_type", "code"),
            ("client_id", &cfg.client_id),
            ("redirect_uri", &cfg.callback_url),
            ("scope", &scope),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let mut reply = redirect(location);
    reply.headers.push((
        "set-cookie".into(),
        format!(
            "{BINDING_COOKIE}={binding}; Path={}/oidc/{provider}/callback; Max-Age={LOGIN_SECONDS}; HttpOnly; Secure; SameSite=Lax",
            app.config.proxy.auth_prefix
        ),
    ));
    Ok(reply)
}

/// The binding cookie the browser sent back.
fn binding_cookie(req: &AuthRequest) -> Option<&str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BINDING_COOKIE)
        .map(|(_, value)| value.trim())
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// `GET /auth/oidc/{provider}/callback?code=…&state=…`: the provider's
/// answer; 302 to the application's redirect URI with a one-time `code`.
pub async fn callback(
    app: &App,
    req: &AuthRequest,
    provider: &str,
) -> Result<Reply<Redirect>, Error> {
    let (issuers, index) = login_issuer(app, provider)?;
    let result = finish_login(app, req, issuers, index, provider).await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(Error::ExternalLoginFailed(_)) => "failed",
        Err(Error::ProviderUnavailable) => "provider_unavailable",
        Err(Error::AccountDisabled) => "disabled",
        Err(Error::StoreUnavailable) => "store_unavailable",
        Err(_) => "error",
    };
    metrics::OIDC_LOGINS
        .with_label_values(&[issuers.config(index).name.as_str(), outcome])
        .inc();
    result
}

async fn finish_login(
    app: &App,
    req: &AuthRequest,
    issuers: &ExternalIssuers,
    index: usize,
    provider: &str,
) -> Result<Reply<Redirect>, Error> {
    let cfg = issuers.config(index);
    let failed = |why: &str| Error::ExternalLoginFailed(why.to_string());
    let q = req.query_pairs();
    let state = param(&q, "state").ok_or_else(|| failed("no state"))?;
    // single use: the login is gone whatever happens next
    let login = app
        .store
        .take_oidc_login(&token_hash(state))
        .await?
        .filter(|l| l.provider == cfg.name)
        .ok_or_else(|| failed("unknown or already used state"))?;
    if login.expires_at < now() {
        return Err(failed("the login expired"));
    }
    let bound = binding_cookie(req)
        .is_some_and(|b| constant_time_eq(token_hash(b).as_bytes(), login.binding_hash.as_bytes()));
    if !bound {
        return Err(failed("this browser did not start the login"));
    }
    if let Some(error) = param(&q, "error") {
        return Err(Error::ExternalLoginFailed(format!(
            "the provider answered {}",
            printable(error)
        )));
    }
    let code = param(&q, "code").ok_or_else(|| failed("no code"))?;
    let id_token = exchange(issuers, index, code, &login.verifier).await?;
    let claims = issuers
        .verify_id_token(index, &id_token, &login.nonce)
        .await?;
    let user = local_user(app, req, cfg, login.tenant_id, &claims).await?;
    let code = random_token("oc_");
    app.store
        .create_oidc_code(OidcCode {
            hash: code_hash(&code, &login.redirect_uri),
            user_id: user.id,
            tenant_id: user.tenant_id,
            provider: cfg.name.clone(),
            expires_at: now() + CODE_SECONDS,
        })
        .await?;
    let mut params = vec![("code", code.as_str())];
    if !login.app_state.is_empty() {
        params.push(("state", login.app_state.as_str()));
    }
    let mut reply = redirect(with_query(&login.redirect_uri, &params));
    reply.headers.push((
        "set-cookie".into(),
        format!(
            "{BINDING_COOKIE}=; Path={}/oidc/{provider}/callback; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
            app.config.proxy.auth_prefix
        ),
    ));
    Ok(reply)
}

/// A provider's error code as we repeat it: letters, digits, `_` and
/// spaces, at most 64 (it comes from a URL or a body we do not control).
fn printable(error: &str) -> String {
    error
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ' ')
        .take(64)
        .collect()
}

/// A code bound to the redirect URI it is handed to.
fn code_hash(code: &str, redirect_uri: &str) -> String {
    token_hash(&format!("{code}\n{redirect_uri}"))
}

/// The provider's token endpoint: the code and the PKCE verifier for the ID token.
async fn exchange(
    issuers: &ExternalIssuers,
    index: usize,
    code: &str,
    verifier: &str,
) -> Result<String, Error> {
    let cfg = issuers.config(index);
    let endpoints = issuers.login_endpoints(index).await?;
    let mut fields = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", cfg.callback_url.as_str()),
        ("code_verifier", verifier),
    ];
    if endpoints.client_authorization.is_none() {
        fields.push(("client_id", cfg.client_id.as_str()));
    }
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut headers = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("accept", "application/json"),
    ];
    if let Some(basic) = endpoints.client_authorization {
        headers.push(("authorization", basic));
    }
    let answer = endpoints
        .token
        .send(
            "POST",
            &headers,
            Some(form.into()),
            std::time::Duration::from_millis(cfg.fetch_timeout_ms),
            256 * 1024,
        )
        .await
        .map_err(|e| {
            tracing::warn!(issuer = %cfg.name, error = %e, "token endpoint did not answer");
            Error::ProviderUnavailable
        })?;
    if answer.status != 200 {
        #[derive(Deserialize)]
        struct Refusal {
            error: Option<String>,
        }
        let error = serde_json::from_slice::<Refusal>(&answer.body)
            .ok()
            .and_then(|r| r.error)
            .unwrap_or_else(|| format!("HTTP {}", answer.status));
        return Err(Error::ExternalLoginFailed(format!(
            "the provider refused the code ({})",
            printable(&error)
        )));
    }
    serde_json::from_slice::<TokenAnswer>(&answer.body)
        .ok()
        .and_then(|t| t.id_token)
        .ok_or_else(|| Error::ExternalLoginFailed("the provider sent no ID token".into()))
}

/// The local user of a verified ID token: linked by subject, else by
/// verified email, else created (when allowed).
async fn local_user(
    app: &App,
    req: &AuthRequest,
    cfg: &crate::config::IssuerConfig,
    tenant_id: Uuid,
    claims: &serde_json::Value,
) -> Result<User, Error> {
    let failed = |why: &str| Error::ExternalLoginFailed(why.to_string());
    let subject = claims["sub"].as_str().ok_or_else(|| failed("no sub"))?;
    let email = claims["email"]
        .as_str()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let verified = claims["email_verified"].as_bool() == Some(true);
    let linked = match app.store.linked_user(tenant_id, &cfg.name, subject).await? {
        Some(id) => app.store.user_by_id(tenant_id, id).await?,
        None => None,
    };
    let (user, event) = match linked {
        Some(user) => (user, "login"),
        None => {
            if email.is_empty() {
                return Err(failed("the ID token has no email (ask for scope email)"));
            }
            // an address the provider has not verified is nobody's proof
            if !verified {
                app.audit
                    .record(
                        Some(req),
                        Some(tenant_id),
                        None,
                        "login.oidc",
                        "failure",
                        json!({ "provider": cfg.name, "reason": "email_not_verified" }),
                    )
                    .await;
                return Err(failed("the provider has not verified this email"));
            }
            match app.store.user_by_email(tenant_id, &email).await? {
                Some(user) => (user, "linked"),
                None if cfg.create_users => {
                    let user = app
                        .store
                        .create_user(NewUser {
                            tenant_id,
                            email: email.clone(),
                            password_hash: None,
                            first_name: claims["given_name"].as_str().map(str::to_string),
                            family_name: claims["family_name"].as_str().map(str::to_string),
                            name: claims["name"].as_str().map(str::to_string),
                            email_verified: true,
                            roles: cfg.default_roles.clone(),
                        })
                        .await?;
                    (user, "created")
                }
                None => return Err(failed("no account has this email")),
            }
        }
    };
    if user.status == UserStatus::Disabled {
        return Err(Error::AccountDisabled);
    }
    let at = now();
    app.store
        .link_identity(UserIdentity {
            id: Uuid::now_v7(),
            tenant_id,
            user_id: user.id,
            provider: cfg.name.clone(),
            subject: subject.to_string(),
            email,
            created_at: at,
            last_login_at: at,
        })
        .await?;
    app.audit
        .record(
            Some(req),
            Some(tenant_id),
            Some(user.id),
            "login.oidc",
            "success",
            json!({ "provider": cfg.name, "account": event }),
        )
        .await;
    Ok(user)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBody {
    code: Option<String>,
    redirect_uri: Option<String>,
}

/// `POST /auth/oidc/token {code, redirectUri}`: the one-time code for the
/// token response of SPEC §5 (or the MFA challenge of a user with MFA).
pub async fn token(
    app: &App,
    req: &AuthRequest,
    body: TokenBody,
) -> Result<Reply<LoggedIn>, Error> {
    let code = body
        .code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::invalid("code", "code is required"))?;
    let redirect_uri = body
        .redirect_uri
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::invalid("redirectUri", "redirectUri is required"))?;
    let failed = |why: &str| Error::ExternalLoginFailed(why.to_string());
    let found = app
        .store
        .take_oidc_code(&code_hash(&code, &redirect_uri))
        .await?
        .ok_or_else(|| failed("unknown or already used code, or another redirectUri"))?;
    if found.expires_at < now() {
        return Err(failed("the code expired"));
    }
    let user = app
        .store
        .user_by_id(found.tenant_id, found.user_id)
        .await?
        .ok_or_else(|| failed("the account is gone"))?;
    if user.status == UserStatus::Disabled {
        return Err(Error::AccountDisabled);
    }
    if user.mfa_enabled {
        let challenge = mfa::start_mfa_login(app, &user).await?;
        return Ok(Reply::ok(LoggedIn::MfaRequired(challenge)));
    }
    let tokens = issue_tokens(app, req, &user, &[AMR_FEDERATED.to_string()]).await?;
    Ok(Reply::ok(LoggedIn::Tokens(Box::new(tokens))))
}

/// A user's account at a provider, as the admin API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityView {
    id: Uuid,
    provider: String,
    subject: String,
    email: String,
    created_at: String,
    last_login_at: String,
}

#[derive(Debug, Serialize)]
pub struct Identities {
    identities: Vec<IdentityView>,
}

/// `GET /auth/admin/users/{id}/identities`.
pub async fn list_identities(
    app: &App,
    _req: &AuthRequest,
    who: std::sync::Arc<Identity>,
    id: &str,
) -> Result<Reply<Identities>, Error> {
    let user_id = Uuid::parse_str(id).map_err(|_| Error::NotFound)?;
    app.store
        .user_by_id(who.tenant_id, user_id)
        .await?
        .ok_or(Error::NotFound)?;
    let identities = app
        .store
        .identities_of_user(who.tenant_id, user_id)
        .await?
        .into_iter()
        .map(|i| IdentityView {
            id: i.id,
            provider: i.provider,
            subject: i.subject,
            email: i.email,
            created_at: rfc3339(i.created_at),
            last_login_at: rfc3339(i.last_login_at),
        })
        .collect();
    Ok(Reply::ok(Identities { identities }))
}

/// `DELETE /auth/admin/identities/{id}`: the next login through that
/// provider links again (by verified email) or creates a new account.
pub async fn unlink_identity(
    app: &App,
    req: &AuthRequest,
    who: std::sync::Arc<Identity>,
    id: &str,
) -> Result<Reply<Done>, Error> {
    let id = Uuid::parse_str(id).map_err(|_| Error::NotFound)?;
    if !app.store.unlink_identity(who.tenant_id, id).await? {
        return Err(Error::NotFound);
    }
    app.audit
        .record(
            Some(req),
            Some(who.tenant_id),
            Some(who.user_id),
            "admin.identity_unlinked",
            "success",
            json!({ "identity": id }),
        )
        .await;
    Ok(Reply::ok(Done::new("Identity unlinked")))
}
