-- The catalog is served from the store, so the two catalog fields the data model lacks live here:
-- the stable slug policies name services by, and the vendor's tenant-restriction headers.
ALTER TABLE ai_services ADD COLUMN IF NOT EXISTS slug VARCHAR(100) UNIQUE;
ALTER TABLE ai_services ADD COLUMN IF NOT EXISTS tenant_restriction_headers TEXT[];
