//! DataRow masking: the per-row cost a masked result adds, for column rules
//! (whole values) and content rules (text scanned), against copying the row.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_mask::{ColumnMeta, HashKey, MaskCounts, MaskRules, Masker};
use portcullis_pg::codec::result::write_data_row;
use portcullis_pg::masking::{mask_row, ColumnPlan, ResultPlan};
use std::hint::black_box;

const RULES: &str = r#"
[[rule]]
id = "email"
columns = ["customers.email"]
strategy = "partial"

[[rule]]
id = "card"
columns = ["customers.card_number"]
strategy = "partial"

[[rule]]
id = "national-id"
columns = ["customers.national_id"]
strategy = "hash"

[[rule]]
id = "pii-in-text"
detectors = ["email", "payment_card"]
strategy = "partial"
"#;

fn meta<'a>(column: &'a str) -> ColumnMeta<'a> {
    ColumnMeta {
        schema: "public",
        table: "customers",
        column,
        type_name: "text",
    }
}

fn bench(c: &mut Criterion) {
    let rules =
        MaskRules::from_files(&[("masks.toml".to_string(), RULES.to_string())]).unwrap_or_default();
    let masker = Masker::new(
        &rules,
        &["email", "card", "national-id", "pii-in-text"],
        HashKey::new([7; 32]),
    );
    let columns = ["id", "name", "email", "card_number", "national_id", "notes"];
    let plan = ResultPlan {
        columns: columns
            .iter()
            .map(|name| {
                let meta = meta(name);
                ColumnPlan {
                    name: name.to_string(),
                    whole: masker.column_rule(&meta).map(|rule| (rule, false)),
                    content: Some(masker.content_plan(Some(&meta))).filter(|p| !p.is_empty()),
                    ..ColumnPlan::default()
                }
            })
            .collect(),
    };
    let notes = "prefers email; called on tuesday about the delivery window, all fine";
    let values: Vec<Option<&[u8]>> = vec![
        Some(b"1"),
        Some(b"Jane Doe"),
        Some(b"jane@example.com"),
        Some(b"4242 4242 4242 4242"),
        Some(b"123-45-6789"),
        Some(notes.as_bytes()),
    ];
    let mut row = BytesMut::new();
    write_data_row(&mut row, &values);
    let body = row.get(5..).unwrap_or_default().to_vec();

    let mut group = c.benchmark_group("datarow");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("copy_only", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(body.len() + 5);
            out.extend_from_slice(black_box(&body));
            black_box(out)
        })
    });
    group.bench_function("mask_columns_and_content", |b| {
        let mut counts = MaskCounts::default();
        b.iter(|| {
            black_box(mask_row(
                &masker,
                &plan,
                black_box(&body),
                &mut counts,
                &mut false,
            ))
        })
    });
    let columns_only = ResultPlan {
        columns: plan
            .columns
            .iter()
            .map(|c| ColumnPlan {
                content: None,
                ..c.clone()
            })
            .collect(),
    };
    group.bench_function("mask_columns_only", |b| {
        let mut counts = MaskCounts::default();
        b.iter(|| {
            black_box(mask_row(
                &masker,
                &columns_only,
                black_box(&body),
                &mut counts,
                &mut false,
            ))
        })
    });
    let content_only = ResultPlan {
        columns: plan
            .columns
            .iter()
            .map(|c| ColumnPlan {
                whole: None,
                ..c.clone()
            })
            .collect(),
    };
    group.bench_function("content_only_nothing_found", |b| {
        let clean: Vec<Option<&[u8]>> = vec![
            Some(b"1"),
            Some(b"Jane Doe"),
            Some(b"no email here"),
            Some(b"no card"),
            Some(b"none"),
            Some(notes.as_bytes()),
        ];
        let mut clean_row = BytesMut::new();
        write_data_row(&mut clean_row, &clean);
        let clean_body = clean_row.get(5..).unwrap_or_default().to_vec();
        let mut counts = MaskCounts::default();
        b.iter(|| {
            black_box(mask_row(
                &masker,
                &content_only,
                black_box(&clean_body),
                &mut counts,
                &mut false,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
