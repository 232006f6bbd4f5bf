// SPDX-License-Identifier: GPL-2.0

//! The fuzz body's oracle ([`Oracle`]) and the window as the host sees it
//! ([`Spy`]), which shows the oracle every access the host makes; see the
//! rules in the parent module's docs.

use std::cell::RefCell;
use std::collections::HashMap;

use pvmm_wire::{
    guest_ctl, host_ctl, Completion, Layout, Op, Request, SharedMemory, Status, CQE_SIZE, SQE_SIZE,
};

use super::Report;

/// What the host did, as seen through [`Spy`]; panics when it breaks a rule.
#[derive(Debug)]
pub(super) struct Oracle {
    layout: Layout,
    max_objects: usize,
    /// The host injects no fault that breaks the protocol: every published
    /// completion must match a request, in order, exactly once. Otherwise
    /// (`--fault` modes) the completion rules are off and the rest holds.
    pub(super) strict: bool,
    /// The host's objects as they must be: space id to creating tag.
    pub(super) objects: HashMap<u64, u32>,
    /// Completions owed for consumed requests, oldest first.
    pub(super) owed: Vec<Completion>,
    /// The SQ entry being read: slot and the words so far.
    reading: Option<(usize, Vec<u64>)>,
    /// CQ entries written since the last published tail: slot and words.
    written: Vec<(usize, Vec<u64>)>,
    /// The CQ tail the host published last.
    pub(super) cq_tail: u32,
    /// The SQ head the host published last.
    pub(super) sq_head: u32,
    /// Entries the host read since it published `sq_head`.
    read: u32,
    /// The host moved its SQ head past entries it did not read; only a reset
    /// may do that.
    skipped: bool,
    /// Written CQ entries were dropped unpublished; only a reset may do that.
    dropped: bool,
    /// Per SQ slot, what the scripted guest's producer wrote there, unless a
    /// raw write touched the slot since.
    guest_slots: Vec<Option<[u64; 4]>>,
    pub(super) report: Report,
}

impl Oracle {
    pub(super) fn new(layout: Layout, max_objects: usize, strict: bool) -> Oracle {
        Oracle {
            layout,
            max_objects,
            strict,
            objects: HashMap::new(),
            owed: Vec::new(),
            reading: None,
            written: Vec::new(),
            cq_tail: 0,
            sq_head: 0,
            read: 0,
            skipped: false,
            dropped: false,
            guest_slots: vec![None; layout.sq_entries as usize],
            report: Report::default(),
        }
    }

    fn sq_slot(&self, off: usize) -> Option<(usize, usize)> {
        let rel = off.checked_sub(self.layout.sq_off as usize)?;
        let slot = rel / SQE_SIZE;
        (slot < self.layout.sq_entries as usize).then_some((slot, rel % SQE_SIZE / 8))
    }

    fn cq_slot(&self, off: usize) -> Option<(usize, usize)> {
        let rel = off.checked_sub(self.layout.cq_off as usize)?;
        let slot = rel / CQE_SIZE;
        (slot < self.layout.cq_entries as usize).then_some((slot, rel % CQE_SIZE / 8))
    }

    /// The guest's producer wrote `req` into `slot`.
    pub(super) fn guest_wrote(&mut self, slot: usize, req: &Request) {
        self.guest_slots[slot] = Some(req.encode());
    }

    /// A raw guest write covered bytes `off..off + len`.
    pub(super) fn raw_write(&mut self, off: usize, len: usize) {
        let sq = self.layout.sq_off as usize;
        let end = sq + self.layout.sq_entries as usize * SQE_SIZE;
        for at in (off..off + len).step_by(8) {
            if (sq..end).contains(&at) {
                self.guest_slots[(at - sq) / SQE_SIZE] = None;
            }
        }
    }

    /// The host read a word of SQ slot `slot`.
    fn sq_read(&mut self, slot: usize, word: usize, val: u64) {
        let mut entry = match self.reading.take() {
            None if word == 0 => Vec::new(),
            Some((s, w)) if s == slot && w.len() == word => w,
            // Only the opcode word of the last one: a peek at a waiting entry
            // (`SqConsumer::pending_destroys`), which reads nothing else.
            Some((_, w)) if word == 0 && w.len() == 1 => Vec::new(),
            r => panic!("host read SQ slot {slot} word {word} while reading {r:?}"),
        };
        entry.push(val);
        if entry.len() < 4 {
            self.reading = Some((slot, entry));
            return;
        }
        let w = [entry[0], entry[1], entry[2], entry[3]];
        self.read += 1;
        if let Some(g) = self.guest_slots[slot] {
            assert_eq!(w, g, "SQ slot {slot} reads other than the guest wrote");
        }
        let Ok(req) = Request::decode(w) else {
            // Malformed: consumed without a completion.
            return;
        };
        self.report.consumed += 1;
        if self.guest_slots[slot].is_some() {
            self.report.submitted += 1;
        }
        let status = self.handle(&req);
        self.owed.push(Completion {
            op: req.op,
            status,
            tag: req.tag,
            space: req.space,
        });
    }

    /// What the host must answer, in the order it takes requests.
    fn handle(&mut self, req: &Request) -> Status {
        match req.op {
            Op::Create => {
                if self.objects.remove(&req.space).is_none()
                    && self.objects.len() >= self.max_objects
                {
                    return Status::NoMemory;
                }
                self.objects.insert(req.space, req.tag);
                Status::Ok
            }
            Op::Destroy => match self.objects.get(&req.space) {
                None => Status::UnknownSpace,
                Some(&t) if t != req.tag => Status::StaleTag,
                Some(_) => {
                    self.objects.remove(&req.space);
                    Status::Ok
                }
            },
        }
    }

    /// The host stored `head` as its published SQ head: past exactly the
    /// entries it read, unless a reset acknowledgement follows.
    fn sq_release(&mut self, head: u32) {
        if head.wrapping_sub(self.sq_head) != self.read {
            self.skipped = true;
        }
        self.sq_head = head;
        self.read = 0;
    }

    /// The host wrote a word of CQ slot `slot`.
    fn cq_write(&mut self, slot: usize, word: usize, val: u64) {
        match self.written.last_mut() {
            Some((s, w)) if *s == slot && w.len() == 1 && word == 1 => w.push(val),
            _ if word == 0 => self.written.push((slot, vec![val])),
            last => panic!("host wrote CQ slot {slot} word {word} after {last:?}"),
        }
    }

    /// The host stored `tail` as its published CQ tail.
    fn cq_publish(&mut self, tail: u32) {
        let n = tail.wrapping_sub(self.cq_tail) as usize;
        if !self.strict {
            self.faulty_publish(tail, n);
            return;
        }
        assert!(
            n <= self.written.len(),
            "host published {n} completions but wrote {}",
            self.written.len()
        );
        let mask = self.layout.cq_entries as usize - 1;
        for (k, (slot, w)) in self.written.drain(..).enumerate() {
            if k >= n {
                // Written and never published: forgotten.
                self.dropped = true;
                continue;
            }
            assert_eq!(
                slot,
                (self.cq_tail as usize + k) & mask,
                "CQ slot out of order"
            );
            assert_eq!(w.len(), 2, "host published a half-written completion");
            let c = Completion::decode([w[0], w[1]])
                .unwrap_or_else(|e| panic!("host published a malformed completion: {e}"));
            let Some(i) = self.owed.iter().position(|o| *o == c) else {
                panic!("completion {c:?} matches no request; owed {:?}", self.owed);
            };
            self.owed.remove(i);
            self.report.completed += 1;
        }
        self.cq_tail = tail;
    }

    /// [`Self::cq_publish`] under a fault: what was published must still be
    /// whole, well-formed completions; they may match nothing, repeat, come
    /// late or never, and the tail may be impossible (`break-ring`).
    fn faulty_publish(&mut self, tail: u32, n: usize) {
        for (_, w) in self.written.drain(..).take(n) {
            assert_eq!(w.len(), 2, "host published a half-written completion");
            let c = Completion::decode([w[0], w[1]])
                .unwrap_or_else(|e| panic!("host published a malformed completion: {e}"));
            match self.owed.iter().position(|o| *o == c) {
                Some(i) => {
                    self.owed.remove(i);
                    self.report.completed += 1;
                }
                None => self.report.unmatched += 1,
            }
        }
        self.cq_tail = tail;
    }

    /// The host read `off`, which it must never do if the host owns the
    /// field: the guest can rewrite it at any time, so the host keeps its
    /// own copy of everything it stores there.
    fn host_read(&self, off: usize) {
        let header = 0..guest_ctl::SQ_TAIL;
        let host_line = host_ctl::SQ_HEAD..host_ctl::SQ_HEAD + 0x40;
        assert!(
            !header.contains(&off) && !host_line.contains(&off),
            "host read back its own field at {off:#x}"
        );
    }

    /// The host acknowledged a reset: it holds nothing of the guest's now.
    fn reset_acked(&mut self) {
        self.report.resets += 1;
        self.report.discarded += self.owed.len() as u64;
        self.owed.clear();
        self.objects.clear();
        self.dropped = false;
        self.skipped = false;
    }

    /// Checks made after every host round.
    pub(super) fn after_round(&self) {
        // An opcode word alone is a peek (`pending_destroys`), not a partial read.
        assert!(
            self.reading.as_ref().is_none_or(|(_, w)| w.len() == 1),
            "host read part of an SQ entry"
        );
        if !self.strict {
            // dup-ack and forged-ack push more than they publish at once, and
            // break-ring-back keeps an impossible SQ head.
            return;
        }
        assert!(
            !self.dropped,
            "host dropped written completions without a reset"
        );
        assert!(
            !self.skipped,
            "host moved its SQ head past entries it never read, without a reset"
        );
        assert_eq!(self.read, 0, "host read SQ entries it did not release");
    }
}

/// The window as the host sees it: every access goes through to the real one
/// and is shown to the [`Oracle`].
pub(super) struct Spy<'a, S: SharedMemory> {
    pub(super) shm: &'a S,
    pub(super) oracle: &'a RefCell<Oracle>,
}

impl<S: SharedMemory> Spy<'_, S> {
    fn stored(&self, off: usize, val: u32) {
        let mut o = self.oracle.borrow_mut();
        match off {
            host_ctl::CQ_TAIL => o.cq_publish(val),
            host_ctl::SQ_HEAD => o.sq_release(val),
            host_ctl::RESET_ACK => o.reset_acked(),
            _ => {}
        }
    }
}

impl<S: SharedMemory> SharedMemory for Spy<'_, S> {
    fn size(&self) -> usize {
        self.shm.size()
    }

    fn read_u32(&self, off: usize) -> u32 {
        self.oracle.borrow().host_read(off);
        self.shm.read_u32(off)
    }

    fn write_u32(&self, off: usize, val: u32) {
        self.shm.write_u32(off, val);
        self.stored(off, val);
    }

    fn read_u64(&self, off: usize) -> u64 {
        let val = self.shm.read_u64(off);
        let mut o = self.oracle.borrow_mut();
        o.host_read(off);
        o.host_read(off + 4);
        if let Some((slot, word)) = o.sq_slot(off) {
            o.sq_read(slot, word, val);
        }
        val
    }

    fn write_u64(&self, off: usize, val: u64) {
        self.shm.write_u64(off, val);
        let mut o = self.oracle.borrow_mut();
        if let Some((slot, word)) = o.cq_slot(off) {
            o.cq_write(slot, word, val);
        }
    }

    fn load_acquire_u32(&self, off: usize) -> u32 {
        self.oracle.borrow().host_read(off);
        self.shm.load_acquire_u32(off)
    }

    fn store_release_u32(&self, off: usize, val: u32) {
        self.shm.store_release_u32(off, val);
        self.stored(off, val);
    }

    fn fence(&self) {
        self.shm.fence()
    }
}
