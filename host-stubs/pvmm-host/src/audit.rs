// SPDX-License-Identifier: GPL-2.0

//! `--audit-releases`: what the host remembers to check the guest's release
//! log against. [`AckedSet`] holds the (space, tag) of every DESTROY
//! completion published and not yet reported released, with a bound on its
//! memory; `RingHost` drains the log and counts what does not match (its
//! hooks are here too).

use std::collections::{BTreeMap, HashMap};

use pvmm_wire::{SharedMemory, Why};

use crate::ratelimit::warn_limited;
use crate::ring::{Batch, RingHost};

/// A space id and the tag of its requests.
pub type Key = (u64, u32);

/// DESTROY completions published and not yet matched by a release, oldest
/// evicted first beyond the cap.
#[derive(Debug)]
pub struct AckedSet {
    cap: usize,
    by_key: HashMap<Key, u64>,
    by_age: BTreeMap<u64, Key>,
    next: u64,
    /// Pushed into the CQ but not yet published: the guest cannot act on
    /// these, and a reset discards them.
    unpublished: Vec<Key>,
}

impl AckedSet {
    /// A set that holds at most `cap` (at least 1) keys.
    pub fn new(cap: usize) -> AckedSet {
        AckedSet {
            cap: cap.max(1),
            by_key: HashMap::new(),
            by_age: BTreeMap::new(),
            next: 0,
            unpublished: Vec::new(),
        }
    }

    /// A DESTROY completion for `key` went into the CQ.
    pub fn pushed(&mut self, key: Key) {
        self.unpublished.push(key);
    }

    /// The pushed completions were published. Returns how many old keys
    /// were evicted to stay within the cap.
    pub fn published(&mut self) -> u64 {
        let mut evicted = 0;
        for key in std::mem::take(&mut self.unpublished) {
            if let Some(old) = self.by_key.insert(key, self.next) {
                // Acknowledged twice (a duplicate): keep one, at its new age.
                self.by_age.remove(&old);
            }
            self.by_age.insert(self.next, key);
            self.next += 1;
            while self.by_key.len() > self.cap {
                let Some((_, k)) = self.by_age.pop_first() else {
                    break;
                };
                self.by_key.remove(&k);
                evicted += 1;
            }
        }
        evicted
    }

    /// A reset dropped the unpublished completions.
    pub fn drop_unpublished(&mut self) {
        self.unpublished.clear();
    }

    /// Takes `key` out; returns whether it was there.
    pub fn take(&mut self, key: Key) -> bool {
        match self.by_key.remove(&key) {
            Some(age) => {
                self.by_age.remove(&age);
                true
            }
            None => false,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The audit itself; `RingHost::process` calls it at the end of a round.
impl RingHost {
    /// `--audit-releases`: reads every release the guest logged since the
    /// last round and counts those the host never acknowledged. A bad entry
    /// is counted and skipped; an impossible index ends the audit for this
    /// guest (the host cannot tell which entries are real).
    pub(crate) fn audit_releases(&mut self, shm: &impl SharedMemory, b: &mut Batch) {
        let Some((log, _)) = &mut self.audit else {
            return;
        };
        let mut n = self.layout.log_entries;
        let mut taken = Vec::new();
        let mut broken = None;
        while n > 0 {
            match log.pop(shm) {
                Ok(Some(r)) => taken.push(r),
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
            n -= 1;
        }
        log.release(shm);
        for r in taken {
            match r {
                Ok(r) => self.audit_one(r.space, r.tag, r.why),
                Err(bad) => {
                    self.count(|c| &c.bad_entries, 1);
                    self.note_error(b);
                    warn_limited!(self, "bad release log entry: {bad}");
                }
            }
        }
        if let Some(e) = broken {
            self.audit = None;
            self.count(|c| &c.bad_indices, 1);
            self.note_error(b);
            warn_limited!(
                self,
                "release log index impossible: {e}; audit stopped for this guest"
            );
        }
    }

    pub(crate) fn audit_one(&mut self, space: u64, tag: u32, why: Why) {
        let Some((_, acked)) = &mut self.audit else {
            return;
        };
        let was_acked = acked.take((space, tag));
        self.count(|c| &c.releases_audited, 1);
        let premature = match why {
            Why::Acked => !was_acked,
            Why::Reset => {
                self.count(|c| &c.released_after_reset, 1);
                self.resets_done == 0
            }
            Why::Forced => {
                self.count(|c| &c.released_forced, 1);
                false
            }
        };
        if premature {
            self.count(|c| &c.premature_releases, 1);
            warn_limited!(
                self,
                "guest released the pgd of space {space:#x} (tag {tag:#x}, {why:?}) \
                 without an acknowledgement from this host"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_published_keys_count() {
        let mut s = AckedSet::new(8);
        s.pushed((1, 1));
        assert!(!s.take((1, 1)), "not published yet");
        s.pushed((1, 1));
        s.pushed((1, 1));
        assert_eq!(s.published(), 0);
        assert_eq!(s.len(), 1, "a duplicate is one key");
        assert!(s.take((1, 1)));
        assert!(!s.take((1, 1)), "taken once");
        s.pushed((2, 2));
        s.drop_unpublished();
        assert_eq!(s.published(), 0);
        assert!(s.is_empty());
    }

    #[test]
    fn oldest_are_evicted_beyond_the_cap() {
        let mut s = AckedSet::new(3);
        for i in 0..5 {
            s.pushed((i, 0));
        }
        assert_eq!(s.published(), 2);
        assert_eq!(s.len(), 3);
        assert!(!s.take((0, 0)) && !s.take((1, 0)));
        assert!(s.take((2, 0)) && s.take((4, 0)));
        // Taken keys leave no stale age entries behind.
        assert_eq!((s.by_age.len(), s.by_key.len()), (1, 1));
    }
}
