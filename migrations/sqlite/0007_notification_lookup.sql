CREATE INDEX idx_notifications_related ON notifications(related_entity_id);
