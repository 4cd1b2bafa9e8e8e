//! The host tier of network limits: real bpf(2) loads, attaches, queries
//! and detaches on a uniquely named group under this machine's cgroup v2
//! mount, removed by a drop guard. No traffic: the VM tier proves that
//! the programs limit it.

use std::path::PathBuf;

use super::*;
use crate::cgroup::Hierarchy;

/// The test group; removed on drop (the kernel detaches its programs).
struct TestGroup(PathBuf);

impl Drop for TestGroup {
    fn drop(&mut self) {
        // Cleanup of a test group: an rmdir that fails leaves an empty
        // directory named for this test run, nothing else.
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn test_group() -> Option<TestGroup> {
    let why = if sys::geteuid() != 0 {
        "not root".to_string()
    } else {
        match Hierarchy::detect(None) {
            Ok(h) if h.mount.join("cgroup.procs").exists() => {
                let dir = h.mount.join(format!(
                    "reeve-net-test-{}-{}",
                    sys::getpid(),
                    sys::monotonic_ns()
                ));
                std::fs::create_dir(&dir).unwrap();
                return Some(TestGroup(dir));
            }
            Ok(h) => format!("{} is not a cgroup2 mount", h.mount.display()),
            Err(e) => e.to_string(),
        }
    };
    crate::require::require(false, &why);
    None
}

fn ids(group: &Path, dir: Direction) -> Vec<u32> {
    let cg = open_group(group).unwrap();
    attached(&cg, dir)
        .unwrap()
        .iter()
        .map(|a| a.prog_id)
        .collect()
}

#[test]
fn load_attach_adopt_replace_and_detach_on_the_host() {
    let Some(g) = test_group() else {
        return;
    };
    let tx = NetRate::with_default_burst(2 << 20);
    let rx = NetRate {
        bytes_per_sec: 5 << 20,
        burst: 1 << 20,
    };
    let both = Limits {
        net_tx: Some(tx),
        net_rx: Some(rx),
        ..Limits::default()
    };
    let applied = crate::cgroup::apply_exactly(&g.0, &both);
    assert!(crate::cgroup::in_force(&applied), "{applied:?}");
    assert_eq!(applied.len(), 2, "{applied:?}");
    let (held, errors) = crate::cgroup::held(&g.0);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((held.net_tx, held.net_rx), (Some(tx), Some(rx)));
    let [b_tx, b_rx] = buckets(&g.0).unwrap();
    let b_tx = b_tx.unwrap();
    assert_eq!(
        (b_tx.rate, b_tx.burst, b_tx.dropped),
        (2 << 20, 512 << 10, 0)
    );
    assert_eq!(b_rx.unwrap().rate, 5 << 20);
    let first = ids(&g.0, Direction::Tx);
    assert_eq!(first.len(), 1);

    // The same figures again: adopted, not reloaded.
    let again = crate::cgroup::apply_exactly(&g.0, &both);
    assert!(crate::cgroup::in_force(&again), "{again:?}");
    assert_eq!(ids(&g.0, Direction::Tx), first);

    // New figures for tx, none for rx: tx replaced, rx detached.
    let faster = NetRate::with_default_burst(8 << 20);
    let only_tx = Limits {
        net_tx: Some(faster),
        ..Limits::default()
    };
    let changed = crate::cgroup::apply_exactly(&g.0, &only_tx);
    assert!(crate::cgroup::in_force(&changed), "{changed:?}");
    let resets: Vec<&str> = changed
        .iter()
        .filter(|a| a.reset)
        .map(|a| a.file.as_str())
        .collect();
    assert_eq!(resets, ["net_rx"]);
    let now = ids(&g.0, Direction::Tx);
    assert_eq!(now.len(), 1);
    assert_ne!(now, first, "a new program replaced the old one");
    assert!(ids(&g.0, Direction::Rx).is_empty());
    assert_eq!(crate::cgroup::held(&g.0).0.net_tx, Some(faster));

    // Nothing named: nothing of reeve's left attached.
    let cleared = crate::cgroup::apply_exactly(&g.0, &Limits::default());
    assert!(crate::cgroup::in_force(&cleared), "{cleared:?}");
    assert_eq!(buckets(&g.0).unwrap(), [None, None]);
    assert!(crate::cgroup::held(&g.0).0.is_empty());
}

#[test]
fn a_program_the_kernel_refuses_fails_closed_with_the_verifier_log() {
    let Some(g) = test_group() else {
        return;
    };
    // `exit` alone: R0 is never set, which every verifier refuses.
    fn refused(_map_fd: i32, _dir: Direction) -> Vec<u64> {
        vec![0x0000_0000_0000_0095]
    }
    let want = NetRate::with_default_burst(2 << 20);
    let err = apply_program(&g.0, Direction::Tx, want, refused).unwrap_err();
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("net_tx: loading the cgroup_skb program (verifier: ")
            && line.contains("R0 !read_ok")
            && line.contains("; the kernel refused the program"),
        "{line}"
    );
    // Nothing attached: not reeve's program, nor any other.
    let cg = open_group(&g.0).unwrap();
    let mut all = [0u32; MAX_PROGS];
    let n = sys::bpf_prog_query(&cg, Direction::Tx.attach_type(), &mut all).unwrap();
    assert_eq!(n, 0, "{:?}", &all[..n.min(MAX_PROGS)]);
    assert_eq!(buckets(&g.0).unwrap(), [None, None]);

    // The same group still takes the real program afterwards.
    apply_one(&g.0, Direction::Tx, want).unwrap();
    assert_eq!(ids(&g.0, Direction::Tx).len(), 1);
}
