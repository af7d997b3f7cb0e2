//! The one adapter between [`HttpResponse`] and pingora: writes a complete
//! response the sidecar answers itself, reads `/auth` bodies within their
//! size limit, and serves the JWKS.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::RequestCtx;
use crate::app::App;
use crate::error::Error as AuthError;
use crate::http_types::HttpResponse;
use crate::pipeline::identity_headers;

/// `response` as pingora's header and body, with `Content-Length`,
/// `X-Request-Id` and (unless set) `Cache-Control: no-store`.
pub fn header_of(response: HttpResponse, request_id: &str) -> Result<(ResponseHeader, Bytes)> {
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 3))?;
    for (name, value) in response.headers {
        match name {
            Cow::Borrowed(name) => header.insert_header(name, value)?,
            Cow::Owned(name) => header.insert_header(name, value)?,
        };
    }
    header.insert_header("content-length", response.body.len().to_string())?;
    header.insert_header(identity_headers::REQUEST_ID.wire(), request_id)?;
    if header.headers.get("cache-control").is_none() {
        header.insert_header("cache-control", "no-store")?;
    }
    Ok((header, response.body))
}

/// Writes `response` with `Content-Length` and `X-Request-Id`.
pub async fn write(
    session: &mut Session,
    ctx: &mut RequestCtx,
    response: HttpResponse,
) -> Result<()> {
    let status = response.status;
    let (header, body) = header_of(response, &ctx.request_id)?;
    ctx.status = Some(status);
    // an empty answer ends with its header (a gRPC "Trailers-Only" reply must)
    let end = session.req_header().method == http::Method::HEAD || body.is_empty();
    session.write_response_header(Box::new(header), end).await?;
    if !end {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes `error` in SPEC §5's shape.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, error: AuthError) -> Result<()> {
    if matches!(
        error,
        AuthError::PayloadTooLarge | AuthError::InvalidRequest { .. }
    ) {
        // the rest of the body was not read: do not reuse the connection
        session.set_keepalive(None);
    }
    // a gRPC client reads grpc-status, not the HTTP status or a JSON body
    let status = error.status();
    if crate::error::is_grpc(&session.req_header().headers) && session.is_http2() {
        write_grpc(session, ctx, error.render_grpc()).await?;
    } else {
        write(session, ctx, error.render(&ctx.request_id)).await?;
    }
    // logs and metrics keep the HTTP meaning of the refusal
    ctx.status = Some(status);
    Ok(())
}

/// Writes a gRPC refusal over HTTP/2: the header, then `grpc-status` and
/// `grpc-message` as trailers ending the stream, which is where a gRPC client
/// looks for them (pingora ends an h2 answer with an empty DATA frame, which
/// a "Trailers-Only" header cannot survive).
async fn write_grpc(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut response: HttpResponse,
) -> Result<()> {
    let mut trailers = http::HeaderMap::new();
    response.headers.retain(|(name, value)| {
        let trailer = name.starts_with("grpc-");
        if trailer
            && let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            )
        {
            trailers.insert(n, v);
        }
        !trailer
    });
    let (mut header, _) = header_of(response, &ctx.request_id)?;
    // a gRPC answer has no length: its end is the trailers
    header.remove_header("content-length");
    ctx.status = Some(header.status.as_u16());
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_trailers(trailers).await
}

/// The whole request body, refused with 413 past `limit` bytes.
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, AuthError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(AuthError::PayloadTooLarge);
    }
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(AuthError::PayloadTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(_) => return Err(AuthError::bad_request("the request body could not be read")),
        }
    }
}

/// `GET /.well-known/jwks.json`.
pub fn jwks(app: &App, method: &http::Method, request_id: &str) -> HttpResponse {
    if method != http::Method::GET && method != http::Method::HEAD {
        return AuthError::MethodNotAllowed { allow: "GET" }.render(request_id);
    }
    HttpResponse::text(200, "application/json", app.keys.current().jwks.clone())
        .with_header("cache-control", "public, max-age=60")
}
