-- decisions and audit_events, exactly as the data model describes them, in one of two shapes:
--   * TimescaleDB available: hypertables with the data model's retention policies (90 days for
--     decisions, 7 years for audit events); the gateway then creates the decisions_hourly
--     continuous aggregate (it cannot be created inside this migration's transaction).
--   * Plain PostgreSQL: native monthly range partitions on "timestamp"; the gateway creates
--     partitions ahead, drops expired ones (same retention) and refreshes decisions_hourly, a
--     materialized view created here.
-- The start-up log says which shape is in use.

DO $migration$
DECLARE
    timescale BOOLEAN := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb');
    partitioning TEXT := CASE WHEN timescale THEN '' ELSE ' PARTITION BY RANGE (timestamp)' END;
BEGIN
    IF timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;

    EXECUTE $ddl$
    CREATE TABLE decisions (
        decision_id UUID NOT NULL,
        request_id UUID NOT NULL,
        timestamp TIMESTAMPTZ NOT NULL,
        user_id UUID NOT NULL,
        user_email VARCHAR(255),
        user_department VARCHAR(200),
        action VARCHAR(100) NOT NULL,
        resource_type VARCHAR(50) NOT NULL,
        resource_id UUID,
        resource_name VARCHAR(255),
        resource_url TEXT,
        decision VARCHAR(20) NOT NULL,
        reason TEXT NOT NULL,
        confidence FLOAT,
        risk_score INTEGER,
        risk_factors JSONB,
        policies_evaluated JSONB NOT NULL,
        primary_policy_id UUID,
        source VARCHAR(50),
        device_id UUID,
        ip_address INET,
        geo_location VARCHAR(100),
        user_agent TEXT,
        content_classified BOOLEAN DEFAULT FALSE,
        detected_entities JSONB,
        data_classification TEXT[],
        evaluation_duration_ms INTEGER,
        explanation JSONB,
        PRIMARY KEY (decision_id, timestamp)
    )$ddl$ || partitioning;

    EXECUTE $ddl$
    CREATE TABLE audit_events (
        event_id UUID NOT NULL,
        timestamp TIMESTAMPTZ NOT NULL,
        event_type VARCHAR(100) NOT NULL,
        severity VARCHAR(20) NOT NULL,
        actor_id UUID,
        actor_email VARCHAR(255),
        actor_type VARCHAR(50),
        target_type VARCHAR(50),
        target_id UUID,
        target_name VARCHAR(255),
        action VARCHAR(100) NOT NULL,
        result VARCHAR(50),
        decision_id UUID,
        source VARCHAR(50),
        ip_address INET,
        user_agent TEXT,
        event_data JSONB,
        changes JSONB,
        compliance_relevant BOOLEAN DEFAULT FALSE,
        frameworks TEXT[],
        PRIMARY KEY (event_id, timestamp)
    )$ddl$ || partitioning;

    IF timescale THEN
        PERFORM create_hypertable('decisions', 'timestamp');
        PERFORM create_hypertable('audit_events', 'timestamp');
        PERFORM add_retention_policy('decisions', INTERVAL '90 days');
        PERFORM add_retention_policy('audit_events', INTERVAL '7 years');
    ELSE
        -- Rows outside every monthly partition (clock skew, a late replay) land here instead of
        -- failing; the gateway's partition job moves nothing out of it, it only keeps ahead.
        CREATE TABLE decisions_default PARTITION OF decisions DEFAULT;
        CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
        CREATE MATERIALIZED VIEW decisions_hourly AS
        SELECT
            date_trunc('hour', timestamp) AS hour,
            user_id,
            resource_id,
            decision,
            COUNT(*) AS decision_count,
            AVG(risk_score) AS avg_risk_score,
            AVG(evaluation_duration_ms) AS avg_duration_ms
        FROM decisions
        GROUP BY hour, user_id, resource_id, decision
        WITH NO DATA;
        CREATE UNIQUE INDEX idx_decisions_hourly_key
            ON decisions_hourly (hour, user_id, resource_id, decision) NULLS NOT DISTINCT;
    END IF;
END
$migration$;

CREATE INDEX idx_decisions_user_id ON decisions(user_id, timestamp DESC);
CREATE INDEX idx_decisions_decision ON decisions(decision, timestamp DESC);
CREATE INDEX idx_decisions_resource_id ON decisions(resource_id, timestamp DESC);
CREATE INDEX idx_decisions_risk_score ON decisions(risk_score, timestamp DESC);
CREATE INDEX idx_decisions_source ON decisions(source, timestamp DESC);

CREATE INDEX idx_audit_events_actor_id ON audit_events(actor_id, timestamp DESC);
CREATE INDEX idx_audit_events_event_type ON audit_events(event_type, timestamp DESC);
CREATE INDEX idx_audit_events_severity ON audit_events(severity, timestamp DESC);
CREATE INDEX idx_audit_events_compliance ON audit_events(compliance_relevant, timestamp DESC)
    WHERE compliance_relevant = TRUE;
