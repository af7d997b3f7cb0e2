//! Plain HTTP values shared by the `/auth` handlers and the pingora adapter:
//! the parsed request a handler gets ([`AuthRequest`]) and the response it
//! returns ([`HttpResponse`]). No pingora types here, so handlers test without a socket.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::Serialize;

use crate::vocab::Identity;

/// A request to a route the sidecar answers itself, with its body read.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub method: Method,
    /// Normalised path below the auth prefix, e.g. `/login`.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub client_ip: IpAddr,
    pub request_id: String,
    /// The credential a handler authenticated, kept for the access log.
    pub caller: OnceLock<Arc<Identity>>,
}

impl AuthRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query string's pairs, percent-decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }

    pub fn user_agent(&self) -> Option<String> {
        self.header("user-agent")
            .map(|ua| ua.chars().take(256).collect())
    }
}

/// A complete response written by the sidecar itself.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Lower-case names; owned ones are names built from config (identity headers).
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        // serialising our own response types cannot fail (string keys only)
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body),
        }
    }

    pub fn text(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), content_type.to_string())],
            body: body.into(),
        }
    }

    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}
