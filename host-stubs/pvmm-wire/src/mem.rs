// SPDX-License-Identifier: GPL-2.0

//! A safe in-memory shared-memory window over `AtomicU64` words.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use crate::SharedMemory;

/// A [`SharedMemory`] over a slice of `AtomicU64` words, usable from several
/// threads at once like a real shared mapping.
///
/// Bytes are little-endian within each word whatever the host's byte order, so
/// the window reads exactly like the wire format says. Misaligned or
/// out-of-range accesses read zero and drop writes, as the trait requires.
#[derive(Debug)]
pub struct MemShm<S: AsRef<[AtomicU64]>> {
    words: S,
}

impl<S: AsRef<[AtomicU64]>> MemShm<S> {
    /// Wraps `words`; the window is `8 * words.len()` bytes.
    pub fn new(words: S) -> Self {
        MemShm { words }
    }

    /// The backing words.
    pub fn words(&self) -> &[AtomicU64] {
        self.words.as_ref()
    }

    fn word(&self, off: usize, align: usize) -> Option<&AtomicU64> {
        if off % align != 0 {
            return None;
        }
        self.words.as_ref().get(off / 8)
    }

    fn shift(off: usize) -> u32 {
        (off % 8 * 8) as u32
    }

    fn load32(&self, off: usize, order: Ordering) -> u32 {
        self.word(off, 4)
            .map_or(0, |w| (w.load(order) >> Self::shift(off)) as u32)
    }

    fn store32(&self, off: usize, val: u32, order: Ordering) {
        let Some(w) = self.word(off, 4) else { return };
        let shift = Self::shift(off);
        let mask = 0xffff_ffffu64 << shift;
        // A CAS loop, so the other half of the word (maybe the peer's) is kept.
        let mut cur = w.load(Ordering::Relaxed);
        loop {
            let new = (cur & !mask) | (val as u64) << shift;
            match w.compare_exchange_weak(cur, new, order, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

impl<S: AsRef<[AtomicU64]>> SharedMemory for MemShm<S> {
    fn size(&self) -> usize {
        self.words.as_ref().len() * 8
    }

    fn read_u32(&self, off: usize) -> u32 {
        self.load32(off, Ordering::Relaxed)
    }

    fn write_u32(&self, off: usize, val: u32) {
        self.store32(off, val, Ordering::Relaxed)
    }

    fn read_u64(&self, off: usize) -> u64 {
        self.word(off, 8).map_or(0, |w| w.load(Ordering::Relaxed))
    }

    fn write_u64(&self, off: usize, val: u64) {
        if let Some(w) = self.word(off, 8) {
            w.store(val, Ordering::Relaxed)
        }
    }

    fn load_acquire_u32(&self, off: usize) -> u32 {
        self.load32(off, Ordering::Acquire)
    }

    fn store_release_u32(&self, off: usize, val: u32) {
        self.store32(off, val, Ordering::Release)
    }

    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_halves() {
        let words = [AtomicU64::new(0), AtomicU64::new(0)];
        let m = MemShm::new(&words[..]);
        m.write_u32(0, 0x1111_2222);
        m.write_u32(4, 0x3333_4444);
        assert_eq!(m.read_u64(0), 0x3333_4444_1111_2222);
        m.store_release_u32(4, 5);
        assert_eq!(m.read_u32(0), 0x1111_2222);
        assert_eq!(m.load_acquire_u32(4), 5);
        m.write_u64(8, u64::MAX);
        assert_eq!(m.read_u32(12), u32::MAX);
    }

    #[test]
    fn out_of_range_and_misaligned() {
        let words = [AtomicU64::new(7)];
        let m = MemShm::new(&words[..]);
        assert_eq!(m.size(), 8);
        assert_eq!(m.read_u32(8), 0);
        assert_eq!(m.read_u64(8), 0);
        assert_eq!(m.read_u32(2), 0);
        assert_eq!(m.read_u64(4), 0);
        assert_eq!(m.read_u32(usize::MAX), 0);
        m.write_u32(8, 1);
        m.write_u64(usize::MAX, 1);
        m.write_u32(1, 1);
        m.store_release_u32(usize::MAX - 3, 1);
        assert_eq!(m.read_u64(0), 7);
    }
}
