//! Requests the sidecar itself sends (webhook deliveries, an OpenID
//! Provider's discovery document and keys): one URL parsed once into an
//! [`Endpoint`], plain HTTP or TLS (verified against the system's roots or a
//! CA file), over pingora's own connector, with a deadline and a body limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use pingora::connectors::ConnectorOptions;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

/// A URL the sidecar sends requests to, with the connector that reaches it.
#[derive(Clone)]
pub struct Endpoint {
    uri: http::Uri,
    /// `host:port` to resolve.
    authority: String,
    host: String,
    tls: bool,
    connector: Arc<Connector>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.uri)
    }
}

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Checks that `url` (of config key `key`) is an `http://` or `https://` URL
/// with a host, without building a connector.
pub fn check_url(key: &str, url: &str) -> Result<(), String> {
    Parsed::new(key, url).map(|_| ())
}

struct Parsed {
    uri: http::Uri,
    authority: String,
    host: String,
    tls: bool,
}

impl Parsed {
    fn new(key: &str, url: &str) -> Result<Parsed, String> {
        let uri: http::Uri = url.trim().parse().map_err(|e| format!("{key}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{key}: `{url}` is not an http:// or https:// URL")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{key}: `{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Parsed {
            uri,
            authority,
            host,
            tls,
        })
    }
}

impl Endpoint {
    /// `url` (of config key `key`): `http://` or `https://`. `ca_file`
    /// (empty: the system's roots) verifies an `https://` server.
    pub fn parse(key: &str, url: &str, ca_file: &str) -> Result<Endpoint, String> {
        let Parsed {
            uri,
            authority,
            host,
            tls,
        } = Parsed::new(key, url)?;
        let mut options = ConnectorOptions::new(4);
        if !ca_file.is_empty() {
            std::fs::metadata(ca_file).map_err(|e| format!("{key}: CA file `{ca_file}`: {e}"))?;
            options.ca_file = Some(ca_file.to_string());
        }
        Ok(Endpoint {
            uri,
            authority,
            host,
            tls,
            connector: Arc::new(Connector::new(Some(options))),
        })
    }

    /// The URL as configured.
    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// The same server at another URL (a `jwks_uri` from a discovery
    /// document), reusing this connector and its CA.
    pub fn join(&self, key: &str, url: &str) -> Result<Endpoint, String> {
        let mut other = Endpoint::parse(key, url, "")?;
        other.connector = self.connector.clone();
        Ok(other)
    }

    /// Sends one request; the answer's body is cut off at `max_body` bytes
    /// (an error). The whole exchange ends by `deadline`.
    pub async fn send(
        &self,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
        deadline: Duration,
        max_body: usize,
    ) -> Result<Response, String> {
        tokio::time::timeout(deadline, self.exchange(method, headers, body, max_body))
            .await
            .map_err(|_| format!("{}: no answer within {} ms", self.uri, deadline.as_millis()))?
    }

    async fn exchange(
        &self,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
        max_body: usize,
    ) -> Result<Response, String> {
        let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", self.uri);
        let addr: SocketAddr = tokio::net::lookup_host(&self.authority)
            .await
            .map_err(|e| fail(&e))?
            .next()
            .ok_or_else(|| fail(&"resolves to nothing"))?;
        let sni = if self.tls {
            self.host.clone()
        } else {
            String::new()
        };
        let peer = HttpPeer::new(addr, self.tls, sni);
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| fail(&e))?;
        let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req =
            RequestHeader::build(method, path.as_bytes(), Some(8)).map_err(|e| fail(&e))?;
        let host = self.uri.authority().map(|a| a.as_str()).unwrap_or_default();
        req.insert_header("host", host).map_err(|e| fail(&e))?;
        req.insert_header(
            "user-agent",
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| fail(&e))?;
        if let Some(b) = &body {
            req.insert_header("content-length", b.len().to_string())
                .map_err(|e| fail(&e))?;
        }
        for (name, value) in headers {
            req.insert_header(name.to_string(), *value)
                .map_err(|e| fail(&e))?;
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| fail(&e))?;
        if let Some(b) = body {
            session
                .write_request_body(b, true)
                .await
                .map_err(|e| fail(&e))?;
        }
        session.finish_request_body().await.map_err(|e| fail(&e))?;
        session.read_response_header().await.map_err(|e| fail(&e))?;
        let (status, headers) = session
            .response_header()
            .map(|h| (h.status.as_u16(), h.headers.clone()))
            .unwrap_or_default();
        let mut out = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await.map_err(|e| fail(&e))? {
            if out.len() + chunk.len() > max_body {
                return Err(fail(&format_args!("answer larger than {max_body} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body: out.freeze(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::parse("k", "http://127.0.0.1:9000/hooks/x", "").unwrap();
        assert_eq!(e.authority, "127.0.0.1:9000");
        assert!(!e.tls);
        let e = Endpoint::parse("k", "https://idp.example.com/realms/a", "").unwrap();
        assert_eq!(e.authority, "idp.example.com:443");
        assert_eq!(e.host, "idp.example.com");
        assert!(e.tls);
        let e = Endpoint::parse("k", "http://hooks.local/x", "").unwrap();
        assert_eq!(e.authority, "hooks.local:80");
        assert!(Endpoint::parse("k", "ftp://example.com/x", "").is_err());
        assert!(Endpoint::parse("k", "not a url", "").is_err());
        let e = Endpoint::parse("k", "https://[::1]:8443/x", "")
            .unwrap()
            .join("k", "https://[::1]:8443/jwks")
            .unwrap();
        assert_eq!(e.authority, "[::1]:8443");
        assert_eq!(e.url(), "https://[::1]:8443/jwks");
    }
}
