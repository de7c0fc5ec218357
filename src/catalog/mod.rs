//! The AI-service catalog: which services exist, how to recognise them, and how risky and
//! approved each is.
//!
//! Loaded from `config/catalog/*.yaml` (shaped like the `ai_services` rows of the data model) and
//! validated whole: a bad file stops the load with the file, service and field named, and the
//! previous catalog keeps serving. Host lookups are on the connection path, so they are one hash
//! probe per label suffix and allocate nothing for lowercase hosts.

pub mod matcher;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::host::DomainMap;
pub use matcher::{Fingerprint, RequestSignals, Signal, SignalKind};
use uuid::Uuid;

/// Why a catalog could not be built. Every variant names the file (or `<catalog>` for services
/// that came from elsewhere) so an operator can fix the right line.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "catalog directory {0} holds no services (no *.yaml / *.yml file, or only empty ones)"
    )]
    Empty(PathBuf),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `message` is serde_yaml's, which carries the line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("catalog signatures: {0}")]
    Signatures(#[from] matcher::MatcherError),
    #[error("{path}: service {slug:?}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        slug: String,
        field: &'static str,
        message: String,
    },
}

/// How risky a service is, the `risk_tier` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskTier {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskTier {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskTier::Low => "low",
            RiskTier::Medium => "medium",
            RiskTier::High => "high",
            RiskTier::Critical => "critical",
        }
    }
}

impl fmt::Display for RiskTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The organisation's default stance on a service, the `approval_status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Approved,
    Prohibited,
    ReviewRequired,
    Unknown,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Prohibited => "prohibited",
            ApprovalStatus::ReviewRequired => "review_required",
            ApprovalStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service is recognised, the `signatures` JSONB column. Domains match their subdomains;
/// the other lists are read by later stages (fingerprinting, inspection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signatures {
    pub domains: Vec<String>,
    pub headers: Vec<HeaderSignature>,
    pub api_patterns: Vec<String>,
    pub ssl_fingerprints: Vec<String>,
}

/// A request header whose presence (value matching `pattern`) points at the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSignature {
    pub name: String,
    pub pattern: String,
}

/// One AI service, field for field the `ai_services` row of the data model (plus a stable slug).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiService {
    pub service_id: Uuid,
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub service_type: Option<String>,
    pub signatures: Signatures,
    pub risk_tier: RiskTier,
    pub risk_score: u8,
    #[serde(default)]
    pub risk_factors: Option<serde_json::Value>,
    pub approval_status: ApprovalStatus,
    #[serde(default)]
    pub approved_for: Vec<String>,
    #[serde(default)]
    pub prohibited_for: Vec<String>,
    #[serde(default)]
    pub certifications: Vec<String>,
    #[serde(default)]
    pub data_handling: Option<String>,
    #[serde(default)]
    pub data_regions: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub pricing_model: Option<String>,
    #[serde(default)]
    pub documentation_url: Option<String>,
    #[serde(default)]
    pub privacy_policy_url: Option<String>,
    #[serde(default)]
    pub terms_of_service_url: Option<String>,
    /// Request headers the vendor documents for tenant restriction (allow the corporate
    /// workspace, block personal accounts); a policy sets their values with `inject_headers`.
    #[serde(default)]
    pub tenant_restriction_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    services: Vec<AiService>,
}

#[cfg(test)]
const MAX_HOST: usize = crate::host::MAX_DNS_NAME;

// === impl Catalog ===

/// An immutable, validated catalog. Build a new one to change it; share it behind `Arc`.
#[derive(Debug, Default)]
pub struct Catalog {
    services: Vec<Arc<AiService>>,
    /// Normalized domain → index into `services`.
    by_domain: DomainMap<usize>,
    /// Compiled path/header/TLS signatures; built with the catalog.
    matcher: Option<matcher::Matcher>,
}

impl Catalog {
    /// Loads every `*.yaml` / `*.yml` file of `dir`, in file-name order. A directory without any
    /// service is an error: an empty catalog would silently intercept and govern nothing.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let entries = std::fs::read_dir(dir).map_err(|source| CatalogError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| CatalogError::Dir {
                    path: dir.to_owned(),
                    source,
                })?
                .path();
            if path.is_file()
                && matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
            {
                files.push(path);
            }
        }
        files.sort();
        let mut sourced = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Read {
                path: path.clone(),
                source,
            })?;
            let file: CatalogFile =
                serde_yaml::from_str(&text).map_err(|error| CatalogError::Parse {
                    path: path.clone(),
                    message: error.to_string(),
                })?;
            sourced.extend(
                file.services
                    .into_iter()
                    .map(|service| (path.clone(), service)),
            );
        }
        if sourced.is_empty() {
            return Err(CatalogError::Empty(dir.to_owned()));
        }
        Self::build(sourced)
    }

    /// A catalog from services that did not come from files (the store, tests). Unlike
    /// [`Catalog::load_dir`], an empty list is allowed: it is a valid "no AI services" snapshot.
    pub fn from_services(services: Vec<AiService>) -> Result<Catalog, CatalogError> {
        Self::build(
            services
                .into_iter()
                .map(|s| (PathBuf::from("<catalog>"), s))
                .collect(),
        )
    }

    fn build(sourced: Vec<(PathBuf, AiService)>) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::default();
        let mut slugs: HashMap<String, PathBuf> = HashMap::new();
        let mut ids: HashMap<Uuid, String> = HashMap::new();
        for (path, mut service) in sourced {
            let invalid = |field: &'static str, message: String| CatalogError::Invalid {
                path: path.clone(),
                slug: service.slug.clone(),
                field,
                message,
            };
            let slug_ok = !service.slug.is_empty()
                && service
                    .slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !slug_ok {
                return Err(invalid(
                    "slug",
                    "must be non-empty lowercase letters, digits and '-'".into(),
                ));
            }
            if let Some(first) = slugs.insert(service.slug.clone(), path.clone()) {
                return Err(invalid(
                    "slug",
                    format!("already used in {}", first.display()),
                ));
            }
            // Policies refer to services by id, so two services sharing one would be ambiguous.
            if let Some(other) = ids.insert(service.service_id, service.slug.clone()) {
                return Err(invalid(
                    "service_id",
                    format!("{} is also the id of {other:?}", service.service_id),
                ));
            }
            if service.name.trim().is_empty() {
                return Err(invalid("name", "must not be empty".into()));
            }
            if service.risk_score > 100 {
                return Err(invalid(
                    "risk_score",
                    format!("{} is outside 0..=100", service.risk_score),
                ));
            }
            if service.signatures.domains.is_empty() {
                return Err(invalid(
                    "signatures.domains",
                    "at least one domain is required".into(),
                ));
            }
            for header in &service.signatures.headers {
                if header.name.trim().is_empty() {
                    return Err(invalid(
                        "signatures.headers",
                        "a header signature needs a name".into(),
                    ));
                }
            }
            let index = catalog.services.len();
            for domain in &mut service.signatures.domains {
                *domain = normalize_domain(domain)
                    .map_err(|message| invalid("signatures.domains", message))?;
                if let Some(&other) = catalog.by_domain.get_exact(domain) {
                    // Listing a domain twice in one service is harmless; two owners are not.
                    if other == index {
                        continue;
                    }
                    let other = catalog
                        .services
                        .get(other)
                        .map(|s| s.slug.as_str())
                        .unwrap_or_default();
                    return Err(invalid(
                        "signatures.domains",
                        format!("{domain} is already claimed by {other:?}"),
                    ));
                }
                catalog.by_domain.insert(domain, index);
            }
            catalog.services.push(Arc::new(service));
        }
        catalog.matcher = Some(matcher::Matcher::build(&catalog.services)?);
        Ok(catalog)
    }

    /// Every service, in load order (file name, then position in the file).
    pub fn services(&self) -> &[Arc<AiService>] {
        &self.services
    }

    /// The service owning `host` (exact domain or any subdomain of one; the most specific domain
    /// wins). Case-insensitive; one trailing dot, a `:port` suffix and IPv6 brackets are ignored;
    /// IP literals never match.
    pub fn service_for_host(&self, host: &str) -> Option<&Arc<AiService>> {
        self.index_for_host(host).and_then(|i| self.services.get(i))
    }

    /// Which service a request goes to, from all its signals (see [`matcher`]).
    pub fn fingerprint(&self, request: &RequestSignals<'_>) -> Fingerprint {
        let owner = self.index_for_host(request.host);
        match &self.matcher {
            Some(matcher) => matcher.fingerprint(&self.services, owner, request),
            None => Fingerprint {
                service: owner.and_then(|i| self.services.get(i)).cloned(),
                confidence: if owner.is_some() { 0.9 } else { 0.0 },
                ..Fingerprint::default()
            },
        }
    }

    fn index_for_host(&self, host: &str) -> Option<usize> {
        let host = strip_port(host)?;
        let host = host.strip_suffix('.').unwrap_or(host);
        // An IPv4 literal ends in a numeric label, which no DNS top-level domain is (and which
        // `normalize_domain` refuses), so it can never match; skip the probes.
        let last = host.rsplit('.').next().unwrap_or(host);
        if last.is_empty() || last.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.by_domain.find(host).copied()
    }

    /// Every (normalized domain, service) pair, in no particular order.
    pub fn domains(&self) -> impl Iterator<Item = (&str, &Arc<AiService>)> {
        self.by_domain
            .iter()
            .filter_map(|(domain, &index)| Some((domain, self.services.get(index)?)))
    }
}

/// `host` without a `:port` suffix; `None` for a bracketed or bare IPv6 literal, which is never
/// a catalog domain.
fn strip_port(host: &str) -> Option<&str> {
    if host.starts_with('[') {
        return None;
    }
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if host.contains(':') {
        return None;
    }
    Some(host)
}

/// Lowercases `domain` and drops one trailing dot, or says why it is not a DNS name we can match.
fn normalize_domain(domain: &str) -> Result<String, String> {
    if domain.contains('*') {
        return Err(format!(
            "{domain:?}: no wildcards; subdomains are matched automatically, list the parent domain"
        ));
    }
    // Internationalised names are stored in their A-label form, the one SNI and Host carry.
    let lowered = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(domain)
            .map_err(|_| format!("{domain:?} is not a valid internationalised domain name"))?
    };
    let name = lowered.strip_suffix('.').unwrap_or(&lowered);
    let valid = crate::host::is_dns_name(name);
    if !valid {
        return Err(format!(
            "{domain:?} is not a valid DNS name (labels of 1-63 letters, digits, '_' or inner '-', 253 bytes at most)"
        ));
    }
    // A numeric last label means an IP address (or a TLD that cannot exist); hosts ending in one
    // are never looked up, so such an entry would silently never match.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{domain:?}: IP addresses are not catalog domains"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(slug: &str, domains: &[&str], status: ApprovalStatus) -> AiService {
        AiService {
            service_id: Uuid::new_v4(),
            slug: slug.to_owned(),
            name: slug.to_owned(),
            vendor: None,
            service_type: Some("llm".into()),
            signatures: Signatures {
                domains: domains.iter().map(|d| (*d).to_owned()).collect(),
                ..Signatures::default()
            },
            risk_tier: RiskTier::Medium,
            risk_score: 50,
            risk_factors: None,
            approval_status: status,
            approved_for: vec![],
            prohibited_for: vec![],
            certifications: vec![],
            data_handling: None,
            data_regions: vec![],
            capabilities: vec![],
            pricing_model: None,
            documentation_url: None,
            privacy_policy_url: None,
            terms_of_service_url: None,
            tenant_restriction_headers: Vec::new(),
        }
    }

    fn catalog() -> Catalog {
        Catalog::from_services(vec![
            service("openai", &["openai.com"], ApprovalStatus::ReviewRequired),
            service("openai-api", &["API.openai.com."], ApprovalStatus::Approved),
            service("deepseek", &["deepseek.com"], ApprovalStatus::Prohibited),
        ])
        .unwrap()
    }

    #[test]
    fn exact_subdomain_and_most_specific_match() {
        let catalog = catalog();
        assert_eq!(
            catalog.service_for_host("openai.com").unwrap().slug,
            "openai"
        );
        assert_eq!(
            catalog.service_for_host("chat.openai.com").unwrap().slug,
            "openai"
        );
        assert_eq!(
            catalog.service_for_host("api.openai.com").unwrap().slug,
            "openai-api"
        );
        assert_eq!(
            catalog.service_for_host("eu.api.openai.com").unwrap().slug,
            "openai-api"
        );
    }

    #[test]
    fn case_trailing_dot_and_port_are_tolerated() {
        let catalog = catalog();
        assert_eq!(
            catalog.service_for_host("API.DeepSeek.com.").unwrap().slug,
            "deepseek"
        );
        assert_eq!(
            catalog
                .service_for_host("api.deepseek.com:443")
                .unwrap()
                .slug,
            "deepseek"
        );
    }

    #[test]
    fn look_alikes_and_ips_do_not_match() {
        let catalog = catalog();
        for host in [
            "notopenai.com",
            "openai.com.evil.example",
            "com",
            "",
            "10.0.0.1",
            "[::1]:443",
            "::1",
        ] {
            assert!(catalog.service_for_host(host).is_none(), "{host:?} matched");
        }
    }

    #[test]
    fn ip_literals_and_malformed_hosts_do_not_match() {
        let catalog = catalog();
        for host in [
            "10.0.0.1:443",
            "[2001:db8::1]",
            "[2001:db8::1]:443",
            "2001:db8::1",
            "[openai.com]",
            "openai.com..",
            "openai.com:https",
            ".",
        ] {
            assert!(catalog.service_for_host(host).is_none(), "{host:?} matched");
        }
    }

    #[test]
    fn long_uppercase_hosts_are_lowercased() {
        let catalog = catalog();
        let label = "A".repeat(63);
        let host = format!("{label}.{label}.{label}.API.OPENAI.COM");
        assert!(host.len() <= MAX_HOST);
        assert_eq!(catalog.service_for_host(&host).unwrap().slug, "openai-api");
        let too_long = format!("{label}.{label}.{label}.{label}.OPENAI.COM");
        assert!(too_long.len() > MAX_HOST);
        assert_eq!(catalog.service_for_host(&too_long).unwrap().slug, "openai");
    }

    #[test]
    fn domains_are_normalized_and_listed() {
        let catalog = catalog();
        let mut domains: Vec<(&str, &str)> = catalog
            .domains()
            .map(|(domain, service)| (domain, service.slug.as_str()))
            .collect();
        domains.sort_unstable();
        assert_eq!(
            domains,
            [
                ("api.openai.com", "openai-api"),
                ("deepseek.com", "deepseek"),
                ("openai.com", "openai"),
            ]
        );
        assert_eq!(catalog.services()[1].signatures.domains, ["api.openai.com"]);
    }

    #[test]
    fn empty_list_is_a_valid_snapshot_but_empty_directory_is_not() {
        let catalog = Catalog::from_services(Vec::new()).unwrap();
        assert!(catalog.service_for_host("api.openai.com").is_none());

        let dir = tempfile::tempdir().unwrap();
        let error = Catalog::load_dir(dir.path()).unwrap_err();
        assert!(matches!(error, CatalogError::Empty(_)), "{error}");
        std::fs::write(dir.path().join("none.yaml"), "services: []\n").unwrap();
        let error = Catalog::load_dir(dir.path()).unwrap_err();
        assert!(matches!(error, CatalogError::Empty(_)), "{error}");
    }

    #[test]
    fn yaml_errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.yml"),
            "services:\n  - slug: [unclosed\n",
        )
        .unwrap();
        let error = Catalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("broken.yml") && error.contains("line") && error.contains("column"),
            "{error}"
        );
    }

    #[test]
    fn duplicate_slugs_ids_and_bad_domains_are_rejected() {
        let a = service("same", &["a.example"], ApprovalStatus::Approved);
        let b = service("same", &["b.example"], ApprovalStatus::Approved);
        let error = Catalog::from_services(vec![a.clone(), b]).unwrap_err();
        assert!(
            matches!(&error, CatalogError::Invalid { field: "slug", .. }),
            "{error}"
        );

        let mut c = service("other", &["c.example"], ApprovalStatus::Approved);
        c.service_id = a.service_id;
        let error = Catalog::from_services(vec![a, c]).unwrap_err();
        assert!(
            matches!(
                &error,
                CatalogError::Invalid {
                    field: "service_id",
                    ..
                }
            ),
            "{error}"
        );

        for domain in [
            "",
            "-a.example",
            "a-.example",
            "a..example",
            "a b.example",
            "10.0.0.1",
            "exa mple.com",
        ] {
            let bad = service("bad-domain", &[domain], ApprovalStatus::Approved);
            let error = Catalog::from_services(vec![bad]).unwrap_err();
            assert!(
                matches!(
                    &error,
                    CatalogError::Invalid { field: "signatures.domains", slug, .. } if slug == "bad-domain"
                ),
                "{domain:?}: {error}"
            );
        }
        let long_label = format!("{}.example", "a".repeat(64));
        let bad = service("long", &[long_label.as_str()], ApprovalStatus::Approved);
        assert!(Catalog::from_services(vec![bad]).is_err());

        let no_domain = service("none", &[], ApprovalStatus::Approved);
        assert!(Catalog::from_services(vec![no_domain]).is_err());
    }

    #[test]
    fn duplicate_domains_name_both_services() {
        let error = Catalog::from_services(vec![
            service("a", &["x.example"], ApprovalStatus::Approved),
            service("b", &["X.example."], ApprovalStatus::Approved),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("\"a\"") && error.contains("\"b\""),
            "{error}"
        );
    }

    #[test]
    fn validation_errors_name_service_and_field() {
        let mut bad = service("bad-score", &["x.example"], ApprovalStatus::Approved);
        bad.risk_score = 101;
        let error = Catalog::from_services(vec![bad]).unwrap_err().to_string();
        assert!(
            error.contains("bad-score") && error.contains("risk_score"),
            "{error}"
        );

        let wildcard = service("wild", &["*.x.example"], ApprovalStatus::Approved);
        let error = Catalog::from_services(vec![wildcard])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("wildcards") && error.contains("subdomains are matched automatically"),
            "{error}"
        );
    }

    #[test]
    fn unknown_yaml_fields_are_rejected_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        std::fs::write(
            &path,
            "services:\n  - service_id: 7d3c8a54-8f5c-4a2e-9e0e-0c6d2f3c1a11\n    slug: x\n    name: X\n    signatures: {domains: [x.example]}\n    risk_tier: low\n    risk_score: 1\n    approval_status: approved\n    colour: blue\n",
        )
        .unwrap();
        let error = Catalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("x.yaml") && error.contains("colour"),
            "{error}"
        );
    }

    #[test]
    fn the_shipped_catalog_loads() {
        let catalog =
            Catalog::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog"))
                .unwrap();
        assert!(
            catalog.services().len() >= 24,
            "{} services",
            catalog.services().len()
        );
        assert_eq!(
            catalog
                .service_for_host("api.deepseek.com")
                .unwrap()
                .approval_status,
            ApprovalStatus::Prohibited
        );
        assert_eq!(
            catalog
                .service_for_host("chat.deepseek.com")
                .unwrap()
                .approval_status,
            ApprovalStatus::Prohibited
        );
        assert_ne!(
            catalog
                .service_for_host("api.openai.com")
                .unwrap()
                .approval_status,
            ApprovalStatus::Prohibited
        );
        assert!(catalog.service_for_host("api.anthropic.com").is_some());
        assert!(catalog
            .services()
            .iter()
            .all(|s| !s.signatures.domains.is_empty()));
        let prohibited = catalog
            .services()
            .iter()
            .filter(|s| s.approval_status == ApprovalStatus::Prohibited)
            .count();
        assert!(prohibited >= 3);
    }
}
