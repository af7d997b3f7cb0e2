//! Property tests (proptest) of the parsers that see attacker-controlled
//! input, where cargo-fuzz cannot run in CI (it needs a nightly toolchain):
//! the path normaliser, the credential extraction, JWT verification, the route matcher, the
//! config parser and the `/auth` JSON bodies. Each property runs a bounded
//! number of cases (`PROPTEST_CASES`, default 1024 here) so the whole target
//! stays well under a minute; any input that ever failed is kept below as a
//! plain regression test.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use serde::Deserialize;

use portcullis::auth::parse_body;
use portcullis::config::Config;
use portcullis::http_types::AuthRequest;
use portcullis::pipeline::authn::{Presented, presented};
use portcullis::pipeline::authz::RoutePolicies;
use portcullis::pipeline::path::normalize;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Path-like strings: mostly the characters that matter to the normaliser.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("//".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%2f".to_string()),
        Just("%00".to_string()),
        Just("%25".to_string()),
        Just("%41".to_string()),
        Just("%7e".to_string()),
        Just("%".to_string()),
        Just("%g1".to_string()),
        Just("\\".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        "[a-zA-Z0-9_~-]{1,6}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
}

fn request(body: Vec<u8>) -> AuthRequest {
    AuthRequest {
        method: Method::POST,
        path: "/login".into(),
        query: None,
        headers: HeaderMap::new(),
        body: Bytes::from(body),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        request_id: "fuzz".into(),
        caller: Default::default(),
    }
}

/// Shapes like the handlers' bodies.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct LoginLike {
    email: String,
    password: String,
    otp: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct KeyLike {
    name: String,
    description: Option<String>,
    expires_in_days: Option<u32>,
    scopes: Option<Vec<String>>,
}

fn json_like() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(b"null".to_vec()),
        Just(b"true".to_vec()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        any::<f64>().prop_map(|n| n.to_string().into_bytes()),
        ".{0,12}".prop_map(|s| serde_json::to_vec(&s).unwrap()),
        Just(b"1e400".to_vec()),
        Just(b"\"\\ud800\"".to_vec()),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| {
                let mut out = b"[".to_vec();
                out.extend(v.join(&b","[..]));
                out.push(b']');
                out
            }),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("email".to_string()),
                        Just("password".to_string()),
                        Just("otp".to_string()),
                        Just("name".to_string()),
                        Just("expiresInDays".to_string()),
                        Just("scopes".to_string()),
                        "[a-z]{1,5}"
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| {
                let mut out = b"{".to_vec();
                let parts: Vec<Vec<u8>> = kv
                    .into_iter()
                    .map(|(k, v)| {
                        let mut p = serde_json::to_vec(&k).unwrap();
                        p.push(b':');
                        p.extend(v);
                        p
                    })
                    .collect();
                out.extend(parts.join(&b","[..]));
                out.push(b'}');
                out
            }),
        ]
    });
    prop_oneof![
        value,
        prop::collection::vec(any::<u8>(), 0..64),
        ".{0,64}".prop_map(String::into_bytes),
    ]
}

fn check_body<T: serde::de::DeserializeOwned>(body: Vec<u8>) {
    if let Err(e) = parse_body::<T>(&request(body)) {
        assert_eq!(e.status(), 400, "{e:?}");
        assert_eq!(e.code(), "INVALID_REQUEST", "{e:?}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn normalize_never_panics_and_is_idempotent(path in path_strategy()) {
        if let Ok(out) = normalize(&path) {
            prop_assert!(out.starts_with('/'), "{path:?} -> {out:?}");
            prop_assert!(!out.contains("//"), "{path:?} -> {out:?}");
            for seg in out.split('/') {
                prop_assert!(seg != ".." && seg != ".", "{path:?} -> {out:?}");
                let lower = seg.to_ascii_lowercase();
                prop_assert!(!lower.contains("%2f") && !lower.contains("%00"), "{path:?} -> {out:?}");
            }
            prop_assert_eq!(normalize(&out).ok(), Some(out.clone()), "not idempotent for {:?}", path);
        }
    }

    #[test]
    fn normalize_takes_any_string(path in ".{0,64}") {
        let _ = normalize(&path);
    }

    #[test]
    fn credential_extraction_never_panics_and_prefers_authorization(
        auth in prop::option::of(prop::collection::vec(any::<u8>(), 0..48)),
        scheme in prop_oneof![Just("Bearer "), Just("bearer "), Just("BEARER  "), Just("Basic "), Just("")],
        token in "[ -~]{0,40}",
        key in prop::option::of("[ -~]{0,40}"),
    ) {
        let mut headers = HeaderMap::new();
        if let Some(raw) = &auth
            && let Ok(v) = HeaderValue::from_bytes(raw)
        {
            headers.insert(http::header::AUTHORIZATION, v);
        } else if let Ok(v) = HeaderValue::from_str(&format!("{scheme}{token}")) {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        if let Some(k) = &key
            && let Ok(v) = HeaderValue::from_str(k)
        {
            headers.insert(HeaderName::from_static("x-api-key"), v);
        }
        match presented(&headers, "sk_live_") {
            Presented::Nothing => {}
            Presented::Bearer(t) => {
                prop_assert!(!t.is_empty());
                prop_assert!(!t.starts_with("sk_live_"));
            }
            Presented::ApiKey(k) => prop_assert!(!k.is_empty()),
        }
    }

    #[test]
    fn route_matcher_never_panics_and_first_match_wins(
        path in path_strategy(),
        method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::DELETE), Just(Method::OPTIONS)],
    ) {
        let cfg = Config::from_sources("fuzz", ROUTES, &[]).expect("the fixture config is valid");
        let policies = RoutePolicies::compile(&cfg).expect("routes compile");
        let Ok(norm) = normalize(&path) else { return Ok(()); };
        let policy = policies.select(&method, &norm);
        if norm.starts_with("/public/") {
            prop_assert_eq!(&*policy.name, "public");
        }
        if norm.starts_with("/payments/") && method == Method::GET {
            prop_assert_ne!(&*policy.name, "payments");
        }
        // a path under /public that normalises elsewhere is never public
        if !norm.starts_with("/public/") {
            prop_assert_ne!(&*policy.name, "public");
        }
    }

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in ".{0,200}") {
        let _ = Config::from_sources("fuzz", &text, &[]);
    }

    #[test]
    fn config_parser_never_panics_on_toml_like_text(
        lines in prop::collection::vec(
            prop_oneof![
                Just("[server]".to_string()),
                Just("[proxy]".to_string()),
                Just("[jwt]".to_string()),
                Just("[lockout]".to_string()),
                Just("[[routes]]".to_string()),
                "[a-z_]{1,20} = [0-9\"a-z\\[\\]*/., -]{0,20}",
                Just("path = \"/a/**\"".to_string()),
                Just("path = \"[\"".to_string()),
                Just("methods = [\"G E T\"]".to_string()),
                Just("listen = \"999.0.0.1:99999\"".to_string()),
                Just("max_failures = -1".to_string()),
                Just("access_ttl_seconds = 18446744073709551616".to_string()),
            ],
            0..12
        ),
        env in prop::collection::vec(("PORTCULLIS_[A-Z_]{1,12}__[A-Z_]{1,12}", ".{0,12}"), 0..3),
    ) {
        let _ = Config::from_sources("fuzz", &lines.join("\n"), &env);
    }

    #[test]
    fn jwt_verification_never_panics_and_refuses_forgeries(token in prop_oneof![jwt_like(), ".{0,200}"]) {
        let (rt, ring, config, _) = key_ring();
        let got = rt.block_on(portcullis::tokens::verify(ring, &config.jwt, &token));
        prop_assert!(
            matches!(got, Err(portcullis::error::Error::InvalidToken)),
            "{token:?} -> {got:?}"
        );
    }

    #[test]
    fn auth_bodies_parse_or_are_400_invalid_request(body in json_like()) {
        check_body::<LoginLike>(body.clone());
        check_body::<KeyLike>(body.clone());
        check_body::<serde_json::Value>(body);
    }
}

/// A key ring over a throw-away store, built once for the JWT property.
fn key_ring() -> &'static (
    tokio::runtime::Runtime,
    portcullis::tokens::KeyRing,
    Config,
    tempfile::TempDir,
) {
    static RING: std::sync::OnceLock<(
        tokio::runtime::Runtime,
        portcullis::tokens::KeyRing,
        Config,
        tempfile::TempDir,
    )> = std::sync::OnceLock::new();
    RING.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default();
        let ring = rt.block_on(async {
            let store: std::sync::Arc<dyn portcullis::store::Store> = std::sync::Arc::new(
                portcullis::store::sqlite::SqliteStore::open(&dir.path().join("fuzz.db"))
                    .await
                    .unwrap(),
            );
            portcullis::tokens::KeyRing::load(&config, store)
                .await
                .unwrap()
        });
        (rt, ring, config, dir)
    })
}

/// Three base64url parts built from JSON-ish header and claims.
fn jwt_like() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        Just(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k"}"#.to_string()),
        Just(r#"{"alg":"none","typ":"at+jwt"}"#.to_string()),
        Just(r#"{"alg":"HS256","typ":"at+jwt","kid":"k","jwk":{}}"#.to_string()),
        Just(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k","crit":["x"]}"#.to_string()),
        ".{0,40}",
    ];
    (
        header,
        json_like(),
        prop::collection::vec(any::<u8>(), 0..80),
        0usize..4,
    )
        .prop_map(|(h, c, sig, dots)| {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut t = format!("{}.{}.{}", b.encode(h), b.encode(c), b.encode(sig));
            for _ in 0..dots {
                t.push('.');
            }
            t
        })
}

const ROUTES: &str = r#"
[[routes]]
name = "public"
path = "/public/**"
auth = "public"

[[routes]]
name = "payments"
path = "/payments/**"
auth = "authenticated"
methods = ["POST", "PUT", "DELETE"]
permissions = ["payments:write"]
"#;

// ---- regression inputs ------------------------------------------------------

#[test]
fn regression_inputs_stay_handled() {
    for p in [
        "/",
        "/%",
        "/%2",
        "/%2e%2E/",
        "/a/%2e%2e/..",
        "/%25%32%65",
        "/\u{0}",
        "/é",
    ] {
        let _ = normalize(p);
    }
    assert!(normalize("/a/%2e%2e/..").is_err());
    assert_eq!(normalize("/%25%32%65").unwrap(), "/%252e");
    check_body::<LoginLike>(b"{\"email\":1e400}".to_vec());
    check_body::<LoginLike>(b"\xef\xbb\xbf{}".to_vec());
    let _ = Config::from_sources("fuzz", "[server]\ngrace_period_seconds = 1e400", &[]);
}
