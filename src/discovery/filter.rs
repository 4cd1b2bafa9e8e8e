//! The classic BPF program attached to the proc connector socket: the
//! kernel runs it on every datagram and drops, before it is queued for
//! reeve, each process event discovery never acts on.
//!
//! Invariant: the program drops only what [`super::Discovery::handle_event`]
//! ignores, and keeps anything it does not recognise. It keeps exec events,
//! the subscription acknowledgement, fork events of a new process
//! (child pid = child tgid), exit and comm events of a process's leader
//! (pid = tgid), the forks and exits further narrowed, when [`build`] is
//! given the tracked set, to a tracked parent's forks and a tracked
//! process's exits (`handle_event` ignores every other: `live_key` is
//! `None`); `handle_event` acts on nothing else: a new thread's fork,
//! a non-leader thread's exit or comm, and the uid, gid, sid, ptrace and
//! coredump events (and any kind a later kernel adds) reach its `_ => {}`
//! arm. Everything that is not exactly one proc-connector message of the
//! size the kernel sends (netlink errors, overruns, a datagram holding
//! several messages, a short or foreign message, or every message of a
//! kernel whose event size differs) is kept, so the parser still sees it.
//!
//! Classic BPF loads words in network byte order, while the connector
//! writes host order: every constant is compared as the bytes the kernel
//! writes, read big-endian ([`wire32`]), and pid = tgid compares two loads
//! read the same way.

use super::netlink::{
    CN_IDX_PROC, CN_MSG_LEN, CN_VAL_PROC, EVENT_HDR_LEN, NLMSG_HDRLEN, PROC_EVENT_COMM,
    PROC_EVENT_EXEC, PROC_EVENT_EXIT, PROC_EVENT_FORK, PROC_EVENT_NONE,
};

// Opcodes: class | size | mode (loads) or class | op | source (jumps).
/// BPF_LD | BPF_W | BPF_ABS
const LD_W_ABS: u16 = 0x20;
/// BPF_LD | BPF_H | BPF_ABS
const LD_H_ABS: u16 = 0x28;
/// BPF_LD | BPF_W | BPF_LEN
const LD_W_LEN: u16 = 0x80;
/// BPF_JMP | BPF_JEQ | BPF_K
const JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JEQ | BPF_X
const JEQ_X: u16 = 0x1d;
/// BPF_RET | BPF_K
const RET_K: u16 = 0x06;
/// BPF_MISC | BPF_TAX
const TAX: u16 = 0x07;

/// NLMSG_DONE: the type the connector gives every event message.
const NLMSG_DONE: u16 = 3;
/// Where the event's fields start in the datagram.
const EVENT: u32 = (NLMSG_HDRLEN + CN_MSG_LEN) as u32;
const DATA: u32 = EVENT + EVENT_HDR_LEN as u32;
/// The one datagram size the program judges: a netlink header, a cn_msg
/// and a whole `struct proc_event` (its header and a 24-byte union, the
/// size of its largest member, the comm event), which the kernel sends for
/// every kind. Every load lies inside it.
pub const EVENT_DATAGRAM: u32 = DATA + 24;

const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

/// A 32-bit host-order value as a classic BPF word load reads it.
const fn wire32(v: u32) -> u32 {
    u32::from_be_bytes(v.to_ne_bytes())
}

const fn wire16(v: u16) -> u32 {
    u16::from_be_bytes(v.to_ne_bytes()) as u32
}

const fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// BPF_JMP | BPF_JGE | BPF_K
const JGE_K: u16 = 0x35;
/// BPF_JMP | BPF_JA: an unconditional forward jump, 32-bit offset in k
const JA: u16 = 0x05;

/// Instructions before the membership test.
pub const HEAD_LEN: usize = 33;
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
pub const MAX_LEN: usize = 4096;
/// The most tracked processes the program names. The membership test
/// costs at most 2.75 instructions a tgid, so this many fit well under
/// [`MAX_LEN`]; with more, forks and exits of every process leader are
/// kept, as without a tracked set.
pub const MAX_FILTERED: usize = 1024;
/// Keys a leaf of the membership tree compares one by one.
const LEAF: usize = 4;

/// The program that keeps every leader's forks and exits: the filter of a
/// socket before discovery knows what it tracks.
pub fn program() -> Vec<libc::sock_filter> {
    let mut out = Vec::with_capacity(HEAD_LEN + 1);
    build(None, &mut out);
    out
}

/// Writes into `out` (cleared first) the filter for a tracked set:
/// `tracked` holds the tgids of the live tracked processes as [`wire32`]
/// values, sorted, without duplicates ([`sort_for_filter`]). A fork is kept
/// when its parent's tgid is in the set, an exit when its tgid is;
/// `None` (or a set larger than [`MAX_FILTERED`]) keeps them all.
/// Jump offsets count from the next instruction, and only forward, as
/// classic BPF requires.
pub fn build(tracked: Option<&[u32]>, out: &mut Vec<libc::sock_filter>) {
    out.clear();
    out.extend_from_slice(&[
        /* 0 */ ins(LD_W_LEN, 0, 0, 0),
        /* 1 */ ins(JEQ_K, 0, 23, EVENT_DATAGRAM),
        /* 2 */ ins(LD_W_ABS, 0, 0, 0),
        /* 3 */ ins(JEQ_K, 0, 21, wire32(EVENT_DATAGRAM)),
        /* 4 */ ins(LD_H_ABS, 0, 0, 4),
        /* 5 */ ins(JEQ_K, 0, 19, wire16(NLMSG_DONE)),
        /* 6 */ ins(LD_W_ABS, 0, 0, NLMSG_HDRLEN as u32),
        /* 7 */ ins(JEQ_K, 0, 17, wire32(CN_IDX_PROC)),
        /* 8 */ ins(LD_W_ABS, 0, 0, NLMSG_HDRLEN as u32 + 4),
        /* 9 */ ins(JEQ_K, 0, 15, wire32(CN_VAL_PROC)),
        /* 10 */ ins(LD_W_ABS, 0, 0, EVENT),
        /* 11 */ ins(JEQ_K, 13, 0, wire32(PROC_EVENT_EXEC)),
        /* 12 */ ins(JEQ_K, 12, 0, wire32(PROC_EVENT_NONE)),
        /* 13 */ ins(JEQ_K, 2, 0, wire32(PROC_EVENT_FORK)),
        /* 14 */ ins(JEQ_K, 11, 0, wire32(PROC_EVENT_EXIT)),
        /* 15 */ ins(JEQ_K, 4, 8, wire32(PROC_EVENT_COMM)),
        // fork: child_pid (DATA + 8) = child_tgid (DATA + 12)? Then 32.
        /* 16 */
        ins(LD_W_ABS, 0, 0, DATA + 12),
        /* 17 */ ins(TAX, 0, 0, 0),
        /* 18 */ ins(LD_W_ABS, 0, 0, DATA + 8),
        /* 19 */ ins(JEQ_X, 12, 4, 0),
        // comm: pid (DATA) = tgid (DATA + 4)?
        /* 20 */
        ins(LD_W_ABS, 0, 0, DATA + 4),
        /* 21 */ ins(TAX, 0, 0, 0),
        /* 22 */ ins(LD_W_ABS, 0, 0, DATA),
        /* 23 */ ins(JEQ_X, 1, 0, 0),
        /* 24 */ ins(RET_K, 0, 0, DROP),
        /* 25 */ ins(RET_K, 0, 0, ACCEPT),
        // exit: pid (DATA) = tgid (DATA + 4)? Then A holds the tgid: 33.
        /* 26 */
        ins(LD_W_ABS, 0, 0, DATA + 4),
        /* 27 */ ins(TAX, 0, 0, 0),
        /* 28 */ ins(LD_W_ABS, 0, 0, DATA),
        /* 29 */ ins(JEQ_X, 1, 0, 0),
        /* 30 */ ins(RET_K, 0, 0, DROP),
        /* 31 */ ins(JA, 0, 0, 1),
        // fork of a process: A = the parent's tgid (DATA + 4).
        /* 32 */
        ins(LD_W_ABS, 0, 0, DATA + 4),
    ]);
    match tracked {
        Some(keys) if keys.len() <= MAX_FILTERED => membership(keys, out),
        _ => out.push(ins(RET_K, 0, 0, ACCEPT)),
    }
}

/// Sorts `tgids` into the order [`build`] needs: the values a word load
/// reads, ascending, once each.
pub fn sort_for_filter(tgids: &mut [u32]) -> usize {
    for t in tgids.iter_mut() {
        *t = wire32(*t);
    }
    tgids.sort_unstable();
    let mut n = 0;
    for i in 0..tgids.len() {
        if n == 0 || tgids[i] != tgids[n - 1] {
            tgids[n] = tgids[i];
            n += 1;
        }
    }
    n
}

/// A binary search over `keys` (sorted) on A: accept when A is one of
/// them, drop otherwise. An inner node is a `JGE` to its right half through
/// a `JA` (whose 32-bit offset reaches past a left half of any size; the
/// 8-bit offsets of conditional jumps could not); a leaf compares up to
/// [`LEAF`] keys and returns.
fn membership(keys: &[u32], out: &mut Vec<libc::sock_filter>) {
    if keys.len() <= LEAF {
        for &k in keys {
            out.push(ins(JEQ_K, 0, 1, k));
            out.push(ins(RET_K, 0, 0, ACCEPT));
        }
        out.push(ins(RET_K, 0, 0, DROP));
        return;
    }
    let (left, right) = keys.split_at(keys.len() / 2);
    out.push(ins(JGE_K, 0, 1, right[0]));
    let jump = out.len();
    out.push(ins(JA, 0, 0, 0));
    membership(left, out);
    out[jump].k = (out.len() - jump - 1) as u32;
    membership(right, out);
}

/// Runs a classic BPF program over `packet` as the kernel does for the
/// instructions [`program`] uses: loads are big-endian, a load past the end
/// returns 0 (drop). Returns the program's verdict.
#[cfg(test)]
pub(super) fn run(prog: &[libc::sock_filter], packet: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        let k = i.k as usize;
        match i.code {
            LD_W_LEN => a = packet.len() as u32,
            LD_W_ABS => match packet.get(k..k + 4) {
                Some(b) => a = u32::from_be_bytes(b.try_into().unwrap()),
                None => return 0,
            },
            LD_H_ABS => match packet.get(k..k + 2) {
                Some(b) => a = u32::from(u16::from_be_bytes(b.try_into().unwrap())),
                None => return 0,
            },
            TAX => x = a,
            RET_K => return i.k,
            JA => pc += k,
            JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
            JEQ_K | JEQ_X => {
                let taken = if i.code == JEQ_K { a == i.k } else { a == x };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            other => panic!("instruction {other:#x} is not interpreted"),
        }
    }
}

/// One proc connector datagram as the kernel builds it: `what`, then the
/// event's data words.
#[cfg(test)]
pub(super) fn datagram(what: u32, data: &[u32]) -> Vec<u8> {
    let mut ev = Vec::new();
    ev.extend_from_slice(&what.to_ne_bytes());
    ev.extend_from_slice(&0u32.to_ne_bytes());
    ev.extend_from_slice(&77u64.to_ne_bytes());
    for w in data {
        ev.extend_from_slice(&w.to_ne_bytes());
    }
    // The kernel sends the whole union whatever the kind.
    ev.resize(ev.len().max(EVENT_HDR_LEN + 24), 0);
    let mut cn = Vec::new();
    cn.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    cn.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    cn.extend_from_slice(&[0u8; 8]);
    cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
    cn.extend_from_slice(&0u16.to_ne_bytes());
    cn.extend_from_slice(&ev);
    let mut nl = Vec::new();
    nl.extend_from_slice(&((NLMSG_HDRLEN + cn.len()) as u32).to_ne_bytes());
    nl.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    nl.extend_from_slice(&[0u8; 10]);
    nl.extend_from_slice(&cn);
    nl
}

#[cfg(test)]
mod tests {
    use super::super::netlink::{self, ProcEvent, NLMSG_ERROR, NLMSG_OVERRUN};
    use super::*;

    const UID: u32 = 0x4;
    const GID: u32 = 0x40;
    const SID: u32 = 0x80;
    const PTRACE: u32 = 0x100;
    const COREDUMP: u32 = 0x4000_0000;

    fn kept(d: &[u8]) -> bool {
        run(&program(), d) == ACCEPT
    }

    /// The event kinds and shapes discovery acts on, from the parser's view
    /// of the same bytes: the filter agrees with it on every sample.
    fn discovery_acts_on(d: &[u8]) -> bool {
        match netlink::events(d).next() {
            Some(Ok(ev)) => match ev.kind {
                ProcEvent::Exec { .. } | ProcEvent::Ack { .. } => true,
                ProcEvent::Fork {
                    child_pid,
                    child_tgid,
                    ..
                } => child_pid == child_tgid,
                ProcEvent::Exit { pid, tgid, .. } | ProcEvent::Comm { pid, tgid, .. } => {
                    pid == tgid
                }
                ProcEvent::Other { .. } => false,
            },
            // Errors are reported by the parser: never dropped.
            _ => true,
        }
    }

    fn samples() -> Vec<(&'static str, Vec<u8>)> {
        let comm = |pid, tgid| {
            let mut w = vec![pid, tgid];
            w.extend_from_slice(&[u32::from_ne_bytes(*b"ffmp"), 0, 0, 0]);
            datagram(PROC_EVENT_COMM, &w)
        };
        vec![
            ("exec", datagram(PROC_EVENT_EXEC, &[10, 10])),
            ("exec of a thread", datagram(PROC_EVENT_EXEC, &[11, 10])),
            ("ack", datagram(PROC_EVENT_NONE, &[0])),
            ("fork", datagram(PROC_EVENT_FORK, &[1, 1, 20, 20])),
            ("new thread", datagram(PROC_EVENT_FORK, &[20, 20, 21, 20])),
            ("exit", datagram(PROC_EVENT_EXIT, &[30, 30, 0, 17, 1, 1])),
            (
                "thread exit",
                datagram(PROC_EVENT_EXIT, &[31, 30, 0, 0, 1, 1]),
            ),
            (
                "old exit format",
                datagram(PROC_EVENT_EXIT, &[30, 30, 0, 17]),
            ),
            ("comm", comm(40, 40)),
            ("thread comm", comm(41, 40)),
            ("uid", datagram(UID, &[5, 5, 0, 0])),
            ("gid", datagram(GID, &[5, 5, 0, 0])),
            ("sid", datagram(SID, &[5, 5])),
            ("ptrace", datagram(PTRACE, &[5, 5, 6, 6])),
            ("coredump", datagram(COREDUMP, &[5, 5, 1, 1])),
            ("unknown kind", datagram(0x0100_0000, &[5, 5, 0, 0])),
            // pid = tgid byte-swapped must not read as equal to anything else.
            (
                "swapped pids",
                datagram(PROC_EVENT_EXIT, &[0x0100_0000, 1, 0, 0]),
            ),
        ]
    }

    #[test]
    fn drops_exactly_what_discovery_ignores() {
        let mut dropped = Vec::new();
        for (name, d) in samples() {
            assert_eq!(kept(&d), discovery_acts_on(&d), "{name}");
            if !kept(&d) {
                dropped.push(name);
            }
        }
        assert_eq!(
            dropped,
            [
                "new thread",
                "thread exit",
                "thread comm",
                "uid",
                "gid",
                "sid",
                "ptrace",
                "coredump",
                "unknown kind",
                "swapped pids"
            ]
        );
    }

    #[test]
    fn keeps_what_the_parser_must_report() {
        let mut overrun = datagram(PROC_EVENT_EXEC, &[1, 1]);
        overrun[4..6].copy_from_slice(&NLMSG_OVERRUN.to_ne_bytes());
        let mut error = vec![0u8; 36];
        error[0..4].copy_from_slice(&36u32.to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        let mut foreign = datagram(UID, &[5, 5, 0, 0]);
        foreign[16..20].copy_from_slice(&7u32.to_ne_bytes());
        let mut two = datagram(UID, &[5, 5, 0, 0]);
        two.extend(datagram(PROC_EVENT_EXEC, &[9, 9]));
        let uid = datagram(UID, &[5, 5, 0, 0]);
        for (name, d) in [
            ("overrun", overrun),
            ("netlink error", error),
            ("foreign connector", foreign),
            ("two messages", two),
            ("empty", Vec::new()),
        ] {
            assert!(kept(&d), "{name}");
        }
        assert_eq!(uid.len(), EVENT_DATAGRAM as usize);
        assert!(!kept(&uid));
        for cut in 0..uid.len() {
            assert!(kept(&uid[..cut]), "cut at {cut}");
        }
        let mut longer = uid.clone();
        longer.extend_from_slice(&[0; 4]);
        assert!(kept(&longer), "a size the kernel does not send");
        let mut lying = uid.clone();
        lying[0..4].copy_from_slice(&60u32.to_ne_bytes());
        assert!(kept(&lying), "a header length that disagrees");
    }

    /// What discovery acts on when it tracks `tracked`: a fork only when
    /// the parent is tracked, an exit only when the process is.
    fn acts_on_with(d: &[u8], tracked: &[u32]) -> bool {
        match netlink::events(d).next() {
            Some(Ok(ev)) => match ev.kind {
                ProcEvent::Fork { parent_tgid, .. } => {
                    discovery_acts_on(d) && tracked.contains(&parent_tgid)
                }
                ProcEvent::Exit { tgid, .. } => discovery_acts_on(d) && tracked.contains(&tgid),
                _ => discovery_acts_on(d),
            },
            _ => true,
        }
    }

    fn filter_for(tracked: &[u32]) -> Vec<libc::sock_filter> {
        let mut keys = tracked.to_vec();
        let n = sort_for_filter(&mut keys);
        let mut out = Vec::with_capacity(MAX_LEN);
        build(Some(&keys[..n]), &mut out);
        out
    }

    #[test]
    fn a_tracked_set_drops_forks_and_exits_of_everyone_else() {
        // Sets of every size around the leaf and the limit, pids that
        // differ only in their byte order, and a pseudo-random spread.
        let mut seed = 0x9e37_79b9u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed % 4_194_304
        };
        for size in [0usize, 1, 2, 4, 5, 9, 64, 300, MAX_FILTERED - 2] {
            let mut tracked: Vec<u32> = (0..size).map(|_| next()).collect();
            tracked.extend([0x0100_0000, 1].iter().take(size.min(2)));
            let prog = filter_for(&tracked);
            assert!(prog.len() <= MAX_LEN, "{size}: {} instructions", prog.len());
            let mut probes: Vec<u32> = tracked.iter().take(200).copied().collect();
            probes.extend((0..200).map(|_| next()));
            probes.extend([0, 1, 2, 0x0100_0000, 0x0200_0000, u32::MAX]);
            for &p in &probes {
                let c = p.wrapping_add(1);
                for d in [
                    datagram(PROC_EVENT_FORK, &[p, p, c, c]),
                    datagram(PROC_EVENT_FORK, &[p, p, c, p]),
                    datagram(PROC_EVENT_EXIT, &[p, p, 0, 17, 1, 1]),
                    datagram(PROC_EVENT_EXIT, &[c, p, 0, 0, 1, 1]),
                    datagram(PROC_EVENT_EXEC, &[p, p]),
                ] {
                    assert_eq!(
                        run(&prog, &d) == ACCEPT,
                        acts_on_with(&d, &tracked),
                        "set of {size}, pid {p}"
                    );
                }
            }
            for (name, d) in samples() {
                assert_eq!(
                    run(&prog, &d) == ACCEPT,
                    acts_on_with(&d, &tracked),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn too_many_tracked_keeps_every_leader_fork_and_exit() {
        let tracked: Vec<u32> = (1..=MAX_FILTERED as u32 + 1).collect();
        let prog = filter_for(&tracked);
        let words = |p: &[libc::sock_filter]| -> Vec<(u16, u8, u8, u32)> {
            p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
        };
        assert_eq!(words(&prog), words(&program()));
        let d = datagram(PROC_EVENT_EXIT, &[9_999_999, 9_999_999, 0, 0, 1, 1]);
        assert_eq!(run(&prog, &d), ACCEPT);
    }

    #[test]
    fn the_kernel_accepts_the_largest_tracked_program() {
        let tracked: Vec<u32> = (0..MAX_FILTERED as u32).map(|i| i * 7 + 3).collect();
        let prog = filter_for(&tracked);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&sock)
            .try_clone_to_owned()
            .unwrap();
        crate::sys::attach_socket_filter(&fd, &prog).unwrap();
    }

    #[test]
    fn the_kernel_accepts_the_program() {
        // Attaching to any socket runs the kernel's checker (sk_chk_filter);
        // a UDP socket needs no privilege.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&sock)
            .try_clone_to_owned()
            .unwrap();
        crate::sys::attach_socket_filter(&fd, &program()).unwrap();
    }
}
