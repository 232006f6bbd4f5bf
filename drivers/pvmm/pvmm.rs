// SPDX-License-Identifier: GPL-2.0

//! pvmm: asynchronous paravirtualized address-space teardown.
//!
//! Binds the ivshmem-doorbell device that connects the guest to its host stub,
//! and registers the mm hooks: CREATE at `pgd_alloc`, DESTROY at `exit_mmap`
//! without waiting, and `pgd_free` parked until the host acknowledges. See
//! `Documentation/pvmm.rst` in the pvmm tree.

use core::{
    fmt::{self, Write},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};
use kernel::{
    c_str, debugfs, dev_err, dev_info,
    io::{IoMem, SharedMem},
    irq::{self, IrqReturn, ThreadedHandler, ThreadedIrqReturn},
    mm_hooks, module_param, pci,
    prelude::*,
    sync::Arc,
};

mod teardown;
// One source for both ends: it is the public API of the host's `pvmm-wire` crate,
// and the host's half of the protocol is unused here.
#[allow(dead_code, unreachable_pub)]
mod wire;

use teardown::{Deadline, Doorbell, Knob, Mode, Teardown};

kernel::module_pci_driver! {
    type: PvmmDriver,
    name: "pvmm",
    author: "pvmm developers",
    description: "Asynchronous paravirtualized address-space teardown",
    license: "GPL",
}

/// The `mode` module parameter: the teardown mode a device starts in (`insmod pvmm.ko
/// mode=sync`, or `pvmm.mode=sync` on the kernel command line when built in). debugfs changes
/// it at run time.
struct ModeParam(AtomicU64);

impl module_param::ParamType for ModeParam {
    fn set(&self, value: &[u8]) -> Result {
        let mode = Mode::parse(value).ok_or(EINVAL)?;
        self.0.store(mode as u64, Relaxed);
        Ok(())
    }
}

static MODE_PARAM: ModeParam = ModeParam(AtomicU64::new(Mode::Async as u64));
kernel::module_param!(MODE_PARAM, ModeParam, "pvmm", "mode");

/// ivshmem BAR0 registers.
mod regs {
    /// Own peer id.
    pub(crate) const IVPOSITION: usize = 0x08;
    /// Write `peer << 16 | vector` to interrupt a peer.
    pub(crate) const DOORBELL: usize = 0x0c;
    /// Size of the register BAR.
    pub(crate) const SIZE: usize = 0x100;
}

/// debugfs names of the settings, in [`Knob::ALL`] order.
const KNOB_FILES: [&CStr; Knob::ALL.len()] = [
    c_str!("mode"),
    c_str!("batch"),
    c_str!("flush_us"),
    c_str!("cap_spaces"),
    c_str!("cap_pages"),
    c_str!("chunk_us"),
    c_str!("sync_timeout_ms"),
    c_str!("throttle_timeout_ms"),
    c_str!("host_timeout_ms"),
];

const BAR_REGS: u32 = 0;
const BAR_SHM: u32 = 2;
/// How long detaching waits for the host before releasing parked pgds anyway.
const DRAIN_TIMEOUT_MS: u32 = 10_000;
/// The least time the reset at detach gets, even after a drain that timed out: a host
/// that is merely slow answers it at its next round.
const RESET_MIN_MS: u32 = 500;

/// Rings the host stub's peer through the ivshmem doorbell register.
struct IvshmemBell {
    regs: IoMem<{ regs::SIZE }>,
    value: u32,
}

impl Doorbell for IvshmemBell {
    fn ring(&self) {
        self.regs.write32(self.value, regs::DOORBELL);
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

type Engine = Teardown<SharedMem, IvshmemBell>;

/// Completion interrupt: everything happens in the thread.
struct Completions(Arc<Engine>);

impl ThreadedHandler for Completions {
    fn handle(&self) -> ThreadedIrqReturn {
        ThreadedIrqReturn::WakeThread
    }

    fn handle_threaded(&self) -> IrqReturn {
        // An interrupt that brought nothing valid is reported as not ours, so that
        // the interrupt core notices a host that raises them in a storm.
        if self.0.interrupt() {
            IrqReturn::Handled
        } else {
            IrqReturn::None
        }
    }
}

/// The `stats` file: settings, counters and gauges as `name value` lines.
struct StatsFile(Arc<Engine>);

impl debugfs::Show for StatsFile {
    fn show(&self, w: &mut impl Write) -> fmt::Result {
        let e = &self.0;
        let g = e.gauges();
        writeln!(w, "mode {}", e.settings.mode().name())?;
        for knob in Knob::ALL.into_iter().skip(1) {
            writeln!(w, "{} {}", knob.info().name, e.settings.get(knob))?;
        }
        writeln!(w, "hooks_active {}", u8::from(!g.closing))?;
        let mut res = Ok(());
        e.stats().for_each(|name, v| {
            if res.is_ok() {
                res = writeln!(w, "{name} {v}");
            }
        });
        res?;
        writeln!(w, "spaces_live {}", g.spaces_live)?;
        writeln!(w, "outstanding {}", g.outstanding)?;
        writeln!(w, "outstanding_pages {}", g.outstanding_pages)?;
        writeln!(w, "peak_outstanding {}", g.peak_outstanding)?;
        writeln!(w, "peak_outstanding_pages {}", g.peak_outstanding_pages)?;
        writeln!(w, "in_flight {}", g.in_flight)?;
        writeln!(w, "in_flight_pages {}", g.in_flight_pages)?;
        writeln!(w, "peak_in_flight {}", g.peak_in_flight)?;
        writeln!(w, "peak_in_flight_pages {}", g.peak_in_flight_pages)?;
        writeln!(w, "peak_host_held {}", g.peak_host_held)?;
        let m = e.maxima();
        writeln!(w, "sync_wait_max_us {}", m.sync_wait_max_us.load(Relaxed))?;
        writeln!(w, "irq_off_max_us {}", m.irq_off_max_us.load(Relaxed))?;
        writeln!(w, "throttled {}", g.throttled)?;
        writeln!(w, "pgds_pending {}", g.pgds_pending)?;
        writeln!(w, "backlog {}", g.backlog)?;
        writeln!(w, "ring_broken {}", u8::from(g.broken))?;
        writeln!(w, "resetting {}", u8::from(g.resetting))?;
        writeln!(w, "host_dead {}", u8::from(g.host_dead))
    }

    /// `reset_peaks` restarts the peak gauges and the maxima.
    fn store(&self, input: &[u8]) -> Result {
        if teardown::trim(input) != b"reset_peaks" {
            return Err(EINVAL);
        }
        self.0.reset_peaks();
        Ok(())
    }
}

/// A settings file: shows the value, takes a new one (`mode` takes a name).
struct KnobFile {
    engine: Arc<Engine>,
    knob: Knob,
}

impl debugfs::Show for KnobFile {
    fn show(&self, w: &mut impl Write) -> fmt::Result {
        match self.knob {
            Knob::Mode => writeln!(w, "{}", self.engine.settings.mode().name()),
            k => writeln!(w, "{}", self.engine.settings.get(k)),
        }
    }

    fn store(&self, input: &[u8]) -> Result {
        let value = match self.knob {
            Knob::Mode => Mode::parse(input).ok_or(EINVAL)? as u64,
            _ => core::str::from_utf8(teardown::trim(input))
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(EINVAL)?,
        };
        self.engine.settings.set(self.knob, value)
    }
}

/// The `device` file.
struct DeviceFile {
    peer: u32,
    header: wire::Header,
}

impl debugfs::Show for DeviceFile {
    fn show(&self, w: &mut impl Write) -> fmt::Result {
        let h = &self.header;
        writeln!(w, "peer {}", self.peer)?;
        writeln!(w, "host_peer {}", h.host_peer)?;
        writeln!(w, "protocol {}", wire::VERSION)?;
        writeln!(w, "features {:#x}", h.features)?;
        writeln!(w, "sq_entries {}", h.layout.sq_entries)?;
        writeln!(w, "cq_entries {}", h.layout.cq_entries)?;
        writeln!(w, "shm_bytes {}", h.layout.size)
    }
}

/// A bound device.
///
/// Detaching goes in phases (see `Drop`), so that no page directory is released
/// before the host is done with it: the hooks stay registered while the host drains
/// and resets, and only what it never acknowledged is released without it. Probe
/// fills the device in step by step, so a failure at any step detaches through the
/// same `Drop`.
struct PvmmDevice {
    debugfs: Option<DebugFiles>,
    hooks: Option<Pin<KBox<mm_hooks::Registration<Engine>>>>,
    engine: Arc<Engine>,
    irq: Option<Pin<KBox<irq::ThreadedRegistration<Completions>>>>,
}

impl Drop for PvmmDevice {
    fn drop(&mut self) {
        drop(self.debugfs.take());
        let deadline = Deadline::after_ms(DRAIN_TIMEOUT_MS);
        // 1. No new address spaces; throttled creators stop waiting.
        self.engine.close();
        if self.hooks.is_some() {
            // 2. With pgd_free still hooked, so that pgds freed meanwhile are parked.
            self.engine.drain(deadline);
            // 3. The host forgets every object of ours, which acknowledges them all.
            self.engine.reset_host(deadline.at_least_ms(RESET_MIN_MS));
        }
        // 4. Waits for running hooks.
        drop(self.hooks.take());
        // 5. Only what the host never acknowledged is released without it.
        self.engine.finish();
        drop(self.irq.take());
    }
}

/// The debugfs directory and its files; removed when dropped.
struct DebugFiles {
    _stats: debugfs::File<StatsFile>,
    _device: debugfs::File<DeviceFile>,
    _knobs: KVec<debugfs::File<KnobFile>>,
    _dir: debugfs::Dir,
}

struct PvmmDriver;

// The ivshmem-doorbell device (the plain ivshmem-plain variant has no doorbell).
kernel::pci_device_table!(PVMM_PCI_IDS, [pci::DeviceId::from_id(0x1af4, 0x1110)]);

impl pci::Driver for PvmmDriver {
    type Data = Pin<KBox<PvmmDevice>>;
    const NAME: &'static CStr = c_str!("pvmm");
    const ID_TABLE: pci::IdTable = PVMM_PCI_IDS;

    fn probe(dev: &pci::Device, _id: &pci::DeviceId) -> Result<Self::Data> {
        dev.enable_device_mem()?;
        dev.set_master();
        let regs = dev.iomap_region_sized::<{ regs::SIZE }>(BAR_REGS, c_str!("pvmm"))?;
        let shm = dev.memremap_bar(BAR_SHM)?;

        let header = wire::Header::read(&shm).map_err(|e| {
            dev_err!(dev.as_ref(), "no usable pvmm host: {e}\n");
            ENODEV
        })?;
        let peer = regs.read32(regs::IVPOSITION);
        let features = wire::guest_attach(&shm, header.features);

        let nvec = dev.alloc_irq_vectors(1, 1, pci::IrqTypes::MSIX)?;
        let vector = dev.irq_vector(0)?;
        let bell = IvshmemBell {
            regs,
            value: header.host_peer << 16,
        };
        let engine = Arc::pin_init(Engine::new(shm, bell, header.layout, features), GFP_KERNEL)?;
        // From here on a failure drops the device, which detaches from the host.
        let mut device = PvmmDevice {
            debugfs: None,
            hooks: None,
            engine: engine.clone(),
            irq: None,
        };
        device.irq = Some(KBox::pin_init(
            irq::ThreadedRegistration::new(
                vector,
                irq::Flags::ONESHOT,
                c_str!("pvmm"),
                Completions(engine.clone()),
            ),
            GFP_KERNEL,
        )?);
        // Completions that arrived before the handler existed.
        engine.process_completions();
        engine
            .settings
            .set(Knob::Mode, MODE_PARAM.0.load(Relaxed))
            .inspect_err(|_| {
                dev_err!(dev.as_ref(), "mode not available in this kernel\n");
            })?;

        let dir = debugfs::Dir::new(c_str!("pvmm"));
        let mut knobs = KVec::with_capacity(Knob::ALL.len(), GFP_KERNEL)?;
        for (knob, name) in Knob::ALL.into_iter().zip(KNOB_FILES) {
            let file = KnobFile {
                engine: engine.clone(),
                knob,
            };
            knobs.push(
                dir.file(name, 0o644, Arc::new(file, GFP_KERNEL)?)?,
                GFP_KERNEL,
            )?;
        }
        device.debugfs = Some(DebugFiles {
            _knobs: knobs,
            _stats: dir.file(
                c_str!("stats"),
                0o644,
                Arc::new(StatsFile(engine.clone()), GFP_KERNEL)?,
            )?,
            _device: dir.file(
                c_str!("device"),
                0o444,
                Arc::new(DeviceFile { peer, header }, GFP_KERNEL)?,
            )?,
            _dir: dir,
        });
        // Last, so that no address space is tracked by a device that failed to probe.
        device.hooks = Some(KBox::pin_init(
            mm_hooks::Registration::new(engine),
            GFP_KERNEL,
        )?);

        dev_info!(
            dev.as_ref(),
            "peer {peer}, host peer {}, rings {}/{}, {nvec} vector(s)\n",
            header.host_peer,
            header.layout.sq_entries,
            header.layout.cq_entries
        );
        Ok(KBox::pin(device, GFP_KERNEL)?)
    }
}
