-- Per-user credentials for `Proxy-Authorization: Basic` in explicit mode. Not in the seed data
-- model: aigate's own. Only an argon2id PHC string is kept, never the password.
CREATE TABLE proxy_credentials (
    user_id UUID PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    -- What the client types as the user name; the user's email unless set otherwise.
    username VARCHAR(255) UNIQUE NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_proxy_credentials_username ON proxy_credentials (lower(username));
