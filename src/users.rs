//! The local user database: names to uids and back, read from /etc/passwd.
//!
//! Parsing is a pure function of the file's text that skips what it cannot
//! read (comments, NIS `+`/`-` entries, short or non-numeric lines) and never
//! panics. Like getpwnam(3) and getpwuid(3), the first entry for a name or a
//! uid wins. Users known only to NSS services (LDAP, sssd) are not seen;
//! config files name them by uid.

use std::collections::HashMap;
use std::io;
use std::path::Path;

/// The system's passwd file.
pub const PASSWD_PATH: &str = "/etc/passwd";

/// Name and uid lookups over one snapshot of the passwd file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    by_name: HashMap<String, u32>,
    by_uid: HashMap<u32, String>,
}

impl UserDb {
    /// Parses passwd(5) text: `name:password:uid:gid:gecos:home:shell`.
    pub fn from_passwd(text: &str) -> UserDb {
        let mut db = UserDb::default();
        for line in text.lines() {
            db.add_line(line);
        }
        db
    }

    /// Reads /etc/passwd. A missing file gives an empty database (minimal
    /// containers often have none); other read errors are returned.
    pub fn load() -> io::Result<UserDb> {
        UserDb::load_from(Path::new(PASSWD_PATH))
    }

    /// Reads a passwd-format file. Lines that are not UTF-8 are skipped.
    pub fn load_from(path: &Path) -> io::Result<UserDb> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(UserDb::default()),
            Err(e) => return Err(e),
        };
        let mut db = UserDb::default();
        for line in bytes.split(|b| *b == b'\n') {
            if let Ok(line) = std::str::from_utf8(line) {
                db.add_line(line);
            }
        }
        Ok(db)
    }

    fn add_line(&mut self, line: &str) {
        let Some((name, uid)) = parse_line(line) else {
            return;
        };
        self.by_uid.entry(uid).or_insert_with(|| name.to_string());
        self.by_name.entry(name.to_string()).or_insert(uid);
    }

    /// The uid of a user name.
    pub fn uid_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of a uid (the first entry that has it).
    pub fn name_of(&self, uid: u32) -> Option<&str> {
        self.by_uid.get(&uid).map(String::as_str)
    }

    /// How many distinct user names are known.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The name and uid of one passwd line, or `None` if it is not a user entry.
fn parse_line(line: &str) -> Option<(&str, u32)> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = line.split(':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let uid = fields.next()?;
    let gid = fields.next()?;
    let plausible_name = !name.is_empty()
        && !name.starts_with(['#', '+', '-'])
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plausible_name || !is_id(gid) || !is_id(uid) {
        return None;
    }
    Some((name, uid.parse().ok()?))
}

/// A decimal id as passwd writes it: digits only, no sign, fits in 32 bits.
fn is_id(field: &str) -> bool {
    crate::digits::parse_u32(field.as_bytes()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment:x:5:5::/:/bin/sh
encoder:x:1001:1001:Encoder,,,:/home/encoder:/bin/bash
toor:x:0:0:second root:/root:/bin/sh
encoder:x:2002:2002:shadowed duplicate:/:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

    #[test]
    fn parses_names_and_uids() {
        let db = UserDb::from_passwd(PASSWD);
        assert_eq!(db.uid_of("root"), Some(0));
        assert_eq!(db.uid_of("daemon"), Some(1));
        assert_eq!(db.uid_of("encoder"), Some(1001));
        assert_eq!(db.uid_of("nobody"), Some(65534));
        assert_eq!(db.uid_of("toor"), Some(0));
        assert_eq!(db.name_of(1001), Some("encoder"));
        assert_eq!(db.name_of(65534), Some("nobody"));
        assert_eq!(db.uid_of("bob"), None);
        assert_eq!(db.name_of(4242), None);
        assert_eq!(db.len(), 5);
    }

    #[test]
    fn first_entry_wins_like_getpwnam() {
        let db = UserDb::from_passwd(PASSWD);
        assert_eq!(db.name_of(0), Some("root"));
        assert_eq!(db.uid_of("encoder"), Some(1001));
        assert_eq!(db.name_of(2002), Some("encoder"));
    }

    #[test]
    fn skips_malformed_lines() {
        let text = "\
# comment
    # indented comment
+nisuser::::::
-excluded:x:7:7::/:/bin/sh
+:::::: 

short:x:12
nouid:x::1::/:/bin/sh
neguid:x:-1:1::/:/bin/sh
bigid:x:4294967296:1::/:/bin/sh
plus:x:+5:1::/:/bin/sh
badgid:x:5:g::/:/bin/sh
:x:9:9::/:/bin/sh
sp ace:x:10:10::/:/bin/sh
ok:x:11:11::/:/bin/sh
crlf:x:13:13::/:/bin/sh\r
minimal:x:14:14
max:x:4294967295:1::/:/bin/sh
";
        let db = UserDb::from_passwd(text);
        let mut names: Vec<_> = db.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["crlf", "max", "minimal", "ok"]);
        assert_eq!(db.uid_of("crlf"), Some(13));
        assert_eq!(db.uid_of("max"), Some(u32::MAX));
    }

    #[test]
    fn odd_input_never_panics() {
        for text in [
            "", "\n\n", ":", ":::", "a:b:c:d", "é:x:1:1", "\0:x:1:1", "a:x:1:1:",
        ] {
            let _ = UserDb::from_passwd(text);
        }
        assert_eq!(UserDb::from_passwd("é:x:1:1").uid_of("é"), Some(1));
        assert!(UserDb::from_passwd("").is_empty());
    }

    #[test]
    fn load_reads_files_and_tolerates_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("reeve-users-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("passwd");
        let mut bytes = b"root:x:0:0::/root:/bin/sh\n".to_vec();
        bytes.extend_from_slice(b"bad\xff:x:5:5::/:/bin/sh\nenc:x:1001:1001::/:/bin/sh\n");
        std::fs::write(&file, bytes).unwrap();
        let db = UserDb::load_from(&file).unwrap();
        assert_eq!(db.uid_of("root"), Some(0));
        assert_eq!(db.uid_of("enc"), Some(1001));
        assert_eq!(db.len(), 2);

        let missing = UserDb::load_from(&dir.join("absent")).unwrap();
        assert!(missing.is_empty());
        assert!(
            UserDb::load_from(&dir).is_err(),
            "a directory is a read error"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        // The real file, wherever this runs, must load.
        assert!(UserDb::load().is_ok());
    }
}
