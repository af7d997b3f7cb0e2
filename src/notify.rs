//! Notifications (SPEC §6): verification, reset and invitation tokens are
//! POSTed as JSON `{type, tenantId, userId, email, token, expiresAt}` to
//! `notifications.webhook_url` from a background task (5 s timeout, 3
//! attempts with back-off), never blocking the request. The sidecar sends no
//! email itself. In `portcullis demo` the token is also logged.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::outbound::Endpoint;

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

/// Where notifications go: `http://host:port/path`, or `https://` verified
/// against the system's roots.
#[derive(Debug, Clone)]
pub struct Webhook {
    endpoint: Endpoint,
}

impl Webhook {
    /// From `notifications.webhook_url`; None when it is empty.
    pub fn parse(url: &str) -> Result<Option<Webhook>, String> {
        if url.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(Webhook {
            endpoint: Endpoint::parse("notifications.webhook_url", url, "")?,
        }))
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
    let answer = hook
        .endpoint
        .send(
            "POST",
            &[("content-type", "application/json")],
            Some(body),
            TIMEOUT,
            64 * 1024,
        )
        .await?;
    Ok(answer.status)
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
        assert_eq!(w.endpoint.url(), "http://127.0.0.1:9000/hooks/x");
        assert!(Webhook::parse("https://example.com/x").unwrap().is_some());
        assert!(Webhook::parse("ftp://example.com/x").is_err());
        assert!(Webhook::parse("not a url").is_err());
    }
}
