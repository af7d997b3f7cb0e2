//! Admin listener (health, readiness, metrics), the request log, restarts and
//! graceful shutdown (SPEC §1, §11, §12).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A small parser of the Prometheus text exposition format (samples only).
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("bad metrics line: {line:?}"),
        };
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            // labels: k="v",… with \" \\ \n escapes
            let mut chars = body.char_indices().peekable();
            let mut end = None;
            let mut key = String::new();
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    ',' | ' ' => continue,
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "bad labels: {line:?}");
                        let mut val = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('n') => val.push('\n'),
                                    Some(o) => val.push(o),
                                    None => {}
                                },
                                '"' => break,
                                o => val.push(o),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), val);
                    }
                    o => key.push(o),
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated labels: {line:?}"));
            &body[end + 1..]
        } else {
            rest
        };
        let value_txt = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value = match value_txt {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

#[test]
fn healthz_and_readyz_are_200_on_the_admin_listener() {
    let sc = Sidecar::start(Opts::new());
    let r = sc.admin_get("/healthz");
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = sc.admin_get("/readyz");
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn metrics_path_on_the_proxy_listener_is_an_ordinary_protected_path() {
    let sc = Sidecar::start(Opts::new());
    assert_error(&sc.get("/metrics", None), 401, "UNAUTHENTICATED");
    assert_error(&sc.get("/healthz", None), 401, "UNAUTHENTICATED");
    assert!(
        sc.echo.for_path("/metrics").is_empty(),
        "unauthenticated request reached the upstream"
    );
    // with a credential it is just proxied
    let user = sc.new_user();
    let r = sc.get("/metrics", Some(&user.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json()["path"],
        "/metrics",
        "the sidecar answered /metrics on the proxy listener"
    );
}

#[test]
fn metrics_carry_the_documented_families_without_identifying_labels() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    sc.login_tokens(&user);
    assert_error(
        &sc.login(&user.email, "Wrong-Password-42!"),
        401,
        "INVALID_CREDENTIALS",
    );
    let probe = format!("/api/metrics-probe-{}", rand_hex(8));
    let r = sc.get(&probe, Some(&user.access));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_error(&sc.get(&probe, None), 401, "UNAUTHENTICATED");
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    assert_status(&r, 200);

    let resp = sc.admin_get("/metrics");
    assert_eq!(resp.status, 200, "{}", resp.describe());
    assert!(
        resp.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{:?}",
        resp.headers
    );
    let text = resp.body.clone();
    let samples = parse_metrics(&text);
    let names: std::collections::BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    for required in [
        "portcullis_requests_total",
        "portcullis_logins_total",
        "portcullis_auth_decisions_total",
        "portcullis_build_info",
        "portcullis_request_duration_seconds_bucket",
        "portcullis_request_duration_seconds_count",
    ] {
        assert!(
            names.contains(required),
            "{required} missing from /metrics; have {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.starts_with("process_")),
        "process_* metrics missing: {names:?}"
    );
    assert!(
        text.contains("# TYPE portcullis_requests_total counter"),
        "no TYPE line for requests_total"
    );
    assert!(
        text.contains("# TYPE portcullis_request_duration_seconds histogram"),
        "request_duration_seconds is not a histogram"
    );

    let of = |n: &str| -> Vec<&Sample> { samples.iter().filter(|s| s.name == n).collect() };
    let reqs = of("portcullis_requests_total");
    assert!(
        reqs.iter()
            .all(|s| ["route", "method", "status", "protocol"]
                .iter()
                .all(|l| s.labels.contains_key(*l))),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().all(|s| s.labels["protocol"] == "http1"),
        "this test speaks HTTP/1.1 only: {reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|s| s.labels["method"] == "GET" && s.labels["status"] == "200" && s.value >= 1.0),
        "no GET/200 request counted: {reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|s| s.labels["status"] == "401" && s.value >= 1.0),
        "no 401 counted: {reqs:?}"
    );

    let logins = of("portcullis_logins_total");
    assert!(
        logins.iter().all(|s| s.labels.contains_key("outcome")),
        "{logins:?}"
    );
    assert!(
        logins.iter().map(|s| s.value).sum::<f64>() >= 2.0,
        "{logins:?}"
    );
    let outcomes: std::collections::BTreeSet<&str> = logins
        .iter()
        .filter(|s| s.value > 0.0)
        .map(|s| s.labels["outcome"].as_str())
        .collect();
    assert!(
        outcomes.len() >= 2,
        "a good and a failed login must be counted apart: {logins:?}"
    );

    let decisions = of("portcullis_auth_decisions_total");
    assert!(
        decisions
            .iter()
            .all(|s| s.labels.contains_key("credential") && s.labels.contains_key("outcome")),
        "{decisions:?}"
    );
    assert!(
        decisions.iter().map(|s| s.value).sum::<f64>() >= 1.0,
        "{decisions:?}"
    );

    let build = of("portcullis_build_info");
    assert!(
        !build.is_empty()
            && build[0]
                .labels
                .get("version")
                .is_some_and(|v| !v.is_empty()),
        "{build:?}"
    );
    assert_eq!(build[0].value, 1.0, "{build:?}");

    // labels never carry user ids, emails, tokens or raw paths
    for secret in [
        user.id.as_str(),
        user.email.as_str(),
        user.access.as_str(),
        probe.as_str(),
    ] {
        assert!(!text.contains(secret), "/metrics carries {secret:?}");
    }
}

#[test]
fn the_request_log_is_json_lines_with_the_request_id_and_no_secrets() {
    let sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    // a proxied request and one the sidecar answers itself (`/auth/me`)
    for path in ["/api/log-probe", "/auth/me"] {
        let rid = format!("log-probe-{}", rand_hex(16));
        let r = sc
            .req("GET", path)
            .bearer(&user.access)
            .header("X-Request-Id", &rid)
            .send();
        assert_eq!(r.status, 200, "{}", r.describe());
        let found: Option<Value> = poll_until(Duration::from_secs(5), || {
            sc.logs()
                .lines()
                .filter(|l| l.contains(&rid) && l.contains("portcullis::access"))
                .find_map(|l| {
                    serde_json::from_str::<Value>(l.trim())
                        .ok()
                        .filter(Value::is_object)
                })
        });
        let line = found.unwrap_or_else(|| {
            panic!(
                "no JSON request line carries request id {rid}\n{}",
                sc.tails()
            )
        });
        assert_eq!(line["method"], "GET", "{path}: {line}");
        assert_eq!(line["status"], 200, "{path}: {line}");
        assert_eq!(line["credential"], "jwt", "{path}: {line}");
        assert_eq!(line["user_id"], user.id.as_str(), "{path}: {line}");
    }
    let logs = sc.logs();
    assert!(
        !logs.contains(&user.access),
        "the access token was written to the log"
    );
    assert!(
        !logs.contains(&user.refresh),
        "a refresh token was written to the log"
    );
    assert!(
        !logs.contains(&user.password),
        "a password was written to the log"
    );
    assert!(
        !logs.contains(sc.admin_password.as_deref().unwrap()),
        "the bootstrap admin password was written to the log"
    );
}

#[test]
fn a_restart_on_the_same_database_keeps_users_and_signing_keys() {
    let mut sc = Sidecar::start(Opts::new());
    let user = sc.new_user();
    let kid = jwt_header(&user.access)["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let st = sc.stop().expect("portcullis did not exit on SIGTERM");
    assert!(st.success(), "exit status after SIGTERM: {st}");
    sc.launch();
    let r = sc.login(&user.email, &user.password);
    assert_eq!(assert_status(&r, 200)["user"]["id"], user.id.as_str());
    let r = sc.get("/api/after-restart", Some(&user.access));
    assert_eq!(
        r.status,
        200,
        "a token issued before the restart no longer verifies: {}",
        r.describe()
    );
    let kids: Vec<Value> = sc.jwks().iter().map(|k| k["kid"].clone()).collect();
    assert!(kids.contains(&Value::String(kid.clone())), "{kids:?}");
    // sessions survive too
    let r = sc.post(
        "/auth/refresh",
        None,
        &json!({"refreshToken": user.refresh}),
    );
    assert_status(&r, 200);
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let mut sc = Sidecar::start(Opts::new().set("server", "grace_period_seconds", "5"));
    let url = sc.url("/public/slow?delay=1");
    let handle = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let started = Instant::now();
        let r = client.get(&url).send();
        let elapsed = started.elapsed();
        r.map(|resp| {
            let status = resp.status().as_u16();
            (status, resp.text().unwrap_or_default(), elapsed)
        })
        .map_err(|e| format!("{e:?}"))
    });
    let rec = sc
        .echo
        .wait_for(|r| r.path == "/public/slow", Duration::from_secs(10));
    assert!(rec.is_some(), "the slow request never reached the upstream");
    let t0 = Instant::now();
    sc.terminate();
    let result = handle.join().unwrap();
    let (status, body, _) =
        result.unwrap_or_else(|e| panic!("the in-flight request failed during shutdown: {e}"));
    assert_eq!(status, 200, "in-flight request: {body}");
    let st = sc
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("portcullis still runs 15 s after SIGTERM\n{}", sc.tails()));
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after SIGTERM: {st}\n{}",
        sc.tails()
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    // nothing listens any more
    let r = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get(sc.admin_url("/healthz"))
        .send();
    assert!(r.is_err(), "the admin listener still answers after exit");
}
