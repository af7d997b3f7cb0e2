//! Prometheus metrics of SPEC §11, registered on the default registry (which
//! also carries the `process_*` family). Labels are route names and outcomes,
//! never user ids, emails, tokens or raw paths.

use std::cell::RefCell;
use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, TextEncoder,
};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    prometheus::register(Box::new(c.clone())).expect("metric registration");
    c
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("metric definition");
    prometheus::register(Box::new(h.clone())).expect("metric registration");
    h
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_requests_total",
        "Requests answered on the proxy listener",
        &["route", "method", "status", "protocol"],
    )
});

pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "portcullis_request_duration_seconds",
        "Time from request to the end of the response",
        &["route"],
        LATENCY_BUCKETS.to_vec(),
    )
});

pub static UPSTREAM_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let h = Histogram::with_opts(
        HistogramOpts::new(
            "portcullis_upstream_duration_seconds",
            "Time from sending the request upstream to its response header",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
    )
    .expect("metric definition");
    prometheus::register(Box::new(h.clone())).expect("metric registration");
    h
});

pub static UPSTREAM_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_upstream_errors_total",
        "Requests that failed on the way to or from the upstream",
        &["kind"],
    )
});

pub static OIDC_JWKS_FETCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_oidc_jwks_fetches_total",
        "Discovery and key-set fetches from the [[issuers]] providers",
        &["issuer", "result"],
    )
});

pub static OIDC_TOKENS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_oidc_token_verifications_total",
        "External access tokens verified (cache misses)",
        &["issuer", "result"],
    )
});

pub static PASSKEY_CEREMONIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_passkey_ceremonies_total",
        "Passkey ceremonies finished, by ceremony (register, login, mfa) and outcome (success, rejected, error)",
        &["ceremony", "outcome"],
    )
});

pub static OIDC_LOGINS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_oidc_logins_total",
        "Logins through an external provider, counted at its callback",
        &["issuer", "outcome"],
    )
});

pub static AUTH_DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_auth_decisions_total",
        "Authentication and authorization decisions on the proxy path",
        &["credential", "outcome"],
    )
});

pub static AUTH_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_auth_cache_requests_total",
        "Credential cache lookups",
        &["cache", "result"],
    )
});

/// `AUTH_CACHE` children of the proxy path, resolved once (a lookup by label
/// values hashes them and takes the family's lock).
pub static JWT_CACHE_HIT: LazyLock<IntCounter> =
    LazyLock::new(|| AUTH_CACHE.with_label_values(&["jwt", "hit"]));
pub static JWT_CACHE_MISS: LazyLock<IntCounter> =
    LazyLock::new(|| AUTH_CACHE.with_label_values(&["jwt", "miss"]));
pub static API_KEY_CACHE_HIT: LazyLock<IntCounter> =
    LazyLock::new(|| AUTH_CACHE.with_label_values(&["api_key", "hit"]));
pub static API_KEY_CACHE_MISS: LazyLock<IntCounter> =
    LazyLock::new(|| AUTH_CACHE.with_label_values(&["api_key", "miss"]));

/// Most label combinations a thread keeps resolved; beyond it, lookups go
/// to the family (the label space is bounded anyway: routes x methods x statuses).
const MAX_CACHED_SERIES: usize = 256;

struct RequestSeries {
    route: Box<str>,
    method: &'static str,
    status: u16,
    protocol: &'static str,
    count: IntCounter,
    seconds: Histogram,
}

struct DecisionSeries {
    credential: &'static str,
    outcome: Box<str>,
    count: IntCounter,
}

thread_local! {
    static REQUEST_SERIES: RefCell<Vec<RequestSeries>> = const { RefCell::new(Vec::new()) };
    static DECISION_SERIES: RefCell<Vec<DecisionSeries>> = const { RefCell::new(Vec::new()) };
}

/// The `protocol` label of a request: `grpc` for a gRPC call, else `h2` or `http1`.
pub fn protocol_label(http2: bool, grpc: bool) -> &'static str {
    match (http2, grpc) {
        (_, true) => "grpc",
        (true, false) => "h2",
        (false, false) => "http1",
    }
}

/// Counts one answered request in `REQUESTS` and `REQUEST_SECONDS`. The
/// children are kept per thread, so the hot path scans a short list instead
/// of formatting the status and hashing the labels on every request.
/// `protocol` is `http1`, `h2` or `grpc` ([`protocol_label`]).
pub fn observe_request(
    route: &str,
    method: &'static str,
    status: u16,
    protocol: &'static str,
    seconds: f64,
) {
    REQUEST_SERIES.with(|cell| {
        let mut series = cell.borrow_mut();
        if let Some(s) = series.iter().find(|s| {
            s.status == status && s.method == method && s.protocol == protocol && &*s.route == route
        }) {
            s.count.inc();
            s.seconds.observe(seconds);
            return;
        }
        let count = REQUESTS.with_label_values(&[route, method, &status.to_string(), protocol]);
        let hist = REQUEST_SECONDS.with_label_values(&[route]);
        count.inc();
        hist.observe(seconds);
        if series.len() < MAX_CACHED_SERIES {
            series.push(RequestSeries {
                route: route.into(),
                method,
                status,
                protocol,
                count,
                seconds: hist,
            });
        }
    });
}

/// Counts one decision in `AUTH_DECISIONS`, with the same per-thread cache.
pub fn auth_decision(credential: &'static str, outcome: &str) {
    DECISION_SERIES.with(|cell| {
        let mut series = cell.borrow_mut();
        if let Some(s) = series
            .iter()
            .find(|s| s.credential == credential && &*s.outcome == outcome)
        {
            s.count.inc();
            return;
        }
        let count = AUTH_DECISIONS.with_label_values(&[credential, outcome]);
        count.inc();
        if series.len() < MAX_CACHED_SERIES {
            series.push(DecisionSeries {
                credential,
                outcome: outcome.into(),
                count,
            });
        }
    });
}

pub static LOGINS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_logins_total",
        "Login attempts by outcome",
        &["outcome"],
    )
});

pub static TOKEN_REFRESHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_token_refreshes_total",
        "Refresh token presentations by outcome",
        &["outcome"],
    )
});

pub static PASSWORD_HASH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let h = Histogram::with_opts(
        HistogramOpts::new(
            "portcullis_password_hash_duration_seconds",
            "Time of one argon2id hash or verification",
        )
        .buckets(vec![
            0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
        ]),
    )
    .expect("metric definition");
    prometheus::register(Box::new(h.clone())).expect("metric registration");
    h
});

pub static STORE_TIMEOUTS: LazyLock<IntCounter> = LazyLock::new(|| {
    let c = IntCounter::new(
        "portcullis_store_timeouts_total",
        "Store calls that gave up at database.timeout_ms (answered 503 STORE_UNAVAILABLE)",
    )
    .expect("metric definition");
    prometheus::register(Box::new(c.clone())).expect("metric registration");
    c
});

/// A store call gave up at its deadline.
pub fn store_deadline_exceeded() {
    STORE_TIMEOUTS.inc();
}

pub static RATE_LIMIT_REDIS_FALLBACKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "portcullis_rate_limit_redis_fallbacks_total",
        "Rate-limit checks counted in this replica's memory instead of Redis: reason error, timeout or paused",
        &["reason"],
    )
});

/// Reasons a rate-limit check fell back from Redis (shown at 0 from the start).
pub const RATE_LIMIT_FALLBACK_REASONS: [&str; 3] = ["error", "timeout", "paused"];

/// Counts one rate-limit check that fell back from Redis to the local bucket.
pub fn rate_limit_redis_fallback(reason: &str) {
    RATE_LIMIT_REDIS_FALLBACKS
        .with_label_values(&[reason])
        .inc();
}

pub static RATE_LIMIT_REDIS_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    let g = IntGauge::new(
        "portcullis_rate_limit_redis_up",
        "1 once Redis answered a rate-limit call; 0 while it is down (a lost connection, or failures in a row) and without rate_limit.redis_url",
    )
    .expect("metric definition");
    prometheus::register(Box::new(g.clone())).expect("metric registration");
    g
});

pub static RATE_LIMIT_REDIS_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let h = Histogram::with_opts(
        HistogramOpts::new(
            "portcullis_rate_limit_redis_duration_seconds",
            "Time of one rate-limit call to Redis that answered (the round trip, and the wait for a connection)",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
        ]),
    )
    .expect("metric definition");
    prometheus::register(Box::new(h.clone())).expect("metric registration");
    h
});

pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = IntGaugeVec::new(
        Opts::new("portcullis_build_info", "Build information; always 1"),
        &["version"],
    )
    .expect("metric definition");
    prometheus::register(Box::new(g.clone())).expect("metric registration");
    g
});

/// Registers every family at start so a scrape shows them before first use.
pub fn init() {
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&UPSTREAM_SECONDS);
    LazyLock::force(&UPSTREAM_ERRORS);
    LazyLock::force(&AUTH_DECISIONS);
    LazyLock::force(&OIDC_JWKS_FETCHES);
    LazyLock::force(&OIDC_TOKENS);
    LazyLock::force(&OIDC_LOGINS);
    LazyLock::force(&PASSKEY_CEREMONIES);
    LazyLock::force(&AUTH_CACHE);
    LazyLock::force(&LOGINS);
    LazyLock::force(&TOKEN_REFRESHES);
    LazyLock::force(&PASSWORD_HASH_SECONDS);
    LazyLock::force(&STORE_TIMEOUTS);
    for reason in RATE_LIMIT_FALLBACK_REASONS {
        RATE_LIMIT_REDIS_FALLBACKS.with_label_values(&[reason]);
    }
    LazyLock::force(&RATE_LIMIT_REDIS_UP);
    LazyLock::force(&RATE_LIMIT_REDIS_SECONDS);
}

/// The default registry in Prometheus text format.
pub fn render() -> (String, Vec<u8>) {
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    let _ = encoder.encode(&prometheus::gather(), &mut buf);
    (encoder.format_type().to_string(), buf)
}

/// A method label from a fixed set, so odd methods cannot grow the label space.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_after_init() {
        init();
        LOGINS.with_label_values(&["success"]).inc();
        let (ct, body) = render();
        assert!(ct.starts_with("text/plain"));
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("portcullis_build_info{version="));
        assert!(text.contains("portcullis_logins_total{outcome=\"success\"}"));
    }

    #[test]
    fn cached_series_count_into_the_same_children() {
        init();
        let count = |protocol: &str| {
            REQUESTS
                .with_label_values(&["cached-route", "GET", "204", protocol])
                .get()
        };
        let (before, before_h2) = (count("http1"), count("h2"));
        for _ in 0..3 {
            observe_request("cached-route", "GET", 204, "http1", 0.001);
        }
        observe_request("cached-route", "GET", 404, "http1", 0.001);
        observe_request("cached-route", "GET", 204, "h2", 0.001);
        assert_eq!(count("http1"), before + 3);
        // the protocol is part of the series: an h2 request counts apart
        assert_eq!(count("h2"), before_h2 + 1);
        let decisions = AUTH_DECISIONS.with_label_values(&["jwt", "cached-outcome"]);
        let before = decisions.get();
        auth_decision("jwt", "cached-outcome");
        auth_decision("jwt", "cached-outcome");
        assert_eq!(decisions.get(), before + 2);
    }
}
