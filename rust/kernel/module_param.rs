// SPDX-License-Identifier: GPL-2.0

//! Module parameters with driver-defined parsing.
//!
//! [`module_param!`](crate::module_param) places a `struct kernel_param` in the `__param`
//! section, where the kernel finds it: for a loadable module, `insmod pvmm.ko mode=sync`; for a
//! built-in one, `pvmm.mode=sync` on the kernel command line. The value is parsed by a
//! [`ParamType`] before the module's init runs. Parameters made this way are not exposed in
//! sysfs (permissions 0); a driver that wants to change a setting at run time offers its own
//! interface.
//!
//! This is a local stand-in, for Linux 6.12, for the `params` support of later `module!`
//! macros.
//!
//! C header: [`include/linux/moduleparam.h`](srctree/include/linux/moduleparam.h)

use crate::{
    bindings,
    error::from_result,
    ffi::{c_char, c_int, c_void},
    prelude::*,
    str::CStr,
};
use core::ptr;

/// The value behind a module parameter.
pub trait ParamType: Sync + 'static {
    /// Parses and stores `value`.
    ///
    /// Called while the kernel command line (built-in) or the `insmod` arguments (module) are
    /// parsed, before the module's init, under the kernel's parameter lock. An error rejects
    /// the value: boot prints a warning, and `insmod` fails.
    fn set(&self, value: &[u8]) -> Result;
}

/// A `struct kernel_param` for the `__param` section. Made by
/// [`module_param!`](crate::module_param).
#[repr(transparent)]
pub struct KernelParam(bindings::kernel_param);

// SAFETY: The kernel only reads the structure, and only its parameter parser calls `ops`,
// under its own lock; `arg` points to a `ParamType`, which is `Sync`.
unsafe impl Sync for KernelParam {}

impl KernelParam {
    /// Describes parameter `name` with operations `ops` for the value at `data`.
    ///
    /// # Safety
    ///
    /// `ops` must come from [`ops::<T>`] and `data` must point to a `T`; both must be
    /// `'static`.
    pub const unsafe fn new(
        name: &'static CStr,
        ops: &'static bindings::kernel_param_ops,
        data: *const c_void,
    ) -> Self {
        Self(bindings::kernel_param {
            name: name.as_char_ptr(),
            // Only used for sysfs and its locking; these parameters have no sysfs file.
            mod_: ptr::null_mut(),
            ops,
            perm: 0,
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
        get: None,
        free: None,
    }
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
        // SAFETY: The parser passes a NUL-terminated string that lives during the call.
        let value = unsafe { CStr::from_char_ptr(val) };
        // SAFETY: Per the contract of `KernelParam::new`, `arg` points to a `'static` `T`.
        let data = unsafe { &*(*kp).__bindgen_anon_1.arg.cast::<T>() };
        data.set(value.as_bytes())?;
        Ok(0)
    })
}

/// Declares a module parameter `$param` of module `$modname` whose value is the static
/// `$data` of type `$ty: ParamType`.
///
/// # Examples
///
/// ```ignore
/// static MODE: ModeParam = ModeParam::new();
/// kernel::module_param!(MODE, ModeParam, "pvmm", "mode");
/// ```
#[macro_export]
macro_rules! module_param {
    ($data:path, $ty:ty, $modname:literal, $param:literal) => {
        const _: () = {
            static OPS: $crate::bindings::kernel_param_ops = $crate::module_param::ops::<$ty>();

            // Built-in parameters carry the module name as a prefix, as with C's
            // MODULE_PARAM_PREFIX.
            #[cfg(MODULE)]
            const NAME: &$crate::str::CStr = $crate::c_str!($param);
            #[cfg(not(MODULE))]
            const NAME: &$crate::str::CStr = $crate::c_str!(concat!($modname, ".", $param));

            #[used]
            #[link_section = "__param"]
            static PARAM: $crate::module_param::KernelParam =
                // SAFETY: `OPS` is made for `$ty` and `$data` is a `'static` `$ty`.
                unsafe {
                    $crate::module_param::KernelParam::new(
                        NAME,
                        &OPS,
                        ::core::ptr::addr_of!($data).cast(),
                    )
                };
        };
    };
}
