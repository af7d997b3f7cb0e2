//! The mutator: what the upstream request looks like (SPEC §7 step 1 and 6,
//! §8, §15). Every incoming header under the identity prefix is removed (names
//! compared case-insensitively, `_` and `.` as `-`), the credential's identity
//! headers are set, `X-Request-Id` is written, `X-Forwarded-*` and
//! `Forwarded` are rebuilt (kept and extended only from a trusted peer), and
//! credentials that belong to the sidecar (API keys, in `X-API-Key` or as a
//! prefixed bearer token) never leave it. `/auth/verify` answers [`identity_values`].

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::authn::{self, credential::Authenticated};
use super::client::ClientInfo;
use super::rendered::{Field, Rendered};
use crate::config::ProxySection;
use crate::vocab::Identity;

/// A header name twice: for header maps, and as written on the wire upstream
/// in the configured spelling (`X-Auth-User-Id`). pingora keeps the wire
/// spelling of every upstream header; handing it a shared [`Bytes`] spares
/// it a copy per header per request.
#[derive(Debug, Clone)]
pub struct WireName {
    name: HeaderName,
    wire: Bytes,
}

impl WireName {
    fn new(name: HeaderName, wire: Bytes) -> Self {
        WireName { name, wire }
    }

    const fn fixed(name: &'static str, wire: &'static str) -> Self {
        WireName {
            name: HeaderName::from_static(name),
            wire: Bytes::from_static(wire.as_bytes()),
        }
    }

    pub fn as_str(&self) -> &str {
        self.name.as_str()
    }

    /// The parsed (lower-case) name, for look-ups without re-parsing.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The spelling pingora writes upstream (a cheap reference-counted clone).
    pub fn wire(&self) -> Bytes {
        self.wire.clone()
    }
}

impl PartialEq<str> for WireName {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for WireName {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

/// `X-Request-Id`, sent upstream and echoed on every response.
pub const REQUEST_ID: WireName = WireName::fixed("x-request-id", "X-Request-Id");
const FORWARDED_FOR: WireName = WireName::fixed("x-forwarded-for", "X-Forwarded-For");
const FORWARDED_PROTO: WireName = WireName::fixed("x-forwarded-proto", "X-Forwarded-Proto");
const FORWARDED_HOST: WireName = WireName::fixed("x-forwarded-host", "X-Forwarded-Host");

/// Identity header names under the configured prefix, built once at start.
pub struct IdentityHeaderNames {
    prefix_lower: String,
    user_id: WireName,
    tenant_id: WireName,
    email: WireName,
    roles: WireName,
    permissions: WireName,
    method: WireName,
    session_id: WireName,
    key_id: WireName,
    mfa: WireName,
    assertion: WireName,
    /// Bearer tokens with this prefix are API keys (`api_keys.prefix`).
    api_key_prefix: String,
}

impl IdentityHeaderNames {
    pub fn new(prefix: &str) -> Result<Self, String> {
        let name = |suffix: &str| {
            let wire = format!("{prefix}{suffix}");
            HeaderName::from_bytes(wire.to_ascii_lowercase().as_bytes())
                .map(|name| WireName::new(name, Bytes::from(wire)))
                .map_err(|e| format!("proxy.identity_header_prefix: {e}"))
        };
        Ok(IdentityHeaderNames {
            prefix_lower: prefix.to_ascii_lowercase().replace(['_', '.'], "-"),
            user_id: name("User-Id")?,
            tenant_id: name("Tenant-Id")?,
            email: name("Email")?,
            roles: name("Roles")?,
            permissions: name("Permissions")?,
            method: name("Method")?,
            session_id: name("Session-Id")?,
            key_id: name("Key-Id")?,
            mfa: name("MFA")?,
            assertion: name("Assertion")?,
            api_key_prefix: String::new(),
        })
    }

    /// Bearer tokens starting with `prefix` are API keys: they never go upstream.
    pub fn with_api_key_prefix(mut self, prefix: &str) -> Self {
        self.api_key_prefix = prefix.to_string();
        self
    }

    /// Whether an incoming header name falls under the identity prefix, in
    /// any case and with `_` or `.` for `-` (`X.Auth.User.Id` becomes
    /// `HTTP_X_AUTH_USER_ID` in CGI and WSGI).
    pub fn is_identity_header(&self, name: &str) -> bool {
        super::edge::folds_with_prefix(name, &self.prefix_lower)
    }
}

impl IdentityHeaderNames {
    fn name(&self, field: Field) -> &WireName {
        match field {
            Field::UserId => &self.user_id,
            Field::TenantId => &self.tenant_id,
            Field::Email => &self.email,
            Field::Roles => &self.roles,
            Field::Permissions => &self.permissions,
            Field::Method => &self.method,
            Field::SessionId => &self.session_id,
            Field::KeyId => &self.key_id,
            Field::Mfa => &self.mfa,
        }
    }
}

/// Header changes for the upstream request.
#[derive(Debug, Default)]
pub struct UpstreamEdits {
    pub remove: Vec<HeaderName>,
    pub insert: Vec<(WireName, HeaderValue)>,
}

fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// The identity headers of SPEC §8 for a verified credential, with the
/// signed assertion when there is one.
pub fn identity_values(
    names: &IdentityHeaderNames,
    id: &Authenticated,
    assertion: Option<&str>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(11);
    for_each_identity_value(names, id, assertion, |n, v| out.push((n.name.clone(), v)));
    out
}

fn for_each_identity_value(
    names: &IdentityHeaderNames,
    id: &Authenticated,
    assertion: Option<&str>,
    mut out: impl FnMut(&WireName, HeaderValue),
) {
    let rendered = id.headers.get_or_render(|| render(&id.identity));
    for &(field, start, end) in rendered.spans.iter() {
        let slice = rendered.buf.slice(start as usize..end as usize);
        if let Ok(v) = HeaderValue::from_maybe_shared(slice) {
            out(names.name(field), v);
        }
    }
    if let Some(v) = assertion.and_then(value) {
        out(&names.assertion, v);
    }
}

fn render(id: &Identity) -> Rendered {
    let mut buf = String::with_capacity(160 + id.email.len());
    let mut spans = Vec::with_capacity(9);
    let mut set = |field: Field, v: &str| {
        // the values a header cannot carry are left out, as before
        if value(v).is_some() {
            let start = buf.len() as u32;
            buf.push_str(v);
            spans.push((field, start, buf.len() as u32));
        }
    };
    let mut uuid = uuid::Uuid::encode_buffer();
    match id.external.as_deref() {
        Some(crate::vocab::ExternalOrigin {
            subject: Some(subject),
            ..
        }) => set(Field::UserId, subject),
        _ => set(
            Field::UserId,
            id.user_id.hyphenated().encode_lower(&mut uuid),
        ),
    }
    set(
        Field::TenantId,
        id.tenant_id.hyphenated().encode_lower(&mut uuid),
    );
    set(Field::Email, &id.email);
    set(Field::Roles, &id.roles.join(","));
    set(Field::Permissions, &id.permissions.join(","));
    set(Field::Method, id.method_name());
    if let Some(sid) = id.session_id {
        set(Field::SessionId, sid.hyphenated().encode_lower(&mut uuid));
    }
    if let Some(kid) = id.key_id {
        set(Field::KeyId, kid.hyphenated().encode_lower(&mut uuid));
    }
    if id.mfa {
        set(Field::Mfa, "true");
    }
    Rendered {
        buf: Bytes::from(buf),
        spans: spans.into_boxed_slice(),
    }
}

/// Whether a client header is a forwarding header: `Forwarded`, or
/// `X-Forwarded-*` in any spelling.
fn is_forwarding_header(name: &str) -> bool {
    name == "forwarded" || super::edge::folds_with_prefix(name, "x-forwarded-")
}

/// The header edits for the upstream request. `host` is the request's host
/// (its `Host`, or the authority of an absolute-form target).
#[allow(clippy::too_many_arguments)] // one call site; each is a distinct input of the request
pub fn upstream_edits(
    names: &IdentityHeaderNames,
    cfg: &ProxySection,
    incoming: &HeaderMap,
    host: Option<&HeaderValue>,
    identity: Option<&Authenticated>,
    assertion: Option<&str>,
    request_id: &str,
    client: &ClientInfo,
) -> UpstreamEdits {
    let mut edits = UpstreamEdits {
        remove: Vec::with_capacity(4),
        insert: Vec::with_capacity(16),
    };
    // only what is there: a removal costs two map look-ups in pingora
    for name in incoming.keys() {
        if names.is_identity_header(name.as_str())
            || name == authn::API_KEY_HEADER
            || (!client.peer_trusted && is_forwarding_header(name.as_str()))
        {
            edits.remove.push(name.clone());
        }
    }
    if incoming.contains_key(http::header::AUTHORIZATION) {
        let bearer_api_key = !names.api_key_prefix.is_empty()
            && authn::bearer_token(incoming)
                .is_some_and(|t| t.starts_with(names.api_key_prefix.as_str()));
        if !cfg.forward_authorization || bearer_api_key {
            edits.remove.push(http::header::AUTHORIZATION);
        }
    }
    if let Some(id) = identity {
        for_each_identity_value(names, id, assertion, |n, v| {
            edits.insert.push((n.clone(), v))
        });
    }
    if let Some(v) = value(request_id) {
        edits.insert.push((REQUEST_ID, v));
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
        edits.insert.push((FORWARDED_FOR, v));
    }
    let proto = incoming
        .get("x-forwarded-proto")
        .filter(|_| client.peer_trusted)
        .cloned()
        .unwrap_or(HeaderValue::from_static(if cfg.tls() {
            "https"
        } else {
            "http"
        }));
    edits.insert.push((FORWARDED_PROTO, proto));
    let forwarded_host = incoming
        .get("x-forwarded-host")
        .filter(|_| client.peer_trusted)
        .or(host)
        .cloned();
    if let Some(v) = forwarded_host {
        edits.insert.push((FORWARDED_HOST, v));
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::CredentialKind;

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
            ("x.auth.user.id", "spoof"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x_forwarded_prefix", "/evil"),
            ("forwarded", "host=evil.example"),
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
            None,
            None,
            "r1",
            &client(false),
        );
        let removed: Vec<&str> = e.remove.iter().map(|n| n.as_str()).collect();
        assert!(removed.contains(&"x-auth-user-id"));
        assert!(removed.contains(&"x_auth_email"));
        assert!(removed.contains(&"x-auth-anything"));
        assert!(removed.contains(&"x.auth.user.id"));
        assert!(removed.contains(&"x-api-key"));
        for forwarding in ["x-forwarded-host", "x_forwarded_prefix", "forwarded"] {
            assert!(removed.contains(&forwarding), "{forwarding}");
        }
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
            passkey: false,
            external: None,
        };
        let id = Authenticated::new(id);
        let e = upstream_edits(
            &names,
            &ProxySection::default(),
            &incoming(),
            None,
            Some(&id),
            None,
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

    #[test]
    fn rendered_headers_follow_a_changed_copy() {
        let names = IdentityHeaderNames::new("X-Auth-").unwrap();
        let id = Identity {
            user_id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            email: "a@example.com".into(),
            roles: vec!["member".into()],
            permissions: vec![],
            method: CredentialKind::Jwt,
            session_id: None,
            key_id: None,
            mfa: false,
            passkey: false,
            external: None,
        };
        let id = Authenticated::new(id);
        let has_mfa = |v: &[(HeaderName, HeaderValue)]| v.iter().any(|(n, _)| n == "x-auth-mfa");
        let first = identity_values(&names, &id, None);
        assert_eq!(first, identity_values(&names, &id, None));
        assert!(!has_mfa(&first));
        // a stepped-up copy is a new credential with its own rendering
        let stepped_up = id.stepped_up();
        assert!(stepped_up.identity.mfa && !id.identity.mfa);
        assert!(has_mfa(&identity_values(&names, &stepped_up, None)));
        assert!(!has_mfa(&identity_values(&names, &id, None)));
        let with_assertion = identity_values(&names, &id, Some("a.b.c"));
        assert_eq!(with_assertion.len(), first.len() + 1);
        assert!(
            !identity_values(&names, &id, None)
                .iter()
                .any(|(n, _)| n == "x-auth-assertion")
        );
    }

    #[test]
    fn api_keys_never_go_upstream_and_their_identity_carries_the_key_id() {
        let names = IdentityHeaderNames::new("X-Auth-")
            .unwrap()
            .with_api_key_prefix("sk_live_");
        let mut h = incoming();
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer sk_live_secret".parse().unwrap(),
        );
        let kid = uuid::Uuid::now_v7();
        let id = Identity {
            user_id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            email: "a@example.com".into(),
            roles: vec!["member".into()],
            permissions: vec!["profile:read".into()],
            method: CredentialKind::ApiKey,
            session_id: None,
            key_id: Some(kid),
            mfa: false,
            passkey: false,
            external: None,
        };
        let id = Authenticated::new(id);
        // forward_authorization = true (the default) does not forward a key
        let e = upstream_edits(
            &names,
            &ProxySection::default(),
            &h,
            None,
            Some(&id),
            Some("a.b.c"),
            "r1",
            &client(false),
        );
        assert!(e.remove.contains(&http::header::AUTHORIZATION));
        assert!(e.remove.iter().any(|n| n == "x-api-key"));
        let get = |n: &str| {
            e.insert
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-auth-method").unwrap(), "api_key");
        assert_eq!(get("x-auth-key-id").unwrap(), kid.to_string());
        assert_eq!(get("x-auth-assertion").unwrap(), "a.b.c");
        assert!(get("x-auth-session-id").is_none());
        assert!(
            !e.insert
                .iter()
                .any(|(_, v)| v.to_str().unwrap().contains("sk_live_"))
        );
        // a JWT bearer is still forwarded
        h.insert(http::header::AUTHORIZATION, "Bearer a.b.c".parse().unwrap());
        let e = upstream_edits(
            &names,
            &ProxySection::default(),
            &h,
            None,
            None,
            None,
            "r1",
            &client(false),
        );
        assert!(!e.remove.contains(&http::header::AUTHORIZATION));
    }
}
