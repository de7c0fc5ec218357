//! The directory's plain data: the export's entries, the rows resolved from them and the keys
//! already stored. Apart from the import logic so the repository trait can name them without
//! importing the importer.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// One department; `parent` is another department's name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DepartmentEntry {
    pub name: String,
    pub parent: Option<String>,
    pub cost_center: Option<String>,
    pub allowed_ai_services: Vec<String>,
    pub prohibited_ai_services: Vec<String>,
    pub business_unit: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoleEntry {
    pub name: String,
    pub description: Option<String>,
    pub permissions: serde_json::Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupEntry {
    pub external_id: String,
    pub name: String,
    pub description: Option<String>,
    pub group_type: Option<String>,
    pub allowed_ai_services: Vec<String>,
    pub prohibited_ai_services: Vec<String>,
}

/// A role assignment: a role name, or `{name, expires_at}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RoleAssignment {
    Name(String),
    Expiring {
        name: String,
        #[serde(default, with = "time::serde::rfc3339::option")]
        expires_at: Option<OffsetDateTime>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UserEntry {
    pub external_id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub display_name: Option<String>,
    /// Department name.
    pub department: Option<String>,
    pub job_title: Option<String>,
    /// The manager's `external_id` or email.
    pub manager: Option<String>,
    pub employee_type: Option<String>,
    pub risk_score: Option<i32>,
    pub clearance_level: Option<String>,
    pub status: Option<String>,
    /// Group `external_id`s or names; present means "exactly these memberships".
    pub groups: Option<Vec<String>>,
    /// Present means "exactly these roles".
    pub roles: Option<Vec<RoleAssignment>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AssetEntry {
    pub external_id: String,
    pub asset_type: String,
    pub hostname: Option<String>,
    pub ip_addresses: Vec<String>,
    pub mac_addresses: Vec<String>,
    pub serial_number: Option<String>,
    /// The owner's `external_id` or email.
    pub owner: Option<String>,
    pub department: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub compliance_status: Option<String>,
    pub crown_jewel: bool,
    pub sensitivity: Option<String>,
    pub data_classification: Vec<String>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SourceEntry {
    /// okta, azure_ad, crowdstrike, ...; `file` when not given.
    pub provider: Option<String>,
    pub name: Option<String>,
}

/// Primary keys of the directory rows already in the store, by their natural keys.
#[derive(Debug, Default)]
pub struct DirectoryKeys {
    pub departments_by_name: HashMap<String, Uuid>,
    pub roles_by_name: HashMap<String, Uuid>,
    pub groups_by_external_id: HashMap<String, Uuid>,
    pub groups_by_name: HashMap<String, Uuid>,
    pub users_by_external_id: HashMap<String, Uuid>,
    pub users_by_email: HashMap<String, Uuid>,
    pub assets_by_external_id: HashMap<String, Uuid>,
}

#[derive(Debug, Clone)]
pub struct DepartmentRow {
    pub id: Uuid,
    pub entry: DepartmentEntry,
    pub parent_id: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct RoleRow {
    pub id: Uuid,
    pub entry: RoleEntry,
}

#[derive(Debug, Clone)]
pub struct GroupRow {
    pub id: Uuid,
    pub entry: GroupEntry,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub entry: UserEntry,
    pub department_id: Option<Uuid>,
    pub manager_id: Option<Uuid>,
    pub status: String,
    pub risk_score: i32,
    pub group_ids: Option<Vec<Uuid>>,
    pub roles: Option<Vec<(Uuid, Option<OffsetDateTime>)>>,
}

#[derive(Debug, Clone)]
pub struct AssetRow {
    pub id: Uuid,
    pub entry: AssetEntry,
    pub ip_addresses: Vec<IpAddr>,
    pub owner_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
    pub status: String,
}

/// Every row to upsert, with keys resolved; parents before children.
#[derive(Debug, Default)]
pub struct DirectoryPlan {
    pub departments: Vec<DepartmentRow>,
    pub roles: Vec<RoleRow>,
    pub groups: Vec<GroupRow>,
    pub users: Vec<UserRow>,
    pub assets: Vec<AssetRow>,
    pub created: usize,
    pub updated: usize,
}

/// One run of `aigate directory import`, as `integration_sync_logs` records it.
#[derive(Debug, Clone)]
pub struct DirectorySync {
    /// okta, azure_ad, crowdstrike, file, ...
    pub provider: String,
    /// The integration's name (one row per name).
    pub name: String,
    /// `identity` for people, `cmdb` for an asset-only export.
    pub integration_type: &'static str,
    pub file: String,
    pub started_at: time::OffsetDateTime,
    pub completed_at: time::OffsetDateTime,
    /// `success` or `failure`.
    pub status: &'static str,
    pub fetched: i32,
    pub created: i32,
    pub updated: i32,
    pub failed: i32,
    pub error: Option<String>,
}
