//! Recording a session: a statement event and the result the client gets
//! (a pgbench-sized one-row result, a 100-row one, and a 1 MiB one that
//! fills and seals a chunk), each one write(2) to the session's chunk file.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_record::format::{Start, Statement, VERSION};
use portcullis_record::{Recordings, Settings};
use std::hint::black_box;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn result(rows: usize) -> Vec<u8> {
    let mut t = 1i16.to_be_bytes().to_vec();
    t.extend_from_slice(b"abalance\0");
    t.extend_from_slice(&[0u8; 18]);
    let mut out = frame(b'T', &t);
    for i in 0..rows {
        let value = format!("{}", i * 7919);
        let mut d = 1i16.to_be_bytes().to_vec();
        d.extend_from_slice(&(value.len() as i32).to_be_bytes());
        d.extend_from_slice(value.as_bytes());
        out.extend(frame(b'D', &d));
    }
    out.extend(frame(b'C', format!("SELECT {rows}\0").as_bytes()));
    out.extend(frame(b'Z', b"I"));
    out
}

fn record(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("no temporary directory");
        return;
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
    let Ok(recordings) = Recordings::open(&dir.path().join("recordings"), key, Settings::default())
    else {
        eprintln!("cannot open the recordings directory");
        return;
    };
    let Ok(recorder) = recordings.start(Start {
        version: VERSION,
        session: "bench".into(),
        principal: "alice@example.com".into(),
        target: "demo".into(),
        client_addr: "127.0.0.1:1".into(),
        started_ms: 0,
    }) else {
        eprintln!("cannot start a recording");
        return;
    };
    let statement = Statement {
        phase: "execute".into(),
        text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1".into(),
        effect: "allow".into(),
        policies: vec!["eng-read-write".into()],
        reason: String::new(),
        parameters: vec![Some("4711".into())],
        parameters_withheld: false,
    };
    let mut group = c.benchmark_group("record");
    group.bench_function("statement event", |b| {
        b.iter(|| recorder.statement(black_box(&statement)))
    });
    for rows in [1usize, 100] {
        let bytes = result(rows);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("result to the client, {rows} rows"), |b| {
            b.iter(|| recorder.to_client(black_box(&bytes)))
        });
    }
    // A 1 MiB result: every iteration fills, and seals, a chunk.
    let big = {
        let mut row = 1i16.to_be_bytes().to_vec();
        row.extend_from_slice(&(1000i32).to_be_bytes());
        row.extend_from_slice(&[b'x'; 1000]);
        let row = frame(b'D', &row);
        let mut out = Vec::new();
        for _ in 0..1040 {
            out.extend_from_slice(&row);
        }
        out.extend(frame(b'C', b"SELECT 1040\0"));
        out
    };
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("result to the client, 1 MiB (a chunk sealed)", |b| {
        b.iter(|| recorder.to_client(black_box(&big)))
    });
    group.finish();
    let _ = recorder.finish("done");
}

criterion_group!(benches, record);
criterion_main!(benches);
