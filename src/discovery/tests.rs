use super::*;
use crate::config::{Filter, Match};
use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn wait_status_decoding() {
    assert_eq!(ExitStatus::from_wait_status(0), ExitStatus::Code(0));
    assert_eq!(ExitStatus::from_wait_status(3 << 8), ExitStatus::Code(3));
    assert_eq!(ExitStatus::from_wait_status(9), ExitStatus::Signal(9));
    assert_eq!(
        ExitStatus::from_wait_status(0x80 | 11),
        ExitStatus::Signal(11)
    );
}

#[test]
fn seen_capacity_bounds() {
    assert_eq!(seen_capacity(1, None), 32_768);
    assert_eq!(seen_capacity(16_384, None), 65_536);
    assert_eq!(seen_capacity(usize::MAX, None), SEEN_MAX);
    // The host's limit decides when it is larger than four times capacity.
    assert_eq!(seen_capacity(4096, Some(65_536)), 65_536);
    assert_eq!(seen_capacity(4096, Some(4_194_304)), SEEN_MAX);
    assert_eq!(seen_capacity(16, Some(100)), 1024);
}

/// A directory laid out like /proc, with the files discovery reads.
struct FakeProc {
    root: PathBuf,
}

impl FakeProc {
    fn new(tag: &str) -> FakeProc {
        let root = std::env::temp_dir().join(format!(
            "reeve-fakeproc-{tag}-{}-{}",
            sys::getpid(),
            sys::monotonic_ns()
        ));
        std::fs::create_dir_all(&root).unwrap();
        FakeProc { root }
    }

    fn put(&self, pid: u32, comm: &str, ppid: u32, start: u64, state: char) {
        let dir = self.root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let stat = format!(
            "{pid} ({comm}) {state} {ppid} 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 {start} 1 1 0 0 0\n"
        );
        std::fs::write(dir.join("stat"), stat).unwrap();
        std::fs::write(dir.join("status"), "Uid:\t7\t7\t7\t7\nGid:\t8\t8\t8\t8\n").unwrap();
        std::fs::write(dir.join("cmdline"), format!("/usr/bin/{comm}\0-i\0x\0")).unwrap();
        let exe = dir.join("exe");
        let _ = std::fs::remove_file(&exe);
        std::os::unix::fs::symlink(format!("/usr/bin/{comm}"), exe).unwrap();
    }

    /// Replaces the process under `pid` with a new directory (a new
    /// inode), as the kernel does when a pid is reused.
    fn reuse(&self, pid: u32, comm: &str, ppid: u32, start: u64) {
        // Build the new directory before freeing the old one so the
        // filesystem cannot hand back the same inode (procfs never does).
        let tmp = 4_100_000 + pid;
        self.put(tmp, comm, ppid, start, 'S');
        let stat = format!(
            "{pid} ({comm}) S {ppid} 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 {start} 1 1 0 0 0\n"
        );
        std::fs::write(self.root.join(tmp.to_string()).join("stat"), stat).unwrap();
        std::fs::remove_dir_all(self.root.join(pid.to_string())).unwrap();
        std::fs::rename(
            self.root.join(tmp.to_string()),
            self.root.join(pid.to_string()),
        )
        .unwrap();
    }

    fn remove(&self, pid: u32) {
        std::fs::remove_dir_all(self.root.join(pid.to_string())).unwrap();
    }

    fn discovery(&self, rules: &[Rule]) -> Discovery {
        let c = CString::new(self.root.as_os_str().as_encoded_bytes()).unwrap();
        Discovery::with_reader(ProcReader::open_at(&c).unwrap(), rules, 64).unwrap()
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn rule(name: &str, comm: &str) -> Rule {
    Rule {
        name: name.into(),
        matcher: Match {
            comm: vec![comm.into()],
            ..Default::default()
        },
        filter: Filter::default(),
        ..Default::default()
    }
}

#[derive(Default)]
struct Record {
    discovered: Vec<ProcKey>,
    exited: Vec<ProcKey>,
    /// The rule name each exit was reported under.
    exited_rules: Vec<String>,
    already: Vec<ProcKey>,
    refused: Vec<ProcKey>,
    /// (capacity, len) of each seen_full report.
    seen_full: Vec<(usize, usize)>,
}

impl Sink for Record {
    fn discovered(&mut self, key: ProcKey, _: &Tracked, _: &str, _: Source) {
        self.discovered.push(key);
    }
    fn exited(&mut self, key: ProcKey, _: &Tracked, rule: &str, _: Option<ExitStatus>) {
        self.exited.push(key);
        self.exited_rules.push(rule.to_string());
    }
    fn already_tracked(&mut self, key: ProcKey, _: Source) {
        self.already.push(key);
    }
    fn refused(&mut self, key: ProcKey, _: &str, _: Refusal) {
        self.refused.push(key);
    }
    fn seen_full(&mut self, capacity: usize, len: usize) {
        self.seen_full.push((capacity, len));
    }
}

fn key(pid: u32, start_ticks: u64) -> ProcKey {
    ProcKey { pid, start_ticks }
}

#[test]
fn discovers_once_and_records_exit() {
    let fp = FakeProc::new("once");
    fp.put(100, "ffmpeg", 1, 500, 'S');
    fp.put(101, "bash", 1, 501, 'S');
    let mut d = fp.discovery(&[rule("ff", "ffmpeg")]);
    let mut r = Record::default();
    let rep = d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(r.discovered, vec![key(100, 500)]);
    assert_eq!((rep.found, rep.new, rep.tracked, rep.gone), (1, 1, 1, 0));
    for kind in [ScanKind::Deep, ScanKind::Steady, ScanKind::Deep] {
        let rep = d.scan(kind, &mut r).unwrap();
        assert_eq!((rep.found, rep.new, rep.tracked), (1, 0, 1), "{kind:?}");
    }
    assert_eq!(r.discovered.len(), 1, "no duplicate discovery");
    fp.remove(100);
    let rep = d.scan(ScanKind::Steady, &mut r).unwrap();
    assert_eq!(r.exited, vec![key(100, 500)]);
    assert_eq!((rep.tracked, rep.gone), (0, 1));
    assert_eq!(d.stats().exited, 1);
}

#[test]
fn reused_pid_is_a_new_identity() {
    let fp = FakeProc::new("reuse");
    fp.put(200, "ffmpeg", 1, 700, 'S');
    let mut d = fp.discovery(&[rule("ff", "ffmpeg")]);
    let mut r = Record::default();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    // The pid comes back as an unrelated process: the old identity
    // exits and the newcomer is not taken for it.
    fp.reuse(200, "bash", 1, 900);
    d.scan(ScanKind::Steady, &mut r).unwrap();
    assert_eq!(r.exited, vec![key(200, 700)]);
    assert_eq!(r.discovered, vec![key(200, 700)]);
    assert_eq!(d.live(), 0);
    // And again as a target: discovered as itself.
    fp.reuse(200, "ffmpeg", 1, 950);
    d.scan(ScanKind::Steady, &mut r).unwrap();
    assert_eq!(r.discovered, vec![key(200, 700), key(200, 950)]);
    assert_eq!(d.live(), 1);
}

#[test]
fn steady_scan_skips_known_inodes_deep_scan_notices_exec() {
    let fp = FakeProc::new("exec");
    fp.put(300, "sh", 1, 10, 'S');
    let mut d = fp.discovery(&[rule("ff", "ffmpeg")]);
    let mut r = Record::default();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    // An exec keeps pid, start time and the /proc inode; only comm
    // changes. The steady scan relies on netlink for this...
    fp.put(300, "ffmpeg", 1, 10, 'S');
    d.scan(ScanKind::Steady, &mut r).unwrap();
    assert!(r.discovered.is_empty());
    // ...and a deep scan (polling mode, or after an overrun) finds it.
    d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(r.discovered, vec![key(300, 10)]);
}

#[test]
fn zombie_target_counts_as_exited_and_is_never_discovered() {
    let fp = FakeProc::new("zombie");
    fp.put(400, "ffmpeg", 1, 10, 'Z');
    fp.put(401, "ffmpeg", 1, 11, 'S');
    let mut d = fp.discovery(&[rule("ff", "ffmpeg")]);
    let mut r = Record::default();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(r.discovered, vec![key(401, 11)]);
    fp.put(401, "ffmpeg", 1, 11, 'Z');
    d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(r.exited, vec![key(401, 11)]);
}

#[test]
fn never_discovers_itself_or_descendants() {
    let fp = FakeProc::new("self");
    let me = sys::getpid();
    fp.put(me, "ffmpeg", 1, 1, 'S');
    fp.put(4_000_001, "ffmpeg", me, 2, 'S');
    fp.put(4_000_002, "ffmpeg", 4_000_001, 3, 'S');
    fp.put(4_000_003, "ffmpeg", 1, 4, 'S');
    let mut d = fp.discovery(&[rule("ff", "ffmpeg")]);
    let mut r = Record::default();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(r.discovered, vec![key(4_000_003, 4)]);
}

#[test]
fn capacity_refusal_is_reported_and_exited_slots_are_reused() {
    let fp = FakeProc::new("cap");
    let rules = [rule("ff", "ffmpeg")];
    let c = CString::new(fp.root.as_os_str().as_encoded_bytes()).unwrap();
    let mut d = Discovery::with_reader(ProcReader::open_at(&c).unwrap(), &rules, 2).unwrap();
    for pid in 500..503 {
        fp.put(pid, "ffmpeg", 1, u64::from(pid), 'S');
    }
    let mut r = Record::default();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(r.discovered.len(), 2);
    assert_eq!(r.refused.len(), 1);
    assert_eq!(d.stats().refused, 1);
    // Retried every scan, but reported once per identity.
    d.scan(ScanKind::Steady, &mut r).unwrap();
    assert_eq!(r.refused.len(), 1);
    // One exits; the next scan gives its slot to the refused one.
    let gone = r.discovered[0];
    fp.remove(gone.pid);
    d.scan(ScanKind::Steady, &mut r).unwrap();
    d.scan(ScanKind::Steady, &mut r).unwrap();
    assert_eq!(r.discovered.len(), 3);
    assert_eq!(d.live(), 2);
    assert_eq!(r.refused.len(), 1);
}

#[test]
fn min_age_defers_until_old_enough() {
    let fp = FakeProc::new("age");
    let tck = sys::clock_ticks_per_sec().unwrap();
    let now_ticks = sys::boottime_ns() / 1_000_000 * tck / 1000;
    fp.put(600, "ffmpeg", 1, now_ticks, 'S');
    let mut rule = rule("ff", "ffmpeg");
    rule.filter.min_age = Some(Duration::from_millis(300));
    let mut d = fp.discovery(&[rule]);
    let mut r = Record::default();
    d.scan(ScanKind::Steady, &mut r).unwrap();
    assert!(r.discovered.is_empty(), "too young at first");
    std::thread::sleep(Duration::from_millis(400));
    d.scan(ScanKind::Steady, &mut r).unwrap();
    assert_eq!(
        r.discovered,
        vec![key(600, now_ticks)],
        "rechecked by a steady scan"
    );
}

#[test]
fn exe_and_cmdline_matchers() {
    let fp = FakeProc::new("exe");
    fp.put(700, "worker", 1, 1, 'S');
    let by_exe = Rule {
        name: "e".into(),
        matcher: Match {
            exe: vec!["worker".into()],
            ..Default::default()
        },
        filter: Filter::default(),
        ..Default::default()
    };
    let by_cmd = Rule {
        name: "c".into(),
        matcher: Match {
            cmdline_contains: vec!["-i x".into()],
            ..Default::default()
        },
        filter: Filter::default(),
        ..Default::default()
    };
    let mut r = Record::default();
    fp.discovery(&[by_exe])
        .scan(ScanKind::Deep, &mut r)
        .unwrap();
    fp.discovery(&[by_cmd])
        .scan(ScanKind::Deep, &mut r)
        .unwrap();
    assert_eq!(r.discovered, vec![key(700, 1), key(700, 1)]);
}

#[test]
fn netlink_events_drive_discovery_and_exit() {
    let fp = FakeProc::new("nl");
    fp.put(800, "sh", 1, 5, 'S');
    let mut d = fp.discovery(&[rule("ff", "ffmpeg")]);
    let mut r = Record::default();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    fp.put(800, "ffmpeg", 1, 5, 'S');
    let ev = |kind| Event {
        timestamp_ns: 0,
        kind,
    };
    d.handle_event(
        &ev(ProcEvent::Exec {
            pid: 800,
            tgid: 800,
        }),
        &mut r,
    );
    assert_eq!(r.discovered, vec![key(800, 5)]);
    // A second exec of the same identity is "already tracked".
    d.handle_event(
        &ev(ProcEvent::Exec {
            pid: 800,
            tgid: 800,
        }),
        &mut r,
    );
    assert_eq!(r.already, vec![key(800, 5)]);
    // A forked child of a target is probed; of a non-target it is not.
    fp.put(801, "ffmpeg", 800, 6, 'S');
    d.handle_event(
        &ev(ProcEvent::Fork {
            parent_tgid: 800,
            child_pid: 801,
            child_tgid: 801,
        }),
        &mut r,
    );
    assert_eq!(r.discovered, vec![key(800, 5), key(801, 6)]);
    // A thread exit (pid != tgid) changes nothing; the leader's exit
    // while the process is still running changes nothing either.
    let exit = |pid, tgid| {
        ev(ProcEvent::Exit {
            pid,
            tgid,
            exit_code: 0,
            exit_signal: 17,
        })
    };
    d.handle_event(&exit(805, 800), &mut r);
    d.handle_event(&exit(800, 800), &mut r);
    assert!(r.exited.is_empty());
    fp.remove(800);
    d.handle_event(&exit(800, 800), &mut r);
    assert_eq!(r.exited, vec![key(800, 5)]);
    // The exit was recorded once: the sweep does not repeat it.
    d.scan(ScanKind::Steady, &mut r).unwrap();
    assert_eq!(r.exited, vec![key(800, 5)]);
}

#[test]
fn reload_keeps_each_tracked_process_under_its_own_rule() {
    let fp = FakeProc::new("reload");
    fp.put(900, "alpha", 1, 1, 'S');
    fp.put(901, "beta", 1, 2, 'S');
    let (a, b) = (rule("A", "alpha"), rule("B", "beta"));
    let mut d = fp.discovery(&[a.clone(), b.clone()]);
    let mut r = Record::default();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    let id_of = |d: &Discovery, k| d.tracked().get(&k).unwrap().rule;
    let (ida, idb) = (id_of(&d, key(900, 1)), id_of(&d, key(901, 2)));
    assert_eq!((d.rule_index(ida), d.rule_index(idb)), (Some(0), Some(1)));
    // Reordered: the ids stay, the indexes follow the new order.
    d.set_rules(&[b.clone(), a.clone()], []).unwrap();
    assert_eq!(id_of(&d, key(900, 1)), ida);
    assert_eq!((d.rule_index(ida), d.rule_index(idb)), (Some(1), Some(0)));
    fp.remove(900);
    d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(r.exited_rules, ["A"]);
    // A removed: its process still exits under A, and A resolves to no
    // current rule, so nothing would attach it.
    fp.put(902, "alpha", 1, 3, 'S');
    d.scan(ScanKind::Deep, &mut r).unwrap();
    let ida2 = id_of(&d, key(902, 3));
    assert_eq!(ida2, ida);
    d.set_rules(&[b], []).unwrap();
    assert_eq!(d.rule_index(ida), None);
    assert_eq!(d.rule_name(ida), "A");
    assert_eq!(d.rule_index(idb), Some(0));
    fp.remove(902);
    fp.remove(901);
    d.scan(ScanKind::Deep, &mut r).unwrap();
    let mut names = r.exited_rules.clone();
    names.sort();
    assert_eq!(names, ["A", "A", "B"]);
    // A process only the removed rule matched is no longer discovered.
    fp.put(903, "alpha", 1, 4, 'S');
    let before = r.discovered.len();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(r.discovered.len(), before);
}

#[test]
fn cmdline_is_read_once_per_identity_while_it_waits() {
    let fp = FakeProc::new("cmdonce");
    let tck = sys::clock_ticks_per_sec().unwrap();
    let now_ticks = sys::boottime_ns() / 1_000_000 * tck / 1000;
    fp.put(950, "worker", 1, now_ticks, 'S');
    let mut r = Rule {
        name: "c".into(),
        matcher: Match {
            cmdline_contains: vec!["-i x".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    r.filter.min_age = Some(Duration::from_millis(400));
    let mut d = fp.discovery(&[r]);
    let mut rec = Record::default();
    for _ in 0..5 {
        d.scan(ScanKind::Steady, &mut rec).unwrap();
    }
    assert!(rec.discovered.is_empty(), "too young");
    assert_eq!(d.stats().cmdline_reads, 1, "re-evaluations reuse the match");
    std::thread::sleep(Duration::from_millis(500));
    d.scan(ScanKind::Steady, &mut rec).unwrap();
    assert_eq!(rec.discovered, vec![key(950, now_ticks)]);
    assert_eq!(d.stats().cmdline_reads, 1);
    // Rules with no cmdline matcher never read it.
    fp.put(951, "ffmpeg", 1, 9, 'S');
    let mut d = fp.discovery(&[rule("ff", "ffmpeg")]);
    d.scan(ScanKind::Deep, &mut rec).unwrap();
    assert_eq!(d.stats().cmdline_reads, 0);
}

#[test]
fn governance_marks_follow_the_lifecycle_table() {
    let fp = FakeProc::new("life");
    fp.put(960, "ffmpeg", 1, 1, 'S');
    let mut d = fp.discovery(&[rule("ff", "ffmpeg")]);
    let mut r = Record::default();
    d.scan(ScanKind::Deep, &mut r).unwrap();
    let k = key(960, 1);
    assert_eq!(d.tracked().get(&k).unwrap().life, Life::Tracked);
    assert_eq!(d.mark(k, Step::Queue), Ok(Life::Pending));
    assert_eq!(d.mark(k, Step::Govern), Ok(Life::Governed));
    assert!(
        d.mark(k, Step::Queue).is_err(),
        "governed is not queued again"
    );
    // Exit and eviction are discovery's own steps, refused from outside.
    assert!(d.mark(k, Step::Exit).is_err());
    assert!(d.mark(key(961, 1), Step::Govern).is_err(), "untracked");
    assert_eq!(d.stats().illegal_steps, 3);
    assert_eq!(d.tracked().get(&k).unwrap().life, Life::Governed);
    fp.remove(960);
    d.scan(ScanKind::Deep, &mut r).unwrap();
    assert_eq!(d.tracked().get(&k).unwrap().life, Life::Exited);
    assert!(
        d.mark(k, Step::Adopt).is_err(),
        "an exited identity stays exited"
    );
    assert_eq!(d.live(), 0);
}

#[test]
fn a_seen_set_too_small_for_the_host_is_reported_once_and_counted() {
    let fp = FakeProc::new("seenfull");
    for pid in 100..106 {
        fp.put(pid, "sleep", 1, 500, 'S');
    }
    fp.put(200, "ffmpeg", 1, 500, 'S');
    let c = CString::new(fp.root.as_os_str().as_encoded_bytes()).unwrap();
    let reader = ProcReader::open_at(&c).unwrap();
    let mut d = Discovery::with_sizes(reader, &[rule("enc", "ffmpeg")], 64, 4).unwrap();
    assert_eq!(d.seen_capacity(), 4);
    let mut rec = Record::default();
    d.scan(ScanKind::Deep, &mut rec).unwrap();
    assert_eq!(rec.seen_full, vec![(4, 4)], "one report per episode");
    assert_eq!(d.stats().seen_overflow, 3, "7 pids, room for 4");
    assert_eq!(
        rec.discovered,
        vec![key(200, 500)],
        "a target is found anyway"
    );

    d.scan(ScanKind::Steady, &mut rec).unwrap();
    assert_eq!(rec.seen_full.len(), 1, "not repeated while it lasts");
    assert!(d.stats().seen_overflow > 3, "counted on every scan");

    // An unindexed target's exit is still noticed (deep scan reconcile).
    fp.remove(200);
    d.scan(ScanKind::Deep, &mut rec).unwrap();
    assert_eq!(rec.exited, vec![key(200, 500)]);

    // Once a whole scan fits, a later overflow is a new report.
    for pid in 100..106 {
        fp.remove(pid);
    }
    d.scan(ScanKind::Deep, &mut rec).unwrap();
    assert_eq!(rec.seen_full.len(), 1);
    for pid in 300..306 {
        fp.put(pid, "sleep", 1, 600, 'S');
    }
    d.scan(ScanKind::Deep, &mut rec).unwrap();
    assert_eq!(rec.seen_full.len(), 2);
}

#[test]
fn a_too_young_target_keeps_scans_at_the_polling_pace() {
    let fp = FakeProc::new("recheck");
    let tck = sys::clock_ticks_per_sec().unwrap();
    let now_ticks = sys::boottime_ns() / 1_000_000 * tck / 1000;
    fp.put(100, "ffmpeg", 1, now_ticks, 'S');
    let mut r = rule("enc", "ffmpeg");
    r.filter.min_age = Some(Duration::from_secs(3600));
    let mut d = fp.discovery(&[r]);
    let mut rec = Record::default();
    d.scan(ScanKind::Deep, &mut rec).unwrap();
    assert!(rec.discovered.is_empty());
    assert!(d.rechecks_pending(), "a waiting target needs the next scan");
    fp.remove(100);
    d.scan(ScanKind::Steady, &mut rec).unwrap();
    assert!(!d.rechecks_pending(), "nothing waits any more");
}

#[test]
fn a_seen_entry_is_small() {
    // The seen-set holds every pid of the host: its entry size is its cost.
    assert!(std::mem::size_of::<Seen>() <= 32);
    assert!(std::mem::size_of::<Option<(u32, Seen)>>() <= 40);
}
