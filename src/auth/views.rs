//! What `/auth` answers: the user object and the token response of SPEC §5,
//! with RFC 3339 UTC times.

use serde::Serialize;

use crate::store::{User, UserStatus};
use crate::vocab::now;
pub use crate::vocab::rfc3339;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub family_name: Option<String>,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub mfa_enabled: bool,
    pub email_verified: bool,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        let name = u.name.clone().or_else(|| {
            let parts: Vec<&str> = [u.first_name.as_deref(), u.family_name.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        });
        UserView {
            id: u.id.to_string(),
            tenant_id: u.tenant_id.to_string(),
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            family_name: u.family_name.clone(),
            name,
            roles: u.roles.clone(),
            permissions: u.permissions.clone(),
            mfa_enabled: u.mfa_enabled,
            email_verified: u.email_verified,
            status: if u.status == UserStatus::Active && u.lock_remaining(now()).is_some() {
                "locked"
            } else {
                u.status.as_str()
            },
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token_expires_in: u64,
    pub user: UserView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
