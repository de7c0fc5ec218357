//! Prompt extraction: the text a request sends to an AI service, out of whatever body shape the
//! client used.
//!
//! Every string a request carries is inspected, not only the fields a provider documents as the
//! prompt: a secret in `metadata` leaks just as well. Provider knowledge decides which strings
//! count as the prompt proper (`prompt_chars`, the format named in the explanation) and which are
//! binary payloads to skip (base64 images). Each inspected string is a [`Segment`] that remembers
//! where it came from, so redaction can write masked values back into a still-valid body.

use std::fmt::Write as _;
use std::ops::Range;

use bytes::Bytes;

use super::decode;

/// What the request does with the AI service, the `decisions.action` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SendPrompt,
    UploadFile,
    AccessService,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SendPrompt => "send_prompt",
            Action::UploadFile => "upload_file",
            Action::AccessService => "access_ai_service",
        }
    }
}

/// Where one inspected string came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A JSON string leaf, by RFC 6901 pointer.
    Json(String),
    /// A byte range of the (decoded) body holding plain text.
    Body(Range<usize>),
    /// The value of an `application/x-www-form-urlencoded` field.
    Form(String),
    /// A `multipart/form-data` part, by position.
    Part(usize),
    /// Text decoded out of another origin: base64, percent-encoding, invisible characters removed.
    Decoded(Box<Origin>),
    /// A query parameter of the request URL, by name.
    Query(String),
    /// A request header's value, by name.
    Header(http::HeaderName),
}

impl Origin {
    /// Came from the body (not the URL or a header).
    fn in_body(&self) -> bool {
        match self {
            Origin::Decoded(inner) => inner.in_body(),
            Origin::Query(_) | Origin::Header(_) => false,
            _ => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Byte range within [`Extracted::text`].
    pub range: Range<usize>,
    pub origin: Origin,
    /// Part of the prompt proper (a provider's message field), not just another string.
    pub prompt: bool,
}

/// A file part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileUpload {
    pub name: String,
    pub content_type: Option<String>,
    pub size: usize,
    /// Its content was text-like and inspected with the rest.
    pub inspected: bool,
}

#[derive(Clone, Default)]
pub struct Extracted {
    /// All inspected strings, joined by `\n`.
    pub text: String,
    pub segments: Vec<Segment>,
    /// Characters of the prompt proper (provider message fields, or all text for plain bodies).
    pub prompt_chars: usize,
    pub files: Vec<FileUpload>,
    /// `openai_chat`, `anthropic_messages`, `gemini`, `json`, `form`, `multipart`, `text`, ...
    pub format: &'static str,
    /// The body was cut at the inspection cap (by the proxy or while decoding).
    pub truncated: bool,
    /// Why part of the body could not be read (bad JSON, corrupt gzip); never request content.
    pub problem: Option<String>,
    /// The body after content decoding, when it was encoded (redaction rewrites this one).
    pub decoded: Option<Bytes>,
    /// The body could not be decoded as labelled (unknown or corrupt `Content-Encoding`): it was
    /// not inspected, and the gateway refuses it rather than forward it unread.
    pub unreadable: bool,
    /// Where the text scanned for secrets only begins: the URL query, header values and raw
    /// base64 payloads, where personal data is expected and only a secret is a finding.
    pub secrets_only_from: usize,
    /// Bytes the decoders may still produce for this request.
    budget: usize,
    /// Raw base64 payloads of the body, scanned for secrets only and not decoded again.
    payloads: Vec<(String, Origin)>,
}

/// Prompt text must never reach a log line, so `Debug` shows the shape only.
impl std::fmt::Debug for Extracted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extracted")
            .field("format", &self.format)
            .field("text_bytes", &self.text.len())
            .field("segments", &self.segments.len())
            .field("prompt_chars", &self.prompt_chars)
            .field("files", &self.files)
            .field("truncated", &self.truncated)
            .field("problem", &self.problem)
            .field("unreadable", &self.unreadable)
            .finish()
    }
}

impl Extracted {
    pub fn action(&self) -> Action {
        if !self.files.is_empty() {
            Action::UploadFile
        } else if self.segments.iter().any(|s| s.origin.in_body()) {
            Action::SendPrompt
        } else {
            Action::AccessService
        }
    }

    /// Drops every string [`Extracted::push`] added (JSON that turned out invalid midway).
    fn forget_strings(&mut self) {
        self.text.clear();
        self.segments.clear();
        self.prompt_chars = 0;
    }

    /// The whole body as one prompt segment: plain text, or JSON that did not parse.
    fn push_body_as_text(&mut self, body: &[u8]) {
        self.format = "text";
        let text = decode::as_text(body).unwrap_or_else(|| String::from_utf8_lossy(body));
        self.push(&text, Origin::Body(0..body.len()), true);
    }

    /// Takes `bytes` out of the decoding budget; `false` (and the inspection marked truncated)
    /// when the budget cannot cover them.
    fn spend(&mut self, bytes: usize) -> bool {
        if bytes > self.budget {
            self.truncated = true;
            return false;
        }
        self.budget -= bytes;
        true
    }

    /// Adds decoded copies of the segments from `first` on: invisible characters removed,
    /// percent-escapes undone, base64 runs that decode to text. A copy is expanded again once
    /// (base64 in base64), all within the budget.
    fn expand(&mut self, first: usize) {
        const MAX_DEPTH: u8 = 2;
        let mut depths: Vec<u8> = vec![0; self.segments.len().saturating_sub(first)];
        let mut index = first;
        while index < self.segments.len() {
            let depth = depths[index - first];
            index += 1;
            if depth >= MAX_DEPTH {
                continue;
            }
            let segment = &self.segments[index - 1];
            let origin = Origin::Decoded(Box::new(segment.origin.clone()));
            let value = &self.text[segment.range.clone()];
            let mut copies: Vec<String> = Vec::new();
            copies.extend(decode::strip_invisible(value));
            copies.extend(decode::percent_decode(value));
            for run in decode::base64_runs(value, decode::MIN_BASE64_RUN) {
                let Some(bytes) = decode::base64_decode(&value[run], self.budget) else {
                    continue;
                };
                if let Some(text) = decode::as_text(&bytes) {
                    copies.push(text.into_owned());
                }
            }
            for copy in copies {
                if !self.spend(copy.len()) {
                    return;
                }
                let before = self.segments.len();
                self.push(&copy, origin.clone(), false);
                if self.segments.len() > before {
                    depths.push(depth + 1);
                }
            }
        }
    }

    /// Expands the body's text, then appends the secrets-only strings (expanded too).
    fn finish(&mut self, outside_body: &[(Origin, &str)]) {
        self.expand(0);
        self.secrets_only_from = self.text.len();
        let first = self.segments.len();
        for (origin, value) in outside_body {
            self.push(value, origin.clone(), false);
        }
        self.expand(first);
        for (value, origin) in std::mem::take(&mut self.payloads) {
            self.push(&value, origin, false);
        }
    }

    fn push(&mut self, value: &str, origin: Origin, prompt: bool) {
        if value.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        let start = self.text.len();
        self.text.push_str(value);
        if prompt {
            self.prompt_chars += value.chars().count();
        }
        self.segments.push(Segment {
            range: start..self.text.len(),
            origin,
            prompt,
        });
    }
}

/// Key paths (array positions as `*`) whose strings are the prompt proper, with the provider
/// shape they identify. OpenAI-compatible APIs (Mistral, Groq, DeepSeek, Azure) share the first.
const PROMPT_PATHS: &[(&str, &str)] = &[
    ("messages.*.content", "openai_chat"),
    ("messages.*.content.*.text", "openai_chat"),
    ("prompt", "openai_completions"),
    ("prompt.*", "openai_completions"),
    ("input", "openai_responses"),
    ("input.*", "openai_responses"),
    ("input.*.content", "openai_responses"),
    ("input.*.content.*.text", "openai_responses"),
    ("instructions", "openai_responses"),
    ("system", "anthropic_messages"),
    ("system.*.text", "anthropic_messages"),
    ("messages.*.content.*.content", "anthropic_messages"),
    ("messages.*.content.*.content.*.text", "anthropic_messages"),
    ("contents.*.parts.*.text", "gemini"),
    ("systemInstruction.parts.*.text", "gemini"),
    ("system_instruction.parts.*.text", "gemini"),
    ("messages.*.content.parts.*", "chatgpt_web"),
    ("message", "cohere_chat"),
    ("preamble", "cohere_chat"),
    ("chat_history.*.message", "cohere_chat"),
    ("query", "search"),
    ("inputs", "huggingface"),
];

/// Strings this long made only of base64 characters are payloads (images, audio): decoded and
/// inspected when they decode to text.
const BINARY_STRING_MIN: usize = 256;

/// Reads the prompt out of `body`. `content_type` and `content_encoding` are the request's
/// headers; `limit` bounds the decoded size; `truncated` says the proxy cut the body already.
pub fn extract(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    limit: usize,
    truncated: bool,
) -> Extracted {
    extract_request(content_type, content_encoding, body, limit, truncated, &[])
}

/// [`extract`], plus strings from outside the body (the URL query, header values) inspected for
/// secrets only.
pub fn extract_request(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    limit: usize,
    truncated: bool,
    outside_body: &[(Origin, &str)],
) -> Extracted {
    let mut out = Extracted {
        truncated,
        format: "empty",
        budget: limit,
        ..Extracted::default()
    };
    if !body.is_empty() {
        extract_body(&mut out, content_type, content_encoding, body, limit);
    }
    out.finish(outside_body);
    out
}

fn extract_body(
    out: &mut Extracted,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    limit: usize,
) {
    let mut decoded = match content_encoding
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
    {
        None => None,
        Some(encoding) => match decode::content_decode(encoding, body, limit) {
            Ok((bytes, cut)) => {
                out.truncated |= cut;
                Some(bytes)
            }
            Err(problem) => {
                // What cannot be read as labelled is refused, never forwarded unread: the
                // origin may decode it differently (or not at all) and read the plain text.
                out.problem = Some(format!("{problem}; the body was not inspected"));
                out.format = "undecodable";
                out.unreadable = true;
                return;
            }
        },
    };
    // UTF-16 text is inspected as the UTF-8 it spells; masks cannot be written back into it.
    if let Some(text) = decode::utf16(decoded.as_deref().unwrap_or(body)) {
        decoded = Some(text.into_bytes());
    }
    let decoded = decoded.map(Bytes::from);
    extract_content(out, content_type, decoded.as_deref().unwrap_or(body), limit);
    out.decoded = decoded;
}

/// Reads `body` by what it is, whatever `Content-Type` says: JSON and multipart are recognised
/// by their first bytes, text by its bytes; the label only picks forms, and a multipart boundary.
fn extract_content(out: &mut Extracted, content_type: Option<&str>, body: &[u8], limit: usize) {
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if mime.contains("json") || matches!(first, Some(b'{' | b'[')) {
        extract_json(out, body);
    } else if let Some(boundary) = multipart_boundary(content_type, body) {
        extract_multipart(out, &boundary, body, limit);
    } else if mime == "application/x-www-form-urlencoded" {
        out.format = "form";
        for (name, value) in form_urlencoded::parse(body) {
            // A name is as free as a value: `sk-...=1` carries the key in the name.
            out.push(&name, Origin::Form(name.clone().into_owned()), false);
            out.push(&value, Origin::Form(name.into_owned()), true);
        }
    } else if let Some(text) = decode::as_text(body) {
        out.format = "text";
        out.push(&text, Origin::Body(0..body.len()), true);
    } else {
        out.format = "binary";
    }
}

/// The boundary of a multipart body: the label's when the body uses it, else the one the body
/// opens with (`--boundary` then a part header), whatever the label says.
fn multipart_boundary(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let labelled = content_type
        .and_then(|c| multer::parse_boundary(c).ok())
        .filter(|b| memchr::memmem::find(body, format!("--{b}").as_bytes()).is_some());
    if labelled.is_some() {
        return labelled;
    }
    let start = body.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let body = &body[start..];
    let line_end = memchr::memchr(b'\n', body)?;
    let line = body[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&body[..line_end]);
    let boundary = line.strip_prefix(b"--")?;
    let next = &body[line_end + 1..];
    let plausible = (1..=70).contains(&boundary.len())
        && boundary.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
        && next.len() >= 8
        && next[..8].eq_ignore_ascii_case(b"content-");
    plausible.then(|| String::from_utf8_lossy(boundary).into_owned())
}

/// Reads a JSON body as serde parses it, without building a tree first: each string leaf is
/// pushed as it is read (the tree's many small allocations cost more time than instructions).
fn extract_json(out: &mut Extracted, body: &[u8]) {
    use serde::de::DeserializeSeed;
    out.format = "json";
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut walk = JsonWalk {
        out: &mut *out,
        path: String::new(),
        pointer: String::new(),
    };
    let walked = Node(&mut walk)
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    if let Err(error) = walked {
        // What was read before the error is dropped: the whole body is inspected as text.
        out.forget_strings();
        // A prefix cut at the cap is not valid JSON; inspect it as text rather than not at all.
        if !out.truncated {
            out.problem = Some(format!(
                "body is not valid JSON ({error}); inspected as text"
            ));
        }
        out.push_body_as_text(body);
    }
}

/// Where the JSON walk is: the key path (array positions as `*`) that names prompt fields, and
/// the RFC 6901 pointer recorded as each string's origin.
struct JsonWalk<'o> {
    out: &'o mut Extracted,
    path: String,
    pointer: String,
}

impl JsonWalk<'_> {
    fn string(&mut self, s: &str) {
        if let Some(payload) = encoded_payload(s) {
            if self.payload(payload) {
                return;
            }
            // Not base64 after all (`data:...;base64,` then plain text): read as it is.
        }
        let provider = PROMPT_PATHS
            .iter()
            .find(|(p, _)| *p == self.path.as_str())
            .map(|(_, f)| *f);
        if let Some(provider) = provider {
            // Several providers share the OpenAI message paths; a path only one of them uses
            // (Anthropic's `system`, Gemini's `contents`) is the better name.
            if self.out.format == "json" || self.out.format.starts_with("openai_") {
                self.out.format = provider;
            }
        }
        self.out
            .push(s, Origin::Json(self.pointer.clone()), provider.is_some());
    }

    /// A base64 payload (an image, a file): decoded within the budget and inspected when it
    /// decodes to text; its raw characters are scanned for secrets too, since a token pasted
    /// where a payload belongs decodes to noise. `false` when it is not base64.
    fn payload(&mut self, payload: &str) -> bool {
        let origin = || Origin::Json(self.pointer.clone());
        let Some(bytes) = decode::base64_decode(payload, self.out.budget) else {
            if !decode::is_base64_text(payload) {
                return false;
            }
            // Over the budget: the raw characters are still scanned, the inspection is partial.
            self.out.truncated = true;
            self.out.payloads.push((payload.to_owned(), origin()));
            return true;
        };
        self.out.spend(bytes.len());
        if let Some(text) = decode::as_text(&bytes) {
            self.out
                .push(&text, Origin::Decoded(Box::new(origin())), false);
        }
        self.out.payloads.push((payload.to_owned(), origin()));
        true
    }

    /// Steps into array position `index`; returns where to step back to.
    fn enter_index(&mut self, index: usize) -> (usize, usize) {
        let back = (self.path.len(), self.pointer.len());
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push('*');
        self.pointer.push('/');
        let _ = write!(self.pointer, "{index}");
        back
    }

    /// Steps into object member `key`; returns where to step back to.
    fn enter_key(&mut self, key: &str) -> (usize, usize) {
        let back = (self.path.len(), self.pointer.len());
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        self.pointer.push('/');
        // JSON pointer escaping (RFC 6901), paid only by keys that need it.
        if key.contains(['~', '/']) {
            self.pointer
                .push_str(&key.replace('~', "~0").replace('/', "~1"));
        } else {
            self.pointer.push_str(key);
        }
        back
    }

    fn leave(&mut self, (path, pointer): (usize, usize)) {
        self.path.truncate(path);
        self.pointer.truncate(pointer);
    }
}

/// One JSON value of the walk.
struct Node<'w, 'o>(&'w mut JsonWalk<'o>);

impl<'de> serde::de::DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.string(s);
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let walk = self.0;
        for index in 0.. {
            let back = walk.enter_index(index);
            let more = items.next_element_seed(Node(&mut *walk))?.is_some();
            walk.leave(back);
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        let walk = self.0;
        while let Some(back) = members.next_key_seed(Key(&mut *walk))? {
            members.next_value_seed(Node(&mut *walk))?;
            walk.leave(back);
        }
        Ok(())
    }
}

/// An object key of the walk: stepped into as it is read, with no `String` of its own.
struct Key<'w, 'o>(&'w mut JsonWalk<'o>);

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_, '_> {
    type Value = (usize, usize);

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<(usize, usize), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key<'_, '_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<(usize, usize), E> {
        Ok(self.0.enter_key(key))
    }
}

/// The base64 part of a string that is a payload rather than text: a `data:` URL's, or a long
/// string of base64 characters.
fn encoded_payload(s: &str) -> Option<&str> {
    if let Some(url) = s.strip_prefix("data:") {
        return url.split_once(";base64,").map(|(_, payload)| payload);
    }
    (s.len() >= BINARY_STRING_MIN && decode::is_base64_text(s)).then_some(s)
}

fn is_text_like(mime: &str) -> bool {
    matches!(
        mime,
        "application/xml"
            | "application/x-yaml"
            | "application/yaml"
            | "application/javascript"
            | "application/x-sh"
            | "application/sql"
            | "application/csv"
            | "application/x-ndjson"
    ) || mime.ends_with("+xml")
        || mime.ends_with("+json")
}

fn is_text_file(content_type: Option<&str>, name: &str) -> bool {
    let by_type = content_type
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| t.starts_with("text/") || t.contains("json") || is_text_like(&t));
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    by_type
        || matches!(
            extension.as_str(),
            "txt"
                | "md"
                | "csv"
                | "tsv"
                | "json"
                | "yaml"
                | "yml"
                | "xml"
                | "log"
                | "py"
                | "rs"
                | "js"
                | "ts"
                | "java"
                | "go"
                | "c"
                | "h"
                | "cpp"
                | "sql"
                | "sh"
                | "env"
                | "ini"
                | "toml"
                | "conf"
                | "pem"
                | "key"
                | "html"
        )
}

fn extract_multipart(out: &mut Extracted, boundary: &str, body: &[u8], limit: usize) {
    out.format = "multipart";
    let stream = futures::stream::once(futures::future::ready(Ok::<Bytes, std::io::Error>(
        Bytes::copy_from_slice(body),
    )));
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit as u64));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    // The whole body is in memory, so every future here is ready at once: no I/O, no waiting.
    let failed = futures::executor::block_on(async {
        let mut index = 0;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => return false,
                Err(error) => {
                    if !out.truncated {
                        out.problem = Some(format!("multipart body ends early: {error}"));
                    }
                    return true;
                }
            };
            let file_name = field.file_name().map(str::to_owned);
            let part_type = field.content_type().map(|m| m.to_string());
            let bytes = match field.bytes().await {
                Ok(bytes) => bytes,
                Err(error) => {
                    if !out.truncated {
                        out.problem = Some(format!("multipart part {index} unreadable: {error}"));
                    }
                    return true;
                }
            };
            // A part is read by its bytes too: a "png" that is text is inspected as text.
            let text = decode::as_text(&bytes);
            match file_name {
                Some(name) => {
                    let inspected = text.is_some() || is_text_file(part_type.as_deref(), &name);
                    if inspected {
                        let text = text.unwrap_or_else(|| String::from_utf8_lossy(&bytes));
                        out.push(&text, Origin::Part(index), true);
                    }
                    out.files.push(FileUpload {
                        name,
                        content_type: part_type,
                        size: bytes.len(),
                        inspected,
                    });
                }
                None => {
                    let text = text.unwrap_or_else(|| String::from_utf8_lossy(&bytes));
                    out.push(&text, Origin::Part(index), true);
                }
            }
            index += 1;
        }
    });
    if failed {
        // The part that broke the parser (or was cut at the cap) is still read, as text.
        let delimiter = format!("--{boundary}");
        let tail =
            memchr::memmem::rfind(body, delimiter.as_bytes()).map_or(0, |at| at + delimiter.len());
        let rest = &body[tail..];
        let text = decode::as_text(rest).unwrap_or_else(|| String::from_utf8_lossy(rest));
        out.push(&text, Origin::Body(tail..body.len()), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMIT: usize = 1 << 20;

    fn json(body: &str) -> Extracted {
        extract(
            Some("application/json"),
            None,
            body.as_bytes(),
            LIMIT,
            false,
        )
    }

    #[test]
    fn openai_chat_messages_are_the_prompt() {
        let out = json(
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#,
        );
        assert_eq!(out.format, "openai_chat");
        assert_eq!(out.prompt_chars, "be brief".len() + "hello".len());
        assert!(out.text.contains("be brief") && out.text.contains("hello"));
        assert!(!out.text.contains("base64"));
        assert_eq!(out.action(), Action::SendPrompt);
        let hello = out
            .segments
            .iter()
            .find(|s| &out.text[s.range.clone()] == "hello")
            .unwrap();
        assert_eq!(
            hello.origin,
            Origin::Json("/messages/1/content/0/text".into())
        );
    }

    #[test]
    fn json_pointers_escape_tilde_and_slash_in_keys() {
        let out = json(r#"{"a/b":{"c~d":["x","y"]}}"#);
        let origins: Vec<&Origin> = out.segments.iter().map(|s| &s.origin).collect();
        assert_eq!(
            origins,
            [
                &Origin::Json("/a~1b/c~0d/0".into()),
                &Origin::Json("/a~1b/c~0d/1".into())
            ]
        );
    }

    #[test]
    fn provider_shapes_are_recognised() {
        assert_eq!(json(r#"{"system":"s","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#).format, "anthropic_messages");
        assert_eq!(
            json(r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#).format,
            "gemini"
        );
        assert_eq!(
            json(r#"{"input":"hi","model":"gpt-4.1"}"#).format,
            "openai_responses"
        );
        assert_eq!(json(r#"{"action":"next","messages":[{"content":{"content_type":"text","parts":["hi"]}}]}"#).format, "chatgpt_web");
        let generic = json(r#"{"anything":{"deep":["a secret here"]}}"#);
        assert_eq!(generic.format, "json");
        assert_eq!(generic.prompt_chars, 0);
        assert!(
            generic.text.contains("a secret here"),
            "every string leaf is inspected"
        );
    }

    #[test]
    fn forms_and_plain_text() {
        let form = extract(
            Some("application/x-www-form-urlencoded"),
            None,
            b"q=hello+world&x=1",
            LIMIT,
            false,
        );
        assert_eq!(form.format, "form");
        assert!(form.text.contains("hello world"));
        let text = extract(Some("text/plain"), None, b"just text", LIMIT, false);
        assert_eq!((text.format, text.text.as_str()), ("text", "just text"));
        let binary = extract(Some("image/png"), None, b"\x89PNG", LIMIT, false);
        assert_eq!(binary.format, "binary");
        assert_eq!(binary.action(), Action::AccessService);
    }

    #[test]
    fn multipart_reports_files_and_inspects_text_ones() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\nSSN 123-45-6789\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"img\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x01\x02\x03\r\n\
                    --XyZ--\r\n";
        let out = extract(
            Some("multipart/form-data; boundary=XyZ"),
            None,
            body.as_bytes(),
            LIMIT,
            false,
        );
        assert_eq!(out.action(), Action::UploadFile);
        assert_eq!(out.files.len(), 2);
        assert_eq!(out.files[0].name, "notes.txt");
        assert!(out.files[0].inspected);
        assert!(!out.files[1].inspected);
        assert_eq!(out.files[1].size, 3);
        assert!(out.text.contains("SSN 123-45-6789"));
        assert!(out.problem.is_none(), "{:?}", out.problem);
    }

    #[test]
    fn encodings_are_decoded_within_the_limit() {
        let raw = br#"{"messages":[{"role":"user","content":"compressed prompt"}]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(raw).unwrap();
        let gz = gz.finish().unwrap();
        let out = extract(Some("application/json"), Some("gzip"), &gz, LIMIT, false);
        assert!(out.text.contains("compressed prompt"));
        assert_eq!(out.decoded.as_deref(), Some(&raw[..]));

        let zst = zstd::encode_all(&raw[..], 3).unwrap();
        assert!(
            extract(Some("application/json"), Some("zstd"), &zst, LIMIT, false)
                .text
                .contains("compressed prompt")
        );

        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(raw)
            .unwrap();
        assert!(
            extract(Some("application/json"), Some("br"), &br, LIMIT, false)
                .text
                .contains("compressed prompt")
        );

        let bomb = zstd::encode_all(&vec![b'a'; 100_000][..], 3).unwrap();
        let out = extract(Some("text/plain"), Some("zstd"), &bomb, 1000, false);
        assert!(out.truncated);
        assert_eq!(out.text.len(), 1000);

        let bad = extract(
            Some("application/json"),
            Some("gzip"),
            b"not gzip",
            LIMIT,
            false,
        );
        assert!(bad.problem.unwrap().contains("gzip"));
        let unknown = extract(
            Some("application/json"),
            Some("compress"),
            b"x",
            LIMIT,
            false,
        );
        assert!(unknown.problem.unwrap().contains("compress"));
    }

    #[test]
    fn a_truncated_json_prefix_is_inspected_as_text() {
        let out = extract(
            Some("application/json"),
            None,
            br#"{"messages":[{"content":"card 4111"#,
            LIMIT,
            true,
        );
        assert_eq!(out.format, "text");
        assert!(out.text.contains("card 4111"));
        assert!(out.problem.is_none());
    }

    #[test]
    fn json_broken_after_its_first_strings_is_inspected_once_as_text() {
        let body = r#"{"messages":[{"role":"user","content":"hello"}], "model": gpt}"#;
        let out = json(body);
        assert_eq!(out.format, "text");
        assert_eq!(
            out.text, body,
            "the strings read before the error are not kept twice"
        );
        assert_eq!(out.segments.len(), 1);
        assert_eq!(out.segments[0].origin, Origin::Body(0..body.len()));
        assert_eq!(out.prompt_chars, body.chars().count());
        assert!(out
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("not valid JSON")));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn check_shape(out: &Extracted, body_len: usize, limit: usize) -> Result<(), TestCaseError> {
        let mut previous_end = 0;
        for segment in &out.segments {
            prop_assert!(
                segment.range.start >= previous_end && segment.range.end <= out.text.len()
            );
            prop_assert!(
                out.text.get(segment.range.clone()).is_some(),
                "range off char boundaries"
            );
            previous_end = segment.range.end;
        }
        prop_assert!(out.secrets_only_from <= out.text.len());
        prop_assert!(out
            .decoded
            .as_ref()
            .is_none_or(|d| d.len() <= 2 * limit.max(body_len) + 2));
        prop_assert!(out.text.len() <= 5 * (limit + body_len) + out.segments.len());
        Ok(())
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z ]{1,24}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z/~]{1,8}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn leaves<'v>(value: &'v serde_json::Value, found: &mut Vec<&'v str>) {
        match value {
            serde_json::Value::String(s) => found.push(s),
            serde_json::Value::Array(items) => items.iter().for_each(|v| leaves(v, found)),
            serde_json::Value::Object(members) => members.values().for_each(|v| leaves(v, found)),
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn any_body_under_any_label_is_read_without_panic(
            body in proptest::collection::vec(any::<u8>(), 0..1500),
            content_type in proptest::option::of(
                "(application/json|text/plain|image/png|application/octet-stream|application/x-www-form-urlencoded|multipart/form-data; boundary=[a-z]{1,8})"
            ),
            encoding in proptest::option::of("(gzip|br|zstd|deflate|identity|x-foo)"),
            limit in 1usize..4096,
            truncated in any::<bool>(),
        ) {
            let out = extract(content_type.as_deref(), encoding.as_deref(), &body, limit, truncated);
            check_shape(&out, body.len(), limit)?;
            prop_assert_eq!(out.unreadable, out.format == "undecodable");
        }

        #[test]
        fn every_json_string_is_inspected_whatever_the_label(
            value in json_value(),
            content_type in proptest::option::of("(application/json|image/png|application/octet-stream)"),
        ) {
            let body = value.to_string();
            let out = extract(content_type.as_deref(), None, body.as_bytes(), 1 << 20, false);
            check_shape(&out, body.len(), 1 << 20)?;
            let mut strings = Vec::new();
            leaves(&value, &mut strings);
            for s in strings {
                prop_assert!(out.text.contains(s), "{:?} not inspected", s);
            }
        }

        #[test]
        fn every_multipart_part_is_inspected_whatever_the_label(
            boundary in "[A-Za-z0-9]{1,30}",
            parts in proptest::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9 ,.]{1,64}", any::<bool>()), 1..5),
            label in 0..3u8,
        ) {
            let mut body = String::new();
            for (name, content, file) in &parts {
                body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""));
                if *file {
                    body.push_str(&format!("; filename=\"{name}.png\"\r\nContent-Type: image/png"));
                }
                body.push_str(&format!("\r\n\r\n{content}\r\n"));
            }
            body.push_str(&format!("--{boundary}--\r\n"));
            let content_type = match label {
                0 => format!("multipart/form-data; boundary={boundary}"),
                1 => "application/octet-stream".to_owned(),
                _ => "multipart/form-data; boundary=wrong".to_owned(),
            };
            let out = extract(Some(&content_type), None, body.as_bytes(), 1 << 20, false);
            check_shape(&out, body.len(), 1 << 20)?;
            prop_assert_eq!(out.format, "multipart");
            for (_, content, _) in &parts {
                prop_assert!(out.text.contains(content.as_str()), "{:?} not inspected", content);
            }
        }
    }
}
