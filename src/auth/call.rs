//! What an `/auth` handler is given and gives back, below the route table:
//! the JSON body parser whose errors name the offending field
//! ([`parse_body`]), the typed answer ([`Reply`]), the common small answers,
//! and [`note_caller`]. Handlers import this module, never the table.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::http_types::{AuthRequest, HttpResponse};
use crate::vocab::Identity;

/// A handler's answer: a status, extra headers, and a body rendered as JSON
/// by the route table's adapter (`Content-Type: application/json` first).
#[derive(Debug)]
pub struct Reply<T> {
    pub status: u16,
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: T,
}

impl<T: Serialize> Reply<T> {
    /// 200 with `body`.
    pub fn ok(body: T) -> Self {
        Reply::with_status(200, body)
    }

    /// 201, for what a request created.
    pub fn created(body: T) -> Self {
        Reply::with_status(201, body)
    }

    pub fn with_status(status: u16, body: T) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header (lower-case name), after `Content-Type`.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The response the sidecar writes.
    pub fn render(self) -> HttpResponse {
        let mut response = HttpResponse::json(self.status, &self.body);
        response.headers.extend(self.headers);
        response
    }
}

/// `{"message": …}`.
#[derive(Debug, Serialize)]
pub struct Message {
    pub message: &'static str,
}

/// `{"message": …, "success": true}` (keys in the sorted order the answers
/// always had).
#[derive(Debug, Serialize)]
pub struct Done {
    pub message: &'static str,
    pub success: bool,
}

impl Done {
    pub fn new(message: &'static str) -> Self {
        Done {
            message,
            success: true,
        }
    }
}

/// `{"items": […]}`.
#[derive(Debug, Serialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// Remembers who the request authenticated as (first credential wins), for
/// the access log.
pub fn note_caller(req: &AuthRequest, identity: Arc<Identity>) -> Arc<Identity> {
    let _ = req.caller.set(Arc::clone(&identity));
    identity
}

/// Parses a JSON body into `T`; the error names the offending field. An
/// empty body reads as `{}`.
pub fn parse_body<T: DeserializeOwned>(req: &AuthRequest) -> Result<T, Error> {
    let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &req.body
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::bad_request("the body must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let reason = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the body is not valid JSON".to_string()
            }
            _ => strip_position(&inner.to_string()),
        };
        if path.is_empty() || path == "." {
            if reason.starts_with("missing field") {
                let field = reason.split('`').nth(1).unwrap_or("body").to_string();
                return Error::invalid(&field, format!("{field} is required"));
            }
            Error::bad_request(reason)
        } else {
            Error::invalid(&path, reason)
        }
    })
}

/// serde_json appends " at line 1 column 12"; clients do not need it.
fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)] // fields exist to be parsed
    struct Body {
        email: String,
        age: Option<u32>,
    }

    fn req(body: &str) -> AuthRequest {
        AuthRequest {
            method: Method::POST,
            path: "/x".into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
            client_ip: "127.0.0.1".parse().unwrap(),
            request_id: "r".into(),
            caller: Default::default(),
        }
    }

    fn field(e: Error) -> Option<String> {
        match e {
            Error::InvalidRequest { field, .. } => field,
            other => panic!("expected INVALID_REQUEST, got {other:?}"),
        }
    }

    #[test]
    fn body_errors_name_the_field() {
        assert_eq!(
            field(parse_body::<Body>(&req("{}")).unwrap_err()).as_deref(),
            Some("email")
        );
        assert_eq!(
            field(parse_body::<Body>(&req(r#"{"email": 5}"#)).unwrap_err()).as_deref(),
            Some("email")
        );
        assert_eq!(
            field(parse_body::<Body>(&req(r#"{"email": "a", "age": "x"}"#)).unwrap_err())
                .as_deref(),
            Some("age")
        );
        assert_eq!(
            field(parse_body::<Body>(&req("not json")).unwrap_err()),
            None
        );
        assert_eq!(field(parse_body::<Body>(&req("[1]")).unwrap_err()), None);
        assert!(parse_body::<Body>(&req(r#"{"email": "a", "extra": true}"#)).is_ok());
    }

    #[test]
    fn a_reply_renders_json_with_its_status_and_headers() {
        let r = Reply::created(Done::new("made"))
            .with_header("location", "/x")
            .render();
        assert_eq!(r.status, 201);
        assert_eq!(r.body.as_ref(), br#"{"message":"made","success":true}"#);
        assert_eq!(
            r.headers,
            vec![
                ("content-type".into(), "application/json".to_string()),
                ("location".into(), "/x".to_string()),
            ]
        );
    }
}
