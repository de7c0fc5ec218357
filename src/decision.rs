//! The decision vocabulary and the settings that pick a decision when no policy gives one.
//! A leaf: the config names these types and the policy engine produces them.

use std::fmt;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Review,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Review => "review",
        }
    }

    /// The spelling of the `decisions.decision` column.
    pub fn as_column(self) -> &'static str {
        match self {
            Decision::Allow => "ALLOW",
            Decision::Deny => "DENY",
            Decision::Review => "REVIEW",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an evaluation error does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// DENY with reason `policy_error` (the default).
    Closed,
    /// Treat the failing policy as not matching.
    Open,
}

/// Decisions when no policy matches, by the service's approval status.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    pub approved: Decision,
    pub prohibited: Decision,
    pub review_required: Decision,
    pub unknown: Decision,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            approved: Decision::Allow,
            prohibited: Decision::Deny,
            review_required: Decision::Review,
            unknown: Decision::Review,
        }
    }
}
