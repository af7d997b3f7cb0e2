//! Test harness: an echo upstream, the sidecar process, HTTP helpers and the
//! assertions shared by every module.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Seconds until `GET /readyz` must answer 200 after a start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds between SIGTERM and SIGKILL in `stop()`.
pub const STOP_WAIT: Duration = Duration::from_secs(15);
/// Timeout of every HTTP call.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of a CLI invocation.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Permissions of the built-in `member` role (SPEC §6).
pub const MEMBER_PERMISSIONS: [&str; 3] = ["profile:read", "profile:write", "apikey:manage"];

/// Routes every instance gets unless a test passes its own list (same as the
/// conformance suite's DEFAULT_ROUTES).
pub const DEFAULT_ROUTES: &[&str] = &[
    r#"name = "public"
path = "/public/**"
auth = "public""#,
    r#"name = "reports"
path = "/reports/**"
auth = "authenticated"
permissions = ["reports:read"]"#,
    r#"name = "admin_area"
path = "/admin-area/**"
auth = "authenticated"
roles = ["admin"]"#,
    r#"name = "payments"
path = "/payments/**"
auth = "authenticated"
methods = ["POST", "PUT", "DELETE"]
permissions = ["payments:write"]"#,
    r#"name = "secure"
path = "/secure/**"
auth = "authenticated"
require_otp = true"#,
    r#"name = "profile_write"
path = "/profile-write/**"
auth = "authenticated"
permissions = ["profile:write"]"#,
];

// --------------------------------------------------------------------------
// small helpers
// --------------------------------------------------------------------------

/// The portcullis binary under test.
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("PORTCULLIS_TEST_BIN")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    PathBuf::from(
        option_env!("CARGO_BIN_EXE_portcullis").unwrap_or("/work/main/target/release/portcullis"),
    )
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A short random hex string (unique per call within the process).
pub fn rand_hex(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.push_str(&format!("{:x}{n:x}", nanos() & 0xffff));
    s.truncate(len.max(4));
    s
}

/// A unique, valid, lower-case email address.
pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", rand_hex(12))
}

/// A password that passes any reasonable policy and is unique per call.
pub fn strong_password() -> String {
    format!("Vx-{}-Qz9!", rand_hex(14))
}

/// Ports handed out by `free_port` in this process (never twice).
fn used_ports() -> &'static Mutex<HashSet<u16>> {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    USED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let mut used = used_ports().lock().unwrap();
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        drop(l);
        if used.insert(port) {
            return port;
        }
    }
    panic!("no free port found");
}

/// An address where nothing listens.
pub fn dead_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

pub fn b64url_decode(part: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("not base64url ({e}): {part:?}"))
}

pub fn b64url_encode(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// The decoded (unverified) header of a JWT.
pub fn jwt_header(token: &str) -> Value {
    let part = token.split('.').next().unwrap_or_default();
    serde_json::from_slice(&b64url_decode(part))
        .unwrap_or_else(|e| panic!("JWT header is not JSON ({e}): {token:?}"))
}

/// The decoded (unverified) claims of a JWT.
pub fn jwt_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap_or_default();
    serde_json::from_slice(&b64url_decode(part))
        .unwrap_or_else(|e| panic!("JWT claims are not JSON ({e}): {token:?}"))
}

/// 8-4-4-4-12 hex digits.
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Every UUID in a text, in order.
pub fn find_uuids(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i + 36 <= b.len() {
        if let Ok(cand) = std::str::from_utf8(&b[i..i + 36]) {
            let before_ok = i == 0 || !b[i - 1].is_ascii_hexdigit();
            let after_ok = i + 36 == b.len() || !b[i + 36].is_ascii_hexdigit();
            if before_ok && after_ok && is_uuid(cand) {
                out.push(cand.to_string());
                i += 36;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Parses an RFC 3339 time (panics with the value when it is not one).
pub fn parse_time(value: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {value:?}"))
}

/// The strings of a JSON array (panics when it is not an array of strings).
pub fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("not a string: {x}"))
                .to_string()
        })
        .collect()
}

/// Polls `f` every 50 ms until it returns Some or `timeout` passes.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// --------------------------------------------------------------------------
// optional components (a PostgreSQL server, nginx): ran, or why not
// --------------------------------------------------------------------------

/// Where tests note whether an optional component ran:
/// `$PORTCULLIS_COMPONENT_REPORT`, else `target/components` of the crate.
/// `.ci/components` prints the summary at the end of `make test`.
fn component_report_dir() -> PathBuf {
    std::env::var_os("PORTCULLIS_COMPONENT_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/components"))
}

fn note_component(component: &str, line: &str) {
    let dir = component_report_dir();
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(component))
    {
        // one write: parallel tests append to the same file
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// The test `test` ran against `component`.
pub fn component_ran(component: &str, test: &str) {
    note_component(component, &format!("ran {test}"));
}

/// `component` is missing (`why`): with `CI` set the test fails; elsewhere it
/// is noted as skipped (the summary at the end of `make test` lists it) and
/// the caller returns without running.
pub fn component_missing(component: &str, test: &str, why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("CI is set and {component} is missing for {test}: {why}");
    }
    eprintln!("SKIPPED {test}: {component} missing: {why}");
    note_component(component, &format!("skipped {test}: {why}"));
}

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
// echo upstream
// --------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Record {
    pub method: String,
    pub path: String,
    pub query: String,
    /// lower-cased names, in order received (names as sent otherwise, so an
    /// underscore spelling stays visible)
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Record {
    /// The values of that header joined by ", " (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(", "))
        }
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with 200 and a JSON
/// echo `{method, path, query, headers, body}` and records it. `/slow…` paths
/// (and any path ending in `/slow`) sleep `?delay=SECONDS` (default 2) first.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("echo upstream bind"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("echo upstream has an IP address");
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (srv, recs, stp) = (server.clone(), records.clone(), stop.clone());
        let thread = thread::spawn(move || {
            loop {
                let req = match srv.recv() {
                    Ok(r) => r,
                    Err(_) => {
                        if stp.load(Ordering::SeqCst) {
                            return;
                        }
                        continue;
                    }
                };
                if stp.load(Ordering::SeqCst) {
                    return;
                }
                let recs = recs.clone();
                thread::spawn(move || Self::handle(req, recs));
            }
        });
        EchoUpstream {
            addr,
            records,
            server,
            stop,
            thread: Some(thread),
        }
    }

    fn handle(mut req: tiny_http::Request, records: Arc<Mutex<Vec<Record>>>) {
        let url = req.url().to_string();
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (url.clone(), String::new()),
        };
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let _ = req.as_reader().read_to_end(&mut body);
        let record = Record {
            method: req.method().as_str().to_string(),
            path: path.clone(),
            query: query.clone(),
            headers: headers.clone(),
            body: String::from_utf8_lossy(&body).to_string(),
        };
        records.lock().unwrap().push(record.clone());
        if path.starts_with("/slow") || path.ends_with("/slow") {
            let delay = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("delay="))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(2.0);
            thread::sleep(Duration::from_secs_f64(delay.clamp(0.0, 30.0)));
        }
        let mut hmap = serde_json::Map::new();
        for (n, v) in &headers {
            match hmap.get_mut(n) {
                Some(Value::String(old)) => {
                    old.push_str(", ");
                    old.push_str(v);
                }
                _ => {
                    hmap.insert(n.clone(), Value::String(v.clone()));
                }
            }
        }
        let payload = json!({
            "method": record.method,
            "path": record.path,
            "query": record.query,
            "headers": hmap,
            "body": record.body,
        })
        .to_string();
        let resp = tiny_http::Response::from_string(payload).with_header(
            tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap(),
        );
        let _ = req.respond(resp);
    }

    /// `127.0.0.1:PORT`
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    pub fn find(&self, pred: impl Fn(&Record) -> bool) -> Vec<Record> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| pred(r))
            .cloned()
            .collect()
    }

    /// Requests the upstream received on exactly this path.
    pub fn for_path(&self, path: &str) -> Vec<Record> {
        self.find(|r| r.path == path)
    }

    /// Requests whose path starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<Record> {
        self.find(|r| r.path.starts_with(prefix))
    }

    /// Polls for a matching request; returns the latest one.
    pub fn wait_for(&self, pred: impl Fn(&Record) -> bool, timeout: Duration) -> Option<Record> {
        poll_until(timeout, || self.find(&pred).pop())
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// --------------------------------------------------------------------------
// the sidecar
// --------------------------------------------------------------------------

/// How to start a sidecar. Values of `set` are TOML literals
/// (`"\"closed\""`, `"true"`, `"[\"a\"]"`).
#[derive(Clone)]
pub struct Opts {
    overrides: Vec<(String, String, String)>,
    routes: Option<Vec<String>>,
    env: Vec<(String, String)>,
    upstream: Option<String>,
    db_path: Option<PathBuf>,
    bootstrap_admin: bool,
    raw_toml: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            overrides: Vec::new(),
            routes: None,
            env: Vec::new(),
            upstream: None,
            db_path: None,
            bootstrap_admin: true,
            raw_toml: String::new(),
        }
    }
}

impl Opts {
    pub fn new() -> Opts {
        Opts::default()
    }

    /// Sets `[section] key = value` (value is a TOML literal), replacing a default.
    pub fn set(mut self, section: &str, key: &str, value: &str) -> Opts {
        self.overrides
            .push((section.to_string(), key.to_string(), value.to_string()));
        self
    }

    /// Sets `[section] key = "value"`.
    pub fn set_str(self, section: &str, key: &str, value: &str) -> Opts {
        let lit = toml_str(value);
        self.set(section, key, &lit)
    }

    /// Replaces the default `[[routes]]`; each entry is the body of one table.
    pub fn routes(mut self, routes: &[&str]) -> Opts {
        self.routes = Some(routes.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Extra environment variable for the sidecar (and its CLI calls).
    pub fn env(mut self, key: &str, value: &str) -> Opts {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Upstream address instead of the instance's echo server.
    pub fn upstream(mut self, address: &str) -> Opts {
        self.upstream = Some(address.to_string());
        self
    }

    /// An existing (or wanted) SQLite file instead of a new one in the tempdir.
    pub fn db_path(mut self, path: &Path) -> Opts {
        self.db_path = Some(path.to_path_buf());
        self
    }

    /// No PORTCULLIS_BOOTSTRAP_ADMIN_* variables.
    pub fn no_bootstrap_admin(mut self) -> Opts {
        self.bootstrap_admin = false;
        self
    }

    /// TOML text appended verbatim after the generated sections (for sections
    /// the generator does not write; a section it writes must use `set`).
    pub fn raw_toml(mut self, text: &str) -> Opts {
        self.raw_toml.push_str(text);
        self.raw_toml.push('\n');
        self
    }
}

/// A TOML basic string literal.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A user that logged in (register or login).
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub password: String,
    pub id: String,
    pub tenant_id: String,
    pub access: String,
    pub refresh: String,
    pub user: Value,
    /// X-Tenant-ID used for its public /auth calls
    pub tenant: Option<String>,
}

/// Output of a CLI call.
#[derive(Debug)]
pub struct CliOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl CliOut {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// A running (or configured) `portcullis serve`. Dropping it kills the process.
pub struct Sidecar {
    pub echo: EchoUpstream,
    dir: Option<tempfile::TempDir>,
    pub workdir: PathBuf,
    pub config_path: PathBuf,
    pub db_path: PathBuf,
    pub upstream: String,
    sections: Vec<(String, Vec<(String, String)>)>,
    routes: Vec<String>,
    raw_toml: String,
    env: Vec<(String, String)>,
    pub proxy_port: u16,
    pub admin_port: u16,
    child: Option<Child>,
    client: reqwest::blocking::Client,
    probe: reqwest::blocking::Client,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
}

fn http_client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child this process spawned and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

impl Sidecar {
    /// Writes the config (fresh ports, a new tempdir, an echo upstream) without
    /// starting the process.
    pub fn new(opts: Opts) -> Sidecar {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-it-")
            .tempdir()
            .expect("tempdir");
        let workdir = dir.path().to_path_buf();
        let echo = EchoUpstream::start();
        let upstream = opts.upstream.clone().unwrap_or_else(|| echo.address());
        let db_path = opts
            .db_path
            .clone()
            .unwrap_or_else(|| workdir.join("portcullis.db"));
        let config_path = workdir.join("portcullis.toml");

        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut put = |section: &str, key: &str, value: String| {
            let idx = match sections.iter().position(|(s, _)| s == section) {
                Some(i) => i,
                None => {
                    sections.push((section.to_string(), Vec::new()));
                    sections.len() - 1
                }
            };
            let entries = &mut sections[idx].1;
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(e) => e.1 = value,
                None => entries.push((key.to_string(), value)),
            }
        };
        put("server", "grace_period_seconds", "1".into());
        put("proxy", "listen", toml_str("127.0.0.1:0"));
        put("admin", "listen", toml_str("127.0.0.1:0"));
        put("upstream", "address", toml_str(&upstream));
        put(
            "database",
            "url",
            toml_str(&format!("sqlite://{}", db_path.display())),
        );
        put("rate_limit", "per_ip_per_minute", "0".into());
        put("rate_limit", "login_per_account_per_minute", "0".into());
        put("log", "format", toml_str("json"));
        put("log", "level", toml_str("info"));
        for (s, k, v) in &opts.overrides {
            put(s, k, v.clone());
        }

        let mut env = Vec::new();
        let (admin_email, admin_password) = if opts.bootstrap_admin {
            let e = unique_email("admin");
            let p = strong_password();
            env.push(("PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL".to_string(), e.clone()));
            env.push(("PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD".to_string(), p.clone()));
            (Some(e), Some(p))
        } else {
            (None, None)
        };
        env.extend(opts.env.iter().cloned());

        let routes = opts
            .routes
            .clone()
            .unwrap_or_else(|| DEFAULT_ROUTES.iter().map(|s| s.to_string()).collect());

        let mut sc = Sidecar {
            echo,
            dir: Some(dir),
            workdir,
            config_path,
            db_path,
            upstream,
            sections,
            routes,
            raw_toml: opts.raw_toml.clone(),
            env,
            proxy_port: 0,
            admin_port: 0,
            child: None,
            client: http_client(HTTP_TIMEOUT),
            probe: http_client(Duration::from_secs(2)),
            admin_email,
            admin_password,
        };
        sc.assign_ports();
        sc
    }

    /// Configures and starts an instance; returns once it is ready.
    pub fn start(opts: Opts) -> Sidecar {
        let mut sc = Sidecar::new(opts);
        sc.launch();
        sc
    }

    /// Sets `[section] key = value` (a TOML literal) in the config file; takes
    /// effect at the next launch.
    pub fn set_config(&mut self, section: &str, key: &str, value: &str) {
        let idx = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let entries = &mut self.sections[idx].1;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value.to_string(),
            None => entries.push((key.to_string(), value.to_string())),
        }
        self.write_config();
    }

    /// Sets (or replaces) an environment variable of the next launch and CLI calls.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    fn assign_ports(&mut self) {
        self.proxy_port = free_port();
        self.admin_port = free_port();
        let (p, a) = (self.proxy_port, self.admin_port);
        for (s, entries) in self.sections.iter_mut() {
            for (k, v) in entries.iter_mut() {
                if k == "listen" && s == "proxy" {
                    *v = toml_str(&format!("127.0.0.1:{p}"));
                }
                if k == "listen" && s == "admin" {
                    *v = toml_str(&format!("127.0.0.1:{a}"));
                }
            }
        }
        self.write_config();
    }

    /// The config file text.
    pub fn config_text(&self) -> String {
        let mut out = String::new();
        for (name, entries) in &self.sections {
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        if !self.raw_toml.is_empty() {
            out.push_str(&self.raw_toml);
            out.push('\n');
        }
        for r in &self.routes {
            out.push_str("[[routes]]\n");
            out.push_str(r.trim());
            out.push_str("\n\n");
        }
        out
    }

    fn write_config(&self) {
        std::fs::write(&self.config_path, self.config_text()).expect("write config");
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.workdir.join("stdout.log")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.workdir.join("stderr.log")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(&self.workdir);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("PORTCULLIS_") || k == "RUST_LOG" {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stdout_path())
            .unwrap();
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .unwrap();
        let mut cmd = self.command();
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the child dies with the test
            // thread that started it if the test process is killed.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
        self.child = Some(child);
    }

    /// Starts the process (again) on the same config and store; waits for ready.
    pub fn launch(&mut self) {
        for attempt in 0..3 {
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(why) => {
                    let exited = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                        .is_some();
                    let logs = self.logs().to_ascii_lowercase();
                    let port_clash = logs.contains("address already in use")
                        || logs.contains("address in use")
                        || logs.contains("eaddrinuse")
                        || logs.contains("os error 98");
                    if attempt < 2 && exited && port_clash {
                        // a port picked as free was taken before the sidecar bound it
                        let _ = std::fs::write(self.stderr_path(), b"");
                        let _ = std::fs::write(self.stdout_path(), b"");
                        self.assign_ports();
                        continue;
                    }
                    self.kill();
                    panic!(
                        "portcullis did not become ready: {why}\n--- config ---\n{}\n{}",
                        self.config_text(),
                        self.tails()
                    );
                }
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("process exited with {status} before ready"));
            }
            match self.probe.get(self.admin_url("/readyz")).send() {
                Ok(r) if r.status().as_u16() == 200 => {
                    let addr: SocketAddr = ([127, 0, 0, 1], self.proxy_port).into();
                    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                        return Ok(());
                    }
                    last = "/readyz 200 but the proxy port refuses connections".into();
                }
                Ok(r) => last = format!("/readyz answered {}", r.status()),
                Err(e) => last = format!("/readyz: {e}"),
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?} (last: {last})"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&mut self) {
        if self.is_running()
            && let Some(pid) = self.pid()
        {
            signal(pid, libc::SIGTERM);
        }
    }

    /// Waits up to `timeout` for the process to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM, wait up to 15 s (then SIGKILL); returns the exit status, or
    /// None when it had to be killed or was never started.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.terminate();
        match self.wait_exit(STOP_WAIT) {
            Some(st) => Some(st),
            None => {
                self.kill();
                None
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut()
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// stop() then launch() on the same config and store.
    pub fn restart(&mut self) {
        let st = self.stop();
        assert!(
            st.is_some(),
            "portcullis did not exit within {STOP_WAIT:?} of SIGTERM\n{}",
            self.tails()
        );
        self.launch();
    }

    /// stdout and stderr of every run so far.
    pub fn logs(&self) -> String {
        let mut s = std::fs::read_to_string(self.stdout_path()).unwrap_or_default();
        s.push('\n');
        s.push_str(&std::fs::read_to_string(self.stderr_path()).unwrap_or_default());
        s
    }

    pub fn tails(&self) -> String {
        let out = std::fs::read_to_string(self.stdout_path()).unwrap_or_default();
        let err = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        format!(
            "--- portcullis stdout (tail) ---\n{}\n--- portcullis stderr (tail) ---\n{}",
            tail(&out, 40),
            tail(&err, 40)
        )
    }

    // ---- CLI -------------------------------------------------------------

    /// Runs `portcullis ARGS… --config FILE` with the instance's environment.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> CliOut {
        self.cli_env(args, stdin, &[])
    }

    /// Like `cli`, with extra environment variables.
    pub fn cli_env(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> CliOut {
        let n = rand_hex(8);
        let out_path = self.workdir.join(format!("cli-{n}.out"));
        let err_path = self.workdir.join(format!("cli-{n}.err"));
        let mut cmd = self.command();
        cmd.args(args).arg("--config").arg(&self.config_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let what = format!(
            "portcullis {} --config {}",
            args.join(" "),
            self.config_path.display()
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let _ = pipe.write_all(input.as_bytes());
            drop(pipe);
        }
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {CLI_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        CliOut {
            status,
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            what,
        }
    }

    // ---- HTTP ------------------------------------------------------------

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// A request to the proxy listener.
    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req::new(&self.client, method, self.url(path))
    }

    /// A request to the admin listener.
    pub fn admin_req(&self, method: &str, path: &str) -> Req<'_> {
        Req::new(&self.client, method, self.admin_url(path))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.req("GET", path).bearer_opt(token).send()
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.req("POST", path).bearer_opt(token).json(body).send()
    }

    pub fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.req("PATCH", path).bearer_opt(token).json(body).send()
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.req("DELETE", path).bearer_opt(token).send()
    }

    pub fn admin_get(&self, path: &str) -> Resp {
        self.admin_req("GET", path).send()
    }

    /// Raw request to the proxy listener (target sent exactly as given).
    pub fn raw(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        raw_http(self.proxy_port, method, target, headers, RawBody::None)
    }

    // ---- /auth flows -----------------------------------------------------

    pub fn register(&self, email: &str, password: &str) -> Resp {
        self.register_with(json!({"email": email, "password": password}), None)
    }

    /// POST /auth/register with this body (and X-Tenant-ID when given).
    pub fn register_with(&self, body: Value, tenant: Option<&str>) -> Resp {
        self.req("POST", "/auth/register")
            .tenant_opt(tenant)
            .json(&body)
            .send()
    }

    pub fn login(&self, email: &str, password: &str) -> Resp {
        self.login_in(email, password, None)
    }

    pub fn login_in(&self, email: &str, password: &str, tenant: Option<&str>) -> Resp {
        self.req("POST", "/auth/login")
            .tenant_opt(tenant)
            .json(&json!({"email": email, "password": password}))
            .send()
    }

    /// Registers a new member of the default tenant.
    pub fn new_user(&self) -> User {
        self.new_user_with(None, json!({}), None)
    }

    /// Registers a user (extra body fields merged in) and returns it logged in.
    #[track_caller]
    pub fn new_user_with(&self, email: Option<&str>, extra: Value, tenant: Option<&str>) -> User {
        let email = email
            .map(str::to_string)
            .unwrap_or_else(|| unique_email("user"));
        let password = strong_password();
        let mut body = json!({"email": email, "password": password});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let r = self.register_with(body, tenant);
        let b = assert_status(&r, 201);
        assert!(
            b["accessToken"].is_string(),
            "register did not log in: {}",
            r.describe()
        );
        User {
            email,
            password,
            id: b["user"]["id"].as_str().unwrap_or_default().to_string(),
            tenant_id: b["user"]["tenantId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            access: b["accessToken"].as_str().unwrap_or_default().to_string(),
            refresh: b["refreshToken"].as_str().unwrap_or_default().to_string(),
            user: b["user"].clone(),
            tenant: tenant.map(str::to_string),
        }
    }

    /// Logs the user in again (a new session); returns the token response.
    #[track_caller]
    pub fn login_tokens(&self, user: &User) -> Value {
        let r = self.login_in(&user.email, &user.password, user.tenant.as_deref());
        let b = assert_status(&r, 200);
        assert!(
            b["accessToken"].is_string() && b.get("mfaRequired").is_none_or(|v| v == false),
            "login did not return tokens: {}",
            r.describe()
        );
        b
    }

    /// Logs the user in again and returns it with the new session's tokens.
    #[track_caller]
    pub fn relogin(&self, user: &User) -> User {
        let b = self.login_tokens(user);
        User {
            access: b["accessToken"].as_str().unwrap_or_default().to_string(),
            refresh: b["refreshToken"].as_str().unwrap_or_default().to_string(),
            user: b["user"].clone(),
            ..user.clone()
        }
    }

    /// Logs in the bootstrap admin (asserting it has the role admin).
    #[track_caller]
    pub fn admin_user(&self) -> User {
        let email = self
            .admin_email
            .clone()
            .expect("this instance was started without a bootstrap admin");
        let password = self.admin_password.clone().unwrap();
        let r = self.login(&email, &password);
        let b = assert_status(&r, 200);
        assert!(b["accessToken"].is_string(), "{}", r.describe());
        assert!(
            str_list(&b["user"]["roles"]).contains(&"admin".to_string()),
            "bootstrap admin lacks role admin: {}",
            r.describe()
        );
        User {
            email,
            password,
            id: b["user"]["id"].as_str().unwrap_or_default().to_string(),
            tenant_id: b["user"]["tenantId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            access: b["accessToken"].as_str().unwrap_or_default().to_string(),
            refresh: b["refreshToken"].as_str().unwrap_or_default().to_string(),
            user: b["user"].clone(),
            tenant: None,
        }
    }

    /// The keys of GET /.well-known/jwks.json.
    #[track_caller]
    pub fn jwks(&self) -> Vec<Value> {
        let r = self.get("/.well-known/jwks.json", None);
        let b = assert_status(&r, 200);
        let keys = b["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("JWKS without keys[]: {}", r.describe()))
            .clone();
        assert!(!keys.is_empty(), "JWKS lists no key: {}", r.describe());
        keys
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "\n=== portcullis instance (proxy 127.0.0.1:{}, admin 127.0.0.1:{}) ===\n--- config {} ---\n{}\n{}",
                self.proxy_port,
                self.admin_port,
                self.config_path.display(),
                self.config_text(),
                self.tails()
            );
            if std::env::var_os("PORTCULLIS_TEST_KEEP").is_some()
                && let Some(d) = self.dir.as_mut()
            {
                d.disable_cleanup(true);
                eprintln!("(kept {})", d.path().display());
            }
        }
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

// --------------------------------------------------------------------------
// added for tests/it/mfa.rs: starts expected to fail, and unsetting a key
// --------------------------------------------------------------------------

impl Sidecar {
    /// Starts the process on the current config and store WITHOUT waiting for
    /// ready (for starts that are expected to fail); pair with `wait_exit`.
    pub fn launch_no_wait(&mut self) {
        self.spawn();
    }

    /// Removes `[section] key` from the config file, so that its default
    /// applies at the next launch.
    pub fn unset_config(&mut self, section: &str, key: &str) {
        if let Some((_, entries)) = self.sections.iter_mut().find(|(s, _)| s == section) {
            entries.retain(|(k, _)| k != key);
        }
        self.write_config();
    }
}
