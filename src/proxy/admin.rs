//! The admin listener (SPEC §1): `GET /metrics` in Prometheus text format,
//! `/healthz` (the process runs) and `/readyz` (started, store answers,
//! keys loaded, not draining).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::app::App;
use crate::metrics;

pub struct AdminApp {
    app: Arc<App>,
}

impl AdminApp {
    pub fn new(app: Arc<App>) -> Self {
        AdminApp { app }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/metrics" => {
                let (content_type, body) = metrics::render();
                reply(200, &content_type, body)
            }
            "/healthz" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                if self.app.is_ready().await {
                    reply(200, "application/json", br#"{"status":"ready"}"#.to_vec())
                } else {
                    reply(
                        503,
                        "application/json",
                        br#"{"status":"not ready"}"#.to_vec(),
                    )
                }
            }
            _ => reply(
                404,
                "application/json",
                br#"{"error":{"code":"NOT_FOUND","message":"Not found","requestId":""}}"#.to_vec(),
            ),
        }
    }
}
