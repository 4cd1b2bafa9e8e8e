//! Cgroup paths: the cgroup2 mount in /proc/self/mountinfo, a process's
//! group in /proc/<pid>/cgroup, joining them without escaping the mount,
//! and job and pool names.
//!
//! Parsers are pure and never panic. A job or pool name can never point
//! outside reeve's root: names are 1..=64 of `[A-Za-z0-9._-]`, never "."
//! or "..", and every group directory carries a `job.` or `pool.` prefix.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The longest job or pool name.
pub const MAX_NAME_LEN: usize = 64;

/// The mount point of the first `cgroup2` filesystem in
/// /proc/self/mountinfo. Fields: id, parent, MAJ:MIN, root, mount point,
/// options, optional fields up to a lone "-", then the filesystem type.
/// Paths escape space, tab, newline and backslash as octal (`\040`).
pub fn parse_mountinfo_cgroup2(text: &[u8]) -> Option<PathBuf> {
    for line in text.split(|&b| b == b'\n') {
        let mut fields = line.split(|&b| b == b' ');
        let Some(mount) = fields.nth(4) else {
            continue;
        };
        let mut fstype = None;
        // Skip the options, then the optional fields up to the separator.
        for f in fields.by_ref().skip(1) {
            if f == b"-" {
                fstype = fields.next();
                break;
            }
        }
        if fstype == Some(b"cgroup2".as_slice()) && mount.first() == Some(&b'/') {
            return Some(PathBuf::from(OsStr::from_bytes(&unescape_octal(mount))));
        }
    }
    None
}

fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let code = match s.get(i..i + 4) {
            Some([b'\\', a, b, c]) if [a, b, c].iter().all(|d| (b'0'..=b'7').contains(*d)) => {
                u32::from(a - b'0') * 64 + u32::from(b - b'0') * 8 + u32::from(c - b'0')
            }
            _ => 256,
        };
        match u8::try_from(code) {
            Ok(byte) => {
                out.push(byte);
                i += 4;
            }
            Err(_) => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

/// The path of the cgroup v2 line (`0::/path`) of /proc/<pid>/cgroup.
pub fn parse_proc_cgroup(text: &[u8]) -> Option<String> {
    text.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"0::"))
        .filter(|path| path.first() == Some(&b'/'))
        .and_then(|path| String::from_utf8(path.to_vec()).ok())
}

/// `mount` joined with a cgroup path from /proc ("/a/b"), unless the path
/// climbs out (a cgroup namespace shows outside groups as "/../x").
pub(crate) fn join_inside(mount: &Path, cgroup: &str) -> Option<PathBuf> {
    let mut out = mount.to_path_buf();
    for part in cgroup.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// `path` is absolute, below `mount`, and has no "." or ".." parts (which
/// `Path::components` would silently drop or keep).
pub(crate) fn is_strictly_inside(path: &Path, mount: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    path.is_absolute()
        && path.starts_with(mount)
        && path.components().count() > mount.components().count()
        && !bytes.split(|&b| b == b'/').any(|p| p == b"." || p == b"..")
}

/// Checks a job or pool name: 1..=64 of `[A-Za-z0-9._-]`, not "." or "..".
pub fn validate_job_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are not names".to_string());
    }
    match name.chars().find(|&c| !is_name_char(c)) {
        Some(c) => Err(format!("{c:?} is not allowed")),
        None => Ok(()),
    }
}

/// Turns any text (a command name plus a pid, say) into a valid name:
/// every other character becomes '_', and an empty, "." or ".." result
/// becomes underscores. A result longer than 64 characters loses
/// characters before its last '-', so a trailing `-<pid>` survives and two
/// names that differ only there stay different; a name whose last part is
/// itself too long is cut at 64. Config names (rules, pools) are validated
/// instead, never passed through here.
pub fn sanitize_job_name(raw: &str) -> String {
    let mapped: Vec<char> = raw
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    let name: String = if mapped.len() <= MAX_NAME_LEN {
        mapped.into_iter().collect()
    } else {
        let tail = mapped
            .iter()
            .rposition(|&c| c == '-')
            .map_or(0, |i| mapped.len() - i);
        let head = MAX_NAME_LEN.saturating_sub(tail);
        if tail == 0 || tail > MAX_NAME_LEN / 2 {
            mapped.into_iter().take(MAX_NAME_LEN).collect()
        } else {
            let cut = mapped.len() - tail;
            mapped[..head].iter().chain(&mapped[cut..]).collect()
        }
    };
    match name.as_str() {
        "" => "_".to_string(),
        "." | ".." => name.replace('.', "_"),
        _ => name,
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{HOST_CGROUP, HOST_MOUNTINFO};
    use super::*;

    #[test]
    fn mountinfo_finds_cgroup2() {
        assert_eq!(
            parse_mountinfo_cgroup2(HOST_MOUNTINFO.as_bytes()),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A systemd host: optional fields before the separator.
        let unified = b"35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 \
                        master:2 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            parse_mountinfo_cgroup2(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let escaped = b"1 2 0:3 / /mnt/my\\040cg\\134x rw - cgroup2 none rw\n";
        assert_eq!(
            parse_mountinfo_cgroup2(escaped),
            Some(PathBuf::from("/mnt/my cg\\x"))
        );
        let first = b"1 2 0:3 / /a rw - cgroup2 none rw\n1 2 0:3 / /b rw - cgroup2 none rw\n";
        assert_eq!(parse_mountinfo_cgroup2(first), Some(PathBuf::from("/a")));
    }

    #[test]
    fn mountinfo_garbage_is_none() {
        let cases: [&[u8]; 9] = [
            b"",
            b"\n\n",
            b"1 2 3",
            b"1 2 0:3 / /a rw cgroup2 none rw",
            b"1 2 0:3 / /a rw -",
            b"1 2 0:3 / /a rw - cgroup none rw",
            b"1 2 0:3 / relative rw - cgroup2 none rw",
            b"1 2 0:3 / /a rw - cgroup2x none rw",
            b"\xff\xfe - cgroup2",
        ];
        for text in cases {
            assert_eq!(parse_mountinfo_cgroup2(text), None, "{text:?}");
        }
        assert_eq!(unescape_octal(b"\\0"), b"\\0");
        assert_eq!(unescape_octal(b"\\777x"), b"\\777x");
        assert_eq!(unescape_octal(b"a\\"), b"a\\");
        assert_eq!(unescape_octal(b"\\011\\012"), b"\t\n");
    }

    #[test]
    fn proc_cgroup_line() {
        assert_eq!(parse_proc_cgroup(HOST_CGROUP.as_bytes()), Some("/".into()));
        assert_eq!(
            parse_proc_cgroup(b"0::/system.slice/reeve.service\n"),
            Some("/system.slice/reeve.service".into())
        );
        assert_eq!(parse_proc_cgroup(b"0::/a b\n"), Some("/a b".into()));
        for bad in [
            &b""[..],
            b"1:cpu:/\n",
            b"0::\n",
            b"0::relative\n",
            b"0:/x\n",
            b"0::/\xff\n",
        ] {
            assert_eq!(parse_proc_cgroup(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked_and_sanitized() {
        for ok in [
            "ffmpeg",
            "rule.ffmpeg-1234",
            "A_b.c-9",
            "..x",
            &"a".repeat(64),
        ] {
            assert_eq!(validate_job_name(ok), Ok(()), "{ok:?}");
            assert_eq!(sanitize_job_name(ok), ok);
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a b",
            "é",
            &"a".repeat(65),
            "x\0",
        ] {
            assert!(validate_job_name(bad).is_err(), "{bad:?}");
            let fixed = sanitize_job_name(bad);
            assert_eq!(validate_job_name(&fixed), Ok(()), "{bad:?} -> {fixed:?}");
        }
        assert_eq!(sanitize_job_name("../etc"), ".._etc");
        assert_eq!(sanitize_job_name(""), "_");
        assert_eq!(sanitize_job_name("."), "_");
        assert_eq!(sanitize_job_name(".."), "__");
        assert_eq!(
            sanitize_job_name("gst-launch-1.0 1234"),
            "gst-launch-1.0_1234"
        );
        assert_eq!(sanitize_job_name("日本語"), "___");
        assert_eq!(sanitize_job_name(&"€".repeat(100)).len(), 64);
        // A long command name keeps its pid.
        let long = "x".repeat(80);
        let a = sanitize_job_name(&format!("{long}-1234567"));
        let b = sanitize_job_name(&format!("{long}-1234568"));
        assert_eq!(a.len(), 64);
        assert!(a.ends_with("x-1234567"), "{a}");
        assert_ne!(a, b);
        assert_eq!(validate_job_name(&a), Ok(()));
        // A tail too long to keep is cut like any text.
        let c = sanitize_job_name(&format!("a-{long}"));
        assert_eq!(c, format!("a-{}", "x".repeat(62)));
    }
}
