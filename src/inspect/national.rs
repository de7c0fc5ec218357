//! National identifiers validated by their real check algorithms (issue 36, item 3).
//!
//! One pass finds chunks that start at a word boundary and hold a digit: up to eight
//! alphanumeric groups joined by single separators, copied into a fixed buffer (no allocation).
//! Each run of whole groups is tried against the printed shapes of every identifier and then
//! against its checksum. Bare digit runs of 9 to 12 digits collide with order numbers and phone
//! numbers (a one-digit mod-11 check passes one number in eleven), so those identifiers are only
//! reported next to one of their context words; formats with a letter layout or two check digits
//! are reported without one. Crypto wallet addresses (Bitcoin base58check and bech32, Ethereum
//! EIP-55) ride on the same pass: a digit-bearing token of their length is checked whole.

use super::detect::is_word_byte;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind};

/// Names follow Presidio's recognizers so existing DLP rule sets map over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NationalId {
    UkNhs,
    UkNino,
    EsNif,
    EsNie,
    ItFiscalCode,
    NlBsn,
    PlPesel,
    InAadhaar,
    InPan,
    BrCpf,
    FiHetu,
    SgNricFin,
    AuTfn,
    AuMedicare,
    /// A Bitcoin address: not national, but found by the same pass (Presidio's `CRYPTO`).
    Crypto,
}

impl NationalId {
    pub fn as_str(self) -> &'static str {
        match self {
            NationalId::UkNhs => "UK_NHS",
            NationalId::UkNino => "UK_NINO",
            NationalId::EsNif => "ES_NIF",
            NationalId::EsNie => "ES_NIE",
            NationalId::ItFiscalCode => "IT_FISCAL_CODE",
            NationalId::NlBsn => "NL_BSN",
            NationalId::PlPesel => "PL_PESEL",
            NationalId::InAadhaar => "IN_AADHAAR",
            NationalId::InPan => "IN_PAN",
            NationalId::BrCpf => "BR_CPF",
            NationalId::FiHetu => "FI_HETU",
            NationalId::SgNricFin => "SG_NRIC_FIN",
            NationalId::AuTfn => "AU_TFN",
            NationalId::AuMedicare => "AU_MEDICARE",
            NationalId::Crypto => "CRYPTO",
        }
    }
}

/// Context words, case-insensitive, matched where a word starts.
const CONTEXT_WORDS: &[(&str, NationalId)] = &[
    ("nhs", NationalId::UkNhs),
    ("national insurance", NationalId::UkNino),
    ("nino", NationalId::UkNino),
    ("ni number", NationalId::UkNino),
    ("nif", NationalId::EsNif),
    ("dni", NationalId::EsNif),
    ("nie", NationalId::EsNie),
    ("codice fiscale", NationalId::ItFiscalCode),
    ("fiscal code", NationalId::ItFiscalCode),
    ("bsn", NationalId::NlBsn),
    ("burgerservicenummer", NationalId::NlBsn),
    ("sofinummer", NationalId::NlBsn),
    ("pesel", NationalId::PlPesel),
    ("aadhaar", NationalId::InAadhaar),
    ("aadhar", NationalId::InAadhaar),
    ("uidai", NationalId::InAadhaar),
    ("pan", NationalId::InPan),
    ("permanent account", NationalId::InPan),
    ("cpf", NationalId::BrCpf),
    ("hetu", NationalId::FiHetu),
    ("henkilötunnus", NationalId::FiHetu),
    ("personal identity code", NationalId::FiHetu),
    ("nric", NationalId::SgNricFin),
    ("fin", NationalId::SgNricFin),
    ("tfn", NationalId::AuTfn),
    ("tax file", NationalId::AuTfn),
    ("medicare", NationalId::AuMedicare),
];

/// How far before a candidate (in bytes) a context word still counts; after it, a little.
const CONTEXT_BEFORE: usize = 48;
const CONTEXT_AFTER: usize = 12;

/// A checksum-valid identifier without context: as confident as a card without a card word.
const CHECKSUM_CONFIDENCE: f32 = 0.93;
/// Any identifier next to its context word.
const CONTEXT_CONFIDENCE: f32 = 0.99;
/// A format without a check character (NINO, PAN) and no context word.
const LAYOUT_CONFIDENCE: f32 = 0.75;

const MAX_GROUPS: usize = 8;
const MAX_CHARS: usize = 24;

#[derive(Debug)]
pub struct NationalScanner {
    context_words: AhoCorasick,
}

#[derive(Debug, thiserror::Error)]
#[error("national identifier context words: {0}")]
pub struct NationalError(String);

/// The groups of one chunk: spans in the text, the separator before each, and the compact
/// characters with each group's offset into them.
struct Chunk {
    spans: [(usize, usize); MAX_GROUPS],
    seps: [u8; MAX_GROUPS],
    compact: [u8; MAX_CHARS],
    offsets: [usize; MAX_GROUPS + 1],
    groups: usize,
}

impl NationalScanner {
    pub fn new() -> Result<Self, NationalError> {
        let context_words = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(CONTEXT_WORDS.iter().map(|(w, _)| w))
            .map_err(|e| NationalError(e.to_string()))?;
        Ok(NationalScanner { context_words })
    }

    /// Calls `emit(kind, start, end, confidence)` for every validated identifier in `text`.
    pub fn scan(&self, text: &[u8], mut emit: impl FnMut(NationalId, usize, usize, f32)) {
        let mut i = 0;
        while let Some(offset) = text[i..].iter().position(u8::is_ascii_digit) {
            let digit = i + offset;
            let mut start = digit;
            while start > i && digit - start < 15 && text[start - 1].is_ascii_alphabetic() {
                start -= 1;
            }
            // One short uppercase group before (`QQ 12 34 56 C`, `X-1234567-L`).
            if start == digit && start >= 2 && matches!(text[start - 1], b' ' | b'-') {
                let mut s = start - 1;
                while s > i && start - 1 - s < 2 && text[s - 1].is_ascii_uppercase() {
                    s -= 1;
                }
                if s < start - 1 && !before(text, s).is_some_and(is_word_byte) {
                    start = s;
                }
            }
            let glued = before(text, start).is_some_and(|b| {
                is_word_byte(b)
                    || (matches!(b, b'.' | b'-' | b'+' | b'/')
                        && start >= 2
                        && is_word_byte(text[start - 2]))
            });
            let end = alnum_end(text, digit);
            if glued {
                i = end;
                continue;
            }
            if text.get(end) != Some(&b'_')
                && (bitcoin_address(&text[start..end]) || ethereum_address(&text[start..end]))
            {
                emit(NationalId::Crypto, start, end, CHECKSUM_CONFIDENCE);
                i = end;
                continue;
            }
            let chunk = Chunk::read(text, start);
            let chunk_end = chunk.spans[chunk.groups - 1].1;
            if text.get(chunk_end) != Some(&b'_') {
                self.chunk(text, &chunk, &mut emit);
            }
            i = chunk_end.max(end).max(digit + 1);
        }
    }

    fn chunk(
        &self,
        text: &[u8],
        chunk: &Chunk,
        emit: &mut impl FnMut(NationalId, usize, usize, f32),
    ) {
        let mut g = 0;
        while g < chunk.groups {
            if g > 0 && chunk.seps[g] != b' ' {
                g += 1;
                continue;
            }
            let mut consumed = 1;
            for count in (1..=chunk.groups - g).rev() {
                let compact = &chunk.compact[chunk.offsets[g]..chunk.offsets[g + count]];
                let lens = Lens(chunk, g, count);
                let (start, end) = (chunk.spans[g].0, chunk.spans[g + count - 1].1);
                let context = |kind| self.has_context(text, start, end, kind);
                if let Some((kind, confidence)) = identify(compact, &lens, &context) {
                    emit(kind, start, end, confidence);
                    consumed = count;
                    break;
                }
            }
            g += consumed;
        }
    }

    fn has_context(&self, text: &[u8], start: usize, end: usize, kind: NationalId) -> bool {
        let from = start.saturating_sub(CONTEXT_BEFORE);
        let until = (end + CONTEXT_AFTER).min(text.len());
        // NIF and NIE share their context words: Spanish documents use them interchangeably.
        let wanted = |k: NationalId| {
            k == kind
                || matches!(
                    (k, kind),
                    (NationalId::EsNif, NationalId::EsNie) | (NationalId::EsNie, NationalId::EsNif)
                )
        };
        self.context_words.find_iter(&text[from..until]).any(|hit| {
            let (s, e) = (from + hit.start(), from + hit.end());
            wanted(CONTEXT_WORDS[hit.pattern().as_usize()].1)
                && !before(text, s).is_some_and(|b| b.is_ascii_alphabetic())
                && !text.get(e).is_some_and(|b| b.is_ascii_alphabetic())
                && (e <= start || s >= end)
        })
    }
}

impl Chunk {
    fn read(text: &[u8], start: usize) -> Chunk {
        let mut chunk = Chunk {
            spans: [(0, 0); MAX_GROUPS],
            seps: [0; MAX_GROUPS],
            compact: [0; MAX_CHARS],
            offsets: [0; MAX_GROUPS + 1],
            groups: 0,
        };
        let mut at = start;
        let mut sep = 0;
        loop {
            let end = alnum_end(text, at);
            let n = chunk.offsets[chunk.groups];
            if n + (end - at) > MAX_CHARS {
                if chunk.groups == 0 {
                    // Too long for any identifier: one empty-shaped group that matches nothing.
                    chunk.spans[0] = (at, end);
                    chunk.offsets[1] = 0;
                    chunk.groups = 1;
                }
                break;
            }
            chunk.compact[n..n + end - at].copy_from_slice(&text[at..end]);
            chunk.spans[chunk.groups] = (at, end);
            chunk.seps[chunk.groups] = sep;
            chunk.groups += 1;
            chunk.offsets[chunk.groups] = n + end - at;
            match (text.get(end), text.get(end + 1)) {
                (Some(&s @ (b' ' | b'-' | b'.' | b'+' | b'/')), Some(b))
                    if b.is_ascii_alphanumeric() =>
                {
                    sep = s;
                    at = end + 1;
                }
                _ => break,
            }
            if chunk.groups == MAX_GROUPS {
                break;
            }
        }
        chunk
    }
}

/// The group lengths and separators of `count` groups from `first`.
struct Lens<'c>(&'c Chunk, usize, usize);

impl Lens<'_> {
    fn is(&self, lens: &[usize]) -> bool {
        let Lens(chunk, first, count) = *self;
        lens.len() == count
            && (0..count)
                .all(|k| chunk.offsets[first + k + 1] - chunk.offsets[first + k] == lens[k])
    }

    /// The separators between the groups, in order.
    fn seps(&self) -> &[u8] {
        let Lens(chunk, first, count) = *self;
        &chunk.seps[first + 1..first + count]
    }

    fn uniform(&self, allowed: &[u8]) -> bool {
        let seps = self.seps();
        seps.iter().all(|s| allowed.contains(s)) && seps.windows(2).all(|w| w[0] == w[1])
    }
}

/// The identifier `c` is in its printed shape `lens`, with its confidence; `None` also when
/// a collision-prone format has no context word nearby.
fn identify(
    c: &[u8],
    lens: &Lens,
    context: &impl Fn(NationalId) -> bool,
) -> Option<(NationalId, f32)> {
    use NationalId::*;
    let digits = c.iter().all(u8::is_ascii_digit);
    let compact = lens.2 == 1;
    if digits && c.windows(2).all(|w| w[0] == w[1]) {
        return None;
    }
    let with_context = |kind| context(kind).then_some((kind, CONTEXT_CONFIDENCE));
    let scored = |kind, without: f32| {
        Some((
            kind,
            if context(kind) {
                CONTEXT_CONFIDENCE
            } else {
                without
            },
        ))
    };
    match c.len() {
        9 if digits && (compact || lens.is(&[3, 3, 3]) && lens.uniform(b" ")) => {
            if tfn(c) && context(AuTfn) {
                return with_context(AuTfn);
            }
            if compact && bsn(c) {
                return with_context(NlBsn);
            }
            None
        }
        9 if (compact || lens.is(&[2, 2, 2, 2, 1]) && lens.uniform(b" ")) && nino(c) => {
            scored(UkNino, LAYOUT_CONFIDENCE)
        }
        9 if (compact || lens.is(&[8, 1]) && lens.uniform(b"- ")) && nif(c) => {
            scored(EsNif, CHECKSUM_CONFIDENCE)
        }
        9 if (compact || lens.is(&[1, 7, 1]) && lens.uniform(b"- ")) && nie(c) => {
            scored(EsNie, CHECKSUM_CONFIDENCE)
        }
        9 if compact && nric(c) => scored(SgNricFin, CHECKSUM_CONFIDENCE),
        10 if digits
            && (compact || lens.is(&[3, 3, 4]) && lens.uniform(b" -"))
            && nhs(c)
            && context(UkNhs) =>
        {
            with_context(UkNhs)
        }
        10 | 11
            if digits
                && (compact || lens.is(&[4, 5, 1]) || lens.is(&[4, 5, 1, 1]))
                && lens.uniform(b" ")
                && medicare(c)
                && context(AuMedicare) =>
        {
            with_context(AuMedicare)
        }
        10 if compact && pan(c) => scored(InPan, LAYOUT_CONFIDENCE),
        // The `-` and `+` century signs are separators to the chunk reader.
        10 if lens.is(&[6, 4]) && lens.uniform(b"-+") => {
            let mut full = [0u8; 11];
            full[..6].copy_from_slice(&c[..6]);
            full[6] = lens.seps()[0];
            full[7..].copy_from_slice(&c[6..]);
            if hetu(&full) {
                scored(FiHetu, CHECKSUM_CONFIDENCE)
            } else {
                None
            }
        }
        11 if digits && compact && pesel(c) && context(PlPesel) => with_context(PlPesel),
        11 if digits && compact && cpf(c) => with_context(BrCpf),
        11 if lens.is(&[3, 3, 3, 2]) && lens.seps() == b"..-" && cpf(c) => {
            scored(BrCpf, CHECKSUM_CONFIDENCE)
        }
        11 if compact && hetu(c) => scored(FiHetu, CHECKSUM_CONFIDENCE),
        12 if digits && (compact || lens.is(&[4, 4, 4]) && lens.uniform(b" -")) && aadhaar(c) => {
            with_context(InAadhaar)
        }
        16 if compact && fiscal_code(c) => scored(ItFiscalCode, CHECKSUM_CONFIDENCE),
        _ => None,
    }
}

fn before(text: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| text.get(j).copied())
}

fn alnum_end(text: &[u8], from: usize) -> usize {
    text[from..]
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
        .map_or(text.len(), |n| from + n)
}

fn digit(b: u8) -> u32 {
    u32::from(b - b'0')
}

fn weighted(digits: &[u8], weights: &[u32]) -> u32 {
    digits.iter().zip(weights).map(|(&d, w)| digit(d) * w).sum()
}

/// UK NHS number: weights 10..2 over the first nine digits; the check is 11 minus the sum
/// mod 11 (11 becomes 0, 10 is never issued).
pub fn nhs(d: &[u8]) -> bool {
    if d.len() != 10 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let check = 11 - weighted(&d[..9], &[10, 9, 8, 7, 6, 5, 4, 3, 2]) % 11;
    let check = if check == 11 { 0 } else { check };
    check != 10 && check == digit(d[9])
}

/// UK National Insurance number (HMRC NIM39110): two prefix letters (not D, F, I, Q, U, V;
/// the second not O either; not the reserved BG, GB, KN, NK, NT, TN, ZZ), six digits and a
/// suffix A-D.
pub fn nino(c: &[u8]) -> bool {
    if c.len() != 9 || !c[2..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let (a, b) = (c[0], c[1]);
    let letter_ok = |x: u8, extra: &[u8]| {
        x.is_ascii_uppercase() && !b"DFIQUV".contains(&x) && !extra.contains(&x)
    };
    letter_ok(a, b"")
        && letter_ok(b, b"O")
        && ![b"BG", b"GB", b"KN", b"NK", b"NT", b"TN", b"ZZ"].contains(&&[a, b])
        && (b'A'..=b'D').contains(&c[8])
}

const NIF_LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";

/// Spanish DNI/NIF: eight digits and the letter at the number mod 23.
pub fn nif(c: &[u8]) -> bool {
    c.len() == 9
        && c[..8].iter().all(u8::is_ascii_digit)
        && !c[..8].windows(2).all(|w| w[0] == w[1])
        && NIF_LETTERS[number(&c[..8]) as usize % 23] == c[8]
}

/// Spanish NIE: X, Y or Z (standing for 0, 1, 2), seven digits, and the NIF letter of the
/// resulting eight-digit number.
pub fn nie(c: &[u8]) -> bool {
    if c.len() != 9 || !c[1..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let Some(lead) = b"XYZ".iter().position(|&x| x == c[0]) else {
        return false;
    };
    let n = lead as u64 * 10_000_000 + number(&c[1..8]);
    NIF_LETTERS[n as usize % 23] == c[8]
}

fn number(d: &[u8]) -> u64 {
    d.iter().fold(0, |acc, &b| acc * 10 + u64::from(b - b'0'))
}

/// Values of characters at odd (1st, 3rd, ...) positions of a codice fiscale, digits 0-9
/// sharing the values of A-J (Decreto Ministeriale 23/12/1976).
const FISCAL_ODD: [u32; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];
/// Letters that replace digits in homocode fiscal codes (omocodia), standing for 0-9.
const OMOCODE: &[u8] = b"LMNPQRSTUV";

/// Italian codice fiscale: six letters, two year digits, a month letter, two day digits, a
/// letter and three digits (any digit may be an omocode letter), then the control letter.
pub fn fiscal_code(c: &[u8]) -> bool {
    if c.len() != 16
        || !c
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    let digit_like = |b: u8| b.is_ascii_digit() || OMOCODE.contains(&b);
    let layout = c[..6].iter().all(u8::is_ascii_uppercase)
        && [6, 7, 9, 10, 12, 13, 14].iter().all(|&i| digit_like(c[i]))
        && b"ABCDEHLMPRST".contains(&c[8])
        && c[11].is_ascii_uppercase()
        && c[15].is_ascii_uppercase();
    if !layout {
        return false;
    }
    let value = |b: u8| -> usize {
        if b.is_ascii_digit() {
            usize::from(b - b'0')
        } else {
            usize::from(b - b'A')
        }
    };
    let sum: u32 = c[..15]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if i % 2 == 0 {
                FISCAL_ODD[value(b)]
            } else {
                value(b) as u32
            }
        })
        .sum();
    c[15] == b'A' + (sum % 26) as u8
}

/// Dutch BSN, the 11-proof: weights 9..2 and -1 over the nine digits, sum divisible by 11.
pub fn bsn(d: &[u8]) -> bool {
    if d.len() != 9 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum = weighted(&d[..8], &[9, 8, 7, 6, 5, 4, 3, 2]) as i64 - i64::from(digit(d[8]));
    sum.rem_euclid(11) == 0 && sum > 0
}

/// Polish PESEL: weights 1-3-7-9 repeated, check = (10 - sum mod 10) mod 10; the first six
/// digits are a date whose month carries the century (+80 1800s, +0 1900s, +20 2000s, ...).
pub fn pesel(d: &[u8]) -> bool {
    if d.len() != 11 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum = weighted(&d[..10], &[1, 3, 7, 9, 1, 3, 7, 9, 1, 3]);
    if (10 - sum % 10) % 10 != digit(d[10]) {
        return false;
    }
    let year = number(&d[..2]) as u32;
    let coded_month = number(&d[2..4]) as u32;
    let (century, month) = match coded_month {
        81..=92 => (1800, coded_month - 80),
        1..=12 => (1900, coded_month),
        21..=32 => (2000, coded_month - 20),
        41..=52 => (2100, coded_month - 40),
        61..=72 => (2200, coded_month - 60),
        _ => return false,
    };
    valid_date(century + year, month, number(&d[4..6]) as u32)
}

fn valid_date(year: u32, month: u32, day: u32) -> bool {
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok());
    match (i32::try_from(year), month, u8::try_from(day)) {
        (Ok(year), Some(month), Ok(day)) => {
            time::Date::from_calendar_date(year, month, day).is_ok()
        }
        _ => false,
    }
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 7, 6, 8, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Verhoeff (dihedral group D5) over ASCII digits, check digit last.
pub fn verhoeff(d: &[u8]) -> bool {
    let mut c = 0usize;
    for (i, &b) in d.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        c = usize::from(VERHOEFF_D[c][usize::from(VERHOEFF_P[i % 8][usize::from(b - b'0')])]);
    }
    !d.is_empty() && c == 0
}

/// Indian Aadhaar (UIDAI): twelve digits, the first 2-9, Verhoeff check digit last.
pub fn aadhaar(d: &[u8]) -> bool {
    d.len() == 12 && (b'2'..=b'9').contains(&d[0]) && verhoeff(d)
}

/// Indian PAN: five letters (the fourth the holder type: person, company, HUF, firm, AOP,
/// trust, BOI, local authority, juridical person, government), four digits, a letter.
pub fn pan(c: &[u8]) -> bool {
    c.len() == 10
        && c[..5].iter().all(u8::is_ascii_uppercase)
        && b"PCHFATBLJG".contains(&c[3])
        && c[5..9].iter().all(u8::is_ascii_digit)
        && c[9].is_ascii_uppercase()
}

/// Brazilian CPF: two mod-11 check digits (weights 10..2, then 11..2; a remainder of 10
/// counts as 0); numbers of one repeated digit pass the arithmetic but are invalid.
pub fn cpf(d: &[u8]) -> bool {
    if d.len() != 11 || !d.iter().all(u8::is_ascii_digit) || d.windows(2).all(|w| w[0] == w[1]) {
        return false;
    }
    let first = weighted(&d[..9], &[10, 9, 8, 7, 6, 5, 4, 3, 2]) * 10 % 11 % 10;
    let second = weighted(&d[..10], &[11, 10, 9, 8, 7, 6, 5, 4, 3, 2]) * 10 % 11 % 10;
    first == digit(d[9]) && second == digit(d[10])
}

const HETU_CONTROL: &[u8; 31] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";

/// Finnish HETU: DDMMYY, the century sign (`+` 1800s; `-`, `U`-`Y` 1900s; `A`-`F` 2000s),
/// a three-digit individual number and the control character of DDMMYYNNN mod 31.
pub fn hetu(c: &[u8]) -> bool {
    if c.len() != 11
        || !c[..6].iter().all(u8::is_ascii_digit)
        || !c[7..10].iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let century = match c[6] {
        b'+' => 1800,
        b'-' | b'U'..=b'Y' => 1900,
        b'A'..=b'F' => 2000,
        _ => return false,
    };
    let year = century + number(&c[4..6]) as u32;
    if !valid_date(year, number(&c[2..4]) as u32, number(&c[..2]) as u32) {
        return false;
    }
    let n = number(&c[..6]) * 1000 + number(&c[7..10]);
    HETU_CONTROL[(n % 31) as usize] == c[10]
}

/// Singapore NRIC/FIN: S, T (citizens, born before/after 2000), F, G (foreigners), seven
/// digits weighted 2-7-6-5-4-3-2 (+4 for T and G) and the letter at the sum mod 11.
pub fn nric(c: &[u8]) -> bool {
    if c.len() != 9 || !c[1..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let (offset, letters): (u32, &[u8; 11]) = match c[0] {
        b'S' => (0, b"JZIHGFEDCBA"),
        b'T' => (4, b"JZIHGFEDCBA"),
        b'F' => (0, b"XWUTRQPNMLK"),
        b'G' => (4, b"XWUTRQPNMLK"),
        _ => return false,
    };
    let sum = offset + weighted(&c[1..8], &[2, 7, 6, 5, 4, 3, 2]);
    letters[(sum % 11) as usize] == c[8]
}

/// Australian TFN: weights 1-4-3-7-5-8-6-9-10, sum divisible by 11.
pub fn tfn(d: &[u8]) -> bool {
    d.len() == 9
        && d.iter().all(u8::is_ascii_digit)
        && weighted(d, &[1, 4, 3, 7, 5, 8, 6, 9, 10]).is_multiple_of(11)
}

/// Australian Medicare card: first digit 2-6, weights 1-3-7-9-1-3-7-9 over the first eight,
/// the ninth is the sum mod 10, then the issue number (and the person's reference number).
pub fn medicare(d: &[u8]) -> bool {
    matches!(d.len(), 10 | 11)
        && d.iter().all(u8::is_ascii_digit)
        && (b'2'..=b'6').contains(&d[0])
        && weighted(&d[..8], &[1, 3, 7, 9, 1, 3, 7, 9]) % 10 == digit(d[8])
}

mod crypto;

pub use crypto::{bitcoin_address, ethereum_address};
#[cfg(test)]
use crypto::{keccak256, BASE58, BECH32};

#[cfg(test)]
mod crypto_tests;
#[cfg(test)]
mod tests;
