//! Signing keys: generated at first start and kept in the store (or read from
//! `jwt.private_key_file` / `jwt.hs256_secret_file`), rotated by `keys rotate`,
//! published as a JWKS while tokens they signed can still be alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

use crate::config::{Config, JwtAlgorithm, JwtSection};
use crate::store::{SigningKeyRecord, Store};
use crate::vocab::now;

/// The key new tokens are signed with.
pub struct Signer {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: EncodingKey,
}

/// A key tokens are verified with: the algorithm belongs to the key.
pub struct Verifier {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// One consistent view of the keys.
pub struct KeySet {
    pub signer: Signer,
    pub verifiers: HashMap<String, Verifier>,
    /// `GET /.well-known/jwks.json` body.
    pub jwks: Bytes,
}

/// Where the keys come from.
enum Source {
    Store,
    /// A PEM private key from `jwt.private_key_file`.
    PemFile(Vec<u8>),
    /// An HMAC secret from `jwt.hs256_secret_file`.
    Secret(Vec<u8>),
}

/// The deployment's keys; reloaded from the store on `reload`.
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    store: Arc<dyn Store>,
    cfg: JwtSection,
    source: Source,
    last_reload: Mutex<Instant>,
}

pub fn algorithm_of(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::HS256 => Algorithm::HS256,
    }
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        Algorithm::HS256 => "HS256",
        _ => "unsupported",
    }
}

fn parse_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        "RS256" => Some(Algorithm::RS256),
        _ => None,
    }
}

/// A new private key as PKCS#8 DER.
pub fn generate_pkcs8(alg: Algorithm) -> Result<Vec<u8>, String> {
    let fail = |e: aws_lc_rs::error::Unspecified| format!("key generation failed: {e}");
    match alg {
        Algorithm::EdDSA => Ok(Ed25519KeyPair::generate()
            .map_err(fail)?
            .to_pkcs8v1()
            .map_err(fail)?
            .as_ref()
            .to_vec()),
        Algorithm::ES256 => Ok(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(fail)?
            .to_pkcs8v1()
            .map_err(fail)?
            .as_ref()
            .to_vec()),
        Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).map_err(fail)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().map_err(fail)?;
            Ok(der.as_ref().to_vec())
        }
        other => Err(format!("cannot generate a key for {other:?}")),
    }
}

/// PKCS#8 DER wrapped as PEM, the form jsonwebtoken reads for every key type.
fn pkcs8_pem(der: &[u8]) -> Vec<u8> {
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem.into_bytes()
}

fn encoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<EncodingKey, String> {
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        other => return Err(format!("unsupported algorithm {other:?}")),
    };
    key.map_err(|e| format!("private key does not fit {}: {e}", algorithm_name(alg)))
}

/// The public JWK (with kid = RFC 7638 thumbprint) and verifier of a private key.
fn public_parts(alg: Algorithm, key: &EncodingKey) -> Result<(String, Jwk, Verifier), String> {
    let mut jwk = Jwk::from_encoding_key(key, alg).map_err(|e| format!("public key: {e}"))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| format!("thumbprint: {e}"))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("verifier: {e}"))?;
    Ok((
        kid,
        jwk,
        Verifier {
            algorithm: alg,
            key: decoding,
        },
    ))
}

/// Builds a fresh store record for a new key of `alg`.
pub fn new_key_record(alg: Algorithm) -> Result<SigningKeyRecord, String> {
    let der = generate_pkcs8(alg)?;
    let key = encoding_key_from_pem(alg, &pkcs8_pem(&der))?;
    let (kid, _, _) = public_parts(alg, &key)?;
    Ok(SigningKeyRecord {
        kid,
        algorithm: algorithm_name(alg).to_string(),
        private_der: der,
        created_at: now(),
        retired_at: None,
    })
}

fn jwks_body(jwks: &[Jwk]) -> Bytes {
    let body = serde_json::json!({ "keys": jwks });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

impl KeyRing {
    /// Loads the keys, generating and storing the first one when the store has none.
    pub async fn load(config: &Config, store: Arc<dyn Store>) -> Result<KeyRing, String> {
        let cfg = config.jwt.clone();
        let source = if cfg.algorithm == JwtAlgorithm::HS256 {
            let secret = Config::read_secret_file("jwt.hs256_secret_file", &cfg.hs256_secret_file)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let secret = trim_newline(secret);
            if secret.len() < 32 {
                return Err("jwt.hs256_secret_file: the secret must be at least 32 bytes".into());
            }
            Source::Secret(secret)
        } else if let Some(pem) =
            Config::read_secret_file("jwt.private_key_file", &cfg.private_key_file)
                .map_err(|e| e.to_string())?
        {
            Source::PemFile(pem)
        } else {
            Source::Store
        };
        let set = build(&cfg, &source, store.as_ref()).await?;
        Ok(KeyRing {
            current: RwLock::new(Arc::new(set)),
            store,
            cfg,
            source,
            last_reload: Mutex::new(Instant::now()),
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-reads the keys from the store (picks up `keys rotate`).
    pub async fn reload(&self) -> Result<(), String> {
        let set = build(&self.cfg, &self.source, self.store.as_ref()).await?;
        if let Ok(mut g) = self.current.write() {
            *g = Arc::new(set);
        }
        if let Ok(mut t) = self.last_reload.lock() {
            *t = Instant::now();
        }
        Ok(())
    }

    /// Reloads when a token names a kid we do not know, at most once per 5 s.
    pub async fn reload_for_unknown_kid(&self) -> bool {
        let due = self
            .last_reload
            .lock()
            .map(|t| t.elapsed() > Duration::from_secs(5))
            .unwrap_or(false);
        due && self.reload().await.is_ok()
    }
}

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while matches!(v.last(), Some(b'\n' | b'\r')) {
        v.pop();
    }
    v
}

async fn build(cfg: &JwtSection, source: &Source, store: &dyn Store) -> Result<KeySet, String> {
    let alg = algorithm_of(cfg.algorithm);
    match source {
        Source::Secret(secret) => {
            let kid = format!(
                "hs256-{}",
                &URL_SAFE_NO_PAD.encode(Sha256::digest(secret))[..16]
            );
            let mut verifiers = HashMap::new();
            verifiers.insert(
                kid.clone(),
                Verifier {
                    algorithm: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret),
                },
            );
            Ok(KeySet {
                signer: Signer {
                    kid,
                    algorithm: Algorithm::HS256,
                    key: EncodingKey::from_secret(secret),
                },
                verifiers,
                // a symmetric key is never published
                jwks: jwks_body(&[]),
            })
        }
        Source::PemFile(pem) => {
            let key = encoding_key_from_pem(alg, pem)
                .map_err(|e| format!("jwt.private_key_file: {e}"))?;
            let (kid, jwk, verifier) = public_parts(alg, &key)?;
            let mut verifiers = HashMap::new();
            verifiers.insert(kid.clone(), verifier);
            Ok(KeySet {
                signer: Signer {
                    kid,
                    algorithm: alg,
                    key,
                },
                verifiers,
                jwks: jwks_body(&[jwk]),
            })
        }
        Source::Store => {
            let mut records = store.signing_keys().await.map_err(|e| e.to_string())?;
            let has_current = records
                .iter()
                .any(|r| r.retired_at.is_none() && parse_algorithm(&r.algorithm) == Some(alg));
            if !has_current {
                let record = new_key_record(alg)?;
                store
                    .rotate_signing_key(record, now())
                    .await
                    .map_err(|e| e.to_string())?;
                records = store.signing_keys().await.map_err(|e| e.to_string())?;
            }
            from_records(cfg, alg, &records)
        }
    }
}

/// Keys still worth publishing: live ones, and retired ones whose tokens may not have expired.
fn from_records(
    cfg: &JwtSection,
    alg: Algorithm,
    records: &[SigningKeyRecord],
) -> Result<KeySet, String> {
    let keep_until = (cfg.access_ttl_seconds + cfg.leeway_seconds) as i64;
    let at = now();
    let mut signer = None;
    let mut verifiers = HashMap::new();
    let mut jwks = Vec::new();
    // newest first
    for r in records {
        if r.retired_at.is_some_and(|t| t + keep_until < at) {
            continue;
        }
        let Some(key_alg) = parse_algorithm(&r.algorithm) else {
            continue;
        };
        let key = encoding_key_from_pem(key_alg, &pkcs8_pem(&r.private_der))?;
        let (kid, jwk, verifier) = public_parts(key_alg, &key)?;
        verifiers.insert(kid.clone(), verifier);
        jwks.push(jwk);
        if signer.is_none() && r.retired_at.is_none() && key_alg == alg {
            signer = Some(Signer {
                kid,
                algorithm: key_alg,
                key,
            });
        }
    }
    let signer = signer.ok_or("no current signing key in the store")?;
    Ok(KeySet {
        signer,
        verifiers,
        jwks: jwks_body(&jwks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_a_key_with_a_public_jwk() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let r = new_key_record(alg).unwrap();
            let key = encoding_key_from_pem(alg, &pkcs8_pem(&r.private_der)).unwrap();
            let (kid, jwk, _) = public_parts(alg, &key).unwrap();
            assert_eq!(kid, r.kid);
            let json = serde_json::to_value(&jwk).unwrap();
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(json.get(private).is_none(), "{alg:?} JWK leaks {private}");
            }
        }
    }
}
