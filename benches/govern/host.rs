//! The govern bench's changes to the host and their undoing: the probe
//! build, the v1 group, the /etc files cgrulesengd needs, reeve's configs
//! and cgroup subtrees, and the pids the bench started (the crowd's
//! sleepers among them).
//!
//! Invariant: every change is registered in [`UNDO`] before it is made,
//! and [`undo_all`] reverses all of them, on return, on error and on
//! SIGINT/SIGTERM.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::{Res, CGCONFIG, CGCONFIG_D, CGRED_SOCKET, REEVE_POOLS, RULES, UNIFIED, V1_CPU};

// ---------------------------------------------------------------------------
// undoing everything the bench did to the host

/// What the bench changed on the host, undone in reverse.
#[derive(Default)]
pub(crate) struct Undo {
    /// Pids the bench started and has not reaped.
    pub(crate) pids: Vec<u32>,
    /// The crowd's sleepers: killed at once, then reaped.
    pub(crate) sleepers: Vec<u32>,
    /// A cgrulesengd was started: the socket it leaves when killed is
    /// removed (none existed when the bench began, or it would not run).
    pub(crate) cgred_socket: bool,
    /// Files to put back: their content before, or None to remove them.
    pub(crate) files: Vec<(PathBuf, Option<Vec<u8>>)>,
    /// Empty directories the bench created (not cgroups).
    pub(crate) dirs: Vec<PathBuf>,
    /// Directories of the bench's own removed with all they hold.
    pub(crate) trees: Vec<PathBuf>,
    /// Cgroup subtrees the bench created.
    pub(crate) cgroups: Vec<PathBuf>,
}

pub(crate) static UNDO: Mutex<Option<Undo>> = Mutex::new(None);

pub(crate) fn undo<F: FnOnce(&mut Undo)>(f: F) {
    let mut g = UNDO.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Undo::default));
}

pub(crate) fn forget_pid(pid: u32) {
    undo(|u| u.pids.retain(|&p| p != pid));
}

pub(crate) fn undo_all() {
    let taken = UNDO.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(u) = taken else { return };
    stop_sleepers(&u.sleepers, || {});
    for &pid in u.pids.iter().rev() {
        stop_pid(pid);
    }
    if u.cgred_socket && Path::new(CGRED_SOCKET).exists() {
        if let Err(e) = fs::remove_file(CGRED_SOCKET) {
            eprintln!("govern bench: cannot remove {CGRED_SOCKET}: {e}");
        }
    }
    for (path, before) in u.files.iter().rev() {
        let r = match before {
            Some(bytes) => fs::write(path, bytes),
            None => fs::remove_file(path),
        };
        if let Err(e) = r {
            eprintln!("govern bench: cannot restore {}: {e}", path.display());
        }
    }
    for t in u.trees.iter().rev() {
        if let Err(e) = fs::remove_dir_all(t) {
            eprintln!("govern bench: cannot remove {}: {e}", t.display());
        }
    }
    for d in u.dirs.iter().rev() {
        if let Err(e) = fs::remove_dir(d) {
            eprintln!("govern bench: cannot remove {}: {e}", d.display());
        }
    }
    for c in u.cgroups.iter().rev() {
        remove_cgroup_tree(c);
    }
}

/// SIGTERM, then SIGKILL after 2 s, to a child of the bench, reaped.
pub(crate) fn stop_pid(pid: u32) {
    // SAFETY: kill(2) and waitpid(2) on a pid the bench spawned and has
    // not reaped (a zombie holds the pid until it is reaped here).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut status = 0;
        // SAFETY: as above.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r != 0 {
            return;
        }
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, &mut status, 0);
            }
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL to every sleeper, then each reaped; `between` runs every 32
/// kills (the bench drains its connector there, so the exits do not
/// overrun it).
pub(crate) fn stop_sleepers(pids: &[u32], mut between: impl FnMut()) {
    for (i, &pid) in pids.iter().enumerate() {
        // SAFETY: kill(2) on a pid the bench spawned and has not reaped
        // (a zombie holds the pid until it is reaped below).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        if i % 32 == 31 {
            between();
        }
    }
    for &pid in pids {
        let mut status = 0;
        // SAFETY: waitpid(2) on the bench's own child, killed above.
        unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    }
    between();
}

/// Removes a cgroup subtree bottom-up, retrying while probes that timed
/// out are still leaving it.
pub(crate) fn remove_cgroup_tree(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let mut dirs = Vec::new();
        collect_dirs(root, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        let mut left = None;
        for d in &dirs {
            if let Err(e) = fs::remove_dir(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    left = Some(format!("{}: {e}", d.display()));
                }
            }
        }
        match left {
            None => return,
            Some(why) if Instant::now() > deadline => {
                eprintln!("govern bench: cannot remove cgroup {why}");
                return;
            }
            Some(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub(crate) fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    if !d.is_dir() {
        return;
    }
    out.push(d.to_path_buf());
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

pub(crate) fn block_stop_signals() {
    // SAFETY: sigset manipulation on a local set; the mask is set before
    // any other thread exists, so every thread inherits it (children get
    // a cleared mask from std::process).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

pub(crate) fn wait_stop_signal() -> i32 {
    // SAFETY: sigwait on a local set of signals blocked in every thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        sig
    }
}

// ---------------------------------------------------------------------------
// setup

pub(crate) fn hex8() -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b); // a fixed name still works; uniqueness is best effort
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn sh(cmd: &mut Command, what: &str) -> Res<()> {
    let st = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what}: {st}"))
    }
}

pub(crate) fn ensure_cgrulesengd() -> Res<()> {
    if Command::new("cgrulesengd").arg("--help").output().is_ok() {
        return Ok(());
    }
    eprintln!("govern bench: installing cgroup-tools (apt-get)");
    let install = || {
        sh(
            Command::new("apt-get")
                .args(["install", "-y", "cgroup-tools"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install cgroup-tools",
        )
    };
    if install().is_err() {
        sh(Command::new("apt-get").arg("update"), "apt-get update")?;
        install()?;
    }
    Ok(())
}

/// Refuses to run beside another cgrulesengd (ours would fight it).
pub(crate) fn no_other_cgrulesengd() -> Res<()> {
    for e in fs::read_dir("/proc")
        .map_err(|e| format!("/proc: {e}"))?
        .flatten()
    {
        let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == "cgrulesengd" {
            return Err(format!(
                "a cgrulesengd already runs (pid {}); stop it first",
                e.file_name().to_string_lossy()
            ));
        }
    }
    if Path::new(CGRED_SOCKET).exists() {
        return Err(format!(
            "{CGRED_SOCKET} exists: another cgrulesengd may run"
        ));
    }
    Ok(())
}

pub(crate) fn make_cgroup(path: &Path) -> Res<()> {
    fs::create_dir(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
    undo(|u| u.cgroups.push(path.to_path_buf()));
    Ok(())
}

pub(crate) fn write_etc(path: &str, content: &str) -> Res<()> {
    let before = fs::read(path).ok();
    undo(|u| u.files.push((PathBuf::from(path), before)));
    fs::write(path, content).map_err(|e| format!("{path}: {e}"))
}

pub(crate) struct Setup {
    pub(crate) tmp: PathBuf,
    pub(crate) probe: PathBuf,
    pub(crate) probe_name: String,
    pub(crate) v1_group: String,
    pub(crate) v2_root: PathBuf,
    pub(crate) warm_root: PathBuf,
    /// A copy of /bin/sleep under a name unique to the run that neither
    /// daemon's rules match: the crowd of the 10,000-process idle phase.
    pub(crate) sleeper: PathBuf,
    pub(crate) sleeper_name: String,
}

pub(crate) fn setup() -> Res<Setup> {
    let id = hex8();
    let tmp = std::env::temp_dir().join(format!("reeve-govern-{id}"));
    fs::create_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    undo(|u| u.trees.push(tmp.clone()));
    // comm holds 15 bytes: the unique name fits whole.
    let probe_name = format!("rbp-{id}");
    let probe = tmp.join(&probe_name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/probe.c");
    sh(
        Command::new("cc")
            .args(["-O2", "-static", "-o"])
            .arg(&probe)
            .arg(&src),
        "cc benches/probe.c",
    )?;
    let v1_group = format!("rb-{id}");
    make_cgroup(&Path::new(V1_CPU).join(&v1_group))?;
    let v2_root = Path::new(UNIFIED).join(format!("rbv-{id}"));
    make_cgroup(&v2_root)?;
    let warm_root = Path::new(UNIFIED).join(format!("rbw-{id}"));
    make_cgroup(&warm_root)?;
    for g in ["a", "b"] {
        fs::create_dir(warm_root.join(g)).map_err(|e| format!("warm group: {e}"))?;
    }
    if !Path::new(CGCONFIG).exists() {
        write_etc(CGCONFIG, "")?;
    }
    if !Path::new(CGCONFIG_D).exists() {
        fs::create_dir(CGCONFIG_D).map_err(|e| format!("{CGCONFIG_D}: {e}"))?;
        undo(|u| u.dirs.push(PathBuf::from(CGCONFIG_D)));
    }
    write_etc(RULES, &format!("*:{probe_name}\tcpu\t{v1_group}/\n"))?;
    let sleeper_name = format!("rbs-{id}");
    let sleeper = tmp.join(&sleeper_name);
    fs::copy("/bin/sleep", &sleeper).map_err(|e| format!("copy /bin/sleep: {e}"))?;
    let s = Setup {
        tmp,
        probe,
        probe_name,
        v1_group,
        v2_root,
        warm_root,
        sleeper,
        sleeper_name,
    };
    for pool in REEVE_POOLS {
        s.write_reeve_config(pool, None)?;
    }
    Ok(s)
}

impl Setup {
    /// reeve's config for `pool`: its own state directory, default
    /// discovery, and the metrics endpoint on 127.0.0.1:`metrics` when
    /// given.
    pub(crate) fn reeve_config(&self, pool: &str) -> PathBuf {
        self.tmp.join(format!("reeve-{pool}.json"))
    }

    pub(crate) fn write_reeve_config(&self, pool: &str, metrics: Option<u16>) -> Res<()> {
        // Each pool in its own state directory: the age curve starts
        // from a pool no process has passed through. Pool "never" runs
        // with the audit log never fsynced, to show what the group
        // commit's fdatasync costs the placements that wait behind it.
        let mut cfg = serde_json::json!({
            "targets": [{"name": "bench", "match": {"exe": [self.probe_name]}, "pool": pool}],
            "state_dir": self.tmp.join(format!("state-{pool}")),
            "cgroup": {"root": self.v2_root},
        });
        if pool == "never" {
            cfg["audit"] = serde_json::json!({"fsync": "never"});
        }
        if let Some(port) = metrics {
            cfg["metrics"] = serde_json::json!({"listen": format!("127.0.0.1:{port}")});
        }
        let path = self.reeve_config(pool);
        fs::write(&path, cfg.to_string()).map_err(|e| format!("{}: {e}", path.display()))
    }
}
