//! The liveness settings parsed, refused and printed back.

use super::super::tests::parse_ok;
use super::*;
use crate::config::Config;
use crate::users::UserDb;

fn rule_with(fields: &str) -> String {
    format!(
        r#"{{"targets":[{{"name":"enc","match":{{"comm":["ffmpeg"]}},"limits":{{"pids":64}}{fields}}}]}}"#
    )
}

fn error_of(fields: &str) -> String {
    Config::from_json(rule_with(fields).as_bytes(), &UserDb::default())
        .expect_err("config must be refused")
        .to_string()
}

#[test]
fn full_settings_parse_and_print_back_equal() {
    let doc = rule_with(
        r#","stall_after":"2s","on_stall":[{"signal":"TERM","then":"KILL","grace":"5s"},"kill_job",{"exec":["/usr/bin/logger","{rule}:{pid};x","{event}"],"timeout":"3s"}],"on_exit":"log","guard":{"max_actions":3,"window":"1m","debounce":"0s"}"#,
    );
    let c = parse_ok(&doc);
    let l = &c.targets[0].liveness;
    assert_eq!(l.stall_after, Some(Duration::from_secs(2)));
    assert_eq!(
        l.on_stall[0],
        Action::Signal {
            signal: Signal(libc::SIGTERM),
            then: Some(Signal(libc::SIGKILL)),
            grace: Duration::from_secs(5)
        }
    );
    assert_eq!(l.on_stall[1], Action::KillJob);
    assert_eq!(l.on_exit, vec![Action::Log]);
    assert_eq!(l.guard.max_actions, 3);
    assert_eq!(l.guard.debounce, Duration::ZERO);
    let printed = c.to_pretty_json();
    assert_eq!(parse_ok(&printed), c, "{printed}");
    assert!(printed.contains(r#""stall_after": "2s""#), "{printed}");
    // Defaults are shown where they apply.
    let c = parse_ok(&rule_with(
        r#","stall_after":"2s","on_stall":{"signal":"TERM"}"#,
    ));
    let printed = c.to_pretty_json();
    assert!(printed.contains(r#""max_actions": 5"#), "{printed}");
    assert_eq!(parse_ok(&printed), c);
    let plain = parse_ok("{}").to_pretty_json();
    assert!(!plain.contains("guard"), "{plain}");
}

#[test]
fn impossible_actions_are_refused_at_their_field() {
    let cases = [
        (
            r#","on_stall":"log""#,
            "targets[0].on_stall: needs stall_after",
        ),
        (
            r#","stall_after":"1ms""#,
            "targets[0].stall_after: 1ms is outside",
        ),
        (
            r#","stall_after":"2s","on_stall":"reboot""#,
            "unknown action 'reboot'",
        ),
        (
            r#","stall_after":"2s","on_stall":{"signal":"BOOM"}"#,
            "unknown signal 'BOOM'",
        ),
        (
            r#","stall_after":"2s","on_stall":{"signal":"TERM","grace":"1s"}"#,
            "give `then` too",
        ),
        (
            r#","stall_after":"2s","on_stall":{"signal":"TERM","extra":1}"#,
            "on_stall.extra: unknown field",
        ),
        (
            r#","on_exit":{"signal":"TERM"}"#,
            "targets[0].on_exit: a process that has ended",
        ),
        (
            r#","on_exit":{"exec":["logger"]}"#,
            "on_exit.exec[0]: the program must be an absolute path",
        ),
        (
            r#","on_exit":{"exec":["/bin/x","{host}"]}"#,
            "unknown placeholder {host}",
        ),
        (r#","on_exit":{"exec":[]}"#, "needs 1 to 64 arguments"),
        (
            r#","on_exit":"log","guard":{"max_actions":0}"#,
            "guard.max_actions: must be 1 to 64",
        ),
        (
            r#","on_exit":"log","guard":{"burst":1}"#,
            "guard.burst: unknown field",
        ),
    ];
    for (fields, want) in cases {
        let got = error_of(fields);
        assert!(got.contains(want), "{fields}: {got}");
    }
    let pool =
        r#"{"targets":[{"name":"p","match":{"comm":["a"]},"pool":"shared","on_exit":"kill_job"}]}"#;
    let e = Config::from_json(pool.as_bytes(), &UserDb::default()).unwrap_err();
    assert!(e.to_string().contains("share the pool 'shared'"), "{e}");
    let track = r#"{"targets":[{"name":"p","match":{"comm":["a"]},"on_exit":"kill_job"}]}"#;
    let e = Config::from_json(track.as_bytes(), &UserDb::default()).unwrap_err();
    assert!(e.to_string().contains("only tracks"), "{e}");
}

#[test]
fn placeholders_are_substituted_and_nothing_else_is_interpreted() {
    assert_eq!(
        substitute(
            "{rule}:{pid};rm -rf / {job}{event}",
            42,
            "job.x",
            "enc",
            "stalled"
        ),
        "enc:42;rm -rf / job.xstalled"
    );
    assert_eq!(
        substitute("{{pid}} {nope} {", 7, "j", "r", "e"),
        "{7} {nope} {"
    );
    assert_eq!(
        substitute("$(id) `id` $HOME", 1, "j", "r", "e"),
        "$(id) `id` $HOME"
    );
}
