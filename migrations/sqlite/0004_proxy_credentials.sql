-- Per-user credentials for `Proxy-Authorization: Basic` (see the PostgreSQL migration of the same
-- name). Only an argon2id PHC string is kept, never the password.
CREATE TABLE proxy_credentials (
    user_id TEXT PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    username TEXT UNIQUE NOT NULL COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
