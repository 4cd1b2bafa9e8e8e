//! The command line as a user sees it: usage, exit codes, and config
//! validation errors that name the file and the field.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{reeve, run_with_timeout, unique_name, write_file, TempDir, REEVE};
use serde_json::{json, Value};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stderr holds exactly one non-empty line (a trailing newline is allowed).
fn one_line(out: &Output) -> String {
    let err = stderr(out);
    let line = err.strip_suffix('\n').unwrap_or(&err);
    assert!(
        !line.is_empty() && !line.contains('\n'),
        "expected exactly one line on stderr, got {:?}",
        err
    );
    line.to_string()
}

fn assert_usage_error(args: &[&str]) {
    let out = reeve(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "reeve {args:?}: expected exit 2, got {}; stderr: {:?}",
        out.status,
        stderr(&out)
    );
    let line = one_line(&out);
    assert!(
        line.contains("reeve help"),
        "reeve {args:?}: the usage error should hint at 'reeve help': {line:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "reeve {args:?}: nothing on stdout expected, got {:?}",
        stdout(&out)
    );
}

fn assert_config_error(out: &Output, file: &Path, fields: &[&str], what: &str) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: expected exit 2, got {}; stdout {:?}; stderr {:?}",
        out.status,
        stdout(out),
        stderr(out)
    );
    let line = one_line(out);
    let file = file.to_string_lossy();
    assert!(
        line.contains(file.as_ref()),
        "{what}: the error should name the file {file}: {line:?}"
    );
    for f in fields {
        assert!(
            line.contains(f),
            "{what}: the error should name the field {f:?}: {line:?}"
        );
    }
    assert!(
        out.stdout.is_empty(),
        "{what}: nothing on stdout expected, got {:?}",
        stdout(out)
    );
}

fn check_config(path: &Path) -> Output {
    reeve(&["check-config", path.to_str().expect("utf-8 path")])
}

/// check-config succeeds, prints a JSON object, and accepts its own output
/// unchanged. Returns the effective config.
fn check_config_ok_roundtrip(dir: &TempDir, path: &Path) -> Value {
    let out = check_config(path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check-config {}: {}; stderr {:?}",
        path.display(),
        out.status,
        stderr(&out)
    );
    let text = stdout(&out);
    let effective: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("check-config output is not JSON ({e}):\n{text}"));
    assert!(
        effective.is_object(),
        "effective config is not an object: {text}"
    );
    assert!(
        text.trim_end().lines().count() > 1,
        "check-config should pretty-print the config: {text}"
    );

    let again_path = write_file(dir.path(), &format!("again-{}.json", unique_name()), &text);
    let again = check_config(&again_path);
    assert_eq!(
        again.status.code(),
        Some(0),
        "check-config of its own output: {}; stderr {:?}\ninput was:\n{text}",
        again.status,
        stderr(&again)
    );
    let effective2: Value = serde_json::from_str(&stdout(&again)).expect("second output is JSON");
    assert_eq!(
        effective, effective2,
        "check-config is not a fixpoint on its own output"
    );
    effective
}

#[test]
fn version_prints_name_and_version() {
    let out = reeve(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "stderr {:?}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("reeve "), "{text:?}");
    assert_eq!(
        text.trim_end(),
        format!("reeve {}", env!("CARGO_PKG_VERSION")),
        "--version output"
    );
}

#[test]
fn help_prints_usage_on_stdout() {
    let out = reeve(&["help"]);
    assert_eq!(out.status.code(), Some(0), "stderr {:?}", stderr(&out));
    let text = stdout(&out);
    for word in ["scan", "watch", "check-config"] {
        assert!(text.contains(word), "help should mention {word}:\n{text}");
    }
}

#[test]
fn help_scan_prints_scan_usage() {
    let out = reeve(&["help", "scan"]);
    assert_eq!(out.status.code(), Some(0), "stderr {:?}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("scan"), "{text}");
    assert!(
        text.contains("--json"),
        "help scan should mention --json:\n{text}"
    );
    assert!(
        text.contains("--config"),
        "help scan should mention --config:\n{text}"
    );
}

#[test]
fn no_arguments_is_a_usage_error() {
    assert_usage_error(&[]);
}

#[test]
fn unknown_command_is_a_usage_error() {
    assert_usage_error(&["frobnicate"]);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    assert_usage_error(&["--bogus"]);
    assert_usage_error(&["scan", "--bogus"]);
    // Must be rejected before the daemon starts (run_with_timeout would
    // catch a daemon that keeps running).
    assert_usage_error(&["watch", "--bogus"]);
}

#[test]
fn missing_value_is_a_usage_error() {
    assert_usage_error(&["scan", "--config"]);
    assert_usage_error(&["watch", "--log-format"]);
    assert_usage_error(&["watch", "--log-level"]);
    assert_usage_error(&["check-config"]);
}

#[test]
fn check_config_valid_file_roundtrips() {
    let dir = TempDir::new("cli-valid");
    let name = unique_name();
    let path = write_file(
        dir.path(),
        "valid.json",
        &json!({
            "targets": [{"name": "enc", "match": {"exe": [name]}}],
            "discovery": {"mode": "poll", "scan_interval": "250ms"},
        })
        .to_string(),
    );
    let eff = check_config_ok_roundtrip(&dir, &path);
    assert_eq!(eff["targets"][0]["name"], "enc", "{eff:#}");
    assert_eq!(eff["targets"][0]["match"]["exe"], json!([name]), "{eff:#}");
    assert_eq!(eff["discovery"]["mode"], "poll", "{eff:#}");
    // The effective config spells out the defaults it filled in.
    for key in ["targets", "discovery", "capacity", "log"] {
        assert!(
            eff.get(key).is_some(),
            "effective config lacks {key}: {eff:#}"
        );
    }
}

#[test]
fn check_config_empty_object_shows_defaults() {
    let dir = TempDir::new("cli-empty");
    let path = write_file(dir.path(), "empty.json", "{}");
    let eff = check_config_ok_roundtrip(&dir, &path);
    for key in ["discovery", "capacity", "log"] {
        assert!(
            eff.get(key).is_some(),
            "effective config lacks {key}: {eff:#}"
        );
    }
    assert!(eff["capacity"].as_u64().unwrap_or(0) > 0, "{eff:#}");
    assert!(eff["discovery"]["scan_interval"].is_string(), "{eff:#}");
    assert!(eff["discovery"]["mode"].is_string(), "{eff:#}");
}

#[test]
fn check_config_full_file_keeps_every_setting() {
    let dir = TempDir::new("cli-full");
    let name = unique_name();
    let state = dir.join("state");
    let cfg = json!({
        "targets": [{
            "name": "enc",
            "match": {
                "comm": ["ffmpeg"],
                "exe": [name],
                "argv0": ["gst-launch-1.0"],
                "cmdline_contains": ["-i rtmp://"]
            },
            "filter": {
                "users": [0],
                "exclude_users": [65534],
                "parent_pids": [1],
                "exclude_parent_pids": [2],
                "parent_comms": ["systemd"],
                "exclude_parent_comms": ["cron"],
                "min_age": "0s",
                "max_age": "1h",
                "cwd_prefixes": ["/tmp"]
            }
        }],
        "discovery": {"mode": "auto", "scan_interval": "1s"},
        "capacity": 4096,
        "state_dir": state.to_str().unwrap(),
        "log": {"format": "text", "level": "info"}
    });
    let path = write_file(dir.path(), "full.json", &cfg.to_string());
    let eff = check_config_ok_roundtrip(&dir, &path);
    let t = &eff["targets"][0];
    assert_eq!(t["name"], "enc", "{eff:#}");
    for list in ["comm", "exe", "argv0", "cmdline_contains"] {
        assert_eq!(
            t["match"][list], cfg["targets"][0]["match"][list],
            "match.{list}: {eff:#}"
        );
    }
    for list in [
        "users",
        "exclude_users",
        "parent_pids",
        "exclude_parent_pids",
        "parent_comms",
        "exclude_parent_comms",
        "cwd_prefixes",
    ] {
        assert_eq!(
            t["filter"][list], cfg["targets"][0]["filter"][list],
            "filter.{list}: {eff:#}"
        );
    }
    assert!(t["filter"]["min_age"].is_string(), "{eff:#}");
    assert!(t["filter"]["max_age"].is_string(), "{eff:#}");
    assert_eq!(eff["discovery"]["mode"], "auto", "{eff:#}");
    assert!(eff["discovery"]["scan_interval"].is_string(), "{eff:#}");
    assert_eq!(eff["capacity"], 4096, "{eff:#}");
    assert_eq!(eff["state_dir"], cfg["state_dir"], "{eff:#}");
    assert_eq!(
        eff["log"],
        json!({"format": "text", "level": "info"}),
        "{eff:#}"
    );
}

#[test]
fn check_config_rejects_bad_files_naming_file_and_field() {
    let dir = TempDir::new("cli-bad");
    let rule = |extra: Value| {
        let mut t = json!({"name": "t", "match": {"exe": ["x"]}});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        t
    };
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown top-level field",
            json!({"targets": [], "bogus_field": 1}).to_string(),
            vec!["bogus_field"],
        ),
        (
            "match.comm is a string, not a list",
            json!({"targets": [{"name": "t", "match": {"comm": "ffmpeg"}}]}).to_string(),
            vec!["targets[0].match.comm"],
        ),
        (
            "unparsable scan_interval",
            json!({"discovery": {"scan_interval": "soon"}}).to_string(),
            vec!["discovery.scan_interval"],
        ),
        (
            "scan_interval below 10ms",
            json!({"discovery": {"scan_interval": "1ms"}}).to_string(),
            vec!["discovery.scan_interval"],
        ),
        (
            "capacity 0",
            json!({"capacity": 0}).to_string(),
            vec!["capacity"],
        ),
        (
            "capacity not a number",
            json!({"capacity": "big"}).to_string(),
            vec!["capacity"],
        ),
        (
            "duplicate rule name names both rules",
            json!({"targets": [rule(json!({})), rule(json!({}))]}).to_string(),
            vec!["targets[1].name: duplicate of targets[0].name"],
        ),
        ("malformed JSON", "{\"targets\": [".to_string(), vec![]),
        (
            "unknown field in a filter",
            json!({"targets": [rule(json!({"filter": {"bogus": 1}}))]}).to_string(),
            vec!["targets[0].filter", "bogus"],
        ),
        (
            "bad min_age",
            json!({"targets": [rule(json!({"filter": {"min_age": "later"}}))]}).to_string(),
            vec!["targets[0].filter.min_age"],
        ),
        (
            "unknown discovery mode",
            json!({"discovery": {"mode": "magic"}}).to_string(),
            vec!["discovery.mode"],
        ),
        (
            "unknown log level",
            json!({"log": {"level": "verbose"}}).to_string(),
            vec!["log.level"],
        ),
        (
            "rule without a name",
            json!({"targets": [{"match": {"exe": ["x"]}}]}).to_string(),
            vec!["targets[0]", "name"],
        ),
        (
            "rule without match",
            json!({"targets": [{"name": "t"}]}).to_string(),
            vec!["targets[0]", "match"],
        ),
        (
            "targets given twice (the first list would vanish)",
            r#"{"targets": [{"name": "a", "match": {"exe": ["a"]}}], "targets": []}"#.to_string(),
            vec!["targets: given twice"],
        ),
        (
            "a key repeated inside a rule",
            r#"{"targets": [{"name": "a", "name": "b", "match": {"exe": ["a"]}}]}"#.to_string(),
            vec!["targets[0].name: given twice"],
        ),
        (
            "max_age 0 matches nothing",
            json!({"targets": [rule(json!({"filter": {"max_age": "0s"}}))]}).to_string(),
            vec!["targets[0].filter.max_age"],
        ),
        (
            "min_age beyond any uptime",
            json!({"targets": [rule(json!({"filter": {"min_age": "1000000h"}}))]}).to_string(),
            vec!["targets[0].filter.min_age"],
        ),
        (
            "a rule name that is not a group name",
            json!({"targets": [{"name": "enc 1", "match": {"exe": ["x"]}}]}).to_string(),
            vec!["targets[0].name"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, text, fields)) in cases.iter().enumerate() {
        let path = write_file(dir.path(), &format!("bad-{i}.json"), text);
        let out = check_config(&path);
        // Collect every failing case rather than stopping at the first one.
        if let Err(e) = std::panic::catch_unwind(|| assert_config_error(&out, &path, fields, what))
        {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("[{what}] input {text}\n    {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad configs were not reported as expected:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn scan_with_missing_config_is_a_config_error() {
    let dir = TempDir::new("cli-missing");
    let missing = dir.join("missing.json");
    let out = reeve(&["scan", "--config", missing.to_str().unwrap()]);
    assert_config_error(&out, &missing, &[], "scan --config missing.json");
}

#[test]
fn watch_with_missing_config_is_a_config_error() {
    let dir = TempDir::new("cli-missing-watch");
    let missing = dir.join("missing.json");
    let out = reeve(&["watch", "--config", missing.to_str().unwrap()]);
    assert_config_error(&out, &missing, &[], "watch --config missing.json");
}

/// A FIFO, a directory or a device is refused at once with one line and
/// exit 2, by check-config and by watch: nothing waits for a writer.
#[test]
fn config_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = TempDir::new("cli-not-regular");
    let fifo = dir.join("fifo.json");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let cases = [
        (fifo.clone(), "a FIFO"),
        (dir.path().to_path_buf(), "a directory"),
        (Path::new("/dev/null").to_path_buf(), "a device"),
    ];
    for (path, kind) in &cases {
        let p = path.to_str().expect("utf-8 path");
        for args in [vec!["check-config", p], vec!["watch", "--config", p]] {
            let what = format!("reeve {args:?} ({kind})");
            let out = run_with_timeout(Command::new(REEVE).args(&args), Duration::from_secs(10));
            assert_config_error(&out, path, &[], &what);
            let line = one_line(&out);
            assert!(
                line.contains(&format!("not a regular file ({kind})")),
                "{what}: {line:?}"
            );
        }
    }
}

/// `watch` refuses a file that gives a key twice (the first `targets`
/// would otherwise vanish) before it starts anything.
#[test]
fn watch_with_a_repeated_key_is_a_config_error() {
    let dir = TempDir::new("cli-dup-watch");
    let text = r#"{"targets": [{"name": "a", "match": {"exe": ["a"]}}],
                   "targets": [{"name": "b", "match": {"exe": ["b"]}}]}"#;
    let path = write_file(dir.path(), "dup.json", text);
    let out = reeve(&["watch", "--config", path.to_str().unwrap()]);
    assert_config_error(
        &out,
        &path,
        &["targets: given twice"],
        "watch with targets twice",
    );
}

#[test]
fn scan_with_invalid_config_is_a_config_error() {
    let dir = TempDir::new("cli-invalid-scan");
    let path = write_file(dir.path(), "bad.json", &json!({"capacity": 0}).to_string());
    let out = reeve(&["scan", "--config", path.to_str().unwrap()]);
    assert_config_error(&out, &path, &["capacity"], "scan --config with capacity 0");
}

#[test]
fn watch_netlink_mode_in_a_pid_namespace_exits_1() {
    // Inside a new pid namespace the proc connector cannot be used; an
    // explicit `mode: netlink` is a runtime failure (exit 1), not a silent
    // fallback. --kill-child makes the namespace die with unshare.
    let dir = TempDir::new("cli-netlink-ns");
    let cfg = json!({
        "targets": [{"name": "t", "match": {"exe": [unique_name()]}}],
        "discovery": {"mode": "netlink", "scan_interval": "100ms", "rescan_interval": "100ms"},
        "state_dir": common::state_dir(&dir),
    });
    let path = common::write_config(dir.path(), &cfg);
    let out = run_with_timeout(
        Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                REEVE,
                "watch",
                "--config",
            ])
            .arg(&path),
        Duration::from_secs(20),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "netlink mode inside a pid namespace: expected exit 1, got {}; stderr:\n{}",
        out.status,
        stderr(&out)
    );
    // unshare exits 1 too when it cannot make the namespace (not root):
    // only reeve's own message shows that reeve ran and refused.
    assert!(
        stderr(&out).contains("discovery.mode is \"netlink\" but"),
        "expected reeve's netlink refusal on stderr, got:\n{}",
        stderr(&out)
    );
}

/// Every event name the code can log or audit, from the non-test sources:
/// the first string argument of a logger's `info(`, `warn(`, `error(`, `debug(`,
/// `on_event(` and the CLI's `audit(`, found with whitespace removed so
/// calls split over lines count too.
fn events_in_sources() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut names = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests sit at the end of a file, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let flat: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        for marker in [
            "log.info(\"",
            "log.warn(\"",
            "log.error(\"",
            "log.debug(\"",
            "on_event(\"",
            "audit(&config.state_dir,\"",
        ] {
            for (at, _) in flat.match_indices(marker) {
                let rest = &flat[at + marker.len()..];
                let end = rest.find('"').unwrap();
                names.push(rest[..end].to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn readme_lists_every_event() {
    let names = events_in_sources();
    assert!(
        names.len() > 40 && names.iter().any(|n| n == "discovered"),
        "the scan of src/ finds the events: {names:?}"
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "README.md does not list: {missing:?}");
}

#[test]
fn events_says_when_its_state_directory_does_not_exist() {
    let dir = TempDir::new("cli-events-nodir");
    let missing = dir.path().join("never-made");
    let body = json!({
        "targets": [{"name": "t", "match": {"exe": [unique_name()]}}],
        "state_dir": missing,
    });
    let cfg = write_file(dir.path(), "reeve.json", &body.to_string());
    let out = reeve(&["events", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains("no state directory at") && err.contains("never-made"),
        "{err}"
    );
    assert!(!missing.exists(), "reading events creates nothing");
}
