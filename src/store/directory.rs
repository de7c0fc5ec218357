//! The identity and directory repositories, written once for both engines.
//!
//! `identity_repositories!` expands into each engine's module, where `encode` names how that
//! engine binds UUIDs, timestamps, lists and JSON; `$columns` names how it reads them back. The
//! two statements the engines cannot share (an `INET[]` membership test against a JSON array) are
//! passed in by the engine.

use std::collections::HashMap;

use uuid::Uuid;

use super::StoreError;
use crate::identity::directory_rows::DirectoryKeys;

/// The natural-key lookups of `DirectoryKeys`, in its field order: the table (for errors) and
/// a query of `natural_key, stored_id` pairs.
pub(crate) const DIRECTORY_KEY_QUERIES: [(&str, &str); 7] = [
    ("departments", "SELECT name AS natural_key, department_id AS stored_id FROM departments"),
    ("roles", "SELECT name AS natural_key, role_id AS stored_id FROM roles"),
    (
        "groups",
        "SELECT external_id AS natural_key, group_id AS stored_id FROM groups WHERE external_id IS NOT NULL",
    ),
    ("groups", "SELECT name AS natural_key, group_id AS stored_id FROM groups"),
    (
        "users",
        "SELECT external_id AS natural_key, user_id AS stored_id FROM users WHERE external_id IS NOT NULL",
    ),
    ("users", "SELECT lower(email) AS natural_key, user_id AS stored_id FROM users"),
    (
        "assets",
        "SELECT external_id AS natural_key, asset_id AS stored_id FROM assets WHERE external_id IS NOT NULL",
    ),
];

pub(crate) fn directory_keys(
    maps: Vec<HashMap<String, Uuid>>,
) -> Result<DirectoryKeys, StoreError> {
    let [departments_by_name, roles_by_name, groups_by_external_id, groups_by_name, users_by_external_id, users_by_email, assets_by_external_id]: [HashMap<String, Uuid>; 7] =
        maps.try_into().map_err(|_| StoreError::Corrupt {
            table: "directory",
            id: String::new(),
            message: "a key lookup is missing".to_owned(),
        })?;
    Ok(DirectoryKeys {
        departments_by_name,
        roles_by_name,
        groups_by_external_id,
        groups_by_name,
        users_by_external_id,
        users_by_email,
        assets_by_external_id,
    })
}

macro_rules! identity_repositories {
    ($store:ty, $columns:ty, device_by_ip: $device_sql:literal, inet_list: $inet_list:literal) => {
        impl $store {
            /// Completes a user row with its department chain, groups and unexpired roles.
            async fn user_context(
                &self,
                row: Option<$crate::store::rows::UserRow<$columns>>,
            ) -> Result<Option<$crate::identity::UserContext>, $crate::store::StoreError> {
                use $crate::store::rows::{GroupRow, RoleRow, ServiceListsRow};
                use $crate::store::classify;
                let Some(row) = row else {
                    return Ok(None);
                };
                let stored_id = row.user_id.clone();
                let (mut user, department_id) = row.into_context()?;
                // The department and its parents, nearest first (depth-bounded against cycles).
                let chain: Vec<ServiceListsRow<$columns>> = sqlx::query_as(
                    "WITH RECURSIVE chain(department_id, name, parent, allowed, prohibited, depth) AS ( \
                       SELECT department_id, name, parent_department_id, allowed_ai_services, prohibited_ai_services, 0 \
                       FROM departments WHERE department_id = $1 \
                       UNION ALL \
                       SELECT d.department_id, d.name, d.parent_department_id, d.allowed_ai_services, d.prohibited_ai_services, c.depth + 1 \
                       FROM departments d JOIN chain c ON d.department_id = c.parent WHERE c.depth < 16) \
                     SELECT name, allowed, prohibited FROM chain ORDER BY depth",
                )
                .bind(department_id)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
                for (depth, department) in chain.into_iter().enumerate() {
                    let (name, allowed, prohibited) = department.lists();
                    if depth == 0 {
                        user.department = Some(name.clone());
                        user.allowed_ai_services.extend(allowed);
                        user.prohibited_ai_services.extend(prohibited);
                    }
                    user.department_chain.push(name);
                }
                let groups: Vec<GroupRow<$columns>> = sqlx::query_as(
                    "SELECT g.group_id, g.name, g.allowed_ai_services AS allowed, g.prohibited_ai_services AS prohibited \
                     FROM groups g JOIN user_groups ug ON ug.group_id = g.group_id WHERE ug.user_id = $1 ORDER BY g.name",
                )
                .bind(&stored_id)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
                for group in groups {
                    let (id, name, allowed, prohibited) = group.into_parts()?;
                    user.group_ids.push(id);
                    user.groups.push(name);
                    user.allowed_ai_services.extend(allowed);
                    user.prohibited_ai_services.extend(prohibited);
                }
                let roles: Vec<RoleRow<$columns>> = sqlx::query_as(
                    "SELECT r.name, ur.expires_at FROM roles r JOIN user_roles ur ON ur.role_id = r.role_id \
                     WHERE ur.user_id = $1 ORDER BY r.name",
                )
                .bind(&stored_id)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
                let now = time::OffsetDateTime::now_utc();
                user.roles = roles
                    .into_iter()
                    .filter_map(|role| role.unexpired_name(now))
                    .collect();
                Ok(Some(user))
            }
        }

        #[async_trait::async_trait]
        impl $crate::identity::IdentityLookup for $store {
            async fn user_context_by_email(
                &self,
                email: &str,
            ) -> Result<Option<$crate::identity::UserContext>, $crate::identity::RepositoryError> {
                let row = sqlx::query_as(
                    "SELECT user_id, email, department_id, risk_score, clearance_level, employee_type, status \
                     FROM users WHERE lower(email) = lower($1)",
                )
                .bind(email)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(self.user_context(row).await?)
            }

            async fn user_context_by_id(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::identity::UserContext>, $crate::identity::RepositoryError> {
                let row = sqlx::query_as(
                    "SELECT user_id, email, department_id, risk_score, clearance_level, employee_type, status \
                     FROM users WHERE user_id = $1",
                )
                .bind(encode::id(id))
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(self.user_context(row).await?)
            }

            async fn device_by_ip(
                &self,
                ip: std::net::IpAddr,
            ) -> Result<Option<$crate::identity::DeviceContext>, $crate::identity::RepositoryError> {
                let row: Option<$crate::store::rows::DeviceRow<$columns>> = sqlx::query_as($device_sql)
                    .bind(ip.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::classify)?;
                Ok(row.map(|row| row.into_context()).transpose()?)
            }

            async fn proxy_credential(
                &self,
                username: &str,
            ) -> Result<Option<(uuid::Uuid, String)>, $crate::identity::RepositoryError> {
                let row: Option<$crate::store::rows::CredentialRow<$columns>> = sqlx::query_as(
                    "SELECT user_id, password_hash FROM proxy_credentials WHERE lower(username) = lower($1)",
                )
                .bind(username)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(row.map(|row| row.into_pair()).transpose()?)
            }
        }

        #[async_trait::async_trait]
        impl $crate::identity::DirectoryRepository for $store {
            async fn directory_keys(
                &self,
            ) -> Result<$crate::identity::directory_rows::DirectoryKeys, $crate::identity::RepositoryError> {
                let mut maps = Vec::new();
                for (table, sql) in $crate::store::directory::DIRECTORY_KEY_QUERIES {
                    let rows: Vec<$crate::store::rows::KeyRow<$columns>> = sqlx::query_as(sql)
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::store::classify)?;
                    maps.push(
                        rows.into_iter()
                            .map(|row| row.into_pair(table))
                            .collect::<Result<_, _>>()?,
                    );
                }
                Ok($crate::store::directory::directory_keys(maps)?)
            }

            async fn apply_directory(
                &self,
                plan: &$crate::identity::directory_rows::DirectoryPlan,
            ) -> Result<(), $crate::identity::RepositoryError> {
                use $crate::store::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                // Parents and managers are set in a second pass: a row may name one inserted after it.
                for d in &plan.departments {
                    sqlx::query(
                        "INSERT INTO departments (department_id, name, cost_center, allowed_ai_services, prohibited_ai_services, business_unit, region) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (department_id) DO UPDATE SET name = excluded.name, \
                         cost_center = excluded.cost_center, allowed_ai_services = excluded.allowed_ai_services, \
                         prohibited_ai_services = excluded.prohibited_ai_services, business_unit = excluded.business_unit, \
                         region = excluded.region, updated_at = CURRENT_TIMESTAMP",
                    )
                    .bind(encode::id(d.id))
                    .bind(d.entry.name.trim())
                    .bind(&d.entry.cost_center)
                    .bind(encode::list(&d.entry.allowed_ai_services))
                    .bind(encode::list(&d.entry.prohibited_ai_services))
                    .bind(&d.entry.business_unit)
                    .bind(&d.entry.region)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                }
                for d in &plan.departments {
                    sqlx::query("UPDATE departments SET parent_department_id = $1 WHERE department_id = $2")
                        .bind(d.parent_id.map(encode::id))
                        .bind(encode::id(d.id))
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                }
                for r in &plan.roles {
                    sqlx::query(
                        "INSERT INTO roles (role_id, name, description, permissions) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (role_id) DO UPDATE SET description = excluded.description, \
                         permissions = excluded.permissions, updated_at = CURRENT_TIMESTAMP",
                    )
                    .bind(encode::id(r.id))
                    .bind(r.entry.name.trim())
                    .bind(&r.entry.description)
                    .bind(encode::json(&r.entry.permissions))
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                }
                for g in &plan.groups {
                    sqlx::query(
                        "INSERT INTO groups (group_id, external_id, name, description, group_type, allowed_ai_services, prohibited_ai_services) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, \
                         description = excluded.description, group_type = excluded.group_type, \
                         allowed_ai_services = excluded.allowed_ai_services, prohibited_ai_services = excluded.prohibited_ai_services, \
                         updated_at = CURRENT_TIMESTAMP",
                    )
                    .bind(encode::id(g.id))
                    .bind(g.entry.external_id.trim())
                    .bind(g.entry.name.trim())
                    .bind(&g.entry.description)
                    .bind(&g.entry.group_type)
                    .bind(encode::list(&g.entry.allowed_ai_services))
                    .bind(encode::list(&g.entry.prohibited_ai_services))
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                }
                for u in &plan.users {
                    sqlx::query(
                        "INSERT INTO users (user_id, external_id, email, first_name, last_name, display_name, department_id, \
                         job_title, employee_type, risk_score, clearance_level, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                         ON CONFLICT (user_id) DO UPDATE SET external_id = excluded.external_id, email = excluded.email, \
                         first_name = excluded.first_name, last_name = excluded.last_name, display_name = excluded.display_name, \
                         department_id = excluded.department_id, job_title = excluded.job_title, employee_type = excluded.employee_type, \
                         risk_score = excluded.risk_score, clearance_level = excluded.clearance_level, status = excluded.status, \
                         deactivated_at = CASE WHEN excluded.status = 'active' THEN NULL ELSE COALESCE(users.deactivated_at, CURRENT_TIMESTAMP) END, \
                         updated_at = CURRENT_TIMESTAMP",
                    )
                    .bind(encode::id(u.id))
                    .bind(&u.entry.external_id)
                    .bind(&u.entry.email)
                    .bind(&u.entry.first_name)
                    .bind(&u.entry.last_name)
                    .bind(&u.entry.display_name)
                    .bind(u.department_id.map(encode::id))
                    .bind(&u.entry.job_title)
                    .bind(&u.entry.employee_type)
                    .bind(u.risk_score)
                    .bind(&u.entry.clearance_level)
                    .bind(&u.status)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                }
                for u in &plan.users {
                    sqlx::query("UPDATE users SET manager_id = $1 WHERE user_id = $2")
                        .bind(u.manager_id.map(encode::id))
                        .bind(encode::id(u.id))
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    if let Some(groups) = &u.group_ids {
                        sqlx::query("DELETE FROM user_groups WHERE user_id = $1")
                            .bind(encode::id(u.id))
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        for group in groups {
                            sqlx::query(
                                "INSERT INTO user_groups (user_id, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                            )
                            .bind(encode::id(u.id))
                            .bind(encode::id(*group))
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        }
                    }
                    if let Some(roles) = &u.roles {
                        sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
                            .bind(encode::id(u.id))
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        for (role, expires) in roles {
                            sqlx::query(
                                "INSERT INTO user_roles (user_id, role_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                            )
                            .bind(encode::id(u.id))
                            .bind(encode::id(*role))
                            .bind(expires.map(encode::stamp))
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        }
                    }
                }
                for a in &plan.assets {
                    let ips: Vec<String> = a.ip_addresses.iter().map(ToString::to_string).collect();
                    sqlx::query(concat!(
                        "INSERT INTO assets (asset_id, external_id, asset_type, hostname, ip_addresses, mac_addresses, serial_number, \
                         owner_id, department_id, os, os_version, compliance_status, crown_jewel, sensitivity, data_classification, status) \
                         VALUES ($1, $2, $3, $4, ", $inet_list, ", $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT (asset_id) DO UPDATE SET \
                         asset_type = excluded.asset_type, hostname = excluded.hostname, ip_addresses = excluded.ip_addresses, \
                         mac_addresses = excluded.mac_addresses, serial_number = excluded.serial_number, owner_id = excluded.owner_id, \
                         department_id = excluded.department_id, os = excluded.os, os_version = excluded.os_version, \
                         compliance_status = excluded.compliance_status, crown_jewel = excluded.crown_jewel, \
                         sensitivity = excluded.sensitivity, data_classification = excluded.data_classification, \
                         status = excluded.status, updated_at = CURRENT_TIMESTAMP",
                    ))
                    .bind(encode::id(a.id))
                    .bind(&a.entry.external_id)
                    .bind(a.entry.asset_type.trim())
                    .bind(&a.entry.hostname)
                    .bind(encode::list(&ips))
                    .bind(encode::list(&a.entry.mac_addresses))
                    .bind(&a.entry.serial_number)
                    .bind(a.owner_id.map(encode::id))
                    .bind(a.department_id.map(encode::id))
                    .bind(&a.entry.os)
                    .bind(&a.entry.os_version)
                    .bind(&a.entry.compliance_status)
                    .bind(a.entry.crown_jewel)
                    .bind(&a.entry.sensitivity)
                    .bind(encode::list(&a.entry.data_classification))
                    .bind(&a.status)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                }
                tx.commit().await.map_err(classify)?;
                Ok(())
            }

            async fn record_directory_sync(
                &self,
                sync: &$crate::identity::directory_rows::DirectorySync,
            ) -> Result<(), $crate::identity::RepositoryError> {
                use $crate::store::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let existing: Option<<$columns as $crate::store::rows::Columns>::Id> = sqlx::query_scalar(
                    "SELECT integration_id FROM integrations WHERE name = $1 AND provider = $2 LIMIT 1",
                )
                .bind(&sync.name)
                .bind(&sync.provider)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
                let integration = existing.unwrap_or_else(|| encode::id(uuid::Uuid::new_v4()));
                sqlx::query(
                    "INSERT INTO integrations (integration_id, name, integration_type, provider, config, last_sync_at, last_sync_status, last_sync_error, health_status) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (integration_id) DO UPDATE SET config = excluded.config, \
                     last_sync_at = excluded.last_sync_at, last_sync_status = excluded.last_sync_status, \
                     last_sync_error = excluded.last_sync_error, health_status = excluded.health_status, updated_at = CURRENT_TIMESTAMP",
                )
                .bind(&integration)
                .bind(&sync.name)
                .bind(sync.integration_type)
                .bind(&sync.provider)
                .bind(encode::json(&serde_json::json!({"source": "file", "path": sync.file})))
                .bind(encode::stamp(sync.completed_at))
                .bind(sync.status)
                .bind(&sync.error)
                .bind(if sync.status == "success" { "healthy" } else { "unhealthy" })
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                sqlx::query(
                    "INSERT INTO integration_sync_logs (log_id, integration_id, sync_started_at, sync_completed_at, status, \
                     records_fetched, records_created, records_updated, records_deleted, records_failed, error_message) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10)",
                )
                .bind(encode::id(uuid::Uuid::new_v4()))
                .bind(&integration)
                .bind(encode::stamp(sync.started_at))
                .bind(encode::stamp(sync.completed_at))
                .bind(sync.status)
                .bind(sync.fetched)
                .bind(sync.created)
                .bind(sync.updated)
                .bind(sync.failed)
                .bind(&sync.error)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(())
            }
        }
    };
}

pub(crate) use identity_repositories;
