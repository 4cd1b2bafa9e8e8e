//! The fixed-capacity slot table: which processes reeve tracks, by identity.
//!
//! Entries live in a boxed slice of slots sized once at start-up; a separate
//! open-addressed index of slot numbers, hashed by a deterministic integer
//! mixer of the pid, finds them. Invariant: after `with_capacity` nothing
//! allocates. A full table refuses (and counts it), it never grows; a lookup
//! or insert examines at most `PROBE_BUDGET` index buckets; and an index that
//! disagrees with the slots is counted and rebuilt from the slots, never a
//! panic. The slots are the truth; the index and the slot order (occupied
//! slots first, densely, then the vacant ones) are derived from them and can
//! always be rebuilt in place. Iteration, the sweep and the eviction scan
//! walk the occupied part of the order only: their cost follows the entries
//! held, not the capacity. The slot storage is reserved whole at start and
//! slots are taken in order, a vacated one first: memory the table never
//! needed is reserved but never touched, so it costs address space, not
//! resident memory.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::procfs::ProcKey;

/// A key the table can hold: anything that names a process by its pid.
pub trait TableKey: Copy + Eq + fmt::Debug {
    /// The pid the index hashes on. Several keys may share a pid (an exited
    /// process and the new one that reused its pid); lookups compare whole keys.
    fn pid(&self) -> u32;
}

/// A bare pid, for pid-keyed "seen" sets.
impl TableKey for u32 {
    fn pid(&self) -> u32 {
        *self
    }
}

impl TableKey for ProcKey {
    fn pid(&self) -> u32 {
        self.pid
    }
}

/// The hard maximum of `capacity`, the number of processes reeve tracks at
/// once (and the seen-set's size). The config refuses a larger capacity;
/// the table is allocated at this size or less at start-up and never grows;
/// a process beyond it is refused, counted and logged.
pub const MAX_CAPACITY: usize = 262_144;

/// Hard bound on index buckets examined by one lookup or insert.
pub const PROBE_BUDGET: usize = 32;

/// Index bucket that has never held an entry: ends a probe run.
const EMPTY: u32 = u32::MAX;
/// Index bucket whose entry was removed: a probe run continues past it.
const TOMBSTONE: u32 = u32::MAX - 1;

/// Why an insert was refused. The table never grows to avoid a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot holds an entry.
    Full,
    /// No free index bucket within `PROBE_BUDGET` of the pid's home bucket,
    /// even after rebuilding the index.
    ProbeExhausted,
    /// An entry with this exact key is already tracked.
    Duplicate,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Full => "slot table is full (capacity reached)",
            Refusal::ProbeExhausted => "too many tracked pids collide in the slot table index",
            Refusal::Duplicate => "this process is already tracked",
        })
    }
}

impl std::error::Error for Refusal {}

/// Counters since start-up, for metrics and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Inserts refused with `Refusal::Full`.
    pub refused_full: u64,
    /// Inserts refused with `Refusal::ProbeExhausted`.
    pub refused_probe: u64,
    /// Times the index or free-slot stack disagreed with the slots.
    pub inconsistencies: u64,
    /// Times the index was rebuilt from the slots (tombstones, probe
    /// exhaustion or an inconsistency).
    pub rebuilds: u64,
    /// Entries removed by `evict_one`.
    pub evictions: u64,
}

/// A probe met an index bucket that disagrees with the slots.
struct Inconsistent;

/// Fixed-capacity map from process key to value; see the module docs.
pub struct SlotTable<K: TableKey, V> {
    /// Entry storage, reserved to `cap` at start (it never reallocates):
    /// `slots.len()` slots have been used; those past it never have.
    /// An entry keeps its slot number for as long as it lives.
    slots: Vec<Option<(K, V)>>,
    cap: usize,
    /// Every used slot number once: `order[..len]` are the occupied slots,
    /// `order[len..slots.len()]` the vacant ones, `order[len]` the next to
    /// fill; when none is vacant, the next slot never used.
    order: Box<[u32]>,
    /// `pos[slot]`: where `slot` stands in `order`.
    pos: Box<[u32]>,
    len: usize,
    /// Open-addressed buckets holding a slot number, `EMPTY` or `TOMBSTONE`.
    /// Its length is a power of two, at least twice the capacity.
    index: Box<[u32]>,
    tombstones: usize,
    /// Next position in `order` the eviction scan examines; persists
    /// between scans.
    evict_cursor: usize,
    stats: TableStats,
    /// Inconsistencies met by shared-borrow lookups, which cannot repair;
    /// the next mutating call counts them into `stats` and rebuilds.
    unrepaired: AtomicU64,
}

impl<K: TableKey, V> SlotTable<K, V> {
    /// Allocates the whole table, once. `capacity` is clamped to
    /// `1..=MAX_CAPACITY`.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let mut table = SlotTable {
            slots: Vec::with_capacity(capacity),
            cap: capacity,
            order: vec![0; capacity].into_boxed_slice(),
            pos: vec![0; capacity].into_boxed_slice(),
            len: 0,
            index: vec![EMPTY; (2 * capacity).next_power_of_two()].into_boxed_slice(),
            tombstones: 0,
            evict_cursor: 0,
            stats: TableStats::default(),
            unrepaired: AtomicU64::new(0),
        };
        table.rebuild_order();
        table
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let slot = self.find(key.pid(), |k, _| k == key)?;
        self.entry(slot).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (_, slot) = self.locate(key.pid(), |k, _| k == key)?;
        self.slots.get_mut(slot)?.as_mut().map(|(_, v)| v)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.find(key.pid(), |k, _| k == key).is_some()
    }

    /// First entry whose key has this pid and for which `f` returns true.
    pub fn find_pid(&self, pid: u32, mut f: impl FnMut(&K, &V) -> bool) -> Option<K> {
        let slot = self.find(pid, |k, v| f(k, v))?;
        self.entry(slot).map(|(k, _)| *k)
    }

    /// Adds an entry, or says why not. A refused insert leaves the entries
    /// as they were; only the counters move.
    pub fn insert(&mut self, key: K, value: V) -> Result<(), Refusal> {
        let pid = key.pid();
        if self.locate(pid, |k, _| *k == key).is_some() {
            return Err(Refusal::Duplicate);
        }
        let Some(slot) = self.vacant_slot() else {
            self.stats.refused_full += 1;
            return Err(Refusal::Full);
        };
        match self.vacant_bucket(pid) {
            Some(bucket) => {
                if self.index[bucket] == TOMBSTONE {
                    self.tombstones = self.tombstones.saturating_sub(1);
                }
                self.index[bucket] = slot as u32;
            }
            // Dropping the tombstones and letting entries nearer their home
            // yield may make room; if not, no arrangement within the budget can.
            None => {
                self.rebuild_index();
                if !self.place(slot as u32, pid) {
                    self.stats.refused_probe += 1;
                    return Err(Refusal::ProbeExhausted);
                }
            }
        }
        // The vacant slot stands at `order[len]`: taking it moves the
        // boundary past it.
        self.len += 1;
        self.slots[slot] = Some((key, value));
        Ok(())
    }

    /// Removes the entry and returns its value; its bucket becomes a tombstone.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (bucket, slot) = self.locate(key.pid(), |k, _| k == key)?;
        let removed = self.unlink(bucket, slot);
        self.compact_if_needed();
        removed.map(|(_, v)| v)
    }

    /// Bounded eviction: examine at most `max_scan` entries starting at a
    /// rotating cursor (which persists between calls), remove and return the
    /// first entry for which `eligible` is true. Vacant slots are not
    /// examined.
    pub fn evict_one(
        &mut self,
        max_scan: usize,
        mut eligible: impl FnMut(&K, &V) -> bool,
    ) -> Option<(K, V)> {
        self.repair_pending();
        for _ in 0..max_scan.min(self.len) {
            let at = self.evict_cursor % self.len;
            self.evict_cursor = (at + 1) % self.len;
            let slot = self.order[at] as usize;
            if matches!(self.entry(slot), Some((k, v)) if eligible(k, v)) {
                // The last entry moves into this position: it is examined next.
                self.evict_cursor = at;
                let evicted = self.unlink_slot(slot);
                self.compact_if_needed();
                self.stats.evictions += u64::from(evicted.is_some());
                return evicted;
            }
        }
        None
    }

    /// The entries, occupied slots only (neither slot nor insertion order).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order[..self.len]
            .iter()
            .filter_map(|&slot| self.entry(slot as usize).map(|(k, v)| (k, v)))
    }

    /// The entries, values mutable. Walks the whole slot array (a mutable
    /// borrow per slot cannot follow `order`): for rare whole-table updates
    /// such as a rule reload.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.slots
            .iter_mut()
            .filter_map(|entry| entry.as_mut().map(|(k, v)| (&*k, v)))
    }

    /// Keeps entries for which `keep` returns true, removes the rest (used for the
    /// per-scan "gone" sweep; the closure may record what it removes). Visits
    /// the occupied slots only.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.repair_pending();
        let mut at = 0;
        while at < self.len {
            let slot = self.order[at] as usize;
            let doomed = match self.slots.get_mut(slot) {
                Some(Some((k, v))) => !keep(k, v),
                _ => false,
            };
            if doomed {
                // The last entry moves into `at`, so `at` is looked at again.
                // A repair on the way re-derives the order; entries already
                // kept may then be offered to `keep` once more.
                self.unlink_slot(slot);
            } else {
                at += 1;
            }
        }
        self.compact_if_needed();
    }

    /// Removes every entry; capacity and counters stay.
    pub fn clear(&mut self) {
        self.stats.inconsistencies += std::mem::take(self.unrepaired.get_mut());
        self.slots.iter_mut().for_each(|entry| *entry = None);
        self.index.fill(EMPTY);
        self.tombstones = 0;
        self.evict_cursor = 0;
        self.rebuild_order();
    }

    pub fn stats(&self) -> TableStats {
        let mut stats = self.stats;
        stats.inconsistencies += self.unrepaired.load(Ordering::Relaxed);
        stats
    }

    fn entry(&self, slot: usize) -> Option<&(K, V)> {
        self.slots.get(slot)?.as_ref()
    }

    fn slot_pid(&self, slot: u32) -> Option<u32> {
        self.entry(slot as usize).map(|(k, _)| k.pid())
    }

    fn home(&self, pid: u32) -> usize {
        mix_pid(pid) as usize & (self.index.len() - 1)
    }

    fn next(&self, bucket: usize) -> usize {
        (bucket + 1) & (self.index.len() - 1)
    }

    /// How far `bucket` lies along the probe run of `pid`.
    fn distance(&self, pid: u32, bucket: usize) -> usize {
        bucket.wrapping_sub(self.home(pid)) & (self.index.len() - 1)
    }

    /// Buckets one probe may examine; small tables have fewer than the budget.
    fn probe_limit(&self) -> usize {
        PROBE_BUDGET.min(self.index.len())
    }

    /// Walks the probe run of `pid` for an entry with that pid which `wanted`
    /// accepts, and returns its bucket and slot. A bucket is inconsistent if
    /// it names a vacant or out-of-range slot, or an entry whose own home is
    /// further back than the probe budget reaches.
    fn probe(
        &self,
        pid: u32,
        wanted: &mut impl FnMut(&K, &V) -> bool,
    ) -> Result<Option<(usize, usize)>, Inconsistent> {
        let mut bucket = self.home(pid);
        for _ in 0..self.probe_limit() {
            match self.index[bucket] {
                EMPTY => return Ok(None),
                TOMBSTONE => {}
                slot => {
                    let (k, v) = self.entry(slot as usize).ok_or(Inconsistent)?;
                    if self.distance(k.pid(), bucket) >= self.probe_limit() {
                        return Err(Inconsistent);
                    }
                    if k.pid() == pid && wanted(k, v) {
                        return Ok(Some((bucket, slot as usize)));
                    }
                }
            }
            bucket = self.next(bucket);
        }
        Ok(None)
    }

    /// Lookup through a shared borrow: cannot repair, so it counts the
    /// inconsistency for the next mutating call and answers from the slots.
    fn find(&self, pid: u32, mut wanted: impl FnMut(&K, &V) -> bool) -> Option<usize> {
        match self.probe(pid, &mut wanted) {
            Ok(found) => found.map(|(_, slot)| slot),
            Err(Inconsistent) => {
                self.unrepaired.fetch_add(1, Ordering::Relaxed);
                self.slots.iter().position(
                    |entry| matches!(entry, Some((k, v)) if k.pid() == pid && wanted(k, v)),
                )
            }
        }
    }

    /// Lookup through a mutable borrow: repairs the index when it disagrees
    /// with the slots, then asks again.
    fn locate(
        &mut self,
        pid: u32,
        mut wanted: impl FnMut(&K, &V) -> bool,
    ) -> Option<(usize, usize)> {
        self.repair_pending();
        match self.probe(pid, &mut wanted) {
            Ok(found) => found,
            Err(Inconsistent) => {
                self.stats.inconsistencies += 1;
                self.repair();
                self.probe(pid, &mut wanted).ok().flatten()
            }
        }
    }

    /// First `EMPTY` or `TOMBSTONE` bucket in the probe run of `pid`.
    fn vacant_bucket(&self, pid: u32) -> Option<usize> {
        let mut bucket = self.home(pid);
        for _ in 0..self.probe_limit() {
            if matches!(self.index[bucket], EMPTY | TOMBSTONE) {
                return Some(bucket);
            }
            bucket = self.next(bucket);
        }
        None
    }

    /// The slot the next insert fills: the first vacant one in `order`,
    /// checked to be really vacant. `None` means the table is full.
    fn vacant_slot(&mut self) -> Option<usize> {
        for _ in 0..2 {
            if self.len >= self.cap {
                return None;
            }
            if self.len >= self.slots.len() {
                // Every used slot is occupied: take the next fresh one. The
                // push stays within the reserved capacity.
                let fresh = self.slots.len();
                self.slots.push(None);
                self.order[self.len] = fresh as u32;
                self.pos[fresh] = self.len as u32;
                return Some(fresh);
            }
            match self.order.get(self.len) {
                Some(&slot) if matches!(self.slots.get(slot as usize), Some(None)) => {
                    return Some(slot as usize);
                }
                _ => {
                    self.stats.inconsistencies += 1;
                    self.repair();
                }
            }
        }
        None
    }

    /// Removes the entry in `slot`, indexed at `bucket`, leaving a tombstone.
    fn unlink(&mut self, bucket: usize, slot: usize) -> Option<(K, V)> {
        self.index[bucket] = TOMBSTONE;
        self.tombstones += 1;
        let removed = self.slots.get_mut(slot)?.take();
        if !self.vacate(slot) {
            self.stats.inconsistencies += 1;
            self.repair();
        }
        removed
    }

    /// Moves `slot` from the occupied part of `order` to the first vacant
    /// position: the last occupied slot takes its place. False when the
    /// order does not hold `slot` among the occupied (it needs a rebuild).
    fn vacate(&mut self, slot: usize) -> bool {
        let Some(&at) = self.pos.get(slot) else {
            return false;
        };
        let at = at as usize;
        if self.len == 0 || at >= self.len || self.order[at] as usize != slot {
            return false;
        }
        let last = self.len - 1;
        let moved = self.order[last];
        self.order[at] = moved;
        self.pos[moved as usize] = at as u32;
        self.order[last] = slot as u32;
        self.pos[slot] = last as u32;
        self.len = last;
        true
    }

    /// Removes the entry in `slot`, finding its bucket from its pid.
    fn unlink_slot(&mut self, slot: usize) -> Option<(K, V)> {
        let pid = self.entry(slot)?.0.pid();
        let mut bucket = self.home(pid);
        for _ in 0..self.probe_limit() {
            if self.index[bucket] as usize == slot {
                return self.unlink(bucket, slot);
            }
            bucket = self.next(bucket);
        }
        // The entry is not where its pid says: take it and re-derive the rest.
        self.stats.inconsistencies += 1;
        let removed = self.slots.get_mut(slot)?.take();
        self.repair();
        removed
    }

    fn repair_pending(&mut self) {
        let seen = std::mem::take(self.unrepaired.get_mut());
        if seen > 0 {
            self.stats.inconsistencies += seen;
            self.repair();
        }
    }

    /// Re-derives the slot order and the index from the slots.
    fn repair(&mut self) {
        self.rebuild_order();
        self.rebuild_index();
    }

    /// Occupied slots first, then the vacant used ones, each in slot order
    /// (so an empty table fills slot 0 first).
    fn rebuild_order(&mut self) {
        let mut at = 0;
        for pass_occupied in [true, false] {
            for slot in 0..self.slots.len() {
                if self.slots[slot].is_some() == pass_occupied {
                    self.order[at] = slot as u32;
                    self.pos[slot] = at as u32;
                    at += 1;
                }
            }
            if pass_occupied {
                self.len = at;
            }
        }
    }

    fn compact_if_needed(&mut self) {
        if self.tombstones > self.index.len() / 4 {
            self.rebuild_index();
        }
    }

    /// Rebuilds the index in place from the slots, dropping every tombstone.
    fn rebuild_index(&mut self) {
        self.stats.rebuilds += 1;
        self.index.fill(EMPTY);
        self.tombstones = 0;
        for slot in 0..self.slots.len() {
            let Some(pid) = self.slot_pid(slot as u32) else {
                continue;
            };
            if !self.place(slot as u32, pid) {
                self.stats.inconsistencies += 1;
            }
        }
    }

    /// Indexes `slot`, holding an entry for `pid`, by Robin Hood placement:
    /// an entry further from its home bucket takes the bucket from one nearer
    /// to its own. For a given set of entries this gives the shortest longest
    /// probe run, so whatever fitted within the budget before a rebuild fits
    /// after it. A dry run first: on false the index is untouched.
    fn place(&mut self, slot: u32, pid: u32) -> bool {
        self.robin_hood(slot, pid, false) && self.robin_hood(slot, pid, true)
    }

    /// Walks the Robin Hood displacement chain of a new entry, writing it only
    /// if `commit`. The walk reads only buckets ahead of those it writes, so
    /// the dry run sees exactly what the real one will.
    fn robin_hood(&mut self, slot: u32, pid: u32, commit: bool) -> bool {
        let mut carried = slot;
        let mut bucket = self.home(pid);
        let mut distance = 0;
        while distance < self.probe_limit() {
            let resident = self.index[bucket];
            if matches!(resident, EMPTY | TOMBSTONE) {
                if commit {
                    if resident == TOMBSTONE {
                        self.tombstones = self.tombstones.saturating_sub(1);
                    }
                    self.index[bucket] = carried;
                }
                return true;
            }
            let resident_distance = self
                .slot_pid(resident)
                .map_or(usize::MAX, |p| self.distance(p, bucket));
            if resident_distance < distance {
                if commit {
                    self.index[bucket] = carried;
                }
                carried = resident;
                distance = resident_distance;
            }
            bucket = self.next(bucket);
            distance += 1;
        }
        false
    }
}

impl<K: TableKey, V> fmt::Debug for SlotTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotTable")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("stats", &self.stats())
            .finish()
    }
}

/// murmur3's fmix32 finalizer. Deterministic on purpose: placement is
/// reproducible from run to run, and the probe budget, not a random seed,
/// bounds what colliding pids can cost.
fn mix_pid(pid: u32) -> u32 {
    let mut h = pid;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests;
