//! Policy memoization: a policy's verdict is a function of the parts of the input it reads, so a
//! request whose parts equal an earlier one's reuses that verdict instead of running the Rego.
//!
//! What a policy reads is found once, when it is compiled, by walking its module: every
//! `input.a.b` reference (dots or literal brackets) is a path, and a non-literal index stops the
//! path there (the whole `input.a` counts as read). A policy is never memoized when that is not
//! a sound description of what its verdict depends on: it reads `input` as a whole, imports it,
//! or calls a builtin whose answer changes between identical calls (`time.now_ns`,
//! `http.send`, ...). `data` needs no key: each policy's data is its own compile-time metadata.
//!
//! The memo tables are per worker thread and per policy, bounded, and discarded with the policy
//! set's runners when a new set is compiled. A table that fills without paying for itself (a
//! policy whose paths differ on most requests, such as one reading `input.context.time`) is
//! switched off for that thread rather than refilled.

use std::collections::BTreeMap;

use regorus::unstable::{Expr, Literal, LiteralStmt, Module, Query, Rule, RuleAssign, RuleHead};
use regorus::Value;

use super::PolicyResult;

/// Builtins whose answer is not a function of their arguments: regorus' own list of those it
/// evaluates once per query, and those that reach outside the process.
const VOLATILE_BUILTINS: [&str; 4] = [
    "http.send",
    "io.jwt.decode_verify",
    "net.lookup_ip_addr",
    "opa.runtime",
];

/// Verdicts kept per policy per worker thread.
const TABLE_ENTRIES: usize = 512;

/// What one policy's verdict depends on besides its own data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputReads {
    /// These input paths (segments after `input`), deduplicated, none the prefix of another.
    Paths(Vec<Vec<Value>>),
    /// Not memoizable, and why (for the compile-time log line).
    Volatile(&'static str),
}

/// What `modules` read of the input.
pub fn input_reads(modules: &[regorus::unstable::Ref<Module>]) -> InputReads {
    let mut walk = Walk::default();
    for module in modules {
        for import in &module.imports {
            walk.expr(&import.refr);
        }
        for rule in &module.policy {
            walk.rule(rule);
        }
    }
    if let Some(reason) = walk.volatile {
        return InputReads::Volatile(reason);
    }
    let mut paths = walk.paths;
    // Shortest first, so a path is dropped when a prefix of it is already kept.
    paths.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    let mut kept: Vec<Vec<Value>> = Vec::new();
    for path in paths {
        if path.is_empty() {
            return InputReads::Volatile("it reads the whole input document");
        }
        if !kept.iter().any(|k| path.starts_with(k)) {
            kept.push(path);
        }
    }
    kept.sort();
    InputReads::Paths(kept)
}

#[derive(Default)]
struct Walk {
    paths: Vec<Vec<Value>>,
    volatile: Option<&'static str>,
}

impl Walk {
    fn rule(&mut self, rule: &Rule) {
        match rule {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.expr(refr);
                        self.assign(assign.as_ref());
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.expr(refr);
                        if let Some(key) = key {
                            self.expr(key);
                        }
                    }
                    RuleHead::Func {
                        refr, args, assign, ..
                    } => {
                        self.expr(refr);
                        args.iter().for_each(|a| self.expr(a));
                        self.assign(assign.as_ref());
                    }
                }
                for body in bodies {
                    self.assign(body.assign.as_ref());
                    self.query(&body.query);
                }
            }
            Rule::Default {
                refr, args, value, ..
            } => {
                self.expr(refr);
                args.iter().for_each(|a| self.expr(a));
                self.expr(value);
            }
        }
    }

    fn assign(&mut self, assign: Option<&RuleAssign>) {
        if let Some(assign) = assign {
            self.expr(&assign.value);
        }
    }

    fn query(&mut self, query: &Query) {
        query.stmts.iter().for_each(|s| self.statement(s));
    }

    fn statement(&mut self, statement: &LiteralStmt) {
        match &statement.literal {
            Literal::SomeVars { .. } => {}
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => self.membership(key.as_deref(), value, collection),
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => self.expr(expr),
            Literal::Every { domain, query, .. } => {
                self.expr(domain);
                self.query(query);
            }
        }
        for with in &statement.with_mods {
            self.expr(&with.refr);
            self.expr(&with.r#as);
        }
    }

    fn expr(&mut self, expr: &Expr) {
        match expr {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. } => {}
            Expr::Var { .. } | Expr::RefDot { .. } | Expr::RefBrack { .. } => self.reference(expr),
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                items.iter().for_each(|i| self.expr(i));
            }
            Expr::Object { fields, .. } => {
                for (_, key, value) in fields {
                    self.expr(key);
                    self.expr(value);
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term);
                self.query(query);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key);
                self.expr(value);
                self.query(query);
            }
            Expr::Call { fcn, params, .. } => {
                match dotted(fcn) {
                    Some(name) if is_volatile_builtin(&name) => {
                        self.volatile = Some("it calls a builtin whose answer changes over time");
                    }
                    Some(_) => {}
                    None => self.expr(fcn),
                }
                params.iter().for_each(|p| self.expr(p));
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr),
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => self.membership(key.as_deref(), value, collection),
        }
    }

    /// `key, value in collection`, as a statement (`some ... in`) or an expression.
    fn membership(&mut self, key: Option<&Expr>, value: &Expr, collection: &Expr) {
        if let Some(key) = key {
            self.expr(key);
        }
        self.expr(value);
        self.expr(collection);
    }

    /// A reference chain, outermost first: literal segments extend the path, a computed index
    /// cuts it there (and is itself walked), and a chain rooted at `input` records the path.
    fn reference(&mut self, outermost: &Expr) {
        let mut segments: Vec<Value> = Vec::new();
        let mut current = outermost;
        loop {
            match current {
                Expr::RefDot { refr, field, .. } => {
                    segments.push(field.1.clone());
                    current = refr;
                }
                Expr::RefBrack { refr, index, .. } => {
                    match literal(index) {
                        Some(value) => segments.push(value),
                        None => {
                            self.expr(index);
                            segments.clear();
                        }
                    }
                    current = refr;
                }
                Expr::Var { value, .. } => {
                    if value.as_string().is_ok_and(|name| name.as_ref() == "input") {
                        segments.reverse();
                        self.paths.push(segments);
                    }
                    return;
                }
                other => return self.expr(other),
            }
        }
    }
}

fn literal(expr: &Expr) -> Option<Value> {
    match expr {
        Expr::String { value, .. }
        | Expr::RawString { value, .. }
        | Expr::Number { value, .. }
        | Expr::Bool { value, .. }
        | Expr::Null { value, .. } => Some(value.clone()),
        _ => None,
    }
}

/// `a.b.c` for a function reference made only of names.
fn dotted(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Var { value, .. } => value.as_string().ok().map(|s| s.to_string()),
        Expr::RefDot { refr, field, .. } => {
            let field = field.1.as_string().ok()?;
            Some(format!("{}.{field}", dotted(refr)?))
        }
        _ => None,
    }
}

fn is_volatile_builtin(name: &str) -> bool {
    regorus::unstable::must_cache(name).is_some() || VOLATILE_BUILTINS.contains(&name)
}

/// The values at `paths` of `input`, `Undefined` where a path leads nowhere.
pub fn project(input: &Value, paths: &[Vec<Value>], into: &mut Vec<Value>) {
    into.clear();
    into.extend(
        paths
            .iter()
            .map(|path| path.iter().fold(input, |at, segment| &at[segment]).clone()),
    );
}

/// One policy's verdicts on one worker thread, by the values of the paths it reads.
#[derive(Default)]
pub struct Table {
    verdicts: BTreeMap<Box<[Value]>, PolicyResult>,
    hits_since_clear: usize,
    /// Filled once without enough hits: this policy's inputs rarely repeat on this thread.
    given_up: bool,
}

impl Table {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.verdicts.len()
    }

    pub fn get(&mut self, key: &[Value]) -> Option<&PolicyResult> {
        if self.given_up {
            return None;
        }
        let found = self.verdicts.get(key);
        self.hits_since_clear += usize::from(found.is_some());
        found
    }

    /// Keeps `result` for `key`. A full table is cleared; one that filled while serving fewer
    /// hits than it holds entries stops memoizing.
    pub fn insert(&mut self, key: &[Value], result: &PolicyResult) {
        if self.given_up {
            return;
        }
        if self.verdicts.len() >= TABLE_ENTRIES {
            if self.hits_since_clear < TABLE_ENTRIES {
                self.given_up = true;
                self.verdicts.clear();
                return;
            }
            self.verdicts.clear();
            self.hits_since_clear = 0;
        }
        self.verdicts.insert(key.into(), result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(rego: &str) -> InputReads {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("test.rego".to_owned(), rego.to_owned())
            .unwrap();
        input_reads(engine.get_modules())
    }

    fn paths(list: &[&[&str]]) -> InputReads {
        InputReads::Paths(
            list.iter()
                .map(|p| p.iter().map(|s| Value::from(*s)).collect())
                .collect(),
        )
    }

    #[test]
    fn dotted_and_literal_bracket_references_are_paths() {
        let found = reads(
            r#"package t
allow if {
    input.resource.approval_status == "approved"
    input["user"]["department"] in input.resource.approved_for
}
reason := sprintf("%s", [input.resource.name]) if input.user.employee_type == "x"
"#,
        );
        assert_eq!(
            found,
            paths(&[
                &["resource", "approval_status"],
                &["resource", "approved_for"],
                &["resource", "name"],
                &["user", "department"],
                &["user", "employee_type"],
            ])
        );
    }

    #[test]
    fn a_computed_index_reads_everything_under_its_prefix() {
        let found = reads(
            r#"package t
deny if {
    some i
    input.content.entities[i].type == "AWS_ACCESS_KEY"
    input.content.entities[0].count > 1
}
"#,
        );
        assert_eq!(found, paths(&[&["content", "entities"]]));
    }

    #[test]
    fn reads_through_functions_comprehensions_and_imports_count() {
        let found = reads(
            r#"package t
import input.device as d
sensitive(class) if class in {"PII"}
deny if {
    some class in input.content.data_classification
    sensitive(class)
    d.crown_jewel
    count({t | some e in input.content.entities; t := e.type}) > 0
}
"#,
        );
        assert_eq!(
            found,
            paths(&[
                &["content", "data_classification"],
                &["content", "entities"],
                &["device"],
            ])
        );
    }

    #[test]
    fn data_references_need_no_key() {
        let found = reads(
            r#"package t
deny if data.metadata.enabled
"#,
        );
        assert_eq!(found, InputReads::Paths(Vec::new()));
    }

    #[test]
    fn the_whole_input_or_a_volatile_builtin_is_not_memoized() {
        for rego in [
            "package t\ndeny if count(input) > 3\n",
            "package t\ndeny if { some k; input[k] == 1 }\n",
            "package t\ndeny if time.now_ns() > 0\n",
            "package t\ndeny if { x := uuid.rfc4122(\"a\"); x != \"\" }\n",
            "package t\nimport input\ndeny if input.a\n",
        ] {
            assert!(
                matches!(reads(rego), InputReads::Volatile(_)),
                "{rego} must not be memoized"
            );
        }
    }

    #[test]
    fn every_shipped_policy_is_memoized() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies");
        for definition in crate::policy::load_dir(&dir).unwrap() {
            let mut engine = regorus::Engine::new();
            engine
                .add_policy(definition.name.clone(), definition.rule_content.clone())
                .unwrap();
            let found = input_reads(engine.get_modules());
            assert!(
                matches!(&found, InputReads::Paths(p) if !p.is_empty()),
                "{}: {found:?}",
                definition.name
            );
        }
    }

    fn verdict() -> PolicyResult {
        PolicyResult {
            deny: true,
            ..PolicyResult::unmatched(uuid::Uuid::nil(), "p", 0)
        }
    }

    #[test]
    fn a_table_that_pays_is_refilled_and_one_that_does_not_gives_up() {
        let key = |i: usize| [Value::from(i as u64)];
        let mut paying = Table::default();
        for i in 0..TABLE_ENTRIES {
            paying.insert(&key(i), &verdict());
            assert!(paying.get(&key(i)).is_some());
            assert!(paying.get(&key(i)).is_some());
        }
        paying.insert(&key(TABLE_ENTRIES), &verdict());
        assert_eq!(paying.len(), 1, "cleared and refilled");
        assert!(paying.get(&key(TABLE_ENTRIES)).is_some());

        let mut unique = Table::default();
        for i in 0..=TABLE_ENTRIES {
            assert!(unique.get(&key(i)).is_none());
            unique.insert(&key(i), &verdict());
        }
        assert_eq!(unique.len(), 0);
        unique.insert(&key(0), &verdict());
        assert!(unique.get(&key(0)).is_none(), "given up on this thread");
    }
}
