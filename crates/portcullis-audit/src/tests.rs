//! Tests of the whole log: group commit under concurrency, the write-ahead
//! promise when the store is locked, shutdown and restart. Tampering tests
//! live in `verify.rs`, key file tests in `keys.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde_json::json;

use crate::{tail, verify, AuditError, AuditLog, AuditOptions};

pub(crate) fn test_key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

pub(crate) fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit.db")
}

/// Options that sign only every `checkpoint_every` entries, never on time.
pub(crate) fn counted_checkpoints(checkpoint_every: u64) -> AuditOptions {
    AuditOptions {
        checkpoint_every,
        checkpoint_interval: Duration::from_secs(3600),
        ..AuditOptions::default()
    }
}

/// Writes entries 1..=n_entries one after the other (one batch each) and
/// shuts the log down.
pub(crate) async fn write_sealed_store(
    path: &Path,
    key: &SigningKey,
    n_entries: u64,
    checkpoint_every: u64,
) {
    let log = AuditLog::open(path, key.clone(), counted_checkpoints(checkpoint_every)).unwrap();
    for n in 1..=n_entries {
        let seq = log
            .append(&json!({"n": n, "action": "query", "text": format!("select {n}")}))
            .await
            .unwrap();
        assert_eq!(seq, n);
    }
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_contiguous_seqs_in_fewer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(1);
    let log = AuditLog::open(&path, key.clone(), AuditOptions::default()).unwrap();
    let n_tasks = 1000;
    // All tasks start appending at once, as sessions do under load.
    let barrier = Arc::new(tokio::sync::Barrier::new(n_tasks));
    let mut tasks = Vec::new();
    for task_idx in 0..n_tasks {
        let log = log.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let seq = log.append(&json!({"task": task_idx})).await.unwrap();
            (task_idx, seq)
        }));
    }
    let mut seq_of_task = HashMap::new();
    for task in tasks {
        let (task_idx, seq) = task.await.unwrap();
        seq_of_task.insert(task_idx, seq);
    }
    let mut seqs: Vec<u64> = seq_of_task.values().copied().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());

    let stats = log.stats();
    assert_eq!(stats.entries, 1000);
    assert_eq!(stats.failed_batches, 0);
    assert!(
        stats.commits < stats.entries,
        "appends were not batched: {} commits for {} entries",
        stats.commits,
        stats.entries
    );
    log.shutdown().await.unwrap();

    // Each task was answered with the seq of its own entry.
    let entries = tail(&path, 1000).unwrap();
    assert_eq!(entries.len(), 1000);
    for entry in &entries {
        let task_idx = entry.body["task"].as_u64().unwrap() as usize;
        assert_eq!(seq_of_task[&task_idx], entry.seq);
    }
    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.entries_checked, 1000);
    assert_eq!(report.last_seq, 1000);
    assert_eq!(report.last_checkpoint_seq, Some(1000));
    assert_eq!(report.entries_after_last_checkpoint, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_fails_while_another_process_holds_the_lock_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(2);
    let options = AuditOptions {
        busy_timeout: Duration::from_millis(200),
        ..AuditOptions::default()
    };
    let log = AuditLog::open(&path, key.clone(), options).unwrap();
    assert_eq!(log.append(&json!({"before": "lock"})).await.unwrap(), 1);

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();

    // Several sessions at once: every one of them is refused, none hangs.
    let mut attempts = Vec::new();
    for n in 0..5 {
        let log = log.clone();
        attempts.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), log.append(&json!({"during": n}))).await
        }));
    }
    for attempt in attempts {
        let result = attempt
            .await
            .unwrap()
            .expect("append hung on a locked store");
        let error = result.expect_err("append reported success on a locked store");
        assert!(matches!(error, AuditError::Locked { .. }), "{error:?}");
        assert!(error.is_store_unavailable());
        assert!(
            error.to_string().contains("locked by another process"),
            "{error}"
        );
    }
    assert!(log.stats().failed_batches >= 1);
    assert!(log.is_running());

    other.execute_batch("COMMIT").unwrap();
    drop(other);
    assert_eq!(log.append(&json!({"after": "lock"})).await.unwrap(), 2);
    assert_eq!(log.append(&json!({"after": "lock"})).await.unwrap(), 3);
    log.shutdown().await.unwrap();

    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.entries_checked, 3);
    assert_eq!(report.last_seq, 3);
    let bodies: Vec<_> = tail(&path, 10)
        .unwrap()
        .into_iter()
        .map(|entry| entry.body)
        .collect();
    assert_eq!(
        bodies,
        vec![
            json!({"before": "lock"}),
            json!({"after": "lock"}),
            json!({"after": "lock"})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_signs_the_head_and_a_reopened_log_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(3);

    let log = AuditLog::open(&path, key.clone(), counted_checkpoints(1000)).unwrap();
    assert!(log.is_running());
    for n in 1..=5u64 {
        assert_eq!(log.append(&json!({"run": 1, "n": n})).await.unwrap(), n);
    }
    assert_eq!(log.stats().checkpoints, 0);
    log.shutdown().await.unwrap();
    assert_eq!(log.stats().checkpoints, 1);
    assert!(!log.is_running());
    let error = log.append(&json!({"late": true})).await.unwrap_err();
    assert!(matches!(error, AuditError::ShutDown), "{error:?}");
    log.shutdown().await.unwrap();

    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.last_seq, 5);
    assert_eq!(report.checkpoints_checked, 1);
    assert_eq!(report.last_checkpoint_seq, Some(5));

    let log = AuditLog::open(&path, key.clone(), counted_checkpoints(1000)).unwrap();
    for n in 6..=8u64 {
        assert_eq!(log.append(&json!({"run": 2, "n": n})).await.unwrap(), n);
    }
    log.shutdown().await.unwrap();

    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.entries_checked, 8);
    assert_eq!(report.checkpoints_checked, 2);
    assert_eq!(report.last_checkpoint_seq, Some(8));
    assert_eq!(report.entries_after_last_checkpoint, 0);
    let last = tail(&path, 3).unwrap();
    assert_eq!(
        last.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    assert_eq!(last[0].body, json!({"run": 2, "n": 6}));
}

#[tokio::test]
async fn shutdown_of_an_empty_log_writes_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(4);
    let log = AuditLog::open(&path, key.clone(), AuditOptions::default()).unwrap();
    log.shutdown().await.unwrap();
    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.entries_checked, 0);
    assert_eq!(report.last_seq, 0);
    assert_eq!(report.last_checkpoint_seq, None);
    assert!(tail(&path, 5).unwrap().is_empty());
}

#[tokio::test]
async fn dropping_every_handle_signs_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(5);
    let log = AuditLog::open(&path, key.clone(), counted_checkpoints(1000)).unwrap();
    for _ in 0..3 {
        log.append(&json!({"x": 1})).await.unwrap();
    }
    drop(log);
    // The writer thread is detached; wait for its final checkpoint.
    let mut report = verify(&path, &key.verifying_key()).unwrap();
    for _ in 0..100 {
        if report.last_checkpoint_seq.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        report = verify(&path, &key.verifying_key()).unwrap();
    }
    assert_eq!(report.last_checkpoint_seq, Some(3));
}

#[tokio::test]
async fn reopening_with_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    write_sealed_store(&path, &test_key(6), 2, 1000).await;
    let error = AuditLog::open(&path, test_key(7), AuditOptions::default()).unwrap_err();
    assert!(matches!(error, AuditError::KeyMismatch { .. }), "{error:?}");
    assert!(error.to_string().contains("audit-signing.key"), "{error}");
}

#[tokio::test]
async fn checkpoints_follow_the_entry_count_and_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(8);
    let log = AuditLog::open(&path, key.clone(), counted_checkpoints(10)).unwrap();
    for _ in 0..25 {
        log.append(&json!({})).await.unwrap();
    }
    assert_eq!(log.stats().checkpoints, 2);
    log.shutdown().await.unwrap();
    assert_eq!(
        verify(&path, &key.verifying_key())
            .unwrap()
            .checkpoints_checked,
        3
    );

    let timed = AuditOptions {
        checkpoint_every: u64::MAX,
        checkpoint_interval: Duration::ZERO,
        ..AuditOptions::default()
    };
    let log = AuditLog::open(&path, key.clone(), timed).unwrap();
    for _ in 0..3 {
        log.append(&json!({})).await.unwrap();
    }
    assert_eq!(log.stats().checkpoints, 3);
    log.shutdown().await.unwrap();
    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.checkpoints_checked, 6);
    assert_eq!(report.last_seq, 28);
}

#[tokio::test]
async fn a_body_that_cannot_be_encoded_is_refused_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let log = AuditLog::open(&path, test_key(9), AuditOptions::default()).unwrap();
    let mut not_json = HashMap::new();
    not_json.insert((1u8, 2u8), "tuple keys are not json");
    let error = log.append(&not_json).await.unwrap_err();
    assert!(matches!(error, AuditError::Encode(_)), "{error:?}");
    assert_eq!(log.append("next").await.unwrap(), 1);
    log.shutdown().await.unwrap();
}

#[test]
fn opening_a_path_that_is_not_a_database_fails() {
    let dir = tempfile::tempdir().unwrap();
    let error = AuditLog::open(dir.path(), test_key(10), AuditOptions::default()).unwrap_err();
    assert!(matches!(error, AuditError::Open { .. }), "{error:?}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, b"this is not an sqlite database, not at all").unwrap();
    let error = AuditLog::open(&garbage, test_key(10), AuditOptions::default()).unwrap_err();
    assert!(matches!(error, AuditError::Open { .. }), "{error:?}");
}

#[tokio::test]
async fn tail_returns_the_last_entries_in_ascending_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    write_sealed_store(&path, &test_key(11), 7, 1000).await;
    let entries = tail(&path, 3).unwrap();
    assert_eq!(
        entries.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert_eq!(entries[2].body["n"], json!(7));
    assert_eq!(entries[2].hash.len(), 64);
    assert!(entries
        .windows(2)
        .all(|pair| pair[0].time_ms <= pair[1].time_ms));
    assert_eq!(tail(&path, 100).unwrap().len(), 7);
    assert!(tail(&path, 0).unwrap().is_empty());
    assert!(matches!(
        tail(&dir.path().join("missing.db"), 1),
        Err(AuditError::Read { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_racing_a_shutdown_are_either_written_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(12);
    let log = AuditLog::open(&path, key.clone(), AuditOptions::default()).unwrap();
    let mut tasks = Vec::new();
    for task_idx in 0..300u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            if task_idx % 7 == 0 {
                tokio::task::yield_now().await;
            }
            (task_idx, log.append(&json!({"task": task_idx})).await)
        }));
    }
    let shutdowns =
        [log.clone(), log.clone()].map(|log| tokio::spawn(async move { log.shutdown().await }));
    let mut written = HashMap::new();
    for task in tasks {
        let (task_idx, result) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("append hung across a shutdown")
            .unwrap();
        match result {
            Ok(seq) => {
                written.insert(seq, task_idx);
            }
            Err(AuditError::ShutDown) => {}
            Err(error) => panic!("unexpected error: {error:?}"),
        }
    }
    for shutdown in shutdowns {
        shutdown.await.unwrap().unwrap();
    }
    assert!(!log.is_running());

    // Every entry reported written is in the store, under its seq, and
    // nothing else is.
    let entries = tail(&path, 1000).unwrap();
    assert_eq!(entries.len(), written.len());
    for entry in &entries {
        assert_eq!(
            entry.body["task"].as_u64(),
            written.get(&entry.seq).copied()
        );
    }
    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.last_seq, written.len() as u64);
    assert_eq!(report.entries_after_last_checkpoint, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_tail_read_a_store_the_gateway_is_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(13);
    let log = AuditLog::open(&path, key.clone(), counted_checkpoints(4)).unwrap();
    for _ in 0..10 {
        log.append(&json!({"live": true})).await.unwrap();
    }
    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.last_seq, 10);
    assert_eq!(report.last_checkpoint_seq, Some(8));
    assert_eq!(report.entries_after_last_checkpoint, 2);
    assert_eq!(tail(&path, 1).unwrap()[0].seq, 10);
    assert_eq!(log.append(&json!({"live": true})).await.unwrap(), 11);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_writer_signs_its_last_entries_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let key = test_key(9);
    let options = AuditOptions {
        checkpoint_every: 1000,
        checkpoint_interval: Duration::from_millis(200),
        ..AuditOptions::default()
    };
    let log = AuditLog::open(&path, key.clone(), options).unwrap();
    // The first batch is signed at once (the interval has passed since
    // start-up is not guaranteed), so look at the ones after it.
    tokio::time::sleep(Duration::from_millis(250)).await;
    for n in 0..3 {
        log.append(&json!({ "n": n })).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.append(&json!({ "n": 3 })).await.unwrap();
    // No more appends: the writer must sign entry 4 on its own.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let report = verify(&path, &key.verifying_key()).unwrap();
    assert_eq!(report.last_seq, 4);
    assert_eq!(report.last_checkpoint_seq, Some(4), "{report:?}");
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_store_removed_or_replaced_under_the_writer_takes_nothing_more() {
    for replace in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let log = AuditLog::open(&path, test_key(1), AuditOptions::default()).unwrap();
        log.append(&json!({"n": 1})).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        if replace {
            std::fs::write(&path, b"").unwrap();
        }
        let error = log.append(&json!({"n": 2})).await.unwrap_err();
        assert!(matches!(error, AuditError::Gone { .. }), "{error}");
        assert!(error.to_string().contains("put the store back"), "{error}");
        // Every later entry is refused too, and the log says it is not running.
        assert!(log.append(&json!({"n": 3})).await.is_err());
        assert!(!log.is_running());
    }
}
