// SPDX-License-Identifier: GPL-2.0

//! What the teardown keeps per address space ([`Space`], in the [`State`] of its
//! lifecycle), and the tallies of teardown work the caps bound ([`Tally`]).

use kernel::{
    mm_hooks::{PageDirectory, SpaceId},
    prelude::*,
    rbtree::RBTreeNodeReservation,
    sync::Arc,
};

use core::sync::atomic::AtomicBool;

use crate::{
    settings::{Setting, Settings},
    wire::{Op, Request, Status},
};

/// Where an address space is in its lifecycle: `Live`, then `Destroying` at
/// `exit_mmap` (or at `pgd_free` without one), then `Acked` if the host answers
/// before `pgd_free`. Kept in [`Space::state`], under the teardown lock.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Known to the host (or about to be).
    Live,
    /// DESTROY submitted or queued, not acknowledged.
    Destroying,
    /// The host is done with it; waiting for `pgd_free`.
    Acked,
}

/// A backlog entry's node: reserved when the space is created, so that queueing a
/// request never allocates under the teardown lock. Owned by its [`Space`] while not
/// queued, by the teardown backlog while queued.
pub(crate) type BacklogSlot = RBTreeNodeReservation<u64, SpaceId>;

/// What the teardown knows about one address space.
///
/// # Locking
///
/// Lives in the teardown state's space tree and is read and changed only under the
/// teardown lock.
///
/// # Lifetime
///
/// Allocated in `pgd_alloc`, the only hook that may allocate, and dropped when the
/// teardown stops tracking the space: at `pgd_free` once the host is done, on the
/// host's acknowledgment after `pgd_free`, at a reset, or when detaching. Dropping
/// it releases the parked page directory, if any.
pub(crate) struct Space {
    pub(crate) tag: u32,
    pub(crate) state: State,
    pub(crate) pages: u64,
    /// The page directory once `pgd_free` handed it over.
    pub(crate) pgd: Option<PageDirectory>,
    /// A request that did not fit in the ring yet, and its key in the backlog.
    /// Exactly one of `queued` and `slot` is set.
    pub(crate) queued: Option<(Op, u64)>,
    pub(crate) slot: Option<BacklogSlot>,
    /// Set when the host acknowledges the DESTROY; a synchronous teardown polls it
    /// without the lock.
    pub(crate) waiter: Option<Arc<AtomicBool>>,
    /// The DESTROY is in the host's hands: counted in flight.
    pub(crate) in_flight: bool,
    /// Submission ring index of the DESTROY once written; its completion is valid
    /// only after the host consumed it.
    pub(crate) sq_pos: u32,
    /// The host's answer to the CREATE, once it came; a second one is bogus.
    pub(crate) created: Option<Status>,
    /// `Acked` by a reset, which made the host forget the space, rather than by a
    /// completion: the release is reported as such.
    pub(crate) forgotten: bool,
}

impl Space {
    /// A new live space tagged `tag`, with its backlog node reserved.
    pub(crate) fn new(tag: u32) -> Result<Self> {
        Ok(Space {
            tag,
            state: State::Live,
            pages: 0,
            pgd: None,
            queued: None,
            slot: Some(BacklogSlot::new(GFP_KERNEL)?),
            waiter: None,
            in_flight: false,
            sq_pos: 0,
            created: None,
            forgotten: false,
        })
    }

    /// The wire request `op` for the space `id` of this record.
    pub(crate) fn request(&self, id: SpaceId, op: Op) -> Request {
        Request {
            op,
            tag: self.tag,
            space: id,
            pages: if op == Op::Destroy { self.pages } else { 0 },
        }
    }
}

/// A count of DESTROYs and their pages, with peaks: the outstanding ones (started,
/// not acknowledged) and the ones in flight (handed to the host, not acknowledged).
///
/// # Locking
///
/// Part of the teardown state, under the teardown lock.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) spaces: u64,
    pub(crate) pages: u64,
    pub(crate) peak_spaces: u64,
    pub(crate) peak_pages: u64,
}

impl Tally {
    /// Counts a DESTROY of `pages`, without raising the peaks.
    pub(crate) fn add(&mut self, pages: u64) {
        self.spaces += 1;
        self.pages += pages;
    }

    /// Counts a DESTROY of `pages` and raises the peaks.
    pub(crate) fn take(&mut self, pages: u64) {
        self.add(pages);
        self.peak_spaces = self.peak_spaces.max(self.spaces);
        self.peak_pages = self.peak_pages.max(self.pages);
    }

    /// Uncounts a DESTROY of `pages`.
    pub(crate) fn give(&mut self, pages: u64) {
        self.spaces -= 1;
        self.pages -= pages;
    }

    /// Restarts the peaks from the current values.
    pub(crate) fn reset_peaks(&mut self) {
        self.peak_spaces = self.spaces;
        self.peak_pages = self.pages;
    }

    /// Whether the tally has reached a cap.
    pub(crate) fn at_cap(&self, settings: &Settings) -> bool {
        self.spaces >= settings.get(Setting::CapSpaces)
            || self.pages >= settings.get(Setting::CapPages)
    }

    /// Whether a DESTROY of `pages` still fits under the caps. With nothing counted
    /// one always does, however large, so no teardown waits forever.
    pub(crate) fn fits(&self, pages: u64, settings: &Settings) -> bool {
        self.spaces == 0
            || (self.spaces < settings.get(Setting::CapSpaces)
                && self.pages.saturating_add(pages) <= settings.get(Setting::CapPages))
    }
}
