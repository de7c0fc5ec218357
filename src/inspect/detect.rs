//! PII and secret detectors over prompt text.
//!
//! A `RegexSet` over every detector runs near 12 MB/s on this class of machine, so the scan is
//! built from cheap anchors instead: one case-sensitive aho-corasick pass (packed Teddy) finds
//! secret prefixes (`AKIA`, `ghp_`, `sk-`, `-----BEGIN`, `eyJ`) and name introducers (`Mr. `);
//! `memchr` finds `@` (email), `:` (IPv6) and `=`/`:` (assignments whose key names a secret); one
//! hand-written pass over digit runs feeds cards (IIN + Luhn), SSNs (SSA rules), IBANs (mod 97),
//! IPv4, phone numbers, dates, passport and licence numbers. Context words (`SSN`, `passport`)
//! are searched only in the small window before a candidate, never over the whole text, because
//! common words like `call` and `card` would otherwise dominate the scan. Every hit is validated
//! before it becomes an [`Entity`]; overlapping hits keep the most specific type.

use std::net::Ipv6Addr;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use base64::Engine as _;

use super::national::{NationalId, NationalScanner};
use super::validate;

/// How sensitive a finding is, the values of `decisions.data_classification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    #[serde(rename = "PII", alias = "pii")]
    Pii,
    #[serde(rename = "PHI", alias = "phi")]
    Phi,
    Financial,
    Credentials,
    TradeSecret,
}

impl DataClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DataClass::Pii => "PII",
            DataClass::Phi => "PHI",
            DataClass::Financial => "financial",
            DataClass::Credentials => "credentials",
            DataClass::TradeSecret => "trade_secret",
        }
    }
}

/// A custom dictionary type from configuration (crown-jewel projects, customer names).
#[derive(Debug, PartialEq, Eq)]
pub struct CustomType {
    pub name: String,
    pub classification: DataClass,
}

/// What was found. Built-in names follow the common DLP spelling (`CREDIT_CARD`, `US_SSN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityType {
    Email,
    Phone,
    UsSsn,
    CreditCard,
    Iban,
    IpAddress,
    UsPassport,
    DriverLicense,
    DateOfBirth,
    Person,
    AwsAccessKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    StripeKey,
    OpenaiKey,
    AnthropicKey,
    PrivateKey,
    Jwt,
    GenericSecret,
    National(NationalId),
    Custom(Arc<CustomType>),
}

impl EntityType {
    pub fn as_str(&self) -> &str {
        match self {
            EntityType::Email => "EMAIL",
            EntityType::Phone => "PHONE",
            EntityType::UsSsn => "US_SSN",
            EntityType::CreditCard => "CREDIT_CARD",
            EntityType::Iban => "IBAN",
            EntityType::IpAddress => "IP_ADDRESS",
            EntityType::UsPassport => "US_PASSPORT",
            EntityType::DriverLicense => "DRIVER_LICENSE",
            EntityType::DateOfBirth => "DATE_OF_BIRTH",
            EntityType::Person => "PERSON",
            EntityType::AwsAccessKey => "AWS_ACCESS_KEY",
            EntityType::GithubToken => "GITHUB_TOKEN",
            EntityType::GitlabToken => "GITLAB_TOKEN",
            EntityType::SlackToken => "SLACK_TOKEN",
            EntityType::StripeKey => "STRIPE_KEY",
            EntityType::OpenaiKey => "OPENAI_KEY",
            EntityType::AnthropicKey => "ANTHROPIC_KEY",
            EntityType::PrivateKey => "PRIVATE_KEY",
            EntityType::Jwt => "JWT",
            EntityType::GenericSecret => "GENERIC_SECRET",
            EntityType::National(id) => id.as_str(),
            EntityType::Custom(custom) => &custom.name,
        }
    }

    pub fn classification(&self) -> DataClass {
        match self {
            EntityType::Email
            | EntityType::Phone
            | EntityType::UsSsn
            | EntityType::IpAddress
            | EntityType::UsPassport
            | EntityType::DriverLicense
            | EntityType::DateOfBirth
            | EntityType::Person => DataClass::Pii,
            EntityType::National(NationalId::Crypto) => DataClass::Financial,
            EntityType::National(_) => DataClass::Pii,
            EntityType::CreditCard | EntityType::Iban => DataClass::Financial,
            EntityType::Custom(custom) => custom.classification,
            _ => DataClass::Credentials,
        }
    }

    /// A token whose vendor prefix (`ghp_`, `sk-ant-`, `AKIA`) identifies it.
    pub fn is_vendor_token(&self) -> bool {
        matches!(
            self,
            EntityType::AwsAccessKey
                | EntityType::GithubToken
                | EntityType::GitlabToken
                | EntityType::SlackToken
                | EntityType::StripeKey
                | EntityType::OpenaiKey
                | EntityType::AnthropicKey
        )
    }

    pub fn is_secret(&self) -> bool {
        self.classification() == DataClass::Credentials
    }

    /// When two findings overlap the higher rank wins: a token with a known prefix beats the
    /// generic `password=` rule that also saw it, a card beats the phone number it resembles.
    fn rank(&self) -> u8 {
        match self {
            EntityType::PrivateKey => 9,
            EntityType::CreditCard
            | EntityType::Iban
            | EntityType::UsSsn
            | EntityType::National(_) => 7,
            EntityType::Email | EntityType::IpAddress => 6,
            EntityType::GenericSecret => 5,
            EntityType::Custom(_) => 4,
            EntityType::UsPassport | EntityType::DriverLicense | EntityType::DateOfBirth => 3,
            EntityType::Phone => 2,
            EntityType::Person => 1,
            // Vendor tokens and JWTs.
            _ => 8,
        }
    }
}

/// One finding: a byte span of the scanned text. The value itself is never copied out; callers
/// that show it use [`super::redact::redacted_value`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub kind: EntityType,
    pub start: usize,
    pub end: usize,
    pub confidence: f32,
}

/// A list of terms reported as one custom type when they appear as whole words.
#[derive(Debug, Clone)]
pub struct Dictionary {
    pub name: String,
    pub classification: DataClass,
    pub terms: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("dictionary {name:?}: {message}")]
    Dictionary { name: String, message: String },
    #[error("anchor automaton: {0}")]
    Anchors(String),
    #[error(transparent)]
    National(#[from] super::national::NationalError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Aws,
    Github,
    GithubPat,
    Gitlab,
    Slack,
    Stripe,
    SkDash,
    PemBegin,
    Jwt,
    Bearer,
    Person,
}

/// Words that make a nearby number likely to be a given kind of entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Ssn,
    Card,
    Phone,
    Passport,
    DriverLicense,
    Birth,
}

/// Literal prefixes, matched case-sensitively: vendors spell their token prefixes one way.
const ANCHORS: &[(&str, Anchor)] = &[
    ("AKIA", Anchor::Aws),
    ("ASIA", Anchor::Aws),
    ("ghp_", Anchor::Github),
    ("gho_", Anchor::Github),
    ("ghu_", Anchor::Github),
    ("ghs_", Anchor::Github),
    ("ghr_", Anchor::Github),
    ("github_pat_", Anchor::GithubPat),
    ("glpat-", Anchor::Gitlab),
    ("xoxb-", Anchor::Slack),
    ("xoxp-", Anchor::Slack),
    ("xoxa-", Anchor::Slack),
    ("xoxr-", Anchor::Slack),
    ("xoxs-", Anchor::Slack),
    ("sk_live_", Anchor::Stripe),
    ("rk_live_", Anchor::Stripe),
    ("sk_test_", Anchor::Stripe),
    ("rk_test_", Anchor::Stripe),
    ("sk-", Anchor::SkDash),
    ("-----BEGIN ", Anchor::PemBegin),
    ("eyJ", Anchor::Jwt),
    ("Bearer ", Anchor::Bearer),
    ("bearer ", Anchor::Bearer),
    ("Patient ", Anchor::Person),
    ("patient ", Anchor::Person),
    ("Mr. ", Anchor::Person),
    ("Mrs. ", Anchor::Person),
    ("Ms. ", Anchor::Person),
    ("Dr. ", Anchor::Person),
    ("Name: ", Anchor::Person),
    ("name: ", Anchor::Person),
    ("NAME: ", Anchor::Person),
    ("name is ", Anchor::Person),
];

/// Context words, case-insensitive, searched in the window around a candidate number.
const CONTEXT_WORDS: &[(&str, Context)] = &[
    ("ssn", Context::Ssn),
    ("social security", Context::Ssn),
    ("card", Context::Card),
    ("visa", Context::Card),
    ("mastercard", Context::Card),
    ("amex", Context::Card),
    ("phone", Context::Phone),
    ("call", Context::Phone),
    ("tel", Context::Phone),
    ("mobile", Context::Phone),
    ("cell", Context::Phone),
    ("fax", Context::Phone),
    ("contact", Context::Phone),
    ("passport", Context::Passport),
    ("driver's license", Context::DriverLicense),
    ("drivers license", Context::DriverLicense),
    ("driver license", Context::DriverLicense),
    ("driving licence", Context::DriverLicense),
    ("license number", Context::DriverLicense),
    ("date of birth", Context::Birth),
    ("dob", Context::Birth),
    ("born", Context::Birth),
    ("birth date", Context::Birth),
    ("birthdate", Context::Birth),
];

/// Assignment keys (lowercased substrings) whose value is a secret.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "token",
    "credential",
];

/// How far before a number (in bytes) a context word still counts.
const CONTEXT_BEFORE: usize = 48;
/// How far after a context word the value it introduces may start.
const CONTEXT_AFTER: usize = 32;

/// The compiled detector set; build once per configuration and share.
#[derive(Debug)]
pub struct Detector {
    anchors: AhoCorasick,
    context_words: AhoCorasick,
    dictionaries: Option<(AhoCorasick, Vec<Arc<CustomType>>)>,
    national: NationalScanner,
}

impl Detector {
    pub fn new(dictionaries: &[Dictionary]) -> Result<Self, DetectorError> {
        let anchors = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(ANCHORS.iter().map(|(p, _)| p))
            .map_err(|e| DetectorError::Anchors(e.to_string()))?;
        let context_words = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(CONTEXT_WORDS.iter().map(|(p, _)| p))
            .map_err(|e| DetectorError::Anchors(e.to_string()))?;
        let mut terms = Vec::new();
        let mut owners = Vec::new();
        let mut types = Vec::new();
        for dictionary in dictionaries {
            let name = dictionary.name.trim();
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(DetectorError::Dictionary {
                    name: dictionary.name.clone(),
                    message: "name must be UPPER_SNAKE_CASE (it becomes the entity type)".into(),
                });
            }
            let custom = Arc::new(CustomType {
                name: name.to_owned(),
                classification: dictionary.classification,
            });
            for term in &dictionary.terms {
                let term = term.trim();
                if term.chars().count() < 2 {
                    return Err(DetectorError::Dictionary {
                        name: dictionary.name.clone(),
                        message: format!("term {term:?} is shorter than 2 characters"),
                    });
                }
                terms.push(term.to_owned());
                owners.push(types.len());
            }
            types.push(custom);
        }
        let dictionaries = if terms.is_empty() {
            None
        } else {
            let automaton = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(&terms)
                .map_err(|e| DetectorError::Dictionary {
                    name: "*".into(),
                    message: e.to_string(),
                })?;
            let by_pattern = owners.iter().map(|&i| Arc::clone(&types[i])).collect();
            Some((automaton, by_pattern))
        };
        Ok(Detector {
            anchors,
            context_words,
            dictionaries,
            national: NationalScanner::new()?,
        })
    }

    /// Every validated finding in `text`, ordered by position, without overlaps.
    pub fn scan(&self, text: &str) -> Vec<Entity> {
        let mut scan = self.start(text);
        scan.anchors(&self.anchors);
        scan.assignments();
        scan.emails();
        scan.ipv6();
        scan.numbers();
        scan.national(&self.national);
        scan.dictionaries(self.dictionaries.as_ref());
        resolve_overlaps(scan.found)
    }

    /// Only the literal-anchored token rules (vendor prefixes, PEM, JWT): the cheapest scan,
    /// for text too large for the full set.
    pub fn scan_secrets(&self, text: &str) -> Vec<Entity> {
        let mut scan = self.start(text);
        scan.anchors(&self.anchors);
        scan.found.retain(|e| e.kind.is_secret());
        resolve_overlaps(scan.found)
    }

    /// Only the configured dictionaries.
    pub fn scan_dictionaries(&self, text: &str) -> Vec<Entity> {
        let mut scan = self.start(text);
        scan.dictionaries(self.dictionaries.as_ref());
        resolve_overlaps(scan.found)
    }

    fn start<'t>(&'t self, text: &'t str) -> Scan<'t> {
        Scan {
            text: text.as_bytes(),
            found: Vec::new(),
            context_words: &self.context_words,
            chunk_context: 0,
        }
    }
}

fn resolve_overlaps(mut found: Vec<Entity>) -> Vec<Entity> {
    found.sort_by_key(|e| (e.start, std::cmp::Reverse(e.end)));
    let mut kept: Vec<Entity> = Vec::with_capacity(found.len());
    for entity in found {
        match kept.last_mut() {
            Some(last) if entity.start < last.end => {
                if entity.kind.rank() > last.kind.rank() {
                    *last = entity;
                }
            }
            _ => kept.push(entity),
        }
    }
    kept
}

pub(super) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// File extensions that follow `@` in asset names (`icon@2x.png`), not mail domains.
const FILE_TLDS: &[&str] = &["png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp"];

/// Values after `password=` that are placeholders, not secrets.
const PLACEHOLDERS: &[&str] = &[
    "password",
    "changeme",
    "example",
    "null",
    "none",
    "true",
    "false",
    "undefined",
    "redacted",
    "your_password",
    "yourpassword",
    "secret",
];

struct Scan<'t> {
    text: &'t [u8],
    found: Vec<Entity>,
    context_words: &'t AhoCorasick,
    /// Context words around the digit chunk being examined (see `context_mask`).
    chunk_context: u8,
}

impl Scan<'_> {
    fn anchors(&mut self, anchors: &AhoCorasick) {
        let text = self.text;
        for hit in anchors.find_iter(text) {
            let (_, anchor) = ANCHORS[hit.pattern().as_usize()];
            self.anchor(anchor, hit.start(), hit.end());
        }
    }

    fn dictionaries(&mut self, dictionaries: Option<&(AhoCorasick, Vec<Arc<CustomType>>)>) {
        let Some((automaton, types)) = dictionaries else {
            return;
        };
        let text = self.text;
        for hit in automaton.find_iter(text) {
            if self.word_bounded(hit.start(), hit.end()) {
                let kind = EntityType::Custom(Arc::clone(&types[hit.pattern().as_usize()]));
                self.push(kind, hit.start(), hit.end(), 0.9);
            }
        }
    }

    /// National identifiers, only where no other detector already found something: a number
    /// another detector recognised keeps its finding.
    fn national(&mut self, national: &NationalScanner) {
        let earlier = self.found.len();
        let found = &mut self.found;
        national.scan(self.text, |id, start, end, confidence| {
            if !found[..earlier]
                .iter()
                .any(|e| e.start < end && start < e.end)
            {
                found.push(Entity {
                    kind: EntityType::National(id),
                    start,
                    end,
                    confidence,
                });
            }
        });
    }

    fn push(&mut self, kind: EntityType, start: usize, end: usize, confidence: f32) {
        self.found.push(Entity {
            kind,
            start,
            end,
            confidence,
        });
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.text.get(i).copied()
    }

    fn before(&self, i: usize) -> Option<u8> {
        i.checked_sub(1).and_then(|j| self.byte(j))
    }

    fn word_bounded(&self, start: usize, end: usize) -> bool {
        !self.before(start).is_some_and(is_word_byte) && !self.byte(end).is_some_and(is_word_byte)
    }

    /// The end of the run of bytes from `start` satisfying `accept`.
    fn run(&self, start: usize, accept: impl Fn(u8) -> bool) -> usize {
        self.text[start.min(self.text.len())..]
            .iter()
            .position(|&b| !accept(b))
            .map_or(self.text.len(), |n| start + n)
    }

    /// The context words within `CONTEXT_BEFORE` bytes before `start` or right after `end`,
    /// as a bit set. Searched only in that window: candidates are rare, context words are not.
    fn context_mask(&self, start: usize, end: usize) -> u8 {
        let from = start.saturating_sub(CONTEXT_BEFORE);
        let until = (end + 12).min(self.text.len());
        let mut mask = 0;
        for hit in self.context_words.find_iter(&self.text[from..until]) {
            let (_, kind) = CONTEXT_WORDS[hit.pattern().as_usize()];
            let (s, e) = (from + hit.start(), from + hit.end());
            if !self.before(s).is_some_and(|b| b.is_ascii_alphabetic()) && (e <= start || s >= end)
            {
                mask |= 1 << kind as u8;
            }
        }
        mask
    }

    fn has_context(&self, context: Context) -> bool {
        self.chunk_context & (1 << context as u8) != 0
    }

    fn anchor(&mut self, anchor: Anchor, start: usize, end: usize) {
        let token_start = !self.before(start).is_some_and(is_base64url);
        match anchor {
            Anchor::Aws if token_start => {
                let body = self.run(end, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
                if body - end == 16 && !self.byte(body).is_some_and(is_word_byte) {
                    self.push(EntityType::AwsAccessKey, start, body, 0.95);
                }
            }
            Anchor::Github if token_start => {
                let body = self.run(end, |b| b.is_ascii_alphanumeric());
                if body - end == 36 && !self.byte(body).is_some_and(is_word_byte) {
                    self.push(EntityType::GithubToken, start, body, 0.99);
                }
            }
            Anchor::GithubPat if token_start => {
                let body = self.run(end, is_word_byte);
                if body - end >= 60 {
                    self.push(EntityType::GithubToken, start, body, 0.99);
                }
            }
            Anchor::Gitlab if token_start => {
                let body = self.run(end, is_base64url);
                if body - end >= 20 {
                    self.push(EntityType::GitlabToken, start, body, 0.99);
                }
            }
            Anchor::Slack if token_start => {
                let body = self.run(end, |b| b.is_ascii_alphanumeric() || b == b'-');
                let has_digits = self.text[end..body].iter().any(u8::is_ascii_digit);
                if body - end >= 20 && has_digits {
                    self.push(EntityType::SlackToken, start, body, 0.97);
                }
            }
            Anchor::Stripe if token_start => {
                let body = self.run(end, |b| b.is_ascii_alphanumeric());
                if body - end >= 24 {
                    self.push(EntityType::StripeKey, start, body, 0.98);
                }
            }
            Anchor::SkDash if token_start => self.sk_dash(start, end),
            Anchor::PemBegin => self.pem(start, end),
            Anchor::Jwt if token_start => self.jwt(start),
            Anchor::Bearer => {
                let value_end = self.run(end, |b| {
                    is_base64url(b) || matches!(b, b'.' | b'~' | b'+' | b'/' | b'=')
                });
                let value = &self.text[end..value_end];
                if value.len() >= 20 && validate::shannon_entropy(value) >= 3.5 {
                    self.push(EntityType::GenericSecret, end, value_end, 0.85);
                }
            }
            Anchor::Person if !self.before(start).is_some_and(is_word_byte) => {
                self.person(end, (end + CONTEXT_AFTER).min(self.text.len()));
            }
            _ => {}
        }
    }

    fn sk_dash(&mut self, start: usize, end: usize) {
        let rest = &self.text[end..];
        let (kind, body_start, min) = if rest.starts_with(b"ant-") {
            (EntityType::AnthropicKey, end + 4, 32)
        } else if rest.starts_with(b"proj-") {
            (EntityType::OpenaiKey, end + 5, 20)
        } else if rest.starts_with(b"svcacct-") {
            (EntityType::OpenaiKey, end + 8, 20)
        } else if rest.starts_with(b"admin-") {
            (EntityType::OpenaiKey, end + 6, 20)
        } else {
            // The legacy OpenAI shape: 48 alphanumerics straight after `sk-`.
            let body = self.run(end, |b| b.is_ascii_alphanumeric());
            if body - end >= 32 && !self.byte(body).is_some_and(is_base64url) {
                self.push(EntityType::OpenaiKey, start, body, 0.9);
            }
            return;
        };
        let body = self.run(body_start, is_base64url);
        if body - body_start >= min {
            self.push(kind, start, body, 0.99);
        }
    }

    fn pem(&mut self, start: usize, end: usize) {
        let line_end = self.run(end, |b| b != b'\n');
        let label = &self.text[end..line_end];
        let Some(close) = memchr::memmem::find(label, b"-----") else {
            return;
        };
        if memchr::memmem::find(&label[..close], b"PRIVATE KEY").is_none() {
            return;
        }
        // Search from the header, not the next line: keys embedded in JSON carry `\n` escapes
        // and sit on one line.
        let header_end = end + close + 5;
        let block_end =
            memchr::memmem::find(&self.text[header_end..], b"-----END ").and_then(|at| {
                let footer = header_end + at + 9;
                memchr::memmem::find(&self.text[footer..], b"-----").map(|n| footer + n + 5)
            });
        // A truncated block (no footer) is still a key: everything up to the text's end.
        let (block_end, confidence) = block_end.map_or((self.text.len(), 0.9), |e| (e, 0.99));
        self.push(EntityType::PrivateKey, start, block_end, confidence);
    }

    fn jwt(&mut self, start: usize) {
        let header_end = self.run(start, is_base64url);
        if self.byte(header_end) != Some(b'.') {
            return;
        }
        let payload_end = self.run(header_end + 1, is_base64url);
        if payload_end - header_end < 4 || self.byte(payload_end) != Some(b'.') {
            return;
        }
        let signature_end = self.run(payload_end + 1, is_base64url);
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.text[start..header_end])
            .ok()
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok());
        if header.as_ref().and_then(|h| h.get("alg")).is_some() {
            self.push(EntityType::Jwt, start, signature_end, 0.99);
        }
    }

    /// `password=...`, `"api_key": "..."`, `SECRET_KEY = '...'`: found from the operator, so
    /// the scan costs one `memchr2`; the key before it must name a secret.
    fn assignments(&mut self) {
        let text = self.text;
        let mut next = 0;
        for op in memchr::memchr2_iter(b'=', b':', text) {
            if op < next || (text[op] == b'=' && op > 0 && text[op - 1] == b':') {
                continue;
            }
            if text[op] == b':' {
                if let Some(end) = self.url_credentials(op) {
                    next = end;
                    continue;
                }
            }
            let mut key_end = op;
            while key_end > 0 && text[key_end - 1] == b' ' {
                key_end -= 1;
            }
            if key_end > 0 && matches!(text[key_end - 1], b'"' | b'\'') {
                key_end -= 1;
            }
            let mut key_start = key_end;
            while key_start > 0
                && key_end - key_start < 64
                && (is_word_byte(text[key_start - 1]) || text[key_start - 1] == b'-')
            {
                key_start -= 1;
            }
            let key = &text[key_start..key_end];
            let names_secret = key.len() >= 3
                && SECRET_KEYS.iter().any(|k| {
                    key.windows(k.len())
                        .any(|w| w.eq_ignore_ascii_case(k.as_bytes()))
                });
            if names_secret {
                if let Some(end) = self.assignment(key_end) {
                    next = end;
                }
            }
        }
    }

    /// The value of the assignment whose key ends at `key_end`, when it looks like a real
    /// secret rather than a placeholder or prose. Returns where the value ends.
    fn assignment(&mut self, key_end: usize) -> Option<usize> {
        let mut i = key_end;
        if matches!(self.byte(i), Some(b'"' | b'\'')) {
            i += 1;
        }
        i = self.run(i, |b| b == b' ' || b == b'\t');
        match (self.byte(i), self.byte(i + 1)) {
            (Some(b':'), Some(b'=')) | (Some(b'='), Some(b'>')) => i += 2,
            (Some(b':' | b'='), _) => i += 1,
            _ => return None,
        }
        i = self.run(i, |b| b == b' ' || b == b'\t');
        let quote = match self.byte(i) {
            Some(q @ (b'"' | b'\'' | b'`')) => {
                i += 1;
                Some(q)
            }
            _ => None,
        };
        let value_end = match quote {
            Some(q) => self.run(i, |b| b != q && b != b'\n'),
            None => self.unquoted_value_end(i),
        };
        let value = &self.text[i..value_end];
        if value.len() < 8 || value.len() > 256 || value.iter().any(u8::is_ascii_whitespace) {
            return None;
        }
        let placeholder = matches!(value[0], b'<' | b'$' | b'{' | b'%' | b'[' | b'(')
            || value
                .iter()
                .all(|&b| matches!(b, b'*' | b'x' | b'X' | b'.' | b'#' | b'-'))
            || PLACEHOLDERS
                .iter()
                .any(|p| value.eq_ignore_ascii_case(p.as_bytes()))
            || is_reference(value);
        let random =
            validate::character_classes(value) >= 3 || validate::shannon_entropy(value) >= 3.5;
        if !placeholder && random {
            self.push(EntityType::GenericSecret, i, value_end, 0.8);
        }
        Some(value_end)
    }

    /// Where an unquoted value ends: whitespace, a separator, a closing backtick, or `&` that
    /// starts the next `name=` of a query string (secrets do contain `&` themselves).
    fn unquoted_value_end(&self, start: usize) -> usize {
        let mut i = start;
        while let Some(b) = self.byte(i) {
            if b.is_ascii_whitespace() || matches!(b, b',' | b';' | b'"' | b'\'' | b'`') {
                break;
            }
            if b == b'&' {
                let name_end = self.run(i + 1, is_word_byte);
                if name_end > i + 1 && self.byte(name_end) == Some(b'=') {
                    break;
                }
            }
            i += 1;
        }
        i
    }

    /// The password of `scheme://user:password@host` when `colon` is the colon after `user`.
    fn url_credentials(&mut self, colon: usize) -> Option<usize> {
        let text = self.text;
        let user_start = colon
            - text[..colon]
                .iter()
                .rev()
                .take_while(|&&b| is_word_byte(b) || matches!(b, b'.' | b'-' | b'%'))
                .count();
        if user_start < 3 || &text[user_start - 3..user_start] != b"://" {
            return None;
        }
        let end = self.run(colon + 1, |b| {
            b != b'@' && b != b'/' && !b.is_ascii_whitespace()
        });
        let password = &text[colon + 1..end];
        let placeholder = password
            .first()
            .is_some_and(|b| matches!(b, b'<' | b'$' | b'{' | b'*'));
        if self.byte(end) != Some(b'@') || password.len() < 6 || placeholder {
            return None;
        }
        self.push(EntityType::GenericSecret, colon + 1, end, 0.9);
        Some(end)
    }

    /// One to three capitalised words after a person context word.
    fn person(&mut self, from: usize, until: usize) {
        let Ok(window) = std::str::from_utf8(&self.text[from..until.max(from)]) else {
            // The window cut a multi-byte character; names at the edge are skipped.
            return self.person_lossy(from, until);
        };
        self.person_in(from, window);
    }

    fn person_lossy(&mut self, from: usize, until: usize) {
        let mut end = until;
        while end > from && std::str::from_utf8(&self.text[from..end]).is_err() {
            end -= 1;
        }
        if let Ok(window) = std::str::from_utf8(&self.text[from..end]) {
            self.person_in(from, window);
        }
    }

    fn person_in(&mut self, from: usize, window: &str) {
        let trimmed = window.trim_start_matches([' ', ':', '\t']);
        let offset = from + (window.len() - trimmed.len());
        let mut end = offset;
        let mut words = 0;
        for word in trimmed.split(' ') {
            let mut chars = word.chars();
            let capitalised = chars.next().is_some_and(char::is_uppercase)
                && word.chars().count() >= 2
                && chars.all(|c| c.is_lowercase() || c == '-' || c == '\'');
            if !capitalised || words == 3 {
                break;
            }
            end = offset + (word.as_ptr() as usize - trimmed.as_ptr() as usize) + word.len();
            words += 1;
        }
        if words >= 1 {
            let confidence = if words >= 2 { 0.75 } else { 0.6 };
            self.push(EntityType::Person, offset, end, confidence);
        }
    }

    fn emails(&mut self) {
        let text = self.text;
        for at in memchr::memchr_iter(b'@', text) {
            let mut start = at;
            while start > 0 && is_email_local(text[start - 1]) {
                start -= 1;
            }
            while start < at && matches!(text[start], b'.' | b'-' | b'+') {
                start += 1;
            }
            let mut end = self.run(at + 1, is_domain_byte);
            while end > at + 1 && matches!(text[end - 1], b'.' | b'-') {
                end -= 1;
            }
            if start == at || end == at + 1 {
                continue;
            }
            let domain = &text[at + 1..end];
            let Some(dot) = domain.iter().rposition(|&b| b == b'.') else {
                continue;
            };
            let tld = &domain[dot + 1..];
            let labels_ok = domain.split(|&b| b == b'.').all(|label| !label.is_empty());
            let tld_ok = tld.len() >= 2
                && tld.iter().all(u8::is_ascii_alphabetic)
                && !FILE_TLDS
                    .iter()
                    .any(|f| tld.eq_ignore_ascii_case(f.as_bytes()));
            if labels_ok && tld_ok && text[start] != b'.' {
                self.push(EntityType::Email, start, end, 0.97);
            }
        }
    }

    fn ipv6(&mut self) {
        let text = self.text;
        let is_part = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
        let mut next = 0;
        for colon in memchr::memchr_iter(b':', text) {
            if colon < next {
                continue;
            }
            // JSON (`"key": 1`), prose and times rarely have hex on both sides of a colon.
            let left_ok =
                colon > 0 && (text[colon - 1].is_ascii_hexdigit() || text[colon - 1] == b':');
            let right_ok = text
                .get(colon + 1)
                .is_some_and(|&b| b.is_ascii_hexdigit() || b == b':');
            if !left_ok || !right_ok {
                continue;
            }
            let mut start = colon;
            while start > 0 && is_part(text[start - 1]) {
                start -= 1;
            }
            let mut end = self.run(colon, is_part);
            while end > colon
                && matches!(text[end - 1], b'.' | b':')
                && !text[start..end].ends_with(b"::")
            {
                end -= 1;
            }
            next = end;
            if self
                .before(start)
                .is_some_and(|b| is_word_byte(b) || b == b'/')
                || self.byte(end).is_some_and(is_word_byte)
            {
                continue;
            }
            let candidate = &text[start..end];
            let Ok(candidate_str) = std::str::from_utf8(candidate) else {
                continue;
            };
            let Ok(address) = candidate_str.parse::<Ipv6Addr>() else {
                continue;
            };
            let groups = candidate
                .split(|&b| b == b':')
                .filter(|g| !g.is_empty())
                .count();
            let well_known = [0xfe80u16, 0xfc00, 0xfd00, 0x2001, 0x2002, 0x2a00]
                .iter()
                .any(|&p| address.segments()[0] & 0xff00 == p & 0xff00);
            let has_digit = candidate.iter().any(u8::is_ascii_digit);
            if !address.is_unspecified()
                && !address.is_loopback()
                && has_digit
                && (groups >= 3 || well_known)
            {
                self.push(EntityType::IpAddress, start, end, 0.95);
            }
        }
    }

    /// The digit pass: every maximal run of digit groups joined by single separators is
    /// split into candidates (IBAN, IPv4, SSN, card, phone, date, bare numbers with context).
    fn numbers(&mut self) {
        let text = self.text;
        let mut i = 0;
        while i < text.len() {
            let Some(offset) = text[i..].iter().position(u8::is_ascii_digit) else {
                break;
            };
            let start = i + offset;
            if self.before(start).is_some_and(|b| b.is_ascii_alphabetic()) {
                if let Some(end) = self.iban(start) {
                    i = end;
                    continue;
                }
            }
            let end = self.number_chunk(start);
            i = end.max(start + 1);
        }
    }

    /// An IBAN whose check digits start at `digits_at`, preceded by its country code.
    fn iban(&mut self, digits_at: usize) -> Option<usize> {
        let start = digits_at.checked_sub(2)?;
        let country = &self.text[start..digits_at];
        if !country.iter().all(u8::is_ascii_uppercase)
            || self.before(start).is_some_and(is_word_byte)
        {
            return None;
        }
        let length = validate::iban_length(country)?;
        let mut compact = [0u8; 34];
        let mut count = 0;
        let mut i = start;
        while count < length {
            match self.byte(i) {
                Some(b) if b.is_ascii_uppercase() || b.is_ascii_digit() => {
                    compact[count] = b;
                    count += 1;
                    i += 1;
                }
                // The printed form groups by four with single spaces.
                Some(b' ')
                    if count % 4 == 0
                        && self.byte(i + 1).is_some_and(|b| b.is_ascii_alphanumeric()) =>
                {
                    i += 1
                }
                _ => return None,
            }
        }
        if self.byte(i).is_some_and(is_word_byte) || !validate::iban_checksum(&compact[..length]) {
            return None;
        }
        self.push(EntityType::Iban, start, i, 0.97);
        Some(i)
    }

    /// Handles one chunk starting at the digit `start`; returns where it ends.
    fn number_chunk(&mut self, start: usize) -> usize {
        let text = self.text;
        // Digits glued to letters or to a preceding number (`v1.2`, `abc123`) are identifiers.
        let glued = self
            .before(start)
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'.');
        let mut groups: Vec<(usize, usize)> = Vec::with_capacity(8);
        let mut seps: Vec<&[u8]> = Vec::with_capacity(8);
        let mut i = start;
        loop {
            let end = self.run(i, |b| b.is_ascii_digit());
            groups.push((i, end));
            let sep_len = match (self.byte(end), self.byte(end + 1), self.byte(end + 2)) {
                (Some(b')'), Some(b' '), Some(d)) if d.is_ascii_digit() => 2,
                (Some(b' ' | b'-' | b'.' | b'/' | b')'), Some(d), _) if d.is_ascii_digit() => 1,
                _ => 0,
            };
            if sep_len == 0 || groups.len() == 24 {
                break;
            }
            seps.push(&text[end..end + sep_len]);
            i = end + sep_len;
        }
        let chunk_end = groups.last().map_or(start, |g| g.1);
        let digits: usize = groups.iter().map(|(s, e)| e - s).sum();
        self.chunk_context = if digits >= 4 {
            self.context_mask(start, chunk_end)
        } else {
            0
        };
        if let Some(end) = self.document_number(start) {
            return end;
        }
        if glued
            || self
                .byte(chunk_end)
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return chunk_end;
        }
        let mut g = 0;
        while g < groups.len() {
            let consumed = self.number_at(&groups, &seps, g);
            g += consumed.max(1);
        }
        chunk_end
    }

    /// A passport or driver's licence number (up to three letters, then digits) whose digits
    /// start at `digits_at`, next to its context word.
    fn document_number(&mut self, digits_at: usize) -> Option<usize> {
        let wanted =
            self.chunk_context & (1 << Context::Passport as u8 | 1 << Context::DriverLicense as u8);
        if wanted == 0 {
            return None;
        }
        let text = self.text;
        let mut start = digits_at;
        while start > 0 && digits_at - start < 3 && text[start - 1].is_ascii_uppercase() {
            start -= 1;
        }
        if self.before(start).is_some_and(is_word_byte) {
            return None;
        }
        let end = self.run(digits_at, |b| b.is_ascii_alphanumeric());
        let token = &text[start..end];
        let digits = token.iter().filter(|b| b.is_ascii_digit()).count();
        let letters = token.len() - digits;
        // US passport books: 9 digits; next-generation cards: a letter and 8 digits.
        let passport = (digits == 9 && letters == 0)
            || (digits == 8 && letters == 1 && token[0].is_ascii_uppercase());
        let licence = (5..=15).contains(&token.len())
            && digits >= 4
            && letters <= 3
            && token[letters..].iter().all(u8::is_ascii_digit);
        let kind = if passport && self.has_context(Context::Passport) {
            EntityType::UsPassport
        } else if licence && self.has_context(Context::DriverLicense) {
            EntityType::DriverLicense
        } else {
            return None;
        };
        self.push(kind, start, end, 0.85);
        Some(end)
    }

    /// Tries each number shape at group `g`; returns how many groups the match consumed.
    fn number_at(&mut self, groups: &[(usize, usize)], seps: &[&[u8]], g: usize) -> usize {
        let text = self.text;
        let len = |k: usize| groups[k].1 - groups[k].0;
        let digits_of = |from: usize, count: usize| -> Vec<u8> {
            groups[from..from + count]
                .iter()
                .flat_map(|&(s, e)| text[s..e].iter().copied())
                .collect()
        };
        let available = groups.len() - g;
        let start = groups[g].0;
        let end_of = |count: usize| groups[g + count - 1].1;
        let same_seps = |count: usize, allowed: &[u8]| {
            let run = &seps[g..g + count - 1];
            run.iter().all(|s| s.len() == 1 && allowed.contains(&s[0]))
                && run.windows(2).all(|w| w[0] == w[1])
        };
        // A number inside a longer dotted run (`10.0.19045.2965`) is a version, not an address.
        let dotted_before = self.before(start) == Some(b'.');

        // IPv4: four dotted octets, the whole dotted run.
        if available >= 4 && same_seps(4, b".") && !dotted_before {
            let octets_ok = (0..4).all(|k| {
                let (s, e) = groups[g + k];
                e - s <= 3
                    && std::str::from_utf8(&text[s..e])
                        .ok()
                        .and_then(|v| v.parse::<u16>().ok())
                        .is_some_and(|v| v <= 255)
            });
            let more = g + 4 < groups.len() && seps[g + 3] == b".";
            if octets_ok && !more {
                self.push(EntityType::IpAddress, start, end_of(4), 0.9);
                return 4;
            }
        }
        if self.byte(start.wrapping_sub(1)) == Some(b'.') && start > 0 {
            return 1;
        }

        // US SSN: 3-2-4 with dashes (or spaces with context), or 9 digits with context.
        let ssn_context = self.has_context(Context::Ssn);
        if available >= 3
            && len(g) == 3
            && len(g + 1) == 2
            && len(g + 2) == 4
            && (same_seps(3, b"-") || (ssn_context && same_seps(3, b" ")))
        {
            let d = digits_of(g, 3);
            if ssn_valid(&d) {
                self.push(
                    EntityType::UsSsn,
                    start,
                    end_of(3),
                    if ssn_context { 0.99 } else { 0.85 },
                );
                return 3;
            }
        }
        if len(g) == 9 && ssn_context && ssn_valid(&text[start..groups[g].1]) {
            self.push(EntityType::UsSsn, start, groups[g].1, 0.9);
            return 1;
        }

        // Cards: 13-19 digits, plain or grouped (4-4-4-4, 4-6-5, 4-4-4-4-3) with one separator.
        let card_context = self.has_context(Context::Card);
        for count in [1usize, 4, 3, 5] {
            if available < count || (count > 1 && !same_seps(count, b" -")) {
                continue;
            }
            let shape_ok = match count {
                1 => (13..=19).contains(&len(g)),
                3 => len(g) == 4 && len(g + 1) == 6 && len(g + 2) == 5,
                4 => (0..3).all(|k| len(g + k) == 4) && (1..=4).contains(&len(g + 3)),
                _ => (0..4).all(|k| len(g + k) == 4) && (1..=3).contains(&len(g + 4)),
            };
            if !shape_ok {
                continue;
            }
            let d = digits_of(g, count);
            if validate::luhn(&d) && validate::card_network(&d).is_some() {
                self.push(
                    EntityType::CreditCard,
                    start,
                    end_of(count),
                    if card_context { 0.99 } else { 0.93 },
                );
                return count;
            }
        }

        // Phone numbers.
        if let Some(consumed) = self.phone(groups, seps, g) {
            return consumed;
        }

        // Dates of birth: d/m/y, m/d/y or y-m-d near a birth context word.
        if available >= 3 && (same_seps(3, b"/-.")) {
            let (a, b, c) = (len(g), len(g + 1), len(g + 2));
            let shaped = (a <= 2 && b <= 2 && c == 4) || (a == 4 && b <= 2 && c <= 2);
            if shaped && self.has_context(Context::Birth) {
                self.push(EntityType::DateOfBirth, start, end_of(3), 0.85);
                return 3;
            }
        }
        1
    }

    fn phone(&mut self, groups: &[(usize, usize)], seps: &[&[u8]], g: usize) -> Option<usize> {
        let text = self.text;
        let start = groups[g].0;
        let before = self.before(start);
        let available = groups.len() - g;
        let has_phone_context = self.has_context(Context::Phone);
        let count_digits =
            |count: usize| -> usize { groups[g..g + count].iter().map(|(s, e)| e - s).sum() };
        if before == Some(b'+') && !self.before(start - 1).is_some_and(is_word_byte) {
            // International: `+` then 8-15 digits in up to six groups of one separator kind.
            for count in (1..=available.min(6)).rev() {
                let digits = count_digits(count);
                let seps_ok = seps[g..g + count - 1]
                    .iter()
                    .all(|s| s.len() == 1 && matches!(s[0], b' ' | b'-' | b'.'));
                if (8..=15).contains(&digits) && seps_ok && groups[g].1 - start <= 4
                    || (count == 1 && (8..=15).contains(&digits))
                {
                    let end = groups[g + count - 1].1;
                    let confidence = if has_phone_context { 0.95 } else { 0.8 };
                    self.push(EntityType::Phone, start - 1, end, confidence);
                    return Some(count);
                }
            }
            return None;
        }
        // North American: (415) 555-0132, 415-555-0132, 415.555.0132, 1-800-555-0199.
        let mut g0 = g;
        let mut span_start = start;
        if groups[g].1 - start == 1 && text[start] == b'1' && available >= 4 {
            g0 = g + 1;
        }
        if groups.len() - g0 < 3 {
            return None;
        }
        let lens = [0, 1, 2].map(|k| groups[g0 + k].1 - groups[g0 + k].0);
        if lens != [3, 3, 4] {
            return None;
        }
        let parenthesised =
            self.before(groups[g0].0) == Some(b'(') && matches!(seps[g0], b")" | b") ");
        let uniform = seps[g0] == seps[g0 + 1]
            && seps[g0].len() == 1
            && matches!(seps[g0][0], b'-' | b'.' | b' ');
        if !(parenthesised || uniform) || !matches!(seps[g0 + 1], b"-" | b"." | b" ") {
            return None;
        }
        let mut digits = [0u8; 10];
        let mut n = 0;
        for &(s, e) in &groups[g0..g0 + 3] {
            for &d in &text[s..e] {
                digits[n] = d;
                n += 1;
            }
        }
        if !validate::nanp(&digits) {
            return None;
        }
        if parenthesised && g0 == g {
            span_start = start - 1;
        }
        let end = groups[g0 + 2].1;
        let has_context = has_phone_context;
        // A bare 3-3-4 with spaces is too often something else without a phone word nearby.
        if seps[g0] == b" " && !parenthesised && !has_context {
            return None;
        }
        self.push(
            EntityType::Phone,
            span_start,
            end,
            if has_context { 0.95 } else { 0.75 },
        );
        Some(g0 - g + 3)
    }
}

/// `var.db_password`, `process.env.API_KEY`: a value that names where the secret lives.
fn is_reference(value: &[u8]) -> bool {
    value.contains(&b'.')
        && !value[0].is_ascii_digit()
        && value
            .split(|&b| b == b'.')
            .all(|part| !part.is_empty() && part.iter().all(|&b| is_word_byte(b)))
}

fn ssn_valid(digits: &[u8]) -> bool {
    let number = |s: &[u8]| {
        s.iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    digits.len() == 9
        && validate::ssn(
            number(&digits[..3]),
            number(&digits[3..5]),
            number(&digits[5..]),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> Detector {
        Detector::new(&[Dictionary {
            name: "CROWN_JEWEL".into(),
            classification: DataClass::TradeSecret,
            terms: vec!["Project Nightingale".into(), "Bluebird".into()],
        }])
        .unwrap()
    }

    fn found(text: &str) -> Vec<(String, String)> {
        detector()
            .scan(text)
            .into_iter()
            .map(|e| (e.kind.as_str().to_owned(), text[e.start..e.end].to_owned()))
            .collect()
    }

    fn kinds(text: &str) -> Vec<String> {
        found(text).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn cards_need_luhn_and_a_real_iin() {
        assert_eq!(
            found("charge 4111 1111 1111 1111 again"),
            vec![("CREDIT_CARD".into(), "4111 1111 1111 1111".into())]
        );
        assert_eq!(kinds("amex 3782-822463-10005"), vec!["CREDIT_CARD"]);
        assert_eq!(kinds("card 5555555555554444."), vec!["CREDIT_CARD"]);
        assert!(kinds("order 1234567890123456 shipped").is_empty());
        assert!(
            kinds("order 4111111111111112 shipped").is_empty(),
            "Luhn fails"
        );
        assert!(
            kinds("ref 1111111111111117").is_empty(),
            "no network starts with 1"
        );
    }

    #[test]
    fn ssn_rules_and_context() {
        assert_eq!(kinds("SSN: 123-45-6789"), vec!["US_SSN"]);
        assert_eq!(
            kinds("her social security number is 123456789"),
            vec!["US_SSN"]
        );
        assert!(kinds("ticket 123456789 closed").is_empty());
        assert!(kinds("SSN 666-45-6789").is_empty());
        assert!(kinds("SSN 123-00-6789").is_empty());
    }

    #[test]
    fn emails_and_asset_names() {
        assert_eq!(
            found("mail jane.doe+ai@mail.example.co.uk."),
            vec![("EMAIL".into(), "jane.doe+ai@mail.example.co.uk".into())]
        );
        assert!(kinds("use icon@2x.png here").is_empty());
        assert!(kinds("@mention someone").is_empty());
    }

    #[test]
    fn ibans_compact_and_printed() {
        assert_eq!(kinds("IBAN DE89370400440532013000"), vec!["IBAN"]);
        assert_eq!(
            found("pay to GB82 WEST 1234 5698 7654 32 today"),
            vec![("IBAN".into(), "GB82 WEST 1234 5698 7654 32".into())]
        );
        assert!(kinds("IBAN DE89370400440532013001").is_empty());
    }

    #[test]
    fn ip_addresses_but_not_versions_or_times() {
        assert_eq!(kinds("from 192.168.10.25 at noon"), vec!["IP_ADDRESS"]);
        assert_eq!(
            kinds("host 2001:db8::8a2e:370:7334 down"),
            vec!["IP_ADDRESS"]
        );
        assert_eq!(kinds("link fe80::1 up"), vec!["IP_ADDRESS"]);
        assert!(kinds("version 10.0.19045.2965").is_empty());
        assert!(kinds("Chrome/120.0.6099.109").is_empty());
        assert!(kinds("at 2024-03-15T10:22:31Z").is_empty());
        assert!(kinds("use std::vec and abc::def").is_empty());
        assert!(kinds("v1.2.3.4 released").is_empty());
        assert!(kinds("mac 00:1a:2b:3c:4d:5e").is_empty());
    }

    #[test]
    fn phones_in_common_formats() {
        assert_eq!(kinds("call (415) 555-0132"), vec!["PHONE"]);
        assert_eq!(kinds("phone +44 20 7946 0958"), vec!["PHONE"]);
        assert_eq!(kinds("mobile +442079460958"), vec!["PHONE"]);
        assert_eq!(kinds("tel 415-555-0132"), vec!["PHONE"]);
        assert!(kinds("dated 2024-03-15").is_empty());
    }

    #[test]
    fn secrets_with_known_prefixes() {
        let github = format!("token ghp_{}", "a1B2c3D4e5".repeat(3) + "F6g7H8");
        assert_eq!(kinds(&github), vec!["GITHUB_TOKEN"]);
        assert_eq!(kinds("key AKIAIOSFODNN7EXAMPLE"), vec!["AWS_ACCESS_KEY"]);
        assert_eq!(
            kinds(&format!("sk-ant-api03-{}AA", "x".repeat(93))),
            vec!["ANTHROPIC_KEY"]
        );
        assert_eq!(
            kinds(&format!("OPENAI_API_KEY=sk-proj-{}", "Ab3_".repeat(30))),
            vec!["OPENAI_KEY"]
        );
        assert_eq!(
            kinds(&format!("xoxb-1234567890-1234567890123-{}", "a".repeat(24))),
            vec!["SLACK_TOKEN"]
        );
        assert_eq!(
            kinds(&format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc")),
            vec!["STRIPE_KEY"]
        );
        assert_eq!(
            kinds(&format!("glpat-{}", "xK3_9fPq-2LmN8vR4tYz")),
            vec!["GITLAB_TOKEN"]
        );
        assert!(kinds("my task-list and risk-free plan").is_empty());
        assert!(kinds("AKIA is a prefix").is_empty());
    }

    #[test]
    fn pem_blocks_and_jwts() {
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            found(&format!("key:\n{pem}\nthanks")),
            vec![("PRIVATE_KEY".into(), pem.into())]
        );
        assert!(kinds("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").is_empty());
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(
            found(&format!("Authorization: Bearer {jwt}")),
            vec![("JWT".into(), jwt.into())]
        );
        assert!(
            kinds("eyJub3QiOiJhIGp3dCJ9.eyJ4IjoxfQ.sig").is_empty(),
            "no alg"
        );
    }

    #[test]
    fn assignments_need_a_random_value() {
        assert_eq!(
            found("DB_PASSWORD=Xk9#mQ2$vL7!pR4z"),
            vec![("GENERIC_SECRET".into(), "Xk9#mQ2$vL7!pR4z".into())]
        );
        assert_eq!(
            kinds(r#"{"client_secret": "aZ8kQ1mN4pX7wR2t"}"#),
            vec!["GENERIC_SECRET"]
        );
        assert!(kinds("password=********").is_empty());
        assert!(kinds("password=${DB_PASSWORD}").is_empty());
        assert!(kinds("password: <your-password>").is_empty());
        assert!(kinds("I forgot my password, please reset it").is_empty());
        assert!(kinds("password=changeme").is_empty());
        assert!(kinds("password = var.db_password").is_empty());
        assert!(kinds("apiKey: process.env.API_KEY").is_empty());
        assert_eq!(
            found("POSTGRES_PASSWORD: Oc%vo&K*y+Dkb03 next"),
            vec![("GENERIC_SECRET".into(), "Oc%vo&K*y+Dkb03".into())]
        );
        assert_eq!(
            found("?password=Xk9mQ2vL7pR4zW&user=bob"),
            vec![("GENERIC_SECRET".into(), "Xk9mQ2vL7pR4zW".into())]
        );
        assert_eq!(
            found("postgresql://app:Fr1xQ87fnLO@db:5432/app"),
            vec![("GENERIC_SECRET".into(), "Fr1xQ87fnLO".into())]
        );
        assert!(kinds("https://example.com:8443/path").is_empty());
    }

    #[test]
    fn context_values_and_dictionaries() {
        assert_eq!(kinds("Passport No: 123456789"), vec!["US_PASSPORT"]);
        assert_eq!(kinds("DOB 04/12/1985"), vec!["DATE_OF_BIRTH"]);
        assert!(kinds("released 04/12/1985").is_empty());
        assert_eq!(
            found("patient Jane Doe was seen"),
            vec![("PERSON".into(), "Jane Doe".into())]
        );
        assert_eq!(kinds("status of project nightingale?"), vec!["CROWN_JEWEL"]);
        assert!(kinds("bluebirds sing").is_empty(), "whole words only");
    }

    #[test]
    fn hard_negatives_stay_silent() {
        let text = "Order INV-2024-000123 for $1,234.56 shipped 2024-03-15T10:22:31Z (ts 1710498151), \
                    build 3f786850e387550fdab836ed7e6dc881de23001b, id 550e8400-e29b-41d4-a716-446655440000, \
                    ISBN 978-3-16-148410-0, sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.";
        assert_eq!(kinds(text), Vec::<String>::new());
    }

    #[test]
    fn overlapping_findings_keep_the_specific_type() {
        let text = format!("api_key: \"sk-proj-{}\"", "Ab3_".repeat(30));
        assert_eq!(kinds(&text), vec!["OPENAI_KEY"]);
    }

    #[test]
    fn bad_dictionary_names_are_rejected() {
        let error = Detector::new(&[Dictionary {
            name: "crown jewels".into(),
            classification: DataClass::TradeSecret,
            terms: vec!["x1".into()],
        }])
        .unwrap_err();
        assert!(error.to_string().contains("UPPER_SNAKE_CASE"), "{error}");
    }
}
