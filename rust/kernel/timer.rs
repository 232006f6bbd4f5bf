// SPDX-License-Identifier: GPL-2.0

//! Kernel timers (`struct timer_list`) embedded in the structure they call back.
//!
//! A [`Timer<T>`] is a field of a `T` that lives in an [`Arc`]; [`impl_has_timer!`] tells the
//! timer where it is, and [`TimerCallback::run`] is called with the `Arc<T>` when it expires.
//! While the timer is pending it holds a reference to its `T`, taken when it is armed
//! ([`Timer::arm_within`]) and given back when it runs or is cancelled ([`Timer::cancel_sync`]),
//! so the `T` outlives every expiry and nothing needs to be shut down when it is dropped.
//!
//! This is a local stand-in, for Linux 6.12, shaped like upstream's `kernel::time::hrtimer`
//! (6.15): the timer is embedded in its owner, found by a `HasTimer` implementation that a
//! macro writes, and started through the owner's `Arc`. It drives a `timer_list`, for which
//! upstream has no abstraction yet, and rearms with `timer_reduce()` (the earlier expiry wins),
//! which the flush deadline of a batch needs.
//!
//! C header: [`include/linux/timer.h`](srctree/include/linux/timer.h)

use crate::{
    bindings,
    prelude::*,
    str::CStr,
    sync::{Arc, ArcBorrow, LockClassKey},
    time::Jiffies,
    types::Opaque,
};
use core::marker::{PhantomData, PhantomPinned};

/// What a [`Timer`] calls when it expires.
pub trait TimerCallback: HasTimer<Self> + Send + Sync + Sized + 'static {
    /// The timer embedded in `this` expired.
    ///
    /// Runs in softirq context (a kernel thread on `PREEMPT_RT`): must not sleep. If `this` is
    /// the last reference, the `T` is dropped here, in that context; an owner whose drop may
    /// sleep cancels the timer ([`Timer::cancel_sync`]) before it lets go of its last reference.
    fn run(this: Arc<Self>);
}

/// A type that embeds a [`Timer<T>`].
///
/// # Safety
///
/// [`HasTimer::OFFSET`] must be the offset of a field of type `Timer<T>` in `Self`. Implement it
/// with [`impl_has_timer!`], which computes it.
pub unsafe trait HasTimer<T> {
    /// Offset of the `Timer<T>` field in `Self`.
    const OFFSET: usize;

    /// The embedded timer.
    fn timer(&self) -> &Timer<T> {
        let this: *const Self = self;
        // SAFETY: By the trait's contract, there is a `Timer<T>` at `OFFSET` within `*self`.
        unsafe { &*this.cast::<u8>().add(Self::OFFSET).cast::<Timer<T>>() }
    }
}

/// Implements [`HasTimer`] for a type, naming its [`Timer`] field; see [`Timer`] for an
/// example.
#[macro_export]
macro_rules! impl_has_timer {
    (impl$({$($generics:tt)*})? HasTimer<$timer_type:ty> for $self:ty { self.$field:ident }) => {
        // SAFETY: `OFFSET` is the offset of the field `$field`, of type `Timer<$timer_type>`,
        // which `assert_timer_field` checks.
        unsafe impl$(<$($generics)*>)? $crate::timer::HasTimer<$timer_type> for $self {
            const OFFSET: usize = {
                $crate::timer::assert_timer_field::<Self, $timer_type, _>(&|this| &this.$field);
                ::core::mem::offset_of!(Self, $field)
            };
        }
    };
}

/// Compiles only if `field` borrows a [`Timer<U>`] out of a `T`; for [`impl_has_timer!`].
#[doc(hidden)]
pub const fn assert_timer_field<T, U, F: for<'a> Fn(&'a T) -> &'a Timer<U>>(_field: &F) {}

/// A one-shot kernel timer embedded in a `T`.
///
/// Arming and cancelling may race with each other and with the callback; the timer core
/// serialises them. Initialise it with [`Timer::new`] in the pinned initialiser of its `T`.
///
/// # Examples
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
/// use kernel::{
///     c_str, prelude::*, static_lock_class,
///     sync::Arc,
///     task,
///     time::Ktime,
///     timer::{Timer, TimerCallback},
/// };
///
/// #[pin_data]
/// struct Ticker {
///     #[pin]
///     timer: Timer<Ticker>,
///     runs: AtomicU32,
/// }
///
/// kernel::impl_has_timer! {
///     impl HasTimer<Self> for Ticker { self.timer }
/// }
///
/// impl TimerCallback for Ticker {
///     fn run(this: Arc<Self>) {
///         this.runs.fetch_add(1, Relaxed);
///     }
/// }
///
/// let ticker = Arc::pin_init(
///     pin_init!(Ticker {
///         timer <- Timer::new(c_str!("ticker"), static_lock_class!()),
///         runs: AtomicU32::new(0),
///     }),
///     GFP_KERNEL,
/// )?;
///
/// // Armed twice before it expires, it runs once, at the earlier time.
/// Timer::arm_within(ticker.as_arc_borrow(), 1);
/// Timer::arm_within(ticker.as_arc_borrow(), 100_000);
/// let start = Ktime::ktime_get();
/// while ticker.runs.load(Relaxed) == 0 && (Ktime::ktime_get() - start).to_ms() < 5_000 {
///     task::cond_resched();
/// }
/// assert_eq!(ticker.runs.load(Relaxed), 1);
///
/// // Cancelled while pending, it gives back the reference it held.
/// Timer::arm_within(ticker.as_arc_borrow(), 100_000);
/// Timer::cancel_sync(&*ticker);
/// assert_eq!(ticker.runs.load(Relaxed), 1);
/// assert!(ticker.into_unique_or_drop().is_some());
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `raw` was initialised by `init_timer_key()` with [`expired_callback::<T>`] as its function,
/// and this timer is the field of a `T` at [`HasTimer::OFFSET`]. While `raw` is pending, it owns
/// one reference to that `T`'s `Arc`, made by [`Arc::into_raw`].
#[pin_data]
pub struct Timer<T> {
    #[pin]
    raw: Opaque<bindings::timer_list>,
    _owner: PhantomData<T>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The timer core synchronises every access to `raw`; the `T` is reached only through
// `Arc<T>` with `T: Send + Sync` (see `TimerCallback`).
unsafe impl<T> Send for Timer<T> {}

// SAFETY: All methods taking `&self` call timer functions that do their own locking.
unsafe impl<T> Sync for Timer<T> {}

impl<T: TimerCallback> Timer<T> {
    /// An unarmed timer; `name` and `key` are for lockdep.
    pub fn new(name: &'static CStr, key: &'static LockClassKey) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes and pinned; `name` and `key` are `'static`.
            // INVARIANT: The callback is `expired_callback::<T>`; the caller embeds the timer
            // in a `T`, which `HasTimer` (required by `TimerCallback`) locates.
            raw <- Opaque::ffi_init(|slot| unsafe {
                bindings::init_timer_key(
                    slot,
                    Some(expired_callback::<T>),
                    0,
                    name.as_char_ptr(),
                    key.as_ptr(),
                )
            }),
            _owner: PhantomData,
            _pin: PhantomPinned,
        })
    }

    /// Arms the timer of `this` to expire in `delay` jiffies, unless it is already armed to
    /// expire earlier (`timer_reduce()`). Any context.
    pub fn arm_within(this: ArcBorrow<'_, T>, delay: Jiffies) {
        let timer = this.timer();
        // A reference for the timer to own if this arms it.
        let owned = Arc::into_raw(Arc::<T>::from(this));
        // SAFETY: `jiffies` is a kernel variable that is always valid to read.
        let now = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(bindings::jiffies)) };
        // SAFETY: By the type invariant, `raw` is an initialised timer.
        let was_pending =
            unsafe { bindings::timer_reduce(timer.raw.get(), now.wrapping_add(delay)) } != 0;
        if was_pending {
            // It already owns a reference; `owned` is surplus.
            // SAFETY: `owned` came from `Arc::into_raw` above and was not handed over.
            drop(unsafe { Arc::from_raw(owned) });
        }
        // INVARIANT: Otherwise the timer was idle and now is pending with `owned`.
    }

    /// Disarms the timer of `this` and waits for a running callback to return. May sleep; must
    /// not be called from the callback.
    pub fn cancel_sync(this: &T) {
        let timer = this.timer();
        // SAFETY: By the type invariant, `raw` is an initialised timer.
        let was_pending = unsafe { bindings::timer_delete_sync(timer.raw.get()) } != 0;
        if was_pending {
            // SAFETY: By the type invariant, a pending timer owns one reference to `this`,
            // which is no longer pending now: the reference is ours to give back.
            drop(unsafe { Arc::from_raw(this as *const T) });
        }
    }
}

/// # Safety
///
/// Only as the function of a `timer_list` made by [`Timer::new`] for a `T`.
unsafe extern "C" fn expired_callback<T: TimerCallback>(raw: *mut bindings::timer_list) {
    // `raw` is the first field of `Timer<T>` up to `Opaque`'s transparency.
    let offset = core::mem::offset_of!(Timer<T>, raw) + T::OFFSET;
    // SAFETY: By the type invariant, `raw` is embedded in a `T` at `offset`, and the timer,
    // which has just stopped being pending, owned one reference to its `Arc`, now ours.
    let this = unsafe { Arc::from_raw(raw.cast::<u8>().sub(offset).cast::<T>()) };
    T::run(this);
}
