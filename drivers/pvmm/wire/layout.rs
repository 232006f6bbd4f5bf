// SPDX-License-Identifier: GPL-2.0

//! Where everything lies in the shared window: the header and the two control
//! lines, each generated from one typed table by `region!`, and the validated
//! [`Layout`] of the rings behind them. See `drivers/pvmm/wire.rs` for the map.

use core::fmt;

use super::entry::{CQE_SIZE, LOG_ENTRY_SIZE, SQE_SIZE};

/// `"PVMM"` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x4d4d_5650;
/// Protocol version this file implements.
pub const VERSION: u32 = 1;
/// Size of a cache line, the unit of single-writer ownership.
pub const CACHELINE: usize = 64;

/// Host honours [`HOST_NEED_WAKEUP`]: the guest rings the doorbell only when it is set.
pub const FEATURE_NEED_WAKEUP: u32 = 1 << 0;
/// Guest honours [`GUEST_NEED_IRQ`]: the host interrupts only when it is set.
pub const FEATURE_IRQ_SUPPRESS: u32 = 1 << 1;
/// Host honours the reset handshake (`guest_ctl::RESET`, `host_ctl::RESET_ACK`).
pub const FEATURE_RESET: u32 = 1 << 2;
/// Host audits releases: the guest reports every page directory it releases in the
/// release log, so that the host can count releases it never acknowledged. A test aid.
pub const FEATURE_RELEASE_LOG: u32 = 1 << 3;
/// Host serves CREATEs without waiting behind DESTROYs: it takes the submission
/// ring promptly and does DESTROY work on a lane of its own, so a DESTROY completion
/// may come after those of later requests. Informational: the ring format is the
/// same, and a guest that does not accept it is served the same way.
pub const FEATURE_CREATE_LANE: u32 = 1 << 4;
/// All features this version defines.
pub const FEATURES_ALL: u32 = FEATURE_NEED_WAKEUP
    | FEATURE_IRQ_SUPPRESS
    | FEATURE_RESET
    | FEATURE_RELEASE_LOG
    | FEATURE_CREATE_LANE;

/// Defines one cache line of the window from a single table of its fields: offset
/// within the line, name and type.
///
/// Generates a module with the line's `BASE`, one byte-offset constant per field
/// (what [`SharedMemory`] takes), and `FIELDS`, the table as `(name, offset, size)`
/// for the test that pins the layout. Each field is checked at compile time to be
/// naturally aligned and inside its line.
macro_rules! region {
    (
        $(#[$doc:meta])*
        pub mod $region:ident at $base:expr;
        $( $(#[$fdoc:meta])* $off:literal $field:ident: $ty:ty, )*
    ) => {
        $(#[$doc])*
        pub mod $region {
            /// Base of the line.
            pub const BASE: usize = $base;
            $( $(#[$fdoc])* pub const $field: usize = BASE + $off; )*
            /// Every field as `(name, byte offset, size)`, in table order.
            // Only the layout test reads the table as a whole.
            #[allow(dead_code)]
            pub const FIELDS: &[(&str, usize, usize)] =
                &[$((stringify!($field), $field, core::mem::size_of::<$ty>())),*];
            const _: () = {
                assert!(BASE % super::CACHELINE == 0);
                $( assert!(
                    $off % core::mem::size_of::<$ty>() == 0
                        && $off + core::mem::size_of::<$ty>() <= super::CACHELINE
                ); )*
            };
        }
    };
}

region! {
    /// The header: the host writes it before the guest attaches, then it is read-only.
    pub mod header at 0x00;
    /// [`super::MAGIC`].
    0x00 MAGIC: u32,
    /// [`super::VERSION`].
    0x04 VERSION: u32,
    /// Feature bits the host offers.
    0x08 FEATURES: u32,
    /// Submission ring entries (power of two).
    0x0c SQ_ENTRIES: u32,
    /// Completion ring entries (power of two, at least `SQ_ENTRIES`).
    0x10 CQ_ENTRIES: u32,
    /// Byte offset of the submission ring.
    0x14 SQ_OFF: u32,
    /// Byte offset of the completion ring.
    0x18 CQ_OFF: u32,
    /// Bytes of shared memory the layout uses.
    0x1c SIZE: u32,
    /// ivshmem peer id the guest rings for the host.
    0x20 HOST_PEER: u32,
    /// Byte offset of the release log (zero without one).
    0x24 LOG_OFF: u32,
    /// Release log entries (power of two, zero without a log).
    0x28 LOG_ENTRIES: u32,
}

region! {
    /// The guest-written control line.
    pub mod guest_ctl at 0x40;
    /// Submission ring producer index.
    0x00 SQ_TAIL: u32,
    /// Completion ring consumer index.
    0x04 CQ_HEAD: u32,
    /// `GUEST_*` flags.
    0x08 FLAGS: u32,
    /// Feature bits the guest accepted (a subset of the host's).
    0x0c FEATURES: u32,
    /// Driver instance counter; the top byte of every tag (see `tag`).
    0x10 EPOCH: u32,
    /// Reset requests: a new value asks the host to forget everything.
    0x14 RESET: u32,
    /// Release log producer index.
    0x18 LOG_TAIL: u32,
}

region! {
    /// The host-written control line.
    pub mod host_ctl at 0x80;
    /// Submission ring consumer index.
    0x00 SQ_HEAD: u32,
    /// Completion ring producer index.
    0x04 CQ_TAIL: u32,
    /// `HOST_*` flags.
    0x08 FLAGS: u32,
    /// Number of malformed guest inputs the host rejected (informational).
    0x0c ERRORS: u32,
    /// The last `guest_ctl::RESET` value the host carried out.
    0x10 RESET_ACK: u32,
    /// Release log consumer index.
    0x14 LOG_HEAD: u32,
    /// DESTROYs the host holds unanswered: taken without a published completion
    /// and, when the host audits releases, waiting in the submission ring.
    /// Informational, for tests that check the guest's credits against what the
    /// host really held.
    0x18 DESTROYS_HELD: u32,
}

/// Guest flag: the guest is attached and consuming completions.
pub const GUEST_READY: u32 = 1 << 0;
/// Guest flag: the guest wants an interrupt for new completions.
pub const GUEST_NEED_IRQ: u32 = 1 << 1;
/// Host flag: the host is idle and needs a doorbell for new submissions.
pub const HOST_NEED_WAKEUP: u32 = 1 << 0;

/// Largest ring the protocol allows.
pub const MAX_ENTRIES: u32 = 1 << 15;

/// Access to a shared-memory window.
///
/// Offsets passed by this module are always naturally aligned and inside the
/// validated [`Layout`], but implementations must still check them: a
/// misbehaving caller must not be able to reach outside the window. Out-of-range
/// reads return zero and out-of-range writes are dropped.
pub trait SharedMemory {
    /// Length of the window in bytes.
    fn size(&self) -> usize;
    /// Relaxed 32-bit load.
    fn read_u32(&self, off: usize) -> u32;
    /// Relaxed 32-bit store.
    fn write_u32(&self, off: usize, val: u32);
    /// Relaxed 64-bit load.
    fn read_u64(&self, off: usize) -> u64;
    /// Relaxed 64-bit store.
    fn write_u64(&self, off: usize, val: u64);
    /// 32-bit load with acquire ordering.
    fn load_acquire_u32(&self, off: usize) -> u32;
    /// 32-bit store with release ordering.
    fn store_release_u32(&self, off: usize, val: u32);
    /// Full (sequentially consistent) fence.
    fn fence(&self);
}

/// Why a header or ring state was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Magic number mismatch.
    BadMagic(u32),
    /// Unsupported protocol version.
    BadVersion(u32),
    /// Ring sizes, offsets or total size are inconsistent with the window.
    BadLayout,
    /// A peer index moved to an impossible position.
    BadIndex {
        /// Our own index.
        ours: u32,
        /// The index the peer published.
        theirs: u32,
    },
    /// The ring has no free slot.
    Full,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic(m) => write!(f, "bad magic {m:#x}"),
            Error::BadVersion(v) => write!(f, "unsupported version {v}"),
            Error::BadLayout => f.write_str("inconsistent ring layout"),
            Error::BadIndex { ours, theirs } => {
                write!(f, "peer index {theirs} impossible against ours {ours}")
            }
            Error::Full => f.write_str("ring full"),
        }
    }
}

/// A validated ring layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Submission ring entries.
    pub sq_entries: u32,
    /// Completion ring entries.
    pub cq_entries: u32,
    /// Byte offset of the submission ring.
    pub sq_off: u32,
    /// Byte offset of the completion ring.
    pub cq_off: u32,
    /// Release log entries; zero without a log.
    pub log_entries: u32,
    /// Byte offset of the release log.
    pub log_off: u32,
    /// Bytes used.
    pub size: u32,
}

impl Layout {
    /// Checks a layout read from the peer against a window of `window` bytes.
    pub fn validate(&self, window: usize) -> Result<(), Error> {
        let end = |off: u32, entries: u32, size: usize| {
            (entries as usize)
                .checked_mul(size)
                .and_then(|n| n.checked_add(off as usize))
        };
        let sq_end = end(self.sq_off, self.sq_entries, SQE_SIZE);
        let cq_end = end(self.cq_off, self.cq_entries, CQE_SIZE);
        let log_ok = self.log_entries == 0
            || matches!((end(self.log_off, self.log_entries, LOG_ENTRY_SIZE), sq_end, cq_end),
                (Some(l), Some(s), Some(c))
                if valid_entries(self.log_entries)
                    && self.log_off as usize % CACHELINE == 0
                    && (l <= self.sq_off as usize || s <= self.log_off as usize)
                    && (l <= self.cq_off as usize || c <= self.log_off as usize)
                    && self.log_off as usize >= host_ctl::BASE + CACHELINE
                    && l <= self.size as usize);
        let ok = log_ok
            && valid_entries(self.sq_entries)
            && valid_entries(self.cq_entries)
            && self.cq_entries >= self.sq_entries
            && self.sq_off as usize >= host_ctl::BASE + CACHELINE
            && self.cq_off as usize >= host_ctl::BASE + CACHELINE
            && self.sq_off as usize % CACHELINE == 0
            && self.cq_off as usize % CACHELINE == 0
            && matches!((sq_end, cq_end), (Some(s), Some(c))
                if (s <= self.cq_off as usize || c <= self.sq_off as usize)
                    && s <= self.size as usize
                    && c <= self.size as usize)
            && self.size as usize <= window;
        if ok {
            Ok(())
        } else {
            Err(Error::BadLayout)
        }
    }
}

pub(crate) fn valid_entries(n: u32) -> bool {
    n.is_power_of_two() && n <= MAX_ENTRIES
}

/// A header as read and validated by the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The ring layout.
    pub layout: Layout,
    /// Feature bits the host offers (unknown bits cleared).
    pub features: u32,
    /// ivshmem peer id of the host.
    pub host_peer: u32,
}
