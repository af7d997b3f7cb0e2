//! Prometheus metrics of SPEC §11, registered on the default registry (which
//! also carries the `process_*` family). Labels are route names and outcomes,
//! never user ids, emails, tokens or raw paths.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, TextEncoder,
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
        &["route", "method", "status"],
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
    LazyLock::force(&AUTH_CACHE);
    LazyLock::force(&LOGINS);
    LazyLock::force(&TOKEN_REFRESHES);
    LazyLock::force(&PASSWORD_HASH_SECONDS);
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
}
