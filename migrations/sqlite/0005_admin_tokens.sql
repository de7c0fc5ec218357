-- The management API's built-in roles and bearer tokens (see the PostgreSQL migration of the same
-- name). Only a token's SHA-256 is kept.
INSERT OR IGNORE INTO roles (role_id, name, description, permissions, is_system_role) VALUES
    ('00000000-0000-4000-8000-00000000a001', 'admin', 'Everything, including tokens and reloads',
     '{"policies": ["read", "write"], "exceptions": ["read", "write"], "services": ["read", "write"], "decisions": ["read"], "violations": ["read", "write"], "audit": ["read"], "gateway": ["read", "write"]}', TRUE),
    ('00000000-0000-4000-8000-00000000a002', 'policy_author', 'Writes policies and decides exceptions',
     '{"policies": ["read", "write"], "exceptions": ["read", "write"], "services": ["read"], "decisions": ["read"], "violations": ["read"]}', TRUE),
    ('00000000-0000-4000-8000-00000000a003', 'auditor', 'Reads everything, including the audit trail',
     '{"policies": ["read"], "exceptions": ["read"], "services": ["read"], "decisions": ["read"], "violations": ["read"], "audit": ["read"], "gateway": ["read"]}', TRUE),
    ('00000000-0000-4000-8000-00000000a004', 'readonly', 'Reads policies, services, decisions and violations',
     '{"policies": ["read"], "services": ["read"], "decisions": ["read"], "violations": ["read"]}', TRUE);

CREATE TABLE admin_tokens (
    token_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_sha256 TEXT UNIQUE NOT NULL,
    role_id TEXT NOT NULL REFERENCES roles(role_id),
    user_id TEXT REFERENCES users(user_id),
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    expires_at TEXT,
    revoked_at TEXT
);
