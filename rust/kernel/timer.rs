// SPDX-License-Identifier: GPL-2.0

//! Kernel timers (`struct timer_list`) that call a pinned handler.
//!
//! A [`Timer`] owns its handler. The timer is shut down (`timer_shutdown_sync()`) before the
//! handler is dropped, so the handler never runs after the drop has begun.
//!
//! This is a local stand-in, for Linux 6.12, for the timer abstractions of later kernels.
//!
//! C header: [`include/linux/timer.h`](srctree/include/linux/timer.h)

use crate::{bindings, prelude::*, str::CStr, sync::LockClassKey, time::Jiffies, types::Opaque};
use core::marker::PhantomPinned;

/// The callback of a [`Timer`].
pub trait TimerHandler: Sync {
    /// The timer expired.
    ///
    /// Runs in softirq context (a kernel thread on `PREEMPT_RT`): must not sleep.
    fn expired(&self);
}

/// A one-shot kernel timer with handler `T`.
///
/// Arming and cancelling take `&self` and may race with each other and with the handler; the
/// timer core serialises them. Drop it in process context (shutting down waits for a running
/// handler).
///
/// # Invariants
///
/// `raw` was initialised by `init_timer_key()` with [`expired_callback::<T>`] as its function
/// and is embedded in this pinned `Timer<T>`.
#[pin_data(PinnedDrop)]
pub struct Timer<T: TimerHandler + 'static> {
    #[pin]
    raw: Opaque<bindings::timer_list>,
    handler: T,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The timer core synchronises every access to `raw`; `T: Sync` and the handler is only
// used through shared references.
unsafe impl<T: TimerHandler + Send + 'static> Send for Timer<T> {}

// SAFETY: All methods taking `&self` call timer functions that do their own locking.
unsafe impl<T: TimerHandler + 'static> Sync for Timer<T> {}

impl<T: TimerHandler + 'static> Timer<T> {
    /// Creates an unarmed timer for `handler`.
    pub fn new(handler: T, name: &'static CStr, key: &'static LockClassKey) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes and pinned; `name` and `key` are `'static`.
            raw <- Opaque::ffi_init(|slot| unsafe {
                bindings::init_timer_key(
                    slot,
                    Some(expired_callback::<T>),
                    0,
                    name.as_char_ptr(),
                    key.as_ptr(),
                )
            }),
            handler,
            _pin: PhantomPinned,
        })
    }

    /// Returns the handler.
    pub fn handler(&self) -> &T {
        &self.handler
    }

    /// Arms the timer to expire in `delay` jiffies, unless it is already armed to expire
    /// earlier (`timer_reduce()`). Any context.
    pub fn arm_within(&self, delay: Jiffies) {
        // SAFETY: `jiffies` is a kernel variable that is always valid to read.
        let now = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(bindings::jiffies)) };
        // SAFETY: By the type invariant, `raw` is an initialised timer.
        unsafe { bindings::timer_reduce(self.raw.get(), now.wrapping_add(delay)) };
    }

    /// Disarms the timer and waits for a running handler to return. May sleep.
    pub fn cancel_sync(&self) {
        // SAFETY: By the type invariant, `raw` is an initialised timer.
        unsafe { bindings::timer_delete_sync(self.raw.get()) };
    }
}

#[pinned_drop]
impl<T: TimerHandler + 'static> PinnedDrop for Timer<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant, `raw` is an initialised timer. After this returns it
        // can be neither armed again nor running, so `handler` may be dropped.
        unsafe { bindings::timer_shutdown_sync(self.raw.get()) };
    }
}

/// # Safety
///
/// Only as the function of a `timer_list` embedded in a live `Timer<T>`.
unsafe extern "C" fn expired_callback<T: TimerHandler + 'static>(raw: *mut bindings::timer_list) {
    let offset = core::mem::offset_of!(Timer<T>, raw);
    // SAFETY: By the type invariant, `raw` is the `raw` field of a `Timer<T>`; `Opaque` is
    // transparent, so stepping back by the field offset gives the timer.
    let timer = unsafe { &*raw.cast::<u8>().sub(offset).cast::<Timer<T>>() };
    timer.handler.expired();
}
