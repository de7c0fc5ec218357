//! Classification throughput: the full detector set over typical prompt text at 1 KiB, 16 KiB
//! and 1 MiB; the literal-anchored secret rules alone; dictionary-only scanning; and extraction +
//! classification of OpenAI chat requests at the same sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aigate::inspect::{DataClass, Detector, Dictionary, Inspector};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Prompt-like prose: code, numbers that are not entities, one email and one card per ~2 KiB.
const PARAGRAPH: &str = "Can you help me refactor this function? It reads the order table (about 1,250 rows \
per day since 2023-04-01) and computes totals per region. Version 3.4 of the service returns \
HTTP 429 when we exceed 100 requests per minute, so add a retry with exponential backoff. \
Here is the current code:\n\nfn totals(rows: &[Row]) -> HashMap<String, f64> {\n    let mut out = \
HashMap::new();\n    for row in rows { *out.entry(row.region.clone()).or_default() += row.amount; }\n    \
out\n}\n\nAlso, the customer asked us to summarise the attached meeting notes in three bullet points \
and to draft a polite reply that explains the delay in shipping order 20231187 and offers a 10% \
discount on the next purchase. Keep it under 120 words and do not promise a delivery date. ";

fn prompt_text(size: usize) -> String {
    let mut text = String::with_capacity(size + PARAGRAPH.len());
    let mut i = 0;
    while text.len() < size {
        text.push_str(PARAGRAPH);
        if i % 2 == 1 {
            text.push_str("Contact jane.doe@example.com, card 4111 1111 1111 1111. ");
        }
        i += 1;
    }
    text.truncate(size);
    text
}

fn dictionaries() -> Vec<Dictionary> {
    vec![Dictionary {
        name: "CROWN_JEWEL".into(),
        classification: DataClass::TradeSecret,
        terms: (0..200).map(|i| format!("Project Codename{i}")).collect(),
    }]
}

fn classify(c: &mut Criterion) {
    let detector = Detector::new(&dictionaries()).unwrap();
    let mut group = c.benchmark_group("classify");
    for size in [1024usize, 2048, 16 * 1024, 1024 * 1024] {
        let text = prompt_text(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("full", size), &text, |b, text| {
            b.iter(|| black_box(detector.scan(black_box(text))))
        });
    }
    let text = prompt_text(1024 * 1024);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("secrets_only/1048576", |b| {
        b.iter(|| black_box(detector.scan_secrets(black_box(&text))))
    });
    group.bench_function("dictionaries_only/1048576", |b| {
        b.iter(|| black_box(detector.scan_dictionaries(black_box(&text))))
    });
    group.finish();
}

fn chat_request(prompt_bytes: usize) -> String {
    serde_json::json!({
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": prompt_text(prompt_bytes)}],
    })
    .to_string()
}

/// Extraction + classification together (`Inspector::inspect`, what the pipeline calls) of an
/// OpenAI chat request whose prompt is 1 KiB, 2 KiB, 16 KiB and 1 MiB.
fn extraction(c: &mut Criterion) {
    let inspector = Inspector::new(&[], 0.5, 10 << 20).unwrap();
    let mut group = c.benchmark_group("inspect");
    for (name, size) in [
        ("openai_chat_1k", 1024usize),
        ("openai_chat_2k", 2048),
        ("openai_chat_16k", 16 * 1024),
        ("openai_chat_1m", 1024 * 1024),
    ] {
        let body = chat_request(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(inspector.inspect(
                    Some("application/json"),
                    None,
                    black_box(body.as_bytes()),
                    false,
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, classify, extraction);
criterion_main!(benches);
