//! The policy engine: Rego policies (regorus, in process) decide ALLOW / DENY / REVIEW.
//!
//! A [`PolicySet`] is compiled once per snapshot: every active `opa` policy becomes its own
//! regorus engine (its `rule_metadata` is its `data.metadata`, so policies cannot see each
//! other's data). Engines are cloned once per worker thread and reused until the next snapshot,
//! so evaluation takes no lock; beside each, the thread memoizes the policy's verdicts by the
//! input paths the policy reads (`memo`). The combination rule is the contract of DESIGN.md section 3:
//! in-scope policies by descending priority, the highest one whose deny/review/allow holds
//! decides (deny > review > allow within it, most restrictive among equals), approved
//! exceptions cancel a policy's match, no match falls back to the service's approval status,
//! and an evaluation error applies the fail mode.

pub mod definition;
pub mod exception;
pub mod facts;
mod input;
mod memo;
pub mod testing;

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

pub use definition::{load_dir, PolicyDefinition, PolicyLoadError, Scope};
pub use exception::{ExceptionRecord, ExceptionRule, Exceptions, NewException};
pub(crate) use input::InputBuilder;
// The settings types live below the config so the config needs nothing from this module.
pub use crate::config::Evaluator;
pub use crate::decision::{Decision, Defaults, FailMode};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {name:?} ({id}): {message}")]
    Compile {
        id: Uuid,
        name: String,
        message: String,
    },
    #[error("policy {name:?} ({id}): rule_engine {engine:?} is not supported yet (only \"opa\")")]
    UnsupportedEngine {
        id: Uuid,
        name: String,
        engine: String,
    },
}

struct CompiledPolicy {
    definition: Arc<PolicyDefinition>,
    rules: RulePaths,
    /// Indices into [`PolicySet::input_paths`] of what the policy reads; `None` when it cannot
    /// be memoized.
    reads: Option<Vec<usize>>,
}

/// What a worker thread evaluates one policy with: the bytecode VM when the policy set runs on
/// it and regorus compiles the module, the interpreter otherwise.
#[derive(Clone)]
enum Prototype {
    Vm(VmProgram),
    Interpreter(Box<regorus::Engine>),
}

#[derive(Clone)]
struct VmProgram {
    policy: regorus::CompiledPolicy,
    program: Arc<regorus::rvm::Program>,
    data: regorus::Value,
}

impl VmProgram {
    fn load(&self) -> Result<Box<regorus::rvm::RegoVM>, String> {
        let mut vm = regorus::rvm::RegoVM::new_with_policy(self.policy.clone());
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone()).map_err(|e| e.to_string())?;
        Ok(Box::new(vm))
    }
}

enum Runner {
    Vm(Box<regorus::rvm::RegoVM>),
    Interpreter(Box<regorus::Engine>),
    /// A program that loaded when the set was compiled and then failed to: every evaluation
    /// is an error, so the fail mode applies.
    Broken(String),
}

impl Prototype {
    fn runner(&self) -> Runner {
        match self {
            Prototype::Vm(program) => match program.load() {
                Ok(vm) => Runner::Vm(vm),
                Err(error) => Runner::Broken(error),
            },
            Prototype::Interpreter(engine) => Runner::Interpreter(engine.clone()),
        }
    }
}

impl Runner {
    fn set_input(&mut self, input: &regorus::Value) {
        // Values are reference-counted: the clone copies a pointer, not the document.
        match self {
            Runner::Vm(vm) => vm.set_input(input.clone()),
            Runner::Interpreter(engine) => engine.set_input(input.clone()),
            Runner::Broken(_) => {}
        }
    }

    fn eval(&mut self, path: &str) -> Result<regorus::Value, String> {
        match self {
            Runner::Vm(vm) => vm
                .execute_entry_point_by_name(path)
                .map_err(|e| e.to_string()),
            Runner::Interpreter(engine) => {
                engine.eval_rule(path.to_owned()).map_err(|e| e.to_string())
            }
            Runner::Broken(error) => Err(error.clone()),
        }
    }
}

/// Full paths (`data.<package>.<rule>`) of the contract rules the module declares. Each is
/// evaluated with `eval_rule`, about 1 µs, where a whole-package `eval_query` costs 4-7 µs.
#[derive(Debug, Default)]
struct RulePaths {
    verdicts: Vec<(Verdict, String)>,
    reason: Option<String>,
    reasons: Option<String>,
    redact: Option<String>,
    violation_type: Option<String>,
    inject_headers: Option<String>,
}

impl RulePaths {
    fn paths(&self) -> impl Iterator<Item = &str> {
        self.verdicts
            .iter()
            .map(|(_, path)| path)
            .chain(&self.reason)
            .chain(&self.reasons)
            .chain(&self.redact)
            .chain(&self.violation_type)
            .chain(&self.inject_headers)
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    Deny,
    Review,
    Allow,
}

/// Two active policies that can apply to one request with opposite outcomes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conflict {
    pub policy_a: (Uuid, String),
    pub policy_b: (Uuid, String),
    /// `contradictory_action` or `priority_ambiguity`.
    pub conflict_type: &'static str,
    pub severity: &'static str,
    pub details: Value,
}

/// An active policy that does not compile. It never stops the gateway: requests in its scope are
/// denied (fail closed for what it governed) until it is fixed, and `/readyz` names it.
#[derive(Debug)]
pub struct BrokenPolicy {
    pub definition: Arc<PolicyDefinition>,
    pub error: PolicyError,
}

/// Every active policy of a snapshot, compiled.
pub struct PolicySet {
    generation: u64,
    policies: Vec<CompiledPolicy>,
    broken: Vec<BrokenPolicy>,
    /// Every input path some memoized policy reads, each once: projected once per request.
    input_paths: Vec<Vec<regorus::Value>>,
    prototypes: Vec<Prototype>,
    defaults: Defaults,
    fail_mode: FailMode,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("generation", &self.generation)
            .field(
                "policies",
                &self
                    .policies
                    .iter()
                    .map(|p| &p.definition.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// One policy's evaluation state on one worker thread.
struct Worker {
    runner: Runner,
    memo: memo::Table,
}

impl Worker {
    /// The policy's verdict on `input`: memoized by the values (`projected`, one per
    /// [`PolicySet::input_paths`] entry) at the paths it reads, else evaluated. `key` is scratch.
    fn verdict(
        &mut self,
        policy: &CompiledPolicy,
        input: &regorus::Value,
        projected: &[regorus::Value],
        key: &mut Vec<regorus::Value>,
    ) -> PolicyResult {
        let Some(reads) = &policy.reads else {
            return evaluate_one(&mut self.runner, &policy.rules, input, &policy.definition);
        };
        key.clear();
        key.extend(reads.iter().map(|&i| projected[i].clone()));
        if let Some(known) = self.memo.get(key) {
            crate::metrics::POLICY_MEMO_HITS.inc();
            return known.clone();
        }
        crate::metrics::POLICY_MEMO_MISSES.inc();
        let fresh = evaluate_one(&mut self.runner, &policy.rules, input, &policy.definition);
        // An error is reported (and counted) on every request it hits.
        if fresh.error.is_none() {
            self.memo.insert(key, &fresh);
        }
        fresh
    }
}

/// A worker thread's state for one policy set.
#[derive(Default)]
struct Workers {
    generation: u64,
    policies: Vec<Worker>,
    /// Scratch for the request's projected input and one policy's memo key.
    projected: Vec<regorus::Value>,
    key: Vec<regorus::Value>,
}

thread_local! {
    /// This thread's workers for the current set (regorus evaluation needs `&mut`).
    static WORKERS: RefCell<Workers> = RefCell::new(Workers::default());
}

/// How many verdicts each policy of the current set has memoized on this thread, by priority.
#[cfg(test)]
fn memo_entries() -> Vec<usize> {
    WORKERS.with(|cell| {
        let workers = cell.borrow();
        workers.policies.iter().map(|w| w.memo.len()).collect()
    })
}

/// One policy's verdict on one request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyResult {
    pub policy_id: Uuid,
    pub policy_name: String,
    pub priority: i32,
    pub deny: bool,
    pub review: bool,
    pub allow: bool,
    pub reasons: Vec<String>,
    pub redact: bool,
    /// `violation_type` from the module or its `rule_metadata`, for the violation row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation_type: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inject_headers: Vec<(String, String)>,
    /// The approved exception that cancelled this policy's match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PolicyResult {
    /// A result before any rule is read: nothing held, nothing failed.
    fn unmatched(policy_id: Uuid, policy_name: &str, priority: i32) -> PolicyResult {
        PolicyResult {
            policy_id,
            policy_name: policy_name.to_owned(),
            priority,
            deny: false,
            review: false,
            allow: false,
            reasons: Vec::new(),
            redact: false,
            violation_type: None,
            inject_headers: Vec::new(),
            exception_id: None,
            error: None,
        }
    }

    /// Some rule held, an exception applied or an error happened: worth a line in a stored
    /// explanation.
    fn spoke(&self) -> bool {
        self.deny
            || self.review
            || self.allow
            || self.redact
            || !self.reasons.is_empty()
            || self.exception_id.is_some()
            || self.error.is_some()
    }

    fn outcome(&self) -> Option<Decision> {
        if self.exception_id.is_some() || self.error.is_some() {
            return None;
        }
        if self.deny {
            Some(Decision::Deny)
        } else if self.review {
            Some(Decision::Review)
        } else if self.allow {
            Some(Decision::Allow)
        } else {
            None
        }
    }
}

/// What the policy stage concluded.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub decision: Decision,
    pub reason: String,
    /// The policy that decided; `None` when the default applied.
    pub primary: Option<(Uuid, String)>,
    pub evaluated: Vec<PolicyResult>,
    pub redact: bool,
    pub inject_headers: Vec<(String, String)>,
    pub exceptions_used: Vec<Uuid>,
    pub policy_error: bool,
    /// The deciding policy's `violation_type`, if it names one.
    pub violation_type: Option<String>,
    /// The approval status whose default decided, when no policy matched.
    pub default_for: Option<&'static str>,
}

/// Facts the scope and exception filters read (the Rego input carries the same and more).
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    pub user_id: Uuid,
    pub user_email: Option<&'a str>,
    pub department: Option<&'a str>,
    pub groups: &'a [String],
    pub service_id: Option<Uuid>,
    pub service_slug: Option<&'a str>,
    /// `approved`, `prohibited`, `review_required`, `unknown`; `None` for non-AI traffic.
    pub approval_status: Option<&'a str>,
    /// Entity types and classifications found in the content (for exception `data_types`).
    pub data_types: Vec<String>,
    /// The request's host, for exceptions that name hosts.
    pub host: Option<&'a str>,
    /// The client's address and device signals, for exceptions scoped to one client (an
    /// anonymous user's own justification).
    pub client: Option<exception::ClientSignals<'a>>,
}

impl PolicySet {
    /// Compiles every policy of `definitions` that is `active`. A policy that does not compile,
    /// or fails on a sample input, is an error naming it (files being checked, dry runs).
    pub fn compile(
        definitions: &[PolicyDefinition],
        defaults: Defaults,
        fail_mode: FailMode,
        evaluator: Evaluator,
    ) -> Result<PolicySet, PolicyError> {
        let mut set = Self::compile_lenient(definitions, defaults, fail_mode, evaluator);
        if set.broken.is_empty() {
            Ok(set)
        } else {
            Err(set.broken.swap_remove(0).error)
        }
    }

    /// Like `compile`, but a policy that does not compile is set aside as broken (see
    /// `BrokenPolicy`) instead of failing the whole set: what a running gateway loads.
    pub fn compile_lenient(
        definitions: &[PolicyDefinition],
        defaults: Defaults,
        fail_mode: FailMode,
        evaluator: Evaluator,
    ) -> PolicySet {
        let use_vm = evaluator == Evaluator::Vm;
        let mut compiled = Vec::new();
        let mut broken = Vec::new();
        let mut input_paths: Vec<Vec<regorus::Value>> = Vec::new();
        for definition in definitions.iter().filter(|d| d.status == "active") {
            let (mut engine, rules) = match compile_one(definition) {
                Ok(compiled) => compiled,
                Err(error) => {
                    broken.push(BrokenPolicy {
                        definition: Arc::new(definition.clone()),
                        error,
                    });
                    continue;
                }
            };
            let reads = match memo::input_reads(engine.get_modules()) {
                memo::InputReads::Paths(paths) => Some(
                    paths
                        .into_iter()
                        .map(|path| match input_paths.iter().position(|p| *p == path) {
                            Some(index) => index,
                            None => {
                                input_paths.push(path);
                                input_paths.len() - 1
                            }
                        })
                        .collect(),
                ),
                memo::InputReads::Volatile(reason) => {
                    tracing::info!(policy = %definition.name, reason, "Policy is evaluated on every request: its verdicts cannot be memoized.");
                    None
                }
            };
            let program = match use_vm.then(|| vm_program(&engine, &rules, definition)) {
                Some(Ok(program)) => Some(program),
                Some(Err(reason)) => {
                    tracing::info!(policy = %definition.name, %reason, "Policy runs on the Rego interpreter: the bytecode compiler does not cover it.");
                    None
                }
                None => None,
            };
            let prototype = match program {
                Some(program) => Prototype::Vm(program),
                None => Prototype::Interpreter(Box::new(engine)),
            };
            let policy = CompiledPolicy {
                definition: Arc::new(definition.clone()),
                rules,
                reads,
            };
            compiled.push((policy, prototype));
        }
        // Highest priority first; the sort is stable, so equal priorities keep file order.
        compiled.sort_by_key(|(policy, _)| std::cmp::Reverse(policy.definition.priority));
        let (policies, prototypes) = compiled.into_iter().unzip();
        PolicySet {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            policies,
            broken,
            input_paths,
            prototypes,
            defaults,
            fail_mode,
        }
    }

    /// Active policies that did not compile.
    pub fn broken(&self) -> &[BrokenPolicy] {
        &self.broken
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether some policy may read `input.<path>`: the path itself, a part of it or a document
    /// holding it, or anything at all for a policy whose reads are unknown. Lets the pipeline
    /// leave out input nobody looks at.
    pub fn may_read(&self, path: &[&str]) -> bool {
        let overlaps = |read: &[regorus::Value]| {
            read.iter()
                .zip(path)
                .all(|(segment, name)| segment.as_string().is_ok_and(|s| s.as_ref() == *name))
        };
        self.policies.iter().any(|p| p.reads.is_none())
            || self.input_paths.iter().any(|read| overlaps(read))
    }

    /// Names of the policies that run on the interpreter rather than the bytecode VM.
    pub fn interpreted(&self) -> Vec<&str> {
        self.policies
            .iter()
            .zip(&self.prototypes)
            .filter(|(_, prototype)| matches!(prototype, Prototype::Interpreter(_)))
            .map(|(policy, _)| policy.definition.name.as_str())
            .collect()
    }

    /// Pairs of active policies whose scopes overlap and whose declared outcomes pull opposite
    /// ways (one can allow what the other denies or sends to review). With equal priorities the
    /// order between them is arbitrary (`priority_ambiguity`, high); otherwise the higher one
    /// wins and the conflict is informational (`contradictory_action`, medium).
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut found = Vec::new();
        for (i, a) in self.policies.iter().enumerate() {
            for b in &self.policies[i + 1..] {
                let (da, db) = (&a.definition, &b.definition);
                if !da.scope.overlaps(&db.scope) {
                    continue;
                }
                let allows = |p: &CompiledPolicy| {
                    p.rules
                        .verdicts
                        .iter()
                        .any(|(v, _)| matches!(v, Verdict::Allow))
                };
                let refuses = |p: &CompiledPolicy| {
                    p.rules
                        .verdicts
                        .iter()
                        .any(|(v, _)| matches!(v, Verdict::Deny | Verdict::Review))
                };
                if !((allows(a) && refuses(b)) || (refuses(a) && allows(b))) {
                    continue;
                }
                let tie = da.priority == db.priority;
                found.push(Conflict {
                    policy_a: (da.policy_id, da.name.clone()),
                    policy_b: (db.policy_id, db.name.clone()),
                    conflict_type: if tie { "priority_ambiguity" } else { "contradictory_action" },
                    severity: if tie { "high" } else { "medium" },
                    details: json!({
                        "priorities": [da.priority, db.priority],
                        "winner": (!tie).then(|| if da.priority > db.priority { &da.name } else { &db.name }),
                        "scope_a": da.scope,
                        "scope_b": db.scope,
                        "explanation": if tie {
                            "both can apply to the same request with opposite outcomes at the same priority"
                        } else {
                            "both can apply to the same request with opposite outcomes; the higher priority decides"
                        },
                    }),
                });
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Evaluates the in-scope policies against `input` (the DESIGN.md input document).
    pub fn evaluate(
        &self,
        subject: &Subject<'_>,
        input: &Value,
        exceptions: &Exceptions,
        now: OffsetDateTime,
    ) -> Outcome {
        // Deserialized straight from the borrowed document: no clone of the JSON tree.
        let document = {
            use serde::Deserialize;
            regorus::Value::deserialize(input)
                .unwrap_or_else(|_| regorus::Value::from(input.clone()))
        };
        self.evaluate_document(subject, &document, exceptions, now)
    }

    /// [`PolicySet::evaluate`] on an input already built as a regorus value.
    pub fn evaluate_document(
        &self,
        subject: &Subject<'_>,
        regorus_input: &regorus::Value,
        exceptions: &Exceptions,
        now: OffsetDateTime,
    ) -> Outcome {
        if let Some(broken) = self
            .broken
            .iter()
            .find(|b| b.definition.in_effect(now) && b.definition.scope.covers(subject))
        {
            return broken_outcome(broken);
        }
        let mut evaluated = Vec::new();
        WORKERS.with(|cell| {
            let workers = &mut *cell.borrow_mut();
            if workers.generation != self.generation {
                workers.generation = self.generation;
                workers.policies = self
                    .prototypes
                    .iter()
                    .map(|prototype| Worker {
                        runner: prototype.runner(),
                        memo: memo::Table::default(),
                    })
                    .collect();
            }
            memo::project(regorus_input, &self.input_paths, &mut workers.projected);
            for (policy, worker) in self.policies.iter().zip(workers.policies.iter_mut()) {
                let definition = &policy.definition;
                if !definition.in_effect(now) || !definition.scope.covers(subject) {
                    continue;
                }
                let mut result =
                    worker.verdict(policy, regorus_input, &workers.projected, &mut workers.key);
                if let Some(decision) = result.outcome() {
                    result.exception_id =
                        exceptions.covering(subject, Some(definition.policy_id), decision, now);
                }
                evaluated.push(result);
            }
        });
        let mut outcome = self.combine(subject, evaluated);
        if outcome.primary.is_none() && outcome.decision != Decision::Allow && !outcome.policy_error
        {
            // Every match was excused by an exception: the exception is the allowance, the
            // default for unmatched requests does not re-impose what it lifted. Otherwise a
            // whole-service exception may lift the service's default.
            let excused = !outcome.exceptions_used.is_empty();
            let covering = if excused {
                None
            } else {
                exceptions.covering(subject, None, outcome.decision, now)
            };
            if excused || covering.is_some() {
                outcome.decision = Decision::Allow;
                outcome.reason = "Allowed by an approved exception.".to_owned();
                outcome.exceptions_used.extend(covering);
            }
        }
        outcome
    }

    fn combine(&self, subject: &Subject<'_>, evaluated: Vec<PolicyResult>) -> Outcome {
        let exceptions_used: Vec<Uuid> = evaluated.iter().filter_map(|r| r.exception_id).collect();
        let failed = evaluated.iter().find(|r| r.error.is_some());
        if let (Some(failed), FailMode::Closed) = (failed, self.fail_mode) {
            return Outcome {
                decision: Decision::Deny,
                reason: format!(
                    "policy_error: policy {:?} could not be evaluated",
                    failed.policy_name
                ),
                primary: Some((failed.policy_id, failed.policy_name.clone())),
                redact: false,
                inject_headers: Vec::new(),
                exceptions_used,
                policy_error: true,
                violation_type: Some("policy_error".to_owned()),
                default_for: None,
                evaluated,
            };
        }
        // The highest priority with any match decides; among its equals, the most restrictive.
        let top = evaluated
            .iter()
            .filter(|r| r.outcome().is_some())
            .map(|r| r.priority)
            .max();
        let winner = top.and_then(|top| {
            evaluated
                .iter()
                .filter(|r| r.priority == top)
                .filter_map(|r| r.outcome().map(|o| (o, r)))
                .max_by_key(|(o, _)| *o)
        });
        // Obligations of every matching ALLOW-side policy apply to a forwarded request.
        let redact = evaluated
            .iter()
            .any(|r| r.redact && r.exception_id.is_none());
        let inject_headers = evaluated
            .iter()
            .flat_map(|r| r.inject_headers.iter().cloned())
            .collect();
        match winner {
            Some((decision, result)) => Outcome {
                decision,
                reason: result.reasons.first().cloned().unwrap_or_else(|| {
                    format!(
                        "{} by policy {:?}.",
                        decision_word(decision),
                        result.policy_name
                    )
                }),
                primary: Some((result.policy_id, result.policy_name.clone())),
                redact,
                inject_headers,
                exceptions_used,
                policy_error: false,
                violation_type: result.violation_type.clone(),
                default_for: None,
                evaluated,
            },
            None => {
                let (decision, status) = match subject.approval_status {
                    Some("approved") => (self.defaults.approved, "approved"),
                    Some("prohibited") => (self.defaults.prohibited, "prohibited"),
                    Some("review_required") => (self.defaults.review_required, "review_required"),
                    Some(_) => (self.defaults.unknown, "unknown"),
                    None => (Decision::Allow, "not_ai"),
                };
                let reason = match (decision, subject.service_slug) {
                    (_, None) if status == "not_ai" => "Not an AI service.".to_owned(),
                    (Decision::Allow, _) => "No policy restricts this request.".to_owned(),
                    (Decision::Deny, _) => "This AI service is prohibited by your organization.".to_owned(),
                    (Decision::Review, _) => "This AI service has not been approved yet; a business justification is required.".to_owned(),
                };
                Outcome {
                    decision,
                    reason,
                    primary: None,
                    redact,
                    inject_headers,
                    exceptions_used,
                    policy_error: false,
                    violation_type: None,
                    default_for: Some(status),
                    evaluated,
                }
            }
        }
    }
}

/// A request in the scope of a policy that does not compile: what that policy would have decided
/// is unknown, so it is denied, naming the policy (never the compiler's text, which may quote
/// the module).
fn broken_outcome(broken: &BrokenPolicy) -> Outcome {
    let definition = &broken.definition;
    Outcome {
        decision: Decision::Deny,
        reason: format!(
            "policy_error: policy {:?} does not compile; requests in its scope are denied until an administrator fixes it",
            definition.name
        ),
        primary: Some((definition.policy_id, definition.name.clone())),
        evaluated: Vec::new(),
        redact: false,
        inject_headers: Vec::new(),
        exceptions_used: Vec::new(),
        policy_error: true,
        violation_type: Some("policy_error".to_owned()),
        default_for: None,
    }
}

fn decision_word(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "Allowed",
        Decision::Deny => "Denied",
        Decision::Review => "Review required",
    }
}

/// Compiles one policy whatever its status, as activation would: the management API's check
/// before a policy is stored.
pub fn validate(definition: &PolicyDefinition) -> Result<(), PolicyError> {
    compile_one(definition).map(|_| ())
}

fn compile_one(definition: &PolicyDefinition) -> Result<(regorus::Engine, RulePaths), PolicyError> {
    let error = |message: String| PolicyError::Compile {
        id: definition.policy_id,
        name: definition.name.clone(),
        message,
    };
    if definition.rule_engine != "opa" {
        return Err(PolicyError::UnsupportedEngine {
            id: definition.policy_id,
            name: definition.name.clone(),
            engine: definition.rule_engine.clone(),
        });
    }
    let source = format!("policy:{}", definition.name);
    // Rego v1 first; modules written for OPA 0.x (`import future.keywords`) parse as v0.
    let mut engine = regorus::Engine::new();
    let package = match engine.add_policy(source.clone(), definition.rule_content.clone()) {
        Ok(package) => package,
        Err(v1_error) => {
            engine = regorus::Engine::new();
            engine.set_rego_v0(true);
            engine
                .add_policy(source, definition.rule_content.clone())
                .map_err(|_| error(v1_error.to_string()))?
        }
    };
    let metadata = definition
        .rule_metadata
        .clone()
        .unwrap_or_else(|| json!({}));
    engine
        .add_data(regorus::Value::from(json!({ "metadata": metadata })))
        .map_err(|e| error(format!("rule_metadata: {e}")))?;
    let query = if package.starts_with("data.") {
        package
    } else {
        format!("data.{package}")
    };
    // A module that compiles but fails on a well-formed input would fail every request.
    let mut probe = engine.clone();
    probe.set_input(regorus::Value::from(sample_input()));
    probe
        .eval_query(query.clone(), false)
        .map_err(|e| error(format!("evaluation on a sample input failed: {e}")))?;
    // The whole package evaluated, so a rule that now fails to evaluate is one not declared.
    let mut declared = |name: &str| {
        let path = format!("{query}.{name}");
        probe.eval_rule(path.clone()).is_ok().then_some(path)
    };
    let mut rules = RulePaths::default();
    for (verdict, name) in [
        (Verdict::Deny, "deny"),
        (Verdict::Review, "review"),
        (Verdict::Allow, "allow"),
    ] {
        if let Some(path) = declared(name) {
            rules.verdicts.push((verdict, path));
        }
    }
    rules.reason = declared("reason");
    rules.reasons = declared("reasons");
    rules.redact = declared("redact");
    rules.violation_type = declared("violation_type");
    rules.inject_headers = declared("inject_headers");
    Ok((engine, rules))
}

/// The policy's rules as RVM bytecode, checked to load with its metadata and to run on the
/// sample input (a policy the VM fails on there would take the interpreter on every request).
fn vm_program(
    engine: &regorus::Engine,
    rules: &RulePaths,
    definition: &PolicyDefinition,
) -> Result<VmProgram, String> {
    let entry_points: Vec<&str> = rules.paths().collect();
    let Some(first) = entry_points.first() else {
        return Err("it declares none of the contract rules".to_owned());
    };
    let policy = engine
        .clone()
        .compile_with_entrypoint(&regorus::Rc::from(*first))
        .map_err(|e| e.to_string())?;
    let program =
        regorus::languages::rego::compiler::Compiler::compile_from_policy(&policy, &entry_points)
            .map_err(|e| e.to_string())?;
    let metadata = definition
        .rule_metadata
        .clone()
        .unwrap_or_else(|| json!({}));
    let program = VmProgram {
        policy,
        program,
        data: regorus::Value::from(json!({ "metadata": metadata })),
    };
    let mut vm = program.load()?;
    vm.set_input(regorus::Value::from(sample_input()));
    for path in &entry_points {
        vm.execute_entry_point_by_name(path)
            .map_err(|e| format!("{path} fails on a sample input: {e}"))?;
    }
    Ok(program)
}

fn evaluate_one(
    runner: &mut Runner,
    rules: &RulePaths,
    input: &regorus::Value,
    definition: &PolicyDefinition,
) -> PolicyResult {
    let mut result =
        PolicyResult::unmatched(definition.policy_id, &definition.name, definition.priority);
    runner.set_input(input);
    let mut eval_raw = |path: &String| runner.eval(path);
    let outcome = (|| -> Result<(), String> {
        // Verdicts are booleans: compared as regorus values, without a JSON round trip.
        for (verdict, path) in &rules.verdicts {
            let fired = eval_raw(path)? == regorus::Value::Bool(true);
            match verdict {
                Verdict::Deny => result.deny = fired,
                Verdict::Review => result.review = fired,
                Verdict::Allow => result.allow = fired,
            }
        }
        if let Some(path) = &rules.redact {
            result.redact = eval_raw(path)? == regorus::Value::Bool(true);
        }
        let mut eval = |path: &String| -> Result<Option<Value>, String> {
            let value = eval_raw(path)?;
            Ok(serde_json::to_value(&value).ok().filter(|v| !v.is_null()))
        };
        if let Some(path) = &rules.inject_headers {
            if let Some(Value::Object(headers)) = eval(path)? {
                result.inject_headers = headers
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                    .collect();
            }
        }
        if !(result.deny || result.review || result.allow) {
            // Reasons of rules that did not fire explain nothing; skip evaluating them.
            return Ok(());
        }
        if let Some(path) = &rules.reason {
            if let Some(Value::String(reason)) = eval(path)? {
                result.reasons.push(reason);
            }
        }
        if let Some(path) = &rules.reasons {
            if let Some(Value::Array(reasons)) = eval(path)? {
                result.reasons.extend(
                    reasons
                        .into_iter()
                        .filter_map(|r| r.as_str().map(str::to_owned)),
                );
            }
        }
        let declared_type = match &rules.violation_type {
            Some(path) => eval(path)?.and_then(|v| v.as_str().map(str::to_owned)),
            None => None,
        };
        result.violation_type = declared_type.or_else(|| {
            definition
                .rule_metadata
                .as_ref()
                .and_then(|m| m.get("violation_type"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        Ok(())
    })();
    if let Err(error) = outcome {
        crate::metrics::POLICY_ERRORS.inc();
        tracing::warn!(policy = %definition.name, %error, "Policy evaluation failed.");
        result.error = Some(error);
    }
    result
}

/// A well-formed input used to probe policies at load time.
pub fn sample_input() -> Value {
    json!({
        "user": {"id": Uuid::nil(), "email": null, "department": null, "groups": [], "roles": [],
                 "risk_score": 0, "clearance_level": null, "employee_type": null, "authenticated": false},
        "device": {"id": null, "hostname": null, "crown_jewel": false, "sensitivity": null,
                   "compliance_status": null, "data_classification": []},
        "resource": {"type": "ai_service", "id": Uuid::nil(), "name": "Sample", "vendor": null,
                     "service_type": "llm", "risk_tier": "medium", "risk_score": 50,
                     "approval_status": "unknown", "approved_for": [], "prohibited_for": [],
                     "capabilities": [], "data_handling": null, "certifications": [], "data_regions": []},
        "request": {"method": "POST", "scheme": "https", "host": "example.com", "port": 443,
                    "path": "/", "url": "https://example.com/", "headers": {}, "content_type": null,
                    "body_bytes": 0, "action": "access_ai_service"},
        "content": {"classified": false, "entities": [], "data_classification": [], "prompt_chars": 0,
                    "truncated": false, "files": []},
        "context": {"time": "2025-01-01T00:00:00Z", "source_ip": null, "mode": "proxy", "location_type": "corporate"},
    })
}

/// `aigate policy eval`: the decision `definitions` reach on `input` (a DESIGN.md input
/// document), with the subject read from the input itself.
pub fn eval_input(set: &PolicySet, input: &Value, now: OffsetDateTime) -> Outcome {
    let text = |pointer: &str| input.pointer(pointer).and_then(Value::as_str);
    let groups: Vec<String> = input
        .pointer("/user/groups")
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let data_types = input
        .pointer("/content/entities")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter_map(|v| v.get("type")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let subject = Subject {
        user_id: text("/user/id")
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_default(),
        user_email: text("/user/email"),
        department: text("/user/department"),
        groups: &groups,
        service_id: text("/resource/id").and_then(|id| Uuid::parse_str(id).ok()),
        service_slug: text("/resource/slug").or_else(|| text("/resource/name")),
        approval_status: text("/resource/approval_status"),
        data_types,
        host: text("/request/host"),
        client: None,
    };
    set.evaluate(&subject, input, &Exceptions::default(), now)
}

/// Risk of one request, 0-100: the service's own risk, raised by what the content holds and by
/// the user's risk score.
pub fn risk_score(service_risk: Option<u8>, classes: &[&str], user_risk: i32) -> i32 {
    let base = i32::from(service_risk.unwrap_or(30));
    let content: i32 = classes
        .iter()
        .map(|c| match *c {
            "credentials" => 40,
            "trade_secret" | "PHI" => 30,
            "PII" | "financial" => 20,
            _ => 10,
        })
        .sum();
    (base / 2 + content.min(50) + user_risk.clamp(0, 100) / 5).clamp(0, 100)
}

/// The explanation of a decision: who decided, the policies' results, and the facts they saw.
/// Serialized straight from the outcome, without building a JSON tree first.
#[derive(Debug, serde::Serialize)]
pub struct Explanation<'a, F> {
    decided_by: Option<DecidedBy<'a>>,
    default_for_approval_status: Option<&'static str>,
    policy_error: bool,
    policies: PolicyResults<'a>,
    exceptions_used: &'a [Uuid],
    facts: F,
}

#[derive(Debug, serde::Serialize)]
struct DecidedBy<'a> {
    policy_id: Uuid,
    policy_name: &'a str,
}

/// Every policy's result, or (for a stored decision) only those of the policies in which some
/// rule held, an exception applied or an error happened.
#[derive(Debug)]
struct PolicyResults<'a> {
    results: &'a [PolicyResult],
    silent_too: bool,
}

impl serde::Serialize for PolicyResults<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.results.iter().filter(|r| self.silent_too || r.spoke()))
    }
}

impl<'a, F: serde::Serialize> Explanation<'a, F> {
    /// With every policy's result (the CLI, dry runs).
    pub fn new(outcome: &'a Outcome, facts: F) -> Self {
        Self::with_policies(outcome, facts, true)
    }

    /// For the `decisions.explanation` column: policies that said nothing are left out, since
    /// `policies_evaluated` already lists every policy evaluated, and repeating all of them
    /// made the explanation most of a stored decision's bytes.
    pub fn stored(outcome: &'a Outcome, facts: F) -> Self {
        Self::with_policies(outcome, facts, false)
    }

    fn with_policies(outcome: &'a Outcome, facts: F, silent_too: bool) -> Self {
        Explanation {
            decided_by: outcome.primary.as_ref().map(|(id, name)| DecidedBy {
                policy_id: *id,
                policy_name: name,
            }),
            default_for_approval_status: outcome.default_for,
            policy_error: outcome.policy_error,
            policies: PolicyResults {
                results: &outcome.evaluated,
                silent_too,
            },
            exceptions_used: &outcome.exceptions_used,
            facts,
        }
    }
}

/// [`Explanation`] as a JSON value (the management API and the CLI show it).
pub fn explanation(outcome: &Outcome, facts: Value) -> Value {
    serde_json::to_value(Explanation::new(outcome, facts)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
