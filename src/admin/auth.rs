//! Bearer tokens mapped to role permissions.
//!
//! A token is known by its SHA-256 only: either listed in `[admin] token_sha256` (role `admin`,
//! acting as the system user) or issued with `aigate admin token create --role NAME` into
//! `admin_tokens`. Missing or unknown token → 401; a role without the permission → 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tracing::warn;
use uuid::Uuid;

use super::error::ApiError;
use crate::state::Shared;

/// Who is calling and what their role may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The user the token acts for (the system user for configured tokens).
    pub actor: Uuid,
    /// The token's name, recorded as the actor in the audit trail.
    pub name: String,
    pub role: String,
    permissions: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

impl Grant {
    /// 403 unless the role grants `access` to `resource`.
    pub fn require(&self, resource: &str, access: Access) -> Result<(), ApiError> {
        let allowed = self.permissions[resource]
            .as_array()
            .is_some_and(|list| list.iter().any(|a| a.as_str() == Some(access.as_str())));
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role {} may not {} {resource}", self.role, access.as_str()),
            ))
        }
    }
}

pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// A new random token (256 bits, URL-safe) for `aigate admin token create`.
pub fn generate_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    format!(
        "agt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 section 11.1) and any run of spaces may separate it from the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub async fn require_token(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    let Some(token) = presented else {
        return unauthorized("an Authorization: Bearer token is required");
    };
    let digest = token_sha256(token);
    match grant_for(&shared, &digest).await {
        Ok(Some(grant)) => {
            request.extensions_mut().insert(grant);
            next.run(request).await
        }
        Ok(None) => {
            warn!(path = %request.uri().path(), "Admin request with an unknown token.");
            unauthorized("the token is not valid")
        }
        Err(error) => error.into_response(),
    }
}

async fn grant_for(shared: &Shared, digest: &str) -> Result<Option<Grant>, ApiError> {
    let configured = shared
        .config()
        .admin
        .token_sha256
        .iter()
        .any(|known| known.eq_ignore_ascii_case(digest));
    if configured {
        let permissions = shared
            .store
            .role_permissions("admin")
            .await?
            .unwrap_or_default();
        return Ok(Some(Grant {
            actor: Uuid::nil(),
            name: "configured token".to_owned(),
            role: "admin".to_owned(),
            permissions,
        }));
    }
    Ok(shared.store.admin_token(digest).await?.map(|grant| Grant {
        actor: grant.user_id.unwrap_or(Uuid::nil()),
        name: grant.name,
        role: grant.role,
        permissions: grant.permissions,
    }))
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({ "error": { "type": "unauthorized", "message": message } })),
    )
        .into_response()
}
