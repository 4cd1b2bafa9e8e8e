//! Network bandwidth per group: `net_tx` and `net_rx` as token buckets in
//! hand-assembled `cgroup_skb` programs ([`asm`]), one per direction, each
//! with a one-entry array map holding its bucket ([`bucket`]), loaded and
//! attached to the group with bpf(2) through `sys`.
//!
//! Invariant: the kernel is the record. A program is reeve's by its name
//! (`reeve_net_tx`, `reeve_net_rx`) among the programs attached to the
//! group itself; its map is found through the program (query, program id,
//! its map ids), so a restarted reeve adopts what is attached without
//! reloading, and a limit counts as in force only when the query shows
//! exactly one such program whose bucket holds the wanted rate and burst.
//! Programs are attached with `BPF_F_ALLOW_MULTI`, so a pool's and a job's
//! buckets both apply and another manager's programs stay untouched; they
//! stay attached after reeve exits and go when the group is removed.

mod asm;
pub mod bucket;
pub mod query;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Applied, CgroupError, CgroupErrorKind, Controller, Limits, NetRate};
use crate::sys;
pub use bucket::Bucket;
use query::{bucket_map_of, check_bucket_map, invalid, listed};

/// `BPF_PROG_TYPE_CGROUP_SKB`.
const PROG_TYPE_CGROUP_SKB: u32 = 8;
/// `BPF_MAP_TYPE_ARRAY`.
const MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_F_ALLOW_MULTI`.
const F_ALLOW_MULTI: u32 = 2;
/// `BPF_CGROUP_MAX_PROGS`: the most programs one attach point holds.
const MAX_PROGS: usize = 64;
/// The verifier's log for a failed load; the tail goes into the error.
const LOG_SIZE: usize = 64 << 10;
const LOG_TAIL: usize = 1200;

/// A direction of traffic, and the limit that governs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Egress, `net_tx`.
    Tx,
    /// Ingress, `net_rx`.
    Rx,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Tx, Direction::Rx];

    /// The limit's name, also the file name of its [`Applied`] entries.
    pub fn key(self) -> &'static str {
        match self {
            Direction::Tx => "net_tx",
            Direction::Rx => "net_rx",
        }
    }

    /// `BPF_CGROUP_INET_EGRESS` or `BPF_CGROUP_INET_INGRESS`.
    fn attach_type(self) -> u32 {
        match self {
            Direction::Tx => 1,
            Direction::Rx => 0,
        }
    }

    /// The program's and the map's name: how reeve knows its own.
    pub fn name(self) -> &'static [u8] {
        match self {
            Direction::Tx => b"reeve_net_tx",
            Direction::Rx => b"reeve_net_rx",
        }
    }

    /// The verdict for a packet over budget. Egress programs may return
    /// 2, "drop and notify congestion" (kernel 5.3 on), so the sending
    /// TCP enters congestion window reduction instead of retransmitting
    /// blindly; ingress programs may return only 0 or 1.
    fn over_budget(self) -> i32 {
        match self {
            Direction::Tx => 2,
            Direction::Rx => 0,
        }
    }

    /// The limit `l` sets for this direction.
    pub fn wanted(self, l: &Limits) -> Option<NetRate> {
        match self {
            Direction::Tx => l.net_tx,
            Direction::Rx => l.net_rx,
        }
    }

    fn set(self, l: &mut Limits, r: Option<NetRate>) {
        match self {
            Direction::Tx => l.net_tx = r,
            Direction::Rx => l.net_rx = r,
        }
    }
}

/// One of reeve's programs attached to a group, with its bucket.
struct Attached {
    prog: OwnedFd,
    prog_id: u32,
    bucket: Bucket,
}

/// What to do about a failed bpf(2) call, by errno.
fn hint(errno: Option<i32>, during: &str) -> String {
    match errno {
        // The verifier refuses a program with EACCES (or EINVAL); a
        // missing capability is EPERM, checked before the verifier runs.
        Some(libc::EACCES) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) if during == "load" => {
            "the kernel refused the program (its verifier's log is quoted in this line): \
             network limits need cgroup_skb programs (CONFIG_CGROUP_BPF) and BPF atomic \
             compare-and-exchange (kernel 5.12 or later)"
                .to_string()
        }
        Some(libc::EPERM) | Some(libc::EACCES) => "reeve needs CAP_BPF and CAP_NET_ADMIN (or \
             CAP_SYS_ADMIN) for network limits: run it as root, or drop net_tx/net_rx"
            .to_string(),
        Some(libc::ENOSYS) => "this kernel has no bpf(2) (CONFIG_BPF_SYSCALL); network limits \
             need a kernel with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF, 5.12 or later"
            .to_string(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::EBADF) => "this kernel cannot \
             attach cgroup_skb programs to cgroup v2 groups (CONFIG_CGROUP_BPF)"
            .to_string(),
        _ => String::new(),
    }
}

fn bpf_error(group: &Path, dir: Direction, what: &str, e: &io::Error, during: &str) -> CgroupError {
    CgroupError::os(
        CgroupErrorKind::Io,
        group,
        format!("{}: {what}", dir.key()),
        e,
        hint(e.raw_os_error(), during),
    )
}

/// True when `group` is on cgroup v2; a fixture directory is not, and holds
/// no programs.
fn is_v2(group: &Path) -> Result<bool, CgroupError> {
    let c = CString::new(group.as_os_str().as_bytes()).map_err(|_| {
        CgroupError::new(
            CgroupErrorKind::InvalidName,
            group,
            "path holds a NUL byte",
            "",
        )
    })?;
    sys::is_cgroup2(&c).map_err(|e| CgroupError::os(CgroupErrorKind::Io, group, "statfs", &e, ""))
}

fn open_group(group: &Path) -> Result<OwnedFd, CgroupError> {
    File::open(group).map(OwnedFd::from).map_err(|e| {
        CgroupError::os(
            CgroupErrorKind::Io,
            group,
            "opening the group for bpf(2)",
            &e,
            "",
        )
    })
}

/// reeve's programs attached to the group for `dir`, found by name, with
/// their buckets read from their maps. A program detached while this runs
/// is skipped.
fn attached(cg: &OwnedFd, dir: Direction) -> io::Result<Vec<Attached>> {
    let mut ids = [0u32; MAX_PROGS];
    // Without BPF_F_QUERY_EFFECTIVE the query lists the group's own
    // programs, at most MAX_PROGS.
    let count = sys::bpf_prog_query(cg, dir.attach_type(), &mut ids)?;
    let mut out = Vec::new();
    for &id in listed(count, &ids) {
        let prog = match sys::bpf_prog_get_fd_by_id(id) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let info = sys::bpf_prog_info(&prog)?;
        let Some(map_id) = bucket_map_of(dir, &info) else {
            continue;
        };
        let bucket = read_bucket(map_id.map_err(invalid)?, dir)?;
        out.push(Attached {
            prog,
            prog_id: info.id,
            bucket,
        });
    }
    Ok(out)
}

/// The bucket of a program of reeve's: its one map, checked by name and
/// size before it is read.
fn read_bucket(id: u32, dir: Direction) -> io::Result<Bucket> {
    let map = sys::bpf_map_get_fd_by_id(id)?;
    let info = sys::bpf_map_info(&map)?;
    check_bucket_map(dir, id, &info).map_err(invalid)?;
    let mut value = [0u8; bucket::VALUE_SIZE];
    sys::bpf_map_lookup(&map, &0u32.to_ne_bytes(), &mut value)?;
    Ok(Bucket::from_bytes(&value))
}

/// Errors of a query that mean no program can be attached here at all:
/// no bpf(2), or no cgroup BPF.
fn no_cgroup_bpf(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

/// Errors of a query that mean this reeve cannot have attached anything
/// here: no cgroup BPF, or no capability for bpf(2). Resets and read-backs
/// of a group without network limits do not fail on them.
fn nothing_visible(e: &io::Error) -> bool {
    no_cgroup_bpf(e) || e.raw_os_error() == Some(libc::EPERM)
}

/// Loads, attaches and reads back the limit for `dir`, replacing a program
/// of reeve's that holds other figures, keeping (adopting) one that holds
/// these.
fn apply_one(group: &Path, dir: Direction, want: NetRate) -> Result<(), CgroupError> {
    apply_program(group, dir, want, policer)
}

/// The token-bucket program for `dir` with the bucket map open as `map_fd`.
fn policer(map_fd: i32, dir: Direction) -> Vec<u64> {
    asm::encode(&asm::program(map_fd, dir.over_budget()))
}

/// [`apply_one`] with the program `program` assembles (tests load one the
/// kernel refuses).
fn apply_program(
    group: &Path,
    dir: Direction,
    want: NetRate,
    program: fn(i32, Direction) -> Vec<u64>,
) -> Result<(), CgroupError> {
    if !is_v2(group)? {
        return Err(CgroupError::new(
            CgroupErrorKind::Hierarchy,
            group,
            format!("{}: not a cgroup v2 group", dir.key()),
            "network limits attach cgroup BPF programs, which need cgroup v2",
        ));
    }
    let cg = open_group(group)?;
    let old = attached(&cg, dir)
        .map_err(|e| bpf_error(group, dir, "querying the attached programs", &e, "query"))?;
    let same = |b: &Bucket| b.rate == want.bytes_per_sec && b.burst == want.burst;
    if let [one] = old.as_slice() {
        if same(&one.bucket) {
            return Ok(());
        }
    }
    let map = sys::bpf_map_create(MAP_TYPE_ARRAY, 4, bucket::VALUE_SIZE as u32, 1, dir.name())
        .map_err(|e| bpf_error(group, dir, "creating the bucket map", &e, "map"))?;
    let full = Bucket::full(want.bytes_per_sec, want.burst).to_bytes();
    sys::bpf_map_update(&map, &0u32.to_ne_bytes(), &full)
        .map_err(|e| bpf_error(group, dir, "filling the bucket", &e, "map"))?;
    let prog = load(group, dir, &map, program)?;
    sys::bpf_prog_attach(&cg, &prog, dir.attach_type(), F_ALLOW_MULTI)
        .map_err(|e| bpf_error(group, dir, "attaching the program", &e, "attach"))?;
    for o in &old {
        sys::bpf_prog_detach(&cg, &o.prog, dir.attach_type()).map_err(|e| {
            bpf_error(
                group,
                dir,
                "detaching the program it replaces",
                &e,
                "detach",
            )
        })?;
    }
    let new_id = sys::bpf_prog_info(&prog)
        .map_err(|e| bpf_error(group, dir, "reading the program's id", &e, "query"))?
        .id;
    let now = attached(&cg, dir)
        .map_err(|e| bpf_error(group, dir, "reading back the programs", &e, "query"))?;
    match now.as_slice() {
        [one] if one.prog_id == new_id && same(&one.bucket) => Ok(()),
        other => Err(CgroupError::new(
            CgroupErrorKind::Mismatch,
            group,
            format!(
                "{}: attached program {new_id} for {want}, but the group shows {}",
                dir.key(),
                describe(other)
            ),
            "another reeve may be changing this group's network limits at the same time",
        )),
    }
}

fn describe(progs: &[Attached]) -> String {
    if progs.is_empty() {
        return "none of reeve's programs".to_string();
    }
    let each: Vec<String> = progs
        .iter()
        .map(|p| {
            let r = NetRate {
                bytes_per_sec: p.bucket.rate,
                burst: p.bucket.burst,
            };
            format!("program {} at {r}", p.prog_id)
        })
        .collect();
    each.join(", ")
}

/// Loads the program for `dir` with `map`; a refusal carries the tail of
/// the verifier's log.
fn load(
    group: &Path,
    dir: Direction,
    map: &OwnedFd,
    program: fn(i32, Direction) -> Vec<u64>,
) -> Result<OwnedFd, CgroupError> {
    use std::os::fd::AsRawFd;
    let insns = program(map.as_raw_fd(), dir);
    let mut log = vec![0u8; LOG_SIZE];
    let expected = dir.attach_type();
    sys::bpf_prog_load(
        PROG_TYPE_CGROUP_SKB,
        expected,
        &insns,
        c"GPL",
        dir.name(),
        &mut log,
    )
    .map_err(|e| {
        let what = format!("loading the cgroup_skb program{}", log_tail(&log));
        bpf_error(group, dir, &what, &e, "load")
    })
}

/// The end of a verifier log as one line (" (verifier: ... | ...)"), or
/// nothing when the log is empty.
pub fn log_tail(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut tail = lines.join(" | ");
    if tail.len() > LOG_TAIL {
        let mut cut = tail.len() - LOG_TAIL;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = format!("...{}", &tail[cut..]);
    }
    format!(" (verifier: {tail})")
}

/// Puts the network limits `limits` names in force on `group`.
pub fn apply(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    for dir in Direction::BOTH {
        if let Some(want) = dir.wanted(limits) {
            out.push(Applied {
                controller: Controller::Net,
                file: dir.key().to_string(),
                wanted: want.to_string(),
                result: apply_one(group, dir, want),
                reset: false,
            });
        }
    }
}

/// Detaches reeve's programs for the directions `limits` leaves unset, and
/// reads back that none is left. A group reeve cannot query (no cgroup
/// BPF, no capability) holds none of reeve's programs.
pub fn reset(group: &Path, limits: &Limits, out: &mut Vec<Applied>) {
    for dir in Direction::BOTH {
        if dir.wanted(limits).is_some() {
            continue;
        }
        let result = match detach_all(group, dir) {
            Ok(false) => continue,
            Ok(true) => Ok(()),
            Err(e) => Err(e),
        };
        out.push(Applied {
            controller: Controller::Net,
            file: dir.key().to_string(),
            wanted: "none".to_string(),
            result,
            reset: true,
        });
    }
}

/// Detaches reeve's programs for both directions from `group`, for a
/// group about to be removed: a socket opened in the group keeps the
/// group's programs after its rmdir, so only an explicit detach frees the
/// transfers it carries.
pub fn remove(group: &Path) -> Result<(), CgroupError> {
    for dir in Direction::BOTH {
        detach_all(group, dir)?;
    }
    Ok(())
}

/// Detaches every program of reeve's for `dir`; true when there was one.
fn detach_all(group: &Path, dir: Direction) -> Result<bool, CgroupError> {
    if !group.is_dir() || !is_v2(group)? {
        return Ok(false);
    }
    let cg = open_group(group)?;
    let old = match attached(&cg, dir) {
        Ok(o) => o,
        Err(e) if nothing_visible(&e) => return Ok(false),
        Err(e) => {
            return Err(bpf_error(
                group,
                dir,
                "querying the attached programs",
                &e,
                "query",
            ))
        }
    };
    if old.is_empty() {
        return Ok(false);
    }
    for o in &old {
        sys::bpf_prog_detach(&cg, &o.prog, dir.attach_type())
            .map_err(|e| bpf_error(group, dir, "detaching the program", &e, "detach"))?;
    }
    let left = attached(&cg, dir)
        .map_err(|e| bpf_error(group, dir, "reading back the programs", &e, "query"))?;
    if !left.is_empty() {
        return Err(CgroupError::new(
            CgroupErrorKind::Mismatch,
            group,
            format!(
                "{}: detached, but the group still shows {}",
                dir.key(),
                describe(&left)
            ),
            "another reeve may be attaching to this group at the same time",
        ));
    }
    Ok(true)
}

/// Reads the network limits the group's programs hold into `into`. More
/// than one program of reeve's for a direction is an error (a replace cut
/// short); the first one's figures are reported.
pub fn held(group: &Path, into: &mut Limits, errors: &mut Vec<CgroupError>) {
    match read_buckets(group, nothing_visible) {
        Ok(found) => {
            for (dir, b) in Direction::BOTH.into_iter().zip(found) {
                dir.set(
                    into,
                    b.map(|b| NetRate {
                        bytes_per_sec: b.rate,
                        burst: b.burst,
                    }),
                );
            }
        }
        Err(e) => errors.push(e),
    }
}

/// The bucket of reeve's program for each direction ([`Direction::BOTH`]
/// order): figures and counters of passed and dropped bytes. `None` for a
/// direction without one, and on a kernel without cgroup BPF; a reeve
/// without the capability to look gets an error that says so.
pub fn buckets(group: &Path) -> Result<[Option<Bucket>; 2], CgroupError> {
    read_buckets(group, no_cgroup_bpf)
}

/// [`buckets`], with `none_here` naming the query errors that mean "no
/// program of reeve's".
fn read_buckets(
    group: &Path,
    none_here: fn(&io::Error) -> bool,
) -> Result<[Option<Bucket>; 2], CgroupError> {
    let mut out = [None, None];
    if !group.is_dir() || !is_v2(group)? {
        return Ok(out);
    }
    let cg = open_group(group)?;
    for (slot, dir) in out.iter_mut().zip(Direction::BOTH) {
        let found = match attached(&cg, dir) {
            Ok(f) => f,
            Err(e) if none_here(&e) => continue,
            Err(e) => {
                return Err(bpf_error(
                    group,
                    dir,
                    "reading the attached programs",
                    &e,
                    "query",
                ))
            }
        };
        if found.len() > 1 {
            return Err(CgroupError::new(
                CgroupErrorKind::Mismatch,
                group,
                format!("{}: {}", dir.key(), describe(&found)),
                "more than one program of reeve's: apply the limits again to replace them",
            ));
        }
        *slot = found.first().map(|a| a.bucket);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_log_tail_is_one_bounded_line() {
        assert_eq!(log_tail(&[0u8; 16]), "");
        let mut log = b"0: (61) r6 = *(u32 *)(r1 +0)\n\nR0 !read_ok\nprocessed 3 insns\n".to_vec();
        log.extend_from_slice(&[0, b'x', b'y']);
        assert_eq!(
            log_tail(&log),
            " (verifier: 0: (61) r6 = *(u32 *)(r1 +0) | R0 !read_ok | processed 3 insns)"
        );
        let long = "insn\n".repeat(1000);
        let tail = log_tail(long.as_bytes());
        assert!(
            tail.starts_with(" (verifier: ...") && tail.len() < LOG_TAIL + 32,
            "{tail}"
        );
        assert!(!tail.contains('\n'));
    }

    #[test]
    fn a_directory_off_cgroup2_holds_no_programs_and_refuses_a_limit() {
        let dir = std::env::temp_dir();
        assert_eq!(buckets(&dir).unwrap(), [None, None]);
        let l = Limits {
            net_tx: Some(NetRate::with_default_burst(2 << 20)),
            ..Limits::default()
        };
        let mut out = Vec::new();
        apply(&dir, &l, &mut out);
        let err = out[0].result.as_ref().unwrap_err();
        assert_eq!(err.kind, CgroupErrorKind::Hierarchy);
        assert!(
            err.to_string().contains("net_tx: not a cgroup v2 group"),
            "{err}"
        );
        let mut out = Vec::new();
        reset(&dir, &Limits::default(), &mut out);
        assert!(out.is_empty());
    }
}

#[cfg(test)]
mod host_tests;
