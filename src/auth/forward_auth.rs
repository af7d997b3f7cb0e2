//! `GET /auth/verify`, the forward-auth endpoint (nginx `auth_request`, Traefik
//! ForwardAuth, Envoy ext_authz over HTTP): the proxy path's pipeline applied
//! to the request the caller describes, answered with 200 and the identity
//! headers of SPEC §8, or with the 401/403 the proxy would have given.

use http::Method;

use super::call::note_caller;
use crate::app::App;
use crate::error::Error;
use crate::http_types::{AuthRequest, HttpResponse};
use crate::pipeline::{identity_headers, path};

pub const FORWARDED_METHOD: &str = "x-forwarded-method";
pub const FORWARDED_URI: &str = "x-forwarded-uri";
pub const ORIGINAL_URI: &str = "x-original-uri";

/// The method and normalised path of the request being asked about:
/// `X-Forwarded-Method` (else this request's own method, as Envoy sends it)
/// and `X-Forwarded-Uri` / `X-Original-URI` (else what follows `/verify`, as
/// with Envoy's `path_prefix`, else `/`); when both headers are sent they must
/// agree (SPEC §15: one reading). The query never takes part.
pub fn described_request(req: &AuthRequest) -> Result<(Method, String), Error> {
    let method = match req.header(FORWARDED_METHOD).map(str::trim) {
        Some(m) if !m.is_empty() => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::invalid("X-Forwarded-Method", "not an HTTP method"))?,
        _ => req.method.clone(),
    };
    let forwarded = req.header(FORWARDED_URI).map(str::trim);
    let original = req.header(ORIGINAL_URI).map(str::trim);
    // two descriptions of the request: an ingress sets one, a client may have sent the other
    if let (Some(f), Some(o)) = (forwarded, original)
        && f != o
    {
        return Err(Error::invalid(
            "X-Forwarded-Uri",
            "X-Forwarded-Uri and X-Original-URI describe different requests",
        ));
    }
    let target = forwarded.or(original).filter(|t| !t.is_empty());
    let raw_path = match target {
        Some(t) => {
            let uri = t
                .parse::<http::Uri>()
                .map_err(|_| Error::invalid("X-Forwarded-Uri", "not a request target"))?;
            uri.path().to_string()
        }
        None => match req.path.trim_end_matches('/').strip_prefix("/verify") {
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            _ => "/".to_string(),
        },
    };
    let path = if raw_path.is_empty() {
        "/".to_string()
    } else {
        path::normalize(&raw_path)?.into_owned()
    };
    Ok((method, path))
}

/// The body of a forward-auth answer.
/// `GET /auth/verify` (any method): 200 with the identity headers and
/// **no body**: nginx's `auth_request` never reads a
/// subrequest's body, so an answer with one cannot go back to its
/// keep-alive pool and every check would cost a new TCP connection. A
/// public route passed without a credential has no identity headers. The
/// refusals are the proxy's (401/403 with SPEC's JSON error).
pub async fn verify(app: &App, req: &AuthRequest) -> Result<HttpResponse, Error> {
    if let Some(name) = req
        .headers
        .keys()
        .find(|n| app.pipeline.identity_headers.is_identity_header(n.as_str()))
    {
        return Err(Error::invalid(
            name.as_str(),
            "identity headers are set by the sidecar, never by the client",
        ));
    }
    let (method, path) = described_request(req)?;
    let routes = app.pipeline.routes();
    let policy = routes.select_all(&method, &path);
    let who = app.pipeline.check(&policy, &req.headers).await?;
    let mut response = HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: bytes::Bytes::new(),
    };
    if let Some(who) = who {
        note_caller(req, who.identity.clone());
        let assertion = app.pipeline.assertion(&who.identity);
        for (name, value) in identity_headers::identity_values(
            &app.pipeline.identity_headers,
            &who,
            assertion.as_deref(),
        ) {
            response.headers.push((
                name.as_str().to_string().into(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, headers: &[(&str, &str)]) -> AuthRequest {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        AuthRequest {
            method,
            path: path.into(),
            query: None,
            headers: h,
            body: bytes::Bytes::new(),
            client_ip: "127.0.0.1".parse().unwrap(),
            request_id: "r".into(),
            caller: Default::default(),
        }
    }

    #[test]
    fn the_described_request_comes_from_the_forwarded_headers() {
        let r = req(
            Method::GET,
            "/verify",
            &[
                ("x-forwarded-method", "post"),
                ("x-forwarded-uri", "/payments/../payments/1?x=1"),
            ],
        );
        assert_eq!(
            described_request(&r).unwrap(),
            (Method::POST, "/payments/1".to_string())
        );
        let r = req(Method::GET, "/verify", &[("x-original-uri", "/a//b?q")]);
        assert_eq!(
            described_request(&r).unwrap(),
            (Method::GET, "/a/b".to_string())
        );
        let r = req(
            Method::GET,
            "/verify",
            &[("x-forwarded-uri", "https://app.example.com/r/1?x")],
        );
        assert_eq!(described_request(&r).unwrap().1, "/r/1");
    }

    #[test]
    fn two_different_descriptions_are_400() {
        let r = req(
            Method::GET,
            "/verify",
            &[
                ("x-forwarded-uri", "/public/x"),
                ("x-original-uri", "/admin/x"),
            ],
        );
        assert!(matches!(
            described_request(&r),
            Err(Error::InvalidRequest { .. })
        ));
        let r = req(
            Method::GET,
            "/verify",
            &[
                ("x-forwarded-uri", "/admin/x"),
                ("x-original-uri", "/admin/x"),
            ],
        );
        assert_eq!(described_request(&r).unwrap().1, "/admin/x");
    }

    #[test]
    fn without_forwarded_headers_the_request_itself_is_described() {
        let r = req(Method::DELETE, "/verify/orders/7", &[]);
        assert_eq!(
            described_request(&r).unwrap(),
            (Method::DELETE, "/orders/7".to_string())
        );
        let r = req(Method::GET, "/verify", &[]);
        assert_eq!(described_request(&r).unwrap().1, "/");
    }

    #[test]
    fn escaping_paths_and_bad_methods_are_400() {
        for (k, v) in [
            ("x-forwarded-uri", "/public/../../admin"),
            ("x-forwarded-uri", "/a%2Fb"),
            ("x-forwarded-method", "GE T"),
        ] {
            let r = req(Method::GET, "/verify", &[(k, v)]);
            assert!(
                matches!(described_request(&r), Err(Error::InvalidRequest { .. })),
                "{k}: {v}"
            );
        }
    }
}
