-- version 2: API keys. Only the SHA-256 of a key is kept (base64url, like
-- refresh tokens); the key itself is shown once at creation.

CREATE TABLE api_keys (
    seq          BIGSERIAL,               -- insertion order (SQLite's rowid)
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    key_prefix   TEXT NOT NULL,           -- first 12 characters, for recognising a key
    key_hash     TEXT NOT NULL UNIQUE,    -- SHA-256 of the key, base64url
    scopes       TEXT,                    -- JSON array; NULL = the owner's permissions
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys(user_id, created_at);
