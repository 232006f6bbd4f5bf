// SPDX-License-Identifier: GPL-2.0

//! The host's end of the pvmm wire format: it consumes submissions and release log
//! entries and produces completions. See `drivers/pvmm/wire.rs` for the layout and
//! the ordering rules. The guest driver does not compile this file.

use super::entry::{
    check_space, BadEntry, Completion, Op, Release, Request, Why, CQE_SIZE, LOG_ENTRY_SIZE,
    MAX_PAGES, SQE_SIZE,
};
use super::layout::{
    guest_ctl, header, host_ctl, valid_entries, Error, Layout, SharedMemory, CACHELINE,
    FEATURES_ALL, GUEST_NEED_IRQ, HOST_NEED_WAKEUP, MAGIC, VERSION,
};
use super::ring::{Consuming, Cq, Decode, Encode, Log, Producing, RingEnd, RingKind, Role, Sq};

/// Offset of the submission ring in the default layout.
pub const SQ_OFF: usize = 0x100;

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

impl Request {
    /// Decodes and validates four wire words.
    pub fn decode(w: [u64; 4]) -> Result<Request, BadEntry> {
        let opcode = w[0] as u16;
        let op = Op::try_from(opcode)?;
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

impl Decode for Sq {
    fn decode(w: [u64; 4]) -> Result<Request, BadEntry> {
        Request::decode(w)
    }
}

impl Completion {
    /// Encodes into the two wire words.
    pub fn encode(&self) -> [u64; 2] {
        [
            self.space,
            self.tag as u64 | (self.op as u64) << 32 | (self.status as u64) << 48,
        ]
    }
}

impl Encode for Cq {
    fn encode(c: &Completion) -> [u64; 2] {
        c.encode()
    }
}

impl Release {
    /// Decodes and validates two wire words.
    pub fn decode(w: [u64; 2]) -> Result<Release, BadEntry> {
        let space = check_space(w[0])?;
        Ok(Release {
            space,
            tag: w[1] as u32,
            why: Why::try_from((w[1] >> 32) as u32)?,
        })
    }
}

impl Decode for Log {
    fn decode(w: [u64; 2]) -> Result<Release, BadEntry> {
        Release::decode(w)
    }
}

/// Host side of the submission ring: owns `sq_head`.
pub type SqConsumer = RingEnd<Sq, Consuming>;

/// Host side of the completion ring: owns `cq_tail`.
pub type CqProducer = RingEnd<Cq, Producing>;

/// Host side of the release log: owns `log_head`.
pub type LogConsumer = RingEnd<Log, Consuming>;

impl<K: RingKind, R: Role> RingEnd<K, R> {
    /// Starts at index 0, for a host that has just written the header and zeroed
    /// the control lines.
    pub fn new(layout: Layout) -> Self {
        Self::at(&layout, 0)
    }
}

impl SqConsumer {
    /// How many of the `pending` entries after the consumer index are DESTROYs. Reads
    /// only their first words, at most `sq_entries` of them.
    pub fn pending_destroys(&self, shm: &impl SharedMemory, pending: u32) -> u32 {
        (0..pending.min(self.ring.entries()))
            .filter(|i| self.destroy_at(shm, *i))
            .count() as u32
    }

    /// Whether the entry `ahead` slots past the host's index holds a DESTROY
    /// opcode: a peek at its first word, which consumes nothing.
    pub fn destroy_at(&self, shm: &impl SharedMemory, ahead: u32) -> bool {
        let w = shm.read_u64(self.ring.entry(self.index().wrapping_add(ahead)));
        w as u16 == Op::Destroy as u16
    }

    /// Announces that the host is going idle (or busy). When going idle, returns
    /// whether entries arrived meanwhile, so the caller polls again instead of sleeping.
    pub fn set_need_wakeup(&self, shm: &impl SharedMemory, idle: bool) -> bool {
        let flags = if idle { HOST_NEED_WAKEUP } else { 0 };
        shm.store_release_u32(host_ctl::FLAGS, flags);
        idle && self.peer_moved(shm)
    }
}

impl CqProducer {
    /// Continues at `index`, the tail this host last published by its own
    /// count: its line in shared memory is writable by the guest, so the
    /// host never reads its own index back.
    pub fn resume_at(layout: Layout, index: u32) -> Self {
        Self::at(&layout, index)
    }

    /// Publishes pushed completions. Returns whether the guest asked for an interrupt.
    pub fn publish(&self, shm: &impl SharedMemory) -> bool {
        self.publish_index(shm);
        shm.fence();
        shm.read_u32(guest_ctl::FLAGS) & GUEST_NEED_IRQ != 0
    }
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
    sq.skip_all(shm);
    shm.store_release_u32(host_ctl::RESET_ACK, seq);
}
