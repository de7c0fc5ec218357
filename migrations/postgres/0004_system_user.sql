-- The user recorded when a request cannot be attributed to anyone (and the actor of gateway-made
-- rows such as imported policies). Exceptions and policies reference users, so it must exist.
INSERT INTO users (user_id, email, status)
VALUES ('00000000-0000-0000-0000-000000000000', 'anonymous@aigate.invalid', 'active')
ON CONFLICT (user_id) DO NOTHING;

-- Any change to a policy moves its updated_at, so the gateway's reloader (which polls
-- max(updated_at)) sees edits made with plain SQL too.
CREATE OR REPLACE FUNCTION aigate_touch_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW.updated_at = OLD.updated_at THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS policies_touch_updated_at ON policies;
CREATE TRIGGER policies_touch_updated_at BEFORE UPDATE ON policies
FOR EACH ROW EXECUTE FUNCTION aigate_touch_updated_at();

-- Gateways LISTEN on aigate_reload: a change to policies, exceptions or the catalog reaches
-- every gateway of a fleet at once instead of at its next poll. Row triggers: an import that
-- inserts nothing (ON CONFLICT DO NOTHING) must not notify, or reloads would feed themselves.
CREATE OR REPLACE FUNCTION aigate_notify_reload() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('aigate_reload', TG_TABLE_NAME);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS policies_notify_reload ON policies;
CREATE TRIGGER policies_notify_reload AFTER INSERT OR UPDATE OR DELETE ON policies
FOR EACH ROW EXECUTE FUNCTION aigate_notify_reload();

DROP TRIGGER IF EXISTS exceptions_notify_reload ON exceptions;
CREATE TRIGGER exceptions_notify_reload AFTER INSERT OR DELETE OR UPDATE OF status, effective_from, effective_until, conditions ON exceptions
FOR EACH ROW EXECUTE FUNCTION aigate_notify_reload();
