//! The identity header values of one verified credential, rendered once into
//! one buffer and kept beside the cached credential ([`super::authn::Authenticated`]),
//! so a cache hit slices reference-counted values out of it instead of
//! formatting UUIDs and joining roles. [`super::identity_headers`] renders it.

use std::sync::OnceLock;

use bytes::Bytes;

/// Which identity header a rendered value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    UserId,
    TenantId,
    Email,
    Roles,
    Permissions,
    Method,
    SessionId,
    KeyId,
    Mfa,
}

/// Every value in one buffer: one allocation per credential, not one per header.
pub struct Rendered {
    pub buf: Bytes,
    /// (header, start, end) of each value in `buf`.
    pub spans: Box<[(Field, u32, u32)]>,
}

/// Rendered on first use, then kept. Neither `Clone` nor `Eq`: it belongs to
/// the one credential it was rendered for, and an identity with different
/// values is a different [`super::authn::Authenticated`] with its own.
#[derive(Default)]
pub struct HeaderCache(OnceLock<Rendered>);

impl HeaderCache {
    pub fn get_or_render(&self, render: impl FnOnce() -> Rendered) -> &Rendered {
        self.0.get_or_init(render)
    }
}

impl std::fmt::Debug for HeaderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "HeaderCache(rendered)"
        } else {
            "HeaderCache(empty)"
        })
    }
}
