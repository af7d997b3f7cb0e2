//! The pingora `ProxyHttp` implementation, kept thin: each hook calls the
//! pipeline, the `/auth` router or the response writer and nothing else.
//!
//! ```text
//!  downstream request ── unreadable (bad framing, two Host, CONNECT) → early_error_response (JSON 400/405)
//!        │
//!  request_filter ── edge::check (400) ── Connection nominations of our own headers dropped
//!        │
//!        ├───────── normalise path (400) ─┬─ /auth/**           → auth::handle   → respond
//!        │                                 ├─ /.well-known/jwks → respond
//!        │                                 └─ else: route policies of every reading of the path
//!        │                                          → Pipeline::check (401/403 → respond)
//!        │                                          → chunked body: first 64 KiB read and checked here (malformed → 400)
//!  upstream_peer ────────── the prebuilt peer (resolved once at start)
//!  upstream_request_filter ─ identity_headers::upstream_edits (strip, set, assertion, X-Forwarded-*)
//!  upstream_response_filter  upstream latency
//!  response_filter ──────── X-Request-Id on the answer
//!  fail_to_proxy ────────── 502 UPSTREAM_UNAVAILABLE / 504 UPSTREAM_TIMEOUT / 400 bad body framing as JSON
//!  logging ──────────────── metrics + one JSON log line
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::app::{App, InFlight};
use crate::error::Error as AuthError;
use crate::http_types::AuthRequest;
use crate::metrics;
use crate::pipeline::authn::credential::Authenticated;
use crate::pipeline::client::{self, ClientInfo};
use crate::pipeline::edge::{self, CredentialHeaders};
use crate::pipeline::{identity_headers, path};
use crate::vocab::Identity;

pub mod admin;
mod respond;

pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How much of a chunked request body is read and checked before the
/// upstream is contacted.
const PREREAD_LIMIT: usize = 64 * 1024;

/// The route label of a request, for metrics and logs.
pub enum RouteName {
    Static(&'static str),
    Policy(Arc<str>),
}

impl RouteName {
    fn as_str(&self) -> &str {
        match self {
            RouteName::Static(s) => s,
            RouteName::Policy(s) => s,
        }
    }
}

/// Per-request state, small and typed.
pub struct RequestCtx {
    start: Instant,
    request_id: String,
    route: RouteName,
    client: ClientInfo,
    /// The normalised path when it differs from what the client sent.
    rewritten_path: Option<String>,
    /// The verified credential of a proxied request.
    who: Option<Arc<Authenticated>>,
    /// Who an `/auth` request authenticated as (for the access log).
    caller: Option<Arc<Identity>>,
    /// Status of a response the sidecar wrote itself.
    status: Option<u16>,
    upstream_start: Option<Instant>,
    /// The start of a chunked body, read before proxying (`preread_chunked`).
    preread: Option<bytes::Bytes>,
    _in_flight: InFlight,
}

pub struct Proxy {
    app: Arc<App>,
    peer: HttpPeer,
    credentials: CredentialHeaders,
}

/// Headers the sidecar writes upstream itself: a `Connection` header naming
/// them cannot take them away (SPEC §15), so the nomination is dropped.
fn set_by_sidecar(app: &App, name: &http::HeaderName) -> bool {
    name == http::header::HOST
        || name == identity_headers::REQUEST_ID.name()
        || edge::folds_with_prefix(name.as_str(), "x-forwarded-")
        || app
            .pipeline
            .identity_headers
            .is_identity_header(name.as_str())
}

impl Proxy {
    pub fn new(app: Arc<App>, peer: HttpPeer) -> Self {
        let credentials = CredentialHeaders::new(&app.config.proxy.otp_header);
        Proxy {
            app,
            peer,
            credentials,
        }
    }

    /// SPEC §15's request-level rules; `Err` is answered by the caller.
    fn check_edge(&self, session: &mut Session) -> std::result::Result<(), AuthError> {
        let has_authority = request_authority(session).is_some();
        let header = session.req_header();
        let tokens = edge::check(has_authority, &header.headers, &self.credentials)?;
        if header.headers.contains_key(http::header::TRANSFER_ENCODING)
            && sent_content_length(session)
        {
            return Err(AuthError::invalid(
                "Transfer-Encoding",
                "both Transfer-Encoding and Content-Length: the body's length is ambiguous",
            ));
        }
        // `Connection: X-Forwarded-For`: the client's copy goes (it was hop-by-hop),
        // ours is set later; pingora would refuse the nomination outright
        if tokens.iter().any(|t| set_by_sidecar(&self.app, t)) {
            let (own, kept): (Vec<_>, Vec<_>) = tokens
                .into_iter()
                .partition(|t| set_by_sidecar(&self.app, t));
            let header = session.req_header_mut();
            for name in own.iter().filter(|n| **n != http::header::HOST) {
                header.remove_header(name);
            }
            let kept: Vec<&str> = kept.iter().map(http::HeaderName::as_str).collect();
            if kept.is_empty() {
                header.remove_header(&http::header::CONNECTION);
            } else {
                header
                    .insert_header(http::header::CONNECTION, kept.join(", "))
                    .map_err(|_| AuthError::invalid("Connection", "unreadable"))?;
            }
        }
        Ok(())
    }

    /// Reads the start of a chunked request body (up to [`PREREAD_LIMIT`],
    /// or all of it) before the upstream is contacted, so a malformed chunk is
    /// a 400 and the upstream never sees part of a request that cannot finish;
    /// pingora sends these bytes first ([`ProxyHttp::preread_body`]). The
    /// rest of a longer body streams (nginx buffers all of it by default).
    /// Not done when the client waits for `100 Continue`.
    async fn preread_chunked(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), AuthError> {
        let headers = &session.req_header().headers;
        if !headers.contains_key(http::header::TRANSFER_ENCODING)
            || headers.contains_key(http::header::EXPECT)
        {
            return Ok(());
        }
        let mut read = bytes::BytesMut::new();
        while read.len() < PREREAD_LIMIT && !session.is_body_done() {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(_) => return Err(AuthError::invalid("body", "malformed chunked body")),
            }
        }
        if !read.is_empty() {
            ctx.preread = Some(read.freeze());
        }
        Ok(())
    }

    async fn answer_auth(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        path: &str,
    ) -> Result<()> {
        let limit = self.app.config.proxy.max_auth_body_bytes;
        let body = match respond::read_body(session, limit).await {
            Ok(body) => body,
            Err(e) => return respond::error(session, ctx, e).await,
        };
        let prefix_len = self.app.config.proxy.auth_prefix.len();
        let header = session.req_header();
        let req = AuthRequest {
            method: header.method.clone(),
            path: if path.len() > prefix_len {
                path[prefix_len..].to_string()
            } else {
                "/".to_string()
            },
            query: header.uri.query().map(str::to_string),
            headers: header.headers.clone(),
            body,
            client_ip: ctx.client.ip,
            request_id: ctx.request_id.clone(),
            caller: OnceLock::new(),
        };
        let (response, label) = crate::auth::handle(&self.app, &req).await;
        ctx.route = RouteName::Static(label);
        ctx.caller = req.caller.into_inner();
        respond::write(session, ctx, response).await
    }
}

/// The authority of an absolute-form target (`GET http://h/p HTTP/1.1`):
/// pingora keeps it in the raw target, not in the parsed URI, and has checked
/// that a `Host` sent beside it is the same.
fn absolute_form_authority(header: &RequestHeader) -> Option<&[u8]> {
    pingora::http::authority::raw_target_authority(header.raw_path()).authority()
}

/// The authority the request names besides `Host`: an HTTP/1 absolute-form
/// target's, or HTTP/2's `:authority` (pingora refuses an h2 request whose
/// `Host` disagrees with it, or that has neither).
fn request_authority(session: &Session) -> Option<&[u8]> {
    let header = session.req_header();
    if session.is_http2() {
        header.uri.authority().map(|a| a.as_str().as_bytes())
    } else {
        absolute_form_authority(header)
    }
}

/// Whether the client sent `Content-Length`: pingora drops it from the parsed
/// header when `Transfer-Encoding` is there too (RFC 9112 §6.3), so the raw
/// head is read again, with httparse, for the rare request that has both.
fn sent_content_length(session: &Session) -> bool {
    let pingora::protocols::http::ServerSession::H1(h1) = session.as_downstream() else {
        return false;
    };
    let raw = h1.get_headers_raw_bytes();
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    // pingora parsed this head already; a failure here cannot happen, and is not a yes
    req.parse(&raw).is_ok()
        && req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("content-length"))
}

fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: String::new(),
            route: RouteName::Static("unmatched"),
            client: ClientInfo {
                peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                peer_trusted: false,
                ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
            rewritten_path: None,
            who: None,
            caller: None,
            status: None,
            upstream_start: None,
            preread: None,
            _in_flight: self.app.track_request(),
        }
    }

    /// The JSON answer (with a new `X-Request-Id`) to what pingora refuses
    /// before any other hook: an unreadable or ambiguously framed request
    /// head, two `Host` headers, `CONNECT` (vendor/README.md).
    fn early_error_response(
        &self,
        status: u16,
        error: Option<&Error>,
    ) -> Option<(ResponseHeader, bytes::Bytes)> {
        let err = match status {
            405 => AuthError::MethodNotAllowed {
                allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            },
            _ => AuthError::bad_request(
                error
                    .and_then(|e| e.context.as_ref())
                    .map(|c| format!("the request cannot be read: {}", c.as_str()))
                    .unwrap_or_else(|| "the request cannot be read".to_string()),
            ),
        };
        let request_id = client::request_id(&http::HeaderMap::new());
        metrics::observe_request("edge", "OTHER", err.status(), "http1", 0.0);
        tracing::info!(
            target: "portcullis::access",
            request_id = %request_id,
            route = "edge",
            status = err.status(),
            reason = error.map(|e| e.to_string()).unwrap_or_default(),
            "request refused before routing"
        );
        respond::header_of(err.render(&request_id), &request_id).ok()
    }

    fn preread_body(&self, ctx: &RequestCtx) -> Option<bytes::Bytes> {
        ctx.preread.clone()
    }

    /// No compression module: nothing here compresses.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let header = session.req_header();
        ctx.request_id = client::request_id(&header.headers);
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        ctx.client = self.app.pipeline.client_info(peer, &header.headers);
        if let Err(e) = self.check_edge(session) {
            respond::error(session, ctx, e).await?;
            return Ok(true);
        }
        let header = session.req_header();
        let raw_path = header.uri.path();
        let path = match path::normalize(raw_path) {
            Ok(p) => p,
            Err(e) => {
                respond::error(session, ctx, e).await?;
                return Ok(true);
            }
        };
        if is_under(&path, &self.app.config.proxy.auth_prefix) {
            let path = path.into_owned();
            self.answer_auth(session, ctx, &path).await?;
            return Ok(true);
        }
        if path == JWKS_PATH {
            ctx.route = RouteName::Static("jwks");
            let response = respond::jwks(&self.app, &session.req_header().method, &ctx.request_id);
            respond::write(session, ctx, response).await?;
            return Ok(true);
        }
        let header = session.req_header();
        let routes = self.app.pipeline.routes();
        let selection = routes.select_all(&header.method, &path);
        ctx.route = RouteName::Policy(selection.primary.name.clone());
        let verdict = self.app.pipeline.check(&selection, &header.headers).await;
        // an absolute-form target goes upstream in origin form, its authority as Host
        let absolute = absolute_form_authority(header).is_some();
        let rewritten = (path != raw_path || absolute).then(|| path.into_owned());
        let verdict = match verdict {
            Ok(identity) => self.preread_chunked(session, ctx).await.map(|()| identity),
            Err(e) => Err(e),
        };
        match verdict {
            Ok(who) => {
                ctx.who = who;
                ctx.rewritten_path = rewritten;
                Ok(false)
            }
            Err(e) => {
                respond::error(session, ctx, e).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let authority =
            request_authority(session).and_then(|a| http::HeaderValue::from_bytes(a).ok());
        let downstream = session.req_header();
        let host = authority
            .clone()
            .or_else(|| downstream.headers.get(http::header::HOST).cloned());
        let edits = self.app.pipeline.upstream_edits(
            &downstream.headers,
            host.as_ref(),
            ctx.who.as_deref(),
            &ctx.request_id,
            &ctx.client,
        );
        for name in &edits.remove {
            upstream.remove_header(name);
        }
        for (name, value) in edits.insert {
            upstream.insert_header(name.wire(), value)?;
        }
        if let Some(path) = &ctx.rewritten_path {
            let target = match upstream.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let uri = target
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InternalError, "rewritten path", e))?;
            upstream.set_uri(uri);
        }
        // the authority of an absolute-form target or of an h2 request goes upstream as Host
        if let Some(authority) = authority {
            upstream.insert_header(http::header::HOST, authority)?;
        }
        ctx.upstream_start = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            metrics::UPSTREAM_SECONDS.observe(start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let name = &identity_headers::REQUEST_ID;
        if !response.headers.contains_key(name.name()) {
            response.insert_header(name.wire(), ctx.request_id.as_str())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (error, kind) = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                (Some(AuthError::UpstreamTimeout), "timeout")
            }
            ErrorType::ConnectTimedout => (Some(AuthError::UpstreamTimeout), "connect_timeout"),
            ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
                (Some(AuthError::UpstreamUnavailable), "connect")
            }
            // upstream.tls: a certificate not signed by upstream.ca_file, a
            // name that is not upstream.sni, no common protocol version
            ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
                if e.esource() != &ErrorSource::Downstream =>
            {
                (Some(AuthError::UpstreamUnavailable), "tls")
            }
            // a malformed chunk or framing found while the body streams
            ErrorType::InvalidHTTPHeader | ErrorType::Custom("InvalidChunk")
                if e.esource() == &ErrorSource::Downstream =>
            {
                (
                    Some(AuthError::invalid("body", "malformed request body framing")),
                    "downstream_framing",
                )
            }
            _ => match e.esource() {
                ErrorSource::Upstream => (Some(AuthError::UpstreamUnavailable), "upstream"),
                // the client went away or sent garbage: nothing useful to answer
                ErrorSource::Downstream => (None, "downstream"),
                _ => (Some(AuthError::Internal), "internal"),
            },
        };
        metrics::UPSTREAM_ERRORS.with_label_values(&[kind]).inc();
        // pingora will not reuse this connection: say so, so clients do not either
        session.set_keepalive(None);
        let code = match error {
            // an answer already began: it cannot be replaced, only cut
            Some(_) if session.response_written().is_some() => 0,
            Some(err) => {
                let status = err.status();
                if respond::error(session, ctx, err).await.is_err() {
                    0
                } else {
                    status
                }
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = ctx.status.unwrap_or_else(|| {
            session
                .response_written()
                .map(|r| r.status.as_u16())
                .unwrap_or(0)
        });
        let method = metrics::method_label(&session.req_header().method);
        let route = ctx.route.as_str();
        let elapsed = ctx.start.elapsed();
        let protocol = metrics::protocol_label(
            session.is_http2(),
            crate::error::is_grpc(&session.req_header().headers),
        );
        metrics::observe_request(route, method, status, protocol, elapsed.as_secs_f64());
        let identity = ctx
            .who
            .as_deref()
            .map(|w| &*w.identity)
            .or(ctx.caller.as_deref());
        tracing::info!(
            target: "portcullis::access",
            request_id = %ctx.request_id,
            route,
            method,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            client_ip = %ctx.client.ip,
            credential = identity.map(|i| i.method.as_str()).unwrap_or("none"),
            user_id = identity.map(|i| i.user_id.to_string()),
            tenant_id = identity.map(|i| i.tenant_id.to_string()),
            "request"
        );
    }
}
