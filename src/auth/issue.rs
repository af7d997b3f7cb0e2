//! Starting a session: a new refresh-token family in the store and a signed
//! access token, answered as SPEC §5's token response. Every way of logging
//! in ends here (password, password + TOTP, and the ones still to come).

use uuid::Uuid;

use super::views::{TokenResponse, UserView};
use crate::app::App;
use crate::crypto::{random_token, token_hash};
use crate::error::Error;
use crate::http_types::AuthRequest;
use crate::store::{NewSession, User};
use crate::tokens::{self, AccessClaims};
use crate::vocab::now;

pub const REFRESH_PREFIX: &str = "rt_";

/// Starts a session for `user` and answers the token response of SPEC §5.
pub async fn issue_tokens(
    app: &App,
    req: &AuthRequest,
    user: &User,
    amr: &[String],
) -> Result<TokenResponse, Error> {
    let cfg = &app.config.jwt;
    let at = now();
    let refresh = random_token(REFRESH_PREFIX);
    let session = app
        .store
        .create_session(NewSession {
            id: Uuid::new_v4(),
            tenant_id: user.tenant_id,
            user_id: user.id,
            amr: amr.to_vec(),
            refresh_hash: token_hash(&refresh),
            refresh_expires_at: at + cfg.refresh_ttl_seconds as i64,
            ip: Some(req.client_ip.to_string()),
            user_agent: req.user_agent(),
        })
        .await?;
    let access = tokens::sign(
        &app.keys,
        &AccessClaims::new(cfg, user, session.id, amr, at),
    )?;
    Ok(token_response(app, user, access, refresh))
}

pub fn token_response(app: &App, user: &User, access: String, refresh: String) -> TokenResponse {
    TokenResponse {
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: app.config.jwt.access_ttl_seconds,
        refresh_token_expires_in: app.config.jwt.refresh_ttl_seconds,
        user: UserView::from(user),
    }
}
