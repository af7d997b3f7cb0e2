//! Responses and assertions, raw HTTP (what reqwest would normalise), and
//! the request builder.

use super::*;

// --------------------------------------------------------------------------
// responses and assertions
// --------------------------------------------------------------------------

/// An HTTP response, kept whole so that assertions can print it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// lower-cased names, in order received
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// "METHOD url" of the request, for messages
    pub what: String,
}

impl Resp {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn describe(&self) -> String {
        let mut body = self.body.clone();
        if body.len() > 1200 {
            let mut cut = 1200;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        format!("{} -> {} {:?}", self.what, self.status, body)
    }

    /// The body as JSON (panics with the response when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.describe()))
    }
}

/// Asserts the status; returns the JSON body (Null when empty).
#[track_caller]
pub fn assert_status(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "expected {status}, got {}", r.describe());
    if r.body.trim().is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Substrings that must never be in an error body (SQL, traces, paths).
const LEAKS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "sqlite",
    "SQLITE",
    "Sqlite",
    "sqlx",
    "rusqlite",
    "panicked",
    "stack backtrace",
    "RUST_BACKTRACE",
    ".rs:",
    "src/",
    "/tmp/",
    "/home/",
    "/root/",
    "/work/",
    "/usr/",
    "/var/",
    "/opt/",
    ".cargo/",
];

/// Error bodies never carry SQL, stack traces or file paths.
#[track_caller]
pub fn assert_no_leak(text: &str) {
    for pat in LEAKS {
        assert!(
            !text.contains(pat),
            "response leaks internals ({pat:?}): {text:?}"
        );
    }
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_string_lossy();
    if tmp.len() > 1 {
        assert!(
            !text.contains(tmp.trim_end_matches('/')),
            "response leaks a file path: {text:?}"
        );
    }
}

/// Checks the status and the SPEC §5 error shape, whatever the code; returns
/// the `error` object.
#[track_caller]
pub fn assert_error_shape(r: &Resp, status: u16) -> Value {
    assert_eq!(
        r.status,
        status,
        "expected an error {status}, got {}",
        r.describe()
    );
    let body: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", r.describe()));
    let err = body
        .get("error")
        .filter(|e| e.is_object())
        .unwrap_or_else(|| panic!("error body must be {{\"error\": {{…}}}}: {}", r.describe()))
        .clone();
    let code = err.get("code").and_then(Value::as_str).unwrap_or_default();
    assert!(!code.is_empty(), "error without code: {}", r.describe());
    let msg = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(!msg.is_empty(), "error without message: {}", r.describe());
    let rid = err
        .get("requestId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(!rid.is_empty(), "error without requestId: {}", r.describe());
    assert_eq!(
        r.header("x-request-id"),
        Some(rid),
        "X-Request-Id header must equal error.requestId: {}",
        r.describe()
    );
    assert_no_leak(&r.body);
    err
}

/// Checks status, the error shape and that the code is one of `codes`.
#[track_caller]
pub fn assert_error_any(r: &Resp, status: u16, codes: &[&str]) -> Value {
    let err = assert_error_shape(r, status);
    let code = err["code"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "expected error code in {codes:?}, got {code:?}: {}",
        r.describe()
    );
    err
}

/// Checks status, the error shape and the code; returns the `error` object.
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, code: &str) -> Value {
    assert_error_any(r, status, &[code])
}

/// The user object of SPEC §5.
#[track_caller]
pub fn check_user_object(u: &Value) {
    assert!(u.is_object(), "user is not an object: {u}");
    for f in [
        "id",
        "tenantId",
        "email",
        "firstName",
        "familyName",
        "name",
        "roles",
        "permissions",
        "mfaEnabled",
        "emailVerified",
        "status",
        "createdAt",
        "updatedAt",
    ] {
        assert!(u.get(f).is_some(), "user object lacks {f:?}: {u}");
    }
    assert!(
        is_uuid(u["id"].as_str().unwrap_or_default()),
        "id is not a UUID: {u}"
    );
    assert!(
        is_uuid(u["tenantId"].as_str().unwrap_or_default()),
        "tenantId is not a UUID: {u}"
    );
    str_list(&u["roles"]);
    str_list(&u["permissions"]);
    assert!(u["mfaEnabled"].is_boolean(), "mfaEnabled: {u}");
    assert!(u["emailVerified"].is_boolean(), "emailVerified: {u}");
    assert!(
        ["active", "disabled", "locked"].contains(&u["status"].as_str().unwrap_or_default()),
        "status: {u}"
    );
    parse_time(u["createdAt"].as_str().unwrap_or_default());
    parse_time(u["updatedAt"].as_str().unwrap_or_default());
    for secret in [
        "password",
        "passwordHash",
        "password_hash",
        "totpSecret",
        "secret",
        "hash",
    ] {
        assert!(
            u.get(secret).is_none(),
            "user object exposes {secret:?}: {u}"
        );
    }
}

/// `rt_` + 43 base64url characters.
pub fn is_refresh_token(s: &str) -> bool {
    s.strip_prefix("rt_").is_some_and(|rest| {
        rest.len() == 43
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// The token response of SPEC §5 with default TTLs.
#[track_caller]
pub fn check_token_response(body: &Value) {
    let at = body["accessToken"].as_str().unwrap_or_default();
    assert_eq!(
        at.split('.').count(),
        3,
        "accessToken is not a compact JWT: {body}"
    );
    assert!(
        at.split('.').all(|p| !p.is_empty()),
        "accessToken has an empty part: {body}"
    );
    let rt = body["refreshToken"].as_str().unwrap_or_default();
    assert!(
        is_refresh_token(rt),
        "refreshToken must be rt_ + 43 base64url chars: {rt:?}"
    );
    assert_eq!(body["tokenType"], "Bearer", "{body}");
    assert_eq!(body["expiresIn"], 900, "{body}");
    assert_eq!(body["refreshTokenExpiresIn"], 604800, "{body}");
    assert!(body.get("mfaRequired").is_none_or(|v| v == false), "{body}");
    check_user_object(&body["user"]);
}

// --------------------------------------------------------------------------
// raw HTTP (paths reqwest would normalise, odd header spellings, big bodies)
// --------------------------------------------------------------------------

pub enum RawBody<'a> {
    None,
    /// sent with Content-Length
    Fixed(&'a [u8]),
    /// sent with Transfer-Encoding: chunked
    Chunked(&'a [u8]),
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    for line in head.split("\r\n").skip(1) {
        if let Some(v) = line.strip_prefix("content-length:")
            && let Ok(n) = v.trim().parse::<usize>()
        {
            return body.len() >= n;
        }
    }
    if head.contains("\r\ntransfer-encoding:") && head.contains("chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    // a status without a body
    let status = head.split(' ').nth(1).unwrap_or("");
    status.starts_with('1') || status == "204" || status == "304"
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let Some(j) = find(&body[i..], b"\r\n").map(|j| i + j) else {
            break;
        };
        let size_txt = String::from_utf8_lossy(&body[i..j]);
        let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = j + 2;
        let end = (start + size).min(body.len());
        out.extend_from_slice(&body[start..end]);
        i = end + 2;
    }
    out
}

/// Sends one request on its own connection exactly as written (the target is
/// not normalised), reading the answer while the body is still being sent (a
/// server may answer 413 before reading it all).
pub fn raw_http(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: RawBody<'_>,
) -> Resp {
    let what = format!("raw {method} {target}");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let payload: Vec<u8> = match body {
        RawBody::None => Vec::new(),
        RawBody::Fixed(b) => {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
            b.to_vec()
        }
        RawBody::Chunked(b) => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            let mut out = Vec::new();
            for piece in b.chunks(16 * 1024) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }
    };
    head.push_str("\r\n");

    let done = Arc::new(AtomicBool::new(false));
    let mut writer = stream.try_clone().expect("clone socket");
    let done_w = done.clone();
    let writer_thread = thread::spawn(move || {
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        for piece in payload.chunks(16 * 1024) {
            if done_w.load(Ordering::SeqCst) || writer.write_all(piece).is_err() {
                return;
            }
        }
        let _ = writer.flush();
    });

    let mut reader = stream;
    let received = read_answer(&mut reader);
    done.store(true, Ordering::SeqCst);
    let _ = reader.shutdown(Shutdown::Both);
    let _ = writer_thread.join();

    parse_response(&received, &what)
}

/// Sends `request` exactly as given (bytes, so it may be anything a client
/// library refuses to write) on its own connection and reads the answer.
pub fn raw_bytes(port: u16, request: &[u8]) -> Resp {
    let what = format!(
        "raw {:?}",
        String::from_utf8_lossy(&request[..request.len().min(60)])
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(request)
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let received = read_answer(&mut stream);
    parse_response(&received, &what)
}

/// What the server wrote, until one whole response or the end of the connection.
fn read_answer(reader: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if response_complete(&received) {
                    break;
                }
            }
            Err(ref e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    received
}

fn parse_response(received: &[u8], what: &str) -> Resp {
    let end = find(received, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "{what}: no HTTP response received ({} bytes: {:?})",
            received.len(),
            String::from_utf8_lossy(received)
        )
    });
    let head = String::from_utf8_lossy(&received[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let mut hdrs = Vec::new();
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            hdrs.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut body = received[end + 4..].to_vec();
    if hdrs
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers: hdrs,
        body: String::from_utf8_lossy(&body).to_string(),
        what: what.to_string(),
    }
}

// --------------------------------------------------------------------------
// request builder
// --------------------------------------------------------------------------

pub struct Req<'a> {
    client: &'a reqwest::blocking::Client,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<(Vec<u8>, Option<String>)>,
    timeout: Option<Duration>,
}

impl<'a> Req<'a> {
    pub fn new(client: &'a reqwest::blocking::Client, method: &str, url: String) -> Req<'a> {
        Req {
            client,
            method: method.to_string(),
            url,
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn headers(mut self, hs: &[(&str, &str)]) -> Self {
        for (n, v) in hs {
            self.headers.push((n.to_string(), v.to_string()));
        }
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn bearer_opt(self, token: Option<&str>) -> Self {
        match token {
            Some(t) => self.bearer(t),
            None => self,
        }
    }

    pub fn tenant(self, tenant: &str) -> Self {
        self.header("X-Tenant-ID", tenant)
    }

    pub fn tenant_opt(self, tenant: Option<&str>) -> Self {
        match tenant {
            Some(t) => self.tenant(t),
            None => self,
        }
    }

    pub fn json(mut self, v: &Value) -> Self {
        self.body = Some((
            serde_json::to_vec(v).unwrap(),
            Some("application/json".to_string()),
        ));
        self
    }

    /// A raw body with an optional Content-Type.
    pub fn body(mut self, bytes: &[u8], content_type: Option<&str>) -> Self {
        self.body = Some((bytes.to_vec(), content_type.map(str::to_string)));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    pub fn send(self) -> Resp {
        let what = format!("{} {}", self.method, self.url);
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).expect("HTTP method");
        let mut rb = self.client.request(method, &self.url);
        if let Some(t) = self.timeout {
            rb = rb.timeout(t);
        }
        if let Some((bytes, ctype)) = self.body {
            if let Some(ct) = ctype {
                rb = rb.header("Content-Type", ct);
            }
            rb = rb.body(bytes);
        }
        for (n, v) in &self.headers {
            rb = rb.header(n.as_str(), v.as_str());
        }
        let resp = rb
            .send()
            .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect();
        let body = resp
            .text()
            .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e:?}"));
        Resp {
            status,
            headers,
            body,
            what,
        }
    }
}
