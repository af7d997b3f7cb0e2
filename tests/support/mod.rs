//! A small black-box harness for the test targets of this folder that do not
//! live in `tests/it/` (same names as `tests/it/harness.rs`): an echo
//! upstream on a plain `TcpListener`, the real binary started with a
//! generated config, and blocking HTTP helpers.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_WAIT: Duration = Duration::from_secs(15);

const DEFAULT_ROUTES: &[&str] = &[
    "name = \"public\"\npath = \"/public/**\"\nauth = \"public\"",
    "name = \"reports\"\npath = \"/reports/**\"\npermissions = [\"reports:read\"]",
    "name = \"payments\"\npath = \"/payments/**\"\nmethods = [\"POST\", \"PUT\", \"DELETE\"]\npermissions = [\"payments:write\"]",
];

fn bin() -> PathBuf {
    match std::env::var("PORTCULLIS_TEST_BIN") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_portcullis")),
    }
}

pub fn rand_hex(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut s = format!("{n:x}{}", uuid::Uuid::new_v4().simple());
    s.truncate(len);
    s
}

pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", rand_hex(12))
}

pub fn strong_password() -> String {
    format!("Vx-{}-Qz9!", rand_hex(14))
}

fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut used = USED.get_or_init(Default::default).lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if used.insert(port) {
            return port;
        }
    }
}

pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

pub fn parse_time(value: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {value:?}"))
}

pub fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

// ---- responses -------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub what: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn describe(&self) -> String {
        format!("{} -> {} {:?}", self.what, self.status, self.body)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.describe()))
    }
}

#[track_caller]
pub fn assert_status(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "expected {status}, got {}", r.describe());
    if r.body.trim().is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// SPEC §5's error shape with `X-Request-Id` = `requestId`; returns `error`.
#[track_caller]
pub fn assert_error_shape(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "expected {status}, got {}", r.describe());
    let err = r.json()["error"].clone();
    for f in ["code", "message", "requestId"] {
        assert!(
            err[f].as_str().is_some_and(|s| !s.is_empty()),
            "error without {f}: {}",
            r.describe()
        );
    }
    assert_eq!(r.header("x-request-id"), err["requestId"].as_str());
    err
}

#[track_caller]
pub fn assert_error(r: &Resp, status: u16, code: &str) -> Value {
    let err = assert_error_shape(r, status);
    assert_eq!(err["code"], code, "{}", r.describe());
    err
}

#[track_caller]
pub fn check_user_object(u: &Value) {
    for f in [
        "id",
        "tenantId",
        "email",
        "roles",
        "permissions",
        "status",
        "createdAt",
    ] {
        assert!(u.get(f).is_some(), "user object lacks {f}: {u}");
    }
    assert!(u.get("passwordHash").is_none() && u.get("password").is_none());
}

// ---- the echo upstream -------------------------------------------------

#[derive(Debug, Clone)]
pub struct Record {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Answers every request with 200 and `{method, path, query, headers, body}`.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
}

impl EchoUpstream {
    fn start() -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("echo bind");
        let addr = listener.local_addr().unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let recs = records.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recs = recs.clone();
                thread::spawn(move || Self::serve(stream, recs));
            }
        });
        EchoUpstream { addr, records }
    }

    fn serve(stream: TcpStream, records: Arc<Mutex<Vec<Record>>>) {
        let mut out = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let (method, target) = (
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            );
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((n, v)) = h.split_once(':') {
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let mut body = Vec::new();
            if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                loop {
                    let mut size = String::new();
                    reader.read_line(&mut size).unwrap_or(0);
                    let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                    let mut chunk = vec![0; n + 2];
                    if reader.read_exact(&mut chunk).is_err() {
                        return;
                    }
                    body.extend_from_slice(&chunk[..n]);
                    if n == 0 {
                        break;
                    }
                }
            } else if let Some(n) = get("content-length").and_then(|v| v.parse().ok()) {
                body = vec![0; n];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
            }
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (target.clone(), String::new()),
            };
            let body = String::from_utf8_lossy(&body).to_string();
            records.lock().unwrap().push(Record {
                method: method.clone(),
                path: path.clone(),
                headers: headers.clone(),
                body: body.clone(),
            });
            let mut map = serde_json::Map::new();
            for (n, v) in &headers {
                let joined = match map.get(n).and_then(Value::as_str) {
                    Some(old) => format!("{old}, {v}"),
                    None => v.clone(),
                };
                map.insert(n.clone(), Value::String(joined));
            }
            let payload = json!({
                "method": method, "path": path, "query": query,
                "headers": map, "body": body,
            })
            .to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                payload.len()
            );
            if out.write_all(head.as_bytes()).is_err() || out.write_all(payload.as_bytes()).is_err()
            {
                return;
            }
        }
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    pub fn for_path(&self, path: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

// ---- the sidecar ---------------------------------------------------------

#[derive(Default, Clone)]
pub struct Opts {
    overrides: Vec<(String, String, String)>,
    routes: Option<Vec<String>>,
}

impl Opts {
    pub fn new() -> Opts {
        Opts::default()
    }

    /// `[section] key = value` (a TOML literal).
    pub fn set(mut self, section: &str, key: &str, value: &str) -> Opts {
        self.overrides
            .push((section.into(), key.into(), value.into()));
        self
    }

    pub fn set_str(self, section: &str, key: &str, value: &str) -> Opts {
        let lit = serde_json::to_string(value).unwrap();
        self.set(section, key, &lit)
    }

    pub fn routes(mut self, routes: &[&str]) -> Opts {
        self.routes = Some(routes.iter().map(|s| s.to_string()).collect());
        self
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub password: String,
    pub id: String,
    pub tenant_id: String,
    pub access: String,
}

pub struct Sidecar {
    pub echo: EchoUpstream,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    pub proxy_port: u16,
    pub admin_port: u16,
    admin_email: String,
    admin_password: String,
    child: Option<Child>,
    client: reqwest::blocking::Client,
}

impl Sidecar {
    pub fn start(opts: Opts) -> Sidecar {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-apikeys-")
            .tempdir()
            .unwrap();
        let echo = EchoUpstream::start();
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut put = |s: &str, k: &str, v: String| {
            let i = match sections.iter().position(|(n, _)| n == s) {
                Some(i) => i,
                None => {
                    sections.push((s.into(), Vec::new()));
                    sections.len() - 1
                }
            };
            match sections[i].1.iter_mut().find(|(n, _)| n == k) {
                Some(e) => e.1 = v,
                None => sections[i].1.push((k.into(), v)),
            }
        };
        let (proxy_port, admin_port) = (free_port(), free_port());
        let q = |s: &str| serde_json::to_string(s).unwrap();
        put("server", "grace_period_seconds", "2".into());
        put("proxy", "listen", q(&format!("127.0.0.1:{proxy_port}")));
        put("admin", "listen", q(&format!("127.0.0.1:{admin_port}")));
        put("upstream", "address", q(&echo.addr.to_string()));
        let db = dir.path().join("portcullis.db");
        put("database", "url", q(&format!("sqlite://{}", db.display())));
        put("rate_limit", "per_ip_per_minute", "0".into());
        put("rate_limit", "login_per_account_per_minute", "0".into());
        put("log", "format", q("json"));
        for (s, k, v) in &opts.overrides {
            put(s, k, v.clone());
        }
        let mut text = String::new();
        for (name, entries) in &sections {
            text.push_str(&format!("[{name}]\n"));
            for (k, v) in entries {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        let routes = opts
            .routes
            .unwrap_or_else(|| DEFAULT_ROUTES.iter().map(|s| s.to_string()).collect());
        for r in routes {
            text.push_str(&format!("\n[[routes]]\n{r}\n"));
        }
        let config_path = dir.path().join("portcullis.toml");
        std::fs::write(&config_path, text).unwrap();
        let mut sc = Sidecar {
            echo,
            dir,
            config_path,
            proxy_port,
            admin_port,
            admin_email: unique_email("admin"),
            admin_password: strong_password(),
            child: None,
            client: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
        };
        sc.launch();
        sc
    }

    fn launch(&mut self) {
        let log = |name: &str| -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .unwrap()
        };
        let mut cmd = Command::new(bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("PORTCULLIS_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(self.dir.path())
            .env("PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL", &self.admin_email)
            .env("PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD", &self.admin_password)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"));
        self.child = Some(cmd.spawn().expect("start portcullis"));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("portcullis exited with {st}\n{}", self.logs());
            }
            let ready = self
                .client
                .get(format!("http://127.0.0.1:{}/readyz", self.admin_port))
                .send()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "not ready\n{}", self.logs());
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for the exit, start again on the same config and store.
    pub fn restart(&mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the pid of our own, not yet reaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            thread::sleep(Duration::from_millis(25));
        }
        self.launch();
    }

    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}\n{}", read("stdout.log"), read("stderr.log"))
    }

    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            client: &self.client,
            method: method.to_string(),
            url: format!("http://127.0.0.1:{}{path}", self.proxy_port),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.req("GET", path).bearer_opt(token).send()
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.req("POST", path).bearer_opt(token).json(body).send()
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.req("DELETE", path).bearer_opt(token).send()
    }

    pub fn admin_get(&self, path: &str) -> Resp {
        let mut r = self.req("GET", path);
        r.url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        r.send()
    }

    pub fn login(&self, email: &str, password: &str) -> Resp {
        self.post(
            "/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
    }

    fn user_from(&self, email: &str, password: &str, b: &Value) -> User {
        User {
            email: email.to_string(),
            password: password.to_string(),
            id: b["user"]["id"].as_str().unwrap().to_string(),
            tenant_id: b["user"]["tenantId"].as_str().unwrap().to_string(),
            access: b["accessToken"].as_str().unwrap().to_string(),
        }
    }

    #[track_caller]
    pub fn new_user(&self) -> User {
        let (email, password) = (unique_email("user"), strong_password());
        let r = self.post(
            "/auth/register",
            None,
            &json!({"email": email, "password": password}),
        );
        let b = assert_status(&r, 201);
        self.user_from(&email, &password, &b)
    }

    #[track_caller]
    pub fn relogin(&self, user: &User) -> User {
        let b = assert_status(&self.login(&user.email, &user.password), 200);
        self.user_from(&user.email, &user.password, &b)
    }

    #[track_caller]
    pub fn admin_user(&self) -> User {
        let b = assert_status(&self.login(&self.admin_email, &self.admin_password), 200);
        self.user_from(&self.admin_email, &self.admin_password, &b)
    }

    pub fn jwks(&self) -> Vec<Value> {
        let b = assert_status(&self.get("/.well-known/jwks.json", None), 200);
        b["keys"].as_array().expect("keys").clone()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!("--- portcullis logs ---\n{}", self.logs());
        }
    }
}

pub struct Req<'a> {
    client: &'a reqwest::blocking::Client,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Req<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
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

    pub fn json(mut self, v: &Value) -> Self {
        self.body = Some(serde_json::to_vec(v).unwrap());
        self.header("Content-Type", "application/json")
    }

    pub fn send(self) -> Resp {
        let what = format!("{} {}", self.method, self.url);
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut rb = self.client.request(method, &self.url);
        for (n, v) in &self.headers {
            rb = rb.header(n.as_str(), v.as_str());
        }
        if let Some(b) = self.body {
            rb = rb.body(b);
        }
        let resp = rb
            .send()
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
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
        let body = resp.text().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
            what,
        }
    }
}
