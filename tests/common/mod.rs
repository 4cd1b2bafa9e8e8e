//! Shared helpers for reeve's behaviour tests.
//!
//! Everything here is scoped to the test's own processes: targets are copies
//! of /bin/sleep under a unique name `ffmpeg-reeve-test-<16 hex>` in a fresh
//! temporary directory, every child is owned by a guard that kills and reaps
//! it on drop, and every wait has a deadline whose failure message carries
//! the tail of reeve's log.

#![allow(dead_code)]

pub mod cgroup;
pub mod require;
mod tempdir;

pub use tempdir::TempDir;

#[allow(unused_imports)] // not every test file needs it
pub use require::require;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The binary under test.
pub const REEVE: &str = env!("CARGO_BIN_EXE_reeve");

/// Default deadline for a single expected event.
pub const WAIT: Duration = Duration::from_secs(20);

/// `errno` for "Text file busy": a freshly copied executable can still be
/// open for writing in a child forked by a parallel test thread.
const ETXTBSY: i32 = 26;

/// 16 lowercase hex characters from /dev/urandom.
pub fn random_hex16() -> String {
    let mut buf = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A target basename that nothing else on the machine carries.
pub fn unique_name() -> String {
    format!("ffmpeg-reeve-test-{}", random_hex16())
}

/// The first 15 bytes of a name: what the kernel keeps as `comm`.
pub fn comm_of(name: &str) -> String {
    name.chars().take(15).collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after epoch")
        .as_millis() as u64
}

/// Copies `src` to `dst` and makes it executable.
pub fn copy_exe(src: &Path, dst: &Path) {
    fs::copy(src, dst)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).expect("chmod copied exe");
}

/// Spawns `cmd`, retrying while the executable is "text file busy".
pub fn spawn_retry(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// Field 22 (start time in clock ticks) of /proc/<pid>/stat, parsed from the
/// fields after the last ')' so that any comm is handled.
pub fn read_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After ')' come field 3 (state) onwards; field 22 is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The pid namespace inode of a process, from the /proc/<pid>/ns/pid link.
pub fn pid_ns_of(pid: &str) -> u64 {
    let link = fs::read_link(format!("/proc/{pid}/ns/pid")).expect("readlink ns/pid");
    let s = link.to_string_lossy().to_string();
    s.trim_start_matches("pid:[")
        .trim_end_matches(']')
        .parse()
        .unwrap_or_else(|_| panic!("odd ns link {s}"))
}

/// A process identity as reeve reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Ident {
    pub fn of_event(v: &Value) -> Option<Ident> {
        Some(Ident {
            pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
            start_ticks: v.get("start_ticks")?.as_u64()?,
        })
    }

    pub fn matches(&self, v: &Value) -> bool {
        Ident::of_event(v) == Some(*self)
    }
}

/// An executable copy of /bin/sleep under a unique basename.
pub struct Target {
    pub name: String,
    pub path: PathBuf,
    pub dir: PathBuf,
}

impl Target {
    pub fn new(dir: &Path) -> Target {
        Target::with_name(dir, &unique_name())
    }

    pub fn with_name(dir: &Path, name: &str) -> Target {
        let path = dir.join(name);
        copy_exe(Path::new("/bin/sleep"), &path);
        Target {
            name: name.to_string(),
            path,
            dir: dir.to_path_buf(),
        }
    }

    /// Runs `NAME <secs>` (argv[0] is the full path, cwd is the target's
    /// directory) under `guard` and returns its identity.
    pub fn spawn(&self, guard: &mut ProcGuard, secs: &str) -> Ident {
        let child = spawn_retry(
            Command::new(&self.path)
                .arg(secs)
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let pid = child.id();
        // The child has exec'd (spawn reports exec failure synchronously) and
        // cannot be reaped before we do, so its stat file is there.
        let start_ticks = read_start_ticks(pid).expect("stat of a fresh child");
        guard.push(child);
        Ident { pid, start_ticks }
    }
}

/// Owns children; kills and reaps each one that is still running on drop.
#[derive(Default)]
pub struct ProcGuard {
    children: HashMap<u32, Child>,
}

impl ProcGuard {
    pub fn new() -> ProcGuard {
        ProcGuard::default()
    }

    pub fn push(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.children.insert(pid, child);
        pid
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// SIGKILL and reap one child (by the pid we spawned it with).
    pub fn kill(&mut self, pid: u32) -> Option<ExitStatus> {
        let mut child = self.children.remove(&pid)?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGKILL every child first, then reap them all.
    pub fn kill_all(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
        }
        for (_, mut child) in self.children.drain() {
            let _ = child.wait();
        }
    }

    /// Reaps children that have exited; returns their pids.
    pub fn reap_exited(&mut self) -> Vec<u32> {
        let mut done = Vec::new();
        for (pid, child) in self.children.iter_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                done.push(*pid);
            }
        }
        for pid in &done {
            self.children.remove(pid);
        }
        done
    }

    /// Waits (with a deadline) for one child to exit on its own.
    pub fn wait_exit(&mut self, pid: u32, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.children.get_mut(&pid)?;
            if let Ok(Some(status)) = child.try_wait() {
                self.children.remove(&pid);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, config: &Value) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = dir.join(format!("config-{}.json", N.fetch_add(1, Ordering::Relaxed)));
    let text = serde_json::to_string_pretty(config).expect("serialize config");
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A state directory for a daemon under test, inside the test's temp dir.
pub fn state_dir(dir: &TempDir) -> String {
    let p = dir.join("state");
    let _ = fs::create_dir(&p);
    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
    p.to_string_lossy().into_owned()
}

/// Runs a command to completion with a deadline; on timeout kills it (by
/// its pid), reaps it, and panics.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    run_with_timeout_pid(cmd, timeout).1
}

/// Like [`run_with_timeout`], also returning the pid the command ran as.
pub fn run_with_timeout_pid(cmd: &mut Command, timeout: Duration) -> (u32, Output) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_retry(cmd);
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out_t.join().unwrap_or_default();
                let stderr = err_t.join().unwrap_or_default();
                panic!(
                    "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
        }
    };
    let pid = child.id();
    (
        pid,
        Output {
            status,
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        },
    )
}

/// `reeve ARGS...` with a 20 s deadline.
pub fn reeve(args: &[&str]) -> Output {
    run_with_timeout(Command::new(REEVE).args(args), WAIT)
}

/// Parses one JSON object per non-empty line; panics naming the bad line.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"))
        })
        .collect()
}

/// The event name of a log line.
pub fn event_name(v: &Value) -> &str {
    v.get("event").and_then(Value::as_str).unwrap_or("")
}

/// `reeve watch` under test: JSON logs at debug level into a file.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub log_path: PathBuf,
    /// Complete lines parsed so far, in order.
    events: Vec<Value>,
    /// Lines that were not JSON objects.
    bad_lines: Vec<String>,
    /// Bytes of the log consumed so far (always at a line boundary).
    offset: usize,
    counts: HashMap<String, usize>,
    exit: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `reeve watch --config CONFIG --log-format json --log-level
    /// debug` with stderr in `dir/<log_name>`.
    pub fn start(config: &Path, dir: &Path) -> Daemon {
        Daemon::start_exe(Path::new(REEVE), config, dir)
    }

    /// Same, with another executable (a copy of reeve).
    pub fn start_exe(exe: &Path, config: &Path, dir: &Path) -> Daemon {
        Daemon::start_opts(exe, config, dir, "json", "debug")
    }

    /// `EXE watch --config CONFIG --log-format FORMAT --log-level LEVEL`.
    pub fn start_opts(exe: &Path, config: &Path, dir: &Path, format: &str, level: &str) -> Daemon {
        let log_path = dir.join(format!("reeve-{}.log", random_hex16()));
        let log = fs::File::create(&log_path).expect("create daemon log");
        let out = fs::File::create(log_path.with_extension("stdout")).expect("create stdout file");
        let child = spawn_retry(
            Command::new(exe)
                .arg("watch")
                .arg("--config")
                .arg(config)
                .args(["--log-format", format, "--log-level", level])
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(log)),
        );
        Daemon {
            pid: child.id(),
            child: Some(child),
            log_path,
            events: Vec::new(),
            bad_lines: Vec::new(),
            offset: 0,
            counts: HashMap::new(),
            exit: None,
        }
    }

    /// Parses any newly completed log lines.
    pub fn refresh(&mut self) {
        let Ok(bytes) = fs::read(&self.log_path) else {
            return;
        };
        if bytes.len() <= self.offset {
            return;
        }
        let new = &bytes[self.offset..];
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        for line in String::from_utf8_lossy(&new[..end]).lines() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v.is_object() => {
                    *self.counts.entry(event_name(&v).to_string()).or_default() += 1;
                    self.events.push(v);
                }
                _ => self.bad_lines.push(line.to_string()),
            }
        }
        self.offset += end + 1;
    }

    /// All events so far (a copy).
    pub fn events(&mut self) -> Vec<Value> {
        self.refresh();
        self.events.clone()
    }

    /// All events so far, without copying.
    pub fn events_ref(&mut self) -> &[Value] {
        self.refresh();
        &self.events
    }

    /// How many events named `event` were logged so far.
    pub fn count(&mut self, event: &str) -> usize {
        self.refresh();
        self.counts.get(event).copied().unwrap_or(0)
    }

    pub fn bad_lines(&mut self) -> Vec<String> {
        self.refresh();
        self.bad_lines.clone()
    }

    /// The raw log's last lines, with the noisy debug events (scan,
    /// already_tracked) left out except for the very last few lines.
    pub fn log_tail(&self) -> String {
        log_tail_of(&self.log_path)
    }

    /// Events logged since `cursor`; advances the cursor.
    pub fn since(&mut self, cursor: &mut usize) -> &[Value] {
        self.refresh();
        let from = (*cursor).min(self.events.len());
        *cursor = self.events.len();
        &self.events[from..]
    }

    /// Panics with the log tail if the daemon has exited.
    pub fn check_alive(&mut self, what: &str) {
        if self.exit.is_some() {
            return;
        }
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status);
                self.child = None;
                self.refresh();
                panic!(
                    "reeve exited ({status}) while waiting for {what}\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// Waits until some event (from the start of the log) satisfies `pred`
    /// and returns it; panics after `timeout` with the log tail.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            self.refresh();
            if let Some(i) = self.events[seen..].iter().position(&mut pred) {
                return self.events[seen + i].clone();
            }
            seen = self.events.len();
            self.check_alive(what);
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for an event named `event` about `ident`.
    pub fn wait_event(&mut self, event: &str, ident: Ident, timeout: Duration) -> Value {
        self.wait_for(&format!("{event} of {ident:?}"), timeout, |v| {
            event_name(v) == event && ident.matches(v)
        })
    }

    /// Waits until `cond(self)` holds, polling; panics after `timeout`.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&mut Daemon) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh();
            if cond(self) {
                return;
            }
            self.check_alive(what);
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `started` and returns it.
    pub fn wait_started(&mut self) -> Value {
        self.wait_for("started", WAIT, |v| event_name(v) == "started")
    }

    /// Waits until `n` more `scan` events than now have been logged.
    pub fn wait_scans(&mut self, n: usize, timeout: Duration) {
        let target = self.count("scan") + n;
        self.wait_until(&format!("{n} more scans"), timeout, |d| {
            d.count("scan") >= target
        });
    }

    /// SIGTERM by pid, then waits up to 10 s for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` by pid, then waits up to 10 s for the exit.
    pub fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let mut child = self.child.take().expect("daemon child");
        // SAFETY: plain kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.refresh();
                    panic!(
                        "reeve did not exit within 10 s of SIGTERM\n{}",
                        self.log_tail()
                    );
                }
            }
        };
        self.exit = Some(status);
        self.refresh();
        status
    }

    /// Stops the daemon and asserts the clean-shutdown contract: exit 0, a
    /// `stopped` event, and every stderr line a JSON object.
    pub fn stop_ok(&mut self) {
        let status = self.stop();
        assert_eq!(
            status.code(),
            Some(0),
            "reeve exit status after SIGTERM: {status}\n{}",
            self.log_tail()
        );
        assert!(
            self.count("stopped") == 1,
            "expected exactly one `stopped` event, got {}\n{}",
            self.count("stopped"),
            self.log_tail()
        );
        let stopped = self
            .events_ref()
            .iter()
            .find(|v| event_name(v) == "stopped")
            .cloned()
            .unwrap_or_default();
        assert!(
            stopped["reason"].is_string(),
            "`stopped` should carry a reason: {stopped}"
        );
        let bad = self.bad_lines();
        assert!(
            bad.is_empty(),
            "non-JSON lines on stderr with --log-format json: {:?}",
            &bad[..bad.len().min(5)]
        );
    }

    /// Events named `event` about `ident`.
    pub fn about(&mut self, event: &str, ident: Ident) -> usize {
        self.refresh();
        self.events
            .iter()
            .filter(|v| event_name(v) == event && ident.matches(v))
            .count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A one-rule config matching `name` by exe basename; `parents` adds the
/// `parent_pids` filter.
pub fn config_for(
    dir: &TempDir,
    rule: &str,
    name: &str,
    parents: Option<&[u32]>,
    mode: &str,
    interval: &str,
) -> Value {
    let mut target = serde_json::json!({
        "name": rule,
        "match": {"exe": [name]},
    });
    if let Some(p) = parents {
        target["filter"] = serde_json::json!({"parent_pids": p});
    }
    serde_json::json!({
        "targets": [target],
        // The safety-net rescan at the same pace: these tests count scans.
        "discovery": {"mode": mode, "scan_interval": interval, "rescan_interval": interval},
        "capacity": 4096,
        "state_dir": state_dir(dir),
    })
}

/// Writes `text` to `dir/name`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = fs::File::create(&p).expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
    p
}

/// The tail of a JSON log file, as [`Daemon::log_tail`] shows it.
pub fn log_tail_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let quiet: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            !matches!(event_name(&v), "scan" | "already_tracked")
        })
        .collect();
    let q = &quiet[quiet.len().saturating_sub(40)..];
    let r = &lines[lines.len().saturating_sub(5)..];
    format!(
            "--- reeve log {} ({} lines); last 40 without scan/already_tracked:\n{}\n--- last 5 raw lines:\n{}\n---",
            path.display(),
            lines.len(),
            q.join("\n"),
            r.join("\n")
        )
}
