//! What every authenticator shares: the [`Authenticator`] contract, the
//! verified credential it answers ([`Authenticated`]: an identity with its
//! rendered headers) and the cache entry that keeps one ([`Verified`]).

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use crate::error::Error;
use crate::pipeline::rendered::HeaderCache;
use crate::vocab::{CredentialKind, Identity};

/// The key of the credential caches: the SHA-256 of the presented credential.
pub type Digest = [u8; 32];
pub use crate::crypto::token_digest as digest;

/// One kind of credential: verifies the credential string it is handed.
/// (Static dispatch through [`super::Authenticators`]: no allocation per request.)
pub trait Authenticator: Send + Sync {
    /// The kind this authenticator verifies.
    const KIND: CredentialKind;

    /// Who the credential speaks for, or why it is refused (401).
    fn authenticate(
        &self,
        credential: &str,
    ) -> impl Future<Output = Result<Arc<Authenticated>, Error>> + Send;
}

/// A verified credential: who it speaks for and its identity headers,
/// rendered on first use and kept with it (shared between the cached tokens
/// of one session). Not `Clone`: a changed identity is a new `Authenticated`.
#[derive(Debug)]
pub struct Authenticated {
    pub identity: Arc<Identity>,
    pub(crate) headers: HeaderCache,
}

impl Authenticated {
    pub fn new(identity: Identity) -> Arc<Self> {
        Arc::new(Authenticated {
            identity: Arc::new(identity),
            headers: HeaderCache::default(),
        })
    }

    /// The same credential after a TOTP step-up (`mfa: true`).
    pub fn stepped_up(&self) -> Arc<Self> {
        Authenticated::new(Identity {
            mfa: true,
            ..(*self.identity).clone()
        })
    }
}

impl Deref for Authenticated {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.identity
    }
}

/// A cached verified credential and when it dies (Unix seconds).
#[derive(Debug, Clone)]
pub struct Verified {
    pub who: Arc<Authenticated>,
    pub expires_at: i64,
}
