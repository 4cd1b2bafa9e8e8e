//! The lifecycle of one identity (pid + start time), as named states and
//! the steps between them, in one table.
//!
//! ```text
//!   seen ──discover/restore──> tracked ──queue──> pending ──govern──> governed
//!     │                          │  ▲                │                   │
//!     └──────adopt──────> adopted│  └────release─────┴──────release──────┘
//!   tracked, pending, governed, adopted ──exit──> exited ──evict──> evicted
//! ```
//!
//! *seen* is an identity discovery has looked at and no rule claimed (it
//! lives in the seen-set, not the tracked table); every other state is a
//! tracked entry's. Invariants: [`Life::step`] is the only place a state
//! changes; a step the table does not allow is refused with [`Illegal`]
//! (the caller counts it) and the state stays as it was; nothing panics.

/// Where one identity is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Looked at, claimed by no rule.
    Seen,
    /// A rule claimed it; nothing governs it (yet).
    Tracked,
    /// Queued for the daemon to attach to its rule's job or pool.
    Pending,
    /// Attached by this daemon to a group it governs.
    Governed,
    /// Found in a governed group (a restart, `reeve run`, `reeve attach`).
    Adopted,
    /// Ended; kept for status and de-duplication until evicted.
    Exited,
    /// Its slot was released. Final.
    Evicted,
}

/// The steps between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A rule matched it.
    Discover,
    /// Re-tracked after a restart, once /proc confirmed the identity.
    Restore,
    /// Queued for attachment.
    Queue,
    /// Attached to its rule's group.
    Govern,
    /// Found in a governed group.
    Adopt,
    /// Attachment did not happen or governance ended; still tracked.
    Release,
    /// The process ended (or its pid now names another process).
    Exit,
    /// Its slot is released after the retention time.
    Evict,
}

/// A step the table does not allow from the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Illegal {
    pub from: Life,
    pub step: Step,
}

impl std::fmt::Display for Illegal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no step {:?} from state {:?}", self.step, self.from)
    }
}

impl Life {
    /// The state after `step`, or why the step is refused. The whole
    /// lifecycle is this table.
    pub fn step(self, step: Step) -> Result<Life, Illegal> {
        use Life::*;
        use Step::*;
        let next = match (self, step) {
            (Seen, Discover | Restore) => Tracked,
            (Seen | Tracked | Pending | Governed, Adopt) => Adopted,
            (Tracked, Queue) => Pending,
            (Tracked | Pending, Govern) => Governed,
            (Pending | Governed | Adopted, Release) => Tracked,
            (Tracked | Pending | Governed | Adopted, Exit) => Exited,
            (Exited, Evict) => Evicted,
            (from, step) => return Err(Illegal { from, step }),
        };
        Ok(next)
    }

    /// The process runs (as far as discovery knows).
    pub fn alive(self) -> bool {
        matches!(
            self,
            Life::Tracked | Life::Pending | Life::Governed | Life::Adopted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Life::Seen => "seen",
            Life::Tracked => "tracked",
            Life::Pending => "pending",
            Life::Governed => "governed",
            Life::Adopted => "adopted",
            Life::Exited => "exited",
            Life::Evicted => "evicted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [Life; 7] = [
        Life::Seen,
        Life::Tracked,
        Life::Pending,
        Life::Governed,
        Life::Adopted,
        Life::Exited,
        Life::Evicted,
    ];
    const STEPS: [Step; 8] = [
        Step::Discover,
        Step::Restore,
        Step::Queue,
        Step::Govern,
        Step::Adopt,
        Step::Release,
        Step::Exit,
        Step::Evict,
    ];

    #[test]
    fn the_whole_table() {
        use Life::*;
        use Step::*;
        let legal = [
            (Seen, Discover, Tracked),
            (Seen, Restore, Tracked),
            (Seen, Adopt, Adopted),
            (Tracked, Queue, Pending),
            (Tracked, Govern, Governed),
            (Tracked, Adopt, Adopted),
            (Tracked, Exit, Exited),
            (Pending, Govern, Governed),
            (Pending, Adopt, Adopted),
            (Pending, Release, Tracked),
            (Pending, Exit, Exited),
            (Governed, Adopt, Adopted),
            (Governed, Release, Tracked),
            (Governed, Exit, Exited),
            (Adopted, Release, Tracked),
            (Adopted, Exit, Exited),
            (Exited, Evict, Evicted),
        ];
        let mut allowed = 0;
        for from in STATES {
            for step in STEPS {
                let want = legal
                    .iter()
                    .find(|(f, s, _)| *f == from && *s == step)
                    .map(|l| l.2);
                match (from.step(step), want) {
                    (Ok(to), Some(w)) => {
                        assert_eq!(to, w, "{from:?} --{step:?}->");
                        allowed += 1;
                    }
                    (Err(e), None) => assert_eq!(e, Illegal { from, step }),
                    (got, want) => panic!("{from:?} --{step:?}-> {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(allowed, legal.len());
    }

    #[test]
    fn an_exited_identity_never_comes_back() {
        for step in STEPS {
            let next = Life::Exited.step(step);
            assert!(next.map_or(true, |l| !l.alive()), "{step:?}");
            assert!(Life::Evicted.step(step).is_err(), "{step:?}");
        }
        assert!(Life::Tracked.alive() && Life::Adopted.alive());
        assert!(!Life::Seen.alive() && !Life::Exited.alive());
        let e = Life::Evicted.step(Step::Exit).unwrap_err();
        assert_eq!(e.to_string(), "no step Exit from state Evicted");
    }
}
