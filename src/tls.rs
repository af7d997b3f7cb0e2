//! TLS on the proxy listener: the certificate and key from
//! `proxy.tls_cert_file` / `proxy.tls_key_file`, loaded at start and again
//! on SIGHUP. Handshakes read the current pair through [`ServerCert`], so a
//! reload changes what new connections see and never touches open ones.

use std::fmt;
use std::sync::{Arc, RwLock};

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

use crate::config::ProxySection;

/// The proxy listener's certificate chain and key, swappable.
pub struct ServerCert {
    cert_file: String,
    key_file: String,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never the key
        f.debug_struct("ServerCert")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// `None` when the listener speaks clear text (both keys empty). An
    /// unreadable file, a file without a certificate or key, or a key that
    /// does not match the certificate is an error naming the key.
    pub fn load(cfg: &ProxySection) -> Result<Option<Arc<ServerCert>>, String> {
        if cfg.tls_cert_file.is_empty() && cfg.tls_key_file.is_empty() {
            return Ok(None);
        }
        let pair = read_pair(&cfg.tls_cert_file, &cfg.tls_key_file)?;
        Ok(Some(Arc::new(ServerCert {
            cert_file: cfg.tls_cert_file.clone(),
            key_file: cfg.tls_key_file.clone(),
            current: RwLock::new(Arc::new(pair)),
        })))
    }

    /// Reads both files again. On error the pair in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let pair = read_pair(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
        Ok(())
    }

    /// The pair new handshakes use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .expect("install_default_crypto_provider installs one")
}

fn read_pair(cert_file: &str, key_file: &str) -> Result<CertifiedKey, String> {
    if cert_file.is_empty() || key_file.is_empty() {
        return Err(
            "proxy.tls_cert_file and proxy.tls_key_file: set both (TLS on) or neither".into(),
        );
    }
    let fail = |key: &str, file: &str, why: String| format!("{key} `{file}`: {why}");
    std::fs::metadata(cert_file)
        .map_err(|e| fail("proxy.tls_cert_file", cert_file, e.to_string()))?;
    std::fs::metadata(key_file).map_err(|e| fail("proxy.tls_key_file", key_file, e.to_string()))?;
    let certs_and_key = pingora::tls::load_certs_and_key_files(cert_file, key_file)
        .map_err(|e| fail("proxy.tls_cert_file", cert_file, e.to_string()))?;
    let Some((certs, key)) = certs_and_key else {
        return Err(format!(
            "proxy.tls_cert_file `{cert_file}` / proxy.tls_key_file `{key_file}`: \
             no PEM certificate or no PEM private key (PKCS#8, PKCS#1 or SEC1) found"
        ));
    };
    let certs = certs.into_iter().map(|c| c.into_owned()).collect();
    CertifiedKey::from_der(certs, key.clone_key(), &provider()).map_err(|e| {
        format!(
            "proxy.tls_key_file `{key_file}` does not fit proxy.tls_cert_file `{cert_file}`: {e}"
        )
    })
}
