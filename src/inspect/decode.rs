//! Decoders that turn what a client sent into text the detectors can read: `Content-Encoding`,
//! UTF-16, base64 runs, percent-encoding and invisible characters that split a token.
//!
//! A body is never trusted by its label: what it claims to be only tells which decoder to try,
//! and what fails to decode as labelled is reported so the gateway refuses it rather than
//! forwarding it unread. Every decoder here is bounded by the caller's byte budget and must never
//! panic on hostile input.

use std::borrow::Cow;
use std::io::Read;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// Shortest run of base64 characters worth decoding in free text: a 16-byte secret encodes to 22
/// characters, and shorter runs are mostly ordinary words and identifiers.
pub const MIN_BASE64_RUN: usize = 20;

/// Characters that render as nothing: a key split by one of them reads the same to a human and
/// to the service, but not to a detector.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}'
    )
}

/// `text` without its invisible characters, when it has any.
pub fn strip_invisible(text: &str) -> Option<String> {
    text.contains(is_invisible)
        .then(|| text.chars().filter(|c| !is_invisible(*c)).collect())
}

/// `text` with its `%XX` escapes undone, when it has any that decode to valid UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let escaped = |i: usize| {
        bytes.get(i) == Some(&b'%')
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    };
    if !(0..bytes.len()).any(escaped) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if escaped(i) {
            out.push((hex_value(bytes[i + 1]) << 4) | hex_value(bytes[i + 2]));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Whether every byte of `s` is a base64 character (either alphabet, padding included).
pub fn is_base64_text(s: &str) -> bool {
    s.bytes().all(|b| is_base64_byte(b) || b == b'=')
}

/// Byte ranges of the runs of base64 characters in `text` at least `min` long (trailing `=`
/// padding included).
pub fn base64_runs(text: &str, min: usize) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_base64_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_base64_byte(bytes[i]) {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == b'=' {
            i += 1;
        }
        if i - start >= min {
            runs.push(start..i);
        }
    }
    runs
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Decodes `run` (standard or URL-safe alphabet, padding optional, ASCII whitespace ignored).
/// `None` when it is not base64 or would decode to more than `budget` bytes.
pub fn base64_decode(run: &str, budget: usize) -> Option<Vec<u8>> {
    let compact: Cow<'_, str> = if run.bytes().any(|b| b.is_ascii_whitespace()) {
        Cow::Owned(run.chars().filter(|c| !c.is_ascii_whitespace()).collect())
    } else {
        Cow::Borrowed(run)
    };
    let mut digits = compact.trim_end_matches('=');
    // A lone trailing character carries fewer than 8 bits: not part of any byte.
    if digits.len() % 4 == 1 {
        digits = &digits[..digits.len() - 1];
    }
    if digits.is_empty() || digits.len() * 3 / 4 > budget {
        return None;
    }
    let engine = if digits.contains(['-', '_']) {
        &URL_SAFE
    } else {
        &STANDARD
    };
    engine.decode(digits).ok()
}

/// `bytes` as text when they read as text: UTF-16 (by byte-order mark, or the NUL pattern of
/// ASCII text) is transcoded; otherwise mostly valid, mostly printable UTF-8 is text.
pub fn as_text(bytes: &[u8]) -> Option<Cow<'_, str>> {
    if let Some(text) = utf16(bytes) {
        return Some(Cow::Owned(text));
    }
    looks_like_text(bytes).then(|| String::from_utf8_lossy(bytes))
}

/// At most one byte in this many may be a control character or invalid UTF-8 in text: a few
/// stray bytes in front of a prompt must not make it "binary" and skipped.
const TEXT_NOISE_RATIO: usize = 10;

/// Mostly valid UTF-8 with few control characters.
pub fn looks_like_text(bytes: &[u8]) -> bool {
    let mut noise = 0;
    for chunk in bytes.utf8_chunks() {
        noise += chunk.invalid().len();
        noise += chunk
            .valid()
            .bytes()
            .filter(|b| b.is_ascii_control() && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
            .count();
    }
    noise * TEXT_NOISE_RATIO <= bytes.len()
}

/// UTF-16 text transcoded to UTF-8: by byte-order mark, or without one when the first bytes
/// alternate ASCII and NUL the way UTF-16 ASCII text does.
pub fn utf16(bytes: &[u8]) -> Option<String> {
    let (little_endian, body) = match bytes {
        [0xFF, 0xFE, rest @ ..] => (true, rest),
        [0xFE, 0xFF, rest @ ..] => (false, rest),
        _ => {
            let sample = &bytes[..bytes.len().min(64)];
            if sample.len() < 4 {
                return None;
            }
            let pairs = sample.chunks_exact(2);
            let le = pairs.clone().all(|p| p[1] == 0 && p[0] != 0);
            let be = pairs.clone().all(|p| p[0] == 0 && p[1] != 0);
            match (le, be) {
                (true, _) => (true, bytes),
                (_, true) => (false, bytes),
                _ => return None,
            }
        }
    };
    let units = body.chunks_exact(2).map(|p| {
        if little_endian {
            u16::from_le_bytes([p[0], p[1]])
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    Some(
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    )
}

/// Undoes `Content-Encoding` (codings listed in the order applied) up to `limit` bytes.
/// Returns the bytes and whether they were cut at the limit; an unknown coding or a body that
/// does not decode as labelled is an error (the body cannot be inspected).
pub fn content_decode(
    encoding: &str,
    body: &[u8],
    limit: usize,
) -> Result<(Vec<u8>, bool), String> {
    let mut data = body.to_vec();
    let mut cut = false;
    for coding in encoding.split(',').rev() {
        let coding = coding.trim().to_ascii_lowercase();
        let reader: Box<dyn Read + '_> = match coding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(data.as_slice())),
            "deflate" => Box::new(flate2::read::ZlibDecoder::new(data.as_slice())),
            "br" => Box::new(brotli::Decompressor::new(data.as_slice(), 8192)),
            "zstd" => Box::new(
                zstd::stream::read::Decoder::new(data.as_slice())
                    .map_err(|e| format!("zstd body could not be decoded: {e}"))?,
            ),
            "identity" | "" => continue,
            other => {
                let shown: String = other.chars().take(32).filter(|c| !c.is_control()).collect();
                return Err(format!("unsupported Content-Encoding {shown:?}"));
            }
        };
        let mut decoded = Vec::new();
        let read = reader.take(limit as u64 + 1).read_to_end(&mut decoded);
        if let Err(error) = read {
            // A body cut at the cap ends mid-stream: keep what decoded.
            if decoded.is_empty() {
                return Err(format!("{coding} body could not be decoded: {error}"));
            }
            cut = true;
        }
        if decoded.len() > limit {
            decoded.truncate(limit);
            cut = true;
        }
        data = decoded;
    }
    Ok((data, cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_stripped() {
        let split = "sk-\u{200B}proj\u{00AD}-ab\u{FEFF}c\u{2060}d";
        assert_eq!(strip_invisible(split).as_deref(), Some("sk-proj-abcd"));
        assert_eq!(strip_invisible("plain text"), None);
    }

    #[test]
    fn percent_escapes_are_undone_only_when_present() {
        assert_eq!(
            percent_decode("sk%2Dproj%2dabc").as_deref(),
            Some("sk-proj-abc")
        );
        assert_eq!(percent_decode("100% sure"), None);
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%ff%fe"), None, "not UTF-8");
    }

    #[test]
    fn base64_runs_decode_in_either_alphabet_with_or_without_padding() {
        let text = "key: c2stcHJvai1BQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWjAxMjM0NTY3ODk= end";
        let runs = base64_runs(text, MIN_BASE64_RUN);
        assert_eq!(runs.len(), 1);
        let decoded = base64_decode(&text[runs[0].clone()], 1 << 20).unwrap();
        assert!(decoded.starts_with(b"sk-proj-ABCDEF"));
        let unpadded = base64_decode("aGVsbG8gd29ybGQ", 100).unwrap();
        assert_eq!(unpadded, b"hello world");
        assert_eq!(base64_decode("P-8_", 100).unwrap(), [0x3f, 0xef, 0x3f]);
        assert_eq!(
            base64_decode("aGVs\r\nbG8=", 100).unwrap(),
            b"hello",
            "MIME line breaks"
        );
        assert!(base64_decode("aGVsbG8gd29ybGQ", 4).is_none(), "budget");
        assert!(base64_decode("not base64!", 100).is_none());
        assert!(base64_runs("short words only here", MIN_BASE64_RUN).is_empty());
    }

    #[test]
    fn utf16_is_recognised_by_bom_or_nul_pattern() {
        let le: Vec<u8> = "hi sk-proj"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(utf16(&le).as_deref(), Some("hi sk-proj"));
        let mut be = vec![0xFE, 0xFF];
        be.extend("hello".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(utf16(&be).as_deref(), Some("hello"));
        assert_eq!(utf16(b"plain ascii"), None);
        assert_eq!(utf16(&[0xFF, 0xFE, 0x41]).as_deref(), Some(""), "odd tail");
    }

    #[test]
    fn text_is_told_from_binary_by_content() {
        assert!(looks_like_text(b"{\"a\": \"b\"}\n"));
        assert!(looks_like_text(
            b"\x89PNG\r\n\x1a\n then a long prompt that is clearly text and nothing else at all"
        ));
        assert!(!looks_like_text(&[0u8, 1, 2, 3, 0xff, 0xfe, 0x80, 7]));
        assert!(as_text(&[0xFF, 0xFE, b'h', 0, b'i', 0]).is_some_and(|t| t == "hi"));
    }

    #[test]
    fn unknown_codings_and_mislabelled_bodies_are_errors() {
        assert!(content_decode("x-foo", b"x", 100)
            .unwrap_err()
            .contains("x-foo"));
        assert!(content_decode("gzip", b"{\"plain\": true}", 100).is_err());
        assert_eq!(
            content_decode("identity", b"abc", 100).unwrap(),
            (b"abc".to_vec(), false)
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn content_decoding_never_panics_and_keeps_the_limit(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            encoding in "(gzip|x-gzip|deflate|br|zstd|identity|x-foo| |,){0,3}",
            limit in 0usize..4096,
        ) {
            if let Ok((decoded, cut)) = content_decode(&encoding, &body, limit) {
                let decoding = encoding.split(',').any(|c| !matches!(c.trim(), "" | "identity"));
                prop_assert!(!decoding || decoded.len() <= limit);
                prop_assert!(!cut || decoding);
            }
        }

        #[test]
        fn compressed_text_round_trips(text in "\\PC{0,300}", limit in 0usize..1024) {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes()).unwrap();
            let (decoded, cut) = content_decode("gzip", &gz.finish().unwrap(), limit).unwrap();
            let kept = text.len().min(limit);
            prop_assert_eq!(&decoded[..], &text.as_bytes()[..kept]);
            prop_assert_eq!(cut, text.len() > limit);
        }

        #[test]
        fn base64_round_trips_in_both_alphabets(bytes in proptest::collection::vec(any::<u8>(), 1..300)) {
            use base64::engine::general_purpose::{STANDARD as STD, URL_SAFE_NO_PAD};
            for encoded in [STD.encode(&bytes), URL_SAFE_NO_PAD.encode(&bytes)] {
                prop_assert_eq!(base64_decode(&encoded, bytes.len()), Some(bytes.clone()));
                prop_assert_eq!(base64_decode(&encoded, bytes.len() - 1), None, "over budget");
            }
        }

        #[test]
        fn text_decoders_never_panic_and_stay_in_bounds(text in "\\PC{0,200}|[A-Za-z0-9+/=%_-]{0,200}", budget in 0usize..512) {
            for run in base64_runs(&text, MIN_BASE64_RUN) {
                prop_assert!(run.len() >= MIN_BASE64_RUN);
                let value = text.get(run.clone());
                prop_assert!(value.is_some(), "run {:?} is not on char boundaries", run);
                if let Some(decoded) = base64_decode(value.unwrap_or_default(), budget) {
                    prop_assert!(decoded.len() <= budget);
                }
            }
            if let Some(decoded) = percent_decode(&text) {
                prop_assert!(decoded.len() <= text.len());
            }
            if let Some(stripped) = strip_invisible(&text) {
                prop_assert!(!stripped.contains(is_invisible));
            }
        }

        #[test]
        fn byte_sniffing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Some(text) = as_text(&bytes) {
                prop_assert!(text.len() <= bytes.len() * 3 + 3);
            }
        }

        #[test]
        fn utf16_text_is_read_back(text in "[ -~]{2,100}", big_endian in any::<bool>()) {
            let bytes: Vec<u8> = text
                .encode_utf16()
                .flat_map(|u| if big_endian { u.to_be_bytes() } else { u.to_le_bytes() })
                .collect();
            prop_assert_eq!(utf16(&bytes), Some(text));
        }
    }
}
