//! Pure parsers for /proc files: bytes in, a typed value or a
//! [`ParseError`] out, never a panic.

use super::{Comm, ParseError, Stat};
use crate::digits::{parse_u32, parse_u64};

/// Parses /proc/<pid>/stat. The comm is everything between the first '('
/// and the last ')', because a comm may itself hold spaces, parentheses and
/// newlines; the fixed-format fields follow the last ')'.
pub fn parse_stat(buf: &[u8]) -> Result<Stat, ParseError> {
    let open = buf
        .iter()
        .position(|&b| b == b'(')
        .ok_or(ParseError::NoPid)?;
    let close = buf
        .iter()
        .rposition(|&b| b == b')')
        .ok_or(ParseError::NoComm)?;
    if close < open {
        return Err(ParseError::NoComm);
    }
    let pid_field = buf[..open].strip_suffix(b" ").ok_or(ParseError::NoPid)?;
    let pid = parse_u32(pid_field).ok_or(ParseError::NoPid)?;
    let comm = Comm::new(&buf[open + 1..close]);

    let rest = &buf[close + 1..];
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let rest = rest.strip_prefix(b" ").ok_or(ParseError::Truncated(3))?;
    // Field numbers follow proc(5): 3 is state, 4 ppid, 14 utime, 15 stime,
    // 20 num_threads, 22 starttime. Every kernel reeve supports prints 52.
    let mut fields = rest.split(|&b| b == b' ');
    let mut next = |n: u8| fields.next().ok_or(ParseError::Truncated(n));
    let state_field = next(3)?;
    let state = match state_field {
        [s] => *s,
        _ => return Err(ParseError::BadField(3)),
    };
    let num = |b: &[u8], n: u8| parse_u64(b).ok_or(ParseError::BadField(n));
    let ppid = parse_u32(next(4)?).ok_or(ParseError::BadField(4))?;
    let mut flags = 0;
    let mut utime = 0;
    let mut stime = 0;
    let mut num_threads = 0;
    let mut start_ticks = 0;
    for n in 5u8..=22 {
        let f = next(n)?;
        match n {
            9 => flags = num(f, n)?,
            14 => utime = num(f, n)?,
            15 => stime = num(f, n)?,
            20 => num_threads = num(f, n)?,
            22 => start_ticks = num(f, n)?,
            _ => {}
        }
    }
    // Field 23 must follow, so that field 22 is known to be whole: a read
    // cut inside it would otherwise parse as a smaller start time.
    next(23)?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid,
        flags,
        utime,
        stime,
        num_threads,
        start_ticks,
    })
}

/// Real and effective ids from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusIds {
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    pub egid: u32,
}

/// Parses the `Uid:` and `Gid:` lines of /proc/<pid>/status (real,
/// effective, saved, filesystem ids separated by tabs).
pub fn parse_status_ids(buf: &[u8]) -> Result<StatusIds, ParseError> {
    let mut uid = None;
    let mut gid = None;
    for line in buf.split(|&b| b == b'\n') {
        let (slot, rest) = if let Some(r) = line.strip_prefix(b"Uid:") {
            (&mut uid, r)
        } else if let Some(r) = line.strip_prefix(b"Gid:") {
            (&mut gid, r)
        } else {
            continue;
        };
        let mut ids = rest
            .split(|&b| b == b'\t' || b == b' ')
            .filter(|f| !f.is_empty());
        let real = ids.next().and_then(parse_u32);
        let eff = ids.next().and_then(parse_u32);
        if let (Some(r), Some(e)) = (real, eff) {
            *slot = Some((r, e));
        }
    }
    match (uid, gid) {
        (Some((ruid, euid)), Some((rgid, egid))) => Ok(StatusIds {
            ruid,
            euid,
            rgid,
            egid,
        }),
        _ => Err(ParseError::NoIds),
    }
}

/// The byte counters of /proc/<pid>/io the progress watchdog compares:
/// bytes the process asked to read and write (any fd: pipes, sockets,
/// files), so a stuck input and a stuck output both stop them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoCounters {
    pub rchar: u64,
    pub wchar: u64,
}

/// Parses the `rchar:` and `wchar:` lines of /proc/<pid>/io (`name: value`,
/// one per line); both are required, other lines are ignored.
pub fn parse_io(buf: &[u8]) -> Result<IoCounters, ParseError> {
    let mut rchar = None;
    let mut wchar = None;
    for line in buf.split(|&b| b == b'\n') {
        let (slot, rest) = if let Some(r) = line.strip_prefix(b"rchar:") {
            (&mut rchar, r)
        } else if let Some(r) = line.strip_prefix(b"wchar:") {
            (&mut wchar, r)
        } else {
            continue;
        };
        let start = rest.iter().position(|&b| b != b' ' && b != b'\t');
        let value = start.map_or(&rest[..0], |i| &rest[i..]);
        *slot = Some(parse_u64(value).ok_or(ParseError::NoCounters)?);
    }
    match (rchar, wchar) {
        (Some(rchar), Some(wchar)) => Ok(IoCounters { rchar, wchar }),
        _ => Err(ParseError::NoCounters),
    }
}

/// Splits /proc/<pid>/cmdline into arguments, showing bytes that are not
/// UTF-8 lossily. A process that rewrote its title may have no NULs at all;
/// then the whole text is one argument.
pub fn parse_cmdline(buf: &[u8]) -> Vec<String> {
    let body = buf.strip_suffix(b"\0").unwrap_or(buf);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// argv[0] from raw cmdline bytes: up to the first NUL.
pub fn argv0(cmdline: &[u8]) -> &[u8] {
    let end = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    &cmdline[..end]
}

/// The last path component of `path` (the whole of it when it has no '/').
pub fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The exe link of a replaced or deleted binary ends in " (deleted)"; the
/// name a rule means is the one before it.
pub fn strip_deleted(target: &[u8]) -> &[u8] {
    target.strip_suffix(b" (deleted)").unwrap_or(target)
}

/// Parses the inode from a namespace link target such as `pid:[4026531836]`.
pub fn parse_ns_link(target: &[u8]) -> Option<u64> {
    let open = target.iter().position(|&b| b == b'[')?;
    let inner = target.get(open + 1..)?.strip_suffix(b"]")?;
    parse_u64(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::{ProcKey, COMM_CAP};

    fn line(comm: &str) -> Vec<u8> {
        format!(
            "4242 ({comm}) S 17 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 123456 1000 10 \
             18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn parses_plain_stat() {
        let s = parse_stat(&line("ffmpeg")).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm.as_bytes(), b"ffmpeg");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 17);
        assert_eq!((s.utime, s.stime), (7, 3));
        assert_eq!(s.num_threads, 4);
        assert_eq!(s.flags, 4194560);
        assert!(!s.is_kernel_thread());
        assert_eq!(s.start_ticks, 123456);
        assert_eq!(
            s.key(),
            ProcKey {
                pid: 4242,
                start_ticks: 123456
            }
        );
    }

    #[test]
    fn comm_with_spaces_parens_and_newlines() {
        for comm in [
            "a b",
            "x) S 1 2 (y",
            ")",
            "((",
            "",
            "line\nbreak",
            ") 1 2 3 4",
            "ab) Z 99",
        ] {
            let s = parse_stat(&line(comm)).unwrap_or_else(|e| panic!("{comm:?}: {e}"));
            assert_eq!(s.comm.as_bytes(), comm.as_bytes(), "{comm:?}");
            assert_eq!(s.ppid, 17, "{comm:?}");
            assert_eq!(s.start_ticks, 123456, "{comm:?}");
        }
    }

    #[test]
    fn long_comm_is_capped_not_rejected() {
        let long = "k".repeat(100);
        let s = parse_stat(&line(&long)).unwrap();
        assert_eq!(s.comm.as_bytes().len(), COMM_CAP);
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let full = line("ffmpeg");
        for cut in 0..full.len() {
            let r = parse_stat(&full[..cut]);
            // Any prefix that still holds field 22 parses to the same key;
            // every shorter one is an error, never a panic.
            if let Ok(s) = r {
                assert_eq!(s.start_ticks, 123456, "cut at {cut}");
            }
        }
        assert_eq!(parse_stat(b"").unwrap_err(), ParseError::NoPid);
        assert_eq!(parse_stat(b"12 (x").unwrap_err(), ParseError::NoComm);
        assert_eq!(parse_stat(b"x (a) S 1").unwrap_err(), ParseError::NoPid);
        assert_eq!(parse_stat(b"1 (a)").unwrap_err(), ParseError::Truncated(3));
        assert_eq!(
            parse_stat(b"1 (a) S 1 2").unwrap_err(),
            ParseError::Truncated(6)
        );
        assert_eq!(
            parse_stat(b"1 (a) S x").unwrap_err(),
            ParseError::BadField(4)
        );
        assert_eq!(
            parse_stat(b"1 (a) SS 1").unwrap_err(),
            ParseError::BadField(3)
        );
        assert_eq!(parse_stat(b") 1 (").unwrap_err(), ParseError::NoComm);
        let mut big = line("a");
        let pos = big.windows(6).position(|w| w == b"123456").unwrap();
        big.splice(pos..pos + 6, b"99999999999999999999999".iter().copied());
        assert_eq!(parse_stat(&big).unwrap_err(), ParseError::BadField(22));
    }

    #[test]
    fn dead_means_zombie_without_live_threads() {
        let mut s = parse_stat(&line("a")).unwrap();
        assert!(!s.is_dead());
        s.state = b'Z';
        s.num_threads = 1;
        assert!(s.is_dead());
        s.num_threads = 3;
        assert!(!s.is_dead(), "a zombie leader with live threads is alive");
    }

    #[test]
    fn status_ids() {
        let text = b"Name:\tx\nUmask:\t0022\nState:\tS\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\n";
        let ids = parse_status_ids(text).unwrap();
        assert_eq!(
            ids,
            StatusIds {
                ruid: 1000,
                euid: 1001,
                rgid: 50,
                egid: 51
            }
        );
        assert_eq!(
            parse_status_ids(b"Uid:\t1\t1\t1\t1\n"),
            Err(ParseError::NoIds)
        );
        assert_eq!(
            parse_status_ids(b"Uid:\tx\nGid:\t1\t1\n"),
            Err(ParseError::NoIds)
        );
    }

    #[test]
    fn io_counters() {
        let io = b"rchar: 2012\nwchar: 323\nsyscr: 5\nsyscw: 3\nread_bytes: 0\n";
        assert_eq!(
            parse_io(io),
            Ok(IoCounters {
                rchar: 2012,
                wchar: 323
            })
        );
        assert_eq!(
            parse_io(b"wchar:\t7\nrchar: 18446744073709551615"),
            Ok(IoCounters {
                rchar: u64::MAX,
                wchar: 7
            })
        );
        for bad in [
            &b""[..],
            b"rchar: 1\n",
            b"rchar: x\nwchar: 1\n",
            b"rchar: 1 \nwchar: 1",
            b"rchar: -1\nwchar: 1",
        ] {
            assert_eq!(parse_io(bad), Err(ParseError::NoCounters), "{bad:?}");
        }
    }

    #[test]
    fn cmdline_forms() {
        assert_eq!(
            parse_cmdline(b"ffmpeg\0-i\0in.mp4\0"),
            vec!["ffmpeg", "-i", "in.mp4"]
        );
        assert_eq!(parse_cmdline(b"title rewritten"), vec!["title rewritten"]);
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert_eq!(parse_cmdline(b"\xff\0"), vec!["\u{fffd}"]);
        assert_eq!(argv0(b"/usr/bin/ffmpeg\0-y\0"), b"/usr/bin/ffmpeg");
        assert_eq!(basename(b"/usr/bin/ffmpeg"), b"ffmpeg");
        assert_eq!(basename(b"ffmpeg"), b"ffmpeg");
        assert_eq!(basename(b"/x/"), b"");
        assert_eq!(
            strip_deleted(b"/usr/bin/ffmpeg (deleted)"),
            b"/usr/bin/ffmpeg"
        );
    }

    #[test]
    fn ns_link() {
        assert_eq!(parse_ns_link(b"pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_ns_link(b"pid:[x]"), None);
        assert_eq!(parse_ns_link(b"pid:"), None);
    }
}
