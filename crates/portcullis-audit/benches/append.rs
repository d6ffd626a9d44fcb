//! Audit appends as statements make them: one at a time (each waits for its
//! own commit and fsync), and many at once from concurrent sessions (group
//! commit: one transaction and one fsync for the batch).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis_audit::{AuditLog, AuditOptions};
use serde_json::json;

fn entry(n: u64) -> serde_json::Value {
    json!({
        "event": "session.statement",
        "session": "pg-bench-1",
        "principal": "alice@example.com",
        "target": "demo",
        "phase": "query",
        "statement": {"kind": "select", "command": "SELECT", "tables": ["pgbench_accounts"],
                      "text": format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n}")},
        "decision": {"effect": "allow", "policies": ["eng-read-write"], "policy_version": "sha256:0123456789ab"},
    })
}

fn append(c: &mut Criterion) {
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        eprintln!("no tokio runtime");
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("no temporary directory");
        return;
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let audit = match AuditLog::open(&dir.path().join("audit.db"), key, AuditOptions::default()) {
        Ok(audit) => audit,
        Err(e) => {
            eprintln!("cannot open the audit log: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("audit");
    let mut n = 0u64;
    group.bench_function("append, one durable entry", |b| {
        b.to_async(&runtime).iter(|| {
            n += 1;
            let audit = audit.clone();
            let body = entry(n);
            async move { audit.append(&body).await.map(|_| ()).unwrap_or(()) }
        })
    });
    for batch in [8usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("append, concurrent entries", batch),
            &batch,
            |b, &batch| {
                b.to_async(&runtime).iter(|| {
                    let bodies: Vec<serde_json::Value> =
                        (0..batch as u64).map(|i| entry(n + i)).collect();
                    n += batch as u64;
                    let audit = audit.clone();
                    async move {
                        let appends = bodies.iter().map(|body| audit.append(body));
                        for result in futures_util::future::join_all(appends).await {
                            let _ = result;
                        }
                    }
                })
            },
        );
    }
    group.finish();
    let _ = runtime.block_on(audit.shutdown());
}

criterion_group!(benches, append);
criterion_main!(benches);
