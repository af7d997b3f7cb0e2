-- version 3: TOTP secrets, backup codes, MFA login tokens, account lockout.

ALTER TABLE users ADD COLUMN locked_until BIGINT;

CREATE TABLE mfa_secrets (
    user_id    TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret     TEXT NOT NULL,             -- "b32:<base32>" or "aes256gcm:<base64 nonce|ciphertext>"
    confirmed  BOOLEAN NOT NULL DEFAULT FALSE,
    last_step  BIGINT,                    -- last accepted TOTP time step (replay guard)
    created_at BIGINT NOT NULL
);

CREATE TABLE backup_codes (
    id        BIGSERIAL PRIMARY KEY,
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,              -- argon2id PHC string of the 8-digit code
    used_at   BIGINT
);
CREATE INDEX backup_codes_by_user ON backup_codes(user_id);

CREATE TABLE mfa_tokens (
    hash       TEXT PRIMARY KEY,          -- SHA-256 of "mfa_…", base64url
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    failures   INTEGER NOT NULL DEFAULT 0,
    used_at    BIGINT
);

CREATE TABLE login_failures (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at      BIGINT NOT NULL
);
CREATE INDEX login_failures_by_user ON login_failures(user_id, at);
