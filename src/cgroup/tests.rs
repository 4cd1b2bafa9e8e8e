use super::testutil::Fixture;
use super::*;
use crate::units::{CpuLimit, SizeLimit};

#[test]
fn flat_keyed_files() {
    let pairs = parse_flat_keyed("populated 1\nfrozen 0\n").unwrap();
    assert_eq!(pairs, vec![("populated", 1), ("frozen", 0)]);
    assert_eq!(flat_require(&pairs, "frozen"), Ok(0));
    assert!(flat_require(&pairs, "x").unwrap_err().contains("\"x\""));
    assert_eq!(parse_flat_keyed(""), Ok(vec![]));
    for bad in [
        "populated",
        "populated x",
        "a 1 2",
        " 1",
        "a -1",
        "a +1",
        "a 1.5",
    ] {
        assert!(parse_flat_keyed(bad).is_err(), "{bad:?}");
    }
    assert!(parse_flat_keyed("a 99999999999999999999999").is_err());
}

#[test]
fn error_display_is_one_line_with_path_data_os_error_and_hint() {
    let e = std::io::Error::from_raw_os_error(libc::ENOENT);
    let err = write_error(
        Path::new("/tmp"),
        Controller::Cpu,
        "cpu.max",
        "250000 100000",
        &e,
    );
    let text = err.to_string();
    assert_eq!(err.kind, CgroupErrorKind::NotEnabled);
    assert!(
        text.starts_with("/tmp/cpu.max: writing \"250000 100000\": "),
        "{text}"
    );
    assert!(text.contains("os error 2"), "{text}");
    assert!(text.contains("cpu controller is not enabled"), "{text}");
    assert!(!text.contains('\n'));

    let gone = write_error(
        Path::new("/nonexistent-group"),
        Controller::Cpu,
        "cpu.max",
        "x",
        &e,
    );
    assert_eq!(gone.kind, CgroupErrorKind::Io);
    assert!(gone.to_string().contains("does not exist"));

    let einval = std::io::Error::from_raw_os_error(libc::EINVAL);
    let err = write_error(
        Path::new("/tmp"),
        Controller::Cpuset,
        "cpuset.cpus",
        "0-99",
        &einval,
    );
    assert!(err.to_string().contains("cpuset.cpus.effective"));
    let short = std::io::Error::new(std::io::ErrorKind::WriteZero, "short write: 1 of 2");
    let err = CgroupError::os(CgroupErrorKind::Io, "/x", "writing \"12\"", &short, "");
    assert_eq!(err.to_string(), "/x: writing \"12\": short write: 1 of 2");
}

#[test]
fn apply_to_fixture_writes_every_file_and_reads_it_back() {
    let fx = Fixture::new();
    for f in [
        "cpu.max",
        "cpu.weight",
        "memory.max",
        "memory.high",
        "memory.swap.max",
        "pids.max",
        "io.max",
        "io.weight",
        "cpuset.cpus",
    ] {
        fx.file(f, "");
    }
    let limits = Limits {
        cpu: Some(CpuLimit::Millicores(2500)),
        cpu_weight: Some(200),
        memory: Some(SizeLimit::Bytes(4 << 30)),
        memory_high: Some(SizeLimit::Bytes(3 << 30)),
        swap: Some(SizeLimit::Max),
        pids: Some(PidsLimit::Count(64)),
        io: vec![IoMax {
            major: 8,
            minor: 0,
            rbps: Some(IoRate::Value(50 << 20)),
            wbps: None,
            riops: Some(IoRate::Max),
            wiops: None,
        }],
        io_weight: Some(300),
        cpuset: Some("0-1".to_string()),
        ..Limits::default()
    };
    let applied = apply(fx.dir(), &limits);
    for a in &applied {
        assert!(a.result.is_ok(), "{}: {:?}", a.file, a.result);
    }
    assert!(in_force(&applied));
    let files: Vec<&str> = applied.iter().map(|a| a.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "cpuset.cpus",
            "cpu.max",
            "cpu.weight",
            "memory.high",
            "memory.max",
            "memory.swap.max",
            "pids.max",
            "io.max",
            "io.weight"
        ]
    );
    assert_eq!(fx.read("cpu.max"), "250000 100000");
    assert_eq!(fx.read("memory.max"), "4294967296");
    assert_eq!(fx.read("memory.swap.max"), "max");
    assert_eq!(fx.read("pids.max"), "64");
    assert_eq!(fx.read("io.max"), "8:0 rbps=52428800 riops=max");
    assert_eq!(fx.read("io.weight"), "default 300");
    assert_eq!(fx.read("cpuset.cpus"), "0-1");
    assert!(apply(fx.dir(), &Limits::default()).is_empty());
}

#[test]
fn apply_without_controller_files_says_to_enable_the_controller() {
    let fx = Fixture::new();
    let limits = Limits {
        cpu: Some(CpuLimit::Millicores(500)),
        memory: Some(SizeLimit::Bytes(1 << 30)),
        pids: Some(PidsLimit::Max),
        ..Limits::default()
    };
    let applied = apply(fx.dir(), &limits);
    assert_eq!(applied.len(), 3);
    assert!(!in_force(&applied));
    for a in &applied {
        let err = a.result.as_ref().unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::NotEnabled);
        let text = err.to_string();
        assert!(text.contains(&a.file), "{text}");
        assert!(text.contains(&a.wanted), "{text}");
        assert!(
            text.contains(&format!("{} controller is not enabled", a.controller)),
            "{text}"
        );
        assert!(text.contains("cgroup.subtree_control"), "{text}");
    }
    // The write never creates a file.
    assert!(!fx.dir().join("cpu.max").exists());
}

/// Every pure parser, over prefixes of real inputs and pseudo-random
/// bytes: any result is fine, a panic is not.
#[test]
fn parsers_survive_garbage() {
    let seeds = [
        testutil::HOST_MOUNTINFO,
        testutil::HOST_CGROUP,
        "populated 1\nfrozen 0\n",
        "250000 100000\n",
        "8:0 rbps=52428800 wbps=max riops=max wiops=max\n",
        "default 100\n8:0 200\n",
        "0-3,5\n",
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    ];
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for seed in seeds {
        for cut in 0..=seed.len() {
            inputs.push(seed.as_bytes()[..cut].to_vec());
        }
    }
    const ALPHABET: &[u8] = b"0123456789 :-=,\n\\/max+abc\xff";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..400 {
        let bytes = (0..len % 64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ALPHABET[(x % ALPHABET.len() as u64) as usize]
            })
            .collect();
        inputs.push(bytes);
    }
    let io = IoMax {
        major: 8,
        minor: 0,
        rbps: Some(IoRate::Max),
        wbps: Some(IoRate::Value(2)),
        riops: None,
        wiops: None,
    };
    for bytes in &inputs {
        let text = String::from_utf8_lossy(bytes);
        let _ = parse_mountinfo_cgroup2(bytes);
        let _ = parse_proc_cgroup(bytes);
        let _ = parse_flat_keyed(&text);
        let _ = parse_controllers(&text);
        let _ = parse_procs(&text);
        let _ = parse_populated(&text);
        let _ = cpu::parse_max(&text);
        let _ = cpu::parse_stat(&text);
        let _ = memory::parse_events(&text);
        let _ = memory::parse_size_file(&text);
        let _ = pids::parse_events_max(&text);
        let _ = io::verify_max(&io, &text);
        let _ = io::verify_weight(100, &text);
        let _ = io::parse_held_max(&text);
        let _ = cpuset::canonicalize(&text);
        let _ = cpuset::parse_cpu_list(&text, true);
        let mut l = Limits::default();
        for flag in LIMIT_FLAGS {
            let _ = apply_flag(&mut l, flag, &text);
        }
        let _ = validate_job_name(&text);
        assert_eq!(validate_job_name(&sanitize_job_name(&text)), Ok(()));
    }
}

#[test]
fn verify_number_compares_numbers() {
    assert_eq!(verify_number(100, "100\n"), Ok(()));
    assert!(verify_number(100, "101\n").unwrap_err().contains("101"));
    assert!(verify_number(100, "max\n").is_err());
    assert!(verify_number(100, "").is_err());
}

#[test]
fn controller_names_round_trip() {
    for c in Controller::ALL {
        assert_eq!(Controller::from_name(c.as_str()), Some(c));
    }
    assert_eq!(Controller::from_name("hugetlb"), None);
}

#[test]
fn read_text_refuses_oversized_and_binary_files() {
    let fx = Fixture::new();
    fx.file("bin", "");
    std::fs::write(fx.dir().join("bin"), [0xff, 0xfe]).unwrap();
    let err = read_text(&fx.dir().join("bin")).unwrap_err();
    assert_eq!(err.kind, CgroupErrorKind::Parse);
    let big = "1\n".repeat((READ_CAP as usize) / 2 + 1);
    fx.file("big", &big);
    assert!(read_text(&fx.dir().join("big")).is_err());
    let missing = read_text(&fx.dir().join("none")).unwrap_err();
    assert_eq!(missing.errno, Some(libc::ENOENT));
}
