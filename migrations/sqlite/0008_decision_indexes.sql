-- The embedded store's decisions table is written once per request and read by the management
-- API newest first. The five per-column indexes of the data model served no query here (the
-- listing filters through CAST(... AS TEXT) and julianday(), which no index can answer) yet cost
-- a b-tree insert each per decision: a third of the audit writer's time per record in
-- benches/store.rs. PostgreSQL keeps them; SQLite keeps one index on the listing's order, which
-- also turns the newest-first listing and the retention sweep from full scans into index walks.
DROP INDEX IF EXISTS idx_decisions_user_id;
DROP INDEX IF EXISTS idx_decisions_decision;
DROP INDEX IF EXISTS idx_decisions_resource_id;
DROP INDEX IF EXISTS idx_decisions_risk_score;
DROP INDEX IF EXISTS idx_decisions_source;
CREATE INDEX IF NOT EXISTS idx_decisions_timestamp ON decisions(timestamp, decision_id);
