use super::super::testdir::TempDir;
use super::*;

#[test]
fn released_list_that_cannot_be_read_is_an_error_not_empty() {
    let t = TempDir::new("released");
    let records = Records::open(t.path()).unwrap();
    assert_eq!(records.released().unwrap(), vec![]);
    let path = t.path().join("jobs").join(RELEASED_FILE);
    std::fs::write(&path, "[{\"pid\": 1").unwrap();
    let err = records.released().unwrap_err();
    let line = err.to_string();
    assert!(matches!(err, RecordError::Released { .. }), "{line}");
    assert!(
        line.contains("released.json") && line.contains("removed"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    let mut reader = ProcReader::open().unwrap();
    assert!(
        records.release(&[], &mut reader).is_err(),
        "never overwritten"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "[{\"pid\": 1");
}

/// Runs `f` on a thread and fails the test when it does not return
/// within five seconds (a blocked open(2) on a FIFO never returns).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("blocked on a FIFO in the jobs directory")
}

fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

#[test]
fn fifo_at_lock_or_released_is_refused_without_blocking() {
    let t = TempDir::new("fifo");
    let dir = t.path().to_path_buf();
    Records::open(&dir).unwrap();
    mkfifo(&dir.join("jobs/.lock"));
    mkfifo(&dir.join("jobs").join(RELEASED_FILE));
    let d = dir.clone();
    let err = bounded(move || {
        Records::open(&d)
            .unwrap()
            .try_lock()
            .err()
            .map(|e| e.to_string())
    })
    .expect("a FIFO is no lock file");
    assert!(
        err.contains(".lock") && err.contains("not a regular file"),
        "{err}"
    );
    let d = dir.clone();
    let err = bounded(move || {
        Records::open(&d)
            .unwrap()
            .lock()
            .err()
            .map(|e| e.to_string())
    })
    .expect("a FIFO is no lock file");
    assert!(err.contains("move it away"), "{err}");
    let d = dir.clone();
    let err = bounded(move || {
        Records::open(&d)
            .unwrap()
            .released()
            .map_err(|e| e.to_string())
    })
    .expect_err("a FIFO is no released list");
    assert!(
        err.contains("released.json") && err.contains("not a regular file"),
        "{err}"
    );
    // Left in place: refused, not set aside.
    assert!(dir.join("jobs").join(RELEASED_FILE).exists());
}

#[test]
fn released_list_beyond_the_bound_is_an_error() {
    let t = TempDir::new("bigrel");
    let records = Records::open(t.path()).unwrap();
    let path = t.path().join("jobs").join(RELEASED_FILE);
    let f = File::create(&path).unwrap();
    f.set_len(MAX_RELEASED_BYTES + 1).unwrap();
    let err = records.released().unwrap_err().to_string();
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn stale_temp_files_are_removed_under_the_lock() {
    let t = TempDir::new("temps");
    let records = Records::open(t.path()).unwrap();
    let jobs = t.path().join("jobs");
    for name in [
        ".job.a.json.tmp.123.0",
        ".released.json.tmp.9.4",
        "job.b.json",
    ] {
        std::fs::write(jobs.join(name), "x").unwrap();
    }
    let held = Records::open(t.path()).unwrap();
    let lock = held.lock().unwrap();
    let err = records.remove_stale_temps().expect_err("busy");
    assert!(matches!(err, RecordError::Busy { .. }), "{err}");
    assert!(jobs.join(".job.a.json.tmp.123.0").exists());
    drop(lock);
    let (mut removed, failed) = records.remove_stale_temps().unwrap();
    removed.sort();
    assert_eq!(removed, [".job.a.json.tmp.123.0", ".released.json.tmp.9.4"]);
    assert!(failed.is_empty(), "{failed:?}");
    assert!(jobs.join("job.b.json").exists());
}

#[test]
fn try_lock_does_not_wait_for_another_holder() {
    let t = TempDir::new("trylock");
    let records = Records::open(t.path()).unwrap();
    let other = Records::open(t.path()).unwrap();
    let held = records.lock().unwrap();
    // flock locks belong to the open file description: a second open
    // conflicts even within one process.
    let err = other.try_lock().err().expect("busy while held");
    assert!(matches!(err, RecordError::Busy { .. }), "{err}");
    drop(held);
    other.try_lock().unwrap();
}

#[test]
fn save_drops_members_that_ended_and_keeps_intents() {
    let t = TempDir::new("prune");
    let records = Records::open(t.path()).unwrap();
    let mut reader = ProcReader::open().unwrap();
    let me = reader.stat(crate::sys::getpid()).unwrap().key();
    let mut r = JobRecord::new(
        "pool.p".into(),
        true,
        Path::new("/x"),
        &Limits::default(),
        1,
    );
    let member = |k: ProcKey| Member {
        pid: k.pid,
        start_ticks: k.start_ticks,
        original_cgroup: PathBuf::from("/o"),
    };
    let ended = ProcKey {
        pid: me.pid,
        start_ticks: me.start_ticks + 1,
    };
    r.members = vec![member(me), member(ended)];
    r.pending = vec![Pending {
        pid: 7,
        start_ticks: 7,
        from: "/o".into(),
        to: "/x".into(),
    }];
    records.save(&r).unwrap();
    let back = records.load("pool.p").unwrap().unwrap();
    assert_eq!(back.members, vec![member(me)]);
    assert_eq!(back.pending, r.pending);
    // A record written before intents existed reads with none.
    let old = r#"{"version":1,"group":"job.j","cgroup":"/x","pool":false,"limits":{},
        "in_force":true,"problems":[],"created_ms":1,"members":[]}"#;
    std::fs::write(t.path().join("jobs/job.j.json"), old).unwrap();
    assert!(records.load("job.j").unwrap().unwrap().pending.is_empty());
}
