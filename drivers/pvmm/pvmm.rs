// SPDX-License-Identifier: GPL-2.0

//! pvmm: asynchronous paravirtualized address-space teardown.
//!
//! Binds the ivshmem-doorbell device that connects the guest to its host stub,
//! and registers the mm hooks: CREATE at `pgd_alloc`, DESTROY at `exit_mmap`
//! without waiting, and `pgd_free` parked until the host acknowledges. See
//! `Documentation/pvmm.rst` in the pvmm tree.
//!
//! The modules, each using only those listed before it:
//!
//! - `wire`: the protocol, shared with the host stub;
//! - `settings`: the teardown mode and the other settings;
//! - `stats`: event counters, maxima and gauges;
//! - `notify`: the doorbell and the batching of notifications;
//! - `space`: what is kept per address space, and the tallies the caps bound;
//! - `sync`: the blocking baselines' interrupts-off wait;
//! - `teardown`: tracking, submission, completions, detach and the hooks, one
//!   concept a file;
//! - `ivshmem`: the device as the teardown's transport, and its interrupt;
//! - `debugfs`: the debugfs files;
//! - this file: the module, probe and detach.

use kernel::{c_str, dev_err, dev_info, irq, mm_hooks, pci, prelude::*, sync::Arc};

mod debugfs;
mod ivshmem;
mod notify;
mod settings;
mod space;
mod stats;
mod sync;
mod teardown;
// The common part and the guest's half of the protocol; their items are `pub` because
// they are also the public API of the host's `pvmm-wire` crate.
#[allow(unreachable_pub)]
mod wire;

use debugfs::DebugFiles;
use ivshmem::{regs, IvshmemBell, Teardown, BAR_REGS, BAR_SHM};
use teardown::Deadline;

kernel::module_pci_driver! {
    type: PvmmDevice,
    name: "pvmm",
    author: "pvmm developers",
    description: "Asynchronous paravirtualized address-space teardown",
    license: "GPL",
}

/// How long detaching waits for the host before releasing parked pgds anyway.
const DRAIN_TIMEOUT_MS: u32 = 10_000;
/// The least time the reset at detach gets, even after a drain that timed out: a host
/// that is merely slow answers it at its next round.
const RESET_MIN_MS: u32 = 500;

/// A bound device.
///
/// Detaching goes in phases (see `Drop`), so that no page directory is released
/// before the host is done with it: the hooks stay registered while the host drains
/// and resets, and only what it never acknowledged is released without it. Probe
/// fills the device in step by step, so a failure at any step detaches through the
/// same `Drop`.
///
/// # Lifetime
///
/// Owned, pinned, by the PCI core from a successful probe until unbind; the optional
/// fields are set by probe in the order `irq`, `debugfs`, `hooks` (last, so that no
/// address space is tracked by a device that failed to probe), and taken by `Drop`
/// in the order `debugfs`, `hooks`, `irq`.
struct PvmmDevice {
    debugfs: Option<DebugFiles>,
    hooks: Option<Pin<KBox<mm_hooks::Registration<Teardown>>>>,
    teardown: Arc<Teardown>,
    irq: Option<Pin<KBox<irq::ThreadedRegistration<Arc<Teardown>>>>>,
}

impl PvmmDevice {
    /// Detach phases 1 to 3, within one deadline: the host is done with everything of
    /// ours afterwards, while the hooks stay registered.
    fn quiesce(&self) {
        let deadline = Deadline::after_ms(DRAIN_TIMEOUT_MS);
        // 1. No new address spaces; throttled creators stop waiting.
        self.teardown.close();
        if self.hooks.is_some() {
            // 2. With pgd_free still hooked, so that pgds freed meanwhile are parked.
            self.teardown.drain(deadline);
            // 3. The host forgets every object of ours, which acknowledges them all.
            self.teardown.reset_host(deadline.at_least_ms(RESET_MIN_MS));
        }
    }
}

impl Drop for PvmmDevice {
    fn drop(&mut self) {
        drop(self.debugfs.take());
        self.quiesce();
        // 4. Waits for running hooks.
        drop(self.hooks.take());
        // 5. Only what the host never acknowledged is released without it.
        self.teardown.finish();
        drop(self.irq.take());
    }
}

// The ivshmem-doorbell device (the plain ivshmem-plain variant has no doorbell).
kernel::pci_device_table!(
    PVMM_PCI_TABLE,
    MODULE_PVMM_PCI_TABLE,
    <PvmmDevice as pci::Driver>::IdInfo,
    [(pci::DeviceId::from_id(0x1af4, 0x1110), ())]
);

impl pci::Driver for PvmmDevice {
    type IdInfo = ();
    const NAME: &'static CStr = c_str!("pvmm");
    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PVMM_PCI_TABLE;

    fn probe(dev: &pci::Device, _info: &Self::IdInfo) -> impl PinInit<Self, Error> {
        Self::attach(dev)
    }

    /// A reboot or power-off with teardowns outstanding: the host still gets them, and
    /// forgets this guest, as on unload. The hooks stay, untracking from now on.
    fn shutdown(_dev: &pci::Device, this: Pin<&Self>) {
        this.quiesce();
    }
}

impl PvmmDevice {
    /// Attaches to the host behind `dev`, step by step; a failure at any step detaches
    /// through `Drop`.
    fn attach(dev: &pci::Device) -> Result<Self> {
        // The PCI id is any ivshmem-doorbell device's: a pvmm host marks its device
        // with the header in shared memory, which is checked before anything else.
        dev.enable_device_mem()?;
        let shm = dev.memremap_bar(BAR_SHM)?;
        let header = wire::Header::read(&shm).map_err(|e| {
            dev_err!(dev.as_ref(), "no usable pvmm host: {e}\n");
            ENODEV
        })?;
        dev.set_master();
        let regs = dev.iomap_region_sized::<{ regs::SIZE }>(BAR_REGS, c_str!("pvmm"))?;
        let peer = regs.read32(regs::IVPOSITION);
        // Announced to the host (`GUEST_READY`) only once the `Teardown` and its
        // interrupt exist, so that a failure before leaves nothing announced.
        let features = header.features & wire::FEATURES_ALL;

        let nvec = dev.alloc_irq_vectors(1, 1, pci::IrqTypes::MSIX)?;
        let bell = IvshmemBell::new(regs, header.host_peer, peer);
        let teardown = Arc::pin_init(
            Teardown::new(shm, bell, header.layout, features, &settings::SETTINGS),
            GFP_KERNEL,
        )?;
        // From here on a failure drops the device, which detaches from the host.
        let mut device = PvmmDevice {
            debugfs: None,
            hooks: None,
            teardown: teardown.clone(),
            irq: None,
        };
        device.irq = Some(KBox::pin_init(
            irq::ThreadedRegistration::new(
                dev.irq_vector(0)?,
                irq::Flags::ONESHOT,
                c_str!("pvmm"),
                teardown.clone(),
            ),
            GFP_KERNEL,
        )?);
        // From here on `Drop` also withdraws the announcement.
        teardown.announce();
        // Completions that arrived before the handler existed.
        teardown.process_completions();

        device.debugfs = Some(DebugFiles::new(&teardown, peer, header)?);
        // Last, so that no address space is tracked by a device that failed to probe.
        device.hooks = Some(KBox::pin_init(
            mm_hooks::Registration::new(teardown),
            GFP_KERNEL,
        )?);

        dev_info!(
            dev.as_ref(),
            "peer {peer}, host peer {}, rings {}/{}, {nvec} vector(s), CREATEs {}\n",
            header.host_peer,
            header.layout.sq_entries,
            header.layout.cq_entries,
            // Without the lane, a fork waits for the teardowns ahead of it.
            if features & wire::FEATURE_CREATE_LANE != 0 {
                "in a lane of their own"
            } else {
                "in ring order"
            }
        );
        Ok(device)
    }
}
