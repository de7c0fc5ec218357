use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::audit::{AuditRecord, DecisionRecord};
use crate::identity::{DeviceContext, Identity, UserContext};

static ANONYMOUS: Identity = Identity {
    user: None,
    device: None,
    method: "anonymous",
};

#[test]
fn an_unattributed_request_names_its_method_in_the_user_document() {
    let headers = http::HeaderMap::new();
    let snapshot = snapshot();
    let user_of = |method: &'static str| {
        let identity = Identity {
            method,
            ..Identity::default()
        };
        let request = RequestFacts {
            identity: &identity,
            ..facts("api.openai.com", &headers)
        };
        decide(&snapshot, &request).input["user"].clone()
    };
    let anonymous = user_of("anonymous");
    assert_eq!(anonymous["method"], regorus::Value::from("anonymous"));
    assert_eq!(anonymous["authenticated"], regorus::Value::from(false));
    assert_eq!(
        anonymous["id"],
        regorus::Value::from(ANONYMOUS_USER.to_string())
    );
    // Any other method without a user keeps its own name, and the shared document its own.
    assert_eq!(
        user_of("source_ip")["method"],
        regorus::Value::from("source_ip")
    );
    assert_eq!(user_of("anonymous"), anonymous);
}

fn snapshot() -> Snapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog");
    Snapshot::new(
        Catalog::load_dir(&dir).unwrap(),
        Arc::new(Inspector::new(&[], 0.5, 1 << 20).unwrap()),
        PolicySet::compile(
            &crate::policy::load_dir(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies"),
            )
            .unwrap(),
            crate::policy::Defaults::default(),
            crate::policy::FailMode::Closed,
            crate::policy::Evaluator::Vm,
        )
        .unwrap(),
        Exceptions::default(),
    )
}

fn facts<'a>(host: &'a str, headers: &'a http::HeaderMap) -> RequestFacts<'a> {
    RequestFacts {
        method: "POST",
        scheme: "https",
        host,
        port: 443,
        path: "/v1/chat/completions",
        query: None,
        headers,
        body: b"{}",
        body_truncated: false,
        client: None,
        source: Source::ProxyIntercepted,
        ja4: None,
        identity: &ANONYMOUS,
    }
}

fn snapshot_with(rego: &str) -> Snapshot {
    let mut definition =
        crate::policy::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies"))
            .unwrap()
            .remove(0);
    definition.policy_id = Uuid::from_u128(0xfeed);
    definition.name = "Under test \"quoted\" — ü".into();
    definition.status = "active".into();
    definition.scope = crate::policy::Scope::default();
    definition.rule_content = rego.into();
    Snapshot::new(
        Catalog::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog")).unwrap(),
        Arc::new(Inspector::new(&[], 0.5, 1 << 20).unwrap()),
        PolicySet::compile(
            &[definition],
            crate::policy::Defaults::default(),
            crate::policy::FailMode::Closed,
            crate::policy::Evaluator::Vm,
        )
        .unwrap(),
        Exceptions::default(),
    )
}

#[test]
fn request_headers_reach_the_input_only_when_a_policy_reads_them() {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-block", http::HeaderValue::from_static("1"));
    headers.insert("cookie", http::HeaderValue::from_static("session=secret"));
    let reader = snapshot_with("package h\ndeny if input.request.headers[\"x-block\"] == \"1\"");
    let verdict = decide(&reader, &facts("api.openai.com", &headers));
    assert_eq!(verdict.decision, Decision::Deny);
    let seen = &verdict.input["request"]["headers"];
    assert_eq!(seen["x-block"], regorus::Value::from("1"));
    assert_eq!(
        seen["cookie"],
        regorus::Value::Undefined,
        "credentials never"
    );
    let shipped = decide(&snapshot(), &facts("api.openai.com", &headers));
    assert_eq!(
        shipped.input["request"]["headers"],
        regorus::Value::new_object(),
        "no shipped policy reads them"
    );
}

#[test]
fn a_users_input_document_is_made_once_and_names_each_requests_method() {
    let user = Arc::new(UserContext {
        id: Uuid::from_u128(1),
        email: "ana@example.com".into(),
        department: Some("Legal".into()),
        groups: vec!["counsel".into()],
        status: "active".into(),
        ..UserContext::default()
    });
    let device = Arc::new(DeviceContext {
        id: Uuid::from_u128(2),
        crown_jewel: true,
        ..DeviceContext::default()
    });
    let headers = http::HeaderMap::new();
    let snapshot = snapshot();
    let decided = |method: &'static str| {
        let identity = Identity {
            user: Some(user.clone()),
            device: Some(device.clone()),
            method,
        };
        let request = RequestFacts {
            identity: &identity,
            ..facts("api.openai.com", &headers)
        };
        decide(&snapshot, &request).input
    };
    let first = decided("trusted_header");
    let again = decided("trusted_header");
    let by_proxy_auth = decided("proxy_auth");
    let expected_user = |method: &str| {
        regorus::Value::from(json!({
            "id": Uuid::from_u128(1).to_string(), "email": "ana@example.com",
            "department": "Legal", "department_chain": [], "groups": ["counsel"], "roles": [],
            "risk_score": 0, "clearance_level": null, "employee_type": null,
            "status": "active", "suspended": false, "allowed_ai_services": [],
            "prohibited_ai_services": [], "authenticated": true, "method": method,
        }))
    };
    assert_eq!(first["user"], expected_user("trusted_header"));
    assert_eq!(again["user"], expected_user("trusted_header"));
    assert_eq!(by_proxy_auth["user"], expected_user("proxy_auth"));
    assert_eq!(first["device"]["crown_jewel"], regorus::Value::from(true));
    assert_eq!(again["device"], first["device"]);
    // The kept document is the first request's, shared by the later ones.
    let kept = &user
        .policy_input
        .get_or_init(|| unreachable!("made by the first request"))
        .1;
    assert_eq!(kept, &expected_user("trusted_header"));
    // A clone is a context that may be edited: it does not carry the document along.
    let edited = UserContext {
        department: Some("Sales".into()),
        ..(*user).clone()
    };
    assert_eq!(
        edited
            .policy_input
            .get_or_init(|| ("x", regorus::Value::Null))
            .0,
        "x"
    );
}

#[test]
fn policies_evaluated_is_the_json_serde_would_write() {
    let snapshot = snapshot_with("package t\ndeny if input.request.method == \"POST\"");
    let headers = http::HeaderMap::new();
    let request = facts("api.openai.com", &headers);
    let mut verdict = decide(&snapshot, &request);
    let mut results = verdict.outcome.evaluated.clone();
    let mut unmatched = results[0].clone();
    unmatched.deny = false;
    unmatched.priority = -7;
    unmatched.exception_id = Some(Uuid::from_u128(0xe));
    results.push(unmatched);
    verdict.outcome = Arc::new(Outcome {
        evaluated: results.clone(),
        ..(*verdict.outcome).clone()
    });
    let record = decision_record(&request, &verdict, Duration::ZERO);
    let expected: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut row = json!({
                "policy_id": r.policy_id, "policy_name": r.policy_name,
                "priority": r.priority, "matched": r.deny || r.review || r.allow,
            });
            if let Some(exception) = r.exception_id {
                row["exception_id"] = json!(exception);
            }
            row
        })
        .collect();
    assert_eq!(results[0].policy_name, "Under test \"quoted\" — ü");
    assert_eq!(
        serde_json::from_str::<Value>(record.policies_evaluated.get()).unwrap(),
        Value::Array(expected)
    );
}

#[test]
fn prohibited_service_is_denied_and_named() {
    let headers = http::HeaderMap::new();
    let verdict = decide(&snapshot(), &facts("api.deepseek.com", &headers));
    assert_eq!(verdict.decision, Decision::Deny);
    assert!(verdict.reason.contains("DeepSeek"), "{}", verdict.reason);
    assert!(verdict.service.is_some());
}

#[test]
fn unapproved_services_need_review_and_plain_hosts_pass() {
    let headers = http::HeaderMap::new();
    let snapshot = snapshot();
    let openai = decide(&snapshot, &facts("api.openai.com", &headers));
    assert_eq!(
        openai.decision,
        Decision::Review,
        "the shipped catalog approves nothing"
    );
    let mut shadow = facts("llm.internal.example", &headers);
    assert_eq!(
        decide(&snapshot, &shadow).decision,
        Decision::Review,
        "unknown AI API"
    );
    shadow.path = "/index.html";
    let plain = decide(&snapshot, &shadow);
    assert_eq!(plain.decision, Decision::Allow);
    assert!(plain.service.is_none());
}

#[test]
fn a_secret_is_denied_by_the_credentials_policy() {
    let headers = http::HeaderMap::new();
    let mut request = facts("api.openai.com", &headers);
    request.body = br#"{"messages":[{"role":"user","content":"key AKIAIOSFODNN7EXAMPLE"}]}"#;
    let verdict = decide(&snapshot(), &request);
    assert_eq!(verdict.decision, Decision::Deny);
    assert_eq!(
        verdict.outcome.primary.as_ref().unwrap().1,
        "No credentials or secrets to AI services"
    );
    assert!(
        verdict.reason.contains("AWS_ACCESS_KEY"),
        "{}",
        verdict.reason
    );
    let mut record = decision_record(&request, &verdict, Duration::from_micros(5));
    record.settle();
    assert_eq!(
        record.violation.unwrap().violation_type,
        "credential_exposure"
    );
    let explanation = record.explanation.unwrap();
    assert!(
        explanation.get().contains("\"credentials\""),
        "{}",
        explanation.get()
    );
    assert!(!explanation.get().contains("AKIAIOSFODNN7EXAMPLE"));
}

#[test]
fn a_denied_request_records_a_violation_and_no_query_string() {
    let headers = http::HeaderMap::new();
    let mut request = facts("api.deepseek.com", &headers);
    request.path = "/chat/completions";
    let verdict = decide(&snapshot(), &request);
    let record = decision_record(&request, &verdict, Duration::from_micros(5));
    assert_eq!(record.decision, "DENY");
    assert_eq!(
        record.resource_url.as_deref(),
        Some("https://api.deepseek.com/chat/completions")
    );
    let violation = record.violation.unwrap();
    assert_eq!(violation.violation_type, "unapproved_service");
    assert_eq!(
        violation.policy_name.as_deref(),
        Some("Block prohibited AI services")
    );
    assert_eq!(record.primary_policy_id, Some(violation.policy_id));
    let evaluated: Value = serde_json::from_str(record.policies_evaluated.get()).unwrap();
    assert!(evaluated.as_array().is_some_and(|p| !p.is_empty()));
}

#[test]
fn a_stopped_decision_survives_the_spill_journal_format() {
    let headers = http::HeaderMap::new();
    let snapshot = snapshot();
    let request = facts("api.deepseek.com", &headers);
    let verdict = decide(&snapshot, &request);
    let mut record = decision_record(&request, &verdict, Duration::from_micros(5));
    // The writer renders a stop's explanation before the record is stored or spilled.
    assert!(record.explanation.is_none() && record.pending_explanation.is_pending());
    record.settle();
    assert!(record.explanation.is_some() && !record.pending_explanation.is_pending());
    let line = serde_json::to_string(&AuditRecord::Decision(Box::new(record.clone()))).unwrap();
    let Ok(AuditRecord::Decision(back)) = serde_json::from_str::<AuditRecord>(&line) else {
        panic!("the journal line does not read back: {line}");
    };
    let json = |r: &DecisionRecord| serde_json::to_value(r).unwrap();
    assert_eq!(json(&back), json(&record));
}

#[test]
fn a_stop_is_explained_by_its_whole_input_except_the_request_headers() {
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", "Bearer sk-secret".parse().unwrap());
    headers.insert("cookie", "session=s3cr3t".parse().unwrap());
    let snapshot = snapshot();
    let request = facts("api.deepseek.com", &headers);
    let verdict = decide(&snapshot, &request);
    assert_eq!(verdict.decision, Decision::Deny);
    let mut record = decision_record(&request, &verdict, Duration::from_micros(5));
    record.settle();
    let explanation = record.explanation.expect("a stop is explained");
    assert!(!explanation.get().contains("s3cr3t") && !explanation.get().contains("sk-secret"));
    let stored: Value = serde_json::from_str(explanation.get()).unwrap();
    let mut expected = serde_json::to_value(&verdict.input).unwrap();
    let request_input = expected["request"].as_object_mut().unwrap();
    assert!(
        request_input.remove("headers").is_some(),
        "the input has headers"
    );
    assert_eq!(stored["facts"]["input"], expected);
    assert_eq!(
        stored["facts"]["input"]["request"]["host"],
        "api.deepseek.com"
    );

    // An allowed request is explained without its input.
    let mut plain = facts("example.com", &headers);
    plain.path = "/index.html";
    let verdict = decide(&snapshot, &plain);
    assert_eq!(verdict.decision, Decision::Allow);
    let allowed = decision_record(&plain, &verdict, Duration::ZERO);
    assert!(!allowed.pending_explanation.is_pending(), "written at once");
    let allowed: Value = serde_json::from_str(allowed.explanation.unwrap().get()).unwrap();
    assert!(allowed["facts"].get("input").is_none(), "{allowed}");
}

#[test]
fn decision_ids_are_unique() {
    let headers = http::HeaderMap::new();
    let snapshot = snapshot();
    let a = decide(&snapshot, &facts("api.openai.com", &headers));
    let b = decide(&snapshot, &facts("api.openai.com", &headers));
    assert_ne!(a.decision_id, b.decision_id);
}
