//! Names of the groups auto-attach makes, and the way back from a group's
//! name to the rule that made it (adoption after a restart).
//!
//! A per-process job is `job.<rule-prefix>-<pid>-<start_ticks>`. Invariant:
//! distinct identities never share a job group, however long the rule's
//! name: the identity is always whole in the name and only the rule part
//! is shortened (with a hash of the whole rule name, so two long names that
//! share a head stay apart). Rule and pool names are validated by the
//! config, never rewritten to fit.

use crate::cgroup;
use crate::config::Rule;
use crate::procfs::ProcKey;

/// The rule that made a group: `pool.NAME` is the pool of the first rule
/// naming it; `job.<rule-prefix>-<pid>-<start_ticks>` is a job of the rule
/// whose [`job_name`] prefix it carries.
pub(super) fn rule_of_group(rules: &[Rule], group: &str) -> Option<usize> {
    if let Some(pool) = group.strip_prefix("pool.") {
        return rules.iter().position(|r| r.pool.as_deref() == Some(pool));
    }
    let job = group.strip_prefix("job.")?;
    let (prefix, key) = split_job_name(job)?;
    rules
        .iter()
        .position(|r| r.pool.is_none() && job_prefix(&r.name, key) == prefix)
}

/// `<prefix>-<pid>-<start_ticks>` split into the prefix and the identity.
fn split_job_name(job: &str) -> Option<(&str, ProcKey)> {
    let (rest, ticks) = job.rsplit_once('-')?;
    let (prefix, pid) = rest.rsplit_once('-')?;
    let key = ProcKey {
        pid: crate::digits::parse_u32(pid.as_bytes())?,
        start_ticks: crate::digits::parse_u64(ticks.as_bytes())?,
    };
    (!prefix.is_empty()).then_some((prefix, key))
}

/// The rule part of a per-process job name: the rule's name when it fits
/// beside the identity, else its head and a hash of the whole name, so two
/// long names that share a head still give two prefixes.
fn job_prefix(rule: &str, key: ProcKey) -> String {
    let tail = format!("-{}-{}", key.pid, key.start_ticks);
    let room = cgroup::MAX_NAME_LEN - tail.len();
    if rule.len() <= room {
        return rule.to_string();
    }
    // FNV-1a over the whole name; rule names are ASCII (config validates
    // them), so any byte index is a char boundary.
    let hash = rule.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let head = room.saturating_sub(9).min(rule.len());
    format!("{}.{hash:08x}", rule.get(..head).unwrap_or(""))
}

/// The job group (without `job.`) of process `key` under rule `rule`:
/// `<prefix>-<pid>-<start_ticks>`, at most [`cgroup::MAX_NAME_LEN`] long.
/// Distinct identities never share a name: the whole identity is always
/// in it, and only the rule part is shortened.
pub(super) fn job_name(rule: &str, key: ProcKey) -> String {
    format!("{}-{}-{}", job_prefix(rule, key), key.pid, key.start_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, pool: Option<&str>) -> Rule {
        Rule {
            name: name.into(),
            pool: pool.map(Into::into),
            ..Rule::default()
        }
    }

    fn key(pid: u32, start_ticks: u64) -> ProcKey {
        ProcKey { pid, start_ticks }
    }

    #[test]
    fn short_names_read_plainly_and_round_trip() {
        let rules = [rule("enc", None), rule("live", Some("p1"))];
        let name = job_name("enc", key(4242, 777));
        assert_eq!(name, "enc-4242-777");
        assert_eq!(rule_of_group(&rules, &format!("job.{name}")), Some(0));
        assert_eq!(rule_of_group(&rules, "pool.p1"), Some(1));
        assert_eq!(rule_of_group(&rules, "pool.p2"), None);
        // A pooled rule makes no jobs; names of other shapes are no rule's.
        assert_eq!(rule_of_group(&rules, "job.live-1-2"), None);
        for odd in [
            "job.enc-4242",
            "job.enc-x-1",
            "job.-1-2",
            "job.enc--1",
            "enc-1-2",
        ] {
            assert_eq!(rule_of_group(&rules, odd), None, "{odd}");
        }
    }

    #[test]
    fn long_rule_names_never_cost_the_identity() {
        let long = "r".repeat(64);
        let rules = [rule(&long, None)];
        let biggest = key(u32::MAX, u64::MAX);
        let mut names = std::collections::HashSet::new();
        // Same pid head, same start ticks head: every identity its own job.
        for k in [
            key(1234, 5),
            key(12345, 5),
            key(1234, 55),
            key(123, 45),
            biggest,
        ] {
            let name = job_name(&long, k);
            assert!(name.len() <= cgroup::MAX_NAME_LEN, "{name}");
            assert_eq!(cgroup::validate_job_name(&name), Ok(()), "{name}");
            assert!(name.ends_with(&format!("-{}-{}", k.pid, k.start_ticks)));
            assert!(names.insert(name.clone()), "{name} given twice");
            assert_eq!(rule_of_group(&rules, &format!("job.{name}")), Some(0));
        }
    }

    #[test]
    fn long_names_with_one_head_stay_apart() {
        let a = format!("{}a", "x".repeat(63));
        let b = format!("{}b", "x".repeat(63));
        let rules = [rule(&a, None), rule(&b, None)];
        let k = key(4_194_304, 1_234_567_890);
        let (ja, jb) = (job_name(&a, k), job_name(&b, k));
        assert_ne!(ja, jb);
        assert_eq!(rule_of_group(&rules, &format!("job.{ja}")), Some(0));
        assert_eq!(rule_of_group(&rules, &format!("job.{jb}")), Some(1));
        // A rule whose name is a prefix of the other's is not confused.
        let rules = [rule("x", None), rule("x-1", None)];
        let j = job_name("x-1", key(2, 3));
        assert_eq!(rule_of_group(&rules, &format!("job.{j}")), Some(1));
        let j = job_name("x", key(12, 3));
        assert_eq!(rule_of_group(&rules, &format!("job.{j}")), Some(0));
    }
}
