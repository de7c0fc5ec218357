//! Directory import: users, departments, groups, roles and assets from an IdP or CMDB export.
//!
//! Two file shapes are accepted (README "Directory import"): one JSON document with a list per
//! kind, or a CSV export of users (header has `email`) or of assets (header has `asset_type`).
//! The whole file is validated and every reference resolved before the store is touched, so a
//! bad row names its line and nothing is half-imported. Rows are matched to the store by
//! `external_id` (users also by email, departments and roles by name) and upserted.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::directory_rows::{
    AssetEntry, AssetRow, DepartmentEntry, DepartmentRow, DirectoryKeys, DirectoryPlan,
    DirectorySync, GroupEntry, GroupRow, RoleAssignment, RoleEntry, RoleRow, SourceEntry,
    UserEntry, UserRow,
};
use super::repository::{DirectoryRepository, RepositoryError};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a directory export: {message}")]
    Format { path: String, message: String },
    #[error("{path}: {row}: {message}")]
    Row {
        path: String,
        row: String,
        message: String,
    },
}

/// A parsed export, before it is matched against the store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Directory {
    pub source: SourceEntry,
    pub departments: Vec<DepartmentEntry>,
    pub roles: Vec<RoleEntry>,
    pub groups: Vec<GroupEntry>,
    pub users: Vec<UserEntry>,
    pub assets: Vec<AssetEntry>,
}

impl Directory {
    /// Reads a `.json` or `.csv` export.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: shown.clone(),
            source,
        })?;
        let is_csv = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("csv"));
        if is_csv {
            Self::from_csv(&shown, &text)
        } else {
            serde_json::from_str(&text).map_err(|error| DirectoryError::Format {
                path: shown,
                message: error.to_string(),
            })
        }
    }

    fn from_csv(path: &str, text: &str) -> Result<Directory, DirectoryError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header = reader
            .headers()
            .map_err(|error| DirectoryError::Format {
                path: path.to_owned(),
                message: error.to_string(),
            })?
            .clone();
        let has = |name: &str| header.iter().any(|h| h.eq_ignore_ascii_case(name));
        let kind = if has("asset_type") {
            "assets"
        } else if has("email") {
            "users"
        } else {
            return Err(DirectoryError::Format {
                path: path.to_owned(),
                message: "a CSV export needs an `email` column (users) or an `asset_type` column (assets)".to_owned(),
            });
        };
        let mut directory = Directory::default();
        for (index, record) in reader.records().enumerate() {
            let row_error = |message: String| DirectoryError::Row {
                path: path.to_owned(),
                row: format!("line {}", index + 2),
                message,
            };
            let record = record.map_err(|error| row_error(error.to_string()))?;
            let field = |name: &str| -> Option<String> {
                header
                    .iter()
                    .position(|h| h.eq_ignore_ascii_case(name))
                    .and_then(|i| record.get(i))
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            };
            let list = |name: &str| -> Vec<String> {
                field(name)
                    .map(|v| {
                        v.split(';')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if kind == "users" {
                let risk_score = field("risk_score")
                    .map(|v| {
                        v.parse::<i32>()
                            .map_err(|_| row_error(format!("risk_score {v:?} is not a number")))
                    })
                    .transpose()?;
                directory.users.push(UserEntry {
                    external_id: field("external_id").unwrap_or_default(),
                    email: field("email").unwrap_or_default(),
                    first_name: field("first_name"),
                    last_name: field("last_name"),
                    display_name: field("display_name"),
                    department: field("department"),
                    job_title: field("job_title"),
                    manager: field("manager"),
                    employee_type: field("employee_type"),
                    risk_score,
                    clearance_level: field("clearance_level"),
                    status: field("status"),
                    groups: has("groups").then(|| list("groups")),
                    roles: has("roles").then(|| {
                        list("roles")
                            .into_iter()
                            .map(RoleAssignment::Name)
                            .collect()
                    }),
                });
            } else {
                let crown_jewel = match field("crown_jewel").as_deref() {
                    None => false,
                    Some(v)
                        if ["true", "yes", "1"]
                            .iter()
                            .any(|t| v.eq_ignore_ascii_case(t)) =>
                    {
                        true
                    }
                    Some(v)
                        if ["false", "no", "0"]
                            .iter()
                            .any(|t| v.eq_ignore_ascii_case(t)) =>
                    {
                        false
                    }
                    Some(v) => {
                        return Err(row_error(format!("crown_jewel {v:?} is not a boolean")))
                    }
                };
                directory.assets.push(AssetEntry {
                    external_id: field("external_id").unwrap_or_default(),
                    asset_type: field("asset_type").unwrap_or_default(),
                    hostname: field("hostname"),
                    ip_addresses: list("ip_addresses"),
                    mac_addresses: list("mac_addresses"),
                    serial_number: field("serial_number"),
                    owner: field("owner"),
                    department: field("department"),
                    os: field("os"),
                    os_version: field("os_version"),
                    compliance_status: field("compliance_status"),
                    crown_jewel,
                    sensitivity: field("sensitivity"),
                    data_classification: list("data_classification"),
                    status: field("status"),
                });
            }
        }
        Ok(directory)
    }

    pub fn provider(&self) -> &str {
        self.source.provider.as_deref().unwrap_or("file")
    }

    pub fn record_count(&self) -> usize {
        self.departments.len()
            + self.roles.len()
            + self.groups.len()
            + self.users.len()
            + self.assets.len()
    }
}

const USER_STATUSES: [&str; 3] = ["active", "suspended", "inactive"];
const ASSET_STATUSES: [&str; 4] = ["active", "retired", "lost", "stolen"];
const SENSITIVITIES: [&str; 4] = ["low", "medium", "high", "critical"];

fn lower(value: &str) -> String {
    value.trim().to_lowercase()
}

fn one_of(value: Option<&str>, allowed: &[&str], default: &str) -> Result<String, String> {
    let value = value.map(lower).unwrap_or_else(|| default.to_owned());
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(format!("{value:?} is not one of {}", allowed.join(", ")))
    }
}

impl DirectoryPlan {
    /// The row's key: the stored one (an update) or a new one (a creation).
    fn key(&mut self, existing: Option<Uuid>) -> Uuid {
        match existing {
            Some(id) => {
                self.updated += 1;
                id
            }
            None => {
                self.created += 1;
                Uuid::new_v4()
            }
        }
    }

    /// Validates `directory` and resolves every reference against itself and `keys`.
    pub fn build(
        path: &str,
        directory: &Directory,
        keys: &DirectoryKeys,
    ) -> Result<DirectoryPlan, DirectoryError> {
        let fail = |row: String, message: String| DirectoryError::Row {
            path: path.to_owned(),
            row,
            message,
        };
        let mut plan = DirectoryPlan::default();

        // Departments: the file's, plus any a user or asset names that the store lacks.
        let mut department_ids: HashMap<String, Uuid> = keys.departments_by_name.clone();
        let mut seen = HashSet::new();
        let mut departments: Vec<DepartmentEntry> = Vec::new();
        for (i, entry) in directory.departments.iter().enumerate() {
            let name = entry.name.trim();
            if name.is_empty() {
                return Err(fail(format!("departments[{i}]"), "name is empty".into()));
            }
            if !seen.insert(name.to_owned()) {
                return Err(fail(
                    format!("departments[{i}]"),
                    format!("department {name:?} is listed twice"),
                ));
            }
            departments.push(entry.clone());
        }
        let named = directory
            .users
            .iter()
            .filter_map(|u| u.department.as_deref())
            .chain(
                directory
                    .assets
                    .iter()
                    .filter_map(|a| a.department.as_deref()),
            );
        for name in named {
            let name = name.trim();
            if !name.is_empty() && !seen.contains(name) && !department_ids.contains_key(name) {
                seen.insert(name.to_owned());
                departments.push(DepartmentEntry {
                    name: name.to_owned(),
                    ..DepartmentEntry::default()
                });
            }
        }
        for entry in &departments {
            let name = entry.name.trim().to_owned();
            let id = plan.key(department_ids.get(&name).copied());
            department_ids.insert(name, id);
            plan.departments.push(DepartmentRow {
                id,
                entry: entry.clone(),
                parent_id: None,
            });
        }
        for row in &mut plan.departments {
            if let Some(parent) = row.entry.parent.as_deref().map(str::trim) {
                let parent_id = department_ids.get(parent).copied().ok_or_else(|| {
                    fail(
                        format!("department {:?}", row.entry.name),
                        format!(
                            "parent department {parent:?} is neither in the file nor in the store"
                        ),
                    )
                })?;
                if parent_id == row.id {
                    return Err(fail(
                        format!("department {:?}", row.entry.name),
                        "a department cannot be its own parent".into(),
                    ));
                }
                row.parent_id = Some(parent_id);
            }
        }
        // A cycle inside the file would make the department chain endless.
        let parents: HashMap<Uuid, Uuid> = plan
            .departments
            .iter()
            .filter_map(|d| d.parent_id.map(|p| (d.id, p)))
            .collect();
        for row in &plan.departments {
            let mut at = row.id;
            for _ in 0..=plan.departments.len() {
                match parents.get(&at) {
                    Some(parent) if *parent == row.id => {
                        return Err(fail(
                            format!("department {:?}", row.entry.name),
                            "its parent chain loops back to it".into(),
                        ))
                    }
                    Some(parent) => at = *parent,
                    None => break,
                }
            }
        }

        // Roles by name.
        let mut role_ids = keys.roles_by_name.clone();
        let mut seen = HashSet::new();
        for (i, entry) in directory.roles.iter().enumerate() {
            let name = entry.name.trim().to_owned();
            if name.is_empty() || !seen.insert(name.clone()) {
                return Err(fail(
                    format!("roles[{i}]"),
                    "name is empty or listed twice".into(),
                ));
            }
            let id = plan.key(role_ids.get(&name).copied());
            role_ids.insert(name, id);
            let mut entry = entry.clone();
            if entry.permissions.is_null() {
                entry.permissions = serde_json::json!({});
            }
            plan.roles.push(RoleRow { id, entry });
        }

        // Groups by external_id.
        let mut group_ids = keys.groups_by_external_id.clone();
        let mut group_names = keys.groups_by_name.clone();
        let mut seen = HashSet::new();
        for (i, entry) in directory.groups.iter().enumerate() {
            let external_id = entry.external_id.trim().to_owned();
            if external_id.is_empty() || entry.name.trim().is_empty() {
                return Err(fail(
                    format!("groups[{i}]"),
                    "external_id and name are required".into(),
                ));
            }
            if !seen.insert(external_id.clone()) {
                return Err(fail(
                    format!("groups[{i}]"),
                    format!("external_id {external_id:?} is listed twice"),
                ));
            }
            let id = plan.key(group_ids.get(&external_id).copied());
            group_ids.insert(external_id, id);
            group_names.insert(entry.name.trim().to_owned(), id);
            plan.groups.push(GroupRow {
                id,
                entry: entry.clone(),
            });
        }

        // Users by external_id, else by email.
        let mut user_ids = keys.users_by_external_id.clone();
        let mut user_emails = keys.users_by_email.clone();
        let mut seen_ids = HashSet::new();
        let mut seen_emails = HashSet::new();
        for (i, entry) in directory.users.iter().enumerate() {
            let row = format!("users[{i}] ({})", entry.email);
            let external_id = entry.external_id.trim().to_owned();
            let email = lower(&entry.email);
            if external_id.is_empty() {
                return Err(fail(row, "external_id is required".into()));
            }
            let valid_email = email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
            });
            if !valid_email {
                return Err(fail(
                    row,
                    format!("{:?} is not an email address", entry.email),
                ));
            }
            if !seen_ids.insert(external_id.clone()) || !seen_emails.insert(email.clone()) {
                return Err(fail(row, "external_id or email is listed twice".into()));
            }
            let status = one_of(entry.status.as_deref(), &USER_STATUSES, "active")
                .map_err(|m| fail(row.clone(), format!("status {m}")))?;
            let risk_score = entry.risk_score.unwrap_or(50);
            if !(0..=100).contains(&risk_score) {
                return Err(fail(row, "risk_score must be between 0 and 100".into()));
            }
            let existing = user_ids
                .get(&external_id)
                .or_else(|| user_emails.get(&email))
                .copied();
            let id = plan.key(existing);
            user_ids.insert(external_id.clone(), id);
            user_emails.insert(email.clone(), id);
            let department_id = entry
                .department
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| department_ids[d]);
            let group_ids = entry
                .groups
                .as_ref()
                .map(|groups| {
                    groups
                        .iter()
                        .map(|g| {
                            let g = g.trim();
                            group_ids
                                .get(g)
                                .or_else(|| group_names.get(g))
                                .copied()
                                .ok_or_else(|| {
                                    fail(
                                        row.clone(),
                                        format!(
                                            "group {g:?} is neither in the file nor in the store"
                                        ),
                                    )
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let roles = entry
                .roles
                .as_ref()
                .map(|roles| {
                    roles
                        .iter()
                        .map(|assignment| {
                            let (name, expires) = match assignment {
                                RoleAssignment::Name(name) => (name.as_str(), None),
                                RoleAssignment::Expiring { name, expires_at } => {
                                    (name.as_str(), *expires_at)
                                }
                            };
                            role_ids
                                .get(name.trim())
                                .map(|id| (*id, expires))
                                .ok_or_else(|| {
                                    fail(
                                        row.clone(),
                                        format!(
                                            "role {name:?} is neither in the file nor in the store"
                                        ),
                                    )
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let mut entry = entry.clone();
            entry.email = email;
            entry.external_id = external_id;
            entry.employee_type = entry.employee_type.as_deref().map(lower);
            entry.clearance_level = entry.clearance_level.as_deref().map(lower);
            plan.users.push(UserRow {
                id,
                entry,
                department_id,
                manager_id: None,
                status,
                risk_score,
                group_ids,
                roles,
            });
        }
        let person = |reference: &str| -> Option<Uuid> {
            let reference = reference.trim();
            user_ids
                .get(reference)
                .or_else(|| user_emails.get(&lower(reference)))
                .copied()
        };
        for row in &mut plan.users {
            if let Some(manager) = row
                .entry
                .manager
                .as_deref()
                .filter(|m| !m.trim().is_empty())
            {
                let manager_id = person(manager).ok_or_else(|| {
                    fail(
                        format!("user {}", row.entry.email),
                        format!("manager {manager:?} is neither in the file nor in the store"),
                    )
                })?;
                row.manager_id = (manager_id != row.id).then_some(manager_id);
            }
        }

        // Assets by external_id.
        let mut seen = HashSet::new();
        for (i, entry) in directory.assets.iter().enumerate() {
            let row = format!("assets[{i}] ({})", entry.external_id);
            let external_id = entry.external_id.trim().to_owned();
            if external_id.is_empty() || entry.asset_type.trim().is_empty() {
                return Err(fail(row, "external_id and asset_type are required".into()));
            }
            if !seen.insert(external_id.clone()) {
                return Err(fail(row, "external_id is listed twice".into()));
            }
            let status = one_of(entry.status.as_deref(), &ASSET_STATUSES, "active")
                .map_err(|m| fail(row.clone(), format!("status {m}")))?;
            if let Some(sensitivity) = entry.sensitivity.as_deref() {
                one_of(Some(sensitivity), &SENSITIVITIES, "")
                    .map_err(|m| fail(row.clone(), format!("sensitivity {m}")))?;
            }
            let ip_addresses = entry
                .ip_addresses
                .iter()
                .map(|ip| {
                    ip.trim()
                        .parse::<IpAddr>()
                        .map_err(|_| fail(row.clone(), format!("{ip:?} is not an IP address")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let owner_id = entry
                .owner
                .as_deref()
                .filter(|o| !o.trim().is_empty())
                .map(|owner| {
                    person(owner).ok_or_else(|| {
                        fail(
                            row.clone(),
                            format!("owner {owner:?} is neither in the file nor in the store"),
                        )
                    })
                })
                .transpose()?;
            let id = plan.key(keys.assets_by_external_id.get(&external_id).copied());
            let mut entry = entry.clone();
            entry.external_id = external_id;
            entry.sensitivity = entry.sensitivity.as_deref().map(lower);
            plan.assets.push(AssetRow {
                id,
                department_id: entry
                    .department
                    .as_deref()
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(|d| department_ids[d]),
                entry,
                ip_addresses,
                owner_id,
                status,
            });
        }
        Ok(plan)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("store: {0}")]
    Store(#[from] RepositoryError),
}

/// What one import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub fetched: usize,
    pub created: usize,
    pub updated: usize,
}

/// Imports the export at `path` into `store` (all or nothing) and records the run, failed runs
/// included, in `integrations` / `integration_sync_logs`.
pub async fn import(
    store: &dyn DirectoryRepository,
    path: &Path,
) -> Result<ImportReport, ImportError> {
    let started_at = OffsetDateTime::now_utc();
    let shown = path.display().to_string();
    let directory = Directory::load(path);
    let (provider, name, integration_type, fetched) = match &directory {
        Ok(directory) => (
            directory.provider().to_owned(),
            directory.source.name.clone(),
            if directory.users.is_empty() && !directory.assets.is_empty() {
                "cmdb"
            } else {
                "identity"
            },
            directory.record_count(),
        ),
        Err(_) => ("file".to_owned(), None, "identity", 0),
    };
    let outcome = async {
        let directory = directory?;
        let keys = store.directory_keys().await?;
        let plan = DirectoryPlan::build(&shown, &directory, &keys)?;
        store.apply_directory(&plan).await?;
        Ok::<_, ImportError>(ImportReport {
            fetched,
            created: plan.created,
            updated: plan.updated,
        })
    }
    .await;
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let (status, created, updated, error) = match &outcome {
        Ok(report) => ("success", report.created, report.updated, None),
        Err(error) => ("failure", 0, 0, Some(error.to_string())),
    };
    let sync = DirectorySync {
        name: name.unwrap_or_else(|| format!("directory import ({provider})")),
        provider,
        integration_type,
        file: shown,
        started_at,
        completed_at: OffsetDateTime::now_utc(),
        status,
        fetched: count(fetched),
        created: count(created),
        updated: count(updated),
        failed: count(if outcome.is_err() { fetched } else { 0 }),
        error,
    };
    if let Err(log_error) = store.record_directory_sync(&sync).await {
        tracing::warn!(%log_error, "Could not record the directory import run.");
        if outcome.is_ok() {
            return Err(log_error.into());
        }
    }
    outcome
}
