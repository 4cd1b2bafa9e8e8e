//! The bpf(2) commands cgroup bandwidth limits need.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, retry};

// ---------------------------------------------------------------------------
// ---- bpf(2)
//
// The few bpf(2) commands cgroup bandwidth limits need. Each command's
// attribute block is a `#[repr(C)]` struct laid out as the kernel's
// `union bpf_attr` member for that command; the size passed is the
// struct's, so a kernel that knows more fields sees them as zero.

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
/// Object names (programs, maps) hold at most 15 bytes and a NUL.
pub const BPF_OBJ_NAME_LEN: usize = 16;
/// The statfs f_type of a cgroup v2 file system.
const CGROUP2_SUPER_MAGIC: libc::c_long = 0x6367_7270;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; BPF_OBJ_NAME_LEN],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; BPF_OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of the kernel's `struct bpf_prog_info`, up to the name.
#[repr(C)]
#[derive(Default)]
struct ProgInfoRaw {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; BPF_OBJ_NAME_LEN],
}

/// The head of the kernel's `struct bpf_map_info`, up to the name.
#[repr(C)]
#[derive(Default)]
struct MapInfoRaw {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; BPF_OBJ_NAME_LEN],
}

/// What the kernel says about a loaded program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgInfo {
    pub id: u32,
    pub prog_type: u32,
    /// The name given at load, without the trailing NULs.
    pub name: Vec<u8>,
    /// The maps the program uses (at most 8 are listed).
    pub map_ids: Vec<u32>,
}

/// What the kernel says about a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfMapInfo {
    pub id: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub name: Vec<u8>,
}

/// Runs one bpf(2) command on `attr`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_int> {
    retry(|| {
        // SAFETY: `attr` is a live, writable `#[repr(C)]` block of exactly
        // the size passed, laid out as the kernel's attribute for `cmd`;
        // every pointer inside it was set by the calling wrapper to memory
        // that outlives this call and is as large as the sizes beside it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                (attr as *mut T).cast::<libc::c_void>(),
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        cvt(r as libc::c_int)
    })
}

fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: the command returns a new fd owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn obj_name(name: &[u8]) -> [u8; BPF_OBJ_NAME_LEN] {
    let mut out = [0u8; BPF_OBJ_NAME_LEN];
    let n = name.len().min(BPF_OBJ_NAME_LEN - 1);
    out[..n].copy_from_slice(&name[..n]);
    out
}

fn name_bytes(raw: &[u8; BPF_OBJ_NAME_LEN]) -> Vec<u8> {
    raw.iter().copied().take_while(|&b| b != 0).collect()
}

/// Creates a map; `name` is cut to 15 bytes.
pub fn bpf_map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &[u8],
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name: obj_name(name),
        ..MapCreateAttr::default()
    };
    bpf_fd(BPF_MAP_CREATE, &mut attr)
}

/// Checks that `key` and `value` are exactly the map's sizes, so the
/// kernel reads and writes only inside them.
fn check_elem(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let info = bpf_map_info(map)?;
    if key.len() != info.key_size as usize || value.len() != info.value_size as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "map {} holds {}-byte keys and {}-byte values, not {} and {}",
                info.id,
                info.key_size,
                info.value_size,
                key.len(),
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Copies the value at `key` into `value`; both must be the map's sizes.
pub fn bpf_map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    check_elem(map, key, value)?;
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..MapElemAttr::default()
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(|_| ())
}

/// Writes `value` at `key` (flags 0: create or replace).
pub fn bpf_map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    check_elem(map, key, value)?;
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..MapElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Loads a program of `insns` (8-byte instructions as the kernel reads
/// them). The verifier's log goes to `log` (level 1 when `log` is not
/// empty); it is NUL-terminated text when the load fails.
pub fn bpf_prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[u64],
    license: &CStr,
    name: &[u8],
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len().min(u32::MAX as usize >> 8) as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: obj_name(name),
        expected_attach_type,
        ..ProgLoadAttr::default()
    };
    bpf_fd(BPF_PROG_LOAD, &mut attr)
}

/// Attaches `prog` to the cgroup open as `cgroup` for `attach_type`.
pub fn bpf_prog_attach(
    cgroup: &OwnedFd,
    prog: &OwnedFd,
    attach_type: u32,
    flags: u32,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        ..AttachAttr::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

/// Detaches `prog` from the cgroup open as `cgroup`.
pub fn bpf_prog_detach(cgroup: &OwnedFd, prog: &OwnedFd, attach_type: u32) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..AttachAttr::default()
    };
    bpf(BPF_PROG_DETACH, &mut attr).map(|_| ())
}

/// The ids of the programs attached to the cgroup itself (not inherited)
/// for `attach_type`, into `ids`. Returns how many there are, which may
/// exceed `ids.len()` (the kernel then fails with ENOSPC after filling
/// `ids`; that is reported as the count, with `ids` full).
pub fn bpf_prog_query(cgroup: &OwnedFd, attach_type: u32, ids: &mut [u32]) -> io::Result<usize> {
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..QueryAttr::default()
    };
    match bpf(BPF_PROG_QUERY, &mut attr) {
        Ok(_) => Ok(attr.prog_cnt as usize),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Ok(attr.prog_cnt as usize),
        Err(e) => Err(e),
    }
}

/// An fd for the loaded program with `id`.
pub fn bpf_prog_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        ..GetFdByIdAttr::default()
    };
    bpf_fd(BPF_PROG_GET_FD_BY_ID, &mut attr)
}

/// An fd for the map with `id`.
pub fn bpf_map_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        ..GetFdByIdAttr::default()
    };
    bpf_fd(BPF_MAP_GET_FD_BY_ID, &mut attr)
}

fn obj_info<T>(fd: &OwnedFd, info: &mut T) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<T>() as u32,
        info: (info as *mut T) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// The id, type, name and map ids of a loaded program.
pub fn bpf_prog_info(prog: &OwnedFd) -> io::Result<BpfProgInfo> {
    let mut ids = [0u32; 8];
    let mut raw = ProgInfoRaw {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..ProgInfoRaw::default()
    };
    obj_info(prog, &mut raw)?;
    let n = (raw.nr_map_ids as usize).min(ids.len());
    Ok(BpfProgInfo {
        id: raw.id,
        prog_type: raw.prog_type,
        name: name_bytes(&raw.name),
        map_ids: ids[..n].to_vec(),
    })
}

/// The id, type, sizes and name of a map.
pub fn bpf_map_info(map: &OwnedFd) -> io::Result<BpfMapInfo> {
    let mut raw = MapInfoRaw::default();
    obj_info(map, &mut raw)?;
    Ok(BpfMapInfo {
        id: raw.id,
        map_type: raw.map_type,
        key_size: raw.key_size,
        value_size: raw.value_size,
        max_entries: raw.max_entries,
        name: name_bytes(&raw.name),
    })
}

/// True when `dir` is on a cgroup v2 file system.
pub fn is_cgroup2(dir: &CStr) -> io::Result<bool> {
    // SAFETY: an all-zero statfs is a valid value of a plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is NUL-terminated and `st` is a valid, writable statfs.
    cvt(unsafe { libc::statfs(dir.as_ptr(), &mut st) })?;
    Ok(st.f_type as libc::c_long == CGROUP2_SUPER_MAGIC)
}
