-- version 4: single-use tokens for email verification, password reset and invitations.

CREATE TABLE one_time_tokens (
    hash       TEXT PRIMARY KEY,          -- SHA-256 of the token, base64url
    kind       TEXT NOT NULL CHECK (kind IN ('email_verification', 'password_reset', 'invite')),
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX one_time_tokens_by_user ON one_time_tokens(user_id, kind);
CREATE INDEX audit_events_by_user ON audit_events(tenant_id, user_id, at);
