//! `examples/nginx-auth-request.conf` run as it is (ports changed) by a real
//! nginx on loopback, in front of the echo upstream, with the sidecar as its
//! `auth_request` service: a protected location is enforced with portcullis'
//! own JSON errors, identity headers reach the application, spoofed ones
//! make portcullis refuse the request, the API key never reaches it.
//! (`tests/differential/test_forward_auth.py` runs the example against more
//! hostile requests, and the Traefik one.)
//!
//! nginx is the one on the PATH (or `/usr/sbin/nginx`); when missing, the
//! Debian package is fetched with `apt-get download` and unpacked into
//! Cargo's test temp folder (no root, no service started). When neither
//! works (offline, not Debian) the test fails if `CI` is set, and elsewhere
//! is skipped and listed in the summary at the end of `make test`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("../../examples/nginx-auth-request.conf");

fn runs(bin: &Path) -> bool {
    Command::new(bin)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An nginx binary, fetched and unpacked from Debian's package when missing.
fn nginx() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file() && runs(p));
    if on_path.is_some() {
        return on_path;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nginx-deb");
    let unpacked = dir.join("root/usr/sbin/nginx");
    if unpacked.is_file() && runs(&unpacked) {
        return Some(unpacked);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let fetched = Command::new("apt-get")
        .args(["download", "nginx"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let deb = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"));
    let (true, Some(deb)) = (fetched, deb) else {
        return None;
    };
    let ok = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("root"))
        .status()
        .is_ok_and(|s| s.success());
    (ok && runs(&unpacked)).then_some(unpacked)
}

struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(bin: &Path, sc: &Sidecar) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-nginx-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let site = EXAMPLE
            .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", sc.proxy_port))
            .replace("127.0.0.1:3000", &sc.echo.addr.to_string());
        std::fs::write(dir.path().join("site.conf"), site).unwrap();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             \x20 include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!("nginx exited with {st}: {}", n.errors());
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening: {}",
                n.errors()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }

    fn req(&self, method: &str, path: &str) -> reqwest::blocking::RequestBuilder {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("http://127.0.0.1:{}{path}", self.port),
            )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send(rb: reqwest::blocking::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let r = rb.send().expect("request through nginx");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().unwrap_or_default())
}

/// The headers the echo upstream received for the last request to `path`.
fn upstream(sc: &Sidecar, path: &str) -> Vec<(String, String)> {
    sc.echo
        .for_path(path)
        .pop()
        .unwrap_or_else(|| panic!("{path} did not reach the application"))
        .headers
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

#[test]
fn nginx_auth_request_enforces_a_protected_location_through_auth_verify() {
    let test = "nginx_auth_request_enforces_a_protected_location";
    let Some(bin) = nginx() else {
        component_missing(
            "nginx",
            test,
            "no nginx on the PATH, and `apt-get download nginx` did not provide one",
        );
        return;
    };
    component_ran("nginx", test);
    let sc = Sidecar::start(Opts::new());
    let ngx = Nginx::start(&bin, &sc);

    // no credential: portcullis' JSON 401 with one challenge, the application never sees it
    let (status, headers, body) = send(ngx.req("GET", "/api/orders"));
    assert_eq!(status, 401, "{}", ngx.errors());
    let challenges: Vec<&str> = headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap_or_default())
        .collect();
    assert_eq!(challenges, ["Bearer"], "{headers:?}");
    let err: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(err["error"]["code"], "UNAUTHENTICATED", "{body}");
    assert!(sc.echo.for_path("/api/orders").is_empty());
    // a public location passes without identity
    assert_eq!(send(ngx.req("GET", "/public/page")).0, 200);
    assert!(get(&upstream(&sc, "/public/page"), "x-auth-user-id").is_none());

    // /auth is portcullis itself, through nginx
    let (email, password) = (unique_email("nginx"), strong_password());
    let (status, _, body) = send(
        ngx.req("POST", "/auth/register")
            .json(&json!({"email": email, "password": password})),
    );
    assert_eq!(status, 201, "{body}");
    let tokens: Value = serde_json::from_str(&body).unwrap();
    let access = tokens["accessToken"].as_str().unwrap();
    let user_id = tokens["user"]["id"].as_str().unwrap();

    // a JWT with spoofed identity headers: portcullis refuses the described
    // request (400 INVALID_REQUEST, SPEC §15) and nginx answers its JSON
    let (status, headers, body) = send(
        ngx.req("GET", "/api/spoofed")
            .bearer_auth(access)
            .header("X-Auth-User-Id", "00000000-0000-0000-0000-000000000000")
            .header("X-Auth-Roles", "admin"),
    );
    assert_eq!(status, 400, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "INVALID_REQUEST", "{body}");
    assert_eq!(
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        err["error"]["requestId"].as_str()
    );
    assert!(sc.echo.for_path("/api/spoofed").is_empty());

    // nginx drops the "_" spelling itself; the JWT's identity reaches the application
    let (status, _, _) = send(
        ngx.req("GET", "/api/orders")
            .bearer_auth(access)
            .header("x_auth_roles", "admin"),
    );
    assert_eq!(status, 200);
    let up = upstream(&sc, "/api/orders");
    assert_eq!(get(&up, "x-auth-user-id"), Some(user_id));
    assert_eq!(get(&up, "x-auth-roles"), Some("member"));
    assert_eq!(get(&up, "x-auth-method"), Some("jwt"));
    assert!(get(&up, "x-auth-session-id").is_some());
    assert!(!up.iter().any(|(n, _)| n == "x_auth_roles"), "{up:?}");
    assert!(get(&up, "authorization").is_some(), "a JWT is forwarded");

    // an API key, in either header, never reaches the application
    let (status, _, body) = send(
        ngx.req("POST", "/auth/api-keys")
            .bearer_auth(access)
            .json(&json!({"name": "nginx", "scopes": ["profile:read"]})),
    );
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let key = created["key"].as_str().unwrap();
    for (i, rb) in [
        ngx.req("GET", "/api/k0").header("X-API-Key", key),
        ngx.req("GET", "/api/k1").bearer_auth(key),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(send(rb).0, 200);
        let up = upstream(&sc, &format!("/api/k{i}"));
        assert_eq!(get(&up, "x-auth-method"), Some("api_key"));
        assert_eq!(get(&up, "x-auth-key-id"), created["id"].as_str());
        assert_eq!(get(&up, "x-auth-permissions"), Some("profile:read"));
        assert!(get(&up, "x-api-key").is_none(), "{up:?}");
        assert!(get(&up, "authorization").is_none(), "{up:?}");
        assert!(!up.iter().any(|(_, v)| v.contains(key)));
    }

    // the route policy of the original method and URI: 403
    let (status, _, _) = send(ngx.req("POST", "/payments/1").header("X-API-Key", key));
    assert_eq!(status, 403);
    assert!(sc.echo.for_path("/payments/1").is_empty());

    // revoked: 401 at once
    let id = created["id"].as_str().unwrap();
    let (status, _, _) = send(
        ngx.req("DELETE", &format!("/auth/api-keys/{id}"))
            .bearer_auth(access),
    );
    assert_eq!(status, 200);
    let (status, _, _) = send(ngx.req("GET", "/api/after").header("X-API-Key", key));
    assert_eq!(status, 401);
    assert!(sc.echo.for_path("/api/after").is_empty());
}
