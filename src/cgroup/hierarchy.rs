//! Where reeve's groups live: the cgroup2 mount, reeve's own cgroup, and
//! the managed subtree (root) chosen from them; job and pool groups are
//! children of the root.
//!
//! reeve writes only inside its root, except for enabling controllers in
//! the groups above a root it does not run in (see `controllers`).

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::paths::{is_strictly_inside, join_inside};
use super::{
    parse_mountinfo_cgroup2, parse_proc_cgroup, read_text, validate_job_name, write_once,
    CgroupError, CgroupErrorKind, Group,
};
use crate::sys;

/// The leaf reeve moves itself into when its root is its own (delegated)
/// cgroup, so the root holds no processes and may enable controllers.
const SUPERVISOR_LEAF: &str = "supervisor";

/// Extended attributes systemd sets on a cgroup delegated with Delegate=yes.
const DELEGATE_XATTRS: [&str; 2] = ["trusted.delegate", "user.delegate"];

/// The cgroup v2 hierarchy as reeve uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where the cgroup2 filesystem is mounted.
    pub mount: PathBuf,
    /// reeve's managed subtree; job and pool groups are its children.
    pub root: PathBuf,
    /// `root` was delegated to reeve (systemd Delegate=yes) or reeve runs
    /// inside it: reeve never writes to the groups above `root`, and lives
    /// in the `<root>/supervisor` leaf when it would otherwise sit in root.
    pub delegated: bool,
}

impl Hierarchy {
    /// Finds the hierarchy from /proc/self/mountinfo and /proc/self/cgroup
    /// and chooses the root, in this order:
    ///
    /// 1. `configured_root`, which must be an absolute path strictly inside
    ///    the cgroup2 mount; it counts as delegated when reeve itself runs
    ///    inside it or it carries a delegate xattr.
    /// 2. reeve's own cgroup when it is delegated: not the mount root, and
    ///    marked with `trusted.delegate` or `user.delegate` = "1" as systemd
    ///    does for Delegate=yes. reeve must then call
    ///    [`Hierarchy::enter_supervisor_leaf`] before enabling controllers
    ///    (cgroup v2's no-internal-processes rule). A reeve already in
    ///    `<delegated>/supervisor` (a restart, or DelegateSubgroup=) keeps
    ///    the delegated parent as its root.
    /// 3. otherwise `<mount>/reeve`.
    pub fn detect(configured_root: Option<&Path>) -> Result<Hierarchy, CgroupError> {
        let mountinfo = read_text(Path::new("/proc/self/mountinfo"))?;
        let own = read_text(Path::new("/proc/self/cgroup"))?;
        Hierarchy::choose(
            mountinfo.as_bytes(),
            own.as_bytes(),
            configured_root,
            is_delegated,
        )
    }

    /// The choice of [`Hierarchy::detect`], from the two files' contents and
    /// a test for the delegate mark.
    pub(crate) fn choose(
        mountinfo: &[u8],
        self_cgroup: &[u8],
        configured_root: Option<&Path>,
        is_marked: impl Fn(&Path) -> Result<bool, CgroupError>,
    ) -> Result<Hierarchy, CgroupError> {
        let mount = parse_mountinfo_cgroup2(mountinfo).ok_or_else(|| {
            CgroupError::new(
                CgroupErrorKind::Hierarchy,
                "/proc/self/mountinfo",
                "no cgroup2 filesystem is mounted",
                "reeve needs the cgroup v2 (unified) hierarchy: mount it with \
                 `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with \
                 systemd.unified_cgroup_hierarchy=1",
            )
        })?;
        let own_rel = parse_proc_cgroup(self_cgroup).ok_or_else(|| {
            CgroupError::new(
                CgroupErrorKind::Hierarchy,
                "/proc/self/cgroup",
                "no cgroup v2 line (\"0::<path>\")",
                "the kernel does not place reeve in the cgroup v2 hierarchy",
            )
        })?;
        let own = join_inside(&mount, &own_rel).ok_or_else(|| {
            CgroupError::new(
                CgroupErrorKind::Hierarchy,
                "/proc/self/cgroup",
                format!("reeve's cgroup {own_rel:?} is outside the visible hierarchy"),
                "run reeve in its own cgroup namespace or on the host",
            )
        })?;
        if let Some(root) = configured_root {
            if !is_strictly_inside(root, &mount) {
                return Err(CgroupError::new(
                    CgroupErrorKind::Hierarchy,
                    root,
                    format!(
                        "the configured cgroup root is not a group inside the cgroup2 mount {}",
                        mount.display()
                    ),
                    format!(
                        "use an absolute path below {} without '.' or '..', e.g. {}",
                        mount.display(),
                        mount.join("reeve").display()
                    ),
                ));
            }
            let delegated = own.starts_with(root) || is_marked(root)?;
            return Ok(Hierarchy {
                mount,
                root: root.to_path_buf(),
                delegated,
            });
        }
        if own != mount && is_marked(&own)? {
            return Ok(Hierarchy {
                mount,
                root: own,
                delegated: true,
            });
        }
        if let Some(parent) = own.parent() {
            let in_leaf = own.file_name() == Some(OsStr::new(SUPERVISOR_LEAF));
            if in_leaf && parent != mount && is_marked(parent)? {
                return Ok(Hierarchy {
                    root: parent.to_path_buf(),
                    mount,
                    delegated: true,
                });
            }
        }
        Ok(Hierarchy {
            root: mount.join("reeve"),
            mount,
            delegated: false,
        })
    }

    /// The group of job `name`: `<root>/job.<name>`.
    pub fn job_path(&self, name: &str) -> Result<PathBuf, CgroupError> {
        self.child("job", name)
    }

    /// The group of pool `name`: `<root>/pool.<name>`.
    pub fn pool_path(&self, name: &str) -> Result<PathBuf, CgroupError> {
        self.child("pool", name)
    }

    fn child(&self, kind: &str, name: &str) -> Result<PathBuf, CgroupError> {
        validate_job_name(name).map_err(|why| {
            CgroupError::new(
                CgroupErrorKind::InvalidName,
                &self.root,
                format!("invalid {kind} name {name:?}: {why}"),
                "use letters, digits, '.', '_' and '-' (sanitize_job_name makes any text valid)",
            )
        })?;
        Ok(self.root.join(format!("{kind}.{name}")))
    }

    /// Moves reeve into `<root>/supervisor` when it runs in the root group
    /// itself (a delegated root, see [`Hierarchy::detect`]), so the root
    /// holds no processes and may enable controllers for its children.
    /// Does nothing when reeve runs anywhere else.
    pub fn enter_supervisor_leaf(&self) -> Result<(), CgroupError> {
        if self.process_cgroup(sys::getpid())? != self.root {
            return Ok(());
        }
        let leaf = Group::new(self.root.join(SUPERVISOR_LEAF));
        leaf.create()?;
        let procs = leaf.path().join("cgroup.procs");
        let pid = sys::getpid().to_string();
        write_once(&procs, pid.as_bytes()).map_err(|e| {
            CgroupError::os(
                CgroupErrorKind::Io,
                &procs,
                format!("moving reeve (pid {pid}) into its supervisor leaf"),
                &e,
                "reeve's delegated group must be writable by reeve",
            )
        })
    }

    /// The absolute path of a process's cgroup v2 group.
    pub fn process_cgroup(&self, pid: u32) -> Result<PathBuf, CgroupError> {
        let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text = read_text(&file).map_err(|e| match e.errno {
            Some(libc::ENOENT) | Some(libc::ESRCH) => CgroupError {
                kind: CgroupErrorKind::ProcessGone,
                ..e
            },
            _ => e,
        })?;
        let rel = parse_proc_cgroup(text.as_bytes()).ok_or_else(|| {
            CgroupError::new(CgroupErrorKind::Parse, &file, "no cgroup v2 line", "")
        })?;
        join_inside(&self.mount, &rel).ok_or_else(|| {
            CgroupError::new(
                CgroupErrorKind::Parse,
                &file,
                format!("cgroup {rel:?} is outside the visible hierarchy"),
                "",
            )
        })
    }
}

/// Whether systemd marked `dir` as delegated. Missing attributes, a file
/// system without them, no permission to see them, or a value too long to
/// be "1" mean "no".
pub(crate) fn is_delegated(dir: &Path) -> Result<bool, CgroupError> {
    let Ok(cpath) = CString::new(dir.as_os_str().as_bytes()) else {
        return Ok(false);
    };
    for name in DELEGATE_XATTRS {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let mut buf = [0u8; 16];
        match sys::getxattr(&cpath, &cname, &mut buf) {
            Ok(n) => {
                let value = buf.get(..n).unwrap_or_default();
                if value.strip_suffix(b"\n").unwrap_or(value) == b"1" {
                    return Ok(true);
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EPERM | libc::EACCES | libc::ERANGE)
                    ) => {}
            Err(e) => {
                return Err(CgroupError::os(
                    CgroupErrorKind::Io,
                    dir,
                    format!("reading the {name} attribute"),
                    &e,
                    "",
                ))
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{HOST_CGROUP, HOST_MOUNTINFO};
    use super::*;

    fn no_delegation(_: &Path) -> Result<bool, CgroupError> {
        Ok(false)
    }

    #[test]
    fn unmarked_directories_are_not_delegated() {
        let fx = super::super::testutil::Fixture::new();
        assert_eq!(is_delegated(fx.dir()), Ok(false));
        assert_eq!(is_delegated(&fx.dir().join("missing")), Ok(false));
    }

    #[test]
    fn root_choice() {
        let mi = HOST_MOUNTINFO.as_bytes();
        let m = Path::new("/sys/fs/cgroup/unified");
        // This host: reeve in the mount root, nothing delegated.
        let h = Hierarchy::choose(mi, HOST_CGROUP.as_bytes(), None, no_delegation).unwrap();
        assert_eq!(h.mount, m);
        assert_eq!(h.root, m.join("reeve"));
        assert!(!h.delegated);

        // A service with Delegate=yes.
        let own = b"0::/system.slice/reeve.service\n";
        let svc = m.join("system.slice/reeve.service");
        let marked = |p: &Path| Ok(p == svc);
        let h = Hierarchy::choose(mi, own, None, marked).unwrap();
        assert_eq!((h.root.as_path(), h.delegated), (svc.as_path(), true));
        // ... after reeve entered its leaf.
        let own = b"0::/system.slice/reeve.service/supervisor\n";
        let h = Hierarchy::choose(mi, own, None, marked).unwrap();
        assert_eq!((h.root.as_path(), h.delegated), (svc.as_path(), true));
        // Without the mark the service group is not reeve's to manage.
        let h = Hierarchy::choose(mi, b"0::/system.slice/x.service\n", None, marked).unwrap();
        assert_eq!((h.root, h.delegated), (m.join("reeve"), false));

        // A configured root.
        let cfg = m.join("encoders");
        let h = Hierarchy::choose(mi, HOST_CGROUP.as_bytes(), Some(&cfg), no_delegation).unwrap();
        assert_eq!((h.root.as_path(), h.delegated), (cfg.as_path(), false));
        let inside = b"0::/encoders/supervisor\n";
        let h = Hierarchy::choose(mi, inside, Some(&cfg), no_delegation).unwrap();
        assert!(h.delegated, "reeve runs inside its configured root");
    }

    #[test]
    fn root_choice_errors() {
        let mi = HOST_MOUNTINFO.as_bytes();
        let own = HOST_CGROUP.as_bytes();
        let err = Hierarchy::choose(b"", own, None, no_delegation).unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::Hierarchy);
        assert!(err.to_string().contains("no cgroup2 filesystem"), "{err}");
        assert!(err
            .to_string()
            .contains("systemd.unified_cgroup_hierarchy=1"));
        let err = Hierarchy::choose(mi, b"1:cpu:/\n", None, no_delegation).unwrap_err();
        assert!(err.to_string().contains("0::"), "{err}");
        let err = Hierarchy::choose(mi, b"0::/../../x\n", None, no_delegation).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        for bad in [
            "/sys/fs/cgroup/memory/reeve",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/unified/../memory",
            "/sys/fs/cgroup/unified/./x",
            "sys/fs/cgroup/unified/x",
        ] {
            let err = Hierarchy::choose(mi, own, Some(Path::new(bad)), no_delegation).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(bad), "{text}");
            assert!(text.contains("inside the cgroup2 mount"), "{text}");
        }
        let failing = |p: &Path| {
            Err(CgroupError::new(
                CgroupErrorKind::Io,
                p,
                "reading the xattr",
                "",
            ))
        };
        assert!(Hierarchy::choose(mi, b"0::/a\n", None, failing).is_err());
    }

    #[test]
    fn job_and_pool_paths() {
        let h = Hierarchy {
            mount: "/m".into(),
            root: "/m/reeve".into(),
            delegated: false,
        };
        assert_eq!(h.job_path("x-1").unwrap(), Path::new("/m/reeve/job.x-1"));
        assert_eq!(
            h.pool_path("live").unwrap(),
            Path::new("/m/reeve/pool.live")
        );
        let err = h.job_path("../etc").unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::InvalidName);
        assert!(err.to_string().contains("\"../etc\""), "{err}");
        assert!(h.pool_path("..").is_err());
    }
}
