-- version 5: logins through an external OpenID Provider (issue 18).

-- A login begun at /auth/oidc/{provider}/start, until its callback (single use).
CREATE TABLE oidc_logins (
    state_hash   TEXT PRIMARY KEY,        -- SHA-256 of the state sent to the provider
    provider     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,           -- the PKCE code verifier
    redirect_uri TEXT NOT NULL,           -- the application's, checked at start
    app_state    TEXT NOT NULL,
    binding_hash TEXT NOT NULL,           -- SHA-256 of the browser cookie
    expires_at   BIGINT NOT NULL
);

-- The one-time code the callback hands the application (single use).
CREATE TABLE oidc_codes (
    hash       TEXT PRIMARY KEY,          -- SHA-256 of the code and the redirect URI
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    provider   TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- A user's accounts at external providers.
CREATE TABLE user_identities (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    email         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    UNIQUE (tenant_id, provider, subject)
);
CREATE INDEX user_identities_by_user ON user_identities(tenant_id, user_id);
