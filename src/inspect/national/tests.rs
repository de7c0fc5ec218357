//! Validators pinned to published examples, detector behaviour in text, and the generated
//! corpus that measures per-type recall and hard-negative false positives.

use super::*;
use crate::inspect::Detector;

/// The default `[inspect] min_confidence`: a finding below it is not reported.
pub(super) const MIN_CONFIDENCE: f32 = 0.5;

pub(super) fn reported(text: &str) -> Vec<(String, String)> {
    Detector::new(&[])
        .unwrap()
        .scan(text)
        .into_iter()
        .filter(|e| e.confidence >= MIN_CONFIDENCE)
        .map(|e| (e.kind.as_str().to_owned(), text[e.start..e.end].to_owned()))
        .collect()
}

fn kinds(text: &str) -> Vec<String> {
    reported(text).into_iter().map(|(k, _)| k).collect()
}

/// Published examples pin every validator to its specification.
#[test]
fn published_examples_validate() {
    assert!(nhs(b"9434765919"), "NHS Digital sample number");
    assert!(nino(b"AB123456C"));
    assert!(
        !nino(b"QQ123456C"),
        "the documentation specimen: Q is never a prefix"
    );
    assert!(nif(b"12345678Z"), "12345678 mod 23 = 14 -> Z");
    assert!(nie(b"X1234567L"), "01234567 mod 23 = 19 -> L");
    assert!(
        fiscal_code(b"RSSMRA85T10A562S"),
        "Mario Rossi, the usual example"
    );
    assert!(bsn(b"111222333"), "9+8+7+12+10+8+9+6-3 = 66");
    assert!(
        pesel(b"44051401359"),
        "Wikipedia PESEL example, 14 May 1944"
    );
    assert!(
        verhoeff(b"2363"),
        "Verhoeff's own example: check of 236 is 3"
    );
    assert!(pan(b"ABCPE1234F"));
    assert!(
        cpf(b"52998224725"),
        "checks 2 (2950 mod 11) and 5 (3470 mod 11)"
    );
    assert!(hetu(b"131052-308T"), "131052308 mod 31 = 25 -> T");
    assert!(nric(b"S1234567D"), "weighted sum 106 mod 11 = 7 -> D");
    assert!(tfn(b"123456782"), "weighted sum 253 = 11 * 23");
    assert!(medicare(b"2123456701"), "weighted sum 170 mod 10 = 0");
}

#[test]
fn validators_reject_wrong_checks_and_shapes() {
    assert!(!nhs(b"9434765918"));
    assert!(!nino(b"QQ123456E"), "suffix A-D only");
    assert!(!nino(b"DQ123456C"), "D is not a prefix letter");
    assert!(!nino(b"GB123456A"), "reserved prefix");
    assert!(!nif(b"12345678A"));
    assert!(!nif(b"00000000T"), "one repeated digit");
    assert!(!nie(b"A1234567L"));
    assert!(!fiscal_code(b"RSSMRA85T10A562T"));
    assert!(!fiscal_code(b"RSSMRA85Z10A562S"), "Z is no month letter");
    assert!(!bsn(b"111222334"));
    assert!(!pesel(b"44051401358"));
    assert!(
        !pesel(b"44133101350"),
        "month 13 is no month in any century"
    );
    assert!(
        !aadhaar(b"123412341234"),
        "Aadhaar numbers do not start with 0 or 1"
    );
    assert!(!pan(b"ABCXE1234F"), "X is no holder type");
    assert!(!cpf(b"52998224724"));
    assert!(!cpf(b"11111111111"), "passes the arithmetic, never issued");
    assert!(!hetu(b"310252-308T"), "31 February");
    assert!(!nric(b"S1234567A"));
    assert!(!tfn(b"123456789"));
    assert!(!medicare(b"2123456791"));
    assert!(!medicare(b"7123456701"), "first digit 2-6");
}

#[test]
fn reported_in_text_with_their_presidio_names() {
    assert_eq!(
        reported("NHS number 943 476 5919, please"),
        vec![("UK_NHS".into(), "943 476 5919".into())]
    );
    assert_eq!(
        reported("NI number AB 12 34 56 C on file"),
        vec![("UK_NINO".into(), "AB 12 34 56 C".into())]
    );
    assert_eq!(kinds("mi DNI es 12345678-Z"), vec!["ES_NIF"]);
    assert_eq!(
        reported("NIE X-1234567-L."),
        vec![("ES_NIE".into(), "X-1234567-L".into())]
    );
    assert_eq!(kinds("CF RSSMRA85T10A562S"), vec!["IT_FISCAL_CODE"]);
    assert_eq!(kinds("mijn BSN is 111222333"), vec!["NL_BSN"]);
    assert_eq!(kinds("PESEL: 44051401359"), vec!["PL_PESEL"]);
    assert_eq!(kinds("PAN ABCPE1234F"), vec!["IN_PAN"]);
    assert_eq!(kinds("CPF 529.982.247-25"), vec!["BR_CPF"]);
    assert_eq!(kinds("hetu 131052-308T"), vec!["FI_HETU"]);
    assert_eq!(kinds("NRIC S1234567D"), vec!["SG_NRIC_FIN"]);
    assert_eq!(kinds("my TFN is 123 456 782"), vec!["AU_TFN"]);
    assert_eq!(kinds("Medicare 2123 45670 1"), vec!["AU_MEDICARE"]);
}

#[test]
fn bare_digit_formats_need_their_context_word() {
    for text in [
        "order 111222333 shipped",
        "ticket 123456782 closed",
        "ref 9434765919 attached",
        "invoice 44051401359 paid",
        "id 2123456701",
        "tracking 52998224725",
    ] {
        assert!(kinds(text).is_empty(), "{text}: {:?}", kinds(text));
    }
    // The BSN's context word does not make a TFN-valid number a TFN.
    assert!(!kinds("BSN 123456782").contains(&"AU_TFN".to_owned()));
}

#[test]
fn existing_findings_keep_their_type() {
    // 415-555-0132-shaped NHS numbers stay phone numbers for the phone detector.
    assert_eq!(kinds("call 415-555-0132"), vec!["PHONE"]);
    assert_eq!(kinds("SSN: 123-45-6789"), vec!["US_SSN"]);
    assert_eq!(kinds("card 4111 1111 1111 1111"), vec!["CREDIT_CARD"]);
}

/// A tiny deterministic generator, so the corpus is the same on every run.
pub(super) struct Lcg(pub(super) u64);

impl Lcg {
    pub(super) fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    pub(super) fn pick(&mut self, from: &[u8]) -> u8 {
        from[self.next(from.len() as u64) as usize]
    }

    fn digits(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.pick(b"0123456789")).collect()
    }
}

const DIGITS: &[u8] = b"0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// One identifier type of the corpus: how to draw a body, where its check characters sit,
/// how it is printed, and which word introduces it.
struct Case {
    name: &'static str,
    body: fn(&mut Lcg) -> Vec<u8>,
    /// Positions (into the compact form) of the check characters, filled by search: the
    /// valid examples are the bodies completed with the characters the algorithm accepts,
    /// the validators themselves being pinned by `published_examples_validate`.
    checks: &'static [usize],
    alphabet: &'static [u8],
    valid: fn(&[u8]) -> bool,
    print: fn(&[u8], u64) -> String,
    context: &'static str,
}

fn compact(c: &[u8], _: u64) -> String {
    String::from_utf8(c.to_vec()).unwrap()
}

fn grouped(c: &[u8], lens: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut at = 0;
    for &len in lens {
        out.push(String::from_utf8(c[at..at + len].to_vec()).unwrap());
        at += len;
    }
    out.join(sep)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "UK_NHS",
            body: |r| r.digits(10),
            checks: &[9],
            alphabet: DIGITS,
            valid: nhs,
            print: |c, v| {
                if v % 2 == 0 {
                    compact(c, v)
                } else {
                    grouped(c, &[3, 3, 4], " ")
                }
            },
            context: "NHS number",
        },
        Case {
            name: "UK_NINO",
            body: |r| {
                let mut b = vec![r.pick(b"ABCEGHJKLMNPRSTWXYZ"), r.pick(b"ABCEGHJLMPRSWXY")];
                b.extend(r.digits(6));
                b.push(b'A');
                b
            },
            checks: &[8],
            alphabet: b"ABCDE",
            valid: nino,
            print: |c, v| {
                if v % 2 == 0 {
                    compact(c, v)
                } else {
                    grouped(c, &[2, 2, 2, 2, 1], " ")
                }
            },
            context: "national insurance number",
        },
        Case {
            name: "ES_NIF",
            body: |r| {
                let mut b = r.digits(8);
                b.push(b'A');
                b
            },
            checks: &[8],
            alphabet: UPPER,
            valid: nif,
            print: |c, v| {
                if v % 2 == 0 {
                    compact(c, v)
                } else {
                    grouped(c, &[8, 1], "-")
                }
            },
            context: "DNI",
        },
        Case {
            name: "ES_NIE",
            body: |r| {
                let mut b = vec![r.pick(b"XYZ")];
                b.extend(r.digits(7));
                b.push(b'A');
                b
            },
            checks: &[8],
            alphabet: UPPER,
            valid: nie,
            print: |c, v| {
                if v % 2 == 0 {
                    compact(c, v)
                } else {
                    grouped(c, &[1, 7, 1], "-")
                }
            },
            context: "NIE",
        },
        Case {
            name: "IT_FISCAL_CODE",
            body: |r| {
                let mut b: Vec<u8> = (0..6).map(|_| r.pick(UPPER)).collect();
                b.extend(r.digits(2));
                b.push(r.pick(b"ABCDEHLMPRST"));
                let day = 1 + r.next(28) + 40 * r.next(2);
                b.extend(format!("{day:02}").bytes());
                b.push(r.pick(UPPER));
                b.extend(r.digits(3));
                b.push(b'A');
                b
            },
            checks: &[15],
            alphabet: UPPER,
            valid: fiscal_code,
            print: compact,
            context: "codice fiscale",
        },
        Case {
            name: "NL_BSN",
            body: |r| r.digits(9),
            checks: &[8],
            alphabet: DIGITS,
            valid: bsn,
            print: compact,
            context: "BSN",
        },
        Case {
            name: "PL_PESEL",
            body: |r| {
                let month = 1 + r.next(12) + 20 * r.next(2);
                let mut b = r.digits(2);
                b.extend(format!("{month:02}{:02}", 1 + r.next(28)).bytes());
                b.extend(r.digits(5));
                b
            },
            checks: &[10],
            alphabet: DIGITS,
            valid: pesel,
            print: compact,
            context: "PESEL",
        },
        Case {
            name: "IN_AADHAAR",
            body: |r| {
                let mut b = vec![r.pick(b"23456789")];
                b.extend(r.digits(11));
                b
            },
            checks: &[11],
            alphabet: DIGITS,
            valid: aadhaar,
            print: |c, v| {
                if v % 2 == 0 {
                    compact(c, v)
                } else {
                    grouped(c, &[4, 4, 4], " ")
                }
            },
            context: "Aadhaar",
        },
        Case {
            name: "IN_PAN",
            body: |r| {
                let mut b: Vec<u8> = (0..3).map(|_| r.pick(UPPER)).collect();
                b.push(r.pick(b"PCHFATBLJG"));
                b.push(r.pick(UPPER));
                b.extend(r.digits(4));
                b.push(r.pick(UPPER));
                b
            },
            checks: &[3],
            alphabet: b"PCHFATBLJGX",
            valid: pan,
            print: compact,
            context: "PAN",
        },
        Case {
            name: "BR_CPF",
            body: |r| r.digits(11),
            checks: &[9, 10],
            alphabet: DIGITS,
            valid: cpf,
            print: |c, v| {
                if v % 2 == 0 {
                    compact(c, v)
                } else {
                    let d = compact(c, v);
                    format!("{}.{}.{}-{}", &d[..3], &d[3..6], &d[6..9], &d[9..])
                }
            },
            context: "CPF",
        },
        Case {
            name: "FI_HETU",
            body: |r| {
                let mut b = format!("{:02}{:02}", 1 + r.next(28), 1 + r.next(12)).into_bytes();
                b.extend(r.digits(2));
                b.push(r.pick(b"-A"));
                b.extend(format!("{:03}", 2 + r.next(897)).bytes());
                b.push(b'0');
                b
            },
            checks: &[10],
            alphabet: HETU_CONTROL,
            valid: hetu,
            print: compact,
            context: "henkilötunnus",
        },
        Case {
            name: "SG_NRIC_FIN",
            body: |r| {
                let mut b = vec![r.pick(b"STFG")];
                b.extend(r.digits(7));
                b.push(b'A');
                b
            },
            checks: &[8],
            alphabet: UPPER,
            valid: nric,
            print: compact,
            context: "NRIC",
        },
        Case {
            name: "AU_TFN",
            body: |r| r.digits(9),
            checks: &[8],
            alphabet: DIGITS,
            valid: tfn,
            print: |c, v| {
                if v % 2 == 0 {
                    compact(c, v)
                } else {
                    grouped(c, &[3, 3, 3], " ")
                }
            },
            context: "tax file number",
        },
        Case {
            name: "AU_MEDICARE",
            body: |r| {
                let mut b = vec![r.pick(b"23456")];
                b.extend(r.digits(8));
                b.push(r.pick(b"123456789"));
                b
            },
            checks: &[8],
            alphabet: DIGITS,
            valid: medicare,
            print: |c, v| {
                if v % 2 == 0 {
                    compact(c, v)
                } else {
                    grouped(c, &[4, 5, 1], " ")
                }
            },
            context: "Medicare card",
        },
    ]
}

/// The body completed with check characters the algorithm accepts, if any.
fn complete(case: &Case, mut body: Vec<u8>) -> Option<Vec<u8>> {
    let positions = case.checks;
    let n = case.alphabet.len();
    let tries = n.pow(positions.len() as u32);
    (0..tries).find_map(|t| {
        let mut t = t;
        for &p in positions {
            body[p] = case.alphabet[t % n];
            t /= n;
        }
        (case.valid)(&body).then(|| body.clone())
    })
}

/// The valid value with one check character changed so the algorithm rejects it.
fn corrupted(case: &Case, valid: &[u8]) -> Vec<u8> {
    let p = *case.checks.last().unwrap();
    let mut bad = valid.to_vec();
    for &c in case.alphabet {
        bad[p] = c;
        if !(case.valid)(&bad) {
            return bad;
        }
    }
    unreachable!("every check position has a rejected character")
}

pub(super) const POSITIVE_TEMPLATES: &[&str] = &[
    "Please update the {ctx} {v} in her file.",
    "{ctx}: {v}",
    "the applicant's {ctx} is {v}, see attached",
    "Form field ({ctx}) = {v};",
];

const NEGATIVE_TEMPLATES: &[&str] = &[
    "Order {v} shipped on 2024-03-15.",
    "Call me back about ticket {v} tomorrow",
    "invoice #{v} total 1,234.56 EUR",
    "ref {v}",
];

pub(super) const PER_TYPE: usize = 200;

#[test]
fn corpus_recall_and_hard_negative_false_positives() {
    let detector = Detector::new(&[]).unwrap();
    let flagged = |text: &str, name: &str| {
        detector
            .scan(text)
            .iter()
            .any(|e| e.kind.as_str() == name && e.confidence >= MIN_CONFIDENCE)
    };
    let mut table = Vec::new();
    let mut failed = Vec::new();
    for (k, case) in cases().iter().enumerate() {
        let mut rng = Lcg(0x9e37_79b9 + k as u64);
        let (mut hits, mut positives) = (0, 0);
        let (mut false_positives, mut negatives) = (0, 0);
        while positives < PER_TYPE {
            let Some(valid) = complete(case, (case.body)(&mut rng)) else {
                continue;
            };
            let variant = rng.next(1000);
            let value = (case.print)(&valid, variant);
            let template = POSITIVE_TEMPLATES[positives % POSITIVE_TEMPLATES.len()];
            let text = template
                .replace("{ctx}", case.context)
                .replace("{v}", &value);
            let found = detector.scan(&text);
            positives += 1;
            if found.iter().any(|e| {
                e.kind.as_str() == case.name
                    && e.confidence >= MIN_CONFIDENCE
                    && text[e.start..e.end] == value
            }) {
                hits += 1;
            }
            // Hard negatives: a wrong check character next to the context word, the valid
            // value one character short or long, and ordinary text without context.
            let bad = (case.print)(&corrupted(case, &valid), variant);
            let short = String::from_utf8(valid[..valid.len() - 1].to_vec()).unwrap();
            // In front: a digit appended to a Medicare number is its valid reference number.
            let long = format!("7{}", String::from_utf8(valid.clone()).unwrap());
            let mut negative_texts = vec![
                template.replace("{ctx}", case.context).replace("{v}", &bad),
                template
                    .replace("{ctx}", case.context)
                    .replace("{v}", &short),
                template
                    .replace("{ctx}", case.context)
                    .replace("{v}", &long),
            ];
            let needs_context = valid.iter().all(u8::is_ascii_digit)
                && !(case.name == "BR_CPF" && variant % 2 == 1);
            if needs_context {
                let ordinary = NEGATIVE_TEMPLATES[positives % NEGATIVE_TEMPLATES.len()];
                negative_texts.push(ordinary.replace("{v}", &value));
            }
            for text in negative_texts {
                negatives += 1;
                if flagged(&text, case.name) {
                    false_positives += 1;
                }
            }
        }
        if valid_all_same(case) {
            negatives += 1;
        }
        let recall = hits as f64 / positives as f64;
        let fp_rate = false_positives as f64 / negatives as f64;
        table.push(format!(
            "{:<15} positives {positives} recall {recall:.3}  hard negatives {negatives} FP rate {fp_rate:.3}",
            case.name
        ));
        if recall < 0.95 || fp_rate > 0.02 {
            failed.push(case.name);
        }
    }
    let table = table.join("\n");
    eprintln!("{table}");
    assert!(
        failed.is_empty(),
        "{failed:?} below recall 0.95 or above FP 0.02:\n{table}"
    );
}

/// Numbers of one repeated digit are never reported, even when the arithmetic passes.
fn valid_all_same(case: &Case) -> bool {
    let len = match case.name {
        "UK_NHS" => 10,
        "NL_BSN" | "AU_TFN" => 9,
        "PL_PESEL" | "BR_CPF" => 11,
        "IN_AADHAAR" => 12,
        _ => return false,
    };
    let text = format!("{} {}", case.context, "5".repeat(len));
    assert!(
        !kinds(&text).contains(&case.name.to_owned()),
        "{}: {text}",
        case.name
    );
    true
}

#[test]
fn ordinary_numbers_in_prompts_are_not_identifiers() {
    let text = "Order 123456789 shipped 2024-03-15, call +44 20 7946 0958 or 415-555-0132, \
                invoice 2024-000123, ts 1710498151, build 20240315, EAN 4006381333931, \
                ISBN 978-3-16-148410-0, postcode 10115, version 10.0.19045.2965, \
                price 1234567.89, account 12345678901, id 550e8400-e29b-41d4-a716-446655440000.";
    let national: Vec<_> = reported(text)
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "PHONE" | "IP_ADDRESS"))
        .collect();
    assert_eq!(national, Vec::<(String, String)>::new());
}

/// Arbitrary text made of the characters the chunk reader cares about (digits, letters,
/// separators, century signs) never panics and only yields spans on character boundaries.
#[test]
fn arbitrary_text_never_breaks_the_scan() {
    let scanner = NationalScanner::new().unwrap();
    let alphabet = "0123456789ABCXYZSTbcq1 -.+/_é€\n".as_bytes();
    let mut rng = Lcg(7);
    for _ in 0..3000 {
        let len = rng.next(80) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.pick(alphabet)).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        scanner.scan(text.as_bytes(), |_, start, end, confidence| {
            assert!(start < end && text.is_char_boundary(start) && text.is_char_boundary(end));
            assert!((0.0..=1.0).contains(&confidence));
        });
    }
}
