// SPDX-License-Identifier: GPL-2.0

//! The guest's end of the pvmm wire format: it produces submissions and release log
//! entries and consumes completions. See `drivers/pvmm/wire.rs` for the layout and
//! the ordering rules.

use super::entry::{check_space, BadEntry, Completion, Op, Release, Request, Status};
use super::layout::{
    guest_ctl, header, host_ctl, Error, Header, Layout, SharedMemory, FEATURES_ALL,
    FEATURE_RELEASE_LOG, GUEST_NEED_IRQ, GUEST_READY, HOST_NEED_WAKEUP, MAGIC, VERSION,
};
use super::ring::{Consuming, Cq, Decode, Encode, Log, Producing, RingEnd, RingKind, Sq};

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
}

impl Encode for Sq {
    fn encode(r: &Request) -> [u64; 4] {
        r.encode()
    }
}

impl Completion {
    /// Decodes and validates two wire words.
    pub fn decode(w: [u64; 2]) -> Result<Completion, BadEntry> {
        let space = check_space(w[0])?;
        let opcode = (w[1] >> 32) as u16;
        let status = (w[1] >> 48) as u16;
        Ok(Completion {
            op: Op::try_from(opcode)?,
            status: Status::try_from(status)?,
            tag: w[1] as u32,
            space,
        })
    }
}

impl Decode for Cq {
    fn decode(w: [u64; 2]) -> Result<Completion, BadEntry> {
        Completion::decode(w)
    }
}

impl Release {
    /// Encodes into the two wire words.
    pub fn encode(&self) -> [u64; 2] {
        [self.space, self.tag as u64 | (self.why as u64) << 32]
    }
}

/// Guest side of the submission ring: owns `sq_tail`; the host owns `sq_head`.
pub type SqProducer = RingEnd<Sq, Producing>;

/// Guest side of the completion ring: owns `cq_head`.
pub type CqConsumer = RingEnd<Cq, Consuming>;

/// Guest side of the release log. Lossy by design: when the host does not keep up,
/// entries are dropped and the guest counts them.
pub type LogProducer = RingEnd<Log, Producing>;

impl SqProducer {
    /// Publishes pushed entries. Returns whether the host asked for a doorbell.
    pub fn publish(&self, shm: &impl SharedMemory) -> bool {
        self.publish_index(shm);
        host_needs_wakeup(shm)
    }

    /// Whether the host has consumed the entry pushed at index `pos`. A host releases
    /// a request's slot before it publishes the completion, so a completion of a
    /// request it has not consumed is forged.
    pub fn consumed(&self, shm: &impl SharedMemory, pos: u32) -> bool {
        let ahead = self.index().wrapping_sub(pos);
        if ahead == 0 || ahead > u32::MAX / 2 {
            // Not pushed yet.
            return false;
        }
        if ahead > self.ring.entries() {
            // Older than the ring: its slot was reused, so it was consumed.
            return true;
        }
        let past = self.peer_index(shm).wrapping_sub(pos);
        past >= 1 && past <= ahead
    }
}

impl CqConsumer {
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
        want && self.peer_moved(shm)
    }
}

impl LogProducer {
    /// Writes and publishes one entry: nobody waits for a batch of them.
    pub fn push(&mut self, shm: &impl SharedMemory, r: &Release) -> Result<(), Error> {
        self.push_words(shm, &r.encode())?;
        self.publish_index(shm);
        Ok(())
    }
}

/// Guest side: watches the completion ring for one completion without consuming it.
///
/// Only reads, and needs no consumer state: a guest that waits with interrupts off (and
/// so must not take the consumer's lock) polls this. Each poll reads only entries it has
/// not read before, at most a given number, whatever the host published; one poll with
/// `max` = `cq_entries` reads the whole ring.
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
        let ring = Cq::ring(layout);
        let head = shm.read_u32(guest_ctl::CQ_HEAD);
        let tail = shm.load_acquire_u32(host_ctl::CQ_TAIL);
        let Some(n) = ring.used(head, tail) else {
            return false;
        };
        // Entries before `next` were read already, unless the consumer passed it.
        let start = match self.next {
            Some(i) if ring.used(head, i).is_some_and(|d| d <= n) => i,
            _ => head,
        };
        let count = tail.wrapping_sub(start).min(max);
        self.next = Some(start.wrapping_add(count));
        (0..count).any(|i| {
            matches!(Completion::decode(ring.read(shm, start.wrapping_add(i))),
                Ok(c) if c.op == self.op && c.space == self.space && c.tag == self.tag)
        })
    }
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

/// Guest side: whether the host published completions beyond the head the guest
/// handed back last. Lock-free, so only a hint: a hostile host can make it say
/// anything, and the consumer validates whatever it then reads.
pub fn guest_cq_waiting(shm: &impl SharedMemory) -> bool {
    shm.load_acquire_u32(host_ctl::CQ_TAIL) != shm.read_u32(guest_ctl::CQ_HEAD)
}

/// Guest side: the DESTROYs the host says it holds unanswered (informational: a
/// hostile host can say anything, so it is only ever shown, never acted on).
pub fn host_destroys_held(shm: &impl SharedMemory) -> u32 {
    shm.read_u32(host_ctl::DESTROYS_HELD)
}

/// Guest side: how many malformed submissions the host says it rejected
/// (informational, like [`host_destroys_held`]).
pub fn host_rejected(shm: &impl SharedMemory) -> u32 {
    shm.read_u32(host_ctl::ERRORS)
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
