//! The request-level rules of SPEC §15 that come before any route: `Host`
//! present and single, one copy of each credential header in the one spelling
//! the sidecar reads, and a `Connection` header it can honour. Header names
//! are compared folded: lower case, with `_` and `.` read as `-`, because
//! WSGI, CGI and PHP fold them so.

use http::{HeaderMap, HeaderName, header};

use crate::error::Error;

/// pingora refuses a `Connection` header with this many nominations or more.
const MAX_CONNECTION_TOKENS: usize = 10;

/// Whether `name` (lower case, as in a `HeaderMap`), folded, equals `folded`.
pub fn folds_to(name: &str, folded: &str) -> bool {
    name.len() == folded.len() && name.bytes().zip(folded.bytes()).all(|(a, b)| fold(a) == b)
}

/// Whether `name`, folded, starts with `prefix` (lower case, `-` separated).
pub fn folds_with_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && name.bytes().zip(prefix.bytes()).all(|(a, b)| fold(a) == b)
}

fn fold(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// The credential headers of a request: `Authorization`, `X-API-Key`,
/// `X-Tenant-ID` and the OTP header with its `otp` alias.
pub struct CredentialHeaders {
    names: Vec<String>,
}

impl CredentialHeaders {
    pub fn new(otp_header: &str) -> Self {
        let mut names: Vec<String> = ["authorization", "x-api-key", "x-tenant-id", "otp"]
            .into_iter()
            .map(String::from)
            .collect();
        let otp = otp_header.to_ascii_lowercase().replace(['_', '.'], "-");
        if !names.contains(&otp) {
            names.push(otp);
        }
        CredentialHeaders { names }
    }
}

/// 400 `INVALID_REQUEST` unless the request can be read one way: it names
/// its host (in `Host` or an absolute-form target) once, HTTP/1.0 too; each
/// credential header comes once, spelled as the sidecar reads it (the two
/// OTP names count as one header); the `Connection` header is well formed.
/// `Ok` holds the names `Connection` nominates, read once here.
pub fn check(
    has_authority: bool,
    headers: &HeaderMap,
    credentials: &CredentialHeaders,
) -> Result<Vec<HeaderName>, Error> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(Error::invalid("Host", "more than one Host header")),
        // HTTP/1.0 does not require Host, but without it the upstream would
        // get a request for no host at all (pingora does not invent one)
        (None, None) if !has_authority => {
            return Err(Error::invalid("Host", "the request needs a Host header"));
        }
        _ => {}
    }
    let mut seen = [0usize; 8];
    let mut otp_seen = 0;
    for (name, _) in headers.iter() {
        let name = name.as_str();
        let Some(i) = credentials.names.iter().position(|c| folds_to(name, c)) else {
            continue;
        };
        if name != credentials.names[i] {
            return Err(Error::invalid(
                name,
                "a credential header in a spelling the sidecar does not read",
            ));
        }
        // `otp` and the configured OTP header are one header under two names
        let count = if i >= 3 {
            otp_seen += 1;
            otp_seen
        } else {
            seen[i] += 1;
            seen[i]
        };
        if count > 1 {
            return Err(Error::invalid(
                name,
                "a credential header may appear only once",
            ));
        }
    }
    connection_tokens(headers)
}

/// The names the `Connection` header nominates (`close` and `keep-alive`
/// included); 400 for a token that is not an HTTP token (a quoted string,
/// a pseudo-header) or for too many of them.
fn connection_tokens(headers: &HeaderMap) -> Result<Vec<HeaderName>, Error> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            if out.len() + 1 >= MAX_CONNECTION_TOKENS {
                return Err(Error::invalid(
                    "Connection",
                    "too many names in the Connection header",
                ));
            }
            let name = token
                .iter()
                .all(|b| is_tchar(*b))
                .then(|| HeaderName::from_bytes(token).ok())
                .flatten()
                .ok_or_else(|| {
                    Error::invalid("Connection", "the Connection header holds a non-token")
                })?;
            out.push(name);
        }
    }
    Ok(out)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pipeline::test_support::headers;

    fn run(pairs: &[(&str, &str)]) -> Result<Vec<HeaderName>, Error> {
        check(false, &headers(pairs), &CredentialHeaders::new("X-OTP"))
    }

    #[test]
    fn host_must_be_there_once() {
        assert!(run(&[("host", "a")]).is_ok());
        assert!(run(&[]).is_err());
        assert!(run(&[("host", "a"), ("host", "b")]).is_err());
        let none = HeaderMap::new();
        let creds = CredentialHeaders::new("x-otp");
        assert!(check(false, &none, &creds).is_err());
        assert!(check(true, &none, &creds).is_ok());
    }

    #[test]
    fn credential_headers_come_once_in_one_spelling() {
        let h = ("host", "a");
        assert!(run(&[h, ("authorization", "Bearer a"), ("x-otp", "1")]).is_ok());
        for bad in [
            vec![
                h,
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b"),
            ],
            vec![h, ("x-api-key", "a"), ("x-api-key", "b")],
            vec![h, ("x-tenant-id", "a"), ("x-tenant-id", "b")],
            vec![h, ("x-otp", "1"), ("otp", "2")],
            vec![h, ("x-tenant-id", "a"), ("x_tenant_id", "b")],
            vec![h, ("x.api.key", "a")],
            vec![h, ("x_otp", "1")],
        ] {
            assert!(run(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connection_tokens_are_checked() {
        let h = ("host", "a");
        assert!(run(&[h, ("connection", "close, X-Forwarded-For")]).is_ok());
        assert!(run(&[h, ("connection", "\"x-forwarded-for\"")]).is_err());
        assert!(run(&[h, ("connection", ":authority")]).is_err());
        let many = (0..10)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(run(&[h, ("connection", &many)]).is_err());
        let tokens = connection_tokens(&headers(&[("connection", "Keep-Alive, X-A")])).unwrap();
        assert_eq!(tokens, ["keep-alive", "x-a"]);
    }

    #[test]
    fn folding() {
        assert!(folds_to("x_auth.user-id", "x-auth-user-id"));
        assert!(folds_with_prefix("x_forwarded_host", "x-forwarded-"));
        assert!(!folds_with_prefix("x-forward", "x-forwarded-"));
    }
}
