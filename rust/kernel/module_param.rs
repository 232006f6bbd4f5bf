// SPDX-License-Identifier: GPL-2.0

//! Module parameters with driver-defined parsing, writable at run time.
//!
//! [`module_param!`](crate::module_param) places a `struct kernel_param` in the `__param`
//! section, where the kernel finds it: for a loadable module, `insmod pvmm.ko mode=sync`; for a
//! built-in one, `pvmm.mode=sync` on the kernel command line. A [`ParamType`] parses the value,
//! before the module's init runs. With a non-zero permission the parameter is also a file in
//! `/sys/module/<module>/parameters/`, read through [`ParamType::show`] and written through
//! [`ParamType::set`] at any time, as C's `module_param_cb()` offers. `modinfo` lists its
//! description.
//!
//! This is a local stand-in, for Linux 6.12, for the `params` of later `module!` macros
//! (`kernel::module_param`, 6.19). Those parse integers into a value that the module reads, and
//! are not exposed in sysfs; a parameter here owns its parser and its storage, so that a driver
//! can validate against limits and change a setting while running.
//!
//! C header: [`include/linux/moduleparam.h`](srctree/include/linux/moduleparam.h)

use crate::{
    bindings,
    error::from_result,
    ffi::{c_char, c_int, c_void},
    page::PAGE_SIZE,
    prelude::*,
    str::{CStr, RawFormatter},
};
use core::{fmt, ptr};

/// The value behind a module parameter.
///
/// # Examples
///
/// The operations of a parameter, called as the kernel calls them on `insmod` and on reads and
/// writes of its sysfs file:
///
/// ```
/// use core::{fmt, ptr, sync::atomic::{AtomicU32, Ordering::Relaxed}};
/// use kernel::{bindings, c_str, module_param::{ops, KernelParam, ParamType}, page::PAGE_SIZE};
/// use kernel::prelude::*;
///
/// struct Level(AtomicU32);
///
/// impl ParamType for Level {
///     fn set(&self, value: &[u8]) -> Result {
///         let text = core::str::from_utf8(value).map_err(|_| EINVAL)?;
///         let level = text.trim().parse::<u32>().map_err(|_| EINVAL)?;
///         self.0.store(level, Relaxed);
///         Ok(())
///     }
///
///     fn show(&self, w: &mut impl fmt::Write) -> fmt::Result {
///         write!(w, "{}", self.0.load(Relaxed))
///     }
/// }
///
/// static LEVEL: Level = Level(AtomicU32::new(3));
/// static OPS: bindings::kernel_param_ops = ops::<Level>();
/// // SAFETY: `OPS` is made for `Level`, and `LEVEL` is a `'static` `Level`.
/// static PARAM: KernelParam =
///     unsafe { KernelParam::new(c_str!("level"), 0o644, &OPS, ptr::addr_of!(LEVEL).cast()) };
///
/// let kp: *const bindings::kernel_param = ptr::addr_of!(PARAM).cast();
/// let (set, get) = (OPS.set.unwrap(), OPS.get.unwrap());
/// let mut page = KVec::<u8>::with_capacity(PAGE_SIZE, GFP_KERNEL)?;
/// // SAFETY: `kp` is a parameter made for these operations; the values are NUL-terminated
/// // strings and `page` has room for a page, as the kernel's callers guarantee.
/// unsafe {
///     assert_eq!(set(c_str!(" 7\n").as_char_ptr(), kp), 0);
///     assert_eq!(LEVEL.0.load(Relaxed), 7);
///     // A bad value, or none (`level` without `=`), changes nothing.
///     assert_eq!(set(c_str!("seven").as_char_ptr(), kp), EINVAL.to_errno());
///     assert_eq!(set(ptr::null(), kp), EINVAL.to_errno());
///     assert_eq!(LEVEL.0.load(Relaxed), 7);
///     // A read shows the value and a newline.
///     let n = get(page.as_mut_ptr().cast(), kp);
///     assert_eq!(n, 2);
///     page.set_len(2);
/// }
/// assert_eq!(&page[..], b"7\n");
/// # Ok::<(), Error>(())
/// ```
///
/// # Locking
///
/// The kernel serialises calls for one parameter (the module's parameter lock), but the driver
/// may read and change the value concurrently, so implementations keep it in atomics or behind
/// their own lock.
pub trait ParamType: Sync + 'static {
    /// Parses and stores `value`.
    ///
    /// Called while the kernel command line (built-in) or the `insmod` arguments (module) are
    /// parsed, before the module's init, and on every write to the sysfs file. An error rejects
    /// the value: boot prints a warning, `insmod` fails, and the write returns it.
    fn set(&self, value: &[u8]) -> Result;

    /// Writes the current value, without a newline, for a read of the sysfs file.
    fn show(&self, w: &mut impl fmt::Write) -> fmt::Result;
}

/// A `struct kernel_param` for the `__param` section. Made by
/// [`module_param!`](crate::module_param).
#[repr(transparent)]
pub struct KernelParam(bindings::kernel_param);

// SAFETY: The kernel only reads the structure, and calls `ops` only under its own locks; `arg`
// points to a `ParamType`, which is `Sync`.
unsafe impl Sync for KernelParam {}

impl KernelParam {
    /// Describes parameter `name`, with sysfs permissions `perm` (0 for none), whose operations
    /// `ops` act on the value at `data`.
    ///
    /// # Safety
    ///
    /// `ops` must come from [`ops::<T>`] and `data` must point to a `T`; both must be
    /// `'static`.
    pub const unsafe fn new(
        name: &'static CStr,
        perm: u16,
        ops: &'static bindings::kernel_param_ops,
        data: *const c_void,
    ) -> Self {
        Self(bindings::kernel_param {
            name: name.as_char_ptr(),
            // Only chooses the lock taken around `set` at load time; without it that is the
            // kernel's global parameter lock. `ParamType` needs neither.
            mod_: ptr::null_mut(),
            ops,
            perm,
            level: -1,
            flags: 0,
            __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
                arg: data.cast_mut(),
            },
        })
    }
}

/// The operations of a parameter whose value is a `T`.
pub const fn ops<T: ParamType>() -> bindings::kernel_param_ops {
    bindings::kernel_param_ops {
        flags: 0,
        set: Some(set_callback::<T>),
        get: Some(get_callback::<T>),
        free: None,
    }
}

/// The `T` behind `kp`.
///
/// # Safety
///
/// `kp` must be a parameter made by [`KernelParam::new`] for a `T`.
unsafe fn param_data<'a, T: ParamType>(kp: *const bindings::kernel_param) -> &'a T {
    // SAFETY: Per the contract of `KernelParam::new`, `arg` points to a `'static` `T`.
    unsafe { &*(*kp).__bindgen_anon_1.arg.cast::<T>() }
}

/// # Safety
///
/// Only as `kernel_param_ops::set` of a parameter made by [`KernelParam::new`] for a `T`.
unsafe extern "C" fn set_callback<T: ParamType>(
    val: *const c_char,
    kp: *const bindings::kernel_param,
) -> c_int {
    from_result(|| {
        if val.is_null() {
            // `name` without `=value`.
            return Err(EINVAL);
        }
        // SAFETY: The kernel passes a NUL-terminated string that lives during the call.
        let value = unsafe { CStr::from_char_ptr(val) };
        // SAFETY: This is the `set` of a parameter made for a `T`.
        unsafe { param_data::<T>(kp) }.set(value.as_bytes())?;
        Ok(0)
    })
}

/// # Safety
///
/// Only as `kernel_param_ops::get` of a parameter made by [`KernelParam::new`] for a `T`.
unsafe extern "C" fn get_callback<T: ParamType>(
    buffer: *mut c_char,
    kp: *const bindings::kernel_param,
) -> c_int {
    from_result(|| {
        // SAFETY: sysfs passes a buffer of `PAGE_SIZE` bytes, writable during the call.
        let mut f = unsafe { RawFormatter::from_buffer(buffer.cast(), PAGE_SIZE) };
        // SAFETY: This is the `get` of a parameter made for a `T`.
        let data = unsafe { param_data::<T>(kp) };
        data.show(&mut f).map_err(|_| EINVAL)?;
        fmt::Write::write_str(&mut f, "\n").map_err(|_| EINVAL)?;
        // The formatter counts what did not fit as well; that much was cut off.
        let written = f.bytes_written().min(PAGE_SIZE);
        Ok(c_int::try_from(written)?)
    })
}

/// A NUL-terminated `.modinfo` entry as a byte array of its own length.
///
/// # Examples
///
/// ```
/// use kernel::module_param::modinfo;
///
/// const ENTRY: &str = "parm=level:verbosity";
/// const BYTES: [u8; ENTRY.len() + 1] = modinfo(ENTRY);
/// assert_eq!(&BYTES[..], b"parm=level:verbosity\0");
/// ```
pub const fn modinfo<const N: usize>(entry: &str) -> [u8; N] {
    let bytes = entry.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() && i < N - 1 {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Declares a module parameter `$param` of module `$modname` whose value is the static
/// `$data` of type `$ty: ParamType`, with sysfs permissions `$perm` (`0` for no sysfs file)
/// and the `modinfo` description `$desc`.
///
/// # Examples
///
/// ```ignore
/// static MODE: ModeParam = ModeParam::new();
/// kernel::module_param!(MODE, ModeParam, "pvmm", mode, 0o644, "teardown mode");
/// ```
#[macro_export]
macro_rules! module_param {
    ($data:path, $ty:ty, $modname:literal, $param:ident, $perm:expr, $desc:literal) => {
        const _: () = {
            static OPS: $crate::bindings::kernel_param_ops = $crate::module_param::ops::<$ty>();

            // Built-in parameters carry the module name as a prefix, as with C's
            // MODULE_PARAM_PREFIX; so do their `modinfo` entries.
            #[cfg(MODULE)]
            const NAME: &$crate::str::CStr = $crate::c_str!(stringify!($param));
            #[cfg(not(MODULE))]
            const NAME: &$crate::str::CStr =
                $crate::c_str!(concat!($modname, ".", stringify!($param)));
            #[cfg(MODULE)]
            const DESC: &str = concat!("parm=", stringify!($param), ":", $desc);
            #[cfg(not(MODULE))]
            const DESC: &str = concat!($modname, ".parm=", stringify!($param), ":", $desc);

            // `used(compiler)`, as `module!` does for `.modinfo`: plain `used` also marks
            // each static's section to be retained, which leaves one section per
            // parameter, while the module loader reads only one of each name.
            #[used(compiler)]
            #[link_section = "__param"]
            static KERNEL_PARAM: $crate::module_param::KernelParam =
                // SAFETY: `OPS` is made for `$ty` and `$data` is a `'static` `$ty`.
                unsafe {
                    $crate::module_param::KernelParam::new(
                        NAME,
                        $perm,
                        &OPS,
                        ::core::ptr::addr_of!($data).cast(),
                    )
                };

            #[used(compiler)]
            #[link_section = ".modinfo"]
            static MODINFO: [u8; DESC.len() + 1] = $crate::module_param::modinfo(DESC);
        };
    };
}
