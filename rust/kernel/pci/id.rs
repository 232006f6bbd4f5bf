// SPDX-License-Identifier: GPL-2.0

//! PCI device ids and the id tables of drivers.
//!
//! C header: [`include/linux/mod_devicetable.h`](srctree/include/linux/mod_devicetable.h)

use crate::bindings;

/// A PCI device id (`struct pci_device_id`).
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct DeviceId(bindings::pci_device_id);

impl DeviceId {
    /// Matches any value of a field (`PCI_ANY_ID`).
    pub const ANY: u32 = !0;

    /// Matches `vendor`:`device` with any subsystem ids (C's `PCI_DEVICE()`).
    pub const fn from_id(vendor: u32, device: u32) -> Self {
        Self(bindings::pci_device_id {
            vendor,
            device,
            subvendor: Self::ANY,
            subdevice: Self::ANY,
            class: 0,
            class_mask: 0,
            driver_data: 0,
            override_only: 0,
        })
    }

    /// The all-zero id that terminates a table.
    const fn zero() -> Self {
        Self(bindings::pci_device_id {
            vendor: 0,
            device: 0,
            subvendor: 0,
            subdevice: 0,
            class: 0,
            class_mask: 0,
            driver_data: 0,
            override_only: 0,
        })
    }
}

/// `N` [`DeviceId`]s followed by the all-zero id that ends a table, laid out as C expects a
/// `pci_device_id` table.
///
/// # Invariants
///
/// `sentinel` is all zeroes and directly follows `ids` (same type, `repr(C)`, so no padding);
/// the `driver_data` of `ids[i]` is `i`.
#[repr(C)]
pub struct RawIdArray<const N: usize> {
    ids: [DeviceId; N],
    sentinel: DeviceId,
}

impl<const N: usize> RawIdArray<N> {
    /// Builds the table from `ids`, numbering them in `driver_data`.
    pub const fn new(ids: [DeviceId; N]) -> Self {
        let mut ids = ids;
        let mut i = 0;
        while i < N {
            ids[i].0.driver_data = i as _;
            i += 1;
        }
        // INVARIANT: The sentinel is the zero id and follows `ids`, numbered above.
        Self {
            ids,
            sentinel: DeviceId::zero(),
        }
    }
}

/// A table of `N` [`DeviceId`]s, each with the driver's information `U` about the devices it
/// matches. Usually made by [`pci_device_table!`](crate::pci_device_table).
pub struct IdArray<U: 'static, const N: usize> {
    raw: RawIdArray<N>,
    infos: [U; N],
}

impl<U, const N: usize> IdArray<U, N> {
    /// Builds the table from pairs of an id and its information.
    pub const fn new(ids: [DeviceId; N], infos: [U; N]) -> Self {
        Self {
            raw: RawIdArray::new(ids),
            infos,
        }
    }
}

/// A table of device ids with information of type `U`, whatever its length.
///
/// Implemented by [`IdArray`]; a driver names it through [`IdTable`].
pub trait IdInfos<U>: Sync {
    /// The zero-terminated `pci_device_id` table.
    fn as_ptr(&self) -> *const bindings::pci_device_id;

    /// The information of the id whose `driver_data` is `index`, if there is one.
    fn info(&self, index: usize) -> Option<&U>;
}

impl<U: Sync, const N: usize> IdInfos<U> for IdArray<U, N> {
    fn as_ptr(&self) -> *const bindings::pci_device_id {
        // By the invariant of `RawIdArray`, the ids are followed by the sentinel.
        self.raw.ids.as_ptr().cast()
    }

    fn info(&self, index: usize) -> Option<&U> {
        self.infos.get(index)
    }
}

/// The id table of a [`Driver`], as upstream spells it.
pub type IdTable<U> = &'static dyn IdInfos<U>;

/// Defines the id table `$table` with information of type `$info` per id, and, in a module,
/// the `MODULE_DEVICE_TABLE` symbol `$module_table` from which modpost generates the module
/// aliases for autoloading.
///
/// # Examples
///
/// ```
/// use kernel::pci::{DeviceId, IdInfos};
///
/// kernel::pci_device_table!(
///     TABLE,
///     MODULE_TABLE,
///     &'static str,
///     [
///         (DeviceId::from_id(0x1af4, 0x1110), "ivshmem"),
///         (DeviceId::from_id(0x1af4, 0x1000), "virtio-net"),
///     ]
/// );
///
/// // The bus reports a match by the index it finds in `driver_data`.
/// assert_eq!(TABLE.info(1), Some(&"virtio-net"));
/// assert_eq!(TABLE.info(2), None);
/// ```
#[macro_export]
macro_rules! pci_device_table {
    ($table:ident, $module_table:ident, $info:ty, [$(($id:expr, $data:expr)),+ $(,)?]) => {
        const $table: $crate::pci::IdArray<$info, { [$($id),+].len() }> =
            $crate::pci::IdArray::new([$($id),+], [$($data),+]);

        #[cfg(MODULE)]
        #[used]
        #[export_name = concat!("__mod_pci__", stringify!($module_table), "_device_table")]
        static $module_table: $crate::pci::RawIdArray<{ [$($id),+].len() }> =
            $crate::pci::RawIdArray::new([$($id),+]);
    };
}
