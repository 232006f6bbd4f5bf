// SPDX-License-Identifier: GPL-2.0

//! The pvmm wire format: the shared-memory contract between a guest and its host.
//!
//! This file is the single source of the protocol. The guest driver compiles it as a
//! module, and the host stub compiles it through the `pvmm-wire` crate. It is plain
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

/// Offset of the submission ring in the default layout.
pub const SQ_OFF: usize = 0x100;
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

const fn align_up(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}

impl Layout {
    /// The default layout for `sq_entries` submissions and `cq_entries` completions.
    pub fn new(sq_entries: u32, cq_entries: u32) -> Result<Layout, Error> {
        if !valid_entries(sq_entries) || !valid_entries(cq_entries) || cq_entries < sq_entries {
            return Err(Error::BadLayout);
        }
        let cq_off = align_up(SQ_OFF + sq_entries as usize * SQE_SIZE, CACHELINE);
        let size = cq_off + cq_entries as usize * CQE_SIZE;
        Ok(Layout {
            sq_entries,
            cq_entries,
            sq_off: SQ_OFF as u32,
            cq_off: cq_off as u32,
            log_entries: 0,
            log_off: 0,
            size: size as u32,
        })
    }

    /// This layout with a release log of `entries` after the rings.
    pub fn with_release_log(self, entries: u32) -> Result<Layout, Error> {
        if !valid_entries(entries) {
            return Err(Error::BadLayout);
        }
        let log_off = align_up(self.size as usize, CACHELINE);
        let size = log_off + entries as usize * LOG_ENTRY_SIZE;
        Ok(Layout {
            log_entries: entries,
            log_off: log_off as u32,
            size: u32::try_from(size).map_err(|_| Error::BadLayout)?,
            ..self
        })
    }

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

    /// Host side: writes a fresh header and zeroed control lines.
    pub fn init_header(&self, shm: &impl SharedMemory, features: u32, host_peer: u32) {
        // Hide a previous header while this one is being written.
        shm.store_release_u32(header::MAGIC, 0);
        shm.write_u32(header::VERSION, VERSION);
        shm.write_u32(header::FEATURES, features & FEATURES_ALL);
        shm.write_u32(header::SQ_ENTRIES, self.sq_entries);
        shm.write_u32(header::CQ_ENTRIES, self.cq_entries);
        shm.write_u32(header::SQ_OFF, self.sq_off);
        shm.write_u32(header::CQ_OFF, self.cq_off);
        shm.write_u32(header::SIZE, self.size);
        shm.write_u32(header::HOST_PEER, host_peer);
        shm.write_u32(header::LOG_OFF, self.log_off);
        shm.write_u32(header::LOG_ENTRIES, self.log_entries);
        for off in (guest_ctl::BASE..host_ctl::BASE + CACHELINE).step_by(4) {
            shm.write_u32(off, 0);
        }
        // The magic goes last so that a guest never sees a half-written header.
        shm.store_release_u32(header::MAGIC, MAGIC);
    }
}

fn valid_entries(n: u32) -> bool {
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

impl Header {
    /// Reads and validates the header in `shm`.
    pub fn read(shm: &impl SharedMemory) -> Result<Header, Error> {
        let magic = shm.load_acquire_u32(header::MAGIC);
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let version = shm.read_u32(header::VERSION);
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let layout = Layout {
            sq_entries: shm.read_u32(header::SQ_ENTRIES),
            cq_entries: shm.read_u32(header::CQ_ENTRIES),
            sq_off: shm.read_u32(header::SQ_OFF),
            cq_off: shm.read_u32(header::CQ_OFF),
            log_entries: shm.read_u32(header::LOG_ENTRIES),
            log_off: shm.read_u32(header::LOG_OFF),
            size: shm.read_u32(header::SIZE),
        };
        layout.validate(shm.size())?;
        let mut features = shm.read_u32(header::FEATURES) & FEATURES_ALL;
        if layout.log_entries == 0 {
            features &= !FEATURE_RELEASE_LOG;
        }
        Ok(Header {
            layout,
            features,
            host_peer: shm.read_u32(header::HOST_PEER) & 0xffff,
        })
    }
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

/// Bits of a tag below the epoch: the sequence number of the request's space.
pub const TAG_SEQ_BITS: u32 = 24;

/// The tag of the `seq`th space (modulo 2^24) of driver instance `epoch` (modulo 2^8).
///
/// A driver instance that could not reset the host leaves completions behind; the
/// epoch in the top byte tells the next instance's records from them even when a page
/// frame number and a sequence number repeat. The host compares tags only for equality.
pub fn tag(epoch: u32, seq: u32) -> u32 {
    epoch << TAG_SEQ_BITS | seq & ((1 << TAG_SEQ_BITS) - 1)
}

/// The driver instance epoch a tag carries.
pub fn tag_epoch(tag: u32) -> u32 {
    tag >> TAG_SEQ_BITS
}

/// Guest side: the epoch of a new driver instance, one past the last instance's, and
/// records it.
pub fn guest_next_epoch(shm: &impl SharedMemory) -> u32 {
    let epoch = shm.read_u32(guest_ctl::EPOCH).wrapping_add(1) & 0xff;
    shm.write_u32(guest_ctl::EPOCH, epoch);
    epoch
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
    Reserved,
    /// Space id zero or above [`MAX_SPACE`].
    Space(u64),
    /// Page count above [`MAX_PAGES`].
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

fn check_space(space: u64) -> Result<u64, BadEntry> {
    if space == 0 || space > MAX_SPACE {
        Err(BadEntry::Space(space))
    } else {
        Ok(space)
    }
}

impl Request {
    /// Encodes into the four wire words.
    pub fn encode(&self) -> [u64; 4] {
        [
            self.op as u64 | (self.tag as u64) << 32,
            self.space,
            self.pages,
            0,
        ]
    }

    /// Decodes and validates four wire words.
    pub fn decode(w: [u64; 4]) -> Result<Request, BadEntry> {
        let opcode = w[0] as u16;
        let op = Op::from_raw(opcode).ok_or(BadEntry::Opcode(opcode))?;
        if (w[0] >> 16) as u16 != 0 || w[3] != 0 {
            return Err(BadEntry::Reserved);
        }
        let space = check_space(w[1])?;
        let pages = w[2];
        if pages > MAX_PAGES || (op == Op::Create && pages != 0) {
            return Err(BadEntry::Pages(pages));
        }
        Ok(Request {
            op,
            tag: (w[0] >> 32) as u32,
            space,
            pages,
        })
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

impl Completion {
    /// Encodes into the two wire words.
    pub fn encode(&self) -> [u64; 2] {
        [
            self.space,
            self.tag as u64 | (self.op as u64) << 32 | (self.status as u64) << 48,
        ]
    }

    /// Decodes and validates two wire words.
    pub fn decode(w: [u64; 2]) -> Result<Completion, BadEntry> {
        let space = check_space(w[0])?;
        let opcode = (w[1] >> 32) as u16;
        let status = (w[1] >> 48) as u16;
        Ok(Completion {
            op: Op::from_raw(opcode).ok_or(BadEntry::Opcode(opcode))?,
            status: Status::from_raw(status).ok_or(BadEntry::Status(status))?,
            tag: w[1] as u32,
            space,
        })
    }
}

/// Checks a peer's index against ours: `tail - head` must lie in `0..=entries`.
fn distance(head: u32, tail: u32, entries: u32) -> Option<u32> {
    let d = tail.wrapping_sub(head);
    (d <= entries).then_some(d)
}

/// Guest side of the submission ring.
///
/// Owns the producer index; the host owns `sq_head`.
#[derive(Debug)]
pub struct SqProducer {
    layout: Layout,
    tail: u32,
}

impl SqProducer {
    /// Starts producing at index 0 (the host zeroed the control lines).
    pub fn new(layout: Layout) -> SqProducer {
        SqProducer { layout, tail: 0 }
    }

    /// Continues where an earlier guest instance stopped: at the index it last
    /// published. That line is the guest's own, so it is trusted.
    pub fn resume(layout: Layout, shm: &impl SharedMemory) -> SqProducer {
        SqProducer {
            layout,
            tail: shm.read_u32(guest_ctl::SQ_TAIL),
        }
    }

    /// The current producer index (including unpublished entries).
    pub fn index(&self) -> u32 {
        self.tail
    }

    /// Free slots, after validating the host's consumer index.
    pub fn space(&self, shm: &impl SharedMemory) -> Result<u32, Error> {
        let head = shm.load_acquire_u32(host_ctl::SQ_HEAD);
        match distance(head, self.tail, self.layout.sq_entries) {
            Some(used) => Ok(self.layout.sq_entries - used),
            None => Err(Error::BadIndex {
                ours: self.tail,
                theirs: head,
            }),
        }
    }

    /// Writes `req` into the next slot. It becomes visible at [`Self::publish`].
    pub fn push(&mut self, shm: &impl SharedMemory, req: &Request) -> Result<(), Error> {
        if self.space(shm)? == 0 {
            return Err(Error::Full);
        }
        let slot = (self.tail & self.layout.sq_entries.wrapping_sub(1)) as usize;
        let base = self.layout.sq_off as usize + slot * SQE_SIZE;
        for (i, w) in req.encode().iter().enumerate() {
            shm.write_u64(base + i * 8, *w);
        }
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Publishes pushed entries. Returns whether the host asked for a doorbell.
    pub fn publish(&self, shm: &impl SharedMemory) -> bool {
        shm.store_release_u32(guest_ctl::SQ_TAIL, self.tail);
        host_needs_wakeup(shm)
    }

    /// Whether the host has consumed the entry pushed at index `pos`. A host releases
    /// a request's slot before it publishes the completion, so a completion of a
    /// request it has not consumed is forged.
    pub fn consumed(&self, shm: &impl SharedMemory, pos: u32) -> bool {
        let ahead = self.tail.wrapping_sub(pos);
        if ahead == 0 || ahead > u32::MAX / 2 {
            // Not pushed yet.
            return false;
        }
        if ahead > self.layout.sq_entries {
            // Older than the ring: its slot was reused, so it was consumed.
            return true;
        }
        let past = shm.load_acquire_u32(host_ctl::SQ_HEAD).wrapping_sub(pos);
        past >= 1 && past <= ahead
    }
}

/// Guest side of the completion ring.
#[derive(Debug)]
pub struct CqConsumer {
    layout: Layout,
    head: u32,
}

impl CqConsumer {
    /// Starts consuming at index 0.
    pub fn new(layout: Layout) -> CqConsumer {
        CqConsumer { layout, head: 0 }
    }

    /// Continues where an earlier guest instance stopped, like [`SqProducer::resume`].
    pub fn resume(layout: Layout, shm: &impl SharedMemory) -> CqConsumer {
        CqConsumer {
            layout,
            head: shm.read_u32(guest_ctl::CQ_HEAD),
        }
    }

    /// The current consumer index (including entries not yet released).
    pub fn index(&self) -> u32 {
        self.head
    }

    /// Takes the next completion. `Ok(None)` means the ring is empty; a malformed
    /// entry is consumed and returned as `Ok(Some(Err(_)))`.
    #[allow(clippy::type_complexity)]
    pub fn pop(
        &mut self,
        shm: &impl SharedMemory,
    ) -> Result<Option<Result<Completion, BadEntry>>, Error> {
        let tail = shm.load_acquire_u32(host_ctl::CQ_TAIL);
        match distance(self.head, tail, self.layout.cq_entries) {
            None => Err(Error::BadIndex {
                ours: self.head,
                theirs: tail,
            }),
            Some(0) => Ok(None),
            Some(_) => {
                let slot = (self.head & self.layout.cq_entries.wrapping_sub(1)) as usize;
                let base = self.layout.cq_off as usize + slot * CQE_SIZE;
                let w = [shm.read_u64(base), shm.read_u64(base + 8)];
                self.head = self.head.wrapping_add(1);
                Ok(Some(Completion::decode(w)))
            }
        }
    }

    /// Releases consumed slots to the host.
    pub fn release(&self, shm: &impl SharedMemory) {
        shm.store_release_u32(guest_ctl::CQ_HEAD, self.head);
    }

    /// After a reset: drops every completion the host published, unread, and
    /// releases the slots. The host's index is taken as it is, since the reset
    /// exists to recover from one that went wrong.
    pub fn skip_all(&mut self, shm: &impl SharedMemory) {
        self.head = shm.load_acquire_u32(host_ctl::CQ_TAIL);
        self.release(shm);
    }

    /// Asks for (or waives) an interrupt on the next completion. When arming,
    /// returns whether completions arrived meanwhile, so the caller polls again
    /// instead of sleeping.
    pub fn set_need_irq(&self, shm: &impl SharedMemory, want: bool) -> bool {
        let flags = shm.read_u32(guest_ctl::FLAGS);
        let flags = if want {
            flags | GUEST_NEED_IRQ
        } else {
            flags & !GUEST_NEED_IRQ
        };
        shm.store_release_u32(guest_ctl::FLAGS, flags);
        if !want {
            return false;
        }
        shm.fence();
        shm.load_acquire_u32(host_ctl::CQ_TAIL) != self.head
    }
}

/// Host side of the submission ring.
#[derive(Debug)]
pub struct SqConsumer {
    layout: Layout,
    head: u32,
}

impl SqConsumer {
    /// Starts consuming at index 0.
    pub fn new(layout: Layout) -> SqConsumer {
        SqConsumer { layout, head: 0 }
    }

    /// Continues where an earlier host instance stopped: at the index it last
    /// published. That line is the host's own, so it is trusted.
    pub fn resume(layout: Layout, shm: &impl SharedMemory) -> SqConsumer {
        SqConsumer {
            layout,
            head: shm.read_u32(host_ctl::SQ_HEAD),
        }
    }

    /// The current consumer index (including entries not yet released).
    pub fn index(&self) -> u32 {
        self.head
    }

    /// Number of published, unconsumed entries, after validating the guest's tail.
    pub fn pending(&self, shm: &impl SharedMemory) -> Result<u32, Error> {
        let tail = shm.load_acquire_u32(guest_ctl::SQ_TAIL);
        distance(self.head, tail, self.layout.sq_entries).ok_or(Error::BadIndex {
            ours: self.head,
            theirs: tail,
        })
    }

    /// Takes the next entry if [`Self::pending`] said there is one. The slot is
    /// handed back to the guest at [`Self::release`].
    pub fn pop(&mut self, shm: &impl SharedMemory) -> Result<Request, BadEntry> {
        let slot = (self.head & self.layout.sq_entries.wrapping_sub(1)) as usize;
        let base = self.layout.sq_off as usize + slot * SQE_SIZE;
        let w = [
            shm.read_u64(base),
            shm.read_u64(base + 8),
            shm.read_u64(base + 16),
            shm.read_u64(base + 24),
        ];
        self.head = self.head.wrapping_add(1);
        Request::decode(w)
    }

    /// Hands consumed slots back to the guest.
    pub fn release(&self, shm: &impl SharedMemory) {
        shm.store_release_u32(host_ctl::SQ_HEAD, self.head);
    }

    /// How many of the `pending` entries after the consumer index are DESTROYs. Reads
    /// only their first words, at most `sq_entries` of them.
    pub fn pending_destroys(&self, shm: &impl SharedMemory, pending: u32) -> u32 {
        let n = pending.min(self.layout.sq_entries);
        let mask = self.layout.sq_entries.wrapping_sub(1);
        (0..n)
            .filter(|i| {
                let slot = (self.head.wrapping_add(*i) & mask) as usize;
                let w = shm.read_u64(self.layout.sq_off as usize + slot * SQE_SIZE);
                w as u16 == Op::Destroy as u16
            })
            .count() as u32
    }

    /// Announces that the host is going idle (or busy). When going idle, returns
    /// whether entries arrived meanwhile, so the caller polls again instead of sleeping.
    pub fn set_need_wakeup(&self, shm: &impl SharedMemory, idle: bool) -> bool {
        let flags = if idle { HOST_NEED_WAKEUP } else { 0 };
        shm.store_release_u32(host_ctl::FLAGS, flags);
        if !idle {
            return false;
        }
        shm.fence();
        shm.load_acquire_u32(guest_ctl::SQ_TAIL) != self.head
    }
}

/// Host side of the completion ring.
#[derive(Debug)]
pub struct CqProducer {
    layout: Layout,
    tail: u32,
}

impl CqProducer {
    /// Starts producing at index 0.
    pub fn new(layout: Layout) -> CqProducer {
        CqProducer { layout, tail: 0 }
    }

    /// Continues where an earlier host instance stopped, like [`SqConsumer::resume`].
    pub fn resume(layout: Layout, shm: &impl SharedMemory) -> CqProducer {
        CqProducer {
            layout,
            tail: shm.read_u32(host_ctl::CQ_TAIL),
        }
    }

    /// The current producer index (including unpublished entries).
    pub fn index(&self) -> u32 {
        self.tail
    }

    /// Free slots, after validating the guest's consumer index.
    pub fn space(&self, shm: &impl SharedMemory) -> Result<u32, Error> {
        let head = shm.load_acquire_u32(guest_ctl::CQ_HEAD);
        match distance(head, self.tail, self.layout.cq_entries) {
            Some(used) => Ok(self.layout.cq_entries - used),
            None => Err(Error::BadIndex {
                ours: self.tail,
                theirs: head,
            }),
        }
    }

    /// Writes `c` into the next slot; it becomes visible at [`Self::publish`].
    pub fn push(&mut self, shm: &impl SharedMemory, c: &Completion) -> Result<(), Error> {
        if self.space(shm)? == 0 {
            return Err(Error::Full);
        }
        let slot = (self.tail & self.layout.cq_entries.wrapping_sub(1)) as usize;
        let base = self.layout.cq_off as usize + slot * CQE_SIZE;
        let w = c.encode();
        shm.write_u64(base, w[0]);
        shm.write_u64(base + 8, w[1]);
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Publishes pushed completions. Returns whether the guest asked for an interrupt.
    pub fn publish(&self, shm: &impl SharedMemory) -> bool {
        shm.store_release_u32(host_ctl::CQ_TAIL, self.tail);
        shm.fence();
        shm.read_u32(guest_ctl::FLAGS) & GUEST_NEED_IRQ != 0
    }
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

impl Release {
    /// Encodes into the two wire words.
    pub fn encode(&self) -> [u64; 2] {
        [self.space, self.tag as u64 | (self.why as u64) << 32]
    }

    /// Decodes and validates two wire words.
    pub fn decode(w: [u64; 2]) -> Result<Release, BadEntry> {
        let space = check_space(w[0])?;
        let why = match (w[1] >> 32) as u32 {
            0 => Why::Acked,
            1 => Why::Reset,
            2 => Why::Forced,
            _ => return Err(BadEntry::Reserved),
        };
        Ok(Release {
            space,
            tag: w[1] as u32,
            why,
        })
    }
}

/// Guest side of the release log. Lossy by design: when the host does not keep up,
/// entries are dropped and the guest counts them.
#[derive(Debug)]
pub struct LogProducer {
    layout: Layout,
    tail: u32,
}

impl LogProducer {
    /// Continues at the index the guest last published.
    pub fn resume(layout: Layout, shm: &impl SharedMemory) -> LogProducer {
        LogProducer {
            layout,
            tail: shm.read_u32(guest_ctl::LOG_TAIL),
        }
    }

    /// Writes and publishes one entry.
    pub fn push(&mut self, shm: &impl SharedMemory, r: &Release) -> Result<(), Error> {
        let head = shm.load_acquire_u32(host_ctl::LOG_HEAD);
        match distance(head, self.tail, self.layout.log_entries) {
            None => {
                return Err(Error::BadIndex {
                    ours: self.tail,
                    theirs: head,
                })
            }
            Some(used) if used == self.layout.log_entries => return Err(Error::Full),
            Some(_) => {}
        }
        let slot = (self.tail & self.layout.log_entries.wrapping_sub(1)) as usize;
        let base = self.layout.log_off as usize + slot * LOG_ENTRY_SIZE;
        let w = r.encode();
        shm.write_u64(base, w[0]);
        shm.write_u64(base + 8, w[1]);
        self.tail = self.tail.wrapping_add(1);
        shm.store_release_u32(guest_ctl::LOG_TAIL, self.tail);
        Ok(())
    }
}

/// Host side of the release log.
#[derive(Debug)]
pub struct LogConsumer {
    layout: Layout,
    head: u32,
}

impl LogConsumer {
    /// Starts consuming at index 0.
    pub fn new(layout: Layout) -> LogConsumer {
        LogConsumer { layout, head: 0 }
    }

    /// Takes the next entry. `Ok(None)` means the log is empty.
    #[allow(clippy::type_complexity)]
    pub fn pop(
        &mut self,
        shm: &impl SharedMemory,
    ) -> Result<Option<Result<Release, BadEntry>>, Error> {
        let tail = shm.load_acquire_u32(guest_ctl::LOG_TAIL);
        match distance(self.head, tail, self.layout.log_entries) {
            None => Err(Error::BadIndex {
                ours: self.head,
                theirs: tail,
            }),
            Some(0) => Ok(None),
            Some(_) => {
                let slot = (self.head & self.layout.log_entries.wrapping_sub(1)) as usize;
                let base = self.layout.log_off as usize + slot * LOG_ENTRY_SIZE;
                let w = [shm.read_u64(base), shm.read_u64(base + 8)];
                self.head = self.head.wrapping_add(1);
                Ok(Some(Release::decode(w)))
            }
        }
    }

    /// Hands consumed slots back to the guest.
    pub fn release(&self, shm: &impl SharedMemory) {
        shm.store_release_u32(host_ctl::LOG_HEAD, self.head);
    }
}

/// Guest side: watches the completion ring for one completion without consuming it.
///
/// Only reads, and needs no consumer state: a guest that waits with interrupts off (and
/// so must not take the consumer's lock) polls this. Each poll reads only entries it has
/// not read before, at most a given number, whatever the host published.
#[derive(Debug)]
pub struct CqWatch {
    op: Op,
    space: u64,
    tag: u32,
    /// The next index to read, once it lies between the consumer and producer indices.
    next: Option<u32>,
}

impl CqWatch {
    /// Watches for a completion of `op` for `space` with `tag`.
    pub fn new(op: Op, space: u64, tag: u32) -> CqWatch {
        CqWatch {
            op,
            space,
            tag,
            next: None,
        }
    }

    /// Whether one of the next (at most `max`) unread entries after the guest's
    /// published consumer index is the completion watched for.
    pub fn poll(&mut self, shm: &impl SharedMemory, layout: &Layout, max: u32) -> bool {
        let head = shm.read_u32(guest_ctl::CQ_HEAD);
        let tail = shm.load_acquire_u32(host_ctl::CQ_TAIL);
        let Some(n) = distance(head, tail, layout.cq_entries) else {
            return false;
        };
        // Entries before `next` were read already, unless the consumer passed it.
        let start = match self.next {
            Some(i) if distance(head, i, layout.cq_entries).is_some_and(|d| d <= n) => i,
            _ => head,
        };
        let count = tail.wrapping_sub(start).min(max);
        self.next = Some(start.wrapping_add(count));
        (0..count).any(|i| {
            let slot = (start.wrapping_add(i) & layout.cq_entries.wrapping_sub(1)) as usize;
            let base = layout.cq_off as usize + slot * CQE_SIZE;
            let w = [shm.read_u64(base), shm.read_u64(base + 8)];
            matches!(Completion::decode(w),
                Ok(c) if c.op == self.op && c.space == self.space && c.tag == self.tag)
        })
    }
}

/// Guest side: whether the completion ring holds a completion of `op` for `space` with
/// `tag` after the guest's published consumer index. Reads at most `cq_entries`
/// entries; see [`CqWatch`] for repeated polls.
pub fn cq_holds(shm: &impl SharedMemory, layout: &Layout, op: Op, space: u64, tag: u32) -> bool {
    CqWatch::new(op, space, tag).poll(shm, layout, layout.cq_entries)
}

/// Guest side: whether the host is idle and needs a doorbell for published submissions.
/// Executes the full fence that orders it after the publication.
pub fn host_needs_wakeup(shm: &impl SharedMemory) -> bool {
    shm.fence();
    shm.read_u32(host_ctl::FLAGS) & HOST_NEED_WAKEUP != 0
}

/// Guest side: accepts the offered features it knows and announces that it is
/// attached and wants completion interrupts. Returns the accepted features.
pub fn guest_attach(shm: &impl SharedMemory, offered: u32) -> u32 {
    let accepted = offered & FEATURES_ALL;
    shm.write_u32(guest_ctl::FEATURES, accepted);
    shm.store_release_u32(guest_ctl::FLAGS, GUEST_READY | GUEST_NEED_IRQ);
    accepted
}

/// Guest side: the DESTROYs the host says it holds unanswered (informational: a
/// hostile host can say anything, so it is only ever shown, never acted on).
pub fn host_destroys_held(shm: &impl SharedMemory) -> u32 {
    shm.read_u32(host_ctl::DESTROYS_HELD)
}

/// Guest side: announces that nobody consumes completions any more.
pub fn guest_detach(shm: &impl SharedMemory) {
    shm.store_release_u32(guest_ctl::FLAGS, 0);
}

/// Guest side: asks the host to forget everything (see the module docs on reset).
/// Returns the request's value, which [`guest_reset_done`] waits for; the caller then
/// rings the doorbell.
pub fn guest_request_reset(shm: &impl SharedMemory) -> u32 {
    let seq = shm.read_u32(guest_ctl::RESET).wrapping_add(1);
    shm.store_release_u32(guest_ctl::RESET, seq);
    seq
}

/// Guest side: whether the host carried out reset request `seq`.
pub fn guest_reset_done(shm: &impl SharedMemory, seq: u32) -> bool {
    shm.load_acquire_u32(host_ctl::RESET_ACK) == seq
}

/// Host side: the reset request the guest published, if it differs from `acked`,
/// the last one carried out.
pub fn host_reset_requested(shm: &impl SharedMemory, acked: u32) -> Option<u32> {
    let seq = shm.load_acquire_u32(guest_ctl::RESET);
    (seq != acked).then_some(seq)
}

/// Host side: completes reset request `seq` once the host holds nothing of the guest's.
/// `sq` is moved past every unconsumed submission; the caller interrupts the guest.
pub fn host_ack_reset(shm: &impl SharedMemory, sq: &mut SqConsumer, seq: u32) {
    sq.head = shm.load_acquire_u32(guest_ctl::SQ_TAIL);
    sq.release(shm);
    shm.store_release_u32(host_ctl::RESET_ACK, seq);
}
