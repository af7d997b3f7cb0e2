//! The built-in echo upstream of `portcullis demo` (and `portcullis echo`):
//! answers every request with a JSON copy of what it received, identity
//! headers included, so a newcomer sees what the application behind gets.
//! `/slow?delay=SECONDS` waits first (at most 30 s).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

const MAX_BODY: usize = 1 << 20;

pub struct EchoApp;

fn delay_of(query: Option<&str>) -> Duration {
    let secs = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay="))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2.0)
        .clamp(0.0, 30.0);
    Duration::from_secs_f64(secs)
}

#[async_trait]
impl ServeHttp for EchoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let header = session.req_header();
        let method = header.method.to_string();
        let path = header.uri.path().to_string();
        let query = header.uri.query().map(str::to_string);
        let mut headers = BTreeMap::new();
        for (name, value) in header.headers.iter() {
            headers.insert(
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
        if path == "/slow" || path.starts_with("/slow/") {
            tokio::time::sleep(delay_of(query.as_deref())).await;
        }
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            if body.len() + chunk.len() > MAX_BODY {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let echo = serde_json::json!({
            "method": method,
            "path": path,
            "query": query.unwrap_or_default(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        let bytes = serde_json::to_vec_pretty(&echo).unwrap_or_default();
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("content-length", bytes.len())
            .body(bytes)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded() {
        assert_eq!(delay_of(Some("delay=1")), Duration::from_secs(1));
        assert_eq!(delay_of(Some("x=1&delay=0.5")), Duration::from_millis(500));
        assert_eq!(delay_of(Some("delay=999")), Duration::from_secs(30));
        assert_eq!(delay_of(None), Duration::from_secs(2));
    }
}
