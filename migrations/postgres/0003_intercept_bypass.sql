-- Hosts an administrator made permanent members of the interception bypass (typically promoted
-- from the learned bypass of certificate-pinning apps). Not in the seed data model: aigate's own.
CREATE TABLE intercept_bypass (
    host VARCHAR(253) PRIMARY KEY,
    reason TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
