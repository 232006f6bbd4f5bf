// SPDX-License-Identifier: GPL-2.0

//! Ring index arithmetic and the generic ring end.
//!
//! Indices are free-running `u32` values; a slot is `index & (entries - 1)`. A
//! [`RingEnd`] owns one index of one ring, publishes it in its own control line and
//! validates the peer's. Which ring it is ([`Sq`], [`Cq`], [`Log`]) fixes where the
//! entries and both indices are; which end ([`Producing`], [`Consuming`]) fixes which
//! index is its own. The ends specific to one side, and the entry codecs, are in
//! `guest.rs` and `host.rs`.

use core::marker::PhantomData;

use super::entry::{BadEntry, Completion, Release, Request, CQE_SIZE, LOG_ENTRY_SIZE, SQE_SIZE};
use super::layout::{guest_ctl, host_ctl, Error, Layout, SharedMemory};

/// Checks a peer's index against ours: `tail - head` must lie in `0..=entries`.
fn distance(head: u32, tail: u32, entries: u32) -> Option<u32> {
    let d = tail.wrapping_sub(head);
    (d <= entries).then_some(d)
}

/// Where a ring's entries are: the index arithmetic every ring end shares.
///
/// A plain value, copied from a validated [`Layout`].
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    off: usize,
    entries: u32,
    entry_size: usize,
}

impl Ring {
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
    fn write(&self, shm: &impl SharedMemory, index: u32, words: &[u64]) {
        let base = self.entry(index);
        for (i, w) in words.iter().enumerate() {
            shm.write_u64(base + i * 8, *w);
        }
    }
}

/// The wire form of an entry: `N` little-endian words.
pub trait EntryWords: Sized {
    /// Reads the entry at `index` of `ring`.
    fn read(ring: &Ring, shm: &impl SharedMemory, index: u32) -> Self;
    /// The words, to write.
    fn words(&self) -> &[u64];
}

impl<const N: usize> EntryWords for [u64; N] {
    fn read(ring: &Ring, shm: &impl SharedMemory, index: u32) -> Self {
        ring.read(shm, index)
    }

    fn words(&self) -> &[u64] {
        self
    }
}

/// One of the rings of a [`Layout`]: where its entries are, which control-line
/// fields hold its two indices, and what its entries are.
pub trait RingKind {
    /// The entry, decoded.
    type Entry;
    /// The entry's wire words.
    type Words: EntryWords;
    /// Byte offset of the producer's index (in the producer's control line).
    const PRODUCER_INDEX: usize;
    /// Byte offset of the consumer's index (in the consumer's control line).
    const CONSUMER_INDEX: usize;
    /// Where the entries are in `layout`.
    fn ring(layout: &Layout) -> Ring;
}

/// A ring whose entries this side produces: encodes them.
pub trait Encode: RingKind {
    /// The wire words of `entry`.
    fn encode(entry: &Self::Entry) -> Self::Words;
}

/// A ring whose entries this side consumes: decodes and validates them.
pub trait Decode: RingKind {
    /// The entry read from the peer, or why it is malformed.
    fn decode(words: Self::Words) -> Result<Self::Entry, BadEntry>;
}

/// What [`RingEnd::pop`] returns: `Ok(None)` when the ring is empty; a malformed entry
/// is consumed and returned as `Ok(Some(Err(_)))`; an impossible producer index is
/// `Err(_)`.
pub type Popped<T> = Result<Option<Result<T, BadEntry>>, Error>;

macro_rules! ring_kind {
    ($(#[$doc:meta])* $name:ident, $entry:ty, $n:literal, $size:expr,
     $entries:ident at $off:ident, $producer:expr, $consumer:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl RingKind for $name {
            type Entry = $entry;
            type Words = [u64; $n];
            const PRODUCER_INDEX: usize = $producer;
            const CONSUMER_INDEX: usize = $consumer;

            fn ring(layout: &Layout) -> Ring {
                Ring {
                    off: layout.$off as usize,
                    entries: layout.$entries,
                    entry_size: $size,
                }
            }
        }

        const _: () = assert!($n * 8 == $size);
    };
}

ring_kind!(
    /// The submission ring: the guest produces [`Request`]s, the host consumes them.
    Sq, Request, 4, SQE_SIZE, sq_entries at sq_off, guest_ctl::SQ_TAIL, host_ctl::SQ_HEAD
);
ring_kind!(
    /// The completion ring: the host produces [`Completion`]s, the guest consumes them.
    Cq, Completion, 2, CQE_SIZE, cq_entries at cq_off, host_ctl::CQ_TAIL, guest_ctl::CQ_HEAD
);
ring_kind!(
    /// The release log: the guest produces [`Release`]s, an auditing host consumes them.
    Log, Release, 2, LOG_ENTRY_SIZE, log_entries at log_off, guest_ctl::LOG_TAIL,
    host_ctl::LOG_HEAD
);

/// Which index a [`RingEnd`] owns.
pub trait Role {
    /// Byte offset of the index this end publishes.
    fn own<K: RingKind>() -> usize;
    /// Byte offset of the index the peer publishes.
    fn peer<K: RingKind>() -> usize;
}

/// The producing end: owns the producer index.
#[derive(Debug)]
pub struct Producing;

/// The consuming end: owns the consumer index.
#[derive(Debug)]
pub struct Consuming;

impl Role for Producing {
    fn own<K: RingKind>() -> usize {
        K::PRODUCER_INDEX
    }
    fn peer<K: RingKind>() -> usize {
        K::CONSUMER_INDEX
    }
}

impl Role for Consuming {
    fn own<K: RingKind>() -> usize {
        K::CONSUMER_INDEX
    }
    fn peer<K: RingKind>() -> usize {
        K::PRODUCER_INDEX
    }
}

/// One end of ring `K`, in role `R`: its own index, which it publishes with a
/// store-release, and the ring's geometry.
///
/// A producer writes entries first and publishes them together: an entry becomes
/// visible with the store-release of an index past it. A consumer reads the
/// producer's index with a load-acquire before it reads entries, and hands slots back
/// by publishing its own. Nothing read from the peer is trusted: its index is
/// validated against ours at every read.
///
/// A plain value with no locking of its own: one owner (the driver keeps it under
/// a lock, the host in its per-guest state) uses it at a time.
#[derive(Debug)]
pub struct RingEnd<K, R> {
    /// Where the entries are; the host also peeks at waiting entries.
    pub(crate) ring: Ring,
    index: u32,
    _kind: PhantomData<(K, R)>,
}

impl<K: RingKind, R: Role> RingEnd<K, R> {
    /// Starts at index `index`.
    pub(crate) fn at(layout: &Layout, index: u32) -> Self {
        RingEnd {
            ring: K::ring(layout),
            index,
            _kind: PhantomData,
        }
    }

    /// Continues where an earlier instance of this side stopped: at the index it last
    /// published (zero on a fresh window). The line is this side's to write, but the
    /// peer can write it too, so the value read back is not trusted. It is safe to
    /// start from: every use checks it against the peer's index (a producer's free
    /// space, a consumer's pending count) before a slot is read or written, so a
    /// forged index is either impossible, a protocol error, or one within the ring,
    /// which can only make this side re-read or skip the peer's entries (each is
    /// validated, and a repeated completion is rejected) or hand the peer slots it
    /// wrote itself: nothing the peer could not do through its own index.
    pub fn resume(layout: Layout, shm: &impl SharedMemory) -> Self {
        Self::at(&layout, shm.read_u32(R::own::<K>()))
    }

    /// The current index, including entries not yet published or released.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The peer's index, with the acquire that orders what follows after it.
    pub(crate) fn peer_index(&self, shm: &impl SharedMemory) -> u32 {
        shm.load_acquire_u32(R::peer::<K>())
    }

    /// Publishes the index: pushed entries to the consumer, or consumed slots to the
    /// producer.
    pub(crate) fn publish_index(&self, shm: &impl SharedMemory) {
        shm.store_release_u32(R::own::<K>(), self.index);
    }

    /// After a wakeup flag was changed: whether the peer's index moved meanwhile, with
    /// the full fence that orders the flag's store before the read.
    pub(crate) fn peer_moved(&self, shm: &impl SharedMemory) -> bool {
        shm.fence();
        self.peer_index(shm) != self.index
    }
}

impl<K: RingKind> RingEnd<K, Producing> {
    /// Free slots, after validating the consumer's index.
    pub fn space(&self, shm: &impl SharedMemory) -> Result<u32, Error> {
        let head = self.peer_index(shm);
        match self.ring.used(head, self.index) {
            Some(used) => Ok(self.ring.entries - used),
            None => Err(Error::BadIndex {
                ours: self.index,
                theirs: head,
            }),
        }
    }

    /// Writes `words` into the next slot, unpublished; [`Error::Full`] without one.
    pub(crate) fn push_words(
        &mut self,
        shm: &impl SharedMemory,
        words: &[u64],
    ) -> Result<(), Error> {
        if self.space(shm)? == 0 {
            return Err(Error::Full);
        }
        self.ring.write(shm, self.index, words);
        self.index = self.index.wrapping_add(1);
        Ok(())
    }
}

impl<K: RingKind> RingEnd<K, Consuming> {
    /// Published entries not yet taken, after validating the producer's index.
    pub fn pending(&self, shm: &impl SharedMemory) -> Result<u32, Error> {
        let tail = self.peer_index(shm);
        self.ring.used(self.index, tail).ok_or(Error::BadIndex {
            ours: self.index,
            theirs: tail,
        })
    }

    /// Hands the consumed slots back to the producer.
    pub fn release(&self, shm: &impl SharedMemory) {
        self.publish_index(shm);
    }

    /// Drops every entry the producer published, unread, and releases the slots. The
    /// producer's index is taken as it is: this is how a reset recovers from one that
    /// went wrong.
    pub fn skip_all(&mut self, shm: &impl SharedMemory) {
        self.index = self.peer_index(shm);
        self.release(shm);
    }
}

impl<K: Decode> RingEnd<K, Consuming> {
    /// Takes the next entry if [`Self::pending`] said there is one. The slot is
    /// handed back to the producer at [`Self::release`].
    pub fn take(&mut self, shm: &impl SharedMemory) -> Result<K::Entry, BadEntry> {
        let words = K::Words::read(&self.ring, shm, self.index);
        self.index = self.index.wrapping_add(1);
        K::decode(words)
    }

    /// Takes the next entry, after validating the producer's index.
    pub fn pop(&mut self, shm: &impl SharedMemory) -> Popped<K::Entry> {
        Ok((self.pending(shm)? > 0).then(|| self.take(shm)))
    }
}

impl<K: Encode> RingEnd<K, Producing> {
    /// Writes `entry` into the next slot, unpublished; [`Error::Full`] without one.
    pub fn push(&mut self, shm: &impl SharedMemory, entry: &K::Entry) -> Result<(), Error> {
        self.push_words(shm, K::encode(entry).words())
    }
}
