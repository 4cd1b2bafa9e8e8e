//! The files in deploy/ work the way an operator installs them: the example
//! configs pass `reeve check-config`, every service file starts the same
//! binary with the same config, the s6 service dir restarts a killed reeve
//! under a real s6-svscan and the new daemon re-adopts its workloads, the
//! container image's file system runs the static binary with only the
//! capabilities the manifests grant, and the Kubernetes manifest mounts what
//! its container arguments name.
//!
//! Every daemon here is scoped to the test's own target (a copy of
//! /bin/sleep under a unique name) and to a private cgroup v2 subtree.

mod common;

#[path = "deploy/image.rs"]
mod image;
#[path = "deploy/s6.rs"]
mod s6;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{reeve, run_with_timeout, TempDir, WAIT};
use serde_json::Value;

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(rel: &str) -> String {
    let p = repo().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Whether `cmd` is a command on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null", "sh", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `reeve check-config FILE` exits 0; panics with its stderr otherwise.
pub fn assert_config_ok(file: &Path, what: &str) {
    let out = reeve(&["check-config", &file.to_string_lossy()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: reeve check-config {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The binary and config every service file starts reeve with.
const BIN: &str = "/usr/local/bin/reeve";
const CONFIG: &str = "/etc/reeve/reeve.json";

#[test]
fn example_configs_pass_check_config() {
    let dir = repo().join("deploy/examples");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).expect("read deploy/examples") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            assert_config_ok(&path, "example config");
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["appliance-pools.json", "audited.json", "edge-encoder.json"],
        "the examples the docs name"
    );
    // The shipped defaults too (the embedded config and the image's).
    assert_config_ok(&repo().join("deploy/reeve.json"), "deploy/reeve.json");
}

/// Every service file runs `reeve watch --config /etc/reeve/reeve.json` from
/// /usr/local/bin, so the install steps in docs/OPERATIONS.md hold for each.
#[test]
fn service_files_start_the_installed_binary() {
    let want = format!("{BIN} watch --config");
    for (file, line) in [
        ("deploy/reeve.service", "ExecStart="),
        ("deploy/runit/run", "exec "),
        ("deploy/s6/reeve/run", "exec "),
        ("deploy/openrc/reeve", "command="),
    ] {
        let text = read(file);
        let found: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(line) && l.contains(BIN))
            .collect();
        assert_eq!(found.len(), 1, "{file}: one `{line}` line naming {BIN}");
        if file != "deploy/openrc/reeve" {
            assert!(
                found[0].contains(&format!("{want} {CONFIG}")),
                "{file}: {:?} should run `{want} {CONFIG}`",
                found[0]
            );
        }
    }
    let openrc = read("deploy/openrc/reeve");
    assert!(
        openrc.contains(&format!(
            "command_args=\"watch --config ${{REEVE_CONFIG:-{CONFIG}}}\""
        )),
        "deploy/openrc/reeve: command_args should default to {CONFIG}"
    );
    // The shell scripts parse (shellcheck in scripts/test's lint step reads
    // them more closely).
    for file in [
        "deploy/runit/run",
        "deploy/s6/reeve/run",
        "deploy/openrc/reeve",
    ] {
        let out = run_with_timeout(Command::new("sh").arg("-n").arg(repo().join(file)), WAIT);
        assert!(
            out.status.success(),
            "sh -n {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = fs::metadata(repo().join(file)).expect("stat").permissions();
        assert!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111 != 0,
            "{file} must be executable: its init system runs it directly"
        );
    }
}

/// deploy/kubernetes/daemonset.yaml as JSON documents, through python3's
/// yaml module (Debian's python3-yaml; scripts/test installs it).
fn kubernetes_docs() -> Option<Vec<Value>> {
    let probe = Command::new("python3").args(["-c", "import yaml"]).status();
    if !common::require(
        probe.is_ok_and(|s| s.success()),
        "needs python3 with the yaml module (Debian: python3-yaml) to parse the manifest",
    ) {
        return None;
    }
    let out = run_with_timeout(
        Command::new("python3")
            .args([
                "-c",
                "import json,sys,yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
            ])
            .arg(repo().join("deploy/kubernetes/daemonset.yaml")),
        WAIT,
    );
    assert!(
        out.status.success(),
        "deploy/kubernetes/daemonset.yaml does not parse as YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("python3 printed JSON");
    Some(docs)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "daemonset.yaml: one {kind}");
    found[0]
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The DaemonSet's container runs the image's command with a config the
/// manifest mounts, that config passes check-config, and every mount the
/// config relies on (state directory, cgroup2, token) is declared.
#[test]
fn daemonset_mounts_what_its_config_names() {
    let Some(docs) = kubernetes_docs() else {
        return;
    };
    let ds = kind(&docs, "DaemonSet");
    let cm = kind(&docs, "ConfigMap");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "hostPID: reeve must see every process"
    );
    assert_eq!(
        pod["hostNetwork"], true,
        "hostNetwork: the proc connector exists only in the host's network namespace"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let c = &containers[0];

    // The image's ENTRYPOINT + CMD, unless the manifest overrides them.
    let (entry, cmd) = image::entrypoint_and_cmd(&read("deploy/docker/Dockerfile"));
    let command = if c["command"].is_null() {
        entry
    } else {
        strs(&c["command"]).iter().map(|s| s.to_string()).collect()
    };
    let args: Vec<String> = if c["args"].is_null() {
        cmd
    } else {
        strs(&c["args"]).iter().map(|s| s.to_string()).collect()
    };
    assert_eq!(command, [BIN], "the container runs reeve");
    assert_eq!(args[..2], ["watch", "--config"], "args: {args:?}");
    let config_path = &args[2];

    // Mounts: every one names a declared volume.
    let volumes: Vec<&Value> = pod["volumes"].as_array().expect("volumes").iter().collect();
    let volume = |name: &str| -> &Value {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volumeMount {name} names no volume"))
    };
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let mount_at = |path: &str| -> &Value {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing is mounted at {path}"))
    };
    for m in mounts {
        volume(m["name"].as_str().expect("mount name"));
    }

    // The config file: a key of the ConfigMap, mounted at the path the
    // arguments name.
    let cfg_mount = mount_at(config_path);
    let cfg_volume = volume(cfg_mount["name"].as_str().unwrap());
    assert_eq!(
        cfg_volume["configMap"]["name"], cm["metadata"]["name"],
        "the config volume is the manifest's ConfigMap"
    );
    let key = cfg_mount["subPath"]
        .as_str()
        .expect("config mounted by subPath");
    let text = cm["data"][key]
        .as_str()
        .expect("the ConfigMap holds the key");
    let dir = TempDir::new("k8s");
    let file = dir.join("reeve.json");
    fs::write(&file, text).expect("write the ConfigMap's config");
    assert_config_ok(&file, "the DaemonSet's config");
    let config: Value = serde_json::from_str(text).expect("config is JSON");

    // The host paths it needs.
    let state = config["state_dir"].as_str().unwrap_or("/var/lib/reeve");
    let state_volume = volume(mount_at(state)["name"].as_str().unwrap());
    assert_eq!(
        state_volume["hostPath"]["path"], state,
        "state dir on the host"
    );
    let cg_volume = volume(mount_at("/sys/fs/cgroup")["name"].as_str().unwrap());
    assert_eq!(
        cg_volume["hostPath"]["path"], "/sys/fs/cgroup",
        "the host's cgroup2 mount"
    );
    assert_ne!(
        mount_at("/sys/fs/cgroup")["readOnly"],
        true,
        "reeve writes cgroup files"
    );

    // Metrics: the port the config listens on is the one declared, and the
    // token file is a mounted file (subPath: a regular file, not the
    // symlink a projected volume makes, which reeve refuses).
    let listen = config["metrics"]["listen"]
        .as_str()
        .expect("metrics.listen");
    let port: u64 = listen.rsplit(':').next().unwrap().parse().expect("port");
    let ports = c["ports"].as_array().expect("ports");
    assert!(
        ports.iter().any(|p| p["containerPort"] == port),
        "containerPort {port} from metrics.listen {listen}"
    );
    let token = config["metrics"]["token_file"]
        .as_str()
        .expect("a token: the port is on the node's network");
    let token_mount = mount_at(token);
    assert!(
        token_mount["subPath"].is_string(),
        "token mounted by subPath"
    );
    let token_volume = volume(token_mount["name"].as_str().unwrap());
    assert!(
        token_volume["secret"]["secretName"].is_string(),
        "token from a Secret"
    );
    let token_mode = token_volume["secret"]["defaultMode"]
        .as_u64()
        .expect("defaultMode");
    assert_eq!(
        token_mode & 0o077,
        0,
        "the token file must be private: mode {token_mode:o}"
    );

    // The capabilities are exactly the ones the image test grants.
    let sc = &c["securityContext"];
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let mut add = strs(&sc["capabilities"]["add"]);
    add.sort();
    let mut want = image::CAPABILITIES.to_vec();
    want.sort();
    assert_eq!(add, want, "capabilities added");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert!(
        c["resources"]["requests"]["memory"].is_string(),
        "resources.requests"
    );
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "resources.limits"
    );
}

/// Every warning and error event in src/ (outside unit tests), by the same
/// scan as tests/cli.rs `readme_lists_every_event`.
fn warn_and_error_events() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("src"), &mut files);
    let mut names = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let flat: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        for marker in [
            "log.warn(\"",
            "log.error(\"",
            "LogLevel::Warn,\"",
            "LogLevel::Error,\"",
        ] {
            for (at, _) in flat.match_indices(marker) {
                let rest = &flat[at + marker.len()..];
                let end = rest.find('"').unwrap();
                // `"warn" => LogLevel::Warn,` in the argument parser is a
                // level's name, not an event.
                if !rest[end..].starts_with("\"=>") {
                    names.push(rest[..end].to_string());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn operations_guide_lists_every_warning_and_error() {
    let names = warn_and_error_events();
    assert!(
        names.len() > 30 && names.iter().any(|n| n == "limit_failed"),
        "the scan of src/ finds the events: {names:?}"
    );
    let guide = read("docs/OPERATIONS.md");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !guide.contains(&format!("| `{n}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/OPERATIONS.md's troubleshooting tables do not list: {missing:?}"
    );
}
