-- Revisions of what gateways keep in memory: the snapshot (catalog, signatures, policies), the
-- exceptions, the directory (users, departments, groups, roles, assets, proxy credentials) and
-- the permanent interception bypass. Triggers bump a domain's revision on any change, whoever
-- makes it (the admin API, a provisioning job, plain SQL); the gateway polls them.
CREATE TABLE store_changes (
    domain TEXT PRIMARY KEY,
    revision INTEGER NOT NULL DEFAULT 0
);
INSERT INTO store_changes (domain) VALUES ('snapshot'), ('exceptions'), ('directory'), ('bypass');
CREATE TRIGGER policies_note_insert AFTER INSERT ON policies
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER policies_note_update AFTER UPDATE ON policies
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER policies_note_delete AFTER DELETE ON policies
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER ai_services_note_insert AFTER INSERT ON ai_services
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER ai_services_note_update AFTER UPDATE ON ai_services
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER ai_services_note_delete AFTER DELETE ON ai_services
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER ai_service_signatures_note_insert AFTER INSERT ON ai_service_signatures
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER ai_service_signatures_note_update AFTER UPDATE ON ai_service_signatures
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER ai_service_signatures_note_delete AFTER DELETE ON ai_service_signatures
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'snapshot';
END;
CREATE TRIGGER users_note_insert AFTER INSERT ON users
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER users_note_update AFTER UPDATE ON users
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER users_note_delete AFTER DELETE ON users
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER departments_note_insert AFTER INSERT ON departments
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER departments_note_update AFTER UPDATE ON departments
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER departments_note_delete AFTER DELETE ON departments
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER groups_note_insert AFTER INSERT ON groups
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER groups_note_update AFTER UPDATE ON groups
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER groups_note_delete AFTER DELETE ON groups
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER user_groups_note_insert AFTER INSERT ON user_groups
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER user_groups_note_update AFTER UPDATE ON user_groups
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER user_groups_note_delete AFTER DELETE ON user_groups
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER roles_note_insert AFTER INSERT ON roles
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER roles_note_update AFTER UPDATE ON roles
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER roles_note_delete AFTER DELETE ON roles
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER user_roles_note_insert AFTER INSERT ON user_roles
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER user_roles_note_update AFTER UPDATE ON user_roles
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER user_roles_note_delete AFTER DELETE ON user_roles
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER assets_note_insert AFTER INSERT ON assets
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER assets_note_update AFTER UPDATE ON assets
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER assets_note_delete AFTER DELETE ON assets
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER proxy_credentials_note_insert AFTER INSERT ON proxy_credentials
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER proxy_credentials_note_update AFTER UPDATE ON proxy_credentials
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER proxy_credentials_note_delete AFTER DELETE ON proxy_credentials
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'directory';
END;
CREATE TRIGGER intercept_bypass_note_insert AFTER INSERT ON intercept_bypass
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'bypass';
END;
CREATE TRIGGER intercept_bypass_note_update AFTER UPDATE ON intercept_bypass
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'bypass';
END;
CREATE TRIGGER intercept_bypass_note_delete AFTER DELETE ON intercept_bypass
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'bypass';
END;
CREATE TRIGGER exceptions_note_insert AFTER INSERT ON exceptions
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'exceptions';
END;
-- Uses are counted on every matched request: only what changes an exception's cover counts.
CREATE TRIGGER exceptions_note_update AFTER UPDATE OF exception_type, user_id, department_id, group_id, policy_id, ai_service_id, conditions, status, effective_from, effective_until ON exceptions
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'exceptions';
END;
CREATE TRIGGER exceptions_note_delete AFTER DELETE ON exceptions
BEGIN
    UPDATE store_changes SET revision = revision + 1 WHERE domain = 'exceptions';
END;
