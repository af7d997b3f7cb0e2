//! Test harness, by concern: [`http`] (responses, assertions, raw HTTP, the
//! request builder), [`echo`] (the echo upstream), [`sidecar`] (the
//! process, its config, its CLI and the `/auth` flows tests build on); here
//! the shared constants, small helpers and optional components.

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

mod echo;
mod http;
mod sidecar;

pub use echo::*;
pub use http::*;
pub use sidecar::*;
