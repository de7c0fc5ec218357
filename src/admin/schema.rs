//! Response shapes named in the OpenAPI document.

use utoipa::ToSchema;

/// A page of rows, newest first. Each listing's items are one of the `*Item` schemas
/// (`DecisionItem`, `PolicyItem`, ...), whichever store holds them.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Page {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: unauthorized, forbidden, invalid_request, invalid_rego, not_found,
    /// conflict, store_unavailable, reload_rejected.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    /// The Rego line of a compile error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}
