// SPDX-License-Identifier: GPL-2.0

//! The pvmm wire format: the shared-memory contract between a guest and its host.
//!
//! This part is common to both ends: the layout, the entry formats, the errors and
//! the ring index arithmetic. The guest's ring ends are in `guest.rs` beside it, the
//! host's in `host.rs`. The guest driver compiles this file and `guest.rs` (see
//! `drivers/pvmm/wire.rs`); the host stub compiles all three through the `pvmm-wire`
//! crate, which includes them with `#[path]` instead of copying them. It is plain
//! `core` code without `unsafe`: memory access goes through [`SharedMemory`], which
//! each side implements over its own mapping.
//!
//! # Layout
//!
//! ```text
//! 0x000  Header     host writes before the guest attaches, then read-only
//! 0x040  GuestCtl   guest writes: sq_tail, cq_head, flags, features, epoch, reset
//! 0x080  HostCtl    host writes: sq_head, cq_tail, flags, errors, reset_ack
//! 0x100  SQ         sq_entries * 32 bytes, guest writes
//! cq_off CQ         cq_entries * 16 bytes, host writes
//! log_off LOG       log_entries * 16 bytes, guest writes (only with FEATURE_RELEASE_LOG)
//! ```
//!
//! Every cache line has exactly one writer. All fields are little-endian.
//!
//! # Memory ordering
//!
//! Ring indices are free-running `u32` values; a slot is `index & (entries - 1)`.
//! A producer writes the entry, then publishes the index with a store-release. A
//! consumer reads the index with a load-acquire, then reads the entry, then
//! releases the slot by publishing its own index with a store-release. Before a
//! producer tests a peer's wakeup flag it executes a full fence after publishing,
//! and a consumer that sets its wakeup flag executes a full fence before it
//! re-reads the producer index, so that no notification is lost.
//!
//! Nothing read from the peer is trusted: indices, opcodes, ids and counts are all
//! validated here before use.
//!
//! # Reset
//!
//! With [`FEATURE_RESET`], the guest can ask the host to forget every object it holds
//! for this guest: it stores a new value into `guest_ctl::RESET` with a store-release
//! and rings. At the start of its next round, and between requests, the host reads
//! `RESET` with a load-acquire; when it differs from the last value it acknowledged,
//! the host drops every object and every completion it holds back, discards the
//! unconsumed submissions (its `sq_head` becomes the guest's `sq_tail`), and then
//! stores the value into `host_ctl::RESET_ACK` with a store-release and interrupts.
//! Once the guest reads its value back with a load-acquire, the host holds nothing
//! of the guest's any more: every parked page directory may be released, and the
//! guest skips the completions posted before the acknowledgment. A guest uses this
//! when it detaches and to recover a ring whose indices went wrong.

use core::fmt;

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
/// All features this version defines.
pub const FEATURES_ALL: u32 =
    FEATURE_NEED_WAKEUP | FEATURE_IRQ_SUPPRESS | FEATURE_RESET | FEATURE_RELEASE_LOG;

/// Byte offsets of the header fields.
pub mod header {
    /// [`super::MAGIC`].
    pub const MAGIC: usize = 0x00;
    /// [`super::VERSION`].
    pub const VERSION: usize = 0x04;
    /// Feature bits the host offers.
    pub const FEATURES: usize = 0x08;
    /// Submission ring entries (power of two).
    pub const SQ_ENTRIES: usize = 0x0c;
    /// Completion ring entries (power of two, at least `SQ_ENTRIES`).
    pub const CQ_ENTRIES: usize = 0x10;
    /// Byte offset of the submission ring.
    pub const SQ_OFF: usize = 0x14;
    /// Byte offset of the completion ring.
    pub const CQ_OFF: usize = 0x18;
    /// Bytes of shared memory the layout uses.
    pub const SIZE: usize = 0x1c;
    /// ivshmem peer id the guest rings for the host.
    pub const HOST_PEER: usize = 0x20;
    /// Byte offset of the release log (zero without one).
    pub const LOG_OFF: usize = 0x24;
    /// Release log entries (power of two, zero without a log).
    pub const LOG_ENTRIES: usize = 0x28;
}

/// Byte offsets of the guest-written control line.
pub mod guest_ctl {
    /// Base of the line.
    pub const BASE: usize = 0x40;
    /// Submission ring producer index.
    pub const SQ_TAIL: usize = BASE;
    /// Completion ring consumer index.
    pub const CQ_HEAD: usize = BASE + 0x04;
    /// `GUEST_*` flags.
    pub const FLAGS: usize = BASE + 0x08;
    /// Feature bits the guest accepted (a subset of the host's).
    pub const FEATURES: usize = BASE + 0x0c;
    /// Driver instance counter; the top byte of every tag (see [`super::tag`]).
    pub const EPOCH: usize = BASE + 0x10;
    /// Reset requests: a new value asks the host to forget everything.
    pub const RESET: usize = BASE + 0x14;
    /// Release log producer index.
    pub const LOG_TAIL: usize = BASE + 0x18;
}

/// Byte offsets of the host-written control line.
pub mod host_ctl {
    /// Base of the line.
    pub const BASE: usize = 0x80;
    /// Submission ring consumer index.
    pub const SQ_HEAD: usize = BASE;
    /// Completion ring producer index.
    pub const CQ_TAIL: usize = BASE + 0x04;
    /// `HOST_*` flags.
    pub const FLAGS: usize = BASE + 0x08;
    /// Number of malformed guest inputs the host rejected (informational).
    pub const ERRORS: usize = BASE + 0x0c;
    /// The last `guest_ctl::RESET` value the host carried out.
    pub const RESET_ACK: usize = BASE + 0x10;
    /// Release log consumer index.
    pub const LOG_HEAD: usize = BASE + 0x14;
    /// DESTROYs the host holds unanswered: taken without a published completion
    /// and, when the host audits releases, waiting in the submission ring.
    /// Informational, for tests that check the guest's credits against what the
    /// host really held.
    pub const DESTROYS_HELD: usize = BASE + 0x18;
}

/// Guest flag: the guest is attached and consuming completions.
pub const GUEST_READY: u32 = 1 << 0;
/// Guest flag: the guest wants an interrupt for new completions.
pub const GUEST_NEED_IRQ: u32 = 1 << 1;
/// Host flag: the host is idle and needs a doorbell for new submissions.
pub const HOST_NEED_WAKEUP: u32 = 1 << 0;

/// Size of one submission entry.
pub const SQE_SIZE: usize = 32;
/// Size of one completion entry.
pub const CQE_SIZE: usize = 16;
/// Size of one release log entry.
pub const LOG_ENTRY_SIZE: usize = 16;
/// Largest ring the protocol allows.
pub const MAX_ENTRIES: u32 = 1 << 15;
/// Largest space id: a physical address below 2^52.
pub const MAX_SPACE: u64 = (1 << 52) - 1;
/// Largest page count a request may carry (4 PiB of 4 KiB pages).
pub const MAX_PAGES: u64 = 1 << 40;

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

/// Submission opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// A new address space exists. `pages` is zero.
    Create = 1,
    /// An address space is being torn down; `pages` is its size.
    Destroy = 2,
}

impl Op {
    /// Decodes a wire opcode.
    pub fn from_raw(raw: u16) -> Option<Op> {
        match raw {
            1 => Some(Op::Create),
            2 => Some(Op::Destroy),
            _ => None,
        }
    }
}

/// Completion status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// DESTROY of a space the host does not know.
    UnknownSpace = 1,
    /// CREATE of a space the host already has.
    Exists = 2,
    /// The host could not allocate its object.
    NoMemory = 3,
    /// DESTROY whose tag is not the one the space was created with; nothing done.
    StaleTag = 4,
}

impl Status {
    /// Decodes a wire status.
    pub fn from_raw(raw: u16) -> Option<Status> {
        match raw {
            0 => Some(Status::Ok),
            1 => Some(Status::UnknownSpace),
            2 => Some(Status::Exists),
            3 => Some(Status::NoMemory),
            4 => Some(Status::StaleTag),
            _ => None,
        }
    }
}

/// One submission, guest to host.
///
/// Wire form (32 bytes): `opcode: u16, flags: u16, tag: u32, space: u64, pages: u64,
/// reserved: u64`. `flags` and `reserved` must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Guest cookie echoed in the completion; lets the guest reject stale completions.
    pub tag: u32,
    /// Address space id (the pgd's physical address), `1..=MAX_SPACE`.
    pub space: u64,
    /// Size of the address space in pages, `0..=MAX_PAGES`.
    pub pages: u64,
}

/// Why an entry read from the peer was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadEntry {
    /// Unknown opcode.
    Opcode(u16),
    /// Unknown status.
    Status(u16),
    /// Flags or reserved bits set.
    // This and `Pages` come from the decoders of the guest's entries, in `host.rs`.
    #[allow(dead_code)]
    Reserved,
    /// Space id zero or above [`MAX_SPACE`].
    Space(u64),
    /// Page count above [`MAX_PAGES`].
    #[allow(dead_code)]
    Pages(u64),
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadEntry::Opcode(o) => write!(f, "unknown opcode {o}"),
            BadEntry::Status(s) => write!(f, "unknown status {s}"),
            BadEntry::Reserved => f.write_str("reserved bits set"),
            BadEntry::Space(s) => write!(f, "space id {s:#x} out of range"),
            BadEntry::Pages(p) => write!(f, "page count {p} out of range"),
        }
    }
}

pub(crate) fn check_space(space: u64) -> Result<u64, BadEntry> {
    if space == 0 || space > MAX_SPACE {
        Err(BadEntry::Space(space))
    } else {
        Ok(space)
    }
}

/// One completion, host to guest.
///
/// Wire form (16 bytes): `space: u64, tag: u32, opcode: u16, status: u16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Opcode of the request this completes.
    pub op: Op,
    /// Outcome.
    pub status: Status,
    /// Tag of the request.
    pub tag: u32,
    /// Space id of the request.
    pub space: u64,
}

/// Why the guest released a page directory, as reported in the release log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Why {
    /// After the host's DESTROY completion.
    Acked = 0,
    /// After the host acknowledged a reset, which forgets every object.
    Reset = 1,
    /// Without an acknowledgment (the host was declared dead or detach timed out);
    /// the guest counts and logs these.
    Forced = 2,
}

/// One release log entry, guest to host.
///
/// Wire form (16 bytes): `space: u64, tag: u32, why: u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// The space whose page directory was released.
    pub space: u64,
    /// Tag of the space's requests.
    pub tag: u32,
    /// On what grounds.
    pub why: Why,
}

/// Checks a peer's index against ours: `tail - head` must lie in `0..=entries`.
fn distance(head: u32, tail: u32, entries: u32) -> Option<u32> {
    let d = tail.wrapping_sub(head);
    (d <= entries).then_some(d)
}

/// Where a ring's entries are: the index arithmetic every ring end shares.
///
/// A plain value, copied from a validated [`Layout`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring {
    off: usize,
    entries: u32,
    entry_size: usize,
}

impl Ring {
    /// The submission ring.
    pub(crate) fn sq(layout: &Layout) -> Ring {
        Ring {
            off: layout.sq_off as usize,
            entries: layout.sq_entries,
            entry_size: SQE_SIZE,
        }
    }

    /// The completion ring.
    pub(crate) fn cq(layout: &Layout) -> Ring {
        Ring {
            off: layout.cq_off as usize,
            entries: layout.cq_entries,
            entry_size: CQE_SIZE,
        }
    }

    /// The release log.
    pub(crate) fn log(layout: &Layout) -> Ring {
        Ring {
            off: layout.log_off as usize,
            entries: layout.log_entries,
            entry_size: LOG_ENTRY_SIZE,
        }
    }

    /// Number of slots.
    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }

    /// Entries between a consumer index `head` and a producer index `tail`; `None`
    /// when one of them is impossible against the other.
    pub(crate) fn used(&self, head: u32, tail: u32) -> Option<u32> {
        distance(head, tail, self.entries)
    }

    /// Byte offset of the entry at free-running index `index`.
    pub(crate) fn entry(&self, index: u32) -> usize {
        self.off + (index & self.entries.wrapping_sub(1)) as usize * self.entry_size
    }

    /// Reads the `N` words of the entry at `index`.
    pub(crate) fn read<const N: usize>(&self, shm: &impl SharedMemory, index: u32) -> [u64; N] {
        let base = self.entry(index);
        core::array::from_fn(|i| shm.read_u64(base + i * 8))
    }

    /// Writes `words` into the entry at `index`.
    pub(crate) fn write(&self, shm: &impl SharedMemory, index: u32, words: &[u64]) {
        let base = self.entry(index);
        for (i, w) in words.iter().enumerate() {
            shm.write_u64(base + i * 8, *w);
        }
    }
}

/// The producing end of a ring: owns the producer index, published at `tail_at`, and
/// reads the consumer's at `head_at`.
///
/// Entries are written first and published together: an entry becomes visible with
/// the store-release of an index past it (see the module docs on ordering).
#[derive(Debug)]
pub(crate) struct Producer {
    ring: Ring,
    tail: u32,
    tail_at: usize,
    head_at: usize,
}

impl Producer {
    /// Produces from index `tail` on: 0 on control lines just zeroed, or the index
    /// this end last published, which is trusted because that line is its own.
    pub(crate) fn at(ring: Ring, tail: u32, tail_at: usize, head_at: usize) -> Producer {
        Producer {
            ring,
            tail,
            tail_at,
            head_at,
        }
    }

    /// The ring.
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The producer index, including entries not yet published.
    pub(crate) fn index(&self) -> u32 {
        self.tail
    }

    /// Free slots, after validating the consumer's index.
    pub(crate) fn space(&self, shm: &impl SharedMemory) -> Result<u32, Error> {
        let head = shm.load_acquire_u32(self.head_at);
        match self.ring.used(head, self.tail) {
            Some(used) => Ok(self.ring.entries - used),
            None => Err(Error::BadIndex {
                ours: self.tail,
                theirs: head,
            }),
        }
    }

    /// Writes `words` into the next slot, unpublished; [`Error::Full`] without one.
    pub(crate) fn push(&mut self, shm: &impl SharedMemory, words: &[u64]) -> Result<(), Error> {
        if self.space(shm)? == 0 {
            return Err(Error::Full);
        }
        self.ring.write(shm, self.tail, words);
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Publishes every pushed entry.
    pub(crate) fn publish(&self, shm: &impl SharedMemory) {
        shm.store_release_u32(self.tail_at, self.tail);
    }
}

/// The consuming end of a ring: owns the consumer index, published at `head_at`, and
/// reads the producer's at `tail_at`.
#[derive(Debug)]
pub(crate) struct Consumer {
    /// Where the entries are; the host also peeks at waiting entries.
    pub(super) ring: Ring,
    head: u32,
    head_at: usize,
    tail_at: usize,
}

impl Consumer {
    /// Consumes from index `head` on, like [`Producer::at`].
    pub(crate) fn at(ring: Ring, head: u32, head_at: usize, tail_at: usize) -> Consumer {
        Consumer {
            ring,
            head,
            head_at,
            tail_at,
        }
    }

    /// The consumer index, including entries not yet released.
    pub(crate) fn index(&self) -> u32 {
        self.head
    }

    /// The producer's index, with the acquire that makes the entries before it
    /// readable.
    pub(crate) fn producer_index(&self, shm: &impl SharedMemory) -> u32 {
        shm.load_acquire_u32(self.tail_at)
    }

    /// Published entries not yet taken, after validating the producer's index.
    pub(crate) fn pending(&self, shm: &impl SharedMemory) -> Result<u32, Error> {
        let tail = self.producer_index(shm);
        self.ring.used(self.head, tail).ok_or(Error::BadIndex {
            ours: self.head,
            theirs: tail,
        })
    }

    /// Takes the next entry if [`Self::pending`] said there is one.
    pub(crate) fn take<const N: usize>(&mut self, shm: &impl SharedMemory) -> [u64; N] {
        let words = self.ring.read(shm, self.head);
        self.head = self.head.wrapping_add(1);
        words
    }

    /// Takes the next entry; `Ok(None)` when there is none.
    pub(crate) fn pop<const N: usize>(
        &mut self,
        shm: &impl SharedMemory,
    ) -> Result<Option<[u64; N]>, Error> {
        Ok((self.pending(shm)? > 0).then(|| self.take(shm)))
    }

    /// Moves past everything published, unread; see [`Self::release`].
    pub(crate) fn skip_to(&mut self, index: u32) {
        self.head = index;
    }

    /// Hands the consumed slots back to the producer.
    pub(crate) fn release(&self, shm: &impl SharedMemory) {
        shm.store_release_u32(self.head_at, self.head);
    }
}
