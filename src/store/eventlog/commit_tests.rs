//! Group commit: how many fdatasyncs appends cost, where the durable point
//! is reported, and that a writer in daemon mode never waits for the lock.

use super::*;
use crate::store::testdir::TempDir;
use std::time::Instant;

fn setup(tag: &str) -> (TempDir, StateDir) {
    let t = TempDir::new(tag);
    let d = StateDir::open(&t.path().join("state")).unwrap();
    (t, d)
}

fn daemon_mode() -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Always,
        lock_timeout: Duration::ZERO,
        group_commit: true,
        ..LogOptions::default()
    }
}

fn ev(log: &mut EventLog) -> Option<u64> {
    log.append(1_000, "discovered", &[("pid", Val::U(42))])
        .unwrap()
}

#[test]
fn a_wakeup_of_appends_costs_one_fdatasync() {
    let (_t, d) = setup("group");
    let mut log = EventLog::open(&d, daemon_mode()).unwrap();
    for i in 1..=100 {
        assert_eq!(ev(&mut log), Some(i));
    }
    assert_eq!(log.syncs(), 0, "appends alone never sync");
    assert_eq!(durable_seq(d.path()), Some(0), "nothing is durable yet");
    log.commit(1);
    assert_eq!(log.syncs(), 1);
    assert_eq!(log.durable(), 100);
    assert_eq!(durable_seq(d.path()), Some(100));
    // A wakeup that appended nothing syncs nothing.
    log.commit(2);
    assert_eq!(log.syncs(), 1);
    ev(&mut log);
    log.commit(3);
    assert_eq!((log.syncs(), durable_seq(d.path())), (2, Some(101)));
}

#[test]
fn per_append_mode_syncs_every_append_and_reports_it() {
    let (_t, d) = setup("per-append");
    let mut log = EventLog::open(&d, LogOptions::default()).unwrap();
    for i in 1..=5 {
        assert_eq!(ev(&mut log), Some(i));
        assert_eq!(log.syncs(), i);
        assert_eq!(durable_seq(d.path()), Some(i));
    }
    let never = LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    let mut log = EventLog::open(&d, never).unwrap();
    ev(&mut log);
    log.commit(1);
    assert_eq!(log.syncs(), 0);
    assert_eq!(durable_seq(d.path()), Some(5), "never claims more");
}

#[test]
fn a_held_lock_neither_blocks_nor_loses_and_the_durable_point_follows() {
    let (_t, d) = setup("held");
    let mut log = EventLog::open(&d, daemon_mode()).unwrap();
    assert_eq!(ev(&mut log), Some(1));
    let other = File::open(d.path().join("events.lock")).unwrap();
    fs2::FileExt::lock_exclusive(&other).unwrap();
    let t0 = Instant::now();
    for _ in 0..50 {
        assert_eq!(ev(&mut log), None);
    }
    assert_eq!(log.flush_pending(), 0);
    // The line written before the lock was taken is synced; the report of
    // it waits for the lock.
    log.commit(1);
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "the daemon's writer waited for the lock: {:?}",
        t0.elapsed()
    );
    assert_eq!(log.pending(), 50);
    assert_eq!(log.durable(), 1);
    assert_eq!(durable_seq(d.path()), Some(0));
    fs2::FileExt::unlock(&other).unwrap();
    assert_eq!(log.flush_pending(), 50);
    log.commit(2);
    assert_eq!(durable_seq(d.path()), Some(51));
    assert_eq!(log.lost(), 0);
}

#[test]
fn durable_point_survives_rotation_and_other_writers() {
    let (_t, d) = setup("rotate-durable");
    let opts = LogOptions {
        rotate_bytes: 300,
        ..daemon_mode()
    };
    let mut log = EventLog::open(&d, opts).unwrap();
    for _ in 0..10 {
        ev(&mut log);
    }
    log.commit(1);
    assert_eq!(durable_seq(d.path()), Some(10));
    let mut cli = EventLog::open(&d, LogOptions::default()).unwrap();
    assert_eq!(ev(&mut cli), Some(11));
    assert_eq!(durable_seq(d.path()), Some(11));
    assert_eq!(ev(&mut log), Some(12));
    log.commit(2);
    assert_eq!(durable_seq(d.path()), Some(12));
}

#[test]
fn deferred_events_are_written_in_order_at_the_flush_and_never_fill_the_queue() {
    let (_t, d) = setup("defer");
    let opts = LogOptions {
        queue_capacity: 8,
        ..daemon_mode()
    };
    let mut log = EventLog::open(&d, opts).unwrap();
    let log_file = d.path().join(LOG_NAME);
    for i in 0..4 {
        let held = log
            .defer(1_000, "discovered", &[("pid", Val::U(i))])
            .unwrap();
        assert!(held, "event {i} is held");
    }
    // Half the queue is held: the next one is for a plain append.
    assert!(!log
        .defer(1_000, "discovered", &[("pid", Val::U(9))])
        .unwrap());
    assert_eq!(log.pending(), 4);
    assert_eq!(
        std::fs::read(&log_file).unwrap_or_default().len(),
        0,
        "nothing written yet"
    );
    assert_eq!(log.flush_pending_within(Duration::ZERO), 4);
    assert_eq!((log.pending(), log.lost(), log.last_written()), (0, 0, 4));
    let text = std::fs::read_to_string(&log_file).unwrap();
    let pids: Vec<&str> = text
        .lines()
        .map(|l| l.split("\"pid\":").nth(1).unwrap().trim_end_matches('}'))
        .collect();
    assert_eq!(pids, ["0", "1", "2", "3"]);
    // A reserved name is refused when deferred too.
    assert!(log.defer(1, "x", &[("seq", Val::U(1))]).is_err());
}

/// Commits, as the daemon's loop does, until the background sync in
/// flight has been collected (at most 10 s).
fn wait_for_sync(log: &mut EventLog, now_ms: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while log.sync_in_flight() {
        assert!(Instant::now() < until, "the sync thread never reported");
        std::thread::sleep(Duration::from_millis(1));
        log.commit(now_ms);
    }
}

#[test]
fn a_background_commit_reports_durability_only_after_the_sync_ends() {
    let (_t, d) = setup("bgsync");
    let mut log = EventLog::open(&d, daemon_mode()).unwrap();
    log.sync_in_background().unwrap();
    for i in 1..=10 {
        assert_eq!(ev(&mut log), Some(i));
    }
    log.commit(1);
    assert_eq!(log.syncs(), 1, "one fdatasync handed to the thread");
    assert!(log.sync_in_flight());
    // Not yet collected: the caller has not looked since it handed it over.
    assert_eq!(log.durable(), 0);
    assert_eq!(durable_seq(d.path()), Some(0));
    // Lines appended meanwhile wait for the next sync.
    assert_eq!(ev(&mut log), Some(11));
    // The commit that collects the first sync reports seq 10 and hands
    // seq 11 to a second one.
    let until = Instant::now() + Duration::from_secs(10);
    while log.syncs() < 2 {
        assert!(Instant::now() < until, "the sync thread never reported");
        std::thread::sleep(Duration::from_millis(1));
        log.commit(2);
    }
    assert_eq!(log.durable(), 10, "the first sync covered seq 1..=10 only");
    assert_eq!(durable_seq(d.path()), Some(10));
    wait_for_sync(&mut log, 3);
    assert_eq!(log.durable(), 11);
    assert_eq!(durable_seq(d.path()), Some(11));
    assert!(!log.sync_in_flight());
    log.commit(4);
    assert_eq!(log.syncs(), 2, "nothing new, no sync");
}

#[test]
fn shutdown_sync_waits_for_the_background_one() {
    let (_t, d) = setup("bgsync-stop");
    let mut log = EventLog::open(&d, daemon_mode()).unwrap();
    log.sync_in_background().unwrap();
    assert_eq!(ev(&mut log), Some(1));
    log.commit(1);
    assert_eq!(ev(&mut log), Some(2));
    log.sync().unwrap();
    assert!(!log.sync_in_flight());
    assert_eq!(log.durable(), 2);
    assert_eq!(durable_seq(d.path()), Some(2));
}

#[test]
fn per_append_and_never_logs_keep_syncing_in_the_caller() {
    let (_t, d) = setup("bgsync-off");
    let mut log = EventLog::open(&d, LogOptions::default()).unwrap();
    log.sync_in_background().unwrap();
    ev(&mut log);
    assert!(!log.sync_in_flight(), "per-append commits stay synchronous");
    assert_eq!(log.durable(), 1);
    let never = LogOptions {
        fsync: FsyncPolicy::Never,
        ..daemon_mode()
    };
    let (_t2, d2) = setup("bgsync-never");
    let mut log = EventLog::open(&d2, never).unwrap();
    log.sync_in_background().unwrap();
    ev(&mut log);
    log.commit(1);
    assert!(!log.sync_in_flight(), "nothing to sync, no thread");
    assert_eq!(log.syncs(), 0);
}
