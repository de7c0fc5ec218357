-- Every gateway of a fleet keeps in memory what administrators and provisioning systems change in
-- the store: the snapshot (catalog, signatures, policies), the exceptions, the directory (users,
-- departments, groups, roles, assets, proxy credentials, cached by the identity module) and the
-- permanent interception bypass. A change to any of them bumps that domain's revision here (what
-- each gateway polls, the safety net) and notifies `aigate_reload` with the domain's name (what
-- makes it reach every gateway at once). Row triggers: an import that changes nothing (ON CONFLICT
-- DO NOTHING) neither bumps nor notifies; PostgreSQL folds identical notifications of one
-- transaction into one, so a bulk import reloads each gateway once.
CREATE TABLE store_changes (
    domain VARCHAR(20) PRIMARY KEY,
    revision BIGINT NOT NULL DEFAULT 0
);
INSERT INTO store_changes (domain) VALUES ('snapshot'), ('exceptions'), ('directory'), ('bypass');

CREATE OR REPLACE FUNCTION aigate_note_change() RETURNS trigger AS $$
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = TG_ARGV[0];
    PERFORM pg_notify('aigate_reload', TG_ARGV[0]);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- Replaced by the per-domain triggers below.
DROP TRIGGER IF EXISTS policies_notify_reload ON policies;
DROP TRIGGER IF EXISTS exceptions_notify_reload ON exceptions;
DROP FUNCTION IF EXISTS aigate_notify_reload();

DO $$
DECLARE
    tracked RECORD;
BEGIN
    FOR tracked IN SELECT * FROM (VALUES
        ('policies', 'snapshot'), ('ai_services', 'snapshot'), ('ai_service_signatures', 'snapshot'),
        ('users', 'directory'), ('departments', 'directory'), ('groups', 'directory'),
        ('user_groups', 'directory'), ('roles', 'directory'), ('user_roles', 'directory'),
        ('assets', 'directory'), ('proxy_credentials', 'directory'),
        ('intercept_bypass', 'bypass')
    ) AS t(table_name, domain)
    LOOP
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I '
            'FOR EACH ROW EXECUTE FUNCTION aigate_note_change(%L)',
            tracked.table_name || '_note_change', tracked.table_name, tracked.domain);
    END LOOP;
END;
$$;

-- Exceptions count their uses on every matched request (usage_count, last_used): only the
-- columns that change what an exception covers bump the revision.
CREATE TRIGGER exceptions_note_change AFTER INSERT OR DELETE OR UPDATE OF
    exception_type, user_id, department_id, group_id, policy_id, ai_service_id, conditions,
    status, effective_from, effective_until
ON exceptions FOR EACH ROW EXECUTE FUNCTION aigate_note_change('exceptions');
