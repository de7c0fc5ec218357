//! `aigate policy test`: runs the `test_*` rules of every Rego file in a directory, the way
//! `opa test` does, so policy authors can work without the proxy.

use std::path::{Path, PathBuf};

/// One test rule's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// `data.<package>.<rule>`.
    pub name: String,
    /// `None` when it passed; otherwise why not.
    pub failure: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0} holds no *_test.rego file with test_ rules")]
    NoTests(PathBuf),
}

/// Loads every `*.rego` of `dir` into one engine and evaluates each `test_*` rule of the
/// `*_test.rego` files.
pub fn run(dir: &Path) -> Result<Vec<TestCase>, PolicyTestError> {
    let read_error = |path: &Path, source| PolicyTestError::Read {
        path: path.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_error(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("rego"))
        .collect();
    files.sort();
    let mut engine = regorus::Engine::new();
    let mut tests = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).map_err(|e| read_error(path, e))?;
        let name = path.display().to_string();
        // Rego v1 first, then v0 for modules written for OPA 0.x, as the gateway does.
        let package = match engine.add_policy(name.clone(), source.clone()) {
            Ok(package) => package,
            Err(v1_error) => {
                engine.set_rego_v0(true);
                let added = engine.add_policy(name, source.clone());
                engine.set_rego_v0(false);
                added.map_err(|_| PolicyTestError::Parse {
                    path: path.clone(),
                    message: v1_error.to_string(),
                })?
            }
        };
        let package = if package.starts_with("data.") {
            package
        } else {
            format!("data.{package}")
        };
        let is_test_file = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_test.rego"));
        if is_test_file {
            let mut names: Vec<&str> = source
                .lines()
                .filter_map(|line| line.strip_prefix("test_"))
                .filter_map(|rest| {
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                })
                .collect();
            names.dedup();
            tests.extend(names.into_iter().map(|n| format!("{package}.test_{n}")));
        }
    }
    if tests.is_empty() {
        return Err(PolicyTestError::NoTests(dir.to_owned()));
    }
    let _ = engine.add_data(regorus::Value::from(serde_json::json!({ "metadata": {} })));
    Ok(tests
        .into_iter()
        .map(|name| {
            let failure = match engine.eval_rule(name.clone()) {
                Ok(value) if value == regorus::Value::from(true) => None,
                Ok(regorus::Value::Undefined) => {
                    Some("undefined (a condition did not hold)".to_owned())
                }
                Ok(value) => Some(format!("evaluated to {value}")),
                Err(error) => Some(format!("error: {error}")),
            };
            TestCase { name, failure }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_tests_pass() {
        let results = run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies")).unwrap();
        assert!(results.len() >= 16, "{results:?}");
        let failed: Vec<_> = results.iter().filter(|t| t.failure.is_some()).collect();
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn a_failing_test_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package p\ndeny if input.x == 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("p_test.rego"),
            "package p_test\nimport data.p\ntest_denies if p.deny with input as {\"x\": 1}\ntest_wrong if p.deny with input as {\"x\": 2}\n",
        )
        .unwrap();
        let results = run(dir.path()).unwrap();
        assert_eq!(results.len(), 2);
        assert!(results[0].failure.is_none(), "{results:?}");
        assert!(results[1].failure.is_some(), "{results:?}");
    }
}
