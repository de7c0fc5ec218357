//! The compiled signature matcher: which AI service a request goes to, from every signal the
//! catalog knows (domain, API path, header, client TLS fingerprint), with a confidence.
//!
//! Built once per catalog. Paths go through one anchored aho-corasick automaton over the literal
//! prefixes of all `api_patterns` (a `*` glob tail is checked only for the prefixes that hit);
//! headers are a hash lookup per request header name; JA4 is a hash lookup. Nothing loops over
//! services per request.

use std::collections::HashMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::AiService;

/// Signals that mean "some AI API" whoever hosts it: the OpenAI-compatible and vendor paths
/// self-hosted and shadow services copy, and the headers their SDKs send.
const GENERIC_AI_PATHS: &[&str] = &[
    "/chat/completions",
    "/v1/completions",
    "/v1/messages",
    "/v1/responses",
    "/v1/embeddings",
    ":generateContent",
    ":streamGenerateContent",
    "/api/generate",
    "/api/chat",
    "/backend-api/conversation",
];
const GENERIC_AI_HEADERS: &[&str] = &[
    "anthropic-version",
    "openai-organization",
    "openai-project",
    "x-stainless-lang",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Domain,
    ApiPattern,
    Header,
    TlsFingerprint,
    GenericAi,
}

impl SignalKind {
    /// How much one signal of this kind says on its own; combined as independent evidence.
    fn weight(self, unique: bool) -> f32 {
        match (self, unique) {
            (SignalKind::Domain, _) => 0.9,
            (SignalKind::TlsFingerprint, _) => 0.7,
            (SignalKind::Header, true) => 0.6,
            (SignalKind::ApiPattern, true) => 0.5,
            _ => 0.4,
        }
    }
}

/// One signature that matched.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Signal {
    pub kind: SignalKind,
    /// The signature as written in the catalog (`/v1/chat/completions`, `anthropic-version`).
    pub signature: Arc<str>,
    /// The service whose signature it is (`None` for generic AI signals).
    pub service: Option<Arc<str>>,
    #[serde(skip)]
    unique: bool,
}

/// What the matcher concluded about one request.
#[derive(Debug, Clone, Default)]
pub struct Fingerprint {
    pub service: Option<Arc<AiService>>,
    /// No catalog service, but the request looks like an AI API: shadow AI.
    pub unknown_ai: bool,
    /// 0.0-1.0: the combined weight of the signals supporting the conclusion.
    pub confidence: f32,
    pub signals: Vec<Signal>,
}

/// What the matcher reads from a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestSignals<'a> {
    pub host: &'a str,
    /// Path with or without the query string.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    pub ja4: Option<&'a str>,
}

#[derive(Debug)]
struct PathPattern {
    service: usize,
    pattern: Arc<str>,
    /// The part after the literal prefix, starting at the first `*`; empty for plain prefixes.
    glob_tail: Box<[u8]>,
    unique: bool,
}

#[derive(Debug)]
struct HeaderPattern {
    service: usize,
    name: Arc<str>,
    value: regex::Regex,
    unique: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error(
        "service {slug:?}: header {name:?}: pattern {pattern:?} is not a valid regex: {message}"
    )]
    HeaderPattern {
        slug: String,
        name: String,
        pattern: String,
        message: String,
    },
    #[error("service {slug:?}: api pattern {pattern:?} must start with '/' or ':'")]
    ApiPattern { slug: String, pattern: String },
    #[error("building the path automaton: {0}")]
    Automaton(String),
}

#[derive(Debug)]
pub struct Matcher {
    slugs: Vec<Arc<str>>,
    paths: AhoCorasick,
    path_patterns: Vec<PathPattern>,
    generic_paths: AhoCorasick,
    headers: HashMap<String, Vec<HeaderPattern>>,
    ja4: HashMap<String, usize>,
}

impl Matcher {
    pub fn build(services: &[Arc<AiService>]) -> Result<Matcher, MatcherError> {
        let mut path_owners: HashMap<&str, usize> = HashMap::new();
        let mut header_owners: HashMap<String, usize> = HashMap::new();
        for service in services {
            for pattern in &service.signatures.api_patterns {
                *path_owners.entry(pattern.as_str()).or_default() += 1;
            }
            for header in &service.signatures.headers {
                *header_owners
                    .entry(header.name.to_ascii_lowercase())
                    .or_default() += 1;
            }
        }
        let mut path_patterns = Vec::new();
        let mut headers: HashMap<String, Vec<HeaderPattern>> = HashMap::new();
        let mut ja4 = HashMap::new();
        for (index, service) in services.iter().enumerate() {
            for pattern in &service.signatures.api_patterns {
                if !pattern.starts_with('/') && !pattern.starts_with(':') {
                    return Err(MatcherError::ApiPattern {
                        slug: service.slug.clone(),
                        pattern: pattern.clone(),
                    });
                }
                let literal_len = pattern.find('*').unwrap_or(pattern.len());
                path_patterns.push(PathPattern {
                    service: index,
                    pattern: Arc::from(pattern.as_str()),
                    glob_tail: pattern.as_bytes()[literal_len..].into(),
                    unique: path_owners.get(pattern.as_str()) == Some(&1),
                });
            }
            for header in &service.signatures.headers {
                let name = header.name.to_ascii_lowercase();
                let value = regex::Regex::new(&header.pattern).map_err(|e| {
                    MatcherError::HeaderPattern {
                        slug: service.slug.clone(),
                        name: header.name.clone(),
                        pattern: header.pattern.clone(),
                        message: e.to_string(),
                    }
                })?;
                let unique = header_owners.get(&name) == Some(&1);
                headers
                    .entry(name.clone())
                    .or_default()
                    .push(HeaderPattern {
                        service: index,
                        name: Arc::from(name.as_str()),
                        value,
                        unique,
                    });
            }
            for fingerprint in &service.signatures.ssl_fingerprints {
                // Entries are `ja4:<fingerprint>` or a bare JA4 string.
                let fingerprint = fingerprint.strip_prefix("ja4:").unwrap_or(fingerprint);
                ja4.insert(fingerprint.to_owned(), index);
            }
        }
        let literals = path_patterns.iter().map(|p| {
            let literal_len = p.pattern.len() - p.glob_tail.len();
            &p.pattern.as_bytes()[..literal_len]
        });
        let paths = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(literals)
            .map_err(|e| MatcherError::Automaton(e.to_string()))?;
        let generic_paths = AhoCorasick::new(GENERIC_AI_PATHS)
            .map_err(|e| MatcherError::Automaton(e.to_string()))?;
        Ok(Matcher {
            slugs: services
                .iter()
                .map(|s| Arc::from(s.slug.as_str()))
                .collect(),
            paths,
            path_patterns,
            generic_paths,
            headers,
            ja4,
        })
    }

    /// Which service `request` goes to. `domain_owner` is the catalog's answer for the host
    /// (index into `services`), which the caller already has.
    pub fn fingerprint(
        &self,
        services: &[Arc<AiService>],
        domain_owner: Option<usize>,
        request: &RequestSignals<'_>,
    ) -> Fingerprint {
        let mut found: Vec<(usize, Signal)> = Vec::new();
        let path = request.path.split('?').next().unwrap_or_default();
        // Overlapping search cannot be anchored; a pattern is a prefix, so keep hits at 0.
        let hits = self
            .paths
            .try_find_overlapping_iter(path)
            .into_iter()
            .flatten();
        for hit in hits.filter(|hit| hit.start() == 0) {
            let pattern = &self.path_patterns[hit.pattern().as_usize()];
            let rest = &path.as_bytes()[hit.end()..];
            let matched = if pattern.glob_tail.is_empty() {
                pattern.pattern.ends_with('/') || at_boundary(rest)
            } else {
                glob_prefix(&pattern.glob_tail, rest)
            };
            if matched {
                found.push((
                    pattern.service,
                    self.signal(
                        SignalKind::ApiPattern,
                        &pattern.pattern,
                        pattern.service,
                        pattern.unique,
                    ),
                ));
            }
        }
        for (name, value) in request.headers {
            let Some(patterns) = self.headers.get(name.as_str()) else {
                continue;
            };
            let Ok(value) = value.to_str() else {
                continue;
            };
            for pattern in patterns.iter().filter(|p| p.value.is_match(value)) {
                found.push((
                    pattern.service,
                    self.signal(
                        SignalKind::Header,
                        &pattern.name,
                        pattern.service,
                        pattern.unique,
                    ),
                ));
            }
        }
        if let Some(&service) = request.ja4.and_then(|j| self.ja4.get(j)) {
            let ja4 = request.ja4.unwrap_or_default();
            found.push((
                service,
                self.signal(SignalKind::TlsFingerprint, ja4, service, true),
            ));
        }

        if let Some(owner) = domain_owner {
            let mut signals = vec![Signal {
                kind: SignalKind::Domain,
                signature: Arc::from(request.host),
                service: self.slugs.get(owner).cloned(),
                unique: true,
            }];
            signals.extend(
                found
                    .into_iter()
                    .filter(|(s, _)| *s == owner)
                    .map(|(_, signal)| signal),
            );
            return Fingerprint {
                service: services.get(owner).cloned(),
                unknown_ai: false,
                confidence: combine(&signals),
                signals,
            };
        }

        // No domain: a signal only one service has names it (an SDK header, a unique path);
        // shared or generic signals only say "some AI service".
        let mut signals: Vec<Signal> = found.iter().map(|(_, s)| s.clone()).collect();
        if let Some(hit) = self.generic_paths.find(path) {
            signals.push(Signal {
                kind: SignalKind::GenericAi,
                signature: Arc::from(GENERIC_AI_PATHS[hit.pattern().as_usize()]),
                service: None,
                unique: false,
            });
        }
        for name in GENERIC_AI_HEADERS {
            if request.headers.contains_key(*name)
                && !signals.iter().any(|s| &*s.signature == *name)
            {
                signals.push(Signal {
                    kind: SignalKind::GenericAi,
                    signature: Arc::from(*name),
                    service: None,
                    unique: false,
                });
            }
        }
        if signals.is_empty() {
            return Fingerprint::default();
        }
        // Paths nest (`/v1/chat` is a prefix of `/v1/chat/completions`): only the longest
        // matching pattern speaks for the path.
        let longest_path = found
            .iter()
            .filter(|(_, s)| s.kind == SignalKind::ApiPattern)
            .map(|(_, s)| s.signature.len())
            .max()
            .unwrap_or(0);
        let mut owners = found
            .iter()
            .filter(|(_, s)| {
                s.unique && (s.kind != SignalKind::ApiPattern || s.signature.len() == longest_path)
            })
            .map(|(i, _)| *i);
        let named = owners.next().filter(|first| owners.all(|o| o == *first));
        Fingerprint {
            service: named.and_then(|i| services.get(i).cloned()),
            unknown_ai: named.is_none(),
            confidence: combine(&signals).min(0.85),
            signals,
        }
    }

    fn signal(&self, kind: SignalKind, signature: &str, service: usize, unique: bool) -> Signal {
        Signal {
            kind,
            signature: Arc::from(signature),
            service: self.slugs.get(service).cloned(),
            unique,
        }
    }
}

/// Independent evidence: 1 - Π(1 - wᵢ), one weight per signal kind (several hits of one kind
/// are not independent).
fn combine(signals: &[Signal]) -> f32 {
    let mut best: [f32; 5] = [0.0; 5];
    for signal in signals {
        let slot = &mut best[signal.kind as usize];
        *slot = slot.max(signal.kind.weight(signal.unique));
    }
    let doubt: f32 = best.iter().map(|w| 1.0 - w).product();
    ((1.0 - doubt) * 100.0).round() / 100.0
}

/// A pattern is a path prefix up to a segment boundary: `/v1/chat` matches `/v1/chat/stream`
/// and `/v1/chat?x`, never `/v1/chatter`.
fn at_boundary(rest: &[u8]) -> bool {
    rest.first()
        .is_none_or(|b| matches!(b, b'/' | b'?' | b':' | b'.' | b';'))
}

/// Whether `glob` (where `*` stands for any run of characters except `/`) matches a prefix of
/// `text` ending at a segment boundary.
fn glob_prefix(glob: &[u8], text: &[u8]) -> bool {
    match glob.split_first() {
        None => at_boundary(text),
        Some((b'*', rest)) => {
            let segment = text.iter().position(|&b| b == b'/').unwrap_or(text.len());
            (0..=segment)
                .rev()
                .any(|take| glob_prefix(rest, &text[take..]))
        }
        Some((&literal, rest)) => text.first() == Some(&literal) && glob_prefix(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use std::path::Path;

    fn catalog() -> Catalog {
        Catalog::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog")).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    fn fingerprint(
        catalog: &Catalog,
        host: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Fingerprint {
        catalog.fingerprint(&RequestSignals {
            host,
            path,
            headers,
            ja4: None,
        })
    }

    #[test]
    fn domain_plus_path_is_more_certain_than_domain_alone() {
        let catalog = catalog();
        let none = headers(&[]);
        let plain = fingerprint(&catalog, "api.openai.com", "/", &none);
        let api = fingerprint(
            &catalog,
            "api.openai.com",
            "/v1/chat/completions?x=1",
            &none,
        );
        assert_eq!(api.service.as_ref().unwrap().slug, "openai-api");
        assert!(
            api.confidence > plain.confidence,
            "{} vs {}",
            api.confidence,
            plain.confidence
        );
        assert!(api.signals.iter().any(|s| s.kind == SignalKind::ApiPattern));
    }

    #[test]
    fn globs_match_within_one_segment() {
        assert!(glob_prefix(
            b"*:generateContent",
            b"gemini-pro:generateContent"
        ));
        assert!(!glob_prefix(b"*:generateContent", b"a/b:generateContent"));
        assert!(glob_prefix(b"*/locations/*/x", b"p1/locations/eu/x/more"));
        assert!(glob_prefix(b"", b"/anything"));
        assert!(!glob_prefix(b"", b"ter"), "segment boundary");
        let catalog = catalog();
        let gemini = fingerprint(
            &catalog,
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.0:generateContent",
            &headers(&[]),
        );
        assert!(
            gemini
                .signals
                .iter()
                .any(|s| &*s.signature == "/v1beta/models/*:generateContent"),
            "{:?}",
            gemini.signals
        );
    }

    #[test]
    fn unknown_hosts_with_ai_signals_are_shadow_ai() {
        let catalog = catalog();
        let shadow = fingerprint(
            &catalog,
            "llm.internal.example",
            "/v1/chat/completions",
            &headers(&[]),
        );
        assert!(shadow.service.is_none());
        assert!(shadow.unknown_ai);
        assert!(
            shadow.confidence > 0.3 && shadow.confidence <= 0.85,
            "{}",
            shadow.confidence
        );
        let anthropic_sdk = fingerprint(
            &catalog,
            "proxy.example",
            "/x",
            &headers(&[("anthropic-version", "2023-06-01")]),
        );
        assert!(anthropic_sdk.unknown_ai || anthropic_sdk.service.is_some());
        let nothing = fingerprint(&catalog, "www.example.org", "/index.html", &headers(&[]));
        assert!(nothing.service.is_none() && !nothing.unknown_ai && nothing.signals.is_empty());
    }

    #[test]
    fn a_unique_header_names_its_service_off_domain() {
        let catalog = catalog();
        let found = fingerprint(
            &catalog,
            "gateway.example",
            "/",
            &headers(&[("x-goog-api-key", "k")]),
        );
        assert_eq!(
            found.service.as_ref().map(|s| s.slug.as_str()),
            Some("gemini-api"),
            "{found:?}"
        );
    }

    #[test]
    fn bad_signatures_are_rejected_at_build() {
        let mut service = catalog().services()[0].as_ref().clone();
        service.signatures.headers = vec![crate::catalog::HeaderSignature {
            name: "x".into(),
            pattern: "(".into(),
        }];
        let error = Matcher::build(&[Arc::new(service)]).unwrap_err();
        assert!(error.to_string().contains("not a valid regex"), "{error}");
    }
}
