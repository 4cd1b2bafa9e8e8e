//! The metrics endpoint as an operator sees it: the exposition passes
//! promtool and a real Prometheus scrapes it, a silent client does not
//! stall discovery, a configured token is required, `/healthz` turns 503
//! when state writes fail, governed jobs are exported, and the alert rules
//! use only names reeve exports. (The service manager protocol:
//! tests/notify.rs.)
//!
//! Every daemon here matches only copies of /bin/sleep under a unique name
//! whose parent is this test process; every socket is on 127.0.0.1 or a
//! Unix socket in the test's own directory, and every wait is bounded.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn me() -> u32 {
    std::process::id()
}

/// A host tool a test needs: present, or the test fails under CI and is
/// skipped with a note elsewhere.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    common::require(
        found,
        &format!("{tool} is missing; install Debian's prometheus package"),
    )
}

/// A watch config for `target` with the endpoint on a free loopback port.
fn metrics_config(dir: &TempDir, target: &Target, metrics: Value) -> Value {
    let mut cfg = config_for(dir, "enc", &target.name, Some(&[me()]), "auto", "200ms");
    cfg["metrics"] = metrics;
    cfg
}

/// Starts reeve and returns it with the endpoint's address.
fn start(dir: &TempDir, cfg: &Value) -> (Daemon, SocketAddr) {
    let path = write_config(dir.path(), cfg);
    let mut d = Daemon::start(&path, dir.path());
    let addr = listening(&mut d);
    d.wait_scans(1, WAIT);
    (d, addr)
}

/// The address in the daemon's `metrics_listening` line.
fn listening(d: &mut Daemon) -> SocketAddr {
    let ev = d.wait_for("metrics_listening", WAIT, |v| {
        event_name(v) == "metrics_listening"
    });
    ev["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("socket address")
}

/// One HTTP/1.1 request over a fresh connection; the status and the body.
fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    try_get(addr, path, extra).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

fn try_get(addr: SocketAddr, path: &str, extra: &str) -> Result<(u16, String), String> {
    let e = |e: std::io::Error| e.to_string();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(e)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(e)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(e)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: reeve\r\nConnection: close\r\n{extra}\r\n"
    )
    .map_err(e)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(e)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The value of an unlabelled sample, or of the first with these labels.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_http(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn exposition_passes_promtool_and_counts_the_tests_processes() {
    let dir = TempDir::new("metrics-promtool");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let (mut d, addr) = start(
        &dir,
        &metrics_config(&dir, &target, json!({"listen": "127.0.0.1:0"})),
    );
    let id = target.spawn(&mut procs, "30");
    d.wait_event("discovered", id, WAIT);
    let body = wait_http("reeve_tracked_processes 1", WAIT, || {
        let (code, body) = get(addr, "/metrics", "");
        (code == 200 && sample(&body, "reeve_tracked_processes") == Some(1.0)).then_some(body)
    });
    for family in [
        "reeve_build_info{version=",
        "reeve_scans_total{kind=\"deep\"}",
        "reeve_scan_duration_seconds_bucket{le=\"+Inf\"}",
        "reeve_netlink_events_total{type=\"exec\"}",
        "reeve_table_capacity 4096",
        "reeve_discovered_total 1",
        "reeve_state_saves_total",
        "reeve_resident_memory_bytes",
        "reeve_open_fds",
        "reeve_loop_iteration_seconds_count",
        "reeve_metrics_publish_skipped_total",
    ] {
        assert!(body.contains(family), "{family} missing from\n{body}");
    }
    let (code, health) = get(addr, "/healthz", "");
    assert_eq!((code, health.as_str()), (200, "ok\n"));
    let (code, _) = get(addr, "/nothing", "");
    assert_eq!(code, 404);

    if have("promtool") {
        let mut p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {} {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.stop_ok();
}

/// A target exec'd while reeve listens to the proc connector is timed from
/// the kernel's timestamp of its exec to discovery's decision, and the
/// histogram has a bucket at the 2 ms goal.
#[test]
fn netlink_discoveries_are_timed_from_the_kernels_exec() {
    let dir = TempDir::new("metrics-latency");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let mut cfg = config_for(&dir, "enc", &target.name, Some(&[me()]), "netlink", "200ms");
    // No safety-net rescan in the test's time, so the target can only be
    // found by its exec event.
    cfg["discovery"]["rescan_interval"] = json!("600s");
    cfg["metrics"] = json!({"listen": "127.0.0.1:0"});
    let mut d = Daemon::start(&write_config(dir.path(), &cfg), dir.path());
    let addr = listening(&mut d);
    let started = d.wait_started();
    assert_eq!(started["mode"], "netlink", "{started}");
    // The start-up scan; the next is ten minutes away.
    d.wait_for("the first scan", WAIT, |v| event_name(v) == "scan");
    let body = wait_http("the first publish", WAIT, || {
        let (code, body) = get(addr, "/metrics", "");
        (code == 200).then_some(body)
    });
    assert_eq!(
        sample(&body, "reeve_discovery_latency_seconds_count"),
        Some(0.0),
        "nothing discovered yet\n{body}"
    );
    let began = Instant::now();
    let id = target.spawn(&mut procs, "30");
    let ev = d.wait_event("discovered", id, WAIT);
    let bound = began.elapsed().as_secs_f64();
    assert_eq!(ev["source"], "netlink", "{ev}");
    let body = wait_http("the discovery in the histogram", WAIT, || {
        let (code, body) = get(addr, "/metrics", "");
        let count = sample(&body, "reeve_discovery_latency_seconds_count");
        (code == 200 && count == Some(1.0)).then_some(body)
    });
    // The time from the exec to the decision: more than nothing, and no
    // more than the test saw from before the spawn to the log line.
    let sum = sample(&body, "reeve_discovery_latency_seconds_sum").expect("the sum");
    assert!(
        sum > 0.0 && sum <= bound,
        "sum {sum} s, spawn to log line {bound} s\n{body}"
    );
    for bucket in ["le=\"0.002\"", "le=\"+Inf\""] {
        let series = format!("reeve_discovery_latency_seconds_bucket{{{bucket}}}");
        let n = sample(&body, &series);
        assert!(n.is_some(), "{series} missing from\n{body}");
    }
    assert_eq!(
        sample(&body, "reeve_discovery_latency_seconds_bucket{le=\"+Inf\"}"),
        Some(1.0),
        "{body}"
    );
    d.stop_ok();
}

#[test]
fn only_get_and_no_body_is_served() {
    let dir = TempDir::new("metrics-methods");
    let target = Target::new(dir.path());
    let (mut d, addr) = start(&dir, &metrics_config(&dir, &target, json!({})).tap_listen());
    for (req, want) in [
        ("POST /metrics HTTP/1.1\r\n\r\n", "405"),
        ("GET /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n", "413"),
        (
            "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "413",
        ),
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with(&format!("HTTP/1.1 {want} ")),
            "{req:?} -> {out:?}"
        );
    }
    // A head larger than the bound is refused, not buffered.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let _ = s.write_all(huge.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 431 "), "{out:?}");
    d.stop_ok();
}

trait TapListen {
    fn tap_listen(self) -> Value;
}

impl TapListen for Value {
    /// The config with `metrics.listen` on a free loopback port.
    fn tap_listen(mut self) -> Value {
        self["metrics"]["listen"] = json!("127.0.0.1:0");
        self
    }
}

#[test]
fn silent_clients_do_not_stall_discovery() {
    let dir = TempDir::new("metrics-slow");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let (mut d, addr) = start(&dir, &metrics_config(&dir, &target, json!({})).tap_listen());
    // Clients that connect and send nothing, and one that sends half a
    // request: they hold the endpoint's thread, never the loop.
    let mut silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /metr").unwrap();
    silent.push(half);
    let began = Instant::now();
    let scans = d.count("scan");
    let ids: Vec<Ident> = (0..3).map(|_| target.spawn(&mut procs, "30")).collect();
    for id in &ids {
        d.wait_event("discovered", *id, Duration::from_secs(5));
    }
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "discovery took {took:?} with silent clients"
    );
    d.wait_scans(3, Duration::from_secs(5));
    assert!(d.count("scan") >= scans + 3);
    // Each silent client is cut off after the read deadline; then the
    // endpoint serves again.
    let (code, body) = get(addr, "/metrics", "");
    assert_eq!(code, 200);
    assert!(
        sample(&body, "reeve_discovered_total").is_some_and(|n| n >= 3.0),
        "{body}"
    );
    drop(silent);
    d.stop_ok();
}

#[test]
fn a_configured_token_is_required() {
    let dir = TempDir::new("metrics-token");
    let target = Target::new(dir.path());
    let token = "s3cret-token-0123456789";
    let path = write_file(dir.path(), "token", &format!("{token}\n"));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = metrics_config(
        &dir,
        &target,
        json!({"listen": "127.0.0.1:0", "token_file": path}),
    );
    let (mut d, addr) = start(&dir, &cfg);
    assert_eq!(get(addr, "/metrics", "").0, 401);
    assert_eq!(get(addr, "/healthz", "").0, 401);
    assert_eq!(
        get(
            addr,
            "/metrics",
            "Authorization: Bearer s3cret-token-012345678\r\n"
        )
        .0,
        401
    );
    assert_eq!(
        get(
            addr,
            "/metrics",
            &format!("Authorization: Basic {token}\r\n")
        )
        .0,
        401
    );
    let (code, body) = get(
        addr,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(code, 200);
    assert!(
        sample(&body, "reeve_metrics_unauthorized_total").is_some_and(|n| n >= 3.0)
            || body.contains("reeve_metrics_unauthorized_total"),
        "{body}"
    );
    d.stop_ok();

    // A token others can read is refused at start, with what to do.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let cfg_path = write_config(dir.path(), &cfg);
    let out = run_with_timeout(
        Command::new(REEVE)
            .arg("watch")
            .arg("--config")
            .arg(&cfg_path),
        WAIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("token") && err.contains("chmod 600"), "{err}");
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path) -> Option<Mount> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if out.status.success() {
            return Some(Mount(at.to_path_buf()));
        }
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        common::require(false, &format!("cannot mount a tmpfs (needs root): {why}"));
        None
    }

    /// Writes a file until the file system refuses.
    fn fill(&self) -> std::path::PathBuf {
        let path = self.0.join("filler");
        let mut f = fs::File::create(&path).unwrap();
        let chunk = [0x5au8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn healthz_turns_503_when_state_writes_fail() {
    let dir = TempDir::new("metrics-health");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let state = dir.join("state");
    let _ = fs::create_dir(&state);
    let Some(mount) = Mount::tmpfs(&state) else {
        return;
    };
    let (mut d, addr) = start(&dir, &metrics_config(&dir, &target, json!({})).tap_listen());
    wait_http("healthy", WAIT, || {
        (get(addr, "/healthz", "").0 == 200).then_some(String::new())
    });
    let filler = mount.fill();
    // A discovery changes what the snapshot holds, so a save is tried.
    let id = target.spawn(&mut procs, "30");
    d.wait_event("discovered", id, WAIT);
    let why = wait_http("503 from /healthz", WAIT, || {
        let (code, body) = get(addr, "/healthz", "");
        (code == 503).then_some(body)
    });
    assert!(why.contains("state snapshot writes are failing"), "{why:?}");
    assert_eq!(why.lines().count(), 1, "{why:?}");
    let (_, body) = get(addr, "/metrics", "");
    assert!(
        sample(&body, "reeve_state_save_failures_total").is_some_and(|n| n >= 1.0),
        "{body}"
    );
    fs::remove_file(&filler).unwrap();
    wait_http("healthy again", WAIT, || {
        (get(addr, "/healthz", "").0 == 200).then_some(String::new())
    });
    d.stop();
}

#[test]
fn a_real_prometheus_scrapes_reeve() {
    if !have("prometheus") {
        return;
    }
    let dir = TempDir::new("metrics-prom");
    let target = Target::new(dir.path());
    let (mut d, addr) = start(&dir, &metrics_config(&dir, &target, json!({})).tap_listen());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_file(
        dir.path(),
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: reeve\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    );
    let mut prom = PromGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(dir.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("start prometheus"),
    );
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        if let Ok(Some(st)) = prom.0.try_wait() {
            panic!(
                "prometheus exited: {st}\n{}",
                fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
        }
        // Prometheus refuses or answers 503 until it has started.
        let answer = try_get(api, "/api/v1/query?query=reeve_tracked_processes", "");
        if let Ok((200, body)) = answer {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let result = &v["data"]["result"];
            if result.as_array().is_some_and(|r| !r.is_empty()) {
                break result.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "prometheus returned no reeve series within 60 s\n{}",
            fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(found[0]["metric"]["job"], "reeve", "{found}");
    assert_eq!(found[0]["metric"]["instance"], addr.to_string(), "{found}");
    drop(prom);
    d.stop_ok();
}

/// Kills and reaps a Prometheus server by its pid on drop.
struct PromGuard(Child);

impl Drop for PromGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn governed_jobs_are_exported_per_job() {
    let sub = common::cgroup::Subtree::new();
    let dir = TempDir::new("metrics-jobs");
    let mut procs = ProcGuard::new();
    let target = Target::new(dir.path());
    let mut cfg = metrics_config(&dir, &target, json!({"listen": "127.0.0.1:0"}));
    cfg["targets"][0]["pool"] = json!("enc");
    cfg["cgroup"] = json!({"root": sub.root()});
    let (mut d, addr) = start(&dir, &cfg);
    let id = target.spawn(&mut procs, "30");
    d.wait_event("attached", id, WAIT);
    let series = "reeve_job_cpu_usage_seconds_total{group=\"pool.enc\"}";
    let body = wait_http(series, WAIT, || {
        let (code, body) = get(addr, "/metrics", "");
        (code == 200 && body.contains(series)).then_some(body)
    });
    assert_eq!(
        sample(&body, "reeve_governance_enabled"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample(&body, "reeve_jobs"), Some(1.0), "{body}");
    assert_eq!(
        sample(&body, "reeve_job_limits_in_force{group=\"pool.enc\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "reeve_jobs_limits_not_in_force"),
        Some(0.0),
        "{body}"
    );
    procs.kill_all();
    d.stop_ok();
}

#[test]
fn alert_rules_and_dashboard_use_only_exported_names() {
    let rules_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/reeve-rules.yml"
    );
    let rules = fs::read_to_string(rules_path).expect("read the alert rules");
    let dir = TempDir::new("metrics-rules");
    let target = Target::new(dir.path());
    let (mut d, addr) = start(&dir, &metrics_config(&dir, &target, json!({})).tap_listen());
    let (code, body) = get(addr, "/metrics", "");
    assert_eq!(code, 200);
    d.stop_ok();
    let exported: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut used = Vec::new();
    let code = rules.lines().filter(|l| !l.trim_start().starts_with('#'));
    for line in code {
        for (i, _) in line.match_indices("reeve_") {
            let name: String = line[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.push(name);
        }
    }
    assert!(used.len() >= 5, "{used:?}");
    // The dashboard's queries too; a histogram is used through its series.
    let dash_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/reeve-dashboard.json"
    );
    let dash: Value = serde_json::from_str(&fs::read_to_string(dash_path).expect("read dashboard"))
        .expect("the dashboard is JSON");
    let mut exprs = vec![dash["templating"]["list"][1]["query"]
        .as_str()
        .unwrap_or("")
        .to_string()];
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    let before = used.len();
    for e in &exprs {
        for (i, _) in e.match_indices("reeve_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.push(name.strip_suffix("_bucket").unwrap_or(&name).to_string());
        }
    }
    assert!(used.len() >= before + 10, "{exprs:?}");
    for name in &used {
        assert!(
            exported.contains(&name.as_str()),
            "{name} is used by the rules or the dashboard but not exported"
        );
    }
    if have("promtool") {
        let out = run_with_timeout(
            Command::new("promtool").args(["check", "rules", rules_path]),
            WAIT,
        );
        assert!(
            out.status.success(),
            "promtool check rules: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn serving_adds_no_wakeups_to_an_idle_loop() {
    let dir = TempDir::new("metrics-idle");
    let target = Target::new(dir.path());
    let mut cfg = metrics_config(&dir, &target, json!({"listen": "127.0.0.1:0"}));
    // Polling only, so the host's process churn does not wake the loop.
    cfg["discovery"] = json!({"mode": "poll", "scan_interval": "1s"});
    let (mut d, addr) = start(&dir, &cfg);
    let count = |addr| {
        let (_, body) = get(addr, "/metrics", "");
        sample(&body, "reeve_loop_iteration_seconds_count").expect("loop count")
    };
    let before = count(addr);
    let began = Instant::now();
    // Scrape often meanwhile: requests are served by the workers alone.
    while began.elapsed() < Duration::from_secs(4) {
        get(addr, "/metrics", "");
        thread::sleep(Duration::from_millis(100));
    }
    let wakeups = count(addr) - before;
    let secs = began.elapsed().as_secs_f64();
    // One wakeup per scan interval; published up to one interval late.
    assert!(wakeups <= secs + 2.0, "{wakeups} wakeups in {secs:.1} s");
    d.stop_ok();
}

#[test]
fn health_follows_the_netlink_rescan_pace() {
    let dir = TempDir::new("metrics-netlink-health");
    let target = Target::new(dir.path());
    let mut cfg = config_for(&dir, "enc", &target.name, Some(&[me()]), "netlink", "200ms");
    // The default safety-net pace: one scan a minute, netlink in between.
    cfg["discovery"]
        .as_object_mut()
        .expect("discovery")
        .remove("rescan_interval");
    cfg["metrics"] = json!({});
    let path = write_config(dir.path(), &cfg.tap_listen());
    let mut d = Daemon::start(&path, dir.path());
    let addr = listening(&mut d);
    // The start-up scan; the next one is a minute away.
    d.wait_for("the first scan", WAIT, |v| event_name(v) == "scan");
    wait_http("healthy", WAIT, || {
        (get(addr, "/healthz", "").0 == 200).then_some(String::new())
    });
    // Well past three scan_intervals (600 ms) and the publish lag: with
    // scans a minute apart the daemon is still healthy.
    std::thread::sleep(Duration::from_millis(2500));
    let (code, body) = get(addr, "/healthz", "");
    assert_eq!(code, 200, "{body}\n{}", d.log_tail());
    d.stop();
}

/// The endpoint's workers run at the lowest priority, the watch loop at
/// the one reeve was started with: a scrape flood takes only the CPU the
/// loop leaves.
#[test]
fn endpoint_workers_yield_the_cpu_to_the_loop() {
    let dir = TempDir::new("metrics-nice");
    let target = Target::new(dir.path());
    let cfg = metrics_config(&dir, &target, json!({"listen": "127.0.0.1:0"}));
    let (mut d, _addr) = start(&dir, &cfg);
    // Field 19 of a thread's stat (after the comm's closing parenthesis,
    // field 3 is the first): its nice value.
    let nice = |tid: &str| -> i64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", d.pid)).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    };
    let mut workers = 0;
    for entry in std::fs::read_dir(format!("/proc/{}/task", d.pid)).unwrap() {
        let tid = entry.unwrap().file_name().into_string().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", d.pid)).unwrap();
        if comm.trim().starts_with("reeve-http") {
            workers += 1;
            assert_eq!(nice(&tid), 19, "worker {tid} ({})", comm.trim());
        }
    }
    assert_eq!(workers, 4, "the endpoint's workers");
    assert_eq!(nice(&d.pid.to_string()), 0, "the watch loop's thread");
    d.stop_ok();
}
