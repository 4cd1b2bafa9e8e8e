use super::*;

const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nencoder:x:1001:1001::/srv:/bin/sh\n";

pub(super) fn users() -> UserDb {
    UserDb::from_passwd(PASSWD)
}

pub(super) fn parse_ok(doc: &str) -> Config {
    match Config::from_json(doc.as_bytes(), &users()) {
        Ok(c) => c,
        Err(e) => panic!("{doc}: {e}"),
    }
}

/// A document that sets every field, governance included.
pub(super) const FULL: &str = r#"{
  "targets": [
    {
      "name": "ffmpeg",
      "match": {"comm": ["ffmpeg"], "exe": ["ffmpeg"], "argv0": [], "cmdline_contains": ["-f flv"]},
      "filter": {
        "users": ["encoder", 1001, 0], "exclude_users": ["root"],
        "parent_pids": [1], "exclude_parent_pids": [4242],
        "parent_comms": ["systemd"], "exclude_parent_comms": ["bash"],
        "min_age": "0s", "max_age": "1h",
        "cwd_prefixes": ["/srv/encode/", "/", "//tmp//x"]
      },
      "limits": {
        "cpu": 2.5, "cpu_period": "50ms", "cpu_weight": 200,
        "memory": "4G", "memory_high": "3G", "swap": "0", "pids": 64,
        "io_weight": "300", "cpuset": "0-1,2-3,5",
        "io": [
          {"device": "8:0", "rbps": "50M", "wbps": "max", "riops": 1000, "wiops": "max"},
          {"device": "259:0", "wbps": 1048577}
        ]
      }
    },
    {
      "name": "gst_1.0-x", "match": {"argv0": ["gst-launch-1.0"]},
      "limits": {"cpu": "1.5%", "pids": "max", "memory": "max"},
      "pool": "live.encoders"
    }
  ],
  "discovery": {"mode": "netlink", "scan_interval": "1.5s"},
  "capacity": 262144,
  "state_dir": "/var/lib/reeve/",
  "cgroup": {"root": "/sys/fs/cgroup//encoders/"},
  "log": {"format": "json", "level": "debug"}
}"#;

#[test]
fn embedded_document_is_valid_and_matches_the_builtin() {
    let parsed = parse::document(EMBEDDED.as_bytes(), &UserDb::default(), Vec::new).unwrap();
    assert_eq!(parsed, Config::builtin());
    assert_eq!(Config::embedded(), parsed);
    let names: Vec<_> = parsed.targets.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ffmpeg", "gst-launch"]);
    assert_eq!(parsed.capacity, DEFAULT_CAPACITY);
    assert_eq!(parsed.discovery.scan_interval, Duration::from_secs(1));
    assert!(parsed.targets.iter().all(|r| r.limits.is_empty()));
    assert!(parsed.targets.iter().all(|r| r.pool.is_none()));
    assert_eq!(parsed.cgroup_root, None);
}

#[test]
fn empty_document_takes_every_default() {
    let c = parse_ok("{}");
    assert_eq!(c, Config::embedded());
    assert_eq!(c.state_dir, default_state_dir());
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.discovery.mode, DiscoveryMode::Auto);
}

#[test]
fn error_display_joins_path_and_message() {
    let err = ConfigError::new("capacity", "must be between 1 and 262144, the maximum");
    assert_eq!(
        err.to_string(),
        "capacity: must be between 1 and 262144, the maximum"
    );
    assert_eq!(ConfigError::new("", "oops").to_string(), "oops");
}

#[test]
fn load_reads_files_and_reports_errors() {
    let dir = std::env::temp_dir().join(format!("reeve-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.json");
    std::fs::write(&good, FULL).unwrap();
    assert_eq!(Config::load(&good, &users()).unwrap(), parse_ok(FULL));
    let missing = Config::load(&dir.join("absent.json"), &users()).unwrap_err();
    assert!(missing.message.starts_with("cannot read: "), "{missing}");
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; MAX_CONFIG_BYTES as usize + 1]).unwrap();
    let err = Config::load(&big, &users()).unwrap_err();
    assert!(err.message.contains("larger than 1 MiB"), "{err}");
    let err = Config::load(&dir, &users()).unwrap_err();
    assert!(err.message.contains("(a directory)"), "{err}");
    let err = Config::load(Path::new("/dev/null"), &users()).unwrap_err();
    assert!(err.message.contains("(a device)"), "{err}");
    // A FIFO nobody writes to: refused at once, not waited on.
    let fifo = dir.join("fifo.json");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success());
    let err = Config::load(&fifo, &users()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a regular file (a FIFO); give the path of a JSON file"
    );
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    assert_eq!(Config::load(&link, &users()).unwrap(), parse_ok(FULL));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn state_dir_defaults_follow_the_user() {
    let os = |s: &str| Some(OsString::from(s));
    let dir = |p: &str| PathBuf::from(p);
    assert_eq!(
        state_dir_for(Some(0), os("/x"), os("/root")),
        dir("/var/lib/reeve")
    );
    assert_eq!(state_dir_for(Some(7), os("/x/"), os("/h")), dir("/x/reeve"));
    assert_eq!(
        state_dir_for(Some(7), os("rel"), os("/h")),
        dir("/h/.local/state/reeve")
    );
    assert_eq!(
        state_dir_for(Some(7), None, os("/h/../e")),
        dir("/tmp/reeve-7")
    );
    assert_eq!(state_dir_for(Some(7), os(""), None), dir("/tmp/reeve-7"));
    assert_eq!(state_dir_for(None, None, None), dir("/tmp/reeve"));
    assert!(default_state_dir().is_absolute());
}

#[test]
fn log_levels_order_by_severity() {
    assert!(LogLevel::Debug < LogLevel::Info);
    assert!(LogLevel::Info < LogLevel::Warn);
    assert!(LogLevel::Warn < LogLevel::Error);
    assert_eq!(LogLevel::from_name("warn"), Some(LogLevel::Warn));
    assert_eq!(LogFormat::from_name("JSON"), None);
    assert_eq!(DiscoveryMode::from_name("poll"), Some(DiscoveryMode::Poll));
    for (name, level) in LogLevel::NAMES {
        assert_eq!(level.as_str(), *name);
    }
    for (name, format) in LogFormat::NAMES {
        assert_eq!(format.as_str(), *name);
    }
    for (name, mode) in DiscoveryMode::NAMES {
        assert_eq!(mode.as_str(), *name);
    }
    assert_eq!(LogLevel::NAMES.len(), 4);
    assert_eq!(LogFormat::NAMES.len(), 2);
    assert_eq!(DiscoveryMode::NAMES.len(), 3);
}

#[test]
fn metrics_listen_defaults_to_loopback_and_is_off_without_the_object() {
    assert_eq!(parse_ok("{}").metrics, None);
    let m = parse_ok(r#"{"metrics":{}}"#).metrics.unwrap();
    assert_eq!(m.listen, super::DEFAULT_METRICS_LISTEN);
    assert!(m.listen.ip().is_loopback());
    assert_eq!(m.token_file, None);
    let m = parse_ok(r#"{"metrics":{"listen":"0.0.0.0:9100","token_file":"/etc/reeve//token"}}"#)
        .metrics
        .unwrap();
    assert_eq!(m.listen.to_string(), "0.0.0.0:9100");
    assert_eq!(m.token_file.unwrap().to_str(), Some("/etc/reeve/token"));
}
