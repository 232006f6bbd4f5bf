// SPDX-License-Identifier: GPL-2.0

//! Interrupt handler registration.
//!
//! [`ThreadedRegistration`] requests an interrupt line with `request_threaded_irq()` for a
//! [`ThreadedHandler`] that it owns and pins, and frees it with `free_irq()` on drop.
//!
//! On `PREEMPT_RT` the kernel runs every handler in a thread (forced threading): the "hard"
//! handler then runs in an interrupt thread with preemption enabled, and the threaded handler in a
//! second one. The code must still follow the rules of the context it is written for.
//!
//! This is a local stand-in, for Linux 6.12, for the `irq` module of later kernels. Unlike
//! upstream, a registration takes the interrupt number directly and is not revoked when the
//! device is unbound: the driver keeps it in its per-device data, which is dropped on unbind
//! before the bus frees the interrupt vectors.
//!
//! C header: [`include/linux/interrupt.h`](srctree/include/linux/interrupt.h)

use crate::{
    bindings,
    error::to_result,
    ffi::{c_int, c_ulong, c_void},
    prelude::*,
    str::CStr,
};
use core::{marker::PhantomPinned, ptr::addr_of_mut};

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

/// An interrupt handler with a "hard" part and a threaded part.
pub trait ThreadedHandler: Sync {
    /// Handles the interrupt in hard interrupt context (an interrupt thread on `PREEMPT_RT`).
    ///
    /// Must not sleep. The default wakes the thread unconditionally, which suits a handler that
    /// does all of its work in [`ThreadedHandler::handle_threaded`] on an unshared line.
    fn handle(&self) -> ThreadedIrqReturn {
        ThreadedIrqReturn::WakeThread
    }

    /// Runs in the interrupt thread after [`ThreadedHandler::handle`] returned
    /// [`ThreadedIrqReturn::WakeThread`]. May sleep.
    fn handle_threaded(&self) -> IrqReturn;
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
/// ```ignore
/// use kernel::irq::{Flags, IrqReturn, ThreadedHandler, ThreadedRegistration};
/// use kernel::{c_str, prelude::*};
///
/// struct Completions;
///
/// impl ThreadedHandler for Completions {
///     fn handle_threaded(&self) -> IrqReturn {
///         IrqReturn::Handled
///     }
/// }
///
/// fn setup(irq: u32) -> Result<Pin<KBox<ThreadedRegistration<Completions>>>> {
///     KBox::pin_init(
///         ThreadedRegistration::new(irq, Flags::ONESHOT, c_str!("pvmm"), Completions),
///         GFP_KERNEL,
///     )
/// }
/// ```
///
/// # Invariants
///
/// The kernel holds a threaded handler for `irq` whose cookie is the address of `handler`, from
/// the end of initialisation until `drop`.
#[pin_data(PinnedDrop)]
pub struct ThreadedRegistration<T: ThreadedHandler + 'static> {
    #[pin]
    handler: T,
    irq: u32,
    // The kernel holds the address of `handler`.
    #[pin]
    _pin: PhantomPinned,
}

impl<T: ThreadedHandler + 'static> ThreadedRegistration<T> {
    /// Initialises `handler` in place, then requests `irq` for it.
    ///
    /// `name` shows up in `/proc/interrupts`. The handler may run as soon as the request
    /// succeeds. Returns the error of `request_threaded_irq()`, e.g. `EINVAL` for an invalid
    /// interrupt number or `EBUSY` for an unshareable line in use.
    // The 6.12 expansion of `try_pin_init!(&this in ...)` has an uncommented `unsafe` block.
    #[allow(clippy::undocumented_unsafe_blocks)]
    pub fn new(
        irq: u32,
        flags: Flags,
        name: &'static CStr,
        handler: impl PinInit<T, Error>,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(&this in Self {
            handler <- handler,
            irq: {
                // SAFETY: `this` points to the registration being initialised; `handler` is
                // already initialised.
                let cookie = unsafe { addr_of_mut!((*this.as_ptr()).handler) };
                // SAFETY: The callbacks match `cookie`'s type. `cookie` stays valid and pinned
                // until `drop`, which calls `free_irq()` before the handler is dropped; `name`
                // is `'static`. This is the last fallible step, so once it succeeds `drop` is
                // guaranteed to run before the memory is reused.
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
                // INVARIANT: The handler is registered with `cookie == &handler`.
                irq
            },
            _pin: PhantomPinned,
        })
    }

    /// Returns the handler.
    pub fn handler(&self) -> &T {
        &self.handler
    }

    /// Returns the interrupt number.
    pub fn irq(&self) -> u32 {
        self.irq
    }

    /// Waits until running invocations of the handler, hard and threaded, have returned.
    ///
    /// May sleep.
    pub fn synchronize(&self) {
        // SAFETY: By the type invariant, `irq` is a requested interrupt line.
        unsafe { bindings::synchronize_irq(self.irq) };
    }
}

#[pinned_drop]
impl<T: ThreadedHandler + 'static> PinnedDrop for ThreadedRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        let cookie: *const T = &self.handler;
        // SAFETY: By the type invariant, the handler is registered for `irq` with this cookie.
        // `free_irq()` waits for running handlers, so `handler`, dropped after this, outlives
        // every invocation.
        unsafe { bindings::free_irq(self.irq, cookie.cast_mut().cast()) };
    }
}

/// # Safety
///
/// Only for `request_threaded_irq()` with a cookie that points to a live `T`.
unsafe extern "C" fn threaded_primary<T: ThreadedHandler>(
    _irq: c_int,
    cookie: *mut c_void,
) -> bindings::irqreturn_t {
    // SAFETY: The registration keeps `*cookie` alive and pinned until `free_irq()` returns.
    let handler = unsafe { &*cookie.cast::<T>() };
    handler.handle() as bindings::irqreturn_t
}

/// # Safety
///
/// As for [`threaded_primary`].
unsafe extern "C" fn threaded_thread<T: ThreadedHandler>(
    _irq: c_int,
    cookie: *mut c_void,
) -> bindings::irqreturn_t {
    // SAFETY: As in `threaded_primary`.
    let handler = unsafe { &*cookie.cast::<T>() };
    handler.handle_threaded() as bindings::irqreturn_t
}

/// Runs `f` with interrupts disabled on this CPU (`local_irq_save()`/`local_irq_restore()`).
///
/// `f` must not sleep. On `PREEMPT_RT` it must not take a `SpinLock` or `Mutex` either, as
/// both are sleeping locks there; only atomics, raw MMIO or shared memory accesses are fine.
pub fn with_local_irqs_disabled<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: Always safe to call; the flags are handed back below on this CPU, since the
    // task cannot migrate while interrupts are off.
    let flags = unsafe { bindings::local_irq_save_flags() };
    let r = f();
    // SAFETY: `flags` came from the matching save above.
    unsafe { bindings::local_irq_restore_flags(flags) };
    r
}
