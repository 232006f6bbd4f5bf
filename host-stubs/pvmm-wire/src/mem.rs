// SPDX-License-Identifier: GPL-2.0

//! A safe in-memory shared-memory window over `AtomicU32` words.
//!
//! With `--cfg loom` the words are loom's atomics, so that the loom models
//! (`tests/loom.rs`) run the protocol over this same window, access for access.

extern crate alloc;

use alloc::vec::Vec;
#[cfg(not(loom))]
use core::sync::atomic::{fence, AtomicU32, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, Ordering};

use crate::SharedMemory;

/// A [`SharedMemory`] over a slice of `AtomicU32` words, usable from several
/// threads at once like a real shared mapping.
///
/// Every access is a plain atomic load or store with exactly the ordering the
/// trait names, and nothing stronger: a relaxed or release store is a single
/// `store`, never a read-modify-write. On x86 a locked read-modify-write is a
/// full barrier, and an implementation built on one would hide a missing
/// [`SharedMemory::fence`] from every test that runs over it.
///
/// A 64-bit access is two relaxed 32-bit accesses, low word first. That is not
/// single-copy atomic, and it need not be: the protocol only uses 64-bit
/// accesses for ring entries, each entry has one writer, the writer fills it
/// before it store-releases the index that publishes it, and the reader reads
/// it only after a load-acquire of that index has shown it, and the slot is
/// written again only after the reader has store-released its own index past
/// it. So a well-behaved peer never reads an entry while it is being written. A
/// hostile peer can tear one, and that yields just another garbage value, which
/// the reader validates like any other.
///
/// Bytes are little-endian whatever the host's byte order, so the window reads
/// exactly like the wire format says. Misaligned or out-of-range accesses read
/// zero and drop writes, as the trait requires.
#[derive(Debug)]
pub struct MemShm<S: AsRef<[AtomicU32]>> {
    words: S,
}

impl MemShm<Vec<AtomicU32>> {
    /// A zeroed window of at least `bytes` bytes, rounded up to whole 64-bit words.
    pub fn zeroed(bytes: usize) -> Self {
        let words = bytes.div_ceil(8) * 2;
        MemShm::new((0..words).map(|_| AtomicU32::new(0)).collect())
    }
}

impl<S: AsRef<[AtomicU32]>> MemShm<S> {
    /// Wraps `words`; the window is `4 * words.len()` bytes.
    pub fn new(words: S) -> Self {
        MemShm { words }
    }

    /// The backing words.
    pub fn words(&self) -> &[AtomicU32] {
        self.words.as_ref()
    }

    /// The word at byte offset `off`, if `off` is a multiple of `align` and in range.
    fn word(&self, off: usize, align: usize) -> Option<&AtomicU32> {
        if off % align != 0 {
            return None;
        }
        self.words.as_ref().get(off / 4)
    }

    /// Both words of the naturally aligned 64-bit field at `off`, low one first.
    fn pair(&self, off: usize) -> Option<(&AtomicU32, &AtomicU32)> {
        let lo = self.word(off, 8)?;
        let hi = self.words.as_ref().get(off / 4 + 1)?;
        Some((lo, hi))
    }

    /// One load of the 32-bit field at `off` with `order`; 0 if the offset
    /// is out of range or misaligned.
    fn load_u32(&self, off: usize, order: Ordering) -> u32 {
        self.word(off, 4).map_or(0, |w| u32::from_le(w.load(order)))
    }

    /// One store of `val` to the 32-bit field at `off` with `order`; dropped
    /// if the offset is out of range or misaligned.
    fn store_u32(&self, off: usize, val: u32, order: Ordering) {
        if let Some(w) = self.word(off, 4) {
            w.store(val.to_le(), order)
        }
    }
}

impl<S: AsRef<[AtomicU32]>> SharedMemory for MemShm<S> {
    fn size(&self) -> usize {
        self.words.as_ref().len() * 4
    }

    fn read_u32(&self, off: usize) -> u32 {
        self.load_u32(off, Ordering::Relaxed)
    }

    fn write_u32(&self, off: usize, val: u32) {
        self.store_u32(off, val, Ordering::Relaxed)
    }

    fn read_u64(&self, off: usize) -> u64 {
        self.pair(off).map_or(0, |(lo, hi)| {
            let lo = u32::from_le(lo.load(Ordering::Relaxed));
            let hi = u32::from_le(hi.load(Ordering::Relaxed));
            u64::from(lo) | u64::from(hi) << 32
        })
    }

    fn write_u64(&self, off: usize, val: u64) {
        if let Some((lo, hi)) = self.pair(off) {
            lo.store((val as u32).to_le(), Ordering::Relaxed);
            hi.store(((val >> 32) as u32).to_le(), Ordering::Relaxed);
        }
    }

    fn load_acquire_u32(&self, off: usize) -> u32 {
        self.load_u32(off, Ordering::Acquire)
    }

    fn store_release_u32(&self, off: usize, val: u32) {
        self.store_u32(off, val, Ordering::Release)
    }

    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
}

// loom's atomics work only inside a model.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn little_endian_halves() {
        let m = MemShm::zeroed(16);
        m.write_u32(0, 0x1111_2222);
        m.write_u32(4, 0x3333_4444);
        assert_eq!(m.read_u64(0), 0x3333_4444_1111_2222);
        m.store_release_u32(4, 5);
        assert_eq!(m.read_u32(0), 0x1111_2222);
        assert_eq!(m.load_acquire_u32(4), 5);
        m.write_u64(8, u64::MAX);
        assert_eq!(m.read_u32(12), u32::MAX);
        m.write_u64(8, 0x0102_0304_0506_0708);
        assert_eq!((m.read_u32(8), m.read_u32(12)), (0x0506_0708, 0x0102_0304));
    }

    #[test]
    fn words_hold_wire_bytes() {
        let m = MemShm::zeroed(8);
        m.write_u64(0, 0x0807_0605_0403_0201);
        let bytes: Vec<u8> = m
            .words()
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
            .collect();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn zeroed_rounds_up_to_whole_u64s() {
        assert_eq!(MemShm::zeroed(0).size(), 0);
        assert_eq!(MemShm::zeroed(1).size(), 8);
        assert_eq!(MemShm::zeroed(12).size(), 16);
    }

    #[test]
    fn out_of_range_and_misaligned() {
        let words = [AtomicU32::new(7), AtomicU32::new(0)];
        let m = MemShm::new(&words[..]);
        assert_eq!(m.size(), 8);
        assert_eq!(m.read_u32(8), 0);
        assert_eq!(m.read_u64(8), 0);
        assert_eq!(m.read_u32(2), 0);
        assert_eq!(m.read_u64(4), 0);
        assert_eq!(m.read_u32(usize::MAX), 0);
        assert_eq!(m.read_u64(usize::MAX - 7), 0);
        m.write_u32(8, 1);
        m.write_u64(usize::MAX, 1);
        m.write_u64(usize::MAX - 7, 1);
        m.write_u32(1, 1);
        m.store_release_u32(usize::MAX - 3, 1);
        assert_eq!(m.read_u64(0), 7);
    }

    #[test]
    fn odd_word_count_has_no_last_u64() {
        // 12 bytes: the u64 at 8 would reach past the end.
        let words = [AtomicU32::new(1), AtomicU32::new(2), AtomicU32::new(3)];
        let m = MemShm::new(&words[..]);
        assert_eq!(m.size(), 12);
        assert_eq!(m.read_u32(8), 3);
        assert_eq!(m.read_u64(8), 0);
        m.write_u64(8, u64::MAX);
        assert_eq!(m.read_u32(8), 3);
    }
}
