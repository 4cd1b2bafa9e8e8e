//! What a group holds: the read-back of every limit file into a
//! [`Limits`], and the reset of limits a limit set no longer names.
//!
//! Invariant: a limit set is a group's whole set. What it does not name is
//! put back to the kernel's default ("max", weight 100, the parent's
//! CPUs) before what it names is written, so the group is never held
//! tighter than either the old or the new set, and a limit dropped from a
//! rule or a command line stops being enforced. A file the kernel does not
//! show (its controller is not enabled) holds nothing and is never an
//! error.

use std::path::Path;

use super::{
    apply, cpu, cpuset, io, memory, net, pids, read_text, write_then_verify, Applied, CgroupError,
    CgroupErrorKind, Controller, Limits,
};

/// Puts the kernel's default ("max", weight 100, all CPUs of the parent)
/// back into every limit file of `group` that `limits` does not name and
/// that holds anything else, so a limit dropped from the config or the
/// command line stops being enforced. A file the kernel does not show (its
/// controller is not enabled) holds nothing and is skipped. Each write is
/// an [`Applied`] with `reset` set.
pub fn reset_unwanted(group: &Path, limits: &Limits) -> Vec<Applied> {
    let mut out = Vec::new();
    cpuset::reset(group, limits, &mut out);
    cpu::reset(group, limits, &mut out);
    memory::reset(group, limits, &mut out);
    pids::reset(group, limits, &mut out);
    io::reset(group, limits, &mut out);
    net::reset(group, limits, &mut out);
    out
}

/// Writes `limits` as the group's complete limit set: resets what it does
/// not name (loosening first, so the group is never held tighter than
/// either the old or the new set), then writes what it names.
pub fn apply_exactly(group: &Path, limits: &Limits) -> Vec<Applied> {
    let mut out = reset_unwanted(group, limits);
    out.extend(apply(group, limits));
    out
}

/// The limits the kernel enforces on `group` now, read from its limit
/// files: values as the kernel shows them (memory in whole pages, CPU
/// lists canonical, io.max per device and key); defaults ("max", weight
/// 100) are no limit and stay unset. A file the kernel does not show holds
/// nothing; a file that cannot be read or parsed is an error in the list
/// and its limit stays unset.
pub fn held(group: &Path) -> (Limits, Vec<CgroupError>) {
    let mut limits = Limits::default();
    let mut errors = Vec::new();
    cpuset::held(group, &mut limits, &mut errors);
    cpu::held(group, &mut limits, &mut errors);
    memory::held(group, &mut limits, &mut errors);
    pids::held(group, &mut limits, &mut errors);
    io::held(group, &mut limits, &mut errors);
    net::held(group, &mut limits, &mut errors);
    (limits, errors)
}

/// Reads `group/file` for [`held`]: `None` when the kernel does not show
/// the file or `parse` finds its default; an unreadable or unparsable
/// file is pushed to `errors`.
pub(crate) fn read_held<T>(
    group: &Path,
    file: &str,
    parse: impl FnOnce(&str) -> Result<Option<T>, String>,
    errors: &mut Vec<CgroupError>,
) -> Option<T> {
    let path = group.join(file);
    let text = match read_text(&path) {
        Ok(t) => t,
        Err(e) if e.errno == Some(libc::ENOENT) => return None,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    parse(&text).unwrap_or_else(|why| {
        errors.push(CgroupError::new(CgroupErrorKind::Parse, &path, why, ""));
        None
    })
}

/// Writes `default` to `group/file` when the file exists and holds
/// something else (`is_default` judges the current text), reads it back
/// and pushes the write as a reset. A missing file holds nothing.
pub(crate) fn reset_file(
    group: &Path,
    controller: Controller,
    file: &str,
    default: &str,
    is_default: impl Fn(&str) -> Result<(), String>,
    out: &mut Vec<Applied>,
) {
    let path = group.join(file);
    match read_text(&path) {
        Err(e) if e.errno == Some(libc::ENOENT) => return,
        Err(e) => {
            out.push(Applied {
                controller,
                file: file.to_string(),
                wanted: default.to_string(),
                result: Err(e),
                reset: true,
            });
            return;
        }
        Ok(text) if is_default(&text).is_ok() => return,
        Ok(_) => {}
    }
    let mut applied = write_then_verify(group, controller, file, default.to_string(), is_default);
    applied.reset = true;
    out.push(applied);
}

#[cfg(test)]
mod tests {
    use super::super::in_force;
    use super::super::testutil::Fixture;
    use super::*;
    use crate::units::SizeLimit;

    #[test]
    fn apply_exactly_resets_what_is_no_longer_named_and_held_reads_the_rest() {
        let fx = Fixture::new();
        // What a group holds after an earlier apply of cpu, memory and pids.
        fx.file("cpu.max", "250000 100000\n")
            .file("cpu.weight", "100\n")
            .file("memory.max", "1073741824\n")
            .file("memory.high", "max\n")
            .file("memory.swap.max", "max\n")
            .file("pids.max", "64\n");
        let now = Limits {
            memory: Some(SizeLimit::Bytes(100 << 20)),
            ..Limits::default()
        };
        let applied = apply_exactly(fx.dir(), &now);
        let writes: Vec<(&str, &str, bool)> = applied
            .iter()
            .map(|a| (a.file.as_str(), a.wanted.as_str(), a.reset))
            .collect();
        assert_eq!(
            writes,
            [
                ("cpu.max", "max 100000", true),
                ("pids.max", "max", true),
                ("memory.max", "104857600", false),
            ],
            "resets first, defaults left alone, then the wanted value"
        );
        assert!(in_force(&applied), "{applied:?}");
        assert_eq!(fx.read("cpu.max"), "max 100000");
        assert_eq!(fx.read("pids.max"), "max");
        let (held_now, errors) = held(fx.dir());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(held_now, now, "the kernel holds exactly the new set");
        // Nothing named, nothing held: every file back at its default.
        apply_exactly(fx.dir(), &Limits::default());
        assert_eq!(fx.read("memory.max"), "max");
        assert_eq!(held(fx.dir()).0, Limits::default());
    }
}
