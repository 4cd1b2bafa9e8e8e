//! Unit tests of the senders' table: nonce order, admission, the pinned
//! namespace, rates, the stall latch and eviction.

use super::super::frame::PAYLOAD_LEN;
use super::*;

const S: u64 = 1_000_000_000;

fn frame(pid: u32, nonce: u64) -> Frame {
    Frame {
        status: Status::Ok,
        pid,
        nonce,
        timestamp_ns: 0,
        payload: [0; PAYLOAD_LEN],
    }
}

fn key(pid: u32) -> ProcKey {
    ProcKey {
        pid,
        start_ticks: 100 + u64::from(pid),
    }
}

fn admit(timeout_ns: u64) -> Option<Admission> {
    Some(Admission {
        rule: None,
        timeout_ns,
        by_uid: false,
    })
}

fn admit_uid(timeout_ns: u64) -> Option<Admission> {
    Some(Admission {
        rule: None,
        timeout_ns,
        by_uid: true,
    })
}

fn o(key: ProcKey, ns: u64) -> Origin {
    Origin {
        key,
        uid: 0,
        ns,
        proc_ino: 1000 + u64::from(key.pid),
    }
}

fn beats(cap: usize) -> Beats {
    let rates = Rates {
        per_pid: 10,
        global: 1000,
    };
    Beats::new(cap, rates, 0)
}

#[test]
fn replays_and_out_of_order_nonces_are_refused_and_counted() {
    let mut b = beats(8);
    let k = key(10);
    assert!(b.beat(o(k, 1), &frame(10, 5), admit(S), 0).unwrap().new);
    assert_eq!(b.beat(o(k, 1), &frame(10, 5), None, 1), Err(Reject::Replay));
    assert_eq!(
        b.beat(o(k, 1), &frame(10, 4), None, 2),
        Err(Reject::OutOfOrder)
    );
    assert!(b.beat(o(k, 1), &frame(10, 7), None, 3).is_ok());
    assert_eq!(b.stats.rejected(Reject::Replay), 1);
    assert_eq!(b.stats.rejected(Reject::OutOfOrder), 1);
    assert_eq!(b.stats.accepted, 2);
    // A wrap stays in order.
    let w = key(11);
    b.beat(o(w, 1), &frame(11, u64::MAX), admit(S), 4).unwrap();
    assert!(b.beat(o(w, 1), &frame(11, 0), None, 5).is_ok());
    assert_eq!(
        b.beat(o(w, 1), &frame(11, u64::MAX), None, 6),
        Err(Reject::OutOfOrder)
    );
}

#[test]
fn pinned_namespace_and_admission() {
    let mut b = beats(8);
    let k = key(12);
    assert_eq!(
        b.beat(o(k, 7), &frame(12, 1), None, 0),
        Err(Reject::NotAllowed)
    );
    b.beat(o(k, 7), &frame(12, 1), admit_uid(0), 0).unwrap();
    assert_eq!(
        b.beat(o(k, 8), &frame(12, 2), None, 1),
        Err(Reject::Namespace)
    );
    assert_eq!(b.stats.accepted_by_uid, 1);
    assert_eq!(b.stats.rejected(Reject::NotAllowed), 1);
    assert_eq!(b.stats.rejected(Reject::Namespace), 1);
    // The same pid with another start time is a new sender.
    let recycled = ProcKey {
        pid: 12,
        start_ticks: 999,
    };
    assert!(!b.knows(&recycled));
    assert_eq!(
        b.beat(o(recycled, 8), &frame(12, 1), None, 2),
        Err(Reject::NotAllowed)
    );
}

#[test]
fn rates_per_sender_and_global() {
    let mut b = beats(8);
    let k = key(13);
    for n in 1..=10 {
        b.beat(o(k, 1), &frame(13, n), admit(0), 0).unwrap();
    }
    assert_eq!(
        b.beat(o(k, 1), &frame(13, 11), None, 0),
        Err(Reject::RatePid)
    );
    // A tenth of a second refills one beat at 10/s.
    assert!(b.beat(o(k, 1), &frame(13, 12), None, S / 10).is_ok());
    let mut g = Beats::new(
        4,
        Rates {
            per_pid: 10,
            global: 2,
        },
        0,
    );
    assert!(g.take_global(0).is_ok());
    assert!(g.take_global(0).is_ok());
    assert_eq!(g.take_global(0), Err(Reject::RateGlobal));
    assert!(g.take_global(S).is_ok());
    assert_eq!(g.stats.rejected(Reject::RateGlobal), 1);
}

#[test]
fn one_stall_per_silence_run_then_resumed() {
    let mut b = beats(8);
    let k = key(14);
    let mut out = Vec::with_capacity(8);
    b.beat(o(k, 1), &frame(14, 1), admit(S), 0).unwrap();
    assert_eq!(b.next_due_ns(), Some(S));
    b.check(S - 1, |_| true, &mut out);
    assert!(out.is_empty());
    b.check(S + 5, |_| true, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, k);
    assert_eq!(out[0].silent_ns, S + 5);
    for t in 2..10 {
        b.check(t * S, |_| true, &mut out);
    }
    assert_eq!(out.len(), 1, "exactly one stall per silence run");
    assert_eq!(b.stalled(), 1);
    let a = b.beat(o(k, 1), &frame(14, 2), None, 10 * S).unwrap();
    assert_eq!(a.resumed_after_ns, Some(10 * S));
    b.check(11 * S + 1, |_| true, &mut out);
    assert_eq!(out.len(), 2, "a new silence run stalls again");
    assert_eq!((b.stats.stalls, b.stats.resumes), (2, 1));
}

#[test]
fn ended_and_stopping_senders_do_not_stall() {
    let mut b = beats(8);
    let mut out = Vec::with_capacity(8);
    b.beat(o(key(1), 1), &frame(1, 1), admit(S), 0).unwrap();
    let mut stopping = frame(2, 1);
    stopping.status = Status::Stopping;
    b.beat(o(key(2), 1), &stopping, admit(S), 0).unwrap();
    b.check(2 * S, |k| k.pid != 1, &mut out);
    assert!(out.is_empty());
    assert_eq!(b.stats.ended, 1);
}

#[test]
fn full_table_evicts_ended_or_silent_never_active() {
    let mut b = beats(2);
    b.beat(o(key(1), 1), &frame(1, 1), admit(0), 0).unwrap();
    b.beat(o(key(2), 1), &frame(2, 1), admit(0), 0).unwrap();
    assert_eq!(
        b.beat(o(key(3), 1), &frame(3, 1), admit(0), S),
        Err(Reject::TableFull)
    );
    b.ended(&key(1));
    assert!(b.beat(o(key(3), 1), &frame(3, 1), admit(0), S).is_ok());
    assert!(!b.knows(&key(1)));
    // Key 2 is silent long enough, key 3 beat just now.
    let late = EVICT_SILENT_NS + S / 2;
    b.beat(o(key(3), 1), &frame(3, 2), None, late).unwrap();
    assert!(b.beat(o(key(4), 1), &frame(4, 1), admit(0), late).is_ok());
    assert!(b.knows(&key(3)) && !b.knows(&key(2)));
    assert_eq!(b.stats.evicted, 2);
    assert_eq!(b.stats.rejected(Reject::TableFull), 1);
}

#[test]
fn a_sender_gone_unseen_frees_its_slot_a_live_one_never_does() {
    let mut b = beats(2);
    b.beat(o(key(1), 1), &frame(1, 1), admit_uid(0), 0).unwrap();
    b.beat(o(key(2), 1), &frame(2, 1), admit_uid(0), 0).unwrap();
    assert!(b.is_full());
    // Both still run (their /proc inodes are the ones they beat from).
    let running = |pid: u32| Some(1000 + u64::from(pid));
    assert!(!b.evict_gone(running));
    assert!(b.knows(&key(1)) && b.knows(&key(2)));
    // Pid 1's process is gone: /proc/1 is another process's now.
    assert!(b.evict_gone(|pid| if pid == 1 { Some(7) } else { running(pid) }));
    assert!(!b.knows(&key(1)) && b.knows(&key(2)));
    assert!(b.beat(o(key(3), 1), &frame(3, 1), admit_uid(0), S).is_ok());
}
