-- The catalog is served from the store (see the PostgreSQL migration of the same name).
ALTER TABLE ai_services ADD COLUMN slug TEXT;
ALTER TABLE ai_services ADD COLUMN tenant_restriction_headers TEXT;
CREATE UNIQUE INDEX idx_ai_services_slug ON ai_services(slug);
