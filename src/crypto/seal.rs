//! Secrets at rest (SPEC §3): TOTP secrets are sealed with AES-256-GCM
//! (aws-lc-rs) under `secrets.encryption_key_file` when it is set, and kept
//! as `b32:` otherwise. Stored forms: `b32:<base32>` or `aes256gcm:<base64(nonce‖ciphertext)>`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use totp_rs::Secret;

const PLAIN: &str = "b32:";
const SEALED: &str = "aes256gcm:";

pub struct SecretBox {
    key: Option<LessSafeKey>,
}

impl SecretBox {
    /// From the base64 content of `secrets.encryption_key_file` (32 bytes), or none.
    pub fn new(key_b64: Option<&[u8]>) -> Result<SecretBox, String> {
        let Some(raw) = key_b64 else {
            return Ok(SecretBox { key: None });
        };
        let text = String::from_utf8_lossy(raw);
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "secrets.encryption_key_file: not base64".to_string())?;
        if bytes.len() != 32 {
            return Err("secrets.encryption_key_file: the key must be 32 bytes (base64)".into());
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| "secrets.encryption_key_file: unusable key".to_string())?;
        Ok(SecretBox {
            key: Some(LessSafeKey::new(key)),
        })
    }

    pub fn is_sealing(&self) -> bool {
        self.key.is_some()
    }

    /// The stored form of `secret`; `context` (the user id) binds it to its row.
    pub fn seal(&self, secret: &[u8], context: &str) -> Result<String, String> {
        let Some(key) = &self.key else {
            return Ok(format!(
                "{PLAIN}{}",
                Secret::from(secret.to_vec()).to_base32()
            ));
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut buf = secret.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf,
        )
        .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED}{}", STANDARD.encode(out)))
    }

    /// The secret bytes of a stored form.
    pub fn open(&self, stored: &str, context: &str) -> Result<Vec<u8>, String> {
        if let Some(b32) = stored.strip_prefix(PLAIN) {
            return Secret::try_from_base32(b32)
                .ok()
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| "stored TOTP secret is not base32".into());
        }
        let Some(b64) = stored.strip_prefix(SEALED) else {
            return Err("stored TOTP secret has an unknown form".into());
        };
        let Some(key) = &self.key else {
            return Err(
                "a TOTP secret is sealed but secrets.encryption_key_file is not set".into(),
            );
        };
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| "sealed TOTP secret is not base64".to_string())?;
        if raw.len() < NONCE_LEN {
            return Err("sealed TOTP secret is truncated".into());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let mut buf = ct.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| "sealed TOTP secret does not open with this key".to_string())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        STANDARD.encode([7u8; 32]).into_bytes()
    }

    #[test]
    fn plain_and_sealed_round_trip() {
        let secret = b"0123456789abcdefghij";
        let plain = SecretBox::new(None).unwrap();
        let stored = plain.seal(secret, "u1").unwrap();
        assert!(stored.starts_with("b32:"));
        assert_eq!(plain.open(&stored, "u1").unwrap(), secret);

        let sealed = SecretBox::new(Some(&key())).unwrap();
        let stored = sealed.seal(secret, "u1").unwrap();
        assert!(stored.starts_with("aes256gcm:"));
        assert!(!stored.contains(&Secret::from(secret.to_vec()).to_base32()));
        assert_eq!(sealed.open(&stored, "u1").unwrap(), secret);
        // bound to its user, and useless without the key
        assert!(sealed.open(&stored, "u2").is_err());
        assert!(plain.open(&stored, "u1").is_err());
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(SecretBox::new(Some(b"not base64!!")).is_err());
        assert!(SecretBox::new(Some(STANDARD.encode([1u8; 16]).as_bytes())).is_err());
    }
}
