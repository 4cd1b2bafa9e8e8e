use super::sidecar::{format_sidecar, mix, parse_sidecar, Sidecar};
use super::*;
use crate::store::read_events;
use crate::store::testdir::TempDir;
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};

fn setup(tag: &str) -> (TempDir, StateDir) {
    let t = TempDir::new(tag);
    let d = StateDir::open(&t.path().join("state")).unwrap();
    (t, d)
}

fn quick() -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Never,
        lock_timeout: Duration::from_millis(30),
        ..LogOptions::default()
    }
}

fn sidecar_of(seq: u64, size: u64, ino: u64) -> Sidecar {
    Sidecar {
        seq,
        size,
        ino,
        durable: 0,
    }
}

fn ev(log: &mut EventLog, name: &str) -> Option<u64> {
    log.append(1_000, name, &[("n", Val::U(1))]).unwrap()
}

fn file_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn file_seqs(path: &Path) -> Vec<u64> {
    file_lines(path)
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect()
}

fn all_seqs(d: &StateDir, since: Option<u64>) -> Vec<u64> {
    read_events(d.path(), since)
        .unwrap()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn append_raw(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn lines_carry_seq_and_fields_and_files_are_private() {
    let (_t, d) = setup("lines");
    let opts = LogOptions {
        fsync: FsyncPolicy::Always,
        ..LogOptions::default()
    };
    let mut log = EventLog::open(&d, opts).unwrap();
    let fields = [
        ("pid", Val::U(42)),
        ("comm", Val::B(b"enc \"x\"\n\xff")),
        ("delta", Val::I(-3)),
        ("ok", Val::Bool(false)),
        ("rule", Val::S("ffmpeg")),
    ];
    assert_eq!(log.append(7, "adopted", &fields).unwrap(), Some(1));
    assert_eq!(log.append(8, "limit\tset", &[]).unwrap(), Some(2));
    let lines = file_lines(&d.path().join("events.jsonl"));
    assert_eq!(lines.len(), 2);
    let v = &lines[0];
    assert_eq!(v["seq"], 1);
    assert_eq!(v["ts_ms"], 7);
    assert_eq!(v["event"], "adopted");
    assert_eq!(v["pid"], 42);
    assert_eq!(v["comm"], "enc \"x\"\n\u{fffd}");
    assert_eq!(v["delta"], -3);
    assert_eq!(v["ok"], false);
    assert_eq!(v["rule"], "ffmpeg");
    assert_eq!(lines[1]["event"], "limit\tset");
    for name in ["events.jsonl", "events.lock", "events.seq"] {
        assert_eq!(mode(&d.path().join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(d.path()), 0o700);
    assert!(log.take_error().is_none());
}

#[test]
fn reserved_field_names_are_refused() {
    let (_t, d) = setup("reserved");
    let mut log = EventLog::open(&d, quick()).unwrap();
    let err = log.append(1, "x", &[("seq", Val::U(9))]).unwrap_err();
    assert!(err.to_string().contains("\"seq\""), "{err}");
    assert_eq!(ev(&mut log, "fine"), Some(1));
}

#[test]
fn bad_options_are_refused() {
    let (_t, d) = setup("opts");
    for opts in [
        LogOptions { keep: 0, ..quick() },
        LogOptions {
            rotate_bytes: 0,
            ..quick()
        },
        LogOptions {
            queue_capacity: usize::MAX,
            ..quick()
        },
    ] {
        assert!(matches!(
            EventLog::open(&d, opts),
            Err(StoreError::Invalid(_))
        ));
    }
}

#[test]
fn torn_tail_is_cut_before_the_next_append() {
    let (_t, d) = setup("torn");
    let path = d.path().join("events.jsonl");
    let mut log = EventLog::open(&d, quick()).unwrap();
    for _ in 0..3 {
        ev(&mut log, "a");
    }
    // A crash mid-write by some writer leaves half a line.
    append_raw(&path, b"{\"seq\":4,\"ts_ms\":9,\"ev");
    assert_eq!(ev(&mut log, "b"), Some(4));
    assert_eq!(log.torn_repairs(), 1);
    assert_eq!(file_seqs(&path), vec![1, 2, 3, 4]);

    // A fresh writer (no memory of the file) repairs it the same way.
    append_raw(&path, b"{\"seq\":5,\"ts_ms\":9}");
    let mut other = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut other, "c"), Some(5));
    assert_eq!(other.torn_repairs(), 1);
    assert_eq!(file_seqs(&path), vec![1, 2, 3, 4, 5]);

    // A log that is nothing but a torn line becomes empty, then line 1.
    let (_t2, d2) = setup("torn-only");
    std::fs::write(d2.path().join("events.jsonl"), b"{\"seq\":1,\"ts").unwrap();
    let mut log = EventLog::open(&d2, quick()).unwrap();
    assert_eq!(ev(&mut log, "first"), Some(1));
    assert_eq!(file_seqs(&d2.path().join("events.jsonl")), vec![1]);
}

#[test]
fn stale_missing_or_forged_sidecar_recovers_the_right_seq() {
    let (_t, d) = setup("sidecar");
    let side = d.path().join("events.seq");
    let mut log = EventLog::open(&d, quick()).unwrap();
    ev(&mut log, "a");
    ev(&mut log, "a");
    let old = std::fs::read(&side).unwrap();
    assert!(parse_sidecar(&old).is_some());
    for _ in 0..3 {
        ev(&mut log, "a");
    }
    drop(log);

    // Stale: it describes the log at 2 events; the size no longer matches.
    std::fs::write(&side, &old).unwrap();
    let mut log = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut log, "stale"), Some(6));
    drop(log);

    // Missing.
    std::fs::remove_file(&side).unwrap();
    let mut log = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut log, "missing"), Some(7));
    drop(log);

    // Garbage.
    std::fs::write(&side, b"hello\n").unwrap();
    let mut log = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut log, "garbage"), Some(8));
    drop(log);

    // Right shape and size, wrong check (a torn or hand-edited sidecar).
    let meta = std::fs::metadata(d.path().join("events.jsonl")).unwrap();
    let mut s = String::new();
    format_sidecar(&mut s, sidecar_of(100, meta.len(), meta.ino()));
    let forged = s.replacen("0000000100", "0000000200", 1);
    std::fs::write(&side, forged).unwrap();
    let mut log = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut log, "forged"), Some(9));
    drop(log);

    assert_eq!(
        file_seqs(&d.path().join("events.jsonl")),
        (1..=9).collect::<Vec<_>>()
    );
}

#[test]
fn a_matching_sidecar_is_trusted_without_reading_the_log() {
    let (_t, d) = setup("sidecar-trust");
    let mut log = EventLog::open(&d, quick()).unwrap();
    ev(&mut log, "a");
    drop(log);
    // A sidecar that matches the log's size and inode is the O(1) path:
    // its seq is used as is.
    let meta = std::fs::metadata(d.path().join("events.jsonl")).unwrap();
    let mut s = String::new();
    format_sidecar(&mut s, sidecar_of(41, meta.len(), meta.ino()));
    std::fs::write(d.path().join("events.seq"), s).unwrap();
    let mut log = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut log, "b"), Some(42));
}

#[test]
fn empty_log_after_rotation_takes_seq_from_the_newest_generation() {
    let (_t, d) = setup("after-rotate");
    let opts = LogOptions {
        rotate_bytes: 1,
        keep: 3,
        ..quick()
    };
    let mut log = EventLog::open(&d, opts.clone()).unwrap();
    for i in 1..=4 {
        assert_eq!(ev(&mut log, "r"), Some(i));
    }
    drop(log);
    assert_eq!(
        std::fs::metadata(d.path().join("events.jsonl"))
            .unwrap()
            .len(),
        0
    );
    std::fs::remove_file(d.path().join("events.seq")).unwrap();
    let mut log = EventLog::open(&d, opts).unwrap();
    assert_eq!(ev(&mut log, "r"), Some(5));
}

#[test]
fn rotation_keeps_n_generations_and_seq_continues() {
    let (_t, d) = setup("rotate");
    let opts = LogOptions {
        rotate_bytes: 300,
        keep: 3,
        ..quick()
    };
    // A generation beyond `keep`, as a larger earlier setting leaves.
    std::fs::write(d.path().join("events.jsonl.9"), b"{\"seq\":0}\n").unwrap();
    let mut log = EventLog::open(&d, opts).unwrap();
    for i in 1..=60 {
        assert_eq!(ev(&mut log, "rot"), Some(i));
    }
    let mut names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "events.jsonl",
            "events.jsonl.1",
            "events.jsonl.2",
            "events.jsonl.3",
            "events.lock",
            "events.seq"
        ]
    );
    let mut chained = Vec::new();
    for name in [
        "events.jsonl.3",
        "events.jsonl.2",
        "events.jsonl.1",
        "events.jsonl",
    ] {
        let p = d.path().join(name);
        assert_eq!(mode(&p), 0o600, "{name}");
        let seqs = file_seqs(&p);
        if name != "events.jsonl" {
            assert!(!seqs.is_empty());
            assert!(std::fs::metadata(&p).unwrap().len() >= 300);
        }
        chained.extend(seqs);
    }
    assert_eq!(*chained.last().unwrap(), 60);
    let first = chained[0];
    assert_eq!(chained, (first..=60).collect::<Vec<_>>());
    assert_eq!(all_seqs(&d, None), chained);
}

#[test]
fn reader_spans_generations_skips_garbage_and_torn_tail() {
    let (_t, d) = setup("reader");
    let opts = LogOptions {
        rotate_bytes: 200,
        keep: 20,
        ..quick()
    };
    let mut log = EventLog::open(&d, opts).unwrap();
    for _ in 0..30 {
        ev(&mut log, "r");
    }
    assert!(d.path().join("events.jsonl.5").exists());
    append_raw(
        &d.path().join("events.jsonl.2"),
        b"not json\n{\"no_seq\":1}\n\n[1]\n",
    );
    append_raw(
        &d.path().join("events.jsonl"),
        b"{\"seq\":31,\"ts_ms\":1,\"ev",
    );

    let mut r = read_events(d.path(), None).unwrap();
    let seqs: Vec<u64> = r.by_ref().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    assert_eq!(r.skipped(), 4);

    assert_eq!(all_seqs(&d, Some(17)), (18..=30).collect::<Vec<_>>());
    assert_eq!(all_seqs(&d, Some(0)), (1..=30).collect::<Vec<_>>());
    assert!(all_seqs(&d, Some(30)).is_empty());
    assert!(all_seqs(&d, Some(1000)).is_empty());

    // The torn line is cut by the next writer and its seq reused.
    assert_eq!(ev(&mut log, "after"), Some(31));
    assert_eq!(all_seqs(&d, Some(29)), vec![30, 31]);
}

#[test]
fn reader_of_an_empty_dir_yields_nothing() {
    let (_t, d) = setup("reader-empty");
    let mut r = read_events(d.path(), None).unwrap();
    assert!(r.next().is_none());
    assert_eq!(r.skipped(), 0);
    assert!(read_events(&d.path().join("nope"), None).is_err());
}

#[test]
fn held_lock_queues_and_flush_lands_in_order() {
    let (_t, d) = setup("queue");
    let mut log = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut log, "first"), Some(1));

    let other = OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.path().join("events.lock"))
        .unwrap();
    fs2::FileExt::lock_exclusive(&other).unwrap();
    assert_eq!(ev(&mut log, "q1"), None);
    assert_eq!(ev(&mut log, "q2"), None);
    assert_eq!(log.pending(), 2);
    assert_eq!(log.flush_pending(), 0);
    assert_eq!(log.pending(), 2);
    fs2::FileExt::unlock(&other).unwrap();

    // Another writer gets in first; the queued events follow it.
    let mut second = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut second, "other"), Some(2));
    assert_eq!(log.flush_pending(), 2);
    assert_eq!(log.pending(), 0);
    assert_eq!(ev(&mut log, "last"), Some(5));
    let names: Vec<(u64, String)> = file_lines(&d.path().join("events.jsonl"))
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        (1, "first"),
        (2, "other"),
        (3, "q1"),
        (4, "q2"),
        (5, "last"),
    ];
    let want: Vec<(u64, String)> = want.iter().map(|(s, n)| (*s, n.to_string())).collect();
    assert_eq!(names, want);
    assert_eq!(log.lost(), 0);
}

#[test]
fn queued_events_are_not_overtaken() {
    let (_t, d) = setup("queue-order");
    let mut log = EventLog::open(&d, quick()).unwrap();
    let other = File::open(d.path().join("events.lock")).unwrap();
    fs2::FileExt::lock_exclusive(&other).unwrap();
    assert_eq!(ev(&mut log, "q1"), None);
    fs2::FileExt::unlock(&other).unwrap();
    // The next append writes the queued event first, then itself.
    assert_eq!(ev(&mut log, "next"), Some(2));
    assert_eq!(log.pending(), 0);
    let lines = file_lines(&d.path().join("events.jsonl"));
    assert_eq!(lines[0]["event"], "q1");
    assert_eq!(lines[1]["event"], "next");
}

#[test]
fn full_queue_counts_lost() {
    let (_t, d) = setup("lost");
    let opts = LogOptions {
        queue_capacity: 2,
        lock_timeout: Duration::from_millis(5),
        ..quick()
    };
    let mut log = EventLog::open(&d, opts).unwrap();
    let other = File::open(d.path().join("events.lock")).unwrap();
    fs2::FileExt::lock_exclusive(&other).unwrap();
    for _ in 0..3 {
        assert_eq!(ev(&mut log, "x"), None);
    }
    assert_eq!((log.pending(), log.lost()), (2, 1));
    fs2::FileExt::unlock(&other).unwrap();
    assert_eq!(log.flush_pending(), 2);
    assert_eq!(file_seqs(&d.path().join("events.jsonl")), vec![1, 2]);
}

#[test]
fn planted_symlinks_are_never_followed() {
    let (t, d) = setup("symlink");
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    for name in ["events.jsonl", "events.lock", "events.seq"] {
        for other in ["events.jsonl", "events.lock", "events.seq"] {
            let _ = std::fs::remove_file(d.path().join(other));
        }
        let p = d.path().join(name);
        symlink(&victim, &p).unwrap();
        let err = EventLog::open(&d, quick()).err().unwrap();
        assert!(err.to_string().contains(name), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&p).unwrap();
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // Planted after the log was opened: the event waits in the queue with
    // the reason kept, and nothing follows the link.
    let mut log = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut log, "a"), Some(1));
    let p = d.path().join("events.jsonl");
    std::fs::remove_file(&p).unwrap();
    symlink(&victim, &p).unwrap();
    assert_eq!(log.append(2, "b", &[]).unwrap(), None, "queued, not landed");
    assert_eq!(log.pending(), 1, "the event is kept, not lost");
    let err = log.take_error().expect("the reason is kept");
    assert!(err.to_string().contains("events.jsonl"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(read_events(d.path(), None).is_err());
}

#[test]
fn interval_sync_runs_at_most_once_per_interval() {
    let (_t, d) = setup("interval");
    let opts = LogOptions {
        fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        ..quick()
    };
    let mut log = EventLog::open(&d, opts).unwrap();
    ev(&mut log, "a");
    assert!(log.unsynced);
    log.commit(500);
    assert!(log.unsynced, "not due yet");
    log.commit(1_000);
    assert!(!log.unsynced);
    ev(&mut log, "b");
    log.commit(1_500);
    assert!(log.unsynced);
    log.commit(2_000);
    assert!(!log.unsynced);
    assert_eq!(log.sync_failures(), 0);
    ev(&mut log, "c");
    log.sync().unwrap();
    assert!(!log.unsynced);
}

#[test]
fn steady_state_appends_reuse_their_buffers() {
    let (_t, d) = setup("reuse");
    let mut log = EventLog::open(&d, quick()).unwrap();
    ev(&mut log, "warm");
    let (line, body) = (log.line.as_ptr(), log.body.as_ptr());
    for _ in 0..1000 {
        ev(&mut log, "same");
    }
    assert_eq!((log.line.as_ptr(), log.body.as_ptr()), (line, body));
}

#[test]
fn sidecar_parses_only_its_own_format() {
    let mut s = String::new();
    let want = Sidecar {
        seq: 7,
        size: 1234,
        ino: 99,
        durable: 5,
    };
    format_sidecar(&mut s, want);
    assert_eq!(s.len(), SIDECAR_LEN);
    assert_eq!(parse_sidecar(s.as_bytes()), Some(want));
    let b = s.as_bytes();
    for i in 0..b.len() {
        let mut c = b.to_vec();
        c[i] = if c[i] == b'1' { b'2' } else { b'1' };
        assert_eq!(parse_sidecar(&c), None, "byte {i}");
        assert_eq!(parse_sidecar(&b[..i]), None);
    }
    let mut x: u64 = 1;
    for _ in 0..10_000 {
        x = mix(x);
        let bytes: Vec<u8> = (0..SIDECAR_LEN).map(|i| (x >> (i % 8 * 8)) as u8).collect();
        assert_eq!(parse_sidecar(&bytes), None);
    }
}

#[test]
fn a_removed_lock_file_does_not_split_writers() {
    let (_t, d) = setup("lock-removed");
    let mut log = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut log, "a"), Some(1));
    // An operator "clears a stale lock"; another writer locks the new file.
    let lock = d.path().join("events.lock");
    std::fs::remove_file(&lock).unwrap();
    let mut second = EventLog::open(&d, quick()).unwrap();
    assert_eq!(ev(&mut second, "b"), Some(2));
    let held = File::open(&lock).unwrap();
    fs2::FileExt::lock_exclusive(&held).unwrap();
    assert_eq!(
        ev(&mut log, "c"),
        None,
        "the old inode's lock must not count"
    );
    fs2::FileExt::unlock(&held).unwrap();
    assert_eq!(log.flush_pending(), 1);
    assert_eq!(file_seqs(&d.path().join("events.jsonl")), vec![1, 2, 3]);
}
