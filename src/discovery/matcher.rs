//! Target rules as pure functions: does a process's name match a rule, and
//! do the rule's filters admit it.
//!
//! A rule matches when any of its name matchers matches (comm exactly, exe
//! basename, argv[0] basename, or a cmdline substring) and every filter
//! holds. The first rule in configuration order that matches wins. Nothing
//! here reads /proc: the caller supplies facts, and [`RuleSet`] says which
//! facts are needed so that nothing is read that no rule uses.

use std::os::unix::ffi::OsStrExt;

use crate::config::{Filter, Rule};
use crate::procfs::Comm;

/// What a filter needs to know about a process.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub uid: u32,
    pub ppid: u32,
    pub parent_comm: Option<Comm>,
    pub age_ms: u64,
    pub cwd: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Everything holds except `min_age`: try again in `wait_ms`.
    TooYoung {
        wait_ms: u64,
    },
}

/// Which facts one rule's filter reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub uid: bool,
    pub parent_comm: bool,
    pub cwd: bool,
}

struct Compiled {
    name: String,
    comm: Vec<Vec<u8>>,
    exe: Vec<Vec<u8>>,
    argv0: Vec<Vec<u8>>,
    cmdline: Vec<Vec<u8>>,
    filter: Filter,
    needs: Needs,
}

/// The configured rules, prepared for matching.
pub struct RuleSet {
    rules: Vec<Compiled>,
    needs_exe: bool,
    needs_cmdline: bool,
}

fn bytes(list: &[String]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

impl RuleSet {
    pub fn new(rules: &[Rule]) -> RuleSet {
        let rules: Vec<Compiled> = rules
            .iter()
            .map(|r| {
                let f = &r.filter;
                Compiled {
                    name: r.name.clone(),
                    comm: bytes(&r.matcher.comm),
                    exe: bytes(&r.matcher.exe),
                    argv0: bytes(&r.matcher.argv0),
                    cmdline: bytes(&r.matcher.cmdline_contains),
                    needs: Needs {
                        uid: !f.users.is_empty() || !f.exclude_users.is_empty(),
                        parent_comm: !f.parent_comms.is_empty()
                            || !f.exclude_parent_comms.is_empty(),
                        cwd: !f.cwd_prefixes.is_empty(),
                    },
                    filter: f.clone(),
                }
            })
            .collect();
        RuleSet {
            needs_exe: rules.iter().any(|r| !r.exe.is_empty()),
            needs_cmdline: rules
                .iter()
                .any(|r| !r.argv0.is_empty() || !r.cmdline.is_empty()),
            rules,
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule's name; "(adopted)" for a process tracked because it runs
    /// in a governed group that no rule names.
    pub fn name(&self, rule: usize) -> &str {
        self.rules
            .get(rule)
            .map_or("(adopted)", |r| r.name.as_str())
    }

    /// The index of the rule called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.name == name)
    }

    /// Some rule matches on the exe basename, so it must be read.
    pub fn needs_exe(&self) -> bool {
        self.needs_exe
    }

    /// Some rule matches on argv[0] or the cmdline, so it must be read.
    pub fn needs_cmdline(&self) -> bool {
        self.needs_cmdline
    }

    pub fn needs(&self, rule: usize) -> Needs {
        self.rules.get(rule).map_or(Needs::default(), |r| r.needs)
    }

    /// Rule `rule` matches on comm or exe alone (no cmdline needed).
    pub fn matches_without_cmdline(
        &self,
        rule: usize,
        comm: &[u8],
        exe_base: Option<&[u8]>,
    ) -> bool {
        let Some(r) = self.rules.get(rule) else {
            return false;
        };
        r.comm.iter().any(|c| c == comm) || exe_base.is_some_and(|e| r.exe.iter().any(|x| x == e))
    }

    /// Rule `rule` matches on argv[0] or a cmdline substring.
    pub fn matches_cmdline(&self, rule: usize, cmdline: &[u8]) -> bool {
        let Some(r) = self.rules.get(rule) else {
            return false;
        };
        if !r.argv0.is_empty() {
            let a0 = crate::procfs::basename(crate::procfs::argv0(cmdline));
            if r.argv0.iter().any(|x| x == a0) {
                return true;
            }
        }
        r.cmdline.iter().any(|n| contains_arg_text(cmdline, n))
    }

    pub fn has_cmdline_matchers(&self, rule: usize) -> bool {
        self.rules
            .get(rule)
            .is_some_and(|r| !r.argv0.is_empty() || !r.cmdline.is_empty())
    }

    pub fn verdict(&self, rule: usize, facts: &Facts<'_>) -> Verdict {
        match self.rules.get(rule) {
            Some(r) => filter_verdict(&r.filter, facts),
            None => Verdict::Fail,
        }
    }
}

/// Substring search over a cmdline whose arguments are NUL-separated; a
/// NUL counts as a space so "-f flv" finds the two arguments "-f" "flv".
pub fn contains_arg_text(cmdline: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let body = cmdline.strip_suffix(b"\0").unwrap_or(cmdline);
    if needle.len() > body.len() {
        return false;
    }
    let norm = |b: u8| if b == 0 { b' ' } else { b };
    body.windows(needle.len())
        .any(|w| w.iter().zip(needle).all(|(&a, &b)| norm(a) == b))
}

/// True when `path` is `prefix` or lies below it (component boundary).
pub fn path_has_prefix(path: &[u8], prefix: &[u8]) -> bool {
    if prefix == b"/" {
        return path.starts_with(b"/");
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"/"),
        None => false,
    }
}

/// Applies a rule's filters. `min_age` is checked last, so a TooYoung
/// verdict means every other filter already holds.
pub fn filter_verdict(f: &Filter, facts: &Facts<'_>) -> Verdict {
    if !f.users.is_empty() && !f.users.iter().any(|u| u.uid == facts.uid) {
        return Verdict::Fail;
    }
    if f.exclude_users.iter().any(|u| u.uid == facts.uid) {
        return Verdict::Fail;
    }
    let parent_comm = facts.parent_comm.as_ref().map(|c| c.as_bytes());
    let comm_in =
        |list: &[String]| parent_comm.is_some_and(|pc| list.iter().any(|c| c.as_bytes() == pc));
    if (!f.parent_pids.is_empty() || !f.parent_comms.is_empty())
        && !f.parent_pids.contains(&facts.ppid)
        && !comm_in(&f.parent_comms)
    {
        return Verdict::Fail;
    }
    if f.exclude_parent_pids.contains(&facts.ppid) || comm_in(&f.exclude_parent_comms) {
        return Verdict::Fail;
    }
    if !f.cwd_prefixes.is_empty() {
        let Some(cwd) = facts.cwd else {
            return Verdict::Fail;
        };
        if !f
            .cwd_prefixes
            .iter()
            .any(|p| path_has_prefix(cwd, p.as_os_str().as_bytes()))
        {
            return Verdict::Fail;
        }
    }
    if let Some(max) = f.max_age {
        if u128::from(facts.age_ms) > max.as_millis() {
            return Verdict::Fail;
        }
    }
    if let Some(min) = f.min_age {
        let min_ms = min.as_millis().min(u128::from(u64::MAX)) as u64;
        if facts.age_ms < min_ms {
            return Verdict::TooYoung {
                wait_ms: min_ms - facts.age_ms,
            };
        }
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Match, UserRef};
    use std::path::PathBuf;
    use std::time::Duration;

    fn rule(name: &str, m: Match, filter: Filter) -> Rule {
        Rule {
            name: name.into(),
            matcher: m,
            filter,
            ..Default::default()
        }
    }

    fn m(comm: &[&str], exe: &[&str], argv0: &[&str], cmd: &[&str]) -> Match {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Match {
            comm: v(comm),
            exe: v(exe),
            argv0: v(argv0),
            cmdline_contains: v(cmd),
        }
    }

    fn facts() -> Facts<'static> {
        Facts {
            uid: 1000,
            ppid: 50,
            parent_comm: Some(Comm::new(b"bash")),
            age_ms: 5_000,
            cwd: Some(b"/srv/encode/job1"),
        }
    }

    #[test]
    fn name_matchers_are_alternatives() {
        let rs = RuleSet::new(&[rule(
            "ff",
            m(&["ffmpeg"], &["ffmpeg-6"], &["ffm"], &["-f flv"]),
            Filter::default(),
        )]);
        assert!(rs.needs_exe() && rs.needs_cmdline());
        assert!(rs.matches_without_cmdline(0, b"ffmpeg", None));
        assert!(rs.matches_without_cmdline(0, b"x", Some(b"ffmpeg-6")));
        assert!(!rs.matches_without_cmdline(0, b"ffmpe", Some(b"ffmpeg")));
        assert!(rs.matches_cmdline(0, b"/opt/bin/ffm\0-i\0x\0"));
        assert!(rs.matches_cmdline(0, b"enc\0-f\0flv\0rtmp://x\0"));
        assert!(!rs.matches_cmdline(0, b"enc\0-f\0mp4\0"));
        assert!(!rs.matches_without_cmdline(7, b"ffmpeg", None));
    }

    #[test]
    fn comm_only_rules_read_nothing_else() {
        let rs = RuleSet::new(&[rule("a", m(&["ffmpeg"], &[], &[], &[]), Filter::default())]);
        assert!(!rs.needs_exe());
        assert!(!rs.needs_cmdline());
        assert_eq!(rs.needs(0), Needs::default());
    }

    #[test]
    fn substring_treats_nul_as_space() {
        assert!(contains_arg_text(b"a\0b\0", b"a b"));
        assert!(!contains_arg_text(b"a\0b\0", b"a\0b"));
        assert!(!contains_arg_text(b"ab", b"abc"));
        assert!(contains_arg_text(b"", b""));
    }

    #[test]
    fn prefix_respects_components() {
        assert!(path_has_prefix(b"/srv/encode", b"/srv/encode"));
        assert!(path_has_prefix(b"/srv/encode/a", b"/srv/encode"));
        assert!(!path_has_prefix(b"/srv/encoder", b"/srv/encode"));
        assert!(path_has_prefix(b"/anything", b"/"));
    }

    #[test]
    fn filters() {
        let user = |uid| UserRef { name: None, uid };
        let pass = |f: Filter| filter_verdict(&f, &facts());
        assert_eq!(pass(Filter::default()), Verdict::Pass);
        assert_eq!(
            pass(Filter {
                users: vec![user(1000)],
                ..Default::default()
            }),
            Verdict::Pass
        );
        assert_eq!(
            pass(Filter {
                users: vec![user(0)],
                ..Default::default()
            }),
            Verdict::Fail
        );
        assert_eq!(
            pass(Filter {
                exclude_users: vec![user(1000)],
                ..Default::default()
            }),
            Verdict::Fail
        );
        assert_eq!(
            pass(Filter {
                parent_pids: vec![50],
                ..Default::default()
            }),
            Verdict::Pass
        );
        assert_eq!(
            pass(Filter {
                parent_pids: vec![51],
                ..Default::default()
            }),
            Verdict::Fail
        );
        assert_eq!(
            pass(Filter {
                parent_pids: vec![51],
                parent_comms: vec!["bash".into()],
                ..Default::default()
            }),
            Verdict::Pass
        );
        assert_eq!(
            pass(Filter {
                exclude_parent_comms: vec!["bash".into()],
                ..Default::default()
            }),
            Verdict::Fail
        );
        assert_eq!(
            pass(Filter {
                exclude_parent_pids: vec![50],
                ..Default::default()
            }),
            Verdict::Fail
        );
        assert_eq!(
            pass(Filter {
                cwd_prefixes: vec![PathBuf::from("/srv/encode")],
                ..Default::default()
            }),
            Verdict::Pass
        );
        assert_eq!(
            pass(Filter {
                cwd_prefixes: vec![PathBuf::from("/srv/other")],
                ..Default::default()
            }),
            Verdict::Fail
        );
        assert_eq!(
            pass(Filter {
                max_age: Some(Duration::from_secs(1)),
                ..Default::default()
            }),
            Verdict::Fail
        );
        assert_eq!(
            pass(Filter {
                max_age: Some(Duration::from_secs(10)),
                ..Default::default()
            }),
            Verdict::Pass
        );
        assert_eq!(
            pass(Filter {
                min_age: Some(Duration::from_secs(7)),
                ..Default::default()
            }),
            Verdict::TooYoung { wait_ms: 2000 }
        );
        // A failing filter wins over "too young": nothing to wait for.
        assert_eq!(
            pass(Filter {
                min_age: Some(Duration::from_secs(7)),
                users: vec![user(0)],
                ..Default::default()
            }),
            Verdict::Fail
        );
        let no_cwd = Facts {
            cwd: None,
            ..facts()
        };
        assert_eq!(
            filter_verdict(
                &Filter {
                    cwd_prefixes: vec![PathBuf::from("/")],
                    ..Default::default()
                },
                &no_cwd
            ),
            Verdict::Fail
        );
    }
}
