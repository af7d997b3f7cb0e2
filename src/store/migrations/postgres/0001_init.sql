-- portcullis schema, version 1 (PostgreSQL dialect of migrations/sqlite/0001):
-- tenants, roles, users, sessions with their refresh tokens, signing keys,
-- audit events. Ids are UUID strings, times unix seconds (UTC).

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE roles (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    permissions TEXT NOT NULL,            -- JSON array of "resource:action"
    built_in    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email          TEXT NOT NULL,         -- lower-cased
    password_hash  TEXT,                  -- PHC string; NULL until an invited user sets one
    first_name     TEXT,
    family_name    TEXT,
    name           TEXT,
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    mfa_enabled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (tenant_id, email)
);

CREATE TABLE user_roles (
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL,
    role      TEXT NOT NULL,
    PRIMARY KEY (user_id, role),
    FOREIGN KEY (tenant_id, role) REFERENCES roles(tenant_id, name) ON DELETE CASCADE
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amr            TEXT NOT NULL,         -- JSON array, e.g. ["pwd"]
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT,
    ip             TEXT,
    user_agent     TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- one row per refresh token ever issued; a used token stays as the proof of reuse
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,          -- SHA-256 of the token, base64url
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

CREATE TABLE signing_keys (
    seq         BIGSERIAL,                -- insertion order (SQLite's rowid)
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_der BYTEA NOT NULL,           -- PKCS#8
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE audit_events (
    seq        BIGSERIAL,                 -- insertion order (SQLite's rowid)
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT,
    at         BIGINT NOT NULL,
    type       TEXT NOT NULL,
    user_id    TEXT,
    ip         TEXT,
    user_agent TEXT,
    outcome    TEXT NOT NULL,
    details    TEXT NOT NULL              -- JSON object, never a secret
);
CREATE INDEX audit_events_by_tenant ON audit_events(tenant_id, at);
