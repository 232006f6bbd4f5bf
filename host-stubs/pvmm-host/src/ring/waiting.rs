// SPDX-License-Identifier: GPL-2.0

//! The DESTROYs waiting in the submission ring, for `host_ctl::DESTROYS_HELD`
//! under `--audit-releases`: an index of the entries already peeked at, so
//! that each waiting entry is read once, not once per costly DESTROY (which
//! made a round over a full ring quadratic).

use std::collections::VecDeque;

use pvmm_wire::{SharedMemory, SqConsumer};

/// Whether each entry from `base` on is a DESTROY, as peeked at.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    /// SQ index of the front entry.
    base: u32,
    destroys: VecDeque<bool>,
    count: u32,
}

impl Waiting {
    /// DESTROYs among the `pending` entries after `sq`'s index: entries
    /// consumed since the last call are dropped from the index, new ones
    /// peeked at. An entry is read once; a guest that rewrites a waiting
    /// entry changes only this informational count.
    pub(crate) fn count(&mut self, shm: &impl SharedMemory, sq: &SqConsumer, pending: u32) -> u32 {
        let consumed = sq.index().wrapping_sub(self.base) as usize;
        if consumed > self.destroys.len() {
            self.destroys.clear();
            self.count = 0;
        }
        for d in self.destroys.drain(..consumed.min(self.destroys.len())) {
            self.count -= u32::from(d);
        }
        self.base = sq.index();
        let pending = pending as usize;
        while self.destroys.len() > pending {
            let d = self.destroys.pop_back().unwrap_or(false);
            self.count -= u32::from(d);
        }
        while self.destroys.len() < pending {
            let d = sq.destroy_at(shm, self.destroys.len() as u32);
            self.destroys.push_back(d);
            self.count += u32::from(d);
        }
        self.count
    }
}
