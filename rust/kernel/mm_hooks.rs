// SPDX-License-Identifier: GPL-2.0

//! Address-space lifecycle hooks for paravirtualized MMU drivers.
//!
//! C header: [`include/linux/pvmm_hooks.h`](srctree/include/linux/pvmm_hooks.h)
//!
//! A driver implements [`MmHooks`] and holds a [`Registration`] while it wants to
//! be told about address spaces being created and torn down. Only one
//! registration can exist at a time.

use crate::{
    bindings,
    ffi::{c_int, c_void},
    prelude::*,
    sync::{Arc, ArcBorrow},
    types::Opaque,
};
use core::{marker::PhantomData, ptr::NonNull};

/// Identifies an address space: the physical address of its page directory.
///
/// The page directory is not freed before the driver releases it, so an id is
/// never reused while the driver still tracks the address space it names. It is
/// the address, not the page frame, because a page directory may be smaller than a
/// page: arm64 allocates it from a `kmem_cache` then (e.g. 4K pages with 52-bit
/// virtual addresses), and several share a page.
pub type SpaceId = u64;

fn phys_of(pgd: *mut bindings::pgd_t) -> SpaceId {
    // SAFETY: `virt_to_phys` is pure address arithmetic on a direct-map address.
    unsafe { bindings::virt_to_phys(pgd.cast()) }
}

/// An address space (`struct mm_struct`) and its page directory, as seen from a hook.
///
/// Only ever handed out by reference for the duration of one hook call. The page
/// directory is the one the hook was given, not `mm->pgd`: in `pgd_alloc` some
/// architectures (arm64) set `mm->pgd` only after the hook has returned.
///
/// # Invariants
///
/// `mm` is valid for as long as the `AddressSpace` can be borrowed, and `pgd` is its
/// page directory.
pub struct AddressSpace {
    mm: NonNull<bindings::mm_struct>,
    pgd: *mut bindings::pgd_t,
}

impl AddressSpace {
    /// # Safety
    ///
    /// `mm` must be valid, and `pgd` its page directory, for as long as the returned
    /// value is borrowed.
    unsafe fn new(mm: *mut bindings::mm_struct, pgd: *mut bindings::pgd_t) -> Option<Self> {
        // INVARIANT: The caller's promise.
        Some(Self {
            mm: NonNull::new(mm)?,
            pgd,
        })
    }

    /// # Safety
    ///
    /// `mm` must be valid, with `mm->pgd` set, for as long as the returned value is
    /// borrowed.
    unsafe fn with_mm_pgd(mm: *mut bindings::mm_struct) -> Option<Self> {
        let mm = NonNull::new(mm)?;
        // SAFETY: The caller promises that `mm` is valid with its `pgd` set.
        let pgd = unsafe { (*mm.as_ptr()).__bindgen_anon_1.pgd };
        // SAFETY: `pgd` is the page directory of the valid `mm`.
        unsafe { Self::new(mm.as_ptr(), pgd) }
    }

    /// The id of this address space.
    pub fn id(&self) -> SpaceId {
        phys_of(self.pgd)
    }

    /// Resident pages (file, anonymous and shmem), a measure of teardown cost.
    pub fn rss_pages(&self) -> u64 {
        // SAFETY: By the type invariant the mm is valid.
        unsafe { bindings::get_mm_rss(self.mm.as_ptr()) as u64 }
    }
}

/// A page directory handed over by the `pgd_free` hook.
///
/// Its address space is gone, and it is no longer on the kernel's pgd list. It is
/// freed exactly once, when this value is dropped, which may happen in any context
/// but NMI.
///
/// # Invariants
///
/// `ptr` is a page directory passed to [`MmHooks::pgd_free`] that has not been
/// released yet.
pub struct PageDirectory {
    ptr: NonNull<bindings::pgd_t>,
}

// SAFETY: The page directory is an owned page that nothing else references; it may
// be released from any thread.
unsafe impl Send for PageDirectory {}
// SAFETY: Shared references only allow reading the id.
unsafe impl Sync for PageDirectory {}

impl PageDirectory {
    /// The id of the address space this page directory belonged to.
    pub fn id(&self) -> SpaceId {
        phys_of(self.ptr.as_ptr())
    }
}

impl Drop for PageDirectory {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the pgd was handed to us and is released
        // here, once.
        unsafe { bindings::pvmm_pgd_release(self.ptr.as_ptr()) };
    }
}

/// Callbacks of a driver that keeps host-side state per address space.
///
/// Each gets the driver's state as an [`ArcBorrow`] of the `Arc` that the
/// [`Registration`] holds, so that a callback can hand out references of its own (to
/// a timer it arms, for instance).
pub trait MmHooks: Send + Sync {
    /// A new address space got its page directory.
    ///
    /// Process context (fork, exec); may sleep. An error makes the creation fail.
    fn pgd_alloc(this: ArcBorrow<'_, Self>, space: &AddressSpace) -> Result;

    /// The address space is about to be torn down.
    ///
    /// Process context with the mmap lock held for reading; may sleep, but should
    /// not wait for the host.
    fn exit_mmap(this: ArcBorrow<'_, Self>, space: &AddressSpace);

    /// The page directory of a dead address space is about to be freed.
    ///
    /// Any context but hard interrupt and NMI (atomic in `finish_task_switch()`,
    /// an RCU or SRCU callback): must not sleep or allocate. The driver owns `pgd`
    /// from here on: dropping it, now or later, frees it. Ownership is the only
    /// way back, so no driver can free a page directory twice or free another one
    /// in its place.
    fn pgd_free(this: ArcBorrow<'_, Self>, pgd: PageDirectory);
}

/// A registration of [`MmHooks`].
///
/// While it exists the kernel calls the hooks of `T`. Dropping it unregisters and
/// waits until no hook runs any more; a hook sleeping in
/// [`MmHooks::pgd_alloc`] delays the drop, so the driver must wake such waiters
/// first.
///
/// # Examples
///
/// ```
/// use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
/// use kernel::{
///     mm_hooks::{AddressSpace, MmHooks, PageDirectory, Registration},
///     prelude::*,
///     sync::{Arc, ArcBorrow},
/// };
///
/// // Counts new address spaces and frees page directories at once.
/// struct Census {
///     created: AtomicU64,
/// }
///
/// impl MmHooks for Census {
///     fn pgd_alloc(this: ArcBorrow<'_, Self>, _space: &AddressSpace) -> Result {
///         this.created.fetch_add(1, Relaxed);
///         Ok(())
///     }
///
///     fn exit_mmap(_this: ArcBorrow<'_, Self>, _space: &AddressSpace) {}
///
///     fn pgd_free(_this: ArcBorrow<'_, Self>, pgd: PageDirectory) {
///         drop(pgd);
///     }
/// }
///
/// let census = Arc::new(Census { created: AtomicU64::new(0) }, GFP_KERNEL)?;
/// // A driver that found its device at boot holds the hooks already.
/// match KBox::pin_init(Registration::new(census.clone()), GFP_KERNEL) {
///     Ok(registration) => drop(registration),
///     Err(e) => assert_eq!(e, EBUSY),
/// }
/// // Either way, the reference the registration took is given back.
/// assert!(census.into_unique_or_drop().is_some());
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `ops` is registered with `pvmm_hooks_register`, and `ops.data` comes from
/// [`Arc::into_raw`] on an `Arc<T>` that this registration owns.
#[pin_data(PinnedDrop)]
pub struct Registration<T: MmHooks> {
    #[pin]
    ops: Opaque<bindings::pvmm_hook_ops>,
    _hooks: PhantomData<Arc<T>>,
}

// SAFETY: The registration only holds an `Arc<T>` and a C structure that the
// kernel reads concurrently anyway; `T: Send + Sync`.
unsafe impl<T: MmHooks> Send for Registration<T> {}
// SAFETY: No method gives access to the contents through a shared reference.
unsafe impl<T: MmHooks> Sync for Registration<T> {}

impl<T: MmHooks> Registration<T> {
    /// Registers `hooks`. Fails with `EBUSY` if another driver is registered.
    pub fn new(hooks: Arc<T>) -> impl PinInit<Self, Error> {
        let closure = move |slot: *mut Self| {
            let data = Arc::into_raw(hooks);
            // SAFETY: `slot` is valid for writes; `Opaque` is `repr(transparent)`.
            let ops = Opaque::raw_get(unsafe { core::ptr::addr_of!((*slot).ops) });
            // SAFETY: `ops` is valid for writes.
            unsafe {
                ops.write(bindings::pvmm_hook_ops {
                    pgd_alloc: Some(Self::pgd_alloc_cb),
                    exit_mmap: Some(Self::exit_mmap_cb),
                    pgd_free: Some(Self::pgd_free_cb),
                    data: data.cast_mut().cast(),
                })
            };
            // SAFETY: `ops` is initialised and pinned, and stays valid until the
            // drop unregisters it.
            let ret = unsafe { bindings::pvmm_hooks_register(ops) };
            if ret != 0 {
                // SAFETY: `data` came from `Arc::into_raw` above and was not published.
                drop(unsafe { Arc::from_raw(data) });
                return Err(Error::from_errno(ret));
            }
            // INVARIANT: registered, and `ops.data` owns the `Arc`.
            Ok(())
        };
        // SAFETY: The closure initialises every field (`_hooks` is zero-sized) when
        // it returns `Ok`, leaves nothing to drop when it fails, and does not move
        // the slot.
        unsafe { crate::init::pin_init_from_closure(closure) }
    }

    /// # Safety
    ///
    /// `data` must be the `ops.data` of a live registration of `Self`.
    unsafe fn hooks<'a>(data: *mut c_void) -> ArcBorrow<'a, T> {
        // SAFETY: Per the type invariant `data` came from `Arc::into_raw` on an
        // `Arc<T>` that the registration owns, and the registration outlives every
        // callback.
        unsafe { ArcBorrow::from_raw(data.cast::<T>()) }
    }

    /// # Safety
    ///
    /// Only as `pvmm_hook_ops::pgd_alloc` of a live registration of `Self`.
    unsafe extern "C" fn pgd_alloc_cb(
        data: *mut c_void,
        mm: *mut bindings::mm_struct,
        pgd: *mut bindings::pgd_t,
    ) -> c_int {
        // SAFETY: The C side passes back our `data`; callbacks run under SRCU and
        // unregistration waits for them.
        let hooks = unsafe { Self::hooks(data) };
        // SAFETY: `mm` is valid and `pgd` is its new page directory for the duration
        // of the call; `mm->pgd` may not be set yet.
        let Some(space) = (unsafe { AddressSpace::new(mm, pgd) }) else {
            return 0;
        };
        match T::pgd_alloc(hooks, &space) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Only as `pvmm_hook_ops::exit_mmap` of a live registration of `Self`.
    unsafe extern "C" fn exit_mmap_cb(data: *mut c_void, mm: *mut bindings::mm_struct) {
        // SAFETY: As in `pgd_alloc_cb`.
        let hooks = unsafe { Self::hooks(data) };
        // SAFETY: `mm` is valid and has its pgd set for the duration of the call.
        if let Some(space) = unsafe { AddressSpace::with_mm_pgd(mm) } {
            T::exit_mmap(hooks, &space);
        }
    }

    /// # Safety
    ///
    /// Only as `pvmm_hook_ops::pgd_free` of a live registration of `Self`.
    unsafe extern "C" fn pgd_free_cb(
        data: *mut c_void,
        _mm: *mut bindings::mm_struct,
        pgd: *mut bindings::pgd_t,
    ) -> bool {
        // SAFETY: As in `pgd_alloc_cb`.
        let hooks = unsafe { Self::hooks(data) };
        let Some(ptr) = NonNull::new(pgd) else {
            return false;
        };
        // INVARIANT: Returning true below hands `pgd` over to us; the
        // `PageDirectory` releases it exactly once, when it is dropped.
        T::pgd_free(hooks, PageDirectory { ptr });
        true
    }
}

#[pinned_drop]
impl<T: MmHooks> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        let ops = self.ops.get();
        // SAFETY: By the type invariant `ops` is registered; this waits for every
        // running callback.
        unsafe { bindings::pvmm_hooks_unregister(ops) };
        // SAFETY: No callback can use `data` any more; we own the `Arc`.
        drop(unsafe { Arc::from_raw((*ops).data.cast::<T>()) });
    }
}
