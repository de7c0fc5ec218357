-- aigate schema for the embedded SQLite store: the same tables, columns and constraints as
-- migrations/postgres, with types mapped (UUID, JSONB, arrays, INET and timestamps as TEXT; arrays
-- and JSON hold canonical JSON; timestamps are RFC 3339 UTC). No partitions: the gateway's
-- retention job deletes expired decisions and audit events.

PRAGMA foreign_keys = ON;

CREATE TABLE policies (
    policy_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    name TEXT NOT NULL,
    description TEXT,
    version TEXT NOT NULL,  -- Semantic versioning (1.2.3)
    status TEXT NOT NULL,  -- draft, review, active, archived
    priority INTEGER NOT NULL DEFAULT 100,  -- Higher = higher priority
    policy_type TEXT NOT NULL,  -- regulatory, organizational, technical, business_function
    framework TEXT,  -- EU_AI_ACT, NIST_AI_RMF, ISO_42001, ISO_27001, etc.
    article_reference TEXT,  -- "Article 5", "NIST GOVERN-1.1", etc.

    -- Policy content
    rule_engine TEXT NOT NULL,  -- opa, cedar
    rule_content TEXT NOT NULL,  -- Rego/Cedar policy code
    rule_metadata TEXT,  -- Additional metadata for rule execution

    -- Scope
    scope TEXT NOT NULL,  -- {departments: [], users: [], services: []}

    -- Lifecycle
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_by TEXT NOT NULL,  -- Reference to users.user_id
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_by TEXT NOT NULL,
    approved_by TEXT,
    approved_at TEXT,
    effective_date TEXT NOT NULL,
    expiry_date TEXT,

    -- Compliance
    compliance_mappings TEXT,  -- [{framework, control_id, evidence}]

    -- Metadata
    tags TEXT,
    comments TEXT,

    CONSTRAINT valid_status CHECK (status IN ('draft', 'review', 'active', 'archived')),
    CONSTRAINT valid_priority CHECK (priority >= 0 AND priority <= 1000)
);

CREATE INDEX idx_policies_status ON policies(status);
CREATE INDEX idx_policies_type ON policies(policy_type);
CREATE INDEX idx_policies_framework ON policies(framework);
CREATE INDEX idx_policies_effective_date ON policies(effective_date);

CREATE TABLE policy_versions (
    version_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    policy_id TEXT NOT NULL REFERENCES policies(policy_id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    rule_content TEXT NOT NULL,
    rule_metadata TEXT,

    -- Change tracking
    change_summary TEXT,
    changed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    changed_by TEXT NOT NULL,

    -- Git integration
    git_commit_sha TEXT,
    git_branch TEXT,

    CONSTRAINT unique_policy_version UNIQUE (policy_id, version)
);

CREATE INDEX idx_policy_versions_policy_id ON policy_versions(policy_id);
CREATE INDEX idx_policy_versions_changed_at ON policy_versions(changed_at);

CREATE TABLE policy_conflicts (
    conflict_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    policy_a_id TEXT NOT NULL REFERENCES policies(policy_id),
    policy_b_id TEXT NOT NULL REFERENCES policies(policy_id),
    conflict_type TEXT NOT NULL,  -- scope_overlap, contradictory_action, priority_ambiguity
    conflict_details TEXT NOT NULL,
    severity TEXT NOT NULL,  -- low, medium, high, critical
    resolved BOOLEAN DEFAULT FALSE,
    resolution_notes TEXT,
    detected_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    resolved_at TEXT,

    CONSTRAINT valid_severity CHECK (severity IN ('low', 'medium', 'high', 'critical'))
);

CREATE INDEX idx_policy_conflicts_unresolved ON policy_conflicts(resolved) WHERE NOT resolved;

CREATE TABLE departments (
    department_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    name TEXT NOT NULL,
    parent_department_id TEXT REFERENCES departments(department_id),
    cost_center TEXT,

    -- Policy overrides
    default_risk_tolerance INTEGER DEFAULT 50,  -- 0-100
    allowed_ai_services TEXT,  -- Service IDs that are pre-approved
    prohibited_ai_services TEXT,

    -- Business unit info
    business_unit TEXT,
    region TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_departments_name ON departments(name);
CREATE INDEX idx_departments_parent ON departments(parent_department_id);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    external_id TEXT UNIQUE,  -- From IdP (Okta, Azure AD)
    email TEXT UNIQUE NOT NULL,
    first_name TEXT,
    last_name TEXT,
    display_name TEXT,

    -- Organizational context
    department_id TEXT REFERENCES departments(department_id),
    job_title TEXT,
    manager_id TEXT REFERENCES users(user_id),
    employee_type TEXT,  -- full_time, contractor, intern, vendor

    -- Risk profile
    risk_score INTEGER DEFAULT 50,  -- 0-100
    risk_factors TEXT,  -- {violations_count, training_status, access_level}
    clearance_level TEXT,  -- public, internal, confidential, secret, top_secret

    -- Authentication
    sso_enabled BOOLEAN DEFAULT TRUE,
    mfa_enabled BOOLEAN DEFAULT FALSE,
    last_login TEXT,
    failed_login_attempts INTEGER DEFAULT 0,

    -- Lifecycle
    status TEXT NOT NULL DEFAULT 'active',  -- active, suspended, inactive
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    deactivated_at TEXT,

    CONSTRAINT valid_risk_score CHECK (risk_score >= 0 AND risk_score <= 100),
    CONSTRAINT valid_status CHECK (status IN ('active', 'suspended', 'inactive'))
);

CREATE INDEX idx_users_email ON users(email);
CREATE INDEX idx_users_department_id ON users(department_id);
CREATE INDEX idx_users_status ON users(status);
CREATE INDEX idx_users_risk_score ON users(risk_score);
CREATE INDEX idx_users_external_id ON users(external_id);

CREATE TABLE roles (
    role_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    name TEXT UNIQUE NOT NULL,
    description TEXT,
    permissions TEXT NOT NULL,  -- {policies: [read, write], audit: [read], ...}
    is_system_role BOOLEAN DEFAULT FALSE,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_roles_name ON roles(name);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(role_id) ON DELETE CASCADE,
    assigned_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    assigned_by TEXT REFERENCES users(user_id),
    expires_at TEXT,

    PRIMARY KEY (user_id, role_id)
);

CREATE INDEX idx_user_roles_user_id ON user_roles(user_id);
CREATE INDEX idx_user_roles_role_id ON user_roles(role_id);

CREATE TABLE groups (
    group_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    name TEXT NOT NULL,
    description TEXT,
    external_id TEXT,  -- From IdP
    group_type TEXT,  -- security, distribution, role

    -- Policy scope
    allowed_ai_services TEXT,
    prohibited_ai_services TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_groups_name ON groups(name);
CREATE INDEX idx_groups_external_id ON groups(external_id);

CREATE TABLE user_groups (
    user_id TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    added_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,

    PRIMARY KEY (user_id, group_id)
);

CREATE INDEX idx_user_groups_user_id ON user_groups(user_id);
CREATE INDEX idx_user_groups_group_id ON user_groups(group_id);

CREATE TABLE ai_services (
    service_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    name TEXT NOT NULL,
    vendor TEXT,
    service_type TEXT,  -- llm, image_generation, code_assistant, chatbot, etc.

    -- Identification
    signatures TEXT NOT NULL,  -- {domains: [], headers: [], api_patterns: []}
    /*
    Example:
    {
      "domains": ["openai.com", "chatgpt.com", "api.openai.com"],
      "headers": [{"name": "X-OpenAI-Client", "pattern": ".*"}],
      "api_patterns": ["/v1/chat/completions", "/v1/images/generations"],
      "ssl_fingerprints": ["sha256:abc123..."]
    }
    */

    -- Risk profile
    risk_tier TEXT NOT NULL,  -- low, medium, high, critical
    risk_score INTEGER NOT NULL,  -- 0-100
    risk_factors TEXT,  -- {data_retention, training_on_data, geo_location, compliance}

    -- Approval status
    approval_status TEXT NOT NULL,  -- approved, prohibited, review_required, unknown
    approved_for TEXT,  -- Department IDs or group IDs
    prohibited_for TEXT,

    -- Vendor info
    vendor_contact_email TEXT,
    support_url TEXT,
    documentation_url TEXT,

    -- Compliance
    certifications TEXT,  -- SOC2, ISO27001, HIPAA, GDPR, etc.
    data_handling TEXT,  -- no_retention, trains_on_data, retains_90_days, etc.
    data_regions TEXT,  -- us-east, eu-west, etc.
    privacy_policy_url TEXT,
    terms_of_service_url TEXT,

    -- Metadata
    model_version TEXT,
    capabilities TEXT,  -- text_generation, image_generation, code_completion, etc.
    pricing_model TEXT,  -- free, freemium, subscription, pay_per_use

    -- Lifecycle
    discovered_at TEXT,
    last_seen TEXT,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT valid_risk_tier CHECK (risk_tier IN ('low', 'medium', 'high', 'critical')),
    CONSTRAINT valid_risk_score CHECK (risk_score >= 0 AND risk_score <= 100),
    CONSTRAINT valid_approval_status CHECK (approval_status IN ('approved', 'prohibited', 'review_required', 'unknown'))
);

CREATE INDEX idx_ai_services_name ON ai_services(name);
CREATE INDEX idx_ai_services_vendor ON ai_services(vendor);
CREATE INDEX idx_ai_services_risk_tier ON ai_services(risk_tier);
CREATE INDEX idx_ai_services_approval_status ON ai_services(approval_status);

CREATE TABLE ai_service_signatures (
    signature_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    service_id TEXT NOT NULL REFERENCES ai_services(service_id) ON DELETE CASCADE,
    signature_type TEXT NOT NULL,  -- domain, header, api_pattern, ssl_fingerprint
    pattern TEXT NOT NULL,
    confidence REAL DEFAULT 1.0,  -- 0.0-1.0

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_service_signatures_service_id ON ai_service_signatures(service_id);
CREATE INDEX idx_service_signatures_type_pattern ON ai_service_signatures(signature_type, pattern);
CREATE INDEX idx_service_signatures_pattern ON ai_service_signatures(pattern);

CREATE TABLE assets (
    asset_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    external_id TEXT,  -- From CrowdStrike, SentinelOne, etc.
    asset_type TEXT NOT NULL,  -- laptop, desktop, server, mobile, vm, container

    -- Identification
    hostname TEXT,
    ip_addresses TEXT[],
    mac_addresses TEXT,
    serial_number TEXT,

    -- Owner
    owner_id TEXT REFERENCES users(user_id),
    department_id TEXT REFERENCES departments(department_id),

    -- Technical details
    os TEXT,
    os_version TEXT,
    installed_software TEXT,  -- [{name, version, vendor}]

    -- Security posture
    compliance_status TEXT,  -- compliant, non_compliant, unknown
    vulnerabilities TEXT,  -- [{cve_id, severity, remediation}]
    last_scan TEXT,
    edr_agent_installed BOOLEAN DEFAULT FALSE,
    edr_agent_version TEXT,

    -- Classification
    crown_jewel BOOLEAN DEFAULT FALSE,  -- High-value asset
    sensitivity TEXT,  -- low, medium, high, critical
    data_classification TEXT,  -- PII, PHI, financial, trade_secret, etc.

    -- Lifecycle
    status TEXT NOT NULL DEFAULT 'active',  -- active, retired, lost, stolen
    acquired_date TEXT,
    retired_date TEXT,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT valid_sensitivity CHECK (sensitivity IN ('low', 'medium', 'high', 'critical')),
    CONSTRAINT valid_status CHECK (status IN ('active', 'retired', 'lost', 'stolen'))
);

CREATE INDEX idx_assets_owner_id ON assets(owner_id);
CREATE INDEX idx_assets_department_id ON assets(department_id);
CREATE INDEX idx_assets_hostname ON assets(hostname);
CREATE INDEX idx_assets_crown_jewel ON assets(crown_jewel) WHERE crown_jewel = TRUE;
CREATE INDEX idx_assets_compliance_status ON assets(compliance_status);
CREATE INDEX idx_assets_external_id ON assets(external_id);

CREATE TABLE violations (
    violation_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    decision_id TEXT NOT NULL,  -- Reference to decisions table
    timestamp TEXT NOT NULL,

    -- Violator
    user_id TEXT NOT NULL,
    user_email TEXT,
    user_department TEXT,

    -- Violation details
    violation_type TEXT NOT NULL,  -- unapproved_service, pii_detected, policy_evasion, etc.
    policy_id TEXT NOT NULL,  -- Policy that was violated
    policy_name TEXT,
    severity TEXT NOT NULL,  -- low, medium, high, critical

    -- Resource
    resource_type TEXT,
    resource_id TEXT,
    resource_name TEXT,

    -- Status
    status TEXT NOT NULL DEFAULT 'open',  -- open, investigating, resolved, false_positive
    assigned_to TEXT REFERENCES users(user_id),
    resolution_notes TEXT,
    resolved_at TEXT,

    -- Notifications
    notification_sent BOOLEAN DEFAULT FALSE,
    escalated BOOLEAN DEFAULT FALSE,
    escalated_at TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT valid_severity CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    CONSTRAINT valid_status CHECK (status IN ('open', 'investigating', 'resolved', 'false_positive'))
);

CREATE INDEX idx_violations_user_id ON violations(user_id);
CREATE INDEX idx_violations_status ON violations(status);
CREATE INDEX idx_violations_severity ON violations(severity);
CREATE INDEX idx_violations_timestamp ON violations(timestamp DESC);
CREATE INDEX idx_violations_unresolved ON violations(status, timestamp DESC)
    WHERE status IN ('open', 'investigating');

CREATE TABLE exceptions (
    exception_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),

    -- Exception details
    exception_type TEXT NOT NULL,  -- temporary, permanent
    reason TEXT NOT NULL,
    justification TEXT NOT NULL,

    -- Scope
    user_id TEXT REFERENCES users(user_id),
    department_id TEXT REFERENCES departments(department_id),
    group_id TEXT REFERENCES groups(group_id),

    -- What's being excepted
    policy_id TEXT REFERENCES policies(policy_id),
    ai_service_id TEXT REFERENCES ai_services(service_id),

    -- Conditions
    conditions TEXT,  -- {max_uses: 100, data_types: [non-pii], ...}

    -- Lifecycle
    status TEXT NOT NULL DEFAULT 'pending',  -- pending, approved, denied, expired, revoked
    requested_by TEXT NOT NULL REFERENCES users(user_id),
    requested_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    approved_by TEXT REFERENCES users(user_id),
    approved_at TEXT,
    effective_from TEXT,
    effective_until TEXT,

    -- Tracking
    usage_count INTEGER DEFAULT 0,
    last_used TEXT,

    -- Audit
    revoked_by TEXT REFERENCES users(user_id),
    revoked_at TEXT,
    revocation_reason TEXT,

    CONSTRAINT valid_status CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'revoked'))
);

CREATE INDEX idx_exceptions_user_id ON exceptions(user_id);
CREATE INDEX idx_exceptions_status ON exceptions(status);
CREATE INDEX idx_exceptions_effective_dates ON exceptions(effective_from, effective_until);
CREATE INDEX idx_exceptions_policy_id ON exceptions(policy_id);

CREATE TABLE compliance_frameworks (
    framework_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    code TEXT UNIQUE NOT NULL,  -- EU_AI_ACT, NIST_AI_RMF, ISO_42001, etc.
    name TEXT NOT NULL,
    version TEXT,
    description TEXT,
    jurisdiction TEXT,  -- EU, US, Global, etc.
    effective_date TEXT,

    -- Metadata
    url TEXT,
    documentation_url TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Insert initial frameworks
INSERT INTO compliance_frameworks (code, name, version, jurisdiction) VALUES
('EU_AI_ACT', 'EU Artificial Intelligence Act', '2024', 'EU'),
('NIST_AI_RMF', 'NIST AI Risk Management Framework', '1.0', 'US'),
('ISO_42001', 'ISO/IEC 42001 - AI Management System', '2023', 'Global'),
('ISO_27001', 'ISO/IEC 27001 - Information Security', '2022', 'Global'),
('ISO_27701', 'ISO/IEC 27701 - Privacy Information Management', '2019', 'Global');

CREATE TABLE compliance_controls (
    control_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    framework_id TEXT NOT NULL REFERENCES compliance_frameworks(framework_id),
    control_number TEXT NOT NULL,  -- Article 5, GOVERN-1.1, A.5.1, etc.
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    control_type TEXT,  -- preventive, detective, corrective

    -- Implementation
    implementation_status TEXT,  -- not_implemented, partial, implemented, n/a
    implementation_notes TEXT,

    -- Evidence
    evidence_required BOOLEAN DEFAULT TRUE,
    evidence_description TEXT,

    -- Metadata
    parent_control_id TEXT REFERENCES compliance_controls(control_id),
    tags TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT unique_framework_control UNIQUE (framework_id, control_number)
);

CREATE INDEX idx_compliance_controls_framework_id ON compliance_controls(framework_id);
CREATE INDEX idx_compliance_controls_status ON compliance_controls(implementation_status);

CREATE TABLE policy_control_mappings (
    policy_id TEXT NOT NULL REFERENCES policies(policy_id) ON DELETE CASCADE,
    control_id TEXT NOT NULL REFERENCES compliance_controls(control_id) ON DELETE CASCADE,
    mapping_notes TEXT,
    coverage_percentage INTEGER,  -- 0-100, how much of the control does this policy cover

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_by TEXT REFERENCES users(user_id),

    PRIMARY KEY (policy_id, control_id),
    CONSTRAINT valid_coverage CHECK (coverage_percentage >= 0 AND coverage_percentage <= 100)
);

CREATE INDEX idx_policy_control_policy_id ON policy_control_mappings(policy_id);
CREATE INDEX idx_policy_control_control_id ON policy_control_mappings(control_id);

CREATE TABLE compliance_evidence (
    evidence_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    control_id TEXT NOT NULL REFERENCES compliance_controls(control_id),
    evidence_type TEXT NOT NULL,  -- document, screenshot, log_export, attestation, etc.

    -- Evidence details
    title TEXT NOT NULL,
    description TEXT,
    file_url TEXT,  -- S3 URL
    file_hash TEXT,  -- SHA-256

    -- Time period
    period_start TEXT,
    period_end TEXT,

    -- Metadata
    collected_by TEXT REFERENCES users(user_id),
    collected_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    verified_by TEXT REFERENCES users(user_id),
    verified_at TEXT,

    -- Retention
    retention_until TEXT,  -- Legal hold requirement

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_compliance_evidence_control_id ON compliance_evidence(control_id);
CREATE INDEX idx_compliance_evidence_collected_at ON compliance_evidence(collected_at DESC);

CREATE TABLE integrations (
    integration_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    name TEXT NOT NULL,
    integration_type TEXT NOT NULL,  -- identity, asset_discovery, casb, dlp, siem, etc.
    provider TEXT NOT NULL,  -- okta, crowdstrike, netskope, etc.

    -- Configuration
    config TEXT NOT NULL,  -- Provider-specific config (encrypted)
    enabled BOOLEAN DEFAULT TRUE,

    -- Sync settings
    sync_schedule TEXT,  -- Cron expression
    last_sync_at TEXT,
    last_sync_status TEXT,  -- success, failure, partial
    last_sync_error TEXT,
    next_sync_at TEXT,

    -- Webhooks
    webhook_url TEXT,
    webhook_secret TEXT,  -- Encrypted

    -- Health
    health_status TEXT DEFAULT 'unknown',  -- healthy, degraded, unhealthy, unknown
    health_check_at TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT valid_integration_type CHECK (integration_type IN (
        'identity', 'asset_discovery', 'cmdb', 'dlp', 'casb', 'siem', 'grc', 'communication'
    ))
);

CREATE INDEX idx_integrations_type ON integrations(integration_type);
CREATE INDEX idx_integrations_enabled ON integrations(enabled) WHERE enabled = TRUE;

CREATE TABLE integration_sync_logs (
    log_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    integration_id TEXT NOT NULL REFERENCES integrations(integration_id) ON DELETE CASCADE,
    sync_started_at TEXT NOT NULL,
    sync_completed_at TEXT,
    status TEXT NOT NULL,  -- running, success, failure, partial

    -- Metrics
    records_fetched INTEGER,
    records_created INTEGER,
    records_updated INTEGER,
    records_deleted INTEGER,
    records_failed INTEGER,

    -- Error details
    error_message TEXT,
    error_details TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_sync_logs_integration_id ON integration_sync_logs(integration_id);
CREATE INDEX idx_sync_logs_started_at ON integration_sync_logs(sync_started_at DESC);

CREATE TABLE readiness_assessments (
    assessment_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    org_id TEXT NOT NULL,  -- Multi-tenant support
    org_name TEXT,

    -- Assessment details
    assessment_type TEXT NOT NULL,  -- full, quick, targeted
    scan_date TEXT NOT NULL,

    -- Overall scores
    overall_score INTEGER NOT NULL,  -- 0-100
    maturity_level INTEGER NOT NULL,  -- 1-5
    maturity_name TEXT,

    -- Dimension scores
    dimension_scores TEXT NOT NULL,
    /*
    {
      "shadow_ai": {"score": 52, "weight": 0.20, "findings": {...}},
      "policy_coverage": {"score": 70, "weight": 0.15, "findings": {...}},
      ...
    }
    */

    -- Findings
    critical_gaps TEXT,  -- [{gap, risk_level, impact, priority}]
    recommendations TEXT,

    -- Remediation
    remediation_roadmap TEXT,
    quick_wins TEXT,

    -- Benchmark
    industry_avg_score INTEGER,
    percentile INTEGER,  -- 0-100

    -- Metadata
    scan_duration_seconds INTEGER,
    data_sources TEXT,  -- Which integrations provided data

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_by TEXT REFERENCES users(user_id)
);

CREATE INDEX idx_assessments_org_id ON readiness_assessments(org_id);
CREATE INDEX idx_assessments_scan_date ON readiness_assessments(scan_date DESC);
CREATE INDEX idx_assessments_overall_score ON readiness_assessments(overall_score);

CREATE TABLE shadow_ai_detections (
    detection_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    assessment_id TEXT REFERENCES readiness_assessments(assessment_id),

    -- Service detected
    service_name TEXT,
    service_id TEXT REFERENCES ai_services(service_id),  -- NULL if unknown service

    -- Usage
    user_id TEXT REFERENCES users(user_id),
    user_email TEXT,
    department TEXT,

    -- Detection details
    detected_at TEXT NOT NULL,
    detection_source TEXT,  -- casb_log, proxy_log, browser_history, etc.
    access_count INTEGER DEFAULT 1,
    last_access TEXT,

    -- Risk
    approved BOOLEAN DEFAULT FALSE,
    risk_level TEXT,

    -- Action taken
    action_taken TEXT,  -- none, blocked, flagged, exception_granted
    action_date TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_shadow_ai_assessment_id ON shadow_ai_detections(assessment_id);
CREATE INDEX idx_shadow_ai_user_id ON shadow_ai_detections(user_id);
CREATE INDEX idx_shadow_ai_service_id ON shadow_ai_detections(service_id);
CREATE INDEX idx_shadow_ai_unapproved ON shadow_ai_detections(approved) WHERE approved = FALSE;

CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    notification_type TEXT NOT NULL,  -- violation, policy_update, exception_request, etc.
    severity TEXT NOT NULL,  -- info, warning, critical

    -- Recipient
    recipient_id TEXT NOT NULL REFERENCES users(user_id),

    -- Content
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    action_url TEXT,  -- Deep link to relevant UI

    -- Delivery
    channels TEXT NOT NULL,  -- email, slack, teams, pagerduty, sms
    delivery_status TEXT,  -- {email: sent, slack: delivered, ...}

    -- Tracking
    read BOOLEAN DEFAULT FALSE,
    read_at TEXT,
    dismissed BOOLEAN DEFAULT FALSE,
    dismissed_at TEXT,

    -- Context
    related_entity_type TEXT,  -- decision, violation, policy, etc.
    related_entity_id TEXT,

    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    expires_at TEXT
);

CREATE INDEX idx_notifications_recipient_id ON notifications(recipient_id);
CREATE INDEX idx_notifications_created_at ON notifications(created_at DESC);
CREATE INDEX idx_notifications_unread ON notifications(recipient_id, read)
    WHERE read = FALSE AND dismissed = FALSE;

CREATE TABLE decisions (
    decision_id TEXT NOT NULL,
    request_id TEXT NOT NULL,  -- For tracing
    timestamp TEXT NOT NULL,

    -- Context
    user_id TEXT NOT NULL,
    user_email TEXT,
    user_department TEXT,

    -- Action
    action TEXT NOT NULL,  -- access_ai_service, send_prompt, upload_file, etc.

    -- Resource
    resource_type TEXT NOT NULL,  -- ai_service, api_endpoint, file, etc.
    resource_id TEXT,  -- Reference to ai_services.service_id if applicable
    resource_name TEXT,
    resource_url TEXT,

    -- Decision
    decision TEXT NOT NULL,  -- ALLOW, DENY, REVIEW
    reason TEXT NOT NULL,
    confidence REAL,  -- 0.0-1.0

    -- Risk assessment
    risk_score INTEGER,  -- 0-100
    risk_factors TEXT,

    -- Policies applied
    policies_evaluated TEXT NOT NULL,  -- [{policy_id, policy_name, matched, priority}]
    primary_policy_id TEXT,  -- The policy that triggered the decision

    -- Context
    source TEXT,  -- browser_plugin, ide_plugin, api_gateway, proxy, etc.
    device_id TEXT,
    ip_address TEXT,
    geo_location TEXT,
    user_agent TEXT,

    -- Content inspection (if applicable)
    content_classified BOOLEAN DEFAULT FALSE,
    detected_entities TEXT,  -- [{type: PII, value: redacted, confidence}]
    data_classification TEXT,

    -- Performance
    evaluation_duration_ms INTEGER,

    -- Explainability
    explanation TEXT,  -- Detailed reasoning for UI

    PRIMARY KEY (decision_id, timestamp)
);


-- Indices
CREATE INDEX idx_decisions_user_id ON decisions(user_id, timestamp DESC);
CREATE INDEX idx_decisions_decision ON decisions(decision, timestamp DESC);
CREATE INDEX idx_decisions_resource_id ON decisions(resource_id, timestamp DESC);
CREATE INDEX idx_decisions_risk_score ON decisions(risk_score, timestamp DESC);
CREATE INDEX idx_decisions_source ON decisions(source, timestamp DESC);

-- Retention policy (auto-delete after 90 days)

-- Continuous aggregates

CREATE TABLE audit_events (
    event_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    event_type TEXT NOT NULL,  -- ai_service_access_attempt, policy_updated, etc.
    severity TEXT NOT NULL,  -- info, warning, error, critical

    -- Actor
    actor_id TEXT,  -- user_id or system account
    actor_email TEXT,
    actor_type TEXT,  -- user, system, integration

    -- Target
    target_type TEXT,  -- policy, ai_service, user, asset, etc.
    target_id TEXT,
    target_name TEXT,

    -- Event details
    action TEXT NOT NULL,
    result TEXT,  -- success, failure, partial

    -- Context
    decision_id TEXT,  -- Link to decision if applicable
    source TEXT,
    ip_address TEXT,
    user_agent TEXT,

    -- Metadata
    event_data TEXT,  -- Event-specific data
    changes TEXT,  -- Before/after for updates

    -- Compliance
    compliance_relevant BOOLEAN DEFAULT FALSE,
    frameworks TEXT,  -- EU_AI_ACT, NIST_AI_RMF, etc.

    PRIMARY KEY (event_id, timestamp)
);


-- Indices
CREATE INDEX idx_audit_events_actor_id ON audit_events(actor_id, timestamp DESC);
CREATE INDEX idx_audit_events_event_type ON audit_events(event_type, timestamp DESC);
CREATE INDEX idx_audit_events_severity ON audit_events(severity, timestamp DESC);
CREATE INDEX idx_audit_events_compliance ON audit_events(compliance_relevant, timestamp DESC)
    WHERE compliance_relevant = TRUE;

-- Retention: 7 years for compliance

-- The data model's decisions_hourly rollup, computed on read.
CREATE VIEW decisions_hourly AS
SELECT
    strftime('%Y-%m-%dT%H:00:00Z', timestamp) AS hour,
    user_id,
    resource_id,
    decision,
    COUNT(*) AS decision_count,
    AVG(risk_score) AS avg_risk_score,
    AVG(evaluation_duration_ms) AS avg_duration_ms
FROM decisions
GROUP BY hour, user_id, resource_id, decision;
