//! Cryptographic building blocks: random opaque tokens, SHA-256 digests for
//! storing them, constant-time comparison, the bounded argon2 pool
//! ([`password`]) and the password rules ([`policy`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub mod password;
pub mod policy;
pub mod seal;
pub mod totp;
pub mod webauthn;

/// `prefix` + base64url (unpadded) of 32 random bytes: 43 characters after the prefix.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a secret token, base64url: what the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    digest_hash(&token_digest(token))
}

/// The stored form of a [`token_digest`].
pub fn digest_hash(digest: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(digest)
}

/// The raw SHA-256 of a token: the key of the in-memory credential caches.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_have_spec_shape() {
        let t = random_token("rt_");
        assert_eq!(t.len(), 3 + 43);
        assert!(
            t[3..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(t, random_token("rt_"));
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        assert_eq!(token_hash("a"), token_hash("a"));
        assert_ne!(token_hash("a"), token_hash("b"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
