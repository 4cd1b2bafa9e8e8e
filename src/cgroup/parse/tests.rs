use super::super::limits::cpu_quota_us;
use super::super::Controller;
use super::*;
use serde_json::json;

const AT: &str = "targets[0].limits";

fn parse(v: Value) -> Result<Limits, LimitsError> {
    limits_from_json(&v, AT)
}

#[test]
fn full_object() {
    let l = parse(json!({
        "cpu": "250%", "cpu_period": "50ms", "cpu_weight": 200,
        "memory": "4G", "memory_high": 3221225472u64, "swap": "0",
        "pids": 64, "io_weight": "300", "cpuset": "0-1,2-3,5",
        "io": [
            {"device": "8:0", "rbps": "50M", "wbps": "max", "riops": 1000, "wiops": "max"},
            {"device": "259:0", "wbps": 1048576}
        ]
    }))
    .unwrap();
    assert_eq!(l.cpu, Some(CpuLimit::Millicores(2500)));
    assert_eq!(l.cpu_period_us, Some(50_000));
    assert_eq!(l.cpu_weight, Some(200));
    assert_eq!(l.memory, Some(SizeLimit::Bytes(4 << 30)));
    assert_eq!(l.memory_high, Some(SizeLimit::Bytes(3 << 30)));
    assert_eq!(l.swap, Some(SizeLimit::Bytes(0)));
    assert_eq!(l.pids, Some(PidsLimit::Count(64)));
    assert_eq!(l.io_weight, Some(300));
    assert_eq!(l.cpuset.as_deref(), Some("0-3,5"));
    assert_eq!(
        l.io[0].line(),
        "8:0 rbps=52428800 wbps=max riops=1000 wiops=max"
    );
    assert_eq!(l.io[1].line(), "259:0 wbps=1048576");
    assert_eq!(
        l.controllers(),
        [
            Controller::Cpu,
            Controller::Memory,
            Controller::Pids,
            Controller::Io,
            Controller::Cpuset
        ]
    );
    assert_eq!(
        l.describe(),
        "cpu=250% cpu_period=50ms cpu_weight=200 memory=4G memory_high=3G swap=0 pids=64 \
         io[8:0]=rbps=50M,wbps=max,riops=1000,wiops=max io[259:0]=wbps=1M io_weight=300 \
         cpuset=0-3,5"
    );
    assert!(!l.is_empty());
}

#[test]
fn small_objects() {
    assert!(parse(json!({})).unwrap().is_empty());
    assert_eq!(Limits::default().describe(), "none");
    assert!(Limits::default().controllers().is_empty());
    let l = parse(json!({"cpu": 2.5, "pids": "max"})).unwrap();
    assert_eq!(l.cpu, Some(CpuLimit::Millicores(2500)));
    assert_eq!(l.describe(), "cpu=250% pids=max");
    assert_eq!(l.controllers(), [Controller::Cpu, Controller::Pids]);
    let l = parse(json!({"cpu": "max", "cpu_period": "1s"})).unwrap();
    assert_eq!(l.describe(), "cpu=max cpu_period=1s");
    let l = parse(json!({"memory": "max", "cpu": "0.5"})).unwrap();
    assert_eq!(l.describe(), "cpu=50% memory=max");
    assert_eq!(parse(json!({"cpu": "1%"})).unwrap().describe(), "cpu=1%");
    assert_eq!(
        parse(json!({"cpu": "12.5%"})).unwrap().describe(),
        "cpu=12.5%"
    );
}

#[test]
fn errors_name_the_exact_path() {
    let table: Vec<(Value, &str, &str)> = vec![
        (json!([]), "targets[0].limits", "expected an object"),
        (
            json!({"mem": "4G"}),
            "targets[0].limits.mem",
            "unknown limit",
        ),
        (
            json!({"memory": "4X"}),
            "targets[0].limits.memory",
            "unknown unit 'X'",
        ),
        (json!({"memory": 0}), "targets[0].limits.memory", "zero"),
        (
            json!({"memory": 1.5}),
            "targets[0].limits.memory",
            "whole number",
        ),
        (
            json!({"memory": true}),
            "targets[0].limits.memory",
            "string or a number",
        ),
        (
            json!({"memory_high": "-1G"}),
            "targets[0].limits.memory_high",
            "negative",
        ),
        (
            json!({"swap": "lots"}),
            "targets[0].limits.swap",
            "not a size",
        ),
        (
            json!({"cpu": "0"}),
            "targets[0].limits.cpu",
            "more than zero",
        ),
        (
            json!({"cpu": "abc"}),
            "targets[0].limits.cpu",
            "not a CPU amount",
        ),
        (
            json!({"cpu": "0.5%"}),
            "targets[0].limits.cpu",
            "use at least 1%",
        ),
        (
            json!({"cpu": "1", "cpu_period": "500us"}),
            "targets[0].limits.cpu_period",
            "1ms to 1s",
        ),
        (
            json!({"cpu": "1", "cpu_period": "2s"}),
            "targets[0].limits.cpu_period",
            "1ms to 1s",
        ),
        (
            json!({"cpu": "1", "cpu_period": "1.5us"}),
            "targets[0].limits.cpu_period",
            "whole number of microseconds",
        ),
        (
            json!({"cpu": "1", "cpu_period": 100000}),
            "targets[0].limits.cpu_period",
            "missing unit",
        ),
        (
            json!({"cpu_period": "100ms"}),
            "targets[0].limits.cpu_period",
            "without a CPU limit",
        ),
        (
            json!({"cpu_weight": 0}),
            "targets[0].limits.cpu_weight",
            "from 1 to 10000",
        ),
        (
            json!({"cpu_weight": 10001}),
            "targets[0].limits.cpu_weight",
            "from 1 to 10000",
        ),
        (
            json!({"cpu_weight": -1}),
            "targets[0].limits.cpu_weight",
            "from 1 to 10000",
        ),
        (
            json!({"io_weight": "x"}),
            "targets[0].limits.io_weight",
            "from 1 to 10000",
        ),
        (
            json!({"pids": 0}),
            "targets[0].limits.pids",
            "from 1 to 4194304",
        ),
        (
            json!({"pids": 4194305}),
            "targets[0].limits.pids",
            "from 1 to 4194304",
        ),
        (json!({"pids": "lots"}), "targets[0].limits.pids", "or max"),
        (
            json!({"cpuset": "0-3,"}),
            "targets[0].limits.cpuset",
            "stray comma",
        ),
        (
            json!({"cpuset": "3,1"}),
            "targets[0].limits.cpuset",
            "ascending",
        ),
        (
            json!({"cpuset": ""}),
            "targets[0].limits.cpuset",
            "empty CPU list",
        ),
        (json!({"io": {}}), "targets[0].limits.io", "expected a list"),
        (
            json!({"io": ["8:0"]}),
            "targets[0].limits.io[0]",
            "expected an object",
        ),
        (
            json!({"io": [{"rbps": "1M"}]}),
            "targets[0].limits.io[0].device",
            "missing",
        ),
        (
            json!({"io": [{"device": "8:0", "rbps": "1M"}, {"device": "sda", "rbps": "1M"}]}),
            "targets[0].limits.io[1].device",
            "MAJ:MIN",
        ),
        (
            json!({"io": [{"device": 8}]}),
            "targets[0].limits.io[0].device",
            "MAJ:MIN",
        ),
        (
            json!({"io": [{"device": "8:0"}]}),
            "targets[0].limits.io[0]",
            "at least one of",
        ),
        (
            json!({"io": [{"device": "8:0", "rbps": "1M", "x": 1}]}),
            "targets[0].limits.io[0].x",
            "unknown key",
        ),
        (
            json!({"io": [{"device": "8:0", "x": {}}]}),
            "targets[0].limits.io[0].x",
            "unknown key",
        ),
        (
            json!({"io": [{"device": "8:0", "rbps": []}]}),
            "targets[0].limits.io[0].rbps",
            "string or a number",
        ),
        (
            json!({"cpu": null}),
            "targets[0].limits.cpu",
            "string or a number",
        ),
        (
            json!({"bogus": {}}),
            "targets[0].limits.bogus",
            "unknown limit",
        ),
        (
            json!({"io": [{"device": "8:0", "rbps": "1"}]}),
            "targets[0].limits.io[0].rbps",
            "at least 2",
        ),
        (
            json!({"io": [{"device": "8:0", "rbps": 0}]}),
            "targets[0].limits.io[0].rbps",
            "at least 2",
        ),
        (
            json!({"io": [{"device": "8:0", "riops": "1k"}]}),
            "targets[0].limits.io[0].riops",
            "whole number",
        ),
        (
            json!({"io": [{"device": "8:0", "wiops": 4294967296u64}]}),
            "targets[0].limits.io[0].wiops",
            "4294967295",
        ),
        (
            json!({"io": [{"device": "8:0", "wiops": 1.5}]}),
            "targets[0].limits.io[0].wiops",
            "whole number",
        ),
        (
            json!({"io": [{"device": "8:0", "rbps": "1M"}, {"device": "8:0", "wbps": "1M"}]}),
            "targets[0].limits.io[1]",
            "listed twice",
        ),
    ];
    for (input, path, needle) in table {
        let err = parse(input.clone()).expect_err(&input.to_string());
        assert_eq!(err.path, path, "{input}: {err}");
        assert!(err.message.contains(needle), "{input}: {err}");
        assert_eq!(err.to_string(), format!("{path}: {}", err.message));
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn cpu_quota_minimum() {
    let at = |cpu: &str, period: &str| {
        let v = json!({"cpu": cpu, "cpu_period": period});
        parse(v).map(|l| {
            cpu_quota_us(
                l.cpu.map_or(0, |c| match c {
                    CpuLimit::Millicores(m) => m,
                    CpuLimit::Max => 0,
                }),
                l.cpu_period_us.unwrap_or(0),
            )
        })
    };
    assert_eq!(at("1%", "100ms"), Ok(1_000));
    assert_eq!(at("0.1%", "1s"), Ok(1_000));
    assert_eq!(at("100%", "1ms"), Ok(1_000));
    assert_eq!(at("250%", "100ms"), Ok(250_000));
    let err = at("0.5%", "100ms").unwrap_err();
    assert_eq!(err.path, "targets[0].limits.cpu");
    assert_eq!(
        err.message,
        "0.5% of a 100000us period is a quota of 500us, below the kernel's minimum of \
         1000us; use at least 1% (or a longer CPU period)"
    );
    let err = at("0.2%", "300ms").unwrap_err();
    assert!(err.message.contains("use at least 0.4%"), "{err}");
    let err = at("99.9%", "1ms").unwrap_err();
    assert!(err.message.contains("use at least 100%"), "{err}");
    // The default period applies when none is set.
    let l = Limits {
        cpu: Some(CpuLimit::Millicores(9)),
        ..Limits::default()
    };
    assert_eq!(l.validate().unwrap_err().path, "cpu");
}

#[test]
fn flags() {
    let mut l = Limits::default();
    for (flag, value) in [
        ("--cpu", "250%"),
        ("--cpu-period", "20ms"),
        ("--cpu-weight", "50"),
        ("--memory", "512M"),
        ("--memory-high", "384M"),
        ("--swap", "max"),
        ("--pids", "100"),
        ("--io", "8:0 rbps=50M wbps=max riops=1000"),
        ("--io", "  259:1   wiops=max  "),
        ("--io-weight", "10"),
        ("--cpuset", "1"),
    ] {
        apply_flag(&mut l, flag, value).unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
    }
    assert_eq!(l.validate(), Ok(()));
    assert_eq!(
        l.describe(),
        "cpu=250% cpu_period=20ms cpu_weight=50 memory=512M memory_high=384M swap=max \
         pids=100 io[8:0]=rbps=50M,wbps=max,riops=1000 io[259:1]=wiops=max io_weight=10 \
         cpuset=1"
    );
    assert_eq!(l.io[0].line(), "8:0 rbps=52428800 wbps=max riops=1000");
    assert_eq!(LIMIT_FLAGS.len(), 12);
    for flag in LIMIT_FLAGS {
        let e = apply_flag(&mut l, flag, "").unwrap_err();
        assert!(e.starts_with(&format!("{flag}: ")), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let bad = [
        ("--cpu", "lots", "--cpu: \"lots\": not a CPU amount"),
        ("--cpu-period", "5s", "--cpu-period: \"5s\": a CPU period"),
        ("--memory", "0", "--memory: \"0\": a memory limit of zero"),
        ("--pids", "-1", "--pids: \"-1\": a process limit"),
        ("--io", "8:0", "--io: no limit for device 8:0"),
        ("--io", "8:0 rbps", "--io: \"rbps\" is not key=value"),
        ("--io", "8:0 rbps=1M rbps=2M", "--io: rbps is given twice"),
        ("--io", "8:0 bps=1M", "--io: unknown key"),
        (
            "--io",
            "8:0 device=8:1",
            "--io: \"device=8:1\": the device comes first",
        ),
        ("--io", "8:0 rbps=1M", "--io: device 8:0 is listed twice"),
        ("--io", "rbps=1M", "--io: \"rbps=1M\" is not a block device"),
        ("--cpuset", "0-3,", "--cpuset: \"0-3,\": an empty item"),
        ("--nice", "5", "--nice: not a limit flag"),
    ];
    for (flag, value, want) in bad {
        let e = apply_flag(&mut l, flag, value).unwrap_err();
        assert!(e.starts_with(want), "{flag} {value}: {e}");
    }
    // Combinations are checked once all flags are in, whatever their order.
    let mut l = Limits::default();
    apply_flag(&mut l, "--cpu", "0.5%").unwrap();
    assert_eq!(l.validate().unwrap_err().path, "cpu");
    apply_flag(&mut l, "--cpu-period", "1s").unwrap();
    assert_eq!(l.validate(), Ok(()));
}

#[test]
fn serde_round_trip() {
    let l = parse(json!({
        "cpu": "2.5", "cpu_period": "50ms", "memory": "1536M", "swap": "max",
        "pids": "max", "io": [{"device": "8:0", "rbps": "50M", "wiops": "max"}],
        "cpuset": "0-1"
    }))
    .unwrap();
    let text = serde_json::to_string(&l).unwrap();
    assert!(text.contains("\"cpu\":\"2.5\""), "{text}");
    assert!(text.contains("\"memory\":\"1536M\""), "{text}");
    let back: Limits = serde_json::from_str(&text).unwrap();
    assert_eq!(back, l);
    let empty: Limits = serde_json::from_str("{}").unwrap();
    assert!(empty.is_empty());
    assert!(serde_json::from_str::<Limits>("{\"cpu\":\"x\"}").is_err());
    assert!(serde_json::from_str::<Limits>("{\"bogus\":1}").is_err());
}

#[test]
fn network_limits_in_config_and_on_the_command_line() {
    let l = parse(json!({"net_tx": "2M", "net_rx": "20M/burst=4M"})).unwrap();
    assert_eq!(
        l.net_tx,
        Some(NetRate {
            bytes_per_sec: 2 << 20,
            burst: 512 << 10
        }),
        "the default burst is a quarter second of the rate"
    );
    assert_eq!(
        l.net_rx,
        Some(NetRate {
            bytes_per_sec: 20 << 20,
            burst: 4 << 20
        })
    );
    assert_eq!(l.describe(), "net_tx=2M/burst=512K net_rx=20M/burst=4M");
    assert!(l.controllers().is_empty(), "no cgroup controller is needed");
    // The default burst is at least 128K, and the text reads back.
    let small = parse_net("64K").unwrap();
    assert_eq!(small.burst, 128 << 10);
    assert_eq!(parse_net(&small.to_string()), Ok(small));
    let mut cli = Limits::default();
    apply_flag(&mut cli, "--net-tx", "2M/burst=512K").unwrap();
    apply_flag(&mut cli, "--net-rx", "20M/burst=4M").unwrap();
    assert_eq!(cli, l);
    for (text, why) in [
        ("max", "leave it unset"),
        ("0", "from 1K to 16G"),
        ("17G", "from 1K to 16G"),
        ("2M/burst=1K", "a burst below 64K"),
        ("2M/4M", "optionally with a burst"),
        ("2M/burst=", "empty size"),
        ("fast", ""),
    ] {
        let err = apply_flag(&mut cli, "--net-tx", text).unwrap_err();
        assert!(err.starts_with("--net-tx: "), "{err}");
        assert!(err.contains(why), "{text}: {err}");
    }
    let err = parse(json!({"net_tx": "2M/bogus"})).unwrap_err();
    assert_eq!(err.path, "targets[0].limits.net_tx");
    // Persisted job records carry the figures as numbers.
    let v = serde_json::to_value(&l).unwrap();
    assert_eq!(
        v["net_tx"],
        json!({"bytes_per_sec": 2097152, "burst": 524288})
    );
    assert_eq!(serde_json::from_value::<Limits>(v).unwrap(), l);
}
