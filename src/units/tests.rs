use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn durations_in_every_unit() {
    let cases = [
        ("0s", Duration::ZERO),
        ("0ms", Duration::ZERO),
        ("0.0h", Duration::ZERO),
        ("250ms", ms(250)),
        ("1s", ms(1_000)),
        ("1.5s", ms(1_500)),
        ("0.1s", ms(100)),
        ("2m", ms(120_000)),
        ("1.5m", ms(90_000)),
        ("1h", ms(3_600_000)),
        ("0.5h", ms(1_800_000)),
        ("10us", Duration::from_micros(10)),
        ("1.5us", Duration::from_nanos(1_500)),
        ("0.001us", Duration::from_nanos(1)),
        ("007s", ms(7_000)),
        ("1.0000000001s", ms(1_000)),
        (
            "1.123456789123456789123456789s",
            Duration::new(1, 123_456_789),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
    }
}

#[test]
fn durations_that_fail() {
    use UnitErrorKind::*;
    let cases = [
        ("", Empty),
        ("-1s", Negative),
        ("-0s", Negative),
        ("5", MissingUnit),
        ("0", MissingUnit),
        ("1.5", MissingUnit),
        ("5x", UnknownUnit("x".into())),
        ("5 s", UnknownUnit(" s".into())),
        ("5S", UnknownUnit("S".into())),
        ("5ns", UnknownUnit("ns".into())),
        ("1e3s", UnknownUnit("e3s".into())),
        ("s", NotANumber),
        ("nan", NotANumber),
        ("NaNs", NotANumber),
        ("inf", NotANumber),
        ("+1s", NotANumber),
        (".5s", NotANumber),
        ("5.s", NotANumber),
        ("1.2.3s", NotANumber),
        (" 1s", NotANumber),
        ("18446744073709551616s", TooLarge),
        ("5124095576030432h", TooLarge),
        ("999999999999999999999999999999999999999999h", TooLarge),
    ];
    for (text, kind) in cases {
        let err = parse_duration(text).expect_err(text);
        assert_eq!(err.kind(), &kind, "{text}");
        assert_eq!(err.input(), text);
    }
    // The largest whole number of seconds still fits.
    assert_eq!(
        parse_duration("18446744073709551615s"),
        Ok(Duration::from_secs(u64::MAX))
    );
}

#[test]
fn error_messages_are_one_readable_line() {
    let msg = |r: Result<Duration, UnitError>| r.map(|_| ()).unwrap_err().to_string();
    assert_eq!(
        msg(parse_duration("5x")),
        r#""5x": unknown unit 'x' (use us, ms, s, m or h)"#
    );
    assert_eq!(
        msg(parse_duration("5")),
        r#""5": missing unit (use us, ms, s, m or h)"#
    );
    assert_eq!(
        msg(parse_duration("")),
        r#""": empty duration (write e.g. 250ms or 1.5s)"#
    );
    assert_eq!(
        msg(parse_duration("-1s")),
        r#""-1s": a duration cannot be negative"#
    );
    let cpu = parse_cpu("0").unwrap_err().to_string();
    assert_eq!(cpu, r#""0": a CPU amount must be more than zero"#);
    let size = parse_size("1X").unwrap_err().to_string();
    assert!(
        size.starts_with(r#""1X": unknown unit 'X' (use K, M"#),
        "{size}"
    );
    for text in ["", "-1", "x", "1q", "99999999999999999999999T", "0.00001"] {
        for m in [
            parse_duration(text).map(|_| ()).err(),
            parse_size(text).map(|_| ()).err(),
            parse_cpu(text).map(|_| ()).err(),
        ]
        .into_iter()
        .flatten()
        .map(|e| e.to_string())
        {
            assert!(!m.contains('\n'), "{m}");
        }
    }
}

#[test]
fn format_duration_is_shortest_and_exact() {
    let cases = [
        (Duration::ZERO, "0s"),
        (ms(1_000), "1s"),
        (ms(250), "250ms"),
        (ms(60_000), "1m"),
        (ms(1_500), "1.5s"),
        (ms(90_000), "90s"),
        (ms(3_600_000), "1h"),
        (ms(5_400_000), "90m"),
        (ms(9_000_000), "150m"),
        (ms(100), "0.1s"),
        (ms(200), "0.2s"),
        (ms(20), "20ms"),
        (ms(10), "10ms"),
        (Duration::from_micros(1), "1us"),
        (Duration::from_nanos(1), "0.001us"),
        (Duration::from_nanos(1_500), "1.5us"),
        (Duration::new(1, 1), "1.000000001s"),
    ];
    for (d, want) in cases {
        assert_eq!(format_duration(d), want, "{d:?}");
    }
}

#[test]
fn format_duration_round_trips() {
    let mut samples = vec![
        Duration::ZERO,
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::new(u64::MAX, 1),
        Duration::new(0, 999_999_999),
        Duration::new(3_599, 999_999_999),
        Duration::new(7, 123_456_789),
    ];
    // A deterministic spread over many magnitudes and remainders.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let shift = x % 64;
        samples.push(Duration::new(x >> shift, (x % 1_000_000_000) as u32));
        samples.push(Duration::from_millis(x % 10_000_000));
    }
    for d in samples {
        let text = format_duration(d);
        assert_eq!(parse_duration(&text), Ok(d), "{d:?} -> {text}");
    }
}

#[test]
fn sizes_in_every_form() {
    use SizeLimit::*;
    let cases = [
        ("max", Max),
        ("0", Bytes(0)),
        ("4096", Bytes(4096)),
        ("1K", Bytes(1 << 10)),
        ("1k", Bytes(1 << 10)),
        ("1KiB", Bytes(1 << 10)),
        ("512M", Bytes(512 << 20)),
        ("512m", Bytes(512 << 20)),
        ("2MiB", Bytes(2 << 20)),
        ("1G", Bytes(1 << 30)),
        ("3g", Bytes(3 << 30)),
        ("1GiB", Bytes(1 << 30)),
        ("2T", Bytes(2 << 40)),
        ("2t", Bytes(2 << 40)),
        ("1TiB", Bytes(1 << 40)),
        ("1.5G", Bytes(3 << 29)),
        ("0.5K", Bytes(512)),
        ("1.0001K", Bytes(1024)),
        ("1.9", Bytes(1)),
        ("18446744073709551615", Bytes(u64::MAX)),
        (
            "16777215.9999999T",
            Bytes((16_777_215u64 << 40) + 1_099_511_517_824),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_size(text), Ok(want), "{text}");
    }
}

#[test]
fn sizes_that_fail() {
    use UnitErrorKind::*;
    let cases = [
        ("", Empty),
        ("-1", Negative),
        ("-1G", Negative),
        ("MAX", NotANumber),
        ("G", NotANumber),
        ("1.G", NotANumber),
        ("nan", NotANumber),
        ("1KB", UnknownUnit("KB".into())),
        ("1kib", UnknownUnit("kib".into())),
        ("1B", UnknownUnit("B".into())),
        ("1P", UnknownUnit("P".into())),
        ("18446744073709551616", TooLarge),
        ("16777216T", TooLarge),
    ];
    for (text, kind) in cases {
        assert_eq!(parse_size(text).unwrap_err().kind(), &kind, "{text}");
    }
}

#[test]
fn size_display_round_trips() {
    for text in [
        "max", "0", "1", "4097", "1K", "1536K", "512M", "3G", "2T", "2048T",
    ] {
        let size = parse_size(text).unwrap();
        assert_eq!(size.to_string(), text);
    }
    assert_eq!(parse_size("1.5G").unwrap().to_string(), "1536M");
    assert_eq!(SizeLimit::Bytes(u64::MAX).to_string(), u64::MAX.to_string());
}

#[test]
fn cpu_in_every_form() {
    use CpuLimit::*;
    let cases = [
        ("max", Max),
        ("250%", Millicores(2_500)),
        ("50%", Millicores(500)),
        ("100%", Millicores(1_000)),
        ("12.5%", Millicores(125)),
        ("0.1%", Millicores(1)),
        ("2.5", Millicores(2_500)),
        ("1", Millicores(1_000)),
        ("0.25", Millicores(250)),
        ("0.001", Millicores(1)),
        ("0.0019", Millicores(1)),
        ("1000000", Millicores(1_000_000_000)),
        ("100000000%", Millicores(1_000_000_000)),
    ];
    for (text, want) in cases {
        assert_eq!(parse_cpu(text), Ok(want), "{text}");
    }
}

#[test]
fn cpu_that_fails() {
    use UnitErrorKind::*;
    let cases = [
        ("", Empty),
        ("-1", Negative),
        ("-50%", Negative),
        ("0", Zero),
        ("0%", Zero),
        ("0.000", Zero),
        ("0.0001", BelowResolution),
        ("0.05%", BelowResolution),
        ("1000000.001", TooLarge),
        ("100000001%", TooLarge),
        ("99999999999999999999999999999999999999999", TooLarge),
        ("abc", NotANumber),
        ("%", NotANumber),
        ("inf", NotANumber),
        ("50 %", UnknownUnit(" %".into())),
        ("2c", UnknownUnit("c".into())),
        ("500m", UnknownUnit("m".into())),
    ];
    for (text, kind) in cases {
        assert_eq!(parse_cpu(text).unwrap_err().kind(), &kind, "{text}");
    }
}

#[test]
fn cpu_display_round_trips() {
    for text in ["max", "2.5", "0.25", "3", "0.001", "1000000"] {
        assert_eq!(parse_cpu(text).unwrap().to_string(), text);
    }
    assert_eq!(parse_cpu("250%").unwrap().to_string(), "2.5");
}
