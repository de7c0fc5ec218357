use super::*;
use std::path::Path;
use time::macros::datetime;

fn shipped() -> Vec<PolicyDefinition> {
    load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies")).unwrap()
}

fn policy(name: &str, priority: i32, rego: &str) -> PolicyDefinition {
    PolicyDefinition {
        policy_id: Uuid::new_v4(),
        name: name.to_owned(),
        description: None,
        version: "1.0.0".into(),
        status: "active".into(),
        priority,
        policy_type: "technical".into(),
        framework: None,
        article_reference: None,
        rule_engine: "opa".into(),
        rule_content: rego.to_owned(),
        rule_file: None,
        rule_metadata: None,
        scope: Scope::default(),
        effective_date: datetime!(2020-01-01 0:00 UTC),
        expiry_date: None,
        tags: Vec::new(),
    }
}

fn subject(status: Option<&'static str>) -> Subject<'static> {
    Subject {
        service_slug: status.map(|_| "svc"),
        service_id: status.map(|_| Uuid::from_u128(7)),
        approval_status: status,
        ..Subject::default()
    }
}

const NOW: OffsetDateTime = datetime!(2026-06-01 0:00 UTC);

fn input_with(capabilities: &[&str], entity_types: &[&str]) -> Value {
    let mut input = sample_input();
    input["resource"]["capabilities"] = json!(capabilities);
    input["resource"]["approval_status"] = json!("approved");
    input["content"]["entities"] = entity_types
        .iter()
        .map(|t| json!({"type": t, "count": 1, "confidence": 0.9}))
        .collect();
    input
}

fn set(policies: Vec<PolicyDefinition>) -> PolicySet {
    PolicySet::compile(
        &policies,
        Defaults::default(),
        FailMode::Closed,
        Evaluator::Vm,
    )
    .unwrap()
}

#[test]
fn the_eu_ai_act_policy_denies_social_scoring() {
    let policies = set(shipped());
    let none = Exceptions::default();
    let outcome = policies.evaluate(
        &subject(Some("approved")),
        &input_with(&["social_scoring"], &[]),
        &none,
        NOW,
    );
    assert_eq!(outcome.decision, Decision::Deny);
    assert_eq!(
        outcome.primary.unwrap().1,
        "EU AI Act - Prohibited AI Systems"
    );
    let outcome = policies.evaluate(
        &subject(Some("approved")),
        &input_with(&["text_generation"], &[]),
        &none,
        NOW,
    );
    assert_eq!(outcome.decision, Decision::Allow);
}

#[test]
fn highest_priority_match_decides_and_equal_priorities_take_the_most_restrictive() {
    let deny = "package a\ndeny if input.resource.risk_score > 10";
    let allow = "package b\nallow if true";
    let review = "package c\nreview if true";
    let none = Exceptions::default();
    let input = sample_input();
    let outcome = set(vec![
        policy("deny-low", 10, deny),
        policy("allow-high", 20, allow),
    ])
    .evaluate(&subject(Some("unknown")), &input, &none, NOW);
    assert_eq!(
        (outcome.decision, outcome.primary.unwrap().1.as_str()),
        (Decision::Allow, "allow-high")
    );
    let outcome = set(vec![
        policy("allow", 20, allow),
        policy("review", 20, review),
    ])
    .evaluate(&subject(Some("unknown")), &input, &none, NOW);
    assert_eq!(outcome.decision, Decision::Review);
    let within = "package d\nallow if true\ndeny if true";
    let outcome = set(vec![policy("both", 5, within)]).evaluate(
        &subject(Some("approved")),
        &input,
        &none,
        NOW,
    );
    assert_eq!(
        outcome.decision,
        Decision::Deny,
        "deny > allow within one policy"
    );
}

#[test]
fn no_match_falls_back_to_the_approval_status() {
    let policies = set(vec![policy("never", 1, "package n\ndeny if false")]);
    let none = Exceptions::default();
    let input = sample_input();
    for (status, expected) in [
        (Some("approved"), Decision::Allow),
        (Some("prohibited"), Decision::Deny),
        (Some("review_required"), Decision::Review),
        (Some("unknown"), Decision::Review),
        (None, Decision::Allow),
    ] {
        let outcome = policies.evaluate(&subject(status), &input, &none, NOW);
        assert_eq!(outcome.decision, expected, "{status:?}");
        assert!(outcome.primary.is_none());
    }
}

#[test]
fn scope_and_dates_filter_policies() {
    let mut scoped = policy("finance-only", 10, "package s\ndeny if true");
    scoped.scope.departments = vec!["finance".into()];
    let mut expired = policy("expired", 10, "package e\ndeny if true");
    expired.expiry_date = Some(datetime!(2026-01-01 0:00 UTC));
    let mut future = policy("future", 10, "package f\ndeny if true");
    future.effective_date = datetime!(2027-01-01 0:00 UTC);
    let mut draft = policy("draft", 10, "package g\ndeny if true");
    draft.status = "draft".into();
    let policies = set(vec![scoped, expired, future, draft]);
    let none = Exceptions::default();
    let outcome = policies.evaluate(&subject(Some("approved")), &sample_input(), &none, NOW);
    assert_eq!(outcome.decision, Decision::Allow);
    assert!(outcome.evaluated.is_empty());
    let finance = Subject {
        department: Some("Finance"),
        ..subject(Some("approved"))
    };
    assert_eq!(
        policies
            .evaluate(&finance, &sample_input(), &none, NOW)
            .decision,
        Decision::Deny
    );
}

fn exception(
    policy_id: Uuid,
    status: &str,
    until: Option<OffsetDateTime>,
    max_uses: Option<u64>,
    data_types: &[&str],
) -> ExceptionRule {
    ExceptionRule {
        exception_id: Uuid::new_v4(),
        status: status.into(),
        user_id: Some(Uuid::nil()),
        department_id: None,
        group_id: None,
        policy_id: Some(policy_id),
        ai_service_id: None,
        effective_from: None,
        effective_until: until,
        max_uses,
        data_types: data_types.iter().map(|s| (*s).to_owned()).collect(),
        hosts: Vec::new(),
        decisions: Vec::new(),
        clients: Vec::new(),
        devices: Vec::new(),
        uses: AtomicU64::new(0),
        unflushed: AtomicU64::new(0),
    }
}

#[test]
fn exceptions_cancel_a_match_within_their_conditions() {
    let deny = policy("deny", 10, "package x\ndeny if true");
    let id = deny.policy_id;
    let policies = set(vec![deny]);
    let input = sample_input();
    let user = subject(Some("approved"));
    let decide = |exceptions: &Exceptions, subject: &Subject<'_>| {
        policies.evaluate(subject, &input, exceptions, NOW).decision
    };

    assert_eq!(
        decide(
            &Exceptions::new(vec![exception(id, "approved", None, None, &[])]),
            &user
        ),
        Decision::Allow
    );
    assert_eq!(
        decide(
            &Exceptions::new(vec![exception(id, "revoked", None, None, &[])]),
            &user
        ),
        Decision::Deny
    );
    assert_eq!(
        decide(
            &Exceptions::new(vec![exception(id, "pending", None, None, &[])]),
            &user
        ),
        Decision::Deny
    );
    let expired = exception(
        id,
        "approved",
        Some(datetime!(2026-01-01 0:00 UTC)),
        None,
        &[],
    );
    assert_eq!(
        decide(&Exceptions::new(vec![expired]), &user),
        Decision::Deny
    );
    let twice = Exceptions::new(vec![exception(id, "approved", None, Some(2), &[])]);
    assert_eq!(decide(&twice, &user), Decision::Allow);
    assert_eq!(decide(&twice, &user), Decision::Allow);
    assert_eq!(decide(&twice, &user), Decision::Deny, "max_uses exhausted");
    let non_pii = Exceptions::new(vec![exception(id, "approved", None, None, &["EMAIL"])]);
    let with_card = Subject {
        data_types: vec!["CREDIT_CARD".into()],
        ..subject(Some("approved"))
    };
    assert_eq!(
        decide(&non_pii, &with_card),
        Decision::Deny,
        "data_types not allowed"
    );
    let with_email = Subject {
        data_types: vec!["EMAIL".into()],
        ..subject(Some("approved"))
    };
    assert_eq!(decide(&non_pii, &with_email), Decision::Allow);
}

#[test]
fn evaluation_errors_apply_the_fail_mode() {
    // Compiles and passes the load probe, fails when the request carries a string risk score.
    let fragile = policy(
        "fragile",
        10,
        "package f\ndeny if to_number(input.user.risk_score) > 50",
    );
    let mut input = sample_input();
    input["user"]["risk_score"] = json!("high");
    let closed = PolicySet::compile(
        std::slice::from_ref(&fragile),
        Defaults::default(),
        FailMode::Closed,
        Evaluator::Interpreter,
    )
    .unwrap();
    let outcome = closed.evaluate(
        &subject(Some("approved")),
        &input,
        &Exceptions::default(),
        NOW,
    );
    assert_eq!(outcome.decision, Decision::Deny);
    assert!(
        outcome.policy_error && outcome.reason.starts_with("policy_error"),
        "{}",
        outcome.reason
    );
    let open = PolicySet::compile(
        std::slice::from_ref(&fragile),
        Defaults::default(),
        FailMode::Open,
        Evaluator::Interpreter,
    )
    .unwrap();
    assert_eq!(
        open.evaluate(
            &subject(Some("approved")),
            &input,
            &Exceptions::default(),
            NOW
        )
        .decision,
        Decision::Allow
    );

    // Decision and policy_error for an approved service.
    let judge = |set: &PolicySet, input: &Value| {
        let outcome = set.evaluate(
            &subject(Some("approved")),
            input,
            &Exceptions::default(),
            NOW,
        );
        (outcome.decision, outcome.policy_error)
    };
    // On the VM a failing builtin leaves its rule undefined, as OPA does by default.
    assert_eq!(judge(&set(vec![fragile]), &input), (Decision::Allow, false));
    // Its evaluation limits are errors, and apply the fail mode.
    let runaway = policy(
        "runaway",
        10,
        "package r\nallow if count([x | some x in numbers.range(1, input.content.prompt_chars)]) > 0",
    );
    let on_vm = set(vec![runaway]);
    assert_eq!(on_vm.interpreted(), Vec::<&str>::new());
    let mut input = sample_input();
    input["content"]["prompt_chars"] = json!(1_000_000);
    assert_eq!(judge(&on_vm, &input), (Decision::Deny, true));
}

#[test]
fn bad_policies_are_rejected_with_name_and_line() {
    let broken = policy("broken", 1, "package b\n\ndeny if {\n  input.x ==\n}");
    let error = PolicySet::compile(
        &[broken],
        Defaults::default(),
        FailMode::Closed,
        Evaluator::Vm,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("\"broken\"") && error.contains("policy:broken:5:1"),
        "{error}"
    );
    let mut cedar = policy("cedar-one", 1, "permit(principal, action, resource);");
    cedar.rule_engine = "cedar".into();
    let error = PolicySet::compile(
        &[cedar],
        Defaults::default(),
        FailMode::Closed,
        Evaluator::Vm,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cedar-one") && error.contains("not supported yet"),
        "{error}"
    );
}

#[test]
fn reasons_and_obligations_are_read() {
    let rego = "package r\nreview if true\nreason := \"needs a look\"\ninject_headers := {\"x-tenant\": \"corp\"}";
    let outcome = set(vec![policy("r", 1, rego)]).evaluate(
        &subject(Some("approved")),
        &sample_input(),
        &Exceptions::default(),
        NOW,
    );
    assert_eq!(outcome.reason, "needs a look");
    assert_eq!(
        outcome.inject_headers,
        vec![("x-tenant".to_owned(), "corp".to_owned())]
    );
}

#[test]
fn the_tenant_policy_injects_the_vendors_headers_once_activated() {
    let mut policies = shipped();
    let tenant = policies
        .iter_mut()
        .find(|p| p.name == "Corporate tenant only")
        .unwrap();
    assert_eq!(
        tenant.status, "draft",
        "shipped inactive until the tenant ids are filled in"
    );
    tenant.status = "active".into();
    let mut input = input_with(&["text_generation"], &[]);
    input["resource"]["tenant_restriction_headers"] = json!(["ChatGPT-Allowed-Workspace-Id"]);
    let outcome = set(policies).evaluate(
        &subject(Some("approved")),
        &input,
        &Exceptions::default(),
        NOW,
    );
    assert_eq!(
        outcome.inject_headers,
        vec![(
            "ChatGPT-Allowed-Workspace-Id".to_owned(),
            "<your-chatgpt-workspace-id>".to_owned()
        )]
    );
}

#[test]
fn the_bytecode_vm_decides_exactly_as_the_interpreter() {
    let mut policies = shipped();
    for policy in &mut policies {
        policy.status = "active".into();
    }
    let on_vm = set(policies.clone());
    assert_eq!(on_vm.interpreted(), Vec::<&str>::new());
    let interpreted = PolicySet::compile(
        &policies,
        Defaults::default(),
        FailMode::Closed,
        Evaluator::Interpreter,
    )
    .unwrap();
    assert_eq!(interpreted.interpreted().len(), policies.len());

    let none = Exceptions::default();
    let mut compared = 0;
    let mut seen = std::collections::BTreeSet::new();
    for status in ["approved", "prohibited", "review_required", "unknown"] {
        for employee_type in ["full_time", "contractor"] {
            for entities in [&[][..], &["EMAIL"], &["AWS_ACCESS_KEY", "US_SSN"]] {
                for (action, crown_jewel) in [("send_prompt", false), ("upload_file", true)] {
                    for capabilities in [&["text_generation"][..], &["social_scoring"]] {
                        let mut input = input_with(capabilities, entities);
                        input["resource"]["approval_status"] = json!(status);
                        input["resource"]["approved_for"] = json!(["engineering"]);
                        input["resource"]["tenant_restriction_headers"] =
                            json!(["ChatGPT-Allowed-Workspace-Id"]);
                        input["user"]["employee_type"] = json!(employee_type);
                        input["user"]["department"] = json!("engineering");
                        input["request"]["action"] = json!(action);
                        input["device"]["crown_jewel"] = json!(crown_jewel);
                        let classes: Vec<&str> = entities
                            .iter()
                            .map(|e| {
                                if e.starts_with("AWS") {
                                    "credentials"
                                } else {
                                    "PII"
                                }
                            })
                            .collect();
                        input["content"]["data_classification"] = json!(classes);
                        let subject = subject(Some(status));
                        let a = on_vm.evaluate(&subject, &input, &none, NOW);
                        let b = interpreted.evaluate(&subject, &input, &none, NOW);
                        assert_eq!(
                            serde_json::to_value(&a.evaluated).unwrap(),
                            serde_json::to_value(&b.evaluated).unwrap(),
                            "{input}"
                        );
                        assert_eq!((a.decision, &a.reason), (b.decision, &b.reason));
                        assert_eq!(a.inject_headers, b.inject_headers);
                        seen.insert(a.decision);
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, 4 * 2 * 3 * 2 * 2);
    // The matrix reaches every outcome, so agreement is not agreement on "nothing fired".
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn memoized_verdicts_follow_every_input_path_a_policy_reads() {
    let policies = set(vec![
        policy(
            "by-department",
            10,
            "package a\nallow if input.user.department == \"eng\"\n",
        ),
        policy(
            "no-secrets",
            20,
            "package b\ndeny if { some e in input.content.entities; e.type == \"AWS_ACCESS_KEY\" }\nreason := sprintf(\"%d kinds found\", [count(input.content.entities)])\n",
        ),
        policy("clock", 5, "package c\nreview if time.now_ns() < 0\n"),
    ]);
    let none = Exceptions::default();
    let subject = subject(Some("review_required"));
    let decide = |input: &Value| policies.evaluate(&subject, input, &none, NOW);
    let mut eng = input_with(&[], &[]);
    eng["user"]["department"] = json!("eng");
    let mut sales = eng.clone();
    sales["user"]["department"] = json!("sales");
    let mut secret = eng.clone();
    secret["content"]["entities"] = json!([{"type": "AWS_ACCESS_KEY", "count": 1}]);
    // Paths no policy reads change on every request; they must not defeat the memo.
    let mut later = eng.clone();
    later["context"]["time"] = json!("2026-06-01T00:00:01Z");
    later["request"]["path"] = json!("/v1/other");

    // By priority: no-secrets, by-department, clock (which calls time.now_ns: never memoized).
    assert_eq!(decide(&eng).decision, Decision::Allow);
    assert_eq!(memo_entries(), [1, 1, 0]);
    assert_eq!(decide(&later).decision, Decision::Allow);
    assert_eq!(memo_entries(), [1, 1, 0], "unread paths reuse the verdicts");
    assert_eq!(decide(&sales).decision, Decision::Review);
    assert_eq!(
        memo_entries(),
        [1, 2, 0],
        "the department is part of by-department's key only"
    );
    let denied = decide(&secret);
    assert_eq!(denied.decision, Decision::Deny);
    assert_eq!(denied.reason, "1 kinds found");
    assert_eq!(memo_entries(), [2, 2, 0]);
    let again = decide(&secret);
    assert_eq!(
        (again.decision, again.reason.as_str()),
        (Decision::Deny, "1 kinds found")
    );
    assert_eq!(decide(&eng).decision, Decision::Allow);
    assert_eq!(memo_entries(), [2, 2, 0]);
}

#[test]
fn scopes_match_users_and_services_by_id_or_name_in_any_case() {
    let user = Uuid::from_u128(0xabc);
    let service = Uuid::from_u128(0xdef);
    let scope = |users: &[&str], services: &[&str]| Scope {
        users: users.iter().map(|s| s.to_string()).collect(),
        services: services.iter().map(|s| s.to_string()).collect(),
        ..Scope::default()
    };
    let subject = Subject {
        user_id: user,
        user_email: Some("Ann@Example.com"),
        service_id: Some(service),
        service_slug: Some("chatgpt"),
        ..Subject::default()
    };
    let upper_id = user.to_string().to_uppercase();
    assert!(scope(&[], &[]).covers(&subject));
    assert!(scope(&[&upper_id], &[]).covers(&subject));
    assert!(scope(&["ann@example.com"], &["ChatGPT"]).covers(&subject));
    assert!(scope(&[], &[&service.to_string()]).covers(&subject));
    assert!(!scope(&["bob@example.com"], &[]).covers(&subject));
    assert!(!scope(&[], &["claude", &user.to_string()]).covers(&subject));
    let anonymous_service = Subject {
        service_id: None,
        service_slug: None,
        ..subject
    };
    assert!(!scope(&[], &["chatgpt"]).covers(&anonymous_service));
}

#[test]
fn may_read_answers_for_the_path_its_parts_and_what_holds_it() {
    let one = |rego: &str| set(vec![policy("under test", 1, rego)]);
    let headers = one("package h\ndeny if input.request.headers[\"x-block\"] == \"1\"");
    assert!(headers.may_read(&["request", "headers"]));
    assert!(
        headers.may_read(&["request"]),
        "a document holding a read path"
    );
    assert!(!headers.may_read(&["request", "path"]));
    let whole_request = one("package r\ndeny if count(input.request) > 100");
    assert!(
        whole_request.may_read(&["request", "headers"]),
        "a part of a read path"
    );
    let opaque = one("package o\ndeny if count(object.keys(input)) > 100");
    assert!(
        opaque.may_read(&["request", "headers"]),
        "reads unknown: everything may be read"
    );
    let shipped = set(shipped());
    assert!(!shipped.may_read(&["request", "headers"]));
    assert!(shipped.may_read(&["resource", "capabilities"]));
}
