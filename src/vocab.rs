//! The words every layer shares and nothing of ours underneath them: who a
//! verified credential speaks for ([`Identity`]), what kind of credential it
//! was ([`CredentialKind`]), and the clock ([`now`]). A leaf: it imports no
//! module of this crate.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The kinds of credential the sidecar verifies (route policies name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Jwt,
    ApiKey,
    /// An access token of an external OpenID Provider (`[[issuers]]`).
    Oidc,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Oidc => "oidc",
        }
    }
}

/// Where an external issuer's token came from, and whom it names when it is
/// not one of our users.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalOrigin {
    /// `[[issuers]].name`: the `X-Auth-Method` of its tokens.
    pub issuer: Arc<str>,
    /// The `X-Auth-User-Id` of a token not linked to a local user: the
    /// issuer's subject prefix and `sub`. `None`: `user_id` is the local user.
    pub subject: Option<String>,
}

/// Who a verified credential speaks for. Plain data: two identities are
/// equal when every field is; the credential's expiry and the rendered
/// identity headers are kept beside it by the authenticators.
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
    /// The credential proved a second factor (`amr` has `otp` or `mfa`).
    pub mfa: bool,
    /// The session was begun with a passkey (`amr` has `hwk`).
    pub passkey: bool,
    /// Set for an external issuer's token.
    pub external: Option<Arc<ExternalOrigin>>,
}

impl Identity {
    /// The `X-Auth-User-Id` value: the local user's id, or an external subject.
    pub fn subject(&self) -> String {
        match self.external.as_deref() {
            Some(ExternalOrigin {
                subject: Some(s), ..
            }) => s.clone(),
            _ => self.user_id.hyphenated().to_string(),
        }
    }

    /// The `X-Auth-Method` value: `jwt`, `api_key`, or the external issuer's name.
    pub fn method_name(&self) -> &str {
        match &self.external {
            Some(e) => &e.issuer,
            None => self.method.as_str(),
        }
    }
}

/// Current time in Unix seconds: the one clock of the crate.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A Unix time as RFC 3339 UTC (`2026-01-02T03:04:05Z`), as `/auth` answers it.
pub fn rfc3339(unix: i64) -> String {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}
