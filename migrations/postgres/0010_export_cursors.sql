-- Where each integration's exporter stands in each event source (violations, audit_events): the
-- keyset position of the last event the receiver acknowledged, so delivery resumes there after a
-- restart or an outage (at-least-once).
CREATE TABLE export_cursors (
    integration_id UUID NOT NULL REFERENCES integrations(integration_id) ON DELETE CASCADE,
    source VARCHAR(50) NOT NULL,
    cursor_time TEXT NOT NULL,
    cursor_id TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT NOW(),
    PRIMARY KEY (integration_id, source)
);
