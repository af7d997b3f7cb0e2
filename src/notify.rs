//! Notifications (SPEC §6): verification, reset and invitation tokens are
//! POSTed as JSON `{type, tenantId, userId, email, token, expiresAt}` to
//! `notifications.webhook_url` from a background task (5 s timeout, 3
//! attempts with back-off), never blocking the request. The sidecar sends no
//! email itself. In `portcullis demo` the token is also logged.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use serde::Serialize;

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

/// One message to the webhook.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `email.verification`, `password.reset` or `user.invited`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub tenant_id: String,
    pub user_id: String,
    pub email: String,
    pub token: String,
    pub expires_at: String,
}

/// Where notifications go: `http://host:port/path` (plain HTTP: the receiver
/// runs next to the sidecar; use a local relay for anything remote).
#[derive(Debug, Clone)]
pub struct Webhook {
    uri: http::Uri,
    authority: String,
}

impl Webhook {
    /// From `notifications.webhook_url`; None when it is empty.
    pub fn parse(url: &str) -> Result<Option<Webhook>, String> {
        if url.trim().is_empty() {
            return Ok(None);
        }
        let uri: http::Uri = url
            .trim()
            .parse()
            .map_err(|e| format!("notifications.webhook_url: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(
                "notifications.webhook_url: only http:// is supported in this build".into(),
            );
        }
        let authority = uri
            .authority()
            .ok_or("notifications.webhook_url: no host")?
            .as_str()
            .to_string();
        let authority = if authority.contains(':') {
            authority
        } else {
            format!("{authority}:80")
        };
        Ok(Some(Webhook { uri, authority }))
    }
}

/// Sends `n` in the background; `log_token` also writes it to the log (demo only).
pub fn send(webhook: Option<&Webhook>, n: Notification, log_token: bool) {
    if log_token {
        tracing::warn!(
            kind = n.kind,
            email = %n.email,
            token = %n.token,
            "development delivery of a notification token (portcullis demo only)"
        );
    }
    let Some(hook) = webhook.cloned() else {
        if !log_token {
            tracing::warn!(
                kind = n.kind,
                "no notifications.webhook_url: notification dropped"
            );
        }
        return;
    };
    tokio::spawn(async move {
        let body = Bytes::from(serde_json::to_vec(&n).unwrap_or_default());
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(TIMEOUT, post(&hook, body.clone())).await {
                Ok(Ok(status)) if (200..300).contains(&status) => return,
                Ok(Ok(status)) => tracing::warn!(status, attempt, kind = n.kind, "webhook refused"),
                Ok(Err(e)) => tracing::warn!(error = %e, attempt, kind = n.kind, "webhook failed"),
                Err(_) => tracing::warn!(attempt, kind = n.kind, "webhook timed out"),
            }
            tokio::time::sleep(Duration::from_millis(250 * 4u64.pow(attempt - 1))).await;
        }
        tracing::error!(kind = n.kind, "webhook delivery gave up");
    });
}

async fn post(hook: &Webhook, body: Bytes) -> Result<u16, String> {
    let addr: SocketAddr = tokio::net::lookup_host(&hook.authority)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("webhook host resolves to nothing")?;
    let peer = HttpPeer::new(addr, false, String::new());
    let connector = Connector::new(None);
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    let path = hook.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req =
        RequestHeader::build("POST", path.as_bytes(), Some(4)).map_err(|e| e.to_string())?;
    let host = hook.uri.authority().map(|a| a.as_str()).unwrap_or_default();
    for (name, value) in [
        ("host", host.to_string()),
        ("content-type", "application/json".to_string()),
        ("content-length", body.len().to_string()),
        (
            "user-agent",
            format!("portcullis/{}", env!("CARGO_PKG_VERSION")),
        ),
    ] {
        req.insert_header(name, value).map_err(|e| e.to_string())?;
    }
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| e.to_string())?;
    session
        .write_request_body(body, true)
        .await
        .map_err(|e| e.to_string())?;
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    let status = session
        .response_header()
        .map(|h| h.status.as_u16())
        .unwrap_or(0);
    while let Ok(Some(_)) = session.read_response_body().await {}
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        assert!(Webhook::parse("").unwrap().is_none());
        let w = Webhook::parse("http://127.0.0.1:9000/hooks/x")
            .unwrap()
            .unwrap();
        assert_eq!(w.authority, "127.0.0.1:9000");
        let w = Webhook::parse("http://hooks.local/x").unwrap().unwrap();
        assert_eq!(w.authority, "hooks.local:80");
        assert!(Webhook::parse("https://example.com/x").is_err());
        assert!(Webhook::parse("not a url").is_err());
    }
}
