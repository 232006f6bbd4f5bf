// SPDX-License-Identifier: GPL-2.0

//! Memory-mapped I/O.
//!
//! [`Io`] gives a mapping of device registers its accessors (`readl()`/`writel()` and
//! friends), bounds-checked at compile time for the part of the mapping whose size is known as a
//! const generic and at run time for the rest. The mappings that own such memory are in [`mem`].
//!
//! This is a local stand-in, for Linux 6.12, for the `io` module that later kernels have; it keeps
//! the upstream `Io<SIZE>` accessor names and the `io::mem` layout so that users can move over
//! unchanged.
//!
//! C headers: [`include/asm-generic/io.h`](srctree/include/asm-generic/io.h),
//! [`include/linux/io.h`](srctree/include/linux/io.h)

use crate::{
    bindings, build_assert,
    error::{code::*, Result},
    ffi::c_void,
};

pub mod mem;

/// A physical address or size as the kernel's resources express them (`resource_size_t`).
pub type ResourceSize = bindings::resource_size_t;

/// Accessors for a mapped MMIO region whose first `SIZE` bytes are known to exist at compile time.
///
/// An `Io` is never created on its own: it is borrowed from an owner of the mapping, such as
/// [`mem::IoMem`], which `Deref`s to it.
///
/// The methods without a prefix (`read32()`, `write32()`, ...) check the offset at compile time
/// against `SIZE`: the offset must be a constant that the compiler can see, otherwise the build
/// fails. The `try_` methods check it at run time against the real size of the mapping.
///
/// # Invariants
///
/// `addr` is the start of a valid, mapped MMIO region of `maxsize` bytes, and `maxsize >= SIZE`.
/// The region stays mapped for as long as the `Io` can be borrowed.
///
/// # Examples
///
/// ```
/// use kernel::{io::Io, prelude::*};
///
/// // Registers of a device with a 16-byte BAR: a doorbell at 12, a status word at 0.
/// fn ring(regs: &Io<16>, peer: u16, vector: u16) {
///     // Offset 12 is checked at compile time: `regs.write32(.., 16)` would not build.
///     regs.write32(u32::from(peer) << 16 | u32::from(vector), 12);
/// }
///
/// // Past the first `SIZE` bytes, offsets are checked when used.
/// fn status(regs: &Io, offset: usize) -> Result<u32> {
///     regs.try_read32(offset)
/// }
/// # let _ = (ring, status);
/// ```
#[repr(C)]
pub struct Io<const SIZE: usize = 0> {
    addr: usize,
    maxsize: usize,
}

macro_rules! define_read {
    ($(#[$attr:meta])* $name:ident, $try_name:ident, $c_fn:ident -> $ty:ty) => {
        /// Reads from `offset`, which is checked at compile time against `SIZE`.
        ///
        #[doc = concat!("Uses `", stringify!($c_fn), "()`.")]
        $(#[$attr])*
        #[inline(always)]
        pub fn $name(&self, offset: usize) -> $ty {
            let addr = self.io_addr_assert::<$ty>(offset);

            // SAFETY: By the type invariant, `addr` lies in a mapped MMIO region, and the check
            // above keeps the whole, naturally aligned access inside it.
            unsafe { bindings::$c_fn(addr as *const c_void) }
        }

        /// Reads from `offset`, which is checked at run time against the size of the mapping.
        ///
        /// Returns `EINVAL` if the access is misaligned or does not fit.
        $(#[$attr])*
        #[inline]
        pub fn $try_name(&self, offset: usize) -> Result<$ty> {
            let addr = self.io_addr::<$ty>(offset)?;

            // SAFETY: As for the compile-time checked variant; `io_addr` did the bounds check.
            Ok(unsafe { bindings::$c_fn(addr as *const c_void) })
        }
    };
}

macro_rules! define_write {
    ($(#[$attr:meta])* $name:ident, $try_name:ident, $c_fn:ident <- $ty:ty) => {
        /// Writes `value` to `offset`, which is checked at compile time against `SIZE`.
        ///
        #[doc = concat!("Uses `", stringify!($c_fn), "()`.")]
        $(#[$attr])*
        #[inline(always)]
        pub fn $name(&self, value: $ty, offset: usize) {
            let addr = self.io_addr_assert::<$ty>(offset);

            // SAFETY: By the type invariant, `addr` lies in a mapped MMIO region, and the check
            // above keeps the whole, naturally aligned access inside it.
            unsafe { bindings::$c_fn(value, addr as *mut c_void) }
        }

        /// Writes `value` to `offset`, which is checked at run time against the size of the
        /// mapping.
        ///
        /// Returns `EINVAL` if the access is misaligned or does not fit.
        $(#[$attr])*
        #[inline]
        pub fn $try_name(&self, value: $ty, offset: usize) -> Result {
            let addr = self.io_addr::<$ty>(offset)?;

            // SAFETY: As for the compile-time checked variant; `io_addr` did the bounds check.
            unsafe { bindings::$c_fn(value, addr as *mut c_void) };
            Ok(())
        }
    };
}

impl<const SIZE: usize> Io<SIZE> {
    /// Returns the virtual base address of the mapping.
    #[inline]
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Returns the size of the mapping in bytes, at least `SIZE`.
    #[inline]
    pub fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// Whether an access of type `U` at `offset` is naturally aligned and inside `size` bytes.
    #[inline]
    const fn offset_valid<U>(offset: usize, size: usize) -> bool {
        let len = core::mem::size_of::<U>();
        match offset.checked_add(len) {
            Some(end) => end <= size && offset % len == 0,
            None => false,
        }
    }

    #[inline]
    fn io_addr<U>(&self, offset: usize) -> Result<usize> {
        if !Self::offset_valid::<U>(offset, self.maxsize) {
            return Err(EINVAL);
        }
        // No overflow: by the type invariant, `addr + maxsize` is a mapped address.
        Ok(self.addr + offset)
    }

    #[inline(always)]
    fn io_addr_assert<U>(&self, offset: usize) -> usize {
        // Folds away for a constant `offset`; otherwise the build fails at link time.
        build_assert!(Self::offset_valid::<U>(offset, SIZE));
        self.addr + offset
    }

    define_read!(read8, try_read8, readb -> u8);
    define_read!(read16, try_read16, readw -> u16);
    define_read!(read32, try_read32, readl -> u32);
    define_read!(
        #[cfg(CONFIG_64BIT)]
        read64,
        try_read64,
        readq -> u64
    );
    define_read!(read32_relaxed, try_read32_relaxed, readl_relaxed -> u32);

    define_write!(write8, try_write8, writeb <- u8);
    define_write!(write16, try_write16, writew <- u16);
    define_write!(write32, try_write32, writel <- u32);
    define_write!(
        #[cfg(CONFIG_64BIT)]
        write64,
        try_write64,
        writeq <- u64
    );
    define_write!(write32_relaxed, try_write32_relaxed, writel_relaxed <- u32);
}
