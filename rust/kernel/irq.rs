// SPDX-License-Identifier: GPL-2.0

//! Interrupt handler registration.
//!
//! [`ThreadedRegistration`] requests a device's interrupt line, described by an [`IrqRequest`]
//! that the bus hands out, with `request_threaded_irq()` for a [`ThreadedHandler`] that it owns
//! and pins, and frees it with `free_irq()` on drop. The handler is called with the device.
//!
//! On `PREEMPT_RT` the kernel runs every handler in a thread (forced threading): the "hard"
//! handler then runs in an interrupt thread with preemption enabled, and the threaded handler in a
//! second one. The code must still follow the rules of the context it is written for.
//!
//! This is a local stand-in, for Linux 6.12, for the `irq` module of later kernels (6.18), with
//! its names and shapes: `IrqRequest`, `ThreadedHandler` with the device as an argument, and
//! handlers behind `Arc`. 6.12 has no bound-device typestate, so handlers get a plain
//! `&Device`, and a registration is not revoked when the device is unbound: the driver keeps it
//! in its per-device data, which is dropped on unbind before the bus frees the interrupt vectors.
//!
//! C header: [`include/linux/interrupt.h`](srctree/include/linux/interrupt.h)

use crate::{
    bindings,
    device::Device,
    error::to_result,
    ffi::{c_int, c_ulong, c_void},
    prelude::*,
    str::CStr,
    sync::Arc,
    types::ARef,
};
use core::{marker::PhantomPinned, ptr::addr_of};

/// An interrupt line of a device, to be requested with [`ThreadedRegistration::new`].
///
/// Made by the bus, which knows the device's interrupt numbers (for PCI,
/// `pci::Device::irq_vector()`). A plain value that borrows the device.
///
/// # Invariants
///
/// `irq` is an interrupt number of `dev`.
pub struct IrqRequest<'a> {
    dev: &'a Device,
    irq: u32,
}

impl<'a> IrqRequest<'a> {
    /// Describes interrupt `irq` of `dev`.
    ///
    /// # Safety
    ///
    /// `irq` must be an interrupt number that `dev` owns, valid as long as `dev` is bound.
    pub unsafe fn new(dev: &'a Device, irq: u32) -> Self {
        // INVARIANT: Guaranteed by the caller.
        IrqRequest { dev, irq }
    }
}

/// What [`ThreadedHandler::handle_threaded`] returns.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqReturn {
    /// The interrupt was not from this device.
    None = bindings::irqreturn_IRQ_NONE,
    /// The interrupt was handled.
    Handled = bindings::irqreturn_IRQ_HANDLED,
}

/// What [`ThreadedHandler::handle`] returns.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadedIrqReturn {
    /// The interrupt was not from this device.
    None = bindings::irqreturn_IRQ_NONE,
    /// The interrupt was handled; the threaded handler is not needed.
    Handled = bindings::irqreturn_IRQ_HANDLED,
    /// Wake the thread that runs [`ThreadedHandler::handle_threaded`].
    WakeThread = bindings::irqreturn_IRQ_WAKE_THREAD,
}

/// Flags for requesting an interrupt line (`IRQF_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(c_ulong);

impl Flags {
    /// Keep the line masked until the threaded handler has run (`IRQF_ONESHOT`); needed for
    /// level-triggered lines with a threaded handler, optional for MSI/MSI-X.
    pub const ONESHOT: Flags = Flags(bindings::IRQF_ONESHOT as c_ulong);

    /// Returns the raw `IRQF_*` bits.
    pub const fn as_raw(self) -> c_ulong {
        self.0
    }
}

/// An interrupt handler with a "hard" part and a threaded part, called with the device whose
/// interrupt it is. An `Arc<T>` is a handler when `T` is.
pub trait ThreadedHandler: Sync {
    /// Handles the interrupt in hard interrupt context (an interrupt thread on `PREEMPT_RT`).
    ///
    /// Must not sleep. The default wakes the thread unconditionally, which suits a handler that
    /// does all of its work in [`ThreadedHandler::handle_threaded`] on an unshared line.
    fn handle(&self, device: &Device) -> ThreadedIrqReturn {
        let _ = device;
        ThreadedIrqReturn::WakeThread
    }

    /// Runs in the interrupt thread after [`ThreadedHandler::handle`] returned
    /// [`ThreadedIrqReturn::WakeThread`]. May sleep.
    fn handle_threaded(&self, device: &Device) -> IrqReturn;
}

impl<T: ?Sized + ThreadedHandler + Send> ThreadedHandler for Arc<T> {
    fn handle(&self, device: &Device) -> ThreadedIrqReturn {
        T::handle(self, device)
    }

    fn handle_threaded(&self, device: &Device) -> IrqReturn {
        T::handle_threaded(self, device)
    }
}

/// An interrupt line requested with `request_threaded_irq()` for a pinned [`ThreadedHandler`].
///
/// The handler is part of the registration, so it lives exactly as long as the kernel may call
/// it: `free_irq()` in the destructor removes the handler and waits until every running
/// invocation, hard and threaded, has returned, and only then is the handler dropped. Both parts
/// may run concurrently with each other and with any `&self` use in process context, hence the
/// [`Sync`] bound; use the usual kernel primitives (atomics, spinlocks) for shared state.
///
/// Dropping must happen in process context (`free_irq()` sleeps). Drop it before the interrupt
/// vector goes away, e.g. by keeping it in the driver's per-device data.
///
/// # Examples
///
/// ```
/// use kernel::irq::{Flags, IrqRequest, IrqReturn, ThreadedHandler, ThreadedRegistration};
/// use kernel::{c_str, device::Device, prelude::*};
///
/// struct Completions;
///
/// impl ThreadedHandler for Completions {
///     fn handle_threaded(&self, _dev: &Device) -> IrqReturn {
///         IrqReturn::Handled
///     }
/// }
///
/// fn setup(req: IrqRequest<'_>) -> Result<Pin<KBox<ThreadedRegistration<Completions>>>> {
///     KBox::pin_init(
///         ThreadedRegistration::new(req, Flags::ONESHOT, c_str!("pvmm"), Completions),
///         GFP_KERNEL,
///     )
/// }
/// # let _ = setup;
/// ```
///
/// # Invariants
///
/// The kernel holds a threaded handler for `irq` whose cookie is the address of this
/// registration, from the end of initialisation until `drop`; `irq` belongs to `dev`.
#[pin_data(PinnedDrop)]
pub struct ThreadedRegistration<T: ThreadedHandler + 'static> {
    dev: ARef<Device>,
    #[pin]
    handler: T,
    irq: u32,
    // The kernel holds the address of the registration.
    #[pin]
    _pin: PhantomPinned,
}

impl<T: ThreadedHandler + 'static> ThreadedRegistration<T> {
    /// Initialises `handler` in place, then requests the line of `request` for it.
    ///
    /// `name` shows up in `/proc/interrupts`. The handler may run as soon as the request
    /// succeeds. Returns the error of `request_threaded_irq()`, e.g. `EINVAL` for an invalid
    /// interrupt number or `EBUSY` for an unshareable line in use.
    // The 6.12 expansion of `try_pin_init!(&this in ...)` has an uncommented `unsafe` block.
    #[allow(clippy::undocumented_unsafe_blocks)]
    pub fn new(
        request: IrqRequest<'_>,
        flags: Flags,
        name: &'static CStr,
        handler: impl PinInit<T, Error>,
    ) -> impl PinInit<Self, Error> {
        let irq = request.irq;
        let dev: ARef<Device> = request.dev.into();
        try_pin_init!(&this in Self {
            dev,
            handler <- handler,
            irq: {
                let cookie = this.as_ptr();
                // SAFETY: The callbacks are made for `Self`, and read only `dev` and `handler`
                // through `cookie`, both initialised by now. `cookie` stays valid and pinned
                // until `drop`, which calls `free_irq()` before anything is dropped; `name` is
                // `'static`; by the invariant of `IrqRequest`, `irq` is the device's. This is
                // the last fallible step, so once it succeeds `drop` is guaranteed to run
                // before the memory is reused.
                to_result(unsafe {
                    bindings::request_threaded_irq(
                        irq,
                        Some(threaded_primary::<T>),
                        Some(threaded_thread::<T>),
                        flags.as_raw(),
                        name.as_char_ptr(),
                        cookie.cast(),
                    )
                })?;
                // INVARIANT: The handler is registered with `cookie == this`.
                irq
            },
            _pin: PhantomPinned,
        })
    }
}

#[pinned_drop]
impl<T: ThreadedHandler + 'static> PinnedDrop for ThreadedRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        let cookie: *const Self = &*self;
        // SAFETY: By the type invariant, the handler is registered for `irq` with this cookie.
        // `free_irq()` waits for running handlers, so `handler` and `dev`, dropped after this,
        // outlive every invocation.
        unsafe { bindings::free_irq(self.irq, cookie.cast_mut().cast()) };
    }
}

/// The handler and the device of the registration at `cookie`.
///
/// # Safety
///
/// `cookie` must point to a [`ThreadedRegistration<T>`] whose `dev` and `handler` are
/// initialised and stay alive and pinned for `'a`.
unsafe fn parts<'a, T: ThreadedHandler + 'static>(cookie: *mut c_void) -> (&'a T, &'a Device) {
    let reg = cookie.cast::<ThreadedRegistration<T>>();
    // SAFETY: Per the contract, both fields are initialised; only they are referenced, since
    // `irq` may still be being written when the first interrupt comes.
    unsafe { (&*addr_of!((*reg).handler), &*addr_of!((*reg).dev)) }
}

/// # Safety
///
/// Only for `request_threaded_irq()` by [`ThreadedRegistration::new`] for a `T`.
unsafe extern "C" fn threaded_primary<T: ThreadedHandler + 'static>(
    _irq: c_int,
    cookie: *mut c_void,
) -> bindings::irqreturn_t {
    // SAFETY: The registration keeps itself alive and pinned until `free_irq()` returns.
    let (handler, dev) = unsafe { parts::<T>(cookie) };
    handler.handle(dev) as bindings::irqreturn_t
}

/// # Safety
///
/// As for [`threaded_primary`].
unsafe extern "C" fn threaded_thread<T: ThreadedHandler + 'static>(
    _irq: c_int,
    cookie: *mut c_void,
) -> bindings::irqreturn_t {
    // SAFETY: As in `threaded_primary`.
    let (handler, dev) = unsafe { parts::<T>(cookie) };
    handler.handle_threaded(dev) as bindings::irqreturn_t
}

/// Runs `f` with interrupts disabled on this CPU (`local_irq_save()`/`local_irq_restore()`).
///
/// `f` must not sleep. On `PREEMPT_RT` it must not take a `SpinLock` or `Mutex` either, as
/// both are sleeping locks there; only atomics, raw MMIO or shared memory accesses are fine.
///
/// # Examples
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
/// use kernel::irq::with_local_irqs_disabled;
///
/// let count = AtomicU32::new(1);
/// // Calls nest: the inner one leaves interrupts off for the outer one's rest.
/// let seen = with_local_irqs_disabled(|| {
///     with_local_irqs_disabled(|| count.fetch_add(1, Relaxed));
///     count.fetch_add(1, Relaxed)
/// });
/// assert_eq!((seen, count.load(Relaxed)), (2, 3));
/// ```
pub fn with_local_irqs_disabled<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: Always safe to call; the flags are handed back below on this CPU, since the
    // task cannot migrate while interrupts are off.
    let flags = unsafe { bindings::local_irq_save_flags() };
    let r = f();
    // SAFETY: `flags` came from the matching save above.
    unsafe { bindings::local_irq_restore_flags(flags) };
    r
}
