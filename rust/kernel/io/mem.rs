// SPDX-License-Identifier: GPL-2.0

//! Memory mappings of devices.
//!
//! [`IoMem`] owns an `__iomem` mapping of device registers and dereferences to the accessors of
//! [`Io`]. [`SharedMem`] owns a cacheable mapping (`memremap(MEMREMAP_WB)`) of memory that is
//! shared with another agent, e.g. the host behind a QEMU ivshmem BAR, and offers only atomic
//! accessors.
//!
//! Both are normally obtained from a bus, e.g. [`crate::pci::Device::iomap_region_sized`] and
//! [`crate::pci::Device::memremap_bar`].
//!
//! C header: [`include/linux/io.h`](srctree/include/linux/io.h)

use super::{Io, ResourceSize};
use crate::{
    bindings,
    error::{code::*, Result},
    ffi::{c_ulong, c_void},
};
use core::{
    ops::Deref,
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, AtomicU64, Ordering},
};

/// An owned `__iomem` mapping of device registers, unmapped with `iounmap()` on drop.
///
/// The first `SIZE` bytes are checked at construction to exist, so accesses below `SIZE` can use
/// the compile-time checked accessors of [`Io`], which `IoMem` dereferences to.
///
/// Reading and writing device registers needs no locking on the Rust side: each access is a
/// single MMIO instruction, so `IoMem` is [`Send`] and [`Sync`]. Whether the device tolerates
/// concurrent accesses is up to the driver.
///
/// The mapping is owned by this object, not by the device binding. Keep it in the driver's
/// per-device data so it is dropped when the device is unbound; a leaked `IoMem` keeps a valid
/// mapping of an address range the driver no longer owns.
///
/// Dropping must happen in process context (`iounmap()` may sleep).
///
/// # Invariants
///
/// `io.addr` was returned by `ioremap()` (or `pci_iomap()` of a memory BAR, which is the same)
/// for `io.maxsize` bytes, is not unmapped before `drop`, and `io.maxsize >= SIZE`.
///
/// # Examples
///
/// ```
/// use kernel::{
///     io::{mem::IoMem, ResourceSize},
///     prelude::*,
/// };
///
/// /// # Safety
/// ///
/// /// `phys` must be the start of 16 bytes of registers that the caller has claimed.
/// unsafe fn version(phys: ResourceSize) -> Result<u32> {
///     // SAFETY: The caller's promise.
///     let regs = unsafe { IoMem::<16>::ioremap(phys, 16) }?;
///     Ok(regs.read32(4))
/// }
/// # let _ = version;
/// ```
pub struct IoMem<const SIZE: usize = 0> {
    io: Io<SIZE>,
}

impl<const SIZE: usize> IoMem<SIZE> {
    /// Maps `size` bytes of MMIO space at physical address `phys` with `ioremap()`.
    ///
    /// Fails with `EINVAL` if `size < SIZE` or `size == 0`, and with `ENOMEM` if the mapping
    /// fails.
    ///
    /// # Safety
    ///
    /// `[phys, phys + size)` must be MMIO space that the caller has claimed (e.g. a requested
    /// region of a device bound to the caller), not RAM or another driver's registers: writes
    /// through the mapping are not otherwise checked.
    pub unsafe fn ioremap(phys: ResourceSize, size: usize) -> Result<Self> {
        if size < SIZE || size == 0 {
            return Err(EINVAL);
        }
        // SAFETY: The caller guarantees that the range is MMIO space that it owns.
        let addr = unsafe { bindings::ioremap(phys, size) };
        if addr.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: `addr` maps `size >= SIZE` bytes until `drop` unmaps it.
        Ok(Self {
            io: Io {
                addr: addr as usize,
                maxsize: size,
            },
        })
    }
}

impl<const SIZE: usize> Deref for IoMem<SIZE> {
    type Target = Io<SIZE>;

    #[inline]
    fn deref(&self) -> &Io<SIZE> {
        &self.io
    }
}

impl<const SIZE: usize> Drop for IoMem<SIZE> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, `addr` came from `ioremap()` and is still mapped; no
        // borrow of `self.io` can outlive `self`.
        unsafe { bindings::iounmap(self.io.addr as *mut c_void) };
    }
}

/// An owned, cacheable mapping of memory shared with another agent, unmapped on drop.
///
/// The other agent (a host process, another VM, a device) reads and writes the memory
/// concurrently and outside Rust's knowledge. Plain loads and stores would let the compiler tear,
/// merge, re-read or elide accesses, so every accessor is atomic: relaxed by default, with 32-bit
/// acquire/release variants and a full fence for protocols that need ordering. They compile to
/// the same instructions as the kernel's own accessors. On x86-64 a relaxed or acquire load is a
/// plain `mov` (`READ_ONCE()`/`smp_load_acquire()`), a relaxed or release store is a plain `mov`
/// (`WRITE_ONCE()`/`smp_store_release()`), and [`SharedMem::fence`] is `mfence`, the same as
/// `mb()` (`smp_mb()` uses a locked add; both are full barriers). On arm64 an acquire load is
/// `ldar` (`smp_load_acquire()`), a release store is `stlr` (`smp_store_release()`) and the fence
/// is `dmb ish` (`smp_mb()`); on arm64 `memremap(MEMREMAP_WB)` maps a device's memory BAR as
/// Normal write-back inner-shareable memory (`ioremap_cache()`), so these order it as they order
/// RAM, against a peer on any CPU of the inner shareable domain. Use one access size per
/// location, as the Linux kernel memory model expects of shared data.
///
/// Every access is checked to be naturally aligned and inside the window. The offsets usually
/// come from the shared memory itself, i.e. from a peer that may be buggy or hostile, so the
/// checks are there for memory safety, not as an error report: an out-of-range or misaligned
/// read returns 0 and such a write is dropped, and the protocol on top must validate what it reads
/// anyway (a zero or stale value is as possible from a peer as from this path). This keeps ring
/// code free of an error path per access.
///
/// All accessors take `&self`: the memory is shared by design, so `SharedMem` is [`Send`] and
/// [`Sync`] and needs no lock; any mutual exclusion is up to the protocol.
///
/// As with [`IoMem`], the mapping is owned by this object; keep it in the driver's per-device
/// data. Dropping must happen in process context (`memunmap()` may sleep).
///
/// # Invariants
///
/// `base` was returned by `memremap(.., MEMREMAP_WB)` for `size > 0` bytes, is aligned to at
/// least 8 bytes, and stays mapped until `drop`. The memory is only accessed through atomics.
///
/// # Examples
///
/// A window onto RAM (which `memremap()` maps through the direct map) behaves as one onto a
/// device's memory BAR:
///
/// ```
/// use kernel::{bindings, io::mem::SharedMem, prelude::*};
///
/// let buf = KBox::new([0u64; 4], GFP_KERNEL)?;
/// // SAFETY: `buf` is direct-mapped memory of ours.
/// let phys = unsafe { bindings::virt_to_phys(buf.as_ptr().cast_mut().cast()) };
/// // SAFETY: Nothing else uses `buf` while the window exists.
/// let shm = unsafe { SharedMem::memremap_wb(phys, 32) }?;
/// assert_eq!(shm.size(), 32);
///
/// shm.write_u64(8, 0x1122_3344_5566_7788);
/// shm.store_release_u32(0, 7);
/// assert_eq!(shm.load_acquire_u32(0), 7);
/// assert_eq!(shm.read_u32(12), 0x1122_3344);
///
/// // Out of range or misaligned: reads give 0 and writes are dropped.
/// shm.write_u32(32, 1);
/// shm.write_u64(4, u64::MAX);
/// assert_eq!(shm.read_u32(32), 0);
/// assert_eq!(shm.read_u64(usize::MAX - 3), 0);
/// assert_eq!(shm.read_u64(4), 0);
/// drop(shm);
/// assert_eq!(*buf, [7, 0x1122_3344_5566_7788, 0, 0]);
/// # Ok::<(), Error>(())
/// ```
pub struct SharedMem {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: The mapping is not tied to a thread; it can be unmapped from any process context.
unsafe impl Send for SharedMem {}

// SAFETY: All accessors are atomic and bounds checked, so concurrent use through `&SharedMem` is
// free of data races.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// Maps `size` bytes at physical address `phys` with `memremap(MEMREMAP_WB)`.
    ///
    /// Fails with `EINVAL` if `size` is 0 and with `ENOMEM` if the mapping fails or is not 8-byte
    /// aligned.
    ///
    /// # Safety
    ///
    /// `[phys, phys + size)` must be memory that the caller has claimed for sharing with another
    /// agent (e.g. a requested memory BAR of a device bound to the caller) and that no other part
    /// of the kernel uses as ordinary memory.
    pub unsafe fn memremap_wb(phys: ResourceSize, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(EINVAL);
        }
        // SAFETY: The caller guarantees that the range is shared memory it owns.
        let ptr = unsafe { bindings::memremap(phys, size, bindings::MEMREMAP_WB as c_ulong) };
        let Some(base) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(ENOMEM);
        };
        if base.as_ptr() as usize % 8 != 0 {
            // SAFETY: `ptr` was just returned by `memremap()`.
            unsafe { bindings::memunmap(ptr) };
            return Err(ENOMEM);
        }
        // INVARIANT: `base` maps `size > 0` bytes, 8-byte aligned, until `drop`.
        Ok(Self { base, size })
    }

    /// Returns the size of the window in bytes.
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Returns a pointer to `offset` if a naturally aligned `U` there fits in the window.
    #[inline]
    fn ptr<U>(&self, offset: usize) -> Option<*mut U> {
        let len = core::mem::size_of::<U>();
        let end = offset.checked_add(len)?;
        if end > self.size || offset % len != 0 {
            return None;
        }
        // SAFETY: `offset < size`, so the result stays inside the mapping.
        Some(unsafe { self.base.as_ptr().add(offset) }.cast())
    }

    #[inline]
    fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        let p = self.ptr::<u32>(offset)?;
        // SAFETY: `p` is 4-byte aligned (the base is 8-byte aligned by the type invariant and
        // `offset` is a multiple of 4), valid for reads and writes while `self` is borrowed, and
        // only ever accessed atomically from this side.
        Some(unsafe { AtomicU32::from_ptr(p) })
    }

    #[inline]
    fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        let p = self.ptr::<u64>(offset)?;
        // SAFETY: As in `atomic_u32`, with 8-byte alignment.
        Some(unsafe { AtomicU64::from_ptr(p) })
    }

    /// Reads the `u32` at `offset` (relaxed); 0 if out of range or misaligned.
    #[inline]
    pub fn read_u32(&self, offset: usize) -> u32 {
        self.atomic_u32(offset)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Writes `value` to the `u32` at `offset` (relaxed); dropped if out of range or misaligned.
    #[inline]
    pub fn write_u32(&self, offset: usize, value: u32) {
        if let Some(a) = self.atomic_u32(offset) {
            a.store(value, Ordering::Relaxed);
        }
    }

    /// Reads the `u64` at `offset` (relaxed); 0 if out of range or misaligned.
    #[inline]
    pub fn read_u64(&self, offset: usize) -> u64 {
        self.atomic_u64(offset)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Writes `value` to the `u64` at `offset` (relaxed); dropped if out of range or misaligned.
    #[inline]
    pub fn write_u64(&self, offset: usize, value: u64) {
        if let Some(a) = self.atomic_u64(offset) {
            a.store(value, Ordering::Relaxed);
        }
    }

    /// Reads the `u32` at `offset` with acquire ordering; 0 if out of range or misaligned.
    ///
    /// Later accesses of this CPU are not reordered before it, so data published by the peer
    /// before its release store of this value is visible.
    #[inline]
    pub fn load_acquire_u32(&self, offset: usize) -> u32 {
        self.atomic_u32(offset)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    /// Writes `value` to the `u32` at `offset` with release ordering; dropped if out of range or
    /// misaligned.
    ///
    /// Earlier accesses of this CPU are visible to a peer that reads this value with acquire.
    #[inline]
    pub fn store_release_u32(&self, offset: usize, value: u32) {
        if let Some(a) = self.atomic_u32(offset) {
            a.store(value, Ordering::Release);
        }
    }

    /// Full memory barrier (sequentially consistent fence).
    ///
    /// Orders earlier stores before later loads, which acquire/release do not, e.g. between
    /// publishing a ring tail and reading the peer's "needs wakeup" flag.
    #[inline]
    pub fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, `base` came from `memremap()` and is still mapped; no
        // reference into the mapping outlives `&self`.
        unsafe { bindings::memunmap(self.base.as_ptr().cast()) };
    }
}
