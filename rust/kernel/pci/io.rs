// SPDX-License-Identifier: GPL-2.0

//! The memory BARs of a PCI device: claiming their regions and mapping them.

use super::Device;
use crate::{
    bindings,
    error::to_result,
    ffi::c_int,
    io::{
        mem::{IoMem, SharedMem},
        ResourceSize,
    },
    prelude::*,
    str::CStr,
};

/// Number of standard BARs (`PCI_STD_NUM_BARS`).
const NUM_BARS: u32 = bindings::PCI_STD_NUM_BARS;

/// A mapped memory BAR of at least `SIZE` bytes, made by [`Device::iomap_region_sized`].
///
/// Upstream's `Bar<SIZE>` is a type of its own behind `Devres`, revoked when the device is
/// unbound; without `Devres` in 6.12 it is the mapping itself, owned by the driver's data.
pub type Bar<const SIZE: usize> = IoMem<SIZE>;

impl Device {
    /// Returns the physical start address of `bar`, or `EINVAL` for an invalid BAR index.
    fn resource_start(&self, bar: u32) -> Result<ResourceSize> {
        let bar = Self::bar_index(bar)?;
        // SAFETY: By the type invariant, `pdev` is valid; `bar` is in range.
        Ok(unsafe { bindings::pci_resource_start(self.as_raw(), bar) })
    }

    /// Returns the length of `bar` in bytes (0 if unused), or `EINVAL` for an invalid BAR index.
    fn resource_len(&self, bar: u32) -> Result<ResourceSize> {
        let bar = Self::bar_index(bar)?;
        // SAFETY: By the type invariant, `pdev` is valid; `bar` is in range.
        Ok(unsafe { bindings::pci_resource_len(self.as_raw(), bar) })
    }

    /// Claims memory BAR `bar` under `name` (unless already claimed) and maps all of it
    /// uncached, checking that it is at least `SIZE` bytes long.
    ///
    /// Accesses below `SIZE` are then checked at compile time. Fails with `EINVAL` for an
    /// invalid, unused, I/O-port or too small BAR, `EBUSY` if another driver holds the region and
    /// `ENOMEM` if mapping fails.
    pub fn iomap_region_sized<const SIZE: usize>(
        &self,
        bar: u32,
        name: &'static CStr,
    ) -> Result<Bar<SIZE>> {
        let (start, len) = self.mem_bar(bar)?;
        self.claim(bar, name)?;
        // SAFETY: `[start, start + len)` is the memory BAR `bar` of our device, and its region is
        // claimed for this binding.
        unsafe { IoMem::ioremap(start, len) }
    }

    /// Claims memory BAR `bar` under the driver's name (unless already claimed) and maps it
    /// cacheable (`memremap(MEMREMAP_WB)`) as shared memory.
    ///
    /// Meant for BARs backed by RAM, such as the shared-memory BAR of ivshmem. Fails like
    /// [`Device::iomap_region_sized`].
    pub fn memremap_bar(&self, bar: u32) -> Result<SharedMem> {
        let (start, len) = self.mem_bar(bar)?;
        self.claim(bar, self.name)?;
        // SAFETY: `[start, start + len)` is the memory BAR `bar` of our device, and its region is
        // claimed for this binding.
        unsafe { SharedMem::memremap_wb(start, len) }
    }

    fn bar_index(bar: u32) -> Result<c_int> {
        if bar >= NUM_BARS {
            return Err(EINVAL);
        }
        Ok(bar as c_int)
    }

    /// Returns start and length of `bar` if it is a used memory BAR.
    fn mem_bar(&self, bar: u32) -> Result<(ResourceSize, usize)> {
        let index = Self::bar_index(bar)?;
        // SAFETY: By the type invariant, `pdev` is valid; `index` is in range.
        let flags = unsafe { bindings::pci_resource_flags(self.as_raw(), index) };
        let start = self.resource_start(bar)?;
        let len = self.resource_len(bar)?;
        if flags & bindings::IORESOURCE_MEM as usize == 0 || start == 0 || len == 0 {
            return Err(EINVAL);
        }
        Ok((start, len.try_into().map_err(|_| EINVAL)?))
    }

    /// Requests the region of `bar` for this binding unless it already holds it.
    fn claim(&self, bar: u32, name: &'static CStr) -> Result {
        let index = Self::bar_index(bar)?;
        let bit = 1u8 << bar;
        if self.requested.get() & bit != 0 {
            return Ok(());
        }
        // SAFETY: By the type invariant, `pdev` is valid and owned by this driver; `name` is
        // `'static`, as the resource keeps the pointer.
        to_result(unsafe {
            bindings::pcim_request_region(self.as_raw(), index, name.as_char_ptr())
        })?;
        // INVARIANT: The region is now requested, managed by devres.
        self.requested.set(self.requested.get() | bit);
        Ok(())
    }
}
