//! Security events (SPEC §10): each one is stored in the audit log and
//! written as a structured log line; details never hold secrets.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use crate::http_types::AuthRequest;
use crate::store::{AuditEvent, Store, User};
use crate::vocab::now;

/// The audit trail: a store to keep events in.
#[derive(Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Audit { store }
    }

    /// Records `kind` with `outcome` about `user`, in the user's tenant.
    pub async fn user_event(
        &self,
        req: Option<&AuthRequest>,
        user: &User,
        kind: &str,
        outcome: &str,
        details: Value,
    ) {
        self.record(
            req,
            Some(user.tenant_id),
            Some(user.id),
            kind,
            outcome,
            details,
        )
        .await
    }

    /// Records `kind` with `outcome`; a store failure is logged, never answered.
    pub async fn record(
        &self,
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
        if let Err(e) = self.store.record_audit(event).await {
            tracing::warn!(error = %e, "audit event not stored");
        }
    }
}
