//! One contract for every store backend: each repository method against a real database, and
//! the management API's listings, which must serialise to the same JSON whatever the engine.
//!
//! A backend is one line: `store_contract!(test_name, time_series, async { url })`. The macro runs the
//! contract on the backend and on SQLite (the reference) and compares the listings' JSON bytes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use sqlx::Connection;
use time::OffsetDateTime;
use uuid::Uuid;

use aigate::audit::{AuditEventRecord, DecisionRecord};
use aigate::store::admin::{ExceptionChange, ListQuery, Listing, PolicyWrite, ViolationPatch};
use aigate::store::{self, Store, TimeSeries};

use crate::store::fresh_pg_database;

/// Every listing the API serves, in a fixed order.
const LISTINGS: [Listing; 8] = [
    Listing::Decisions,
    Listing::Violations,
    Listing::AuditEvents,
    Listing::Exceptions,
    Listing::Policies,
    Listing::Services,
    Listing::PolicyConflicts,
    Listing::ShadowAi,
];

/// Stamps the store takes from its own clock are set to this before listing, so two runs of
/// the fixture serialise identically.
const FIXED: &str = "2026-01-02 03:04:05";

/// One base time for every backend run in this process (whole seconds: PostgreSQL keeps
/// microseconds).
fn base() -> OffsetDateTime {
    static BASE: OnceLock<OffsetDateTime> = OnceLock::new();
    *BASE.get_or_init(|| {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        now - time::Duration::minutes(30)
    })
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | n)
}

fn decision(n: u128, at: OffsetDateTime, deny: bool, unknown_ai: bool) -> DecisionRecord {
    let mut decision = crate::store::decision(at, deny);
    decision.decision_id = id(0xd00 + n);
    decision.request_id = id(0xe00 + n);
    if let Some(violation) = &mut decision.violation {
        violation.violation_id = id(0xf00 + n);
    }
    if unknown_ai {
        decision.explanation = aigate::audit::JsonText::of(
            &serde_json::json!({"facts": {"unknown_ai": true, "service": "unlisted"}}),
        );
        decision.resource_name = Some("Unlisted AI".into());
    }
    decision
}

/// Plain SQL on the backend behind `url`, for what the contract sets up around the store.
async fn execute(url: &str, statements: &[&str]) {
    if url.starts_with("sqlite:") {
        let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
        for statement in statements {
            sqlx::query(statement).execute(&mut db).await.unwrap();
        }
    } else {
        let mut db = sqlx::PgConnection::connect(url).await.unwrap();
        for statement in statements {
            sqlx::query(statement).execute(&mut db).await.unwrap();
        }
    }
}

/// Runs every repository method against the store at `url` (a fresh, empty database) and
/// returns each listing's JSON.
pub(crate) async fn run_contract(
    url: &str,
    time_series: TimeSeries,
) -> BTreeMap<&'static str, String> {
    let store = store::open_with(url, time_series).await.unwrap();
    let shape = store.migrate().await.unwrap();
    if time_series != TimeSeries::Auto {
        assert_eq!(shape, crate::store::expected_shape(time_series), "{url}");
    }
    store.migrate().await.unwrap();
    let base = base();

    catalog_contract(&*store).await;
    bypass_contract(&*store).await;
    let policies = policy_contract(&*store).await;
    exception_contract(&*store, policies[0].policy_id).await;
    identity_contract(&*store).await;
    admin_token_contract(&*store).await;
    audit_contract(&*store, base).await;

    // Maintenance keeps today's rows; the notifications channel is PostgreSQL's alone.
    store.maintain().await.unwrap();
    assert_eq!(
        store.change_notifications().await.is_some(),
        !url.starts_with("sqlite:"),
        "{url}"
    );
    assert!(store.dedicated_writer().await.is_some(), "{url}");

    let hours = store
        .decisions_per_hour(base - time::Duration::hours(2))
        .await
        .unwrap();
    let counted: i64 = hours.iter().map(|h| h["count"].as_i64().unwrap()).sum();
    assert_eq!(
        counted, 3,
        "every decision is in the hourly rollup: {url} {hours:?}"
    );
    assert_eq!(
        store
            .top_services(base - time::Duration::hours(2), 10)
            .await
            .unwrap(),
        vec![
            serde_json::json!({"name": "DeepSeek", "decisions": 2, "denied": 1}),
            serde_json::json!({"name": "Unlisted AI", "decisions": 1, "denied": 0}),
        ],
        "{url}"
    );

    keyset_contract(&*store).await;

    execute(
        url,
        &[
            &format!("UPDATE ai_services SET created_at = '{FIXED}', updated_at = '{FIXED}', discovered_at = NULL, last_seen = NULL"),
            // A trigger stamps updated_at on other updates: it is set last.
            &format!("UPDATE policies SET approved_at = '{FIXED}' WHERE approved_at IS NOT NULL"),
            &format!("UPDATE policies SET created_at = '{FIXED}', updated_at = '{FIXED}'"),
            &format!("UPDATE exceptions SET approved_at = '{FIXED}', revoked_at = '{FIXED}', last_used = '{FIXED}'"),
            &format!("UPDATE violations SET created_at = '{FIXED}', updated_at = '{FIXED}', resolved_at = '{FIXED}'"),
            &format!("UPDATE policy_conflicts SET conflict_id = '{}', detected_at = '{FIXED}'", id(0xc1)),
            &format!("UPDATE shadow_ai_detections SET detection_id = '{}', created_at = '{FIXED}'", id(0x5a)),
        ],
    )
    .await;
    let mut listings = BTreeMap::new();
    for listing in LISTINGS {
        let everything = ListQuery {
            limit: 500,
            ..ListQuery::default()
        };
        let items = store.list(listing, &everything).await.unwrap();
        assert!(!items.is_empty(), "{} lists rows: {url}", listing.table());
        listings.insert(
            listing.table(),
            serde_json::to_string_pretty(&items).unwrap(),
        );
    }
    listings
}

async fn catalog_contract(store: &dyn Store) {
    let catalog =
        aigate::catalog::Catalog::load_dir(&crate::support::repo_path("config/catalog")).unwrap();
    let count = catalog.services().len();
    assert_eq!(store.import_catalog(&catalog).await.unwrap(), count);
    assert_eq!(
        store.import_catalog(&catalog).await.unwrap(),
        0,
        "seeded once"
    );
    let loaded = store.load_catalog().await.unwrap();
    assert_eq!(loaded.len(), count);
    let mut edited = (*catalog.services()[0]).clone();
    edited.approved_for = vec!["engineering".into(), "legal".into()];
    edited.risk_score = 77;
    store.save_service(&edited).await.unwrap();
    let reloaded = store.load_catalog().await.unwrap();
    let found = reloaded
        .iter()
        .find(|s| s.service_id == edited.service_id)
        .unwrap();
    assert_eq!(
        (
            found.approved_for.clone(),
            found.risk_score,
            found.signatures.domains.clone()
        ),
        (
            edited.approved_for.clone(),
            77,
            edited.signatures.domains.clone()
        )
    );
    let gone = catalog.services()[1].service_id;
    assert!(store.delete_service(gone).await.unwrap());
    assert!(!store.delete_service(gone).await.unwrap());
    assert_eq!(store.load_catalog().await.unwrap().len(), count - 1);
}

async fn bypass_contract(store: &dyn Store) {
    store
        .add_bypass_host("pinned.example", "pinned")
        .await
        .unwrap();
    store
        .add_bypass_host("pinned.example", "again")
        .await
        .unwrap();
    store
        .add_bypass_host("another.example", "pinned")
        .await
        .unwrap();
    assert_eq!(
        store.bypass_hosts().await.unwrap(),
        ["another.example", "pinned.example"]
    );
    assert!(store.remove_bypass_host("another.example").await.unwrap());
    assert!(!store.remove_bypass_host("another.example").await.unwrap());
    assert_eq!(store.bypass_hosts().await.unwrap(), ["pinned.example"]);
}

async fn policy_contract(store: &dyn Store) -> Vec<aigate::policy::PolicyDefinition> {
    let shipped = aigate::policy::load_dir(&crate::support::repo_path("config/policies")).unwrap();
    assert_eq!(
        store.import_policies(&shipped).await.unwrap(),
        shipped.len()
    );
    assert_eq!(store.import_policies(&shipped).await.unwrap(), 0);
    let mut loaded = store.load_policies().await.unwrap();
    loaded.sort_by_key(|p| p.policy_id);
    let mut expected = shipped.clone();
    expected.sort_by_key(|p| p.policy_id);
    for (loaded, shipped) in loaded.iter().zip(&expected) {
        let mut shipped = shipped.clone();
        shipped.rule_file = None;
        assert_eq!(loaded, &shipped);
    }
    let mut edited = expected[0].clone();
    edited.version = "9.9.9".into();
    edited.tags = vec!["edited".into()];
    edited.rule_file = None;
    let write = PolicyWrite {
        definition: &edited,
        actor: Uuid::nil(),
        change_summary: "contract".into(),
        approve: true,
    };
    store.save_policy(&write).await.unwrap();
    store.save_policy(&write).await.unwrap();
    let reloaded = store.load_policies().await.unwrap();
    assert_eq!(
        reloaded.iter().find(|p| p.policy_id == edited.policy_id),
        Some(&edited)
    );
    let conflict = aigate::policy::Conflict {
        policy_a: (expected[0].policy_id, expected[0].name.clone()),
        policy_b: (expected[1].policy_id, expected[1].name.clone()),
        conflict_type: "scope_overlap",
        severity: "medium",
        details: serde_json::json!({"overlap": ["deepseek"]}),
    };
    store
        .record_policy_conflicts(std::slice::from_ref(&conflict))
        .await
        .unwrap();
    // Recording again replaces the unresolved ones.
    store.record_policy_conflicts(&[conflict]).await.unwrap();
    expected
}

async fn exception_contract(store: &dyn Store, policy: Uuid) {
    let before = store.revisions().await.unwrap();
    let from = base();
    let exception = |n: u128| aigate::policy::NewException {
        exception_id: id(0xa00 + n),
        exception_type: "temporary",
        reason: "contract".into(),
        justification: "a business reason".into(),
        user_id: Uuid::nil(),
        ai_service_id: None,
        policy_id: Some(policy),
        conditions: Some(serde_json::json!({"max_uses": 3})),
        status: "approved",
        requested_by: Uuid::nil(),
        effective_from: from,
        effective_until: Some(from + time::Duration::hours(2)),
    };
    store.insert_exception(&exception(1)).await.unwrap();
    store.insert_exception(&exception(2)).await.unwrap();
    let after = store.revisions().await.unwrap();
    assert_ne!(before, after, "exceptions move their revision");
    store
        .add_exception_uses(&[(id(0xa01), 2), (id(0xa01), 1)])
        .await
        .unwrap();
    assert_eq!(store.revisions().await.unwrap(), after, "uses do not");
    let revoke = ExceptionChange {
        status: "revoked",
        actor: Uuid::nil(),
        reason: Some("done".into()),
    };
    assert!(store.change_exception(id(0xa02), &revoke).await.unwrap());
    assert!(!store.change_exception(id(0xaff), &revoke).await.unwrap());
    let loaded = store.load_exceptions().await.unwrap();
    assert_eq!(loaded.len(), 1, "only approved exceptions load");
    assert_eq!(
        (
            loaded[0].exception_id,
            loaded[0].usage_count,
            loaded[0].effective_from,
            loaded[0].effective_until
        ),
        (
            id(0xa01),
            3,
            Some(from),
            Some(from + time::Duration::hours(2))
        )
    );
}

async fn identity_contract(store: &dyn Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.json");
    std::fs::write(&path, crate::identity::export(true).to_string()).unwrap();
    let report = aigate::identity::directory::import(store, &path)
        .await
        .unwrap();
    assert_eq!((report.created, report.updated), (report.fetched, 0));
    let again = aigate::identity::directory::import(store, &path)
        .await
        .unwrap();
    assert_eq!((again.created, again.updated), (0, report.fetched));

    let ana = store
        .user_context_by_email("ANA.LOPEZ@corp.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ana.department.as_deref(), Some("Engineering"));
    assert_eq!(ana.department_chain, ["Engineering", "Technology"]);
    assert_eq!(ana.groups, ["AI pilot"]);
    assert_eq!(ana.roles, ["ai_user"], "the expired role is left out");
    assert_eq!(ana.allowed_ai_services, ["openai"]);
    assert_eq!(ana.prohibited_ai_services, ["deepseek"]);
    assert_eq!(
        store.user_context_by_id(ana.id).await.unwrap().as_ref(),
        Some(&ana)
    );
    assert_eq!(
        store
            .user_context_by_email("nobody@corp.example")
            .await
            .unwrap(),
        None
    );
    let laptop = store
        .device_by_ip("127.0.0.1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(laptop.crown_jewel);
    assert_eq!(laptop.data_classification, ["PII"]);
    let owner = store
        .user_context_by_id(laptop.owner_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.email, "dev@corp.example");
    assert_eq!(
        store
            .device_by_ip("10.9.9.9".parse().unwrap())
            .await
            .unwrap(),
        None
    );

    assert!(store
        .set_proxy_credential("Carl@corp.example", "$argon2id$one")
        .await
        .unwrap());
    assert!(store
        .set_proxy_credential("carl@corp.example", "$argon2id$two")
        .await
        .unwrap());
    assert!(!store
        .set_proxy_credential("nobody@corp.example", "x")
        .await
        .unwrap());
    let (user, hash) = store
        .proxy_credential("CARL@corp.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hash, "$argon2id$two");
    assert_eq!(
        store.user_context_by_id(user).await.unwrap().unwrap().email,
        "carl@corp.example"
    );
}

async fn admin_token_contract(store: &dyn Store) {
    let sha = "AB".repeat(32);
    let token = store
        .create_admin_token("contract", "auditor", &sha)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .create_admin_token("x", "no_such_role", "cd")
            .await
            .unwrap(),
        None
    );
    let grant = store
        .admin_token(&sha.to_lowercase())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((grant.token_id, grant.role.as_str()), (token, "auditor"));
    assert_eq!(
        Some(grant.permissions),
        store.role_permissions("auditor").await.unwrap()
    );
    assert_eq!(store.role_permissions("no_such_role").await.unwrap(), None);
    assert!(store.admin_token(&"ef".repeat(32)).await.unwrap().is_none());
}

async fn audit_contract(store: &dyn Store, base: OffsetDateTime) {
    let batch = vec![
        decision(1, base, false, false),
        decision(2, base + time::Duration::seconds(1), true, false),
        decision(3, base + time::Duration::seconds(2), false, true),
    ];
    store.write_decisions(&batch).await.unwrap();
    // A replayed batch is stored once.
    store.write_decisions(&batch).await.unwrap();
    let event = AuditEventRecord {
        event_id: id(0xb01),
        timestamp: base,
        event_type: "policy.updated".into(),
        severity: "info".into(),
        actor_id: Some(Uuid::nil()),
        actor_email: Some("contract".into()),
        actor_type: Some("admin_token".into()),
        target_type: Some("policy".into()),
        target_id: Some(id(0xb02)),
        target_name: None,
        action: "update".into(),
        result: Some("success".into()),
        decision_id: None,
        source: Some("admin_api".into()),
        ip_address: Some("10.0.0.1".parse().unwrap()),
        event_data: Some(serde_json::json!({"role": "admin", "nested": {"ok": true}})),
        changes: None,
    };
    store
        .write_audit_events(std::slice::from_ref(&event))
        .await
        .unwrap();
    store.write_audit_events(&[event]).await.unwrap();
    let patch = ViolationPatch {
        status: Some("resolved".into()),
        assigned_to: Some(Uuid::nil()),
        notes: Some("checked".into()),
    };
    assert!(store.update_violation(id(0xf02), &patch).await.unwrap());
    assert!(!store.update_violation(id(0xfff), &patch).await.unwrap());
    store
        .refresh_shadow_ai(base - time::Duration::hours(1))
        .await
        .unwrap();
}

/// Pages are keyset pages: the second page of one row is the next older row.
async fn keyset_contract(store: &dyn Store) {
    let first = ListQuery {
        limit: 1,
        ..ListQuery::default()
    };
    let page = store.list_rows(Listing::Decisions, &first).await.unwrap();
    assert_eq!(page[0].item["decision_id"], id(0xd03).to_string());
    let next = ListQuery {
        limit: 1,
        after: Some(page[0].cursor.clone()),
        ..ListQuery::default()
    };
    let page = store.list_rows(Listing::Decisions, &next).await.unwrap();
    assert_eq!(page[0].item["decision_id"], id(0xd02).to_string());
    let one = ListQuery {
        equals: vec![("decision_id", id(0xd01).to_string())],
        limit: 5,
        ..ListQuery::default()
    };
    let page = store.list(Listing::Decisions, &one).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["content_classified"], false);
    assert_eq!(page[0]["data_classification"], serde_json::json!(["PII"]));
    assert_eq!(page[0]["ip_address"], "10.1.2.3");
}

/// The contract on SQLite: the reference every other backend's listings are compared with.
pub(crate) async fn sqlite_reference() -> BTreeMap<&'static str, String> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("contract.db").display());
    run_contract(&url, TimeSeries::Auto).await
}

/// Runs the contract on the backend `$url` names (a fresh database, dropped afterwards when it
/// is PostgreSQL), in the `$time_series` shape, and requires its listings to serialise exactly
/// as SQLite's do.
macro_rules! store_contract {
    ($name:ident, $time_series:expr, $url:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let url: String = $url.await;
            let listings = crate::contract::run_contract(&url, $time_series).await;
            let reference = crate::contract::sqlite_reference().await;
            for (table, json) in &reference {
                assert_eq!(
                    listings.get(table),
                    Some(json),
                    "{table} lists the same JSON on {url} as on SQLite"
                );
            }
            if url.starts_with("postgres") {
                crate::store::drop_pg_database(&url).await;
            }
        }
    };
}

#[tokio::test]
async fn the_contract_holds_on_sqlite() {
    let listings = sqlite_reference().await;
    assert_eq!(listings.len(), LISTINGS.len());
}

store_contract!(
    the_contract_holds_on_postgres_with_the_same_listing_json,
    TimeSeries::Partitions,
    async { fresh_pg_database().await }
);

store_contract!(
    the_contract_holds_on_postgres_with_timescaledb_with_the_same_listing_json,
    TimeSeries::Timescaledb,
    async { fresh_pg_database().await }
);
