//! Stable rule identities. A tracked process and every queued piece of
//! work name their rule by a [`RuleId`], the rule's name interned in a
//! [`RuleNames`] table that lives as long as the daemon, not by its place
//! in the config's `targets` list.
//!
//! Invariants: one name has one id for as long as anything can refer to it,
//! so a reload that reorders rules changes no identity; a rule removed by a
//! reload keeps its id (and its name, for logging) while some tracked entry
//! refers to it, and resolves to no current rule, so it no longer governs;
//! ids are freed only at a reload, when nothing tracked refers to them. The
//! table holds at most the current rules plus the rules tracked entries
//! still name, so it is bounded by the rules and the table's capacity.

use std::collections::HashMap;

/// The identity of a rule across reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(u16);

impl RuleId {
    /// A process tracked because it runs in a group reeve governs, although
    /// no rule names it.
    pub const ADOPTED: RuleId = RuleId(u16::MAX);

    pub fn raw(self) -> u16 {
        self.0
    }
}

/// The longest run of ids the table can hand out (ADOPTED is reserved).
pub const MAX_RULE_IDS: usize = u16::MAX as usize;

/// Shown for [`RuleId::ADOPTED`] and for an id the table does not hold.
pub const ADOPTED_NAME: &str = "(adopted)";

/// Rule names and the ids they are known by.
#[derive(Debug, Default)]
pub struct RuleNames {
    /// `names[id]`; `None` is a free id.
    names: Vec<Option<Box<str>>>,
    ids: HashMap<Box<str>, RuleId>,
    /// `current[id]`: the rule's index in the running config, if it has one.
    current: Vec<Option<u16>>,
    /// Freed ids, reused before the table grows.
    free: Vec<u16>,
}

/// The table is full: every id names a rule still in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleIdsExhausted;

impl std::fmt::Display for RuleIdsExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "all {MAX_RULE_IDS} rule ids name rules still in use")
    }
}

impl RuleNames {
    /// The id of `name`, interning it if it is new.
    pub fn intern(&mut self, name: &str) -> Result<RuleId, RuleIdsExhausted> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let slot = match self.free.pop() {
            Some(free) => usize::from(free),
            None if self.names.len() < MAX_RULE_IDS => {
                self.names.push(None);
                self.current.push(None);
                self.names.len() - 1
            }
            None => return Err(RuleIdsExhausted),
        };
        let id = RuleId(slot as u16);
        self.names[slot] = Some(name.into());
        self.ids.insert(name.into(), id);
        Ok(id)
    }

    /// The id of `name` if it is interned.
    pub fn get(&self, name: &str) -> Option<RuleId> {
        self.ids.get(name).copied()
    }

    /// The rule's name; [`ADOPTED_NAME`] for [`RuleId::ADOPTED`].
    pub fn name(&self, id: RuleId) -> &str {
        match self.names.get(usize::from(id.0)) {
            Some(Some(n)) => n,
            _ => ADOPTED_NAME,
        }
    }

    /// The rule's index in the running config, or `None` when the rule was
    /// removed by a reload (or the id is [`RuleId::ADOPTED`]).
    pub fn current(&self, id: RuleId) -> Option<usize> {
        self.current
            .get(usize::from(id.0))
            .copied()
            .flatten()
            .map(usize::from)
    }

    /// Makes `names` (in config order) the current rules and returns their
    /// ids. Ids that are neither current nor `in_use` are freed first, so a
    /// removed rule's id lives on exactly while something refers to it. On
    /// error (no id left for a new name) nothing changed.
    pub fn set_current(
        &mut self,
        names: &[&str],
        in_use: impl Fn(RuleId) -> bool,
    ) -> Result<Vec<RuleId>, RuleIdsExhausted> {
        let stale = |slot: usize, n: &str| !names.contains(&n) && !in_use(RuleId(slot as u16));
        let freeable = (self.names.iter().enumerate())
            .filter(|(slot, n)| n.as_deref().is_some_and(|n| stale(*slot, n)))
            .count();
        let mut new: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !self.ids.contains_key(*n))
            .collect();
        new.sort_unstable();
        new.dedup();
        let room = self.free.len() + freeable + (MAX_RULE_IDS - self.names.len());
        if new.len() > room {
            return Err(RuleIdsExhausted);
        }
        for slot in 0..self.names.len() {
            if self.names[slot].as_deref().is_some_and(|n| stale(slot, n)) {
                if let Some(n) = self.names[slot].take() {
                    self.ids.remove(&n);
                    self.free.push(slot as u16);
                }
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push(self.intern(name)?);
        }
        self.current.iter_mut().for_each(|c| *c = None);
        for (i, id) in out.iter().enumerate() {
            self.current[usize::from(id.0)] = u16::try_from(i).ok();
        }
        Ok(out)
    }

    /// Ids in the table (current and retained).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reordering_keeps_ids_and_moves_indexes() {
        let mut t = RuleNames::default();
        let first = t.set_current(&["a", "b"], |_| false).unwrap();
        let again = t.set_current(&["b", "a"], |_| false).unwrap();
        assert_eq!(first[0], again[1]);
        assert_eq!(first[1], again[0]);
        assert_eq!(t.current(first[0]), Some(1));
        assert_eq!(t.current(first[1]), Some(0));
        assert_eq!(t.name(first[0]), "a");
    }

    #[test]
    fn removed_rule_lives_while_in_use_then_is_freed() {
        let mut t = RuleNames::default();
        let ids = t.set_current(&["a", "b"], |_| false).unwrap();
        let a = ids[0];
        t.set_current(&["b"], |id| id == a).unwrap();
        assert_eq!(t.name(a), "a");
        assert_eq!(t.current(a), None);
        assert_eq!(t.get("a"), Some(a));
        t.set_current(&["b"], |_| false).unwrap();
        assert_eq!(t.get("a"), None);
        assert_eq!(t.name(a), ADOPTED_NAME);
        // The freed id is reused by the next new name.
        let c = t.set_current(&["b", "c"], |_| false).unwrap()[1];
        assert_eq!(c, a);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn adopted_has_no_rule() {
        let mut t = RuleNames::default();
        t.set_current(&["a"], |_| false).unwrap();
        assert_eq!(t.current(RuleId::ADOPTED), None);
        assert_eq!(t.name(RuleId::ADOPTED), ADOPTED_NAME);
    }

    #[test]
    fn a_full_table_refuses_new_names() {
        let mut t = RuleNames::default();
        for i in 0..MAX_RULE_IDS {
            t.intern(&i.to_string()).unwrap();
        }
        assert_eq!(t.intern("one-more"), Err(RuleIdsExhausted));
        assert!(t.intern("7").is_ok());
        // Every id in use: a reload with a new name is refused whole.
        let before = t.len();
        let err = t.set_current(&["7", "new"], |_| true);
        assert_eq!(err, Err(RuleIdsExhausted));
        assert_eq!(t.len(), before);
        assert_eq!(t.get("new"), None);
        assert_eq!(t.name(RuleId(8)), "8");
        // Nothing in use: the stale ids are freed and the new name fits.
        let ids = t.set_current(&["7", "new"], |_| false).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.name(ids[1]), "new");
    }
}
