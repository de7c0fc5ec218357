-- The management API's built-in roles (permissions as the data model's roles.permissions:
-- resource -> allowed access) and its bearer tokens. admin_tokens is aigate's own table: only a
-- token's SHA-256 is kept.
INSERT INTO roles (role_id, name, description, permissions, is_system_role) VALUES
    ('00000000-0000-4000-8000-00000000a001', 'admin', 'Everything, including tokens and reloads',
     '{"policies": ["read", "write"], "exceptions": ["read", "write"], "services": ["read", "write"], "decisions": ["read"], "violations": ["read", "write"], "audit": ["read"], "gateway": ["read", "write"]}', TRUE),
    ('00000000-0000-4000-8000-00000000a002', 'policy_author', 'Writes policies and decides exceptions',
     '{"policies": ["read", "write"], "exceptions": ["read", "write"], "services": ["read"], "decisions": ["read"], "violations": ["read"]}', TRUE),
    ('00000000-0000-4000-8000-00000000a003', 'auditor', 'Reads everything, including the audit trail',
     '{"policies": ["read"], "exceptions": ["read"], "services": ["read"], "decisions": ["read"], "violations": ["read"], "audit": ["read"], "gateway": ["read"]}', TRUE),
    ('00000000-0000-4000-8000-00000000a004', 'readonly', 'Reads policies, services, decisions and violations',
     '{"policies": ["read"], "services": ["read"], "decisions": ["read"], "violations": ["read"]}', TRUE)
ON CONFLICT (name) DO NOTHING;

CREATE TABLE admin_tokens (
    token_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(100) NOT NULL,
    token_sha256 CHAR(64) UNIQUE NOT NULL,
    role_id UUID NOT NULL REFERENCES roles(role_id),
    -- The person the token acts for (the actor of its changes); the system user when NULL.
    user_id UUID REFERENCES users(user_id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
