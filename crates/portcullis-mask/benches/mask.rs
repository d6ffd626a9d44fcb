//! Masking hot paths: content detectors over long mixed text (where matches
//! are rare), a short clean value, JSON, whole-value masking per strategy,
//! and building a session's masker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_mask::{ColumnMeta, HashKey, MaskCounts, MaskRules, Masker, BUILTIN_DETECTORS};

fn rules(text: &str) -> MaskRules {
    MaskRules::from_files(&[("bench.masks.toml".to_owned(), text.to_owned())]).unwrap()
}

fn masker(rules: &MaskRules) -> Masker {
    let ids: Vec<&str> = rules.rules().iter().map(|rule| rule.id.as_str()).collect();
    Masker::new(rules, &ids, HashKey::new([7; 32]))
}

/// Log lines and customer notes, with an email or a card in about one line
/// of 40, and dates, times, amounts and ids (near misses) everywhere.
fn mixed_text(len: usize) -> String {
    let lines = [
        "2024-01-15T10:30:00.123Z INFO order 48213 shipped to customer 8812, total 99.90 EUR",
        "Customer called about the delivery on 15.01.2024, asked to leave the parcel at the door.",
        "2024-01-15 10:31:07 WARN retrying request id=7f3a9c2e after 250 ms (attempt 2 of 5)",
        "Note: prefers contact by phone in the afternoon; account since 2019, tier gold, 3 open tickets",
        "GET /api/v1/orders?page=2&per_page=50 200 12ms ua=Mozilla/5.0 (X11; Linux x86_64)",
    ];
    let mut text = String::with_capacity(len + 200);
    let mut i = 0;
    while text.len() < len {
        match i % 40 {
            13 => text.push_str("Please send the invoice to jane.doe@example.com before Friday.\n"),
            33 => text.push_str("Paid with card 4242 4242 4242 4242, expiry 12/26.\n"),
            n => {
                text.push_str(lines[n % lines.len()]);
                text.push('\n');
            }
        }
        i += 1;
    }
    text.truncate(len);
    text
}

fn content(c: &mut Criterion) {
    let every_detector = format!(
        "[[rule]]\nid = \"all\"\ndetectors = [{}]\nstrategy = \"partial\"\n",
        BUILTIN_DETECTORS
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let email_and_card = "[[rule]]\nid = \"some\"\ndetectors = [\"email\", \"payment_card\"]\nstrategy = \"partial\"\n";
    let text = mixed_text(64 * 1024);
    let clean = mixed_text(64 * 1024)
        .replace("jane.doe@example.com", "the billing team")
        .replace("4242 4242 4242 4242", "ending in 42");

    let mut group = c.benchmark_group("content_64k");
    group.throughput(Throughput::Bytes(text.len() as u64));
    for (name, rules_text) in [
        ("all_detectors", every_detector.as_str()),
        ("email_and_card", email_and_card),
    ] {
        let rules = rules(rules_text);
        let masker = masker(&rules);
        let plan = masker.content_plan(None);
        let mut counts = MaskCounts::default();
        assert!(masker
            .mask_content(&plan, text.as_bytes(), false, &mut counts)
            .unwrap()
            .is_some());
        group.bench_function(format!("{name}/rare_matches"), |b| {
            b.iter(|| {
                masker
                    .mask_content(&plan, black_box(text.as_bytes()), false, &mut counts)
                    .unwrap()
            })
        });
        assert!(masker
            .mask_content(&plan, clean.as_bytes(), false, &mut counts)
            .unwrap()
            .is_none());
        group.bench_function(format!("{name}/no_match"), |b| {
            b.iter(|| {
                masker
                    .mask_content(&plan, black_box(clean.as_bytes()), false, &mut counts)
                    .unwrap()
            })
        });
    }
    group.finish();

    let rules = rules(&every_detector);
    let masker = masker(&rules);
    let plan = masker.content_plan(None);
    let mut counts = MaskCounts::default();
    let short =
        "Customer called about the delivery on 15.01.2024, asked to leave the parcel at the door.";
    c.bench_function("content/clean_short_value", |b| {
        b.iter(|| {
            masker
                .mask_content(&plan, black_box(short.as_bytes()), false, &mut counts)
                .unwrap()
        })
    });
}

fn json(c: &mut Criterion) {
    let rules = rules(
        "[[rule]]\nid = \"keys\"\njson_keys = [\"ssn\", \"card*\"]\nstrategy = \"redact\"\n\n\
         [[rule]]\nid = \"found\"\ndetectors = [\"email\", \"payment_card\", \"phone\"]\nstrategy = \"partial\"\n",
    );
    let masker = masker(&rules);
    let plan = masker.content_plan(None);
    let mut counts = MaskCounts::default();
    let mut items = Vec::new();
    for i in 0..40 {
        items.push(format!(
            r#"{{"id":{i},"name":"Customer {i}","ssn":"123-45-67{:02}","address":{{"street":"Main St {i}","city":"Springfield","zip":"6270{}"}},"tags":["gold","newsletter"],"note":"{}","total":{i}.5}}"#,
            i % 100,
            i % 10,
            if i % 10 == 3 { "write to jane@example.com" } else { "no notes" }
        ));
    }
    let document = format!("[{}]", items.join(","));
    let clean: String = document
        .replace("\"ssn\"", "\"sn\"")
        .replace("jane@example.com", "the team");
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Bytes(document.len() as u64));
    group.bench_function("masked_keys_and_findings", |b| {
        b.iter(|| {
            masker
                .mask_content(&plan, black_box(document.as_bytes()), true, &mut counts)
                .unwrap()
        })
    });
    assert!(masker
        .mask_content(&plan, clean.as_bytes(), true, &mut counts)
        .unwrap()
        .is_none());
    group.bench_function("nothing_to_mask", |b| {
        b.iter(|| {
            masker
                .mask_content(&plan, black_box(clean.as_bytes()), true, &mut counts)
                .unwrap()
        })
    });
    group.finish();
}

fn whole_values(c: &mut Criterion) {
    let column = ColumnMeta {
        schema: "public",
        table: "customers",
        column: "email",
        type_name: "text",
    };
    let mut group = c.benchmark_group("column");
    for strategy in ["redact", "partial", "hash", "null"] {
        let rules = rules(&format!(
            "[[rule]]\nid = \"c\"\ncolumns = [\"email\"]\nstrategy = \"{strategy}\"\n"
        ));
        let masker = masker(&rules);
        let rule = masker.column_rule(&column).unwrap();
        let mut counts = MaskCounts::default();
        group.bench_function(strategy, |b| {
            b.iter(|| {
                masker.mask_whole(rule, black_box(b"jane.doe@example.com"), false, &mut counts)
            })
        });
    }
    group.finish();
}

fn build_masker(c: &mut Criterion) {
    let mut text = String::new();
    for i in 0..20 {
        match i % 3 {
            0 => text.push_str(&format!("[[rule]]\nid = \"col-{i}\"\ncolumns = [\"*.col_{i}\"]\nstrategy = \"hash\"\n\n")),
            1 => text.push_str(&format!(
                "[[rule]]\nid = \"content-{i}\"\ncolumns = [\"notes_{i}\"]\ndetectors = [\"email\", \"phone\", \"payment_card\"]\nstrategy = \"partial\"\n\n"
            )),
            _ => text.push_str(&format!("[[rule]]\nid = \"json-{i}\"\njson_keys = [\"key_{i}\"]\nstrategy = \"redact\"\n\n")),
        }
    }
    let rules = rules(&text);
    let ids: Vec<&str> = rules.rules().iter().map(|rule| rule.id.as_str()).collect();
    c.bench_function("masker_new/20_rules", |b| {
        b.iter(|| Masker::new(black_box(&rules), &ids, HashKey::new([7; 32])))
    });
}

criterion_group!(benches, content, json, whole_values, build_masker);
criterion_main!(benches);
