//! Policy definitions: the `policies` rows, and the files they are shipped as.
//!
//! On disk a policy is `NAME.yaml` (the row's metadata) next to the Rego module it names in
//! `rule_file`; `NAME_test.rego` holds its unit tests for `aigate policy test`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Subject;

/// `{departments: [], users: [], services: []}`; an empty list means everyone / everything.
/// Entries match by id, or by name, email or slug.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scope {
    pub departments: Vec<String>,
    pub users: Vec<String>,
    pub services: Vec<String>,
}

impl Scope {
    /// Whether some request can be in both scopes: on every dimension one side is unrestricted
    /// (empty) or the two lists share an entry.
    pub fn overlaps(&self, other: &Scope) -> bool {
        let meet = |a: &[String], b: &[String]| {
            a.is_empty()
                || b.is_empty()
                || a.iter()
                    .any(|x| b.iter().any(|y| x.eq_ignore_ascii_case(y)))
        };
        meet(&self.departments, &other.departments)
            && meet(&self.users, &other.users)
            && meet(&self.services, &other.services)
    }

    /// Runs for every policy on every request, so nothing is allocated: ids are formatted
    /// into stack buffers, and only when the list that needs them is not empty.
    pub fn covers(&self, subject: &Subject<'_>) -> bool {
        fn listed(list: &[String], candidates: &[Option<&str>]) -> bool {
            list.iter().any(|entry| {
                candidates
                    .iter()
                    .flatten()
                    .any(|c| c.eq_ignore_ascii_case(entry))
            })
        }
        let (mut user_id, mut service_id) = (Uuid::encode_buffer(), Uuid::encode_buffer());
        let users = self.users.is_empty()
            || listed(
                &self.users,
                &[
                    Some(&*subject.user_id.hyphenated().encode_lower(&mut user_id)),
                    subject.user_email,
                ],
            );
        let departments =
            self.departments.is_empty() || listed(&self.departments, &[subject.department]);
        users
            && departments
            && (self.services.is_empty()
                || listed(
                    &self.services,
                    &[
                        subject
                            .service_id
                            .map(|id| &*id.hyphenated().encode_lower(&mut service_id)),
                        subject.service_slug,
                    ],
                ))
    }
}

/// One `policies` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDefinition {
    pub policy_id: Uuid,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub version: String,
    pub status: String,
    pub priority: i32,
    pub policy_type: String,
    #[serde(default)]
    pub framework: Option<String>,
    #[serde(default)]
    pub article_reference: Option<String>,
    #[serde(default = "default_engine")]
    pub rule_engine: String,
    /// Filled from `rule_file` when loaded from disk.
    #[serde(default)]
    pub rule_content: String,
    #[serde(default, skip_serializing)]
    pub rule_file: Option<PathBuf>,
    #[serde(default)]
    pub rule_metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub scope: Scope,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_date: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expiry_date: Option<OffsetDateTime>,
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_engine() -> String {
    "opa".to_owned()
}

impl PolicyDefinition {
    pub fn in_effect(&self, now: OffsetDateTime) -> bool {
        self.effective_date <= now && self.expiry_date.is_none_or(|expiry| now < expiry)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("policy directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Every `*.yaml` policy of `dir` with its Rego module read, in file-name order.
pub fn load_dir(dir: &Path) -> Result<Vec<PolicyDefinition>, PolicyLoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyLoadError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut policies = Vec::new();
    let mut ids = std::collections::HashMap::new();
    for path in files {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let invalid = |message: String| PolicyLoadError::Invalid {
            path: path.clone(),
            message,
        };
        let mut policy: PolicyDefinition =
            serde_yaml::from_str(&read(&path)?).map_err(|e| invalid(e.to_string()))?;
        match (&policy.rule_file, policy.rule_content.is_empty()) {
            (Some(file), true) => policy.rule_content = read(&dir.join(file))?,
            (None, false) => {}
            _ => {
                return Err(invalid(
                    "exactly one of rule_file and rule_content is required".into(),
                ))
            }
        }
        if !matches!(
            policy.status.as_str(),
            "draft" | "review" | "active" | "archived"
        ) {
            return Err(invalid(format!(
                "status {:?} must be draft, review, active or archived",
                policy.status
            )));
        }
        if !(0..=1000).contains(&policy.priority) {
            return Err(invalid(format!(
                "priority {} is outside 0..=1000",
                policy.priority
            )));
        }
        if let Some(other) = ids.insert(policy.policy_id, path.clone()) {
            return Err(invalid(format!(
                "policy_id {} is also used by {}",
                policy.policy_id,
                other.display()
            )));
        }
        policies.push(policy);
    }
    Ok(policies)
}
