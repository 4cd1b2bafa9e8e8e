//! Enabling controllers for a group: `+cpu +memory ...` into
//! cgroup.subtree_control of each ancestor, and, when a controller cannot
//! be enabled, an error that says which controller, which file, and what
//! the operator can do.
//!
//! Nothing is written when a refusal is known in advance: every ancestor is
//! checked for the no-internal-processes rule before the first write.

use std::path::Path;

use super::paths::is_strictly_inside;
use super::{
    open_for_write, read_text, write_whole, CgroupError, CgroupErrorKind, Controller, Group,
    Hierarchy,
};

impl Hierarchy {
    /// Enables `needed` for `group_path` by writing `+cpu +memory ...` into
    /// cgroup.subtree_control of each ancestor from the mount down to the
    /// group's parent, where not enabled yet. Above a delegated root nothing
    /// is written; the root's cgroup.controllers shows what was delegated.
    ///
    /// cgroup v2 forbids controllers in cgroup.subtree_control of a group
    /// that holds processes (the mount root is exempt), so such a group is
    /// an error naming it, as is a controller the ancestor does not offer.
    /// The ancestors must exist: create the root before its first group.
    pub fn enable_controllers(
        &self,
        group_path: &Path,
        needed: &[Controller],
    ) -> Result<(), CgroupError> {
        let mut needed = needed.to_vec();
        needed.sort();
        needed.dedup();
        if needed.is_empty() {
            return Ok(());
        }
        if !is_strictly_inside(group_path, &self.mount) {
            return Err(CgroupError::new(
                CgroupErrorKind::Hierarchy,
                group_path,
                format!(
                    "not a group inside the cgroup2 mount {}",
                    self.mount.display()
                ),
                "",
            ));
        }
        let mut ancestors = Vec::new();
        let mut dir = self.mount.clone();
        for name in group_path.strip_prefix(&self.mount).into_iter().flatten() {
            let above_root = self.delegated && self.root.starts_with(&dir) && self.root != dir;
            if !above_root {
                ancestors.push(dir.clone());
            }
            dir.push(name);
        }
        // Refuse before writing anything, so a refusal changes nothing.
        for dir in ancestors.iter().filter(|d| **d != self.mount) {
            let missing = missing_in(dir, &needed)?;
            if !missing.is_empty() {
                check_no_processes(dir, &plus_list(&missing))?;
            }
        }
        for dir in &ancestors {
            self.enable_in(dir, &needed)?;
        }
        Ok(())
    }

    /// Makes `needed` enabled in `dir/cgroup.subtree_control`.
    fn enable_in(&self, dir: &Path, needed: &[Controller]) -> Result<(), CgroupError> {
        let at_mount = dir == self.mount;
        let offered_file = dir.join("cgroup.controllers");
        let offered = parse_controllers(&read_text(&offered_file)?);
        if let Some(&c) = needed.iter().find(|c| !offered.contains(c)) {
            let proc_cgroups = read_text(Path::new("/proc/cgroups")).ok();
            let delegated_root = self.delegated && dir == self.root;
            let hint = unavailable_hint(c, dir, at_mount, delegated_root, proc_cgroups.as_deref());
            return Err(CgroupError::new(
                CgroupErrorKind::ControllerUnavailable,
                offered_file,
                format!("controller '{c}' is not available"),
                hint,
            ));
        }
        let control = dir.join("cgroup.subtree_control");
        let missing = missing_in(dir, needed)?;
        if missing.is_empty() {
            return Ok(());
        }
        let data = plus_list(&missing);
        if !at_mount {
            check_no_processes(dir, &data)?;
        }
        let write = open_for_write(&control).and_then(|mut f| write_whole(&mut f, data.as_bytes()));
        if let Err(e) = write {
            if e.raw_os_error() == Some(libc::EBUSY) {
                return Err(internal_processes(dir, &data, ""));
            }
            return Err(CgroupError::os(
                CgroupErrorKind::Io,
                &control,
                format!("writing {data:?}"),
                &e,
                "reeve needs root, or a subtree delegated to it",
            ));
        }
        let now = parse_controllers(&read_text(&control)?);
        if let Some(c) = missing.iter().find(|c| !now.contains(c)) {
            return Err(CgroupError::new(
                CgroupErrorKind::Mismatch,
                &control,
                format!("wrote {data:?} but '{c}' is not enabled afterwards"),
                "another manager may be rewriting this file",
            ));
        }
        Ok(())
    }
}

/// The controllers of `needed` that `dir/cgroup.subtree_control` lacks.
fn missing_in(dir: &Path, needed: &[Controller]) -> Result<Vec<Controller>, CgroupError> {
    let text = read_text(&dir.join("cgroup.subtree_control")).map_err(|e| {
        if dir.is_dir() {
            return e;
        }
        CgroupError {
            hint: "the group does not exist yet: create it before enabling controllers below it"
                .to_string(),
            ..e
        }
    })?;
    let enabled = parse_controllers(&text);
    Ok(needed
        .iter()
        .copied()
        .filter(|c| !enabled.contains(c))
        .collect())
}

/// "+cpu +memory": the subtree_control text that enables `controllers`.
fn plus_list(controllers: &[Controller]) -> String {
    let words: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    words.join(" ")
}

/// cgroup v2's no-internal-processes rule: controllers may be enabled for
/// the children of a group (other than the root) only while it holds no
/// processes itself.
fn check_no_processes(dir: &Path, data: &str) -> Result<(), CgroupError> {
    let procs = Group::new(dir).procs()?;
    if procs.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = procs.iter().take(5).map(|p| p.to_string()).collect();
    Err(internal_processes(
        dir,
        data,
        &format!(" (pids {})", shown.join(", ")),
    ))
}

fn internal_processes(dir: &Path, data: &str, pids: &str) -> CgroupError {
    CgroupError::new(
        CgroupErrorKind::InternalProcesses,
        dir,
        format!("cannot enable {data} here: the group holds processes{pids}"),
        "cgroup v2 allows controllers in cgroup.subtree_control only for groups without \
         processes of their own (the no-internal-processes rule): move them into a leaf group \
         (reeve moves itself into <root>/supervisor when its root is delegated)",
    )
}

/// The controllers a group offers (cgroup.controllers).
pub fn available_controllers(dir: &Path) -> Result<Vec<Controller>, CgroupError> {
    Ok(parse_controllers(&read_text(
        &dir.join("cgroup.controllers"),
    )?))
}

/// Parses a space-separated controller list (cgroup.controllers,
/// cgroup.subtree_control). Controllers reeve does not use (hugetlb, rdma,
/// misc) are skipped; a leading '+' is tolerated.
pub fn parse_controllers(text: &str) -> Vec<Controller> {
    text.split_ascii_whitespace()
        .filter_map(|w| Controller::from_name(w.strip_prefix('+').unwrap_or(w)))
        .collect()
}

/// What the operator can do about controller `c` missing from
/// `dir/cgroup.controllers`. At the mount root the answer is in
/// /proc/cgroups (`name hierarchy num_cgroups enabled`): a nonzero
/// hierarchy means a cgroup v1 hierarchy holds the controller.
fn unavailable_hint(
    c: Controller,
    dir: &Path,
    at_mount: bool,
    delegated_root: bool,
    proc_cgroups: Option<&str>,
) -> String {
    let parent = dir.parent().unwrap_or(dir).join("cgroup.subtree_control");
    if delegated_root {
        return format!(
            "it is not delegated to reeve's group, and reeve does not write above it: set \
             Delegate=yes (or add {c} to Delegate=) in reeve's systemd unit, or enable it in {}",
            parent.display()
        );
    }
    if !at_mount {
        return format!(
            "it is not enabled in {}: enable it there (+{c}) or choose a cgroup root whose \
             parents allow it",
            parent.display()
        );
    }
    // /proc/cgroups shows the io controller by its v1 name.
    let v1_name = if c == Controller::Io {
        "blkio"
    } else {
        c.as_str()
    };
    let row = proc_cgroups.and_then(|text| {
        text.lines().find_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let name = f.next()?;
            if name != v1_name && name != c.as_str() {
                return None;
            }
            let hierarchy = f.next()?;
            let _num = f.next()?;
            Some((hierarchy != "0", f.next()? == "1"))
        })
    });
    match row {
        Some((true, _)) => "it is bound to the cgroup v1 hierarchy on this host; boot with \
                           systemd.unified_cgroup_hierarchy=1 or cgroup_no_v1=all"
            .to_string(),
        Some((false, false)) => {
            format!("it is disabled on the kernel command line; remove cgroup_disable={v1_name}")
        }
        Some((false, true)) => "it is enabled but not offered to cgroup v2; a cgroup v1 \
                                hierarchy may still hold it: check /proc/cgroups and reboot \
                                with cgroup_no_v1=all"
            .to_string(),
        None if proc_cgroups.is_some() => {
            let config = match c {
                Controller::Cpu => "CONFIG_CGROUP_SCHED",
                Controller::Memory => "CONFIG_MEMCG",
                Controller::Pids => "CONFIG_CGROUP_PIDS",
                Controller::Io => "CONFIG_BLK_CGROUP",
                Controller::Cpuset => "CONFIG_CPUSETS",
                Controller::Net => "CONFIG_CGROUP_BPF",
            };
            format!("this kernel is built without it ({config})")
        }
        None => "see /proc/cgroups for where the controller is bound".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Fixture;
    use super::*;

    /// This build host's /proc/cgroups (a v1 hybrid layout).
    const HOST_PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
        cpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nblkio\t7\t1\t1\nmemory\t4\t28\t1\n\
        devices\t5\t1\t1\nfreezer\t6\t1\t1\nnet_cls\t0\t1\t1\nhugetlb\t0\t1\t1\npids\t8\t1\t1\n";

    #[test]
    fn unavailable_hints_say_what_to_do() {
        let m = Path::new("/sys/fs/cgroup/unified");
        let pc = Some(HOST_PROC_CGROUPS);
        let memory = unavailable_hint(Controller::Memory, m, true, false, pc);
        assert!(
            memory.contains("bound to the cgroup v1 hierarchy"),
            "{memory}"
        );
        assert!(memory.contains("cgroup_no_v1=all"), "{memory}");
        let io = unavailable_hint(Controller::Io, m, true, false, pc);
        assert!(io.contains("bound to the cgroup v1"), "{io}");
        let off = "#h\nmemory\t0\t1\t0\n";
        let hint = unavailable_hint(Controller::Memory, m, true, false, Some(off));
        assert!(hint.contains("cgroup_disable=memory"), "{hint}");
        let absent = unavailable_hint(Controller::Pids, m, true, false, Some("#h\n"));
        assert!(absent.contains("CONFIG_CGROUP_PIDS"), "{absent}");
        let none = unavailable_hint(Controller::Pids, m, true, false, None);
        assert!(none.contains("/proc/cgroups"), "{none}");
        let deleg = unavailable_hint(Controller::Cpu, &m.join("a"), false, true, pc);
        assert!(deleg.contains("Delegate="), "{deleg}");
        let below = unavailable_hint(Controller::Cpu, &m.join("a/b"), false, false, pc);
        assert!(
            below.contains("/sys/fs/cgroup/unified/a/cgroup.subtree_control"),
            "{below}"
        );
    }

    fn fixture_hierarchy(fx: &Fixture, delegated: bool, root: &str) -> Hierarchy {
        Hierarchy {
            mount: fx.dir().to_path_buf(),
            root: fx.dir().join(root),
            delegated,
        }
    }

    const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

    #[test]
    fn enables_controllers_down_to_the_parent() {
        let fx = Fixture::new();
        fx.file("cgroup.controllers", ALL)
            .file("cgroup.subtree_control", "")
            .file("cgroup.procs", "1\n2\n")
            .file("reeve/cgroup.controllers", ALL)
            .file("reeve/cgroup.subtree_control", "cpu\n")
            .file("reeve/cgroup.procs", "");
        let h = fixture_hierarchy(&fx, false, "reeve");
        let job = h.job_path("a").unwrap();
        let needed = [Controller::Memory, Controller::Cpu, Controller::Memory];
        h.enable_controllers(&job, &needed).unwrap();
        assert_eq!(fx.read("cgroup.subtree_control"), "+cpu +memory");
        assert_eq!(fx.read("reeve/cgroup.subtree_control"), "+memory");
        // Already enabled: nothing is written.
        std::fs::write(
            fx.dir().join("reeve/cgroup.subtree_control"),
            "cpu memory\n",
        )
        .unwrap();
        h.enable_controllers(&job, &needed).unwrap();
        assert_eq!(fx.read("reeve/cgroup.subtree_control"), "cpu memory\n");
        h.enable_controllers(&job, &[]).unwrap();
        let err = h
            .enable_controllers(Path::new("/elsewhere"), &needed)
            .unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::Hierarchy);
    }

    #[test]
    fn refuses_groups_with_processes_and_missing_controllers() {
        let fx = Fixture::new();
        fx.file("cgroup.controllers", ALL)
            .file("cgroup.subtree_control", "")
            .file("cgroup.procs", "1\n")
            .file("reeve/cgroup.controllers", ALL)
            .file("reeve/cgroup.subtree_control", "")
            .file("reeve/cgroup.procs", "4242\n");
        let h = fixture_hierarchy(&fx, false, "reeve");
        let job = h.job_path("a").unwrap();
        let err = h.enable_controllers(&job, &[Controller::Pids]).unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::InternalProcesses);
        let text = err.to_string();
        assert!(text.starts_with(&h.root.display().to_string()), "{text}");
        assert!(
            text.contains("4242") && text.contains("no-internal-processes"),
            "{text}"
        );
        assert_eq!(fx.read("reeve/cgroup.subtree_control"), "");

        assert_eq!(fx.read("cgroup.subtree_control"), "", "nothing written");
        fx.file("reeve/cgroup.procs", "")
            .file("cgroup.controllers", "hugetlb\n");
        let err = h
            .enable_controllers(&job, &[Controller::Memory])
            .unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::ControllerUnavailable);
        let text = err.to_string();
        assert!(
            text.contains("cgroup.controllers: controller 'memory'"),
            "{text}"
        );
        assert_eq!(fx.read("cgroup.subtree_control"), "", "nothing written");
    }

    #[test]
    fn delegated_root_writes_nothing_above_itself() {
        let fx = Fixture::new();
        fx.file("cgroup.controllers", ALL)
            .file("cgroup.subtree_control", "")
            .file("svc/cgroup.controllers", "cpu memory\n")
            .file("svc/cgroup.subtree_control", "")
            .file("svc/cgroup.procs", "")
            .file("svc/reeve/cgroup.controllers", "cpu pids\n")
            .file("svc/reeve/cgroup.subtree_control", "")
            .file("svc/reeve/cgroup.procs", "");
        let h = fixture_hierarchy(&fx, true, "svc/reeve");
        let job = h.job_path("a").unwrap();
        h.enable_controllers(&job, &[Controller::Cpu]).unwrap();
        assert_eq!(fx.read("svc/reeve/cgroup.subtree_control"), "+cpu");
        assert_eq!(fx.read("cgroup.subtree_control"), "");
        assert_eq!(fx.read("svc/cgroup.subtree_control"), "");
        let err = h
            .enable_controllers(&job, &[Controller::Memory])
            .unwrap_err();
        assert!(err.to_string().contains("Delegate="), "{err}");
    }

    #[test]
    fn available_controllers_reads_the_file() {
        let fx = Fixture::new();
        fx.file("cgroup.controllers", ALL);
        assert_eq!(
            available_controllers(fx.dir()).unwrap(),
            [
                Controller::Cpuset,
                Controller::Cpu,
                Controller::Io,
                Controller::Memory,
                Controller::Pids
            ]
        );
        assert_eq!(parse_controllers("+cpu -memory \n"), [Controller::Cpu]);
        assert!(available_controllers(&fx.dir().join("none")).is_err());
    }
}
