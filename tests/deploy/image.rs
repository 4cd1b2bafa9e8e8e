//! The container image (deploy/docker/Dockerfile) without a container
//! runtime: its final stage's file system is built by hand from its COPY
//! lines, with the static binary scripts/test's static step built, and its
//! ENTRYPOINT + CMD run in it under chroot with an empty environment, the
//! host's /proc and cgroup2 bound in (as `--pid=host --cgroupns=host -v
//! /sys/fs/cgroup:/sys/fs/cgroup` do), and only the capabilities the
//! manifests grant.
//!
//! What this proves: the static binary needs nothing from an image but
//! itself and its config (no libc, no /etc/passwd, no /dev, no shell), the
//! image's command and config path agree, and discovery (netlink), exe
//! reads of another user's process and moves into a pool work with exactly
//! those capabilities. What it does not: that `docker build` succeeds (no
//! daemon, no registry here), nor a Kubernetes runtime's namespaces.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::common::cgroup::{cgroup_of, Subtree, UNIFIED};
use super::common::*;
use super::{read, repo};

/// The capabilities reeve runs with in a container (Kubernetes spelling),
/// and why:
/// - SYS_PTRACE: /proc/<pid>/exe and cwd of another user's process (the
///   kernel's ptrace read check), which rules match on;
/// - NET_ADMIN: subscribing to the netlink proc connector; net limits'
///   cgroup BPF attach;
/// - BPF: loading the net limits' programs and maps;
/// - KILL: on_stall/on_exit signals to other users' processes.
pub const CAPABILITIES: [&str; 4] = ["BPF", "KILL", "NET_ADMIN", "SYS_PTRACE"];

/// The exec-form ENTRYPOINT and CMD of the Dockerfile's last stage.
pub fn entrypoint_and_cmd(dockerfile: &str) -> (Vec<String>, Vec<String>) {
    let last = final_stage(dockerfile);
    let exec_form = |word: &str| -> Vec<String> {
        let found: Vec<&str> = last.iter().filter_map(|l| l.strip_prefix(word)).collect();
        assert_eq!(found.len(), 1, "Dockerfile: one {word}in the final stage");
        serde_json::from_str(found[0].trim())
            .unwrap_or_else(|e| panic!("Dockerfile: {word}is not the exec (JSON) form: {e}"))
    };
    (exec_form("ENTRYPOINT "), exec_form("CMD "))
}

/// The lines of the last `FROM` stage, which must be `FROM scratch`.
fn final_stage(dockerfile: &str) -> Vec<&str> {
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("Dockerfile has a FROM");
    assert_eq!(lines[from], "FROM scratch", "the image ships FROM scratch");
    lines[from + 1..].to_vec()
}

/// The (source, destination) of each COPY of the final stage; a source
/// from the build stage is marked `build:`.
fn copies(dockerfile: &str) -> Vec<(String, String)> {
    final_stage(dockerfile)
        .iter()
        .filter_map(|l| l.strip_prefix("COPY "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                [from, src, dst] if from.starts_with("--from=") => {
                    (format!("build:{src}"), dst.to_string())
                }
                [src, dst] => (src.to_string(), dst.to_string()),
                _ => panic!("Dockerfile: unexpected COPY {rest}"),
            }
        })
        .collect()
}

/// The image's root: each COPY placed, the binary from `static_bin`.
fn build_root(root: &Path, static_bin: &Path) {
    for (src, dst) in copies(&read("deploy/docker/Dockerfile")) {
        let to = root.join(dst.trim_start_matches('/'));
        fs::create_dir_all(to.parent().unwrap()).expect("mkdir in root");
        let from = match src.strip_prefix("build:") {
            Some(built) => {
                assert!(
                    built.ends_with("/x86_64-unknown-linux-musl/release/reeve"),
                    "the image ships the musl release binary, not {built}"
                );
                static_bin.to_path_buf()
            }
            None => repo().join(&src),
        };
        fs::copy(&from, &to)
            .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    }
}

/// Runs in scripts/test's deploy step, which builds the static binary and
/// passes it in REEVE_STATIC_BIN (`cargo test --test deploy -- --ignored`);
/// the unit step's debug binary is dynamically linked and could not run in
/// an empty root.
#[test]
#[ignore = "needs the static binary: scripts/test's deploy step runs it"]
fn scratch_image_runs_the_static_binary() {
    let Some(static_bin) = std::env::var_os("REEVE_STATIC_BIN") else {
        panic!("set REEVE_STATIC_BIN to the static musl binary (scripts/test's deploy step does)");
    };
    assert!(super::is_root(), "needs root: chroot, mounts, cgroup moves");
    for cmd in ["unshare", "setpriv", "chroot"] {
        assert!(super::have(cmd), "needs {cmd} (util-linux, coreutils)");
    }
    let dir = TempDir::new("image");
    let sub = Subtree::new();
    let root = dir.join("root");
    build_root(&root, Path::new(&static_bin));
    let (entry, cmd) = entrypoint_and_cmd(&read("deploy/docker/Dockerfile"));
    let argv: Vec<String> = entry.iter().chain(&cmd).cloned().collect();
    assert_eq!(argv[1..3], ["watch", "--config"], "image command: {argv:?}");
    let config_in_image = root.join(argv[3].trim_start_matches('/'));

    // The image's own config passes check-config inside the image.
    let out = in_image(&root, &[&argv[0], "check-config", &argv[3]], None);
    assert!(
        out.status.success(),
        "check-config of the image's config inside the image: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Mount points the runtime provides.
    for d in ["proc", "sys/fs/cgroup", "var/lib/reeve"] {
        fs::create_dir_all(root.join(d)).expect("mkdir mount point");
    }
    // The image's command, with the config at its path replaced by one
    // scoped to this test: its target, a pool in the test's subtree as the
    // container sees it.
    let target = Target::new(dir.path());
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let inner_root = Path::new("/sys/fs/cgroup")
        .join(sub.path.strip_prefix(UNIFIED).unwrap())
        .join("reeve");
    let cfg = json!({
        "targets": [{"name": "enc", "match": {"exe": [target.name]}, "pool": "enc"}],
        "discovery": {"mode": "netlink", "scan_interval": "200ms", "rescan_interval": "200ms"},
        "cgroup": {"root": inner_root},
        "log": {"format": "json", "level": "info"},
    });
    fs::write(&config_in_image, serde_json::to_vec(&cfg).unwrap()).expect("write config");
    let log = dir.join("image.log");
    let mut guard = ProcGuard::new();
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let daemon = spawn_in_image(&root, &args, &log);
    let dpid = guard.push(daemon);
    let wait = |what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if let Some(v) = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v))
            {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let started = wait("started", &|v| event_name(v) == "started");
    assert_eq!(
        started["mode"], "netlink",
        "netlink with NET_ADMIN: {started}"
    );
    assert_eq!(started["state_dir"], "/var/lib/reeve", "{started}");

    // A target of another user: its exe is read (SYS_PTRACE) and it is
    // moved into the pool.
    let child = spawn_retry(
        Command::new(&target.path)
            .arg("30")
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let id = Ident {
        pid: child.id(),
        start_ticks: read_start_ticks(child.id()).expect("target stat"),
    };
    guard.push(child);
    let ev = wait("attached or attach_failed", &|v| {
        matches!(event_name(v), "attached" | "attach_failed") && id.matches(v)
    });
    assert_eq!(event_name(&ev), "attached", "{ev}");
    assert_eq!(cgroup_of(id.pid), Some(sub.rel(&sub.pool("enc"))), "{ev}");

    // docker stop: SIGTERM, a clean exit, the state written to the volume.
    // SAFETY: kill(2) of our own unreaped child.
    unsafe { libc::kill(dpid as libc::pid_t, libc::SIGTERM) };
    let status = guard
        .wait_exit(dpid, Duration::from_secs(10))
        .expect("reeve stopped");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let state = dir.join("state");
    assert!(
        state.join("state.json").is_file(),
        "state.json written to the volume"
    );
}

/// `unshare --mount` + binds + `setpriv` + `chroot ROOT ARGV...` with an
/// empty environment; the pid is reeve's (every step execs).
fn command_in_image(root: &Path, argv: &[&str], state: Option<&Path>) -> Command {
    let caps: Vec<String> = CAPABILITIES
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    // chroot needs SYS_CHROOT to enter the root; reeve never calls chroot.
    let bounding = format!("-all,{},+sys_chroot", caps.join(","));
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-euc"]).arg(
        r#"root=$1 state=$2 bounding=$3; shift 3
        if [ -n "$state" ]; then
            mount --bind /proc "$root/proc"
            mount --bind /sys/fs/cgroup/unified "$root/sys/fs/cgroup"
            mount --bind "$state" "$root/var/lib/reeve"
        fi
        setpriv=$(command -v setpriv) chroot=$(command -v chroot)
        exec env -i "$setpriv" --no-new-privs --bounding-set "$bounding" -- "$chroot" "$root" "$@""#,
    );
    c.arg("sh").arg(root);
    c.arg(state.map(|s| s.as_os_str().to_owned()).unwrap_or_default());
    c.arg(bounding);
    c.args(argv);
    c
}

fn in_image(root: &Path, argv: &[&str], state: Option<&Path>) -> std::process::Output {
    run_with_timeout(&mut command_in_image(root, argv, state), WAIT)
}

fn spawn_in_image(root: &Path, argv: &[&str], log: &Path) -> std::process::Child {
    let state = root.parent().unwrap().join("state");
    fs::create_dir_all(&state).expect("mkdir state volume");
    let out = fs::File::create(log).expect("create log");
    let err = out.try_clone().expect("dup log");
    spawn_retry(
        command_in_image(root, argv, Some(&state))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
    )
}
