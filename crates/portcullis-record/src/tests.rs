use super::*;
use crate::format::{Kind, Start, Statement};

fn start(id: &str) -> Start {
    Start {
        version: format::VERSION,
        session: id.into(),
        principal: "alice".into(),
        target: "demo".into(),
        client_addr: "127.0.0.1:1".into(),
        started_ms: 1_700_000_000_000,
    }
}

/// An allowed statement, with these parameters.
fn query(text: &str, parameters: Vec<Option<String>>) -> Statement {
    Statement {
        phase: "query".into(),
        text: text.into(),
        effect: "allow".into(),
        policies: vec![],
        reason: String::new(),
        parameters,
        parameters_withheld: false,
    }
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn result(rows: &[&str]) -> Vec<u8> {
    let mut t = 1i16.to_be_bytes().to_vec();
    t.extend_from_slice(b"email\0");
    t.extend_from_slice(&[0u8; 18]);
    let mut out = frame(b'T', &t);
    for row in rows {
        let mut d = 1i16.to_be_bytes().to_vec();
        d.extend_from_slice(&(row.len() as i32).to_be_bytes());
        d.extend_from_slice(row.as_bytes());
        out.extend(frame(b'D', &d));
    }
    out.extend(frame(b'C', format!("SELECT {}\0", rows.len()).as_bytes()));
    out.extend(frame(b'Z', b"I"));
    out
}

fn recordings(dir: &tempfile::TempDir, settings: Settings) -> Recordings {
    Recordings::open(
        &dir.path().join("recordings"),
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
        settings,
    )
    .unwrap()
}

fn record_session(recordings: &Recordings, id: &str, rows: usize) -> (String, String) {
    let recorder = recordings.start(start(id)).unwrap();
    for i in 0..rows {
        recorder
            .statement(&query(
                &format!("select email from customers limit {i}"),
                vec![],
            ))
            .unwrap();
        recorder.to_client(&result(&["j***@example.com"])).unwrap();
    }
    recorder.finish("client terminated").unwrap()
}

#[test]
fn a_recording_verifies_and_renders_what_the_client_saw() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = recordings(
        &dir,
        Settings {
            chunk_bytes: 200,
            ..Settings::default()
        },
    );
    let (id, hash) = record_session(&recordings, "s1", 5);
    let manifest = recordings.verify(&id).unwrap();
    assert_eq!(manifest.final_hash, hash);
    assert!(
        manifest.chunks.len() > 2,
        "small chunks: {}",
        manifest.chunks.len()
    );
    let text: String = render(&recordings.records(&id).unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(
        text.contains("select email from customers limit 4"),
        "{text}"
    );
    assert!(
        text.contains(" j***@example.com\n(1 row)\nSELECT 1\n"),
        "{text}"
    );
    assert!(text.contains("session ended: client terminated"), "{text}");
    let listed = recordings.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].statements, 5);
    assert_eq!(listed[0].outcome.as_deref(), Some("client terminated"));

    // A view of the beginning: the start and the end always, the rest
    // while it fits, and what was left out counted.
    let all = recordings.records(&id).unwrap();
    let (whole, none_left) = recordings.records_within(&id, usize::MAX).unwrap();
    assert_eq!((whole.len(), none_left), (all.len(), 0));
    let (first, left_out) = recordings.records_within(&id, 150).unwrap();
    assert!(
        first.len() < all.len() && left_out > 0,
        "{} {left_out}",
        first.len()
    );
    assert!(first.first().is_some_and(|r| r.kind == Kind::Start));
    assert!(first.last().is_some_and(|r| r.kind == Kind::End));
    let kept: usize = first.iter().map(|r| r.payload.len()).sum();
    let total: usize = all.iter().map(|r| r.payload.len()).sum();
    assert_eq!(kept as u64 + left_out, total as u64);
}

#[test]
fn every_kind_of_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = recordings(
        &dir,
        Settings {
            chunk_bytes: 200,
            ..Settings::default()
        },
    );
    let chunk = |id: &str, n: u32| {
        dir.path()
            .join("recordings")
            .join(id)
            .join(format!("{n:06}.chunk"))
    };

    let (id, _) = record_session(&recordings, "changed", 5);
    let mut bytes = std::fs::read(chunk(&id, 2)).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    std::fs::write(chunk(&id, 2), bytes).unwrap();
    assert!(matches!(
        recordings.verify(&id),
        Err(VerifyError::Changed { n: 2, .. })
    ));

    let (id, _) = record_session(&recordings, "removed", 5);
    std::fs::remove_file(chunk(&id, 3)).unwrap();
    assert_eq!(recordings.verify(&id), Err(VerifyError::Missing(3)));

    let (id, _) = record_session(&recordings, "reordered", 5);
    let (a, b) = (chunk(&id, 2), chunk(&id, 3));
    let tmp = a.with_extension("tmp");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    assert!(matches!(
        recordings.verify(&id),
        Err(VerifyError::Changed { n: 2, .. })
    ));

    let (id, _) = record_session(&recordings, "truncated", 5);
    let bytes = std::fs::read(chunk(&id, 2)).unwrap();
    std::fs::write(chunk(&id, 2), &bytes[..bytes.len() / 2]).unwrap();
    let error = recordings.verify(&id).unwrap_err();
    assert!(error.to_string().contains("(truncated)"), "{error}");

    // A chunk added under a name that parses as chunk 1.
    let (id, _) = record_session(&recordings, "stray", 5);
    std::fs::copy(
        chunk(&id, 2),
        dir.path().join("recordings").join(&id).join("1.chunk"),
    )
    .unwrap();
    assert_eq!(
        recordings.verify(&id),
        Err(VerifyError::Stray("1.chunk".into()))
    );

    let (id, _) = record_session(&recordings, "resigned", 5);
    let path = dir
        .path()
        .join("recordings")
        .join(&id)
        .join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("alice", "mallory")).unwrap();
    assert_eq!(recordings.verify(&id), Err(VerifyError::Signature));
}

#[test]
fn a_recording_left_open_is_sealed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = recordings(&dir, Settings::default());
    let recorder = first.start(start("crashed")).unwrap();
    recorder
        .statement(&query("select 1", vec![Some("42".into()), None]))
        .unwrap();
    recorder.to_client(&result(&["1"])).unwrap();
    // The gateway dies: the recorder is never finished, and the next
    // gateway may take the directory.
    std::mem::forget(recorder);
    drop(first);
    let second = recordings(&dir, Settings::default());
    let manifest = second.verify("crashed").unwrap();
    assert!(manifest.recovered);
    let text: String = render(&second.records("crashed").unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(
        text.contains("select 1") && text.contains(" 1\n(1 row)"),
        "{text}"
    );
}

#[test]
fn the_gateway_knows_which_recordings_it_is_writing() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = recordings(&dir, Settings::default());
    let recorder = recordings.start(start("live")).unwrap();
    assert_eq!(recordings.is_live("live"), Some(true));
    assert_eq!(recordings.is_live("other"), Some(false));
    // A reader, in another process, cannot know.
    let reader = Recordings::reader(&dir.path().join("recordings"), recordings.verifying_key());
    assert_eq!(reader.is_live("live"), None);
    recorder.finish("client terminated").unwrap();
    drop(recorder);
    assert_eq!(recordings.is_live("live"), Some(false));
}

#[test]
fn two_gateways_never_record_in_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = recordings(&dir, Settings::default());
    let second = Recordings::open(
        &dir.path().join("recordings"),
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
        Settings::default(),
    );
    let Err(error) = second else {
        panic!("a second writer opened the directory")
    };
    assert!(
        error.to_string().contains("another gateway records"),
        "{error}"
    );
}

#[test]
fn rows_over_the_cap_are_left_out_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = recordings(
        &dir,
        Settings {
            max_rows_per_statement: 2,
            ..Settings::default()
        },
    );
    let recorder = recordings.start(start("capped")).unwrap();
    recorder.to_client(&result(&["a", "b", "c", "d"])).unwrap();
    recorder.finish("done").unwrap();
    let text: String = render(&recordings.records("capped").unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(text.contains(" a\n b\n(2 rows)\n-- 2 more rows"), "{text}");
    assert!(!text.contains(" c\n"), "{text}");
}

#[test]
fn retention_lists_only_finished_recordings_that_ended_before_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = recordings(&dir, Settings::default());
    let (old, hash) = record_session(&recordings, "old", 1);
    let running = recordings.start(start("running")).unwrap();
    // Everything ended before "now + 1 day" is old enough.
    let listed = recordings.ended_before(u64::MAX, false).unwrap();
    assert_eq!(listed, vec![(old.clone(), hash)]);
    assert!(!recordings.records(&old).unwrap().is_empty());
    recordings.delete(&old).unwrap();
    assert!(recordings.records(&old).is_err());
    assert!(!recordings.records("running").unwrap().is_empty());
    drop(running);
    // Nothing ended before the epoch.
    record_session(&recordings, "new", 1);
    assert!(recordings.ended_before(0, false).unwrap().is_empty());
}

#[test]
fn an_asciicast_says_no_terminal_larger_than_a_player_can_show() {
    use crate::format::{Kind, Record, Resize};
    let resize = |t_ms, cols, rows| Record {
        kind: Kind::Resize,
        t_ms,
        payload: serde_json::to_vec(&Resize {
            channel: 0,
            cols,
            rows,
        })
        .unwrap(),
    };
    let mut output = 0u32.to_be_bytes().to_vec();
    output.extend_from_slice(b"$ ls\r\n");
    let records = vec![
        resize(0, 65535, 65535),
        Record {
            kind: Kind::Output,
            t_ms: 10,
            payload: output,
        },
        resize(20, 100, 40),
        resize(30, 4000, 30),
    ];
    let cast = crate::asciicast(&records);
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(512), Some(256))
    );
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0][2], "$ ls\r\n");
    assert_eq!(events[1][2], "100x40");
    assert_eq!(events[2][2], "512x30");
}

/// Found in attack: one wide cell padded every row of a large result to
/// its width, and a 264 KB recording was drawn as gigabytes.
#[test]
fn one_wide_cell_does_not_pad_every_row() {
    let wide = "x".repeat(100_000);
    let mut rows = vec![vec![wide.clone()]];
    rows.extend((0..10_000).map(|i| vec![i.to_string()]));
    let text = crate::read::table(&["v".to_string()], &rows);
    assert!(text.contains(&wide));
    assert!(text.len() < wide.len() + 10_000 * 50, "{}", text.len());
}

/// Found in attack: values too many or too long to keep were left out of
/// the recording without a word, and the replay read as if none were bound.
#[test]
fn values_not_kept_are_said_so_in_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = recordings(&dir, Settings::default());
    let recorder = recordings.start(start("withheld")).unwrap();
    let mut statement = query("update orders set total_cents = $1", Vec::new());
    statement.parameters_withheld = true;
    recorder.statement(&statement).unwrap();
    recorder
        .statement(&query("select $1", vec![Some("7".into())]))
        .unwrap();
    recorder.finish("client terminated").unwrap();
    let text: String = render(&recordings.records("withheld").unwrap())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(
        text.contains("update orders set total_cents = $1\n-- (bound values not kept"),
        "{text}"
    );
    assert!(text.contains("select $1\n-- $1 = \"7\"\n"), "{text}");
}
