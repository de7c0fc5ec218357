-- The user recorded when a request cannot be attributed to anyone (and the actor of gateway-made
-- rows such as imported policies). Exceptions and policies reference users, so it must exist.
INSERT OR IGNORE INTO users (user_id, email, status)
VALUES ('00000000-0000-0000-0000-000000000000', 'anonymous@aigate.invalid', 'active');

-- Any change to a policy moves its updated_at, so the gateway's reloader (which polls
-- max(updated_at)) sees edits made with plain SQL too. Recursive triggers are off in SQLite.
CREATE TRIGGER policies_touch_updated_at AFTER UPDATE ON policies
WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE policies SET updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE policy_id = NEW.policy_id;
END;
