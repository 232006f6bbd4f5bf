// SPDX-License-Identifier: GPL-2.0

//! Printing messages prefixed with a device's driver and name: [`dev_err!`](crate::dev_err) and
//! [`dev_info!`](crate::dev_info), the Rust counterparts of C's `dev_err()` and `dev_info()`.
//!
//! Both take a `&device::Device`; a bus device lends one through [`AsRef`], e.g.
//! `dev_info!(pdev.as_ref(), "...\n")`.
//!
//! This is a local stand-in for the `dev_*!` macros and the `Device::pr_*` methods that Linux 6.13
//! added to `rust/kernel/device.rs`, with the same names and shape but only the levels that pvmm
//! uses. Linux 6.12 already has `device.rs` without them, hence a file of its own. On a rebase onto
//! Linux 6.13 or later this file and its line in `lib.rs` are deleted: the upstream macros take the
//! same arguments, so their users stay as they are.
//!
//! C header: [`include/linux/dev_printk.h`](srctree/include/linux/dev_printk.h)

use crate::{bindings, device::Device, ffi::c_void};
use core::fmt;

impl Device {
    /// Prints an error-level message (level 3) prefixed with device information.
    ///
    /// More details are available from [`dev_err`](crate::dev_err).
    pub fn pr_err(&self, args: fmt::Arguments<'_>) {
        // SAFETY: `KERN_ERR` is one of the NUL-terminated `KERN_*` constants.
        unsafe { self.printk(bindings::KERN_ERR, args) };
    }

    /// Prints an info-level message (level 6) prefixed with device information.
    ///
    /// More details are available from [`dev_info`](crate::dev_info).
    pub fn pr_info(&self, args: fmt::Arguments<'_>) {
        // SAFETY: `KERN_INFO` is one of the NUL-terminated `KERN_*` constants.
        unsafe { self.printk(bindings::KERN_INFO, args) };
    }

    /// Prints `msg` at level `klevel` with the device's driver and name as prefix
    /// (`_dev_printk()`).
    ///
    /// # Safety
    ///
    /// `klevel` must be NUL-terminated; in particular, one of the `KERN_*` constants.
    #[cfg_attr(not(CONFIG_PRINTK), allow(unused_variables))]
    unsafe fn printk(&self, klevel: &[u8], msg: fmt::Arguments<'_>) {
        // SAFETY: `klevel` is NUL-terminated (guaranteed by the caller), `self.as_raw()` is a
        // valid device because `self` is, and `%pA` makes vsprintf hand the pointer to `msg`
        // (alive during the call) to `rust_fmt_argument`.
        #[cfg(CONFIG_PRINTK)]
        unsafe {
            bindings::_dev_printk(
                klevel.as_ptr().cast::<crate::ffi::c_char>(),
                self.as_raw(),
                crate::c_str!("%pA").as_char_ptr(),
                core::ptr::from_ref(&msg).cast::<c_void>(),
            )
        };
    }
}

/// Prints a message for a device by calling `$method` (`pr_err`, `pr_info`) on `$dev`.
#[doc(hidden)]
#[macro_export]
macro_rules! dev_printk {
    ($method:ident, $dev:expr, $($f:tt)*) => {
        {
            ($dev).$method(::core::format_args!($($f)*));
        }
    }
}

/// Prints an error-level message (level 3) prefixed with device information (`dev_err()`).
///
/// Takes a `&device::Device` and a format string with its arguments, as [`pr_err!`] does; see
/// [`core::fmt`] for the syntax.
///
/// [`pr_err!`]: crate::pr_err!
///
/// # Examples
///
/// ```ignore
/// # use kernel::device::Device;
///
/// fn example(dev: &Device) {
///     dev_err!(dev, "hello {}\n", "there");
/// }
/// ```
#[macro_export]
macro_rules! dev_err {
    ($($f:tt)*) => { $crate::dev_printk!(pr_err, $($f)*); }
}

/// Prints an info-level message (level 6) prefixed with device information (`dev_info()`).
///
/// Takes a `&device::Device` and a format string with its arguments, as [`pr_info!`] does; see
/// [`core::fmt`] for the syntax.
///
/// [`pr_info!`]: crate::pr_info!
///
/// # Examples
///
/// ```ignore
/// # use kernel::device::Device;
///
/// fn example(dev: &Device) {
///     dev_info!(dev, "hello {}\n", "there");
/// }
/// ```
#[macro_export]
macro_rules! dev_info {
    ($($f:tt)*) => { $crate::dev_printk!(pr_info, $($f)*); }
}
