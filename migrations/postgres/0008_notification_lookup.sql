-- The writer notifies each violation once per recipient (replays included): it looks notifications
-- up by the violation they are about.
CREATE INDEX IF NOT EXISTS idx_notifications_related ON notifications(related_entity_id);
