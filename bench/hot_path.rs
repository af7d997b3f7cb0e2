//! Criterion micro-benchmarks of the proxy's hot path (issue 8): JWT
//! verification per algorithm, a credential cache hit through
//! `Pipeline::check` (what a request with a known JWT or API key pays),
//! route matching, path normalisation, identity header building and the
//! TOTP step-up check. Run: `cargo bench --bench hot_path`.
//!
//! The async functions run under a current-thread tokio runtime's
//! `block_on`, which adds well under a microsecond per iteration.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis::app::App;
use portcullis::config::{Config, JwtAlgorithm};
use portcullis::crypto::totp;
use portcullis::http_types::AuthRequest;
use portcullis::pipeline::authn::credential::Authenticated;
use portcullis::pipeline::client::ClientInfo;
use portcullis::pipeline::{authz::RoutePolicies, identity_headers, path};
use portcullis::store::{Store, sqlite::SqliteStore};
use portcullis::tokens::{self, AccessClaims, KeyRing};
use portcullis::vocab::{CredentialKind, Identity};
use uuid::Uuid;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn jwt_verify(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("jwt_verify");
    for alg in [
        JwtAlgorithm::EdDSA,
        JwtAlgorithm::ES256,
        JwtAlgorithm::RS256,
        JwtAlgorithm::HS256,
    ] {
        let mut config = Config::default();
        config.jwt.algorithm = alg;
        if alg == JwtAlgorithm::HS256 {
            let secret = dir.path().join("hs256.secret");
            std::fs::write(&secret, "0123456789abcdef0123456789abcdef-bench").unwrap();
            config.jwt.hs256_secret_file = secret.display().to_string();
        }
        let db = dir.path().join(format!("{alg:?}.db"));
        let store: Arc<dyn Store> = Arc::new(rt.block_on(SqliteStore::open(&db)).unwrap());
        let keys = rt.block_on(KeyRing::load(&config, store)).unwrap();
        let at = now();
        let claims = AccessClaims {
            iss: config.jwt.issuer.clone(),
            aud: config.jwt.audience.clone(),
            sub: Uuid::now_v7(),
            tid: Uuid::now_v7(),
            sid: Uuid::now_v7(),
            jti: Uuid::new_v4(),
            iat: at,
            nbf: at,
            exp: at + 900,
            email: "bench@example.com".into(),
            roles: vec!["member".into()],
            perms: vec!["profile:read".into(), "profile:write".into()],
            amr: vec!["pwd".into()],
        };
        let token = tokens::sign(&keys, &claims).unwrap();
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| {
                rt.block_on(tokens::verify(&keys, &config.jwt, black_box(&token)))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn auth_request(method: Method, path: &str, bearer: Option<&str>, body: &str) -> AuthRequest {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(token) = bearer {
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    AuthRequest {
        method,
        path: path.into(),
        query: None,
        headers,
        body: Bytes::from(body.to_string()),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        request_id: "bench".into(),
        caller: Default::default(),
    }
}

fn json_field(body: &Bytes, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
        .to_string()
}

/// `Pipeline::check` for a request whose credential is cached: what a
/// proxied request pays for authentication and authorization.
fn cache_hit(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("app.db").display());
    config.rate_limit.per_ip_per_minute = 0;
    config.rate_limit.login_per_account_per_minute = 0;
    let app = rt.block_on(App::init(config, false)).unwrap();
    let body = r#"{"email":"bench@example.com","password":"bench-password-7f3a"}"#;
    let (r, _) = rt.block_on(portcullis::auth::handle(
        &app,
        &auth_request(Method::POST, "/register", None, body),
    ));
    assert!(r.status < 300, "register: {}", r.status);
    let (r, _) = rt.block_on(portcullis::auth::handle(
        &app,
        &auth_request(Method::POST, "/login", None, body),
    ));
    let jwt = json_field(&r.body, "accessToken");
    let (r, _) = rt.block_on(portcullis::auth::handle(
        &app,
        &auth_request(Method::POST, "/api-keys", Some(&jwt), r#"{"name":"bench"}"#),
    ));
    let key = json_field(&r.body, "key");

    let routes = app.pipeline.routes();
    let policy = routes.select_all(&Method::GET, "/api/orders");
    let mut group = c.benchmark_group("cache_hit");
    for (name, header, value) in [
        ("jwt", "authorization", format!("Bearer {jwt}")),
        ("api_key", "x-api-key", key),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(header, HeaderValue::from_str(&value).unwrap());
        // the first check verifies and fills the cache
        rt.block_on(app.pipeline.check(&policy, &headers))
            .unwrap()
            .unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(app.pipeline.check(&policy, black_box(&headers)))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn route_match(c: &mut Criterion) {
    let toml = r#"
[[routes]]
name = "public"
path = "/public/**"
auth = "public"

[[routes]]
name = "reports"
path = "/reports/**"
permissions = ["reports:read"]

[[routes]]
name = "admin"
path = "/admin/**"
roles = ["admin"]

[[routes]]
name = "payments"
path = "/payments/**"
methods = ["POST", "PUT", "DELETE"]
permissions = ["payments:write"]
require_otp = true
"#;
    let routes =
        RoutePolicies::compile(&Config::from_sources("bench", toml, &[]).unwrap()).unwrap();
    let mut group = c.benchmark_group("route_match");
    group.bench_function("first_of_4", |b| {
        b.iter(|| {
            routes
                .select(&Method::GET, black_box("/public/index.html"))
                .name
                .len()
        })
    });
    group.bench_function("last_of_4", |b| {
        b.iter(|| {
            routes
                .select(&Method::POST, black_box("/payments/42/refund"))
                .name
                .len()
        })
    });
    group.bench_function("default", |b| {
        b.iter(|| {
            routes
                .select(&Method::GET, black_box("/api/orders/42"))
                .name
                .len()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("path_normalize");
    group.bench_function("already_normal", |b| {
        b.iter(|| {
            path::normalize(black_box("/api/orders/42/items"))
                .unwrap()
                .len()
        })
    });
    group.bench_function("dot_segments", |b| {
        b.iter(|| {
            path::normalize(black_box("/api/./orders//42/../43"))
                .unwrap()
                .len()
        })
    });
    group.finish();
}

fn identity_header_building(c: &mut Criterion) {
    let names = identity_headers::IdentityHeaderNames::new("X-Auth-")
        .unwrap()
        .with_api_key_prefix("sk_live_");
    let cfg = Config::default().proxy;
    let mut incoming = HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
        ("authorization", "Bearer a.b.c"),
    ] {
        incoming.insert(k, HeaderValue::from_static(v));
    }
    let client = ClientInfo {
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        peer_trusted: false,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let identity = Authenticated::new(Identity {
        user_id: Uuid::now_v7(),
        tenant_id: Uuid::now_v7(),
        email: "bench@example.com".into(),
        roles: vec!["member".into(), "ops".into()],
        permissions: vec!["profile:read".into(), "profile:write".into()],
        method: CredentialKind::Jwt,
        session_id: Some(Uuid::now_v7()),
        key_id: None,
        mfa: false,
        passkey: false,
        external: None,
    });
    let mut group = c.benchmark_group("identity_headers");
    let host = http::HeaderValue::from_static("api.example.com");
    let edits = |id: &Authenticated| {
        identity_headers::upstream_edits(
            &names,
            &cfg,
            black_box(&incoming),
            Some(&host),
            Some(id),
            None,
            "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            &client,
        )
    };
    // the identity's headers are built once and reused, as for a cached credential
    group.bench_function("cached_identity", |b| {
        b.iter(|| edits(&identity).insert.len())
    });
    // a new credential starts without them: every iteration formats them again
    group.bench_function("fresh_identity", |b| {
        b.iter(|| {
            edits(&Authenticated::new((*identity.identity).clone()))
                .insert
                .len()
        })
    });
    group.finish();
}

fn totp_check(c: &mut Criterion) {
    let secret = totp::new_secret();
    let at = now() as u64;
    let mut group = c.benchmark_group("totp_check");
    // a wrong code walks all three steps of the window: the worst case
    group.bench_function("wrong_code_3_steps", |b| {
        b.iter(|| totp::check(black_box(&secret), black_box("000000"), at, 1))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = jwt_verify, cache_hit, route_match, identity_header_building, totp_check
}
criterion_main!(benches);
