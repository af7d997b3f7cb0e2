-- version 6: passkeys (WebAuthn credentials) and their ceremonies (issue 19).

-- A user's passkeys: the public key and the signature counter, never a secret.
CREATE TABLE passkeys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id BLOB NOT NULL UNIQUE,     -- the authenticator's credential id
    public_key    BLOB NOT NULL,            -- webauthn_rp's encoded static state
    state         BLOB NOT NULL,            -- its encoded dynamic state (counter, flags)
    transports    TEXT NOT NULL,             -- JSON list
    name          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX passkeys_by_user ON passkeys(tenant_id, user_id);

-- A ceremony between its begin and its finish (single use, short-lived).
CREATE TABLE passkey_challenges (
    challenge  TEXT PRIMARY KEY,             -- the challenge sent (public, not a secret)
    ceremony   TEXT NOT NULL,                -- register | login | login_allow | mfa
    tenant_id  TEXT NOT NULL,
    user_id    TEXT,                         -- register, mfa, login with an email
    binding    TEXT,                         -- the session (register) or mfa token hash (mfa)
    state      BLOB NOT NULL,               -- webauthn_rp's encoded server state
    expires_at INTEGER NOT NULL
);
