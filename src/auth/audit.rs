//! Security events (SPEC §10): each one is stored in the audit log and
//! written as a structured log line; details never hold secrets.

use serde_json::Value;
use uuid::Uuid;

use crate::app::App;
use crate::http_types::AuthRequest;
use crate::store::{AuditEvent, now};

/// Records `kind` with `outcome`; a store failure is logged, never answered.
pub async fn record(
    app: &App,
    req: Option<&AuthRequest>,
    tenant_id: Option<Uuid>,
    user_id: Option<Uuid>,
    kind: &str,
    outcome: &str,
    details: Value,
) {
    let event = AuditEvent {
        id: Uuid::now_v7(),
        tenant_id,
        at: now(),
        kind: kind.to_string(),
        user_id,
        ip: req.map(|r| r.client_ip.to_string()),
        user_agent: req.and_then(AuthRequest::user_agent),
        outcome: outcome.to_string(),
        details,
    };
    tracing::info!(
        target: "portcullis::audit",
        event = %event.kind,
        outcome = %event.outcome,
        tenant_id = event.tenant_id.map(|t| t.to_string()),
        user_id = event.user_id.map(|u| u.to_string()),
        ip = event.ip.as_deref(),
        request_id = req.map(|r| r.request_id.as_str()),
        details = %event.details,
        "audit"
    );
    if let Err(e) = app.store.record_audit(event).await {
        tracing::warn!(error = %e, "audit event not stored");
    }
}
