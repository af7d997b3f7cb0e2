//! The mutator: what the upstream request looks like (SPEC §7 step 1 and 6,
//! §8). Every incoming header under the identity prefix is removed (names
//! compared case-insensitively, `_` as `-`), the credential's identity
//! headers are set, `X-Request-Id` and `X-Forwarded-*` are written, and
//! credentials that belong to the sidecar (API keys) never leave it.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Identity;
use super::client::ClientInfo;
use crate::config::ProxySection;

/// Identity header names under the configured prefix, built once at start.
pub struct IdentityHeaderNames {
    prefix_lower: String,
    user_id: HeaderName,
    tenant_id: HeaderName,
    email: HeaderName,
    roles: HeaderName,
    permissions: HeaderName,
    method: HeaderName,
    session_id: HeaderName,
    key_id: HeaderName,
    mfa: HeaderName,
}

impl IdentityHeaderNames {
    pub fn new(prefix: &str) -> Result<Self, String> {
        let name = |suffix: &str| {
            HeaderName::from_bytes(format!("{prefix}{suffix}").to_ascii_lowercase().as_bytes())
                .map_err(|e| format!("proxy.identity_header_prefix: {e}"))
        };
        Ok(IdentityHeaderNames {
            prefix_lower: prefix.to_ascii_lowercase().replace('_', "-"),
            user_id: name("User-Id")?,
            tenant_id: name("Tenant-Id")?,
            email: name("Email")?,
            roles: name("Roles")?,
            permissions: name("Permissions")?,
            method: name("Method")?,
            session_id: name("Session-Id")?,
            key_id: name("Key-Id")?,
            mfa: name("MFA")?,
        })
    }

    /// Whether an incoming header name falls under the identity prefix.
    pub fn is_identity_header(&self, name: &str) -> bool {
        name.len() >= self.prefix_lower.len()
            && name.bytes().zip(self.prefix_lower.bytes()).all(|(a, b)| {
                (if a == b'_' {
                    b'-'
                } else {
                    a.to_ascii_lowercase()
                }) == b
            })
    }
}

/// Header changes for the upstream request.
#[derive(Debug, Default)]
pub struct UpstreamEdits {
    pub remove: Vec<HeaderName>,
    pub insert: Vec<(HeaderName, HeaderValue)>,
}

fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

pub fn upstream_edits(
    names: &IdentityHeaderNames,
    cfg: &ProxySection,
    incoming: &HeaderMap,
    identity: Option<&Identity>,
    request_id: &str,
    client: &ClientInfo,
) -> UpstreamEdits {
    let mut edits = UpstreamEdits::default();
    for name in incoming.keys() {
        if names.is_identity_header(name.as_str()) {
            edits.remove.push(name.clone());
        }
    }
    edits.remove.push(HeaderName::from_static("x-api-key"));
    if !cfg.forward_authorization {
        edits.remove.push(http::header::AUTHORIZATION);
    }
    if let Some(id) = identity {
        let mut set = |name: &HeaderName, v: &str| {
            if let Some(v) = value(v) {
                edits.insert.push((name.clone(), v));
            }
        };
        set(&names.user_id, &id.user_id.to_string());
        set(&names.tenant_id, &id.tenant_id.to_string());
        set(&names.email, &id.email);
        set(&names.roles, &id.roles.join(","));
        set(&names.permissions, &id.permissions.join(","));
        set(&names.method, id.method.as_str());
        if let Some(sid) = id.session_id {
            set(&names.session_id, &sid.to_string());
        }
        if let Some(kid) = id.key_id {
            set(&names.key_id, &kid.to_string());
        }
        if id.mfa {
            set(&names.mfa, "true");
        }
    }
    if let Some(v) = value(request_id) {
        edits
            .insert
            .push((HeaderName::from_static("x-request-id"), v));
    }
    let peer = client.peer.to_string();
    let xff = if client.peer_trusted {
        let prior: Vec<&str> = incoming
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            peer
        } else {
            format!("{}, {peer}", prior.join(", "))
        }
    } else {
        peer
    };
    if let Some(v) = value(&xff) {
        edits
            .insert
            .push((HeaderName::from_static("x-forwarded-for"), v));
    }
    let proto = incoming
        .get("x-forwarded-proto")
        .filter(|_| client.peer_trusted)
        .cloned()
        .unwrap_or(HeaderValue::from_static("http"));
    edits
        .insert
        .push((HeaderName::from_static("x-forwarded-proto"), proto));
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CredentialKind;

    fn client(trusted: bool) -> ClientInfo {
        ClientInfo {
            peer: "127.0.0.1".parse().unwrap(),
            peer_trusted: trusted,
            ip: "127.0.0.1".parse().unwrap(),
        }
    }

    fn incoming() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-auth-user-id", "spoof"),
            ("x_auth_email", "spoof"),
            ("X-AUTH-ANYTHING", "spoof"),
            ("x-authority", "keep"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-api-key", "sk_live_x"),
        ] {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn spoofed_identity_headers_are_removed_in_any_spelling() {
        let names = IdentityHeaderNames::new("X-Auth-").unwrap();
        let e = upstream_edits(
            &names,
            &ProxySection::default(),
            &incoming(),
            None,
            "r1",
            &client(false),
        );
        let removed: Vec<&str> = e.remove.iter().map(|n| n.as_str()).collect();
        assert!(removed.contains(&"x-auth-user-id"));
        assert!(removed.contains(&"x_auth_email"));
        assert!(removed.contains(&"x-auth-anything"));
        assert!(removed.contains(&"x-api-key"));
        assert!(!removed.contains(&"x-authority"));
        assert!(
            !e.insert
                .iter()
                .any(|(n, _)| names.is_identity_header(n.as_str()))
        );
        // untrusted peer: X-Forwarded-For replaced
        let xff = e
            .insert
            .iter()
            .find(|(n, _)| n == "x-forwarded-for")
            .unwrap();
        assert_eq!(xff.1, "127.0.0.1");
    }

    #[test]
    fn identity_headers_are_set() {
        let names = IdentityHeaderNames::new("X-Auth-").unwrap();
        let id = Identity {
            user_id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            email: "a@example.com".into(),
            roles: vec!["member".into(), "ops".into()],
            permissions: vec!["a:b".into()],
            method: CredentialKind::Jwt,
            session_id: Some(uuid::Uuid::nil()),
            key_id: None,
            mfa: false,
            expires_at: 0,
        };
        let e = upstream_edits(
            &names,
            &ProxySection::default(),
            &incoming(),
            Some(&id),
            "r1",
            &client(true),
        );
        let get = |n: &str| {
            e.insert
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-auth-roles").unwrap(), "member,ops");
        assert_eq!(get("x-auth-method").unwrap(), "jwt");
        assert!(get("x-auth-mfa").is_none());
        assert!(get("x-auth-key-id").is_none());
        assert_eq!(get("x-forwarded-for").unwrap(), "6.6.6.6, 127.0.0.1");
    }
}
