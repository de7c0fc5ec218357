//! The store methods whose SQL both engines accept, written once.
//!
//! `store_impl!` expands into each engine's module and implements every role trait there: the
//! shared methods from here, and the engine's own methods (the time-series ingest, maintenance,
//! listings and the few statements the engines phrase differently) from the sections it is
//! given. `encode` in the engine's module says how UUIDs, timestamps, lists and JSON are bound
//! there; `$columns` how they are read back. Statements use `$N` placeholders, which sqlx's SQLite driver binds by number too.
//! Times are bound from the gateway's clock (UTC) rather than taken from `NOW()`, so both
//! engines store the same value in the same format.

macro_rules! store_impl {
    (
        $store:ty,
        $columns:ty,
        $db:ty,
        schema: { $($schema_methods:tt)* },
        audit: { $($audit_methods:tt)* },
        admin: { $($admin_methods:tt)* },
        upkeep: { $($upkeep_methods:tt)* } $(,)?
    ) => {
        impl $store {
            /// Inserts or replaces one `policies` row; returns the rows written (0 when an
            /// existing row was kept).
            async fn write_policy_row<'e>(
                executor: impl sqlx::Executor<'e, Database = $db>,
                policy: &$crate::policy::PolicyDefinition,
                actor: uuid::Uuid,
                existing: $crate::store::common::ExistingPolicy,
            ) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::common::ExistingPolicy;
                macro_rules! insert {
                    () => {
                        "INSERT INTO policies (policy_id, name, description, version, status, priority, policy_type, \
                         framework, article_reference, rule_engine, rule_content, rule_metadata, scope, created_by, \
                         updated_by, effective_date, expiry_date, tags, approved_by, approved_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16, $17, \
                         CASE WHEN $18 THEN $14 END, CASE WHEN $18 THEN $19 END) "
                    };
                }
                let (sql, approve) = match existing {
                    ExistingPolicy::Keep => (concat!(insert!(), "ON CONFLICT (policy_id) DO NOTHING"), false),
                    ExistingPolicy::Replace { approve } => (
                        concat!(
                            insert!(),
                            "ON CONFLICT (policy_id) DO UPDATE SET name = excluded.name, description = excluded.description, \
                             version = excluded.version, status = excluded.status, priority = excluded.priority, \
                             policy_type = excluded.policy_type, framework = excluded.framework, \
                             article_reference = excluded.article_reference, rule_engine = excluded.rule_engine, \
                             rule_content = excluded.rule_content, rule_metadata = excluded.rule_metadata, scope = excluded.scope, \
                             updated_by = excluded.updated_by, updated_at = $19, effective_date = excluded.effective_date, \
                             expiry_date = excluded.expiry_date, tags = excluded.tags, \
                             approved_by = CASE WHEN $18 THEN excluded.approved_by ELSE policies.approved_by END, \
                             approved_at = CASE WHEN $18 THEN $19 ELSE policies.approved_at END"
                        ),
                        approve,
                    ),
                };
                let done = sqlx::query(sql)
                    .bind(encode::id(policy.policy_id))
                    .bind(&policy.name)
                    .bind(&policy.description)
                    .bind(&policy.version)
                    .bind(&policy.status)
                    .bind(policy.priority)
                    .bind(&policy.policy_type)
                    .bind(&policy.framework)
                    .bind(&policy.article_reference)
                    .bind(&policy.rule_engine)
                    .bind(&policy.rule_content)
                    .bind(policy.rule_metadata.as_ref().map(encode::json))
                    .bind(encode::json(&policy.scope))
                    .bind(encode::id(actor))
                    .bind(encode::stamp(policy.effective_date))
                    .bind(policy.expiry_date.map(encode::stamp))
                    .bind(encode::list(&policy.tags))
                    .bind(approve)
                    .bind(encode::stamp(time::OffsetDateTime::now_utc()))
                    .execute(executor)
                    .await
                    .map_err($crate::store::classify)?;
                Ok(done.rows_affected())
            }

            /// One service row and its signature rows, replacing what was there.
            async fn upsert_service(
                tx: &mut sqlx::Transaction<'_, $db>,
                service: &$crate::catalog::AiService,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::classify;
                sqlx::query(
                    "INSERT INTO ai_services (service_id, slug, name, vendor, service_type, signatures, risk_tier, \
                     risk_score, risk_factors, approval_status, approved_for, prohibited_for, certifications, \
                     data_handling, data_regions, capabilities, pricing_model, documentation_url, \
                     privacy_policy_url, terms_of_service_url, tenant_restriction_headers, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) \
                     ON CONFLICT (service_id) DO UPDATE SET slug = excluded.slug, name = excluded.name, vendor = excluded.vendor, \
                     service_type = excluded.service_type, signatures = excluded.signatures, risk_tier = excluded.risk_tier, \
                     risk_score = excluded.risk_score, risk_factors = excluded.risk_factors, approval_status = excluded.approval_status, \
                     approved_for = excluded.approved_for, prohibited_for = excluded.prohibited_for, \
                     certifications = excluded.certifications, data_handling = excluded.data_handling, \
                     data_regions = excluded.data_regions, capabilities = excluded.capabilities, \
                     pricing_model = excluded.pricing_model, documentation_url = excluded.documentation_url, \
                     privacy_policy_url = excluded.privacy_policy_url, terms_of_service_url = excluded.terms_of_service_url, \
                     tenant_restriction_headers = excluded.tenant_restriction_headers, updated_at = excluded.updated_at",
                )
                .bind(encode::id(service.service_id))
                .bind(&service.slug)
                .bind(&service.name)
                .bind(&service.vendor)
                .bind(&service.service_type)
                .bind(encode::json(&service.signatures))
                .bind(service.risk_tier.as_str())
                .bind(i32::from(service.risk_score))
                .bind(service.risk_factors.as_ref().map(encode::json))
                .bind(service.approval_status.as_str())
                .bind(encode::list(&service.approved_for))
                .bind(encode::list(&service.prohibited_for))
                .bind(encode::list(&service.certifications))
                .bind(&service.data_handling)
                .bind(encode::list(&service.data_regions))
                .bind(encode::list(&service.capabilities))
                .bind(&service.pricing_model)
                .bind(&service.documentation_url)
                .bind(&service.privacy_policy_url)
                .bind(&service.terms_of_service_url)
                .bind(encode::list(&service.tenant_restriction_headers))
                .bind(encode::stamp(time::OffsetDateTime::now_utc()))
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
                sqlx::query("DELETE FROM ai_service_signatures WHERE service_id = $1")
                    .bind(encode::id(service.service_id))
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
                for (kind, pattern) in $crate::store::signature_rows(service) {
                    sqlx::query(
                        "INSERT INTO ai_service_signatures (signature_id, service_id, signature_type, pattern) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(encode::id(uuid::Uuid::new_v4()))
                    .bind(encode::id(service.service_id))
                    .bind(kind)
                    .bind(pattern)
                    .execute(&mut **tx)
                    .await
                    .map_err(classify)?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            $($schema_methods)*

            $($upkeep_methods)*

            async fn revisions(&self) -> Result<$crate::store::Revisions, $crate::store::StoreError> {
                let rows: Vec<$crate::store::rows::RevisionRow> =
                    sqlx::query_as("SELECT domain, revision FROM store_changes")
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::store::classify)?;
                Ok($crate::store::Revisions::from_rows(
                    rows.into_iter().map(|row| (row.domain, row.revision)),
                ))
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::AuditSink for $store {
            $($audit_methods)*
        }

        #[async_trait::async_trait]
        impl $crate::store::CatalogRepository for $store {
            async fn import_catalog(
                &self,
                catalog: &$crate::catalog::Catalog,
            ) -> Result<usize, $crate::store::StoreError> {
                use $crate::store::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM ai_services")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                if existing > 0 {
                    return Ok(0);
                }
                for service in catalog.services() {
                    Self::upsert_service(&mut tx, service).await?;
                }
                tx.commit().await.map_err(classify)?;
                Ok(catalog.services().len())
            }

            async fn save_service(
                &self,
                service: &$crate::catalog::AiService,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                Self::upsert_service(&mut tx, service).await?;
                tx.commit().await.map_err(classify)
            }

            async fn delete_service(&self, id: uuid::Uuid) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM ai_services WHERE service_id = $1")
                    .bind(encode::id(id))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::classify)?;
                Ok(done.rows_affected() > 0)
            }

            async fn load_catalog(
                &self,
            ) -> Result<Vec<$crate::catalog::AiService>, $crate::store::StoreError> {
                let everything = $crate::store::admin::ListQuery {
                    limit: i64::from(u32::MAX),
                    ..$crate::store::admin::ListQuery::default()
                };
                $crate::store::AdminRepository::list(
                    self,
                    $crate::store::admin::Listing::Services,
                    &everything,
                )
                .await?
                .into_iter()
                .map($crate::store::admin::service_from_row)
                .collect()
            }

            async fn bypass_hosts(&self) -> Result<Vec<String>, $crate::store::StoreError> {
                sqlx::query_scalar("SELECT host FROM intercept_bypass ORDER BY host")
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::classify)
            }

            async fn add_bypass_host(&self, host: &str, reason: &str) -> Result<(), $crate::store::StoreError> {
                sqlx::query("INSERT INTO intercept_bypass (host, reason) VALUES ($1, $2) ON CONFLICT (host) DO NOTHING")
                    .bind(host)
                    .bind(reason)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::classify)?;
                Ok(())
            }

            async fn remove_bypass_host(&self, host: &str) -> Result<bool, $crate::store::StoreError> {
                let result = sqlx::query("DELETE FROM intercept_bypass WHERE host = $1")
                    .bind(host)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::classify)?;
                Ok(result.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::PolicyRepository for $store {
            async fn import_policies(
                &self,
                policies: &[$crate::policy::PolicyDefinition],
            ) -> Result<usize, $crate::store::StoreError> {
                let mut inserted = 0;
                for policy in policies {
                    let written = Self::write_policy_row(
                        &self.pool,
                        policy,
                        uuid::Uuid::nil(),
                        $crate::store::common::ExistingPolicy::Keep,
                    )
                    .await?;
                    inserted += usize::try_from(written).unwrap_or(0);
                }
                Ok(inserted)
            }

            async fn load_policies(
                &self,
            ) -> Result<Vec<$crate::policy::PolicyDefinition>, $crate::store::StoreError> {
                use $crate::store::rows::PolicyRow;
                let rows: Vec<PolicyRow<$columns>> = sqlx::query_as(
                    "SELECT policy_id, name, description, version, status, priority, policy_type, framework, \
                     article_reference, rule_engine, rule_content, rule_metadata, scope, effective_date, expiry_date, tags \
                     FROM policies ORDER BY priority DESC, name",
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                rows.into_iter().map(PolicyRow::into_definition).collect()
            }

            async fn save_policy(
                &self,
                write: &$crate::store::admin::PolicyWrite<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::classify;
                let policy = write.definition;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let existing = $crate::store::common::ExistingPolicy::Replace {
                    approve: write.approve,
                };
                Self::write_policy_row(&mut *tx, policy, write.actor, existing).await?;
                sqlx::query(
                    "INSERT INTO policy_versions (version_id, policy_id, version, rule_content, rule_metadata, \
                     change_summary, changed_by, changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (policy_id, version) DO NOTHING",
                )
                .bind(encode::id(uuid::Uuid::new_v4()))
                .bind(encode::id(policy.policy_id))
                .bind(&policy.version)
                .bind(&policy.rule_content)
                .bind(policy.rule_metadata.as_ref().map(encode::json))
                .bind(&write.change_summary)
                .bind(encode::id(write.actor))
                .bind(encode::stamp(time::OffsetDateTime::now_utc()))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                tx.commit().await.map_err(classify)
            }

            async fn record_policy_conflicts(
                &self,
                conflicts: &[$crate::policy::Conflict],
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                sqlx::query("DELETE FROM policy_conflicts WHERE resolved IS NOT TRUE")
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                let now = encode::stamp(time::OffsetDateTime::now_utc());
                for conflict in conflicts {
                    sqlx::query(
                        "INSERT INTO policy_conflicts (conflict_id, policy_a_id, policy_b_id, conflict_type, conflict_details, \
                         severity, detected_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(encode::id(uuid::Uuid::new_v4()))
                    .bind(encode::id(conflict.policy_a.0))
                    .bind(encode::id(conflict.policy_b.0))
                    .bind(conflict.conflict_type)
                    .bind(encode::json(&conflict.details))
                    .bind(conflict.severity)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                }
                tx.commit().await.map_err(classify)
            }

            async fn load_exceptions(
                &self,
            ) -> Result<Vec<$crate::policy::ExceptionRecord>, $crate::store::StoreError> {
                use $crate::store::rows::ExceptionRow;
                // `usage_count` is INTEGER on PostgreSQL: the cast reads it as 64 bits on both.
                let rows: Vec<ExceptionRow<$columns>> = sqlx::query_as(
                    "SELECT exception_id, status, user_id, department_id, group_id, policy_id, ai_service_id, \
                     conditions, effective_from, effective_until, CAST(usage_count AS BIGINT) AS usage_count \
                     FROM exceptions WHERE status = 'approved'",
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                rows.into_iter().map(ExceptionRow::into_record).collect()
            }

            async fn insert_exception(
                &self,
                exception: &$crate::policy::NewException,
            ) -> Result<(), $crate::store::StoreError> {
                let approved = exception.status == "approved";
                sqlx::query(
                    "INSERT INTO exceptions (exception_id, exception_type, reason, justification, user_id, policy_id, \
                     ai_service_id, status, requested_by, requested_at, approved_at, effective_from, effective_until, conditions) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10, $12, $13)",
                )
                .bind(encode::id(exception.exception_id))
                .bind(exception.exception_type)
                .bind(&exception.reason)
                .bind(&exception.justification)
                .bind(encode::id(exception.user_id))
                .bind(exception.policy_id.map(encode::id))
                .bind(exception.ai_service_id.map(encode::id))
                .bind(exception.status)
                .bind(encode::id(exception.requested_by))
                .bind(encode::stamp(exception.effective_from))
                .bind(approved.then(|| encode::stamp(exception.effective_from)))
                .bind(exception.effective_until.map(encode::stamp))
                .bind(exception.conditions.as_ref().map(encode::json))
                .execute(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(())
            }

            async fn add_exception_uses(
                &self,
                uses: &[(uuid::Uuid, u64)],
            ) -> Result<(), $crate::store::StoreError> {
                let now = encode::stamp(time::OffsetDateTime::now_utc());
                for (id, count) in uses {
                    sqlx::query(
                        "UPDATE exceptions SET usage_count = COALESCE(usage_count, 0) + $1, last_used = $2 WHERE exception_id = $3",
                    )
                    .bind(i32::try_from(*count).unwrap_or(i32::MAX))
                    .bind(&now)
                    .bind(encode::id(*id))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::classify)?;
                }
                Ok(())
            }

            async fn change_exception(
                &self,
                id: uuid::Uuid,
                change: &$crate::store::admin::ExceptionChange,
            ) -> Result<bool, $crate::store::StoreError> {
                let sql = match change.status {
                    "revoked" => {
                        "UPDATE exceptions SET status = 'revoked', revoked_by = $2, revoked_at = $5, \
                         revocation_reason = $3 WHERE exception_id = $1"
                    }
                    _ => {
                        "UPDATE exceptions SET status = $4, approved_by = $2, approved_at = $5, \
                         effective_from = COALESCE(effective_from, $5), \
                         revocation_reason = COALESCE($3, revocation_reason) WHERE exception_id = $1"
                    }
                };
                let done = sqlx::query(sql)
                    .bind(encode::id(id))
                    .bind(encode::id(change.actor))
                    .bind(&change.reason)
                    .bind(change.status)
                    .bind(encode::stamp(time::OffsetDateTime::now_utc()))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::classify)?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::AdminRepository for $store {
            $($admin_methods)*

            async fn create_admin_token(
                &self,
                name: &str,
                role: &str,
                sha256: &str,
            ) -> Result<Option<uuid::Uuid>, $crate::store::StoreError> {
                let id = uuid::Uuid::new_v4();
                let done = sqlx::query(
                    "INSERT INTO admin_tokens (token_id, name, token_sha256, role_id) \
                     SELECT $1, $2, $3, role_id FROM roles WHERE name = $4",
                )
                .bind(encode::id(id))
                .bind(name)
                .bind(sha256.to_ascii_lowercase())
                .bind(role)
                .execute(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok((done.rows_affected() > 0).then_some(id))
            }

            async fn role_permissions(
                &self,
                role: &str,
            ) -> Result<Option<serde_json::Value>, $crate::store::StoreError> {
                use $crate::store::rows::Stored;
                let stored: Option<<$columns as $crate::store::rows::Columns>::Json> =
                    sqlx::query_scalar("SELECT permissions FROM roles WHERE name = $1")
                        .bind(role)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::classify)?;
                Ok(stored.map(|permissions| permissions.read().unwrap_or_default()))
            }

            async fn set_proxy_credential(
                &self,
                email: &str,
                password_hash: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    "INSERT INTO proxy_credentials (user_id, username, password_hash) \
                     SELECT user_id, lower(email), $1 FROM users WHERE lower(email) = lower($2) \
                     ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = CURRENT_TIMESTAMP",
                )
                .bind(password_hash)
                .bind(email)
                .execute(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(done.rows_affected() > 0)
            }

            async fn update_violation(
                &self,
                id: uuid::Uuid,
                patch: &$crate::store::admin::ViolationPatch,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    "UPDATE violations SET status = COALESCE($2, status), assigned_to = COALESCE($3, assigned_to), \
                     resolution_notes = COALESCE($4, resolution_notes), updated_at = $5, \
                     resolved_at = CASE WHEN COALESCE($2, status) IN ('resolved', 'false_positive') THEN COALESCE(resolved_at, $5) ELSE NULL END \
                     WHERE violation_id = $1",
                )
                .bind(encode::id(id))
                .bind(&patch.status)
                .bind(patch.assigned_to.map(encode::id))
                .bind(&patch.notes)
                .bind(encode::stamp(time::OffsetDateTime::now_utc()))
                .execute(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ExportRepository for $store {
            async fn load_integrations(
                &self,
                types: &[&str],
            ) -> Result<Vec<$crate::store::export::Integration>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::rows::IntegrationRow<$columns>> = sqlx::query_as(
                    "SELECT integration_id, name, integration_type, provider, config, enabled, webhook_url, \
                     webhook_secret, health_status, health_check_at, last_sync_at, last_sync_status, last_sync_error \
                     FROM integrations ORDER BY name, integration_id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                let mut integrations = Vec::new();
                for row in rows {
                    let integration = row.into_integration()?;
                    if types.contains(&integration.integration_type.as_str()) {
                        integrations.push(integration);
                    }
                }
                Ok(integrations)
            }

            async fn save_integration(
                &self,
                integration: &$crate::store::export::Integration,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO integrations (integration_id, name, integration_type, provider, config, enabled, \
                     webhook_url, webhook_secret, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                     ON CONFLICT (integration_id) DO UPDATE SET name = excluded.name, \
                     integration_type = excluded.integration_type, provider = excluded.provider, \
                     config = excluded.config, enabled = excluded.enabled, webhook_url = excluded.webhook_url, \
                     webhook_secret = excluded.webhook_secret, updated_at = excluded.updated_at",
                )
                .bind(encode::id(integration.integration_id))
                .bind(&integration.name)
                .bind(&integration.integration_type)
                .bind(&integration.provider)
                .bind(encode::json(&integration.config))
                .bind(integration.enabled)
                .bind(&integration.webhook_url)
                .bind(&integration.webhook_secret)
                .bind(encode::stamp(time::OffsetDateTime::now_utc()))
                .execute(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(())
            }

            async fn delete_integration(
                &self,
                id: uuid::Uuid,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM integrations WHERE integration_id = $1")
                    .bind(encode::id(id))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::classify)?;
                Ok(done.rows_affected() > 0)
            }

            async fn export_cursor(
                &self,
                integration: uuid::Uuid,
                source: $crate::store::export::ExportSource,
            ) -> Result<Option<(String, String)>, $crate::store::StoreError> {
                let row: Option<$crate::store::rows::CursorRow> = sqlx::query_as(
                    "SELECT cursor_time, cursor_id FROM export_cursors WHERE integration_id = $1 AND source = $2",
                )
                .bind(encode::id(integration))
                .bind(source.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(row.map(|row| (row.cursor_time, row.cursor_id)))
            }

            async fn save_export_cursor(
                &self,
                integration: uuid::Uuid,
                source: $crate::store::export::ExportSource,
                cursor: &(String, String),
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO export_cursors (integration_id, source, cursor_time, cursor_id, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (integration_id, source) DO UPDATE SET \
                     cursor_time = excluded.cursor_time, cursor_id = excluded.cursor_id, updated_at = excluded.updated_at",
                )
                .bind(encode::id(integration))
                .bind(source.as_str())
                .bind(&cursor.0)
                .bind(&cursor.1)
                .bind(encode::stamp(time::OffsetDateTime::now_utc()))
                .execute(&self.pool)
                .await
                .map_err($crate::store::classify)?;
                Ok(())
            }

            async fn record_sync(
                &self,
                log: &$crate::store::export::SyncLog,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::classify;
                let mut tx = self.pool.begin().await.map_err(classify)?;
                sqlx::query(
                    "INSERT INTO integration_sync_logs (log_id, integration_id, sync_started_at, sync_completed_at, \
                     status, records_fetched, records_created, records_failed, error_message, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $4)",
                )
                .bind(encode::id(uuid::Uuid::new_v4()))
                .bind(encode::id(log.integration_id))
                .bind(encode::stamp(log.started_at))
                .bind(encode::stamp(log.completed_at))
                .bind(log.status)
                .bind(log.fetched)
                .bind(log.delivered)
                .bind(log.failed)
                .bind(&log.error)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                sqlx::query(
                    "UPDATE integrations SET last_sync_at = $2, last_sync_status = $3, last_sync_error = $4, \
                     health_status = $5, health_check_at = $2 WHERE integration_id = $1",
                )
                .bind(encode::id(log.integration_id))
                .bind(encode::stamp(log.completed_at))
                .bind(log.status)
                .bind(&log.error)
                .bind(log.health)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(())
            }
        }
    };
}

pub(crate) use store_impl;

/// What writing a policy row does to a stored row with the same id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ExistingPolicy {
    /// Leave it (file import: never overwrite an administrator's row).
    Keep,
    /// Replace it; `approve` stamps `approved_by`/`approved_at` (an activation).
    Replace { approve: bool },
}

/// The first half of `refresh_shadow_ai` on either engine (the rebuild that follows is each
/// engine's own: boolean aggregates, JSON paths and id generation differ).
pub(crate) const CLEAR_GATEWAY_SHADOW_AI: &str =
    "DELETE FROM shadow_ai_detections WHERE detection_source = 'aigate_proxy'";
