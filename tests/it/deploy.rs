//! Deployment surface (issue 9): the OpenAPI document the sidecar serves,
//! the container image's Dockerfile, and SIGHUP reloading `[[routes]]`
//! without dropping connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const OPENAPI: &str = include_str!("../../openapi.json");
const DOCKERFILE: &str = include_str!("../../Dockerfile");
const CI_RUN: &str = include_str!("../../.ci/run");

#[test]
fn openapi_document_is_served_as_committed() {
    let sc = Sidecar::start(Opts::new());
    let r = sc.get("/auth/openapi.json", None);
    let served = assert_status(&r, 200);
    let committed: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(
        served, committed,
        "served document differs from openapi.json"
    );
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json"))
    );
    let post = sc.post("/auth/openapi.json", None, &serde_json::json!({}));
    assert_error(&post, 405, "METHOD_NOT_ALLOWED");
}

/// Every documented operation reaches a handler on the running binary: no
/// `404 NOT_FOUND` (unknown route) and no `405` (method not routed).
#[test]
fn every_documented_operation_is_routed() {
    let sc = Sidecar::start(Opts::new());
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{name}", "no-such-role");
        for method in item.as_object().unwrap().keys() {
            let r = sc
                .req(&method.to_ascii_uppercase(), &concrete)
                .body(b"{}", Some("application/json"))
                .send();
            // unauthenticated callers are stopped before any lookup, so a
            // 404 here can only be the router's "no such route"
            assert!(
                r.status != 404 && r.status != 405 && r.status < 500,
                "{method} {path}: {}",
                r.describe()
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations documented");
}

/// The image properties issue 9 asks for, read from the Dockerfile (no
/// Docker engine runs in CI).
#[test]
fn dockerfile_builds_a_small_non_root_image() {
    // logical lines: backslash continuations joined, comments dropped
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for raw in DOCKERFILE.lines() {
        let t = raw.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            if !cur.trim().is_empty() {
                lines.push(cur.trim().to_string());
            }
            cur.clear();
        }
    }
    let instr = |l: &String| {
        l.split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    };
    let froms: Vec<&String> = lines.iter().filter(|l| instr(l) == "FROM").collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].contains(" AS builder"),
        "first stage is the builder"
    );
    let runtime = froms.last().unwrap();
    assert!(
        runtime.contains("-slim") || runtime.contains("distroless"),
        "small runtime base: {runtime}"
    );
    let runtime_start = lines.iter().position(|l| l == *runtime).unwrap();
    let (build, run) = lines.split_at(runtime_start);

    // dependency cache layer: manifests copied and built before the sources
    let manifests = build
        .iter()
        .position(|l| l.starts_with("COPY Cargo.toml Cargo.lock"))
        .expect("COPY Cargo.toml Cargo.lock");
    let sources = build
        .iter()
        .position(|l| l.starts_with("COPY src"))
        .expect("COPY src");
    let dep_build = build
        .iter()
        .position(|l| l.contains("cargo build --release --locked"))
        .expect("cargo build --release --locked");
    assert!(
        manifests < dep_build && dep_build < sources,
        "dependency layer before the sources"
    );
    // every file the crate embeds with include_str! reaches the builder
    assert!(
        build.iter().any(|l| l.starts_with("COPY openapi.json")),
        "openapi.json (embedded by src/auth/openapi.rs) is not copied"
    );

    // the builder installs what .ci/run installs (cmake), nothing else
    let apt = build
        .iter()
        .find(|l| l.contains("apt-get install"))
        .expect("builder apt-get install");
    assert!(apt.contains("cmake"), "{apt}");
    assert!(
        CI_RUN.contains("missing+=(cmake)"),
        ".ci/run installs cmake"
    );

    let has = |prefix: &str| run.iter().find(|l| l.starts_with(prefix));
    let user = has("USER ").expect("USER in the runtime stage");
    assert!(
        !user.contains("root") && !user.contains(" 0"),
        "non-root: {user}"
    );
    assert!(
        has("VOLUME").is_some_and(|l| l.contains("/data")),
        "VOLUME /data"
    );
    let expose = has("EXPOSE").expect("EXPOSE");
    assert!(
        expose.contains("8080") && expose.contains("9464"),
        "{expose}"
    );
    let health = has("HEALTHCHECK").expect("HEALTHCHECK");
    assert!(
        health.contains("/healthz") && health.contains("9464"),
        "{health}"
    );
    assert_eq!(
        has("ENTRYPOINT").map(String::as_str),
        Some(r#"ENTRYPOINT ["portcullis", "serve"]"#)
    );
    // the config the image ships must exist in the repository
    assert!(
        run.iter()
            .any(|l| l.starts_with("COPY config/portcullis.toml"))
    );
}

/// One keep-alive connection: request, response, request, response.
struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    fn connect(port: u16) -> KeepAlive {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        KeepAlive {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends `GET path` and returns the status; panics if the connection closed.
    fn get(&mut self, path: &str) -> u16 {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
        )
        .unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        assert!(!status_line.is_empty(), "the connection was closed");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = Some(value.trim().parse::<usize>().unwrap()),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
            }
        } else {
            let mut body = vec![0; length.unwrap_or(0)];
            self.reader.read_exact(&mut body).unwrap();
        }
        status
    }
}

fn sighup(sc: &Sidecar) {
    // SAFETY: kill(2) on the pid of a child the harness spawned.
    unsafe {
        libc::kill(sc.pid().unwrap() as libc::pid_t, libc::SIGHUP);
    }
}

#[test]
fn sighup_reloads_routes_on_the_same_connection() {
    let route = "name = \"reloadable\"\npath = \"/reloadable/**\"\nauth = \"public\"";
    let sc = Sidecar::start(Opts::new().routes(&[route]));
    let mut conn = KeepAlive::connect(sc.proxy_port);
    assert_eq!(conn.get("/reloadable/x"), 200);

    // the same file with the route made authenticated
    let text = std::fs::read_to_string(&sc.config_path).unwrap();
    let stricter = text.replace(
        "path = \"/reloadable/**\"\nauth = \"public\"",
        "path = \"/reloadable/**\"\nauth = \"authenticated\"",
    );
    assert_ne!(text, stricter);
    std::fs::write(&sc.config_path, &stricter).unwrap();
    sighup(&sc);
    let reloaded = poll_until(Duration::from_secs(10), || {
        (conn.get("/reloadable/x") == 401).then_some(())
    });
    assert!(
        reloaded.is_some(),
        "route still public after SIGHUP\n{}",
        sc.tails()
    );

    // a broken file keeps the running policy, and the process
    std::fs::write(
        &sc.config_path,
        format!("{stricter}\n[[routes]]\nbogus = 1\n"),
    )
    .unwrap();
    sighup(&sc);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(conn.get("/reloadable/x"), 401);
    assert_eq!(conn.get("/public/x"), 401, "no route named public here");
    let logs = poll_until(Duration::from_secs(5), || {
        let l = sc.logs();
        l.contains("config not reloaded").then_some(l)
    });
    assert!(logs.is_some(), "the refusal is logged\n{}", sc.tails());

    // back to public: a fresh connection and the old one agree
    std::fs::write(&sc.config_path, &text).unwrap();
    sighup(&sc);
    let back = poll_until(Duration::from_secs(10), || {
        (conn.get("/reloadable/x") == 200).then_some(())
    });
    assert!(back.is_some(), "route not public again\n{}", sc.tails());
    assert_eq!(KeepAlive::connect(sc.proxy_port).get("/reloadable/x"), 200);
}
