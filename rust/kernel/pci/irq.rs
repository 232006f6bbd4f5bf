// SPDX-License-Identifier: GPL-2.0

//! Interrupt vectors of a PCI device.

use super::Device;
use crate::{bindings, ffi::c_void, irq::IrqRequest, prelude::*};

/// Interrupt types for [`Device::alloc_irq_vectors`] (`PCI_IRQ_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqTypes(u32);

impl IrqTypes {
    /// MSI-X (`PCI_IRQ_MSIX`).
    pub const MSIX: IrqTypes = IrqTypes(bindings::PCI_IRQ_MSIX);

    /// Returns the raw `PCI_IRQ_*` bits.
    pub const fn as_raw(self) -> u32 {
        self.0
    }
}

impl Device {
    /// Allocates between `min` and `max` interrupt vectors of the allowed `types`
    /// (`pci_alloc_irq_vectors()`), and returns how many were allocated.
    ///
    /// The device must be enabled. The vectors are freed on unbind, after the driver's data is
    /// dropped: interrupt registrations kept there are gone by then.
    pub fn alloc_irq_vectors(&self, min: u32, max: u32, types: IrqTypes) -> Result<u32> {
        // SAFETY: By the type invariant, `pdev` is valid and owned by this driver.
        let ret =
            unsafe { bindings::pci_alloc_irq_vectors(self.as_raw(), min, max, types.as_raw()) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        self.add_action(
            free_irq_vectors_action,
            crate::c_str!("pci_free_irq_vectors"),
        )?;
        Ok(ret as u32)
    }

    /// Returns the interrupt line of vector `index` (`pci_irq_vector()`), for
    /// [`crate::irq::ThreadedRegistration::new`].
    pub fn irq_vector(&self, index: u32) -> Result<IrqRequest<'_>> {
        // SAFETY: By the type invariant, `pdev` is valid.
        let ret = unsafe { bindings::pci_irq_vector(self.as_raw(), index) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        // SAFETY: `pci_irq_vector()` returned an interrupt number of this device's vectors,
        // which stay allocated until it is unbound.
        Ok(unsafe { IrqRequest::new(self.as_ref(), ret as u32) })
    }
}

/// # Safety
///
/// `pdev` must be a valid `struct pci_dev`.
unsafe extern "C" fn free_irq_vectors_action(pdev: *mut c_void) {
    // SAFETY: Guaranteed by the caller; freeing without vectors allocated is a no-op.
    unsafe { bindings::pci_free_irq_vectors(pdev.cast()) };
}
