use super::*;
use std::collections::HashMap;

fn key(pid: u32, start_ticks: u64) -> ProcKey {
    ProcKey { pid, start_ticks }
}

/// The structural invariant: every occupied slot is indexed exactly once
/// within the probe budget of its home, no bucket points at a vacant
/// slot, the tombstone count is exact and below the rebuild threshold,
/// and the order lists the occupied slots, then the vacant ones, each once.
fn assert_consistent<K: TableKey, V>(table: &SlotTable<K, V>) {
    let mut indexed = vec![0u32; table.capacity()];
    let mut tombstones = 0;
    for (bucket, &cell) in table.index.iter().enumerate() {
        match cell {
            EMPTY => {}
            TOMBSTONE => tombstones += 1,
            slot => {
                let (k, _) = table
                    .entry(slot as usize)
                    .expect("bucket points at a vacant slot");
                assert!(table.distance(k.pid(), bucket) < table.probe_limit());
                indexed[slot as usize] += 1;
            }
        }
    }
    assert_eq!(tombstones, table.tombstones);
    assert!(table.tombstones <= table.index.len() / 4);
    let mut listed = vec![false; table.capacity()];
    for (at, &slot) in table.order[..table.slots.len()].iter().enumerate() {
        assert!(!listed[slot as usize], "slot {slot} twice in the order");
        listed[slot as usize] = true;
        assert_eq!(table.pos[slot as usize] as usize, at, "pos of slot {slot}");
        assert_eq!(
            table.slots[slot as usize].is_some(),
            at < table.len,
            "slot {slot} at {at}, len {}",
            table.len
        );
    }
    for (slot, entry) in table.slots.iter().enumerate() {
        assert_eq!(indexed[slot], u32::from(entry.is_some()), "slot {slot}");
    }
    assert_eq!(table.len(), table.iter().count());
}

/// The first `count` pids that share one home bucket in `table`.
fn colliding_pids<V>(table: &SlotTable<ProcKey, V>, home: usize, count: usize) -> Vec<u32> {
    (1..)
        .filter(|&pid| table.home(pid) == home)
        .take(count)
        .collect()
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn capacity_is_clamped_and_index_is_at_least_twice_as_large() {
    for (asked, capacity, buckets) in [
        (0, 1, 2),
        (1, 1, 2),
        (7, 7, 16),
        (64, 64, 128),
        (1000, 1000, 2048),
        (usize::MAX, MAX_CAPACITY, 2 * MAX_CAPACITY),
    ] {
        let table: SlotTable<u32, ()> = SlotTable::with_capacity(asked);
        assert_eq!(table.capacity(), capacity);
        assert_eq!(table.index.len(), buckets);
        assert!(table.is_empty());
        assert_consistent(&table);
    }
}

#[test]
fn churn_far_beyond_capacity_stays_exact() {
    let mut table = SlotTable::with_capacity(64);
    let window = 48u32;
    for i in 0..50_000u32 {
        assert_eq!(table.insert(key(i, u64::from(i) * 7), i), Ok(()));
        if i >= window {
            let old = i - window;
            assert_eq!(table.remove(&key(old, u64::from(old) * 7)), Some(old));
            assert_eq!(table.remove(&key(old, u64::from(old) * 7)), None);
        }
        if i % 997 == 0 {
            assert_consistent(&table);
        }
    }
    assert_eq!(table.len(), window as usize);
    for i in 50_000 - window..50_000 {
        assert_eq!(table.get(&key(i, u64::from(i) * 7)), Some(&i));
        assert!(!table.contains(&key(i, 0)), "start time must be compared");
    }
    assert!(!table.contains(&key(
        50_000 - window - 1,
        (50_000 - u64::from(window) - 1) * 7
    )));
    assert_consistent(&table);
    let stats = table.stats();
    assert!(stats.rebuilds > 0, "tombstones must have forced rebuilds");
    assert_eq!(
        (
            stats.refused_full,
            stats.refused_probe,
            stats.inconsistencies
        ),
        (0, 0, 0)
    );
}

#[test]
fn tombstone_is_reused_after_the_key_is_confirmed_absent() {
    let mut table = SlotTable::with_capacity(8);
    let home = table.home(1);
    let pids = colliding_pids(&table, home, 3);
    table.insert(key(pids[0], 1), "a").unwrap();
    table.insert(key(pids[1], 1), "b").unwrap();
    assert_ne!(table.index[home], EMPTY);
    assert_ne!(table.index[table.next(home)], EMPTY);

    assert_eq!(table.remove(&key(pids[0], 1)), Some("a"));
    assert_eq!(table.index[home], TOMBSTONE);
    assert_eq!(table.tombstones, 1);
    // The probe run continues past the tombstone.
    assert_eq!(table.get(&key(pids[1], 1)), Some(&"b"));
    assert_eq!(
        table.insert(key(pids[1], 1), "dup"),
        Err(Refusal::Duplicate)
    );
    assert_eq!(
        table.tombstones, 1,
        "a refused insert must not consume the tombstone"
    );

    table.insert(key(pids[2], 1), "c").unwrap();
    assert_eq!(table.tombstones, 0);
    let slot = table.index[home] as usize;
    assert_eq!(
        table.entry(slot).map(|(k, v)| (*k, *v)),
        Some((key(pids[2], 1), "c"))
    );
    assert_eq!(table.index[table.next(table.next(home))], EMPTY);
    assert_eq!(table.stats().rebuilds, 0);
    assert_consistent(&table);
}

#[test]
fn tombstones_beyond_a_quarter_of_the_index_trigger_a_rebuild() {
    let mut table = SlotTable::with_capacity(8);
    assert_eq!(table.index.len(), 16);
    for pid in 1..=8 {
        table.insert(pid, pid).unwrap();
    }
    for pid in 1..=4 {
        assert_eq!(table.remove(&pid), Some(pid));
    }
    assert_eq!((table.tombstones, table.stats().rebuilds), (4, 0));
    assert_eq!(table.remove(&5), Some(5));
    assert_eq!((table.tombstones, table.stats().rebuilds), (0, 1));
    for pid in 6..=8 {
        assert_eq!(table.get(&pid), Some(&pid));
    }
    assert_consistent(&table);
}

#[test]
fn probe_exhaustion_is_refused_counted_and_the_table_stays_usable() {
    let mut table = SlotTable::with_capacity(64);
    let home = table.home(1);
    let pids = colliding_pids(&table, home, PROBE_BUDGET + 1);
    for &pid in &pids[..PROBE_BUDGET] {
        assert_eq!(table.insert(key(pid, 1), pid), Ok(()));
    }
    let crowded = pids[PROBE_BUDGET];
    assert_eq!(
        table.insert(key(crowded, 1), crowded),
        Err(Refusal::ProbeExhausted)
    );
    // Same pid as a tracked entry, new start time: same home, same refusal.
    assert_eq!(
        table.insert(key(pids[0], 2), 0),
        Err(Refusal::ProbeExhausted)
    );
    let stats = table.stats();
    assert_eq!(
        (stats.refused_probe, stats.rebuilds),
        (2, 2),
        "rebuild once per refusal"
    );
    assert_eq!(stats.inconsistencies, 0);

    assert!(!table.contains(&key(crowded, 1)));
    for &pid in &pids[..PROBE_BUDGET] {
        assert_eq!(table.get(&key(pid, 1)), Some(&pid));
    }
    let elsewhere = (1..)
        .find(|&p| table.distance(p, home) >= 2 * PROBE_BUDGET)
        .unwrap();
    assert_eq!(table.insert(key(elsewhere, 1), elsewhere), Ok(()));
    assert_eq!(table.remove(&key(pids[3], 1)), Some(pids[3]));
    assert_eq!(table.insert(key(crowded, 1), crowded), Ok(()));
    assert_eq!(table.get(&key(crowded, 1)), Some(&crowded));
    assert_eq!(table.len(), PROBE_BUDGET + 1);
    assert_consistent(&table);
}

#[test]
fn rebuild_and_retry_places_what_linear_probing_could_not() {
    // Thirty pids homed two buckets on fill 2..=31; three pids homed at 0
    // then take 0, 1 and would need bucket 32, one past the budget.
    // Rebuilding nearest-home-first fits all 33 within the budget.
    let mut table = SlotTable::with_capacity(64);
    let near = colliding_pids(&table, 0, 3);
    let far = colliding_pids(&table, 2, 30);
    for &pid in far.iter().chain(&near) {
        assert_eq!(table.insert(key(pid, 9), pid), Ok(()));
    }
    let stats = table.stats();
    assert_eq!(
        (stats.rebuilds, stats.refused_probe, stats.inconsistencies),
        (1, 0, 0)
    );
    for &pid in far.iter().chain(&near) {
        assert_eq!(table.get(&key(pid, 9)), Some(&pid));
    }
    assert_consistent(&table);
}

#[test]
fn full_table_refuses_and_counts() {
    let mut table = SlotTable::with_capacity(4);
    for pid in 0..4 {
        table.insert(key(pid, 1), ()).unwrap();
    }
    assert_eq!(table.insert(key(4, 1), ()), Err(Refusal::Full));
    assert_eq!(table.insert(key(5, 1), ()), Err(Refusal::Full));
    assert_eq!(table.insert(key(2, 1), ()), Err(Refusal::Duplicate));
    assert_eq!(table.stats().refused_full, 2);
    assert_eq!((table.len(), table.capacity()), (4, 4));
    assert!(!table.contains(&key(4, 1)));
    table.remove(&key(0, 1)).unwrap();
    assert_eq!(table.insert(key(4, 1), ()), Ok(()));
    assert_eq!(table.stats().refused_full, 2);
    assert_consistent(&table);
}

#[test]
fn keys_sharing_a_pid_are_distinct_entries() {
    let mut table = SlotTable::with_capacity(16);
    for start in 1..=3 {
        table.insert(key(100, start), start * 10).unwrap();
    }
    table.insert(key(101, 1), 99).unwrap();
    for start in 1..=3 {
        assert_eq!(table.get(&key(100, start)), Some(&(start * 10)));
    }
    assert!(!table.contains(&key(100, 4)));
    assert_eq!(
        table.find_pid(100, |k, _| k.start_ticks == 2),
        Some(key(100, 2))
    );
    assert_eq!(table.find_pid(100, |_, v| *v == 30), Some(key(100, 3)));
    assert_eq!(
        table.find_pid(100, |_, v| *v == 99),
        None,
        "pid 101's value is not pid 100's"
    );
    assert_eq!(table.find_pid(102, |_, _| true), None);

    *table.get_mut(&key(100, 1)).unwrap() += 1;
    assert_eq!(table.remove(&key(100, 2)), Some(20));
    assert_eq!(table.get(&key(100, 1)), Some(&11));
    assert_eq!(table.get(&key(100, 3)), Some(&30));
    assert_eq!(table.find_pid(100, |k, _| k.start_ticks == 2), None);
    assert_consistent(&table);
}

#[test]
fn bare_pids_make_a_seen_set() {
    let mut seen: SlotTable<u32, ()> = SlotTable::with_capacity(100);
    for pid in (1..=200).step_by(2) {
        seen.insert(pid, ()).unwrap();
    }
    assert_eq!(seen.insert(201, ()), Err(Refusal::Full));
    assert!((1..=200).all(|pid| seen.contains(&pid) == (pid % 2 == 1)));
    seen.clear();
    assert!(seen.is_empty() && !seen.contains(&1));
    assert_eq!(seen.stats().refused_full, 1, "clear keeps the counters");
    assert_consistent(&seen);
}

#[test]
fn eviction_scan_is_bounded_and_resumes_at_its_cursor() {
    let mut table = SlotTable::with_capacity(8);
    for pid in 1..=8 {
        table.insert(key(pid, 0), pid).unwrap();
    }
    let order: Vec<u32> = table.iter().map(|(k, _)| k.pid).collect();
    assert_eq!(order, (1..=8).collect::<Vec<_>>(), "slots fill in order");

    let mut examined = 0;
    let mut only_seven = |k: &ProcKey, _: &u32| {
        examined += 1;
        k.pid == 7
    };
    assert_eq!(
        table.evict_one(4, &mut only_seven),
        None,
        "7 lies beyond the first 4 slots"
    );
    assert_eq!(table.evict_one(4, &mut only_seven), Some((key(7, 0), 7)));
    assert_eq!(examined, 4 + 3);
    assert!(!table.contains(&key(7, 0)));

    // The cursor now points at slot 7 (pid 8); the scan wraps to slot 0.
    let mut seen = Vec::new();
    let evicted = table.evict_one(4, |k, _| {
        seen.push(k.pid);
        k.pid == 1
    });
    assert_eq!(evicted, Some((key(1, 0), 1)));
    assert_eq!(seen, [8, 1]);
    assert_eq!(table.stats().evictions, 2);
    assert_consistent(&table);
}

#[test]
fn eviction_examines_each_slot_at_most_once_per_call() {
    let mut table = SlotTable::with_capacity(8);
    for pid in 1..=5 {
        table.insert(pid, ()).unwrap();
    }
    let mut examined = 0;
    assert_eq!(
        table.evict_one(1_000, |_, _| {
            examined += 1;
            false
        }),
        None
    );
    assert_eq!(examined, 5);
    assert_eq!(table.evict_one(0, |_, _| true), None);
    assert_eq!(table.evict_one(8, |&pid, _| pid == 3), Some((3, ())));
    assert_eq!((table.len(), table.stats().evictions), (4, 1));
}

#[test]
fn retain_removes_what_it_rejects_and_lets_the_caller_record_it() {
    let mut table = SlotTable::with_capacity(64);
    for pid in 0..50 {
        table.insert(key(pid, 5), pid * 10).unwrap();
    }
    let mut gone = Vec::new();
    table.retain(|k, v| {
        if k.pid % 3 == 0 {
            gone.push((*k, *v));
            false
        } else {
            *v += 1;
            true
        }
    });
    let expected: Vec<_> = (0..50)
        .filter(|p| p % 3 == 0)
        .map(|p| (key(p, 5), p * 10))
        .collect();
    // Entries are visited in the table's order, not by pid.
    gone.sort_by_key(|(k, _)| k.pid);
    assert_eq!(gone, expected);
    assert_eq!(table.len(), 50 - expected.len());
    for pid in 0..50 {
        let want = (pid % 3 != 0).then_some(pid * 10 + 1);
        assert_eq!(table.get(&key(pid, 5)).copied(), want);
    }
    assert_consistent(&table);

    table.retain(|_, _| false);
    assert!(table.is_empty() && table.iter().next().is_none());
    assert!(
        table.stats().rebuilds > 0,
        "mass removal must compact the index"
    );
    assert_consistent(&table);
}

#[test]
fn iter_mut_updates_values_in_place() {
    let mut table = SlotTable::with_capacity(8);
    for pid in 1..=3 {
        table.insert(pid, pid).unwrap();
    }
    table.iter_mut().for_each(|(pid, v)| *v += *pid * 100);
    let mut all: Vec<_> = table.iter().map(|(k, v)| (*k, *v)).collect();
    all.sort_unstable();
    assert_eq!(all, [(1, 101), (2, 202), (3, 303)]);
}

#[test]
fn bucket_pointing_at_a_vacant_slot_is_counted_and_repaired() {
    let mut table = SlotTable::with_capacity(8);
    table.insert(key(5, 1), 'a').unwrap();
    let slot = table.index[table.home(5)] as usize;
    table.slots[slot] = None;

    assert_eq!(table.get(&key(5, 1)), None);
    assert_eq!(table.stats().inconsistencies, 1);
    let rebuilds = table.stats().rebuilds;
    assert_eq!(table.insert(key(6, 1), 'b'), Ok(()));
    assert_eq!(table.stats().inconsistencies, 1, "counted once");
    assert_eq!(table.stats().rebuilds, rebuilds + 1);
    assert_eq!(table.len(), 1);
    assert_consistent(&table);
}

#[test]
fn bucket_pointing_at_a_foreign_slot_is_counted_and_repaired() {
    let mut table = SlotTable::with_capacity(64);
    let a = 1;
    let b = (2..)
        .find(|&p| table.distance(p, table.home(a)) >= 64)
        .unwrap();
    table.insert(key(a, 1), "a").unwrap();
    table.insert(key(b, 1), "b").unwrap();
    let home_a = table.home(a);
    table.index[home_a] = table.index[table.home(b)];

    // A shared lookup answers from the slots, and counts.
    assert_eq!(table.get(&key(a, 1)), Some(&"a"));
    assert_eq!(table.find_pid(a, |_, _| true), Some(key(a, 1)));
    assert_eq!(table.stats().inconsistencies, 2);
    // A mutating call repairs first, then acts.
    assert_eq!(table.remove(&key(a, 1)), Some("a"));
    assert_eq!(table.get(&key(b, 1)), Some(&"b"));
    assert_eq!(table.stats().inconsistencies, 2);
    assert_consistent(&table);

    table.index[table.home(b)] = 1_000;
    assert_eq!(table.get_mut(&key(b, 1)), Some(&mut "b"));
    assert_eq!(table.stats().inconsistencies, 3);
    assert_consistent(&table);
}

#[test]
fn order_naming_an_occupied_slot_as_vacant_never_overwrites_it() {
    let mut table = SlotTable::with_capacity(4);
    table.insert(key(1, 1), "kept").unwrap();
    table.insert(key(3, 1), "gone").unwrap();
    table.remove(&key(3, 1));
    let occupied = table.index[table.home(1)];
    table.order[table.len] = occupied;
    assert_eq!(table.insert(key(2, 1), "new"), Ok(()));
    assert_eq!(table.get(&key(1, 1)), Some(&"kept"));
    assert_eq!(table.get(&key(2, 1)), Some(&"new"));
    assert_eq!(table.stats().inconsistencies, 1);
    assert_consistent(&table);
}

#[test]
fn unindexed_entry_is_still_evicted_and_the_index_repaired() {
    let mut table = SlotTable::with_capacity(4);
    table.insert(key(1, 1), 1).unwrap();
    table.insert(key(2, 1), 2).unwrap();
    let bucket = table.home(1);
    table.index[bucket] = EMPTY;
    assert_eq!(table.evict_one(4, |k, _| k.pid == 1), Some((key(1, 1), 1)));
    assert_eq!(table.stats().inconsistencies, 1);
    assert_eq!(table.get(&key(2, 1)), Some(&2));
    assert_eq!(table.len(), 1);
    assert_consistent(&table);
}

#[test]
fn random_operations_match_a_hashmap_model() {
    for capacity in [1usize, 7, 64, 1000] {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ capacity as u64);
        let mut table = SlotTable::with_capacity(capacity);
        let mut model: HashMap<ProcKey, u64> = HashMap::new();
        let (mut fulls, mut exhausted) = (0, 0);
        let pids = capacity as u64 + 2;
        for op in 0..200_000u64 {
            let k = key(rng.below(pids) as u32, rng.below(3));
            match rng.below(1000) {
                0..=449 => match table.insert(k, op) {
                    Ok(()) => {
                        assert!(model.len() < capacity && model.insert(k, op).is_none());
                    }
                    Err(Refusal::Duplicate) => assert!(model.contains_key(&k)),
                    Err(Refusal::Full) => {
                        assert!(model.len() == capacity && !model.contains_key(&k));
                        fulls += 1;
                    }
                    Err(Refusal::ProbeExhausted) => {
                        assert!(model.len() < capacity && !model.contains_key(&k));
                        exhausted += 1;
                    }
                },
                450..=649 => assert_eq!(table.remove(&k), model.remove(&k)),
                650..=799 => assert_eq!(table.get(&k), model.get(&k)),
                800..=849 => {
                    if let Some(v) = table.get_mut(&k) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&k) {
                        *v += 1;
                    }
                    assert_eq!(table.get(&k), model.get(&k));
                }
                850..=899 => {
                    let max_scan = rng.below(2 * capacity as u64 + 1) as usize;
                    let eligible = |_: &ProcKey, v: &u64| v % 3 == 0;
                    match table.evict_one(max_scan, eligible) {
                        Some((ek, ev)) => {
                            assert!(eligible(&ek, &ev));
                            assert_eq!(model.remove(&ek), Some(ev));
                        }
                        None if max_scan >= capacity => {
                            assert!(!model.iter().any(|(mk, mv)| eligible(mk, mv)));
                        }
                        None => {}
                    }
                }
                900..=997 => {
                    let odd = |k: &ProcKey, _: &u64| k.start_ticks % 2 == 1;
                    match table.find_pid(k.pid, odd) {
                        Some(found) => {
                            assert!(found.pid == k.pid && odd(&found, &0));
                            assert!(model.contains_key(&found));
                        }
                        None => {
                            assert!(!model.keys().any(|mk| mk.pid == k.pid && odd(mk, &0)));
                        }
                    }
                }
                998 => {
                    let gone = rng.below(16) as u32;
                    table.retain(|k, _| k.pid % 16 != gone);
                    model.retain(|k, _| k.pid % 16 != gone);
                }
                _ => {
                    if rng.below(20) == 0 {
                        table.clear();
                        model.clear();
                    }
                }
            }
            assert_eq!(table.len(), model.len());
            if op % 4096 == 0 || op == 199_999 {
                assert_consistent(&table);
                for (mk, mv) in &model {
                    assert_eq!(table.get(mk), Some(mv), "capacity {capacity}, op {op}");
                }
                let listed: HashMap<ProcKey, u64> = table.iter().map(|(k, v)| (*k, *v)).collect();
                assert_eq!(listed, model);
            }
        }
        let stats = table.stats();
        assert_eq!(stats.inconsistencies, 0, "capacity {capacity}");
        assert_eq!(
            (stats.refused_full, stats.refused_probe),
            (fulls, exhausted)
        );
        assert!(fulls > 0, "capacity {capacity}: the model must reach full");
    }
}

#[test]
fn refusals_read_as_distinct_phrases() {
    let phrases =
        [Refusal::Full, Refusal::ProbeExhausted, Refusal::Duplicate].map(|r| r.to_string());
    assert!(phrases.iter().all(|p| !p.is_empty() && !p.contains('\n')));
    assert!(phrases[0] != phrases[1] && phrases[1] != phrases[2] && phrases[0] != phrases[2]);
}
