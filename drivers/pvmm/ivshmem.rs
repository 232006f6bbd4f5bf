// SPDX-License-Identifier: GPL-2.0

//! The ivshmem-doorbell device as the [`Teardown`]'s transport: its registers and
//! doorbell (BAR0), the shared memory (BAR2) behind [`wire::SharedMemory`], and the
//! completion interrupt.

use kernel::{
    device::Device,
    io::mem::SharedMem,
    irq::{IrqReturn, ThreadedHandler, ThreadedIrqReturn},
    pci,
};

use crate::{notify::Doorbell, teardown, wire};

/// ivshmem BAR0 registers.
pub(crate) mod regs {
    /// Own peer id.
    pub(crate) const IVPOSITION: usize = 0x08;
    /// Write `peer << 16 | vector` to interrupt a peer.
    pub(crate) const DOORBELL: usize = 0x0c;
    /// Size of the register BAR.
    pub(crate) const SIZE: usize = 0x100;
}

/// The register BAR.
pub(crate) const BAR_REGS: u32 = 0;
/// The shared-memory BAR.
pub(crate) const BAR_SHM: u32 = 2;

/// The [`teardown::Teardown`] of an ivshmem-doorbell device.
pub(crate) type Teardown = teardown::Teardown<SharedMem, IvshmemBell>;

/// Rings the host stub's peer through the ivshmem doorbell register, and this guest's
/// own peer to raise its own interrupt: ivshmem delivers a doorbell to any peer.
///
/// # Locking
///
/// One MMIO write per ring, no lock.
///
/// # Lifetime
///
/// Owned by the [`Teardown`]; the register mapping lives as long as it.
pub(crate) struct IvshmemBell {
    regs: pci::Bar<{ regs::SIZE }>,
    value: u32,
    own: u32,
}

impl IvshmemBell {
    /// A doorbell that interrupts vector 0 of `host_peer`, and of `own_peer` to kick.
    pub(crate) fn new(regs: pci::Bar<{ regs::SIZE }>, host_peer: u32, own_peer: u32) -> Self {
        IvshmemBell {
            regs,
            value: host_peer << 16,
            own: own_peer << 16,
        }
    }
}

impl Doorbell for IvshmemBell {
    fn ring(&self) {
        self.regs.write32(self.value, regs::DOORBELL);
    }
    fn kick(&self) {
        self.regs.write32(self.own, regs::DOORBELL);
    }
}

impl wire::SharedMemory for SharedMem {
    fn size(&self) -> usize {
        SharedMem::size(self)
    }
    fn read_u32(&self, off: usize) -> u32 {
        SharedMem::read_u32(self, off)
    }
    fn write_u32(&self, off: usize, val: u32) {
        SharedMem::write_u32(self, off, val)
    }
    fn read_u64(&self, off: usize) -> u64 {
        SharedMem::read_u64(self, off)
    }
    fn write_u64(&self, off: usize, val: u64) {
        SharedMem::write_u64(self, off, val)
    }
    fn load_acquire_u32(&self, off: usize) -> u32 {
        SharedMem::load_acquire_u32(self, off)
    }
    fn store_release_u32(&self, off: usize, val: u32) {
        SharedMem::store_release_u32(self, off, val)
    }
    fn fence(&self) {
        SharedMem::fence(self)
    }
}

/// Completion interrupt (MSI-X vector 0): everything happens in the thread, which
/// takes the teardown lock through [`Teardown::interrupt`]; the hard handler takes
/// none. The registration holds the [`Teardown`] by an `Arc` and is dropped last when
/// detaching.
impl ThreadedHandler for Teardown {
    fn handle(&self, _dev: &Device) -> ThreadedIrqReturn {
        ThreadedIrqReturn::WakeThread
    }

    fn handle_threaded(&self, _dev: &Device) -> IrqReturn {
        // An interrupt that brought nothing valid is reported as not ours, so that
        // the interrupt core notices a host that raises them in a storm.
        if self.interrupt() {
            IrqReturn::Handled
        } else {
            IrqReturn::None
        }
    }
}
