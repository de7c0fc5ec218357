-- Hosts an administrator made permanent members of the interception bypass (see the PostgreSQL
-- migration of the same name).
CREATE TABLE intercept_bypass (
    host TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
