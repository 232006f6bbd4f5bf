// SPDX-License-Identifier: GPL-2.0

//! PCI drivers.
//!
//! A driver implements [`Driver`] for the type of its per-device data, with a table of
//! [`DeviceId`]s, and its module keeps a pinned [`Registration`]. [`Driver::probe`],
//! [`Driver::unbind`] and [`Driver::shutdown`] get a borrowed [`Device`] through which the driver
//! enables the device, claims and maps its BARs and allocates interrupt vectors. Everything the
//! binding acquires through [`Device`] is released by the driver core after `unbind` has
//! returned and the driver's data has been dropped: interrupt vectors are freed, BAR regions
//! released and the device disabled, in that order (devres, reverse order of acquisition). The
//! same happens if `probe` fails.
//!
//! Mappings ([`IoMem`](crate::io::mem::IoMem), [`SharedMem`](crate::io::mem::SharedMem)) and
//! interrupt registrations ([`crate::irq`]) are owned by the driver: keep them in its data, so
//! they are gone before the resources they use.
//!
//! As upstream, the module is split by concept: the id tables are in `pci/id.rs`, the BARs in
//! `pci/io.rs` and the interrupt vectors in `pci/irq.rs`.
//!
//! This is a local stand-in, for Linux 6.12, for the `pci` module of later kernels, with their
//! shapes: the driver type is the device data, `probe` returns an initialiser and receives the
//! matched id's information (`IdInfo`), `unbind` before the data is dropped, and id tables made
//! by `pci_device_table!` in upstream's form. It is reduced where 6.12 lacks the ground: no
//! `Devres` (mappings are owned by the driver's data instead) and no device contexts.
//!
//! C header: [`include/linux/pci.h`](srctree/include/linux/pci.h)

use crate::{
    bindings, device,
    error::{from_result, to_result},
    ffi::{c_int, c_void},
    init::pin_init_from_closure,
    prelude::*,
    str::CStr,
    types::Opaque,
};
use core::{cell::Cell, marker::PhantomData, ptr::addr_of_mut, ptr::NonNull};

mod id;
mod io;
mod irq;

pub use self::id::{DeviceId, IdArray, IdInfos, IdTable, RawIdArray};
pub use self::io::Bar;
pub use self::irq::IrqTypes;

/// A PCI device during [`Driver::probe`], [`Driver::unbind`] or [`Driver::shutdown`]
/// (`struct pci_dev`).
///
/// Only ever lent out by the bus callbacks, so it cannot outlive them, and it is neither [`Send`]
/// nor [`Sync`]: the driver core serialises probe and remove of a device. To refer to the device
/// later, e.g. for printing from an interrupt handler, keep an
/// [`ARef<device::Device>`](crate::types::ARef) made from [`AsRef::as_ref`].
///
/// # Invariants
///
/// `pdev` is a valid `struct pci_dev` that is being probed by, or is bound to, the driver named
/// `name`, for the lifetime of this object. Bit `n` of `requested` is set iff this binding holds
/// a devres-managed request of the region of BAR `n`.
pub struct Device {
    pdev: NonNull<bindings::pci_dev>,
    name: &'static CStr,
    requested: Cell<u8>,
}

impl Device {
    fn as_raw(&self) -> *mut bindings::pci_dev {
        self.pdev.as_ptr()
    }

    fn raw_device(&self) -> *mut bindings::device {
        // SAFETY: By the type invariant, `pdev` is valid; this only computes a field address.
        unsafe { addr_of_mut!((*self.as_raw()).dev) }
    }

    /// Enables the device's memory space (`pci_enable_device_mem()`); disabled again on unbind.
    pub fn enable_device_mem(&self) -> Result {
        // SAFETY: By the type invariant, `pdev` is valid and owned by this driver.
        to_result(unsafe { bindings::pci_enable_device_mem(self.as_raw()) })?;
        self.add_action(disable_device_action, crate::c_str!("pci_disable_device"))
    }

    /// Enables bus mastering (`pci_set_master()`), e.g. for MSI/MSI-X or DMA.
    ///
    /// Disabling the device on unbind clears it again.
    pub fn set_master(&self) {
        // SAFETY: By the type invariant, `pdev` is valid and owned by this driver.
        unsafe { bindings::pci_set_master(self.as_raw()) };
    }

    /// Runs `action(pdev)` when the binding ends (devres); runs it now if that cannot be arranged.
    fn add_action(&self, action: unsafe extern "C" fn(*mut c_void), name: &'static CStr) -> Result {
        let data = self.as_raw().cast::<c_void>();
        // SAFETY: The device is valid and being probed or bound, so devres is available; `name`
        // is `'static`.
        let ret = unsafe {
            bindings::__devm_add_action(self.raw_device(), Some(action), data, name.as_char_ptr())
        };
        if ret != 0 {
            // SAFETY: `action` undoes what the caller just did to this device.
            unsafe { action(data) };
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }
}

impl AsRef<device::Device> for Device {
    fn as_ref(&self) -> &device::Device {
        // SAFETY: By the type invariant, `pdev` and so its embedded `struct device` stay valid
        // (and referenced by the driver core) while `self` is borrowed.
        unsafe { device::Device::as_ref(self.raw_device()) }
    }
}

/// # Safety
///
/// `pdev` must be a `struct pci_dev` that was enabled by [`Device::enable_device_mem`].
unsafe extern "C" fn disable_device_action(pdev: *mut c_void) {
    // SAFETY: Guaranteed by the caller; devres runs this while the device still exists.
    unsafe { bindings::pci_disable_device(pdev.cast()) };
}

/// A PCI driver: its type is the data of a bound device.
///
/// The bus allocates `Self` pinned for each device it binds, initialises it with the
/// initialiser [`Driver::probe`] returns, and drops it after [`Driver::unbind`].
///
/// # Examples
///
/// A driver whose id matches no device (no device has vendor id `0xffff`), registered and
/// unregistered again:
///
/// ```
/// use kernel::{c_str, pci, prelude::*, ThisModule};
///
/// kernel::pci_device_table!(
///     IDS,
///     MODULE_IDS,
///     <Sample as pci::Driver>::IdInfo,
///     [(pci::DeviceId::from_id(0xffff, 0xffff), 16)]
/// );
///
/// struct Sample {
///     regs: pci::Bar<16>,
/// }
///
/// impl pci::Driver for Sample {
///     // The size of BAR 0 that the device needs.
///     type IdInfo = usize;
///     const NAME: &'static CStr = c_str!("rust_doctest_pci");
///     const ID_TABLE: pci::IdTable<Self::IdInfo> = &IDS;
///
///     fn probe(dev: &pci::Device, _info: &Self::IdInfo) -> impl PinInit<Self, Error> {
///         let regs = dev
///             .enable_device_mem()
///             .and_then(|()| dev.iomap_region_sized::<16>(0, Self::NAME));
///         regs.map(|regs| Sample { regs })
///     }
/// }
///
/// // SAFETY: Built-in code has no module; null stands for the kernel image, as `THIS_MODULE`.
/// static KERNEL: ThisModule = unsafe { ThisModule::from_ptr(core::ptr::null_mut()) };
/// let registration = KBox::pin_init(pci::Registration::<Sample>::new(&KERNEL), GFP_KERNEL)?;
/// drop(registration);
/// # Ok::<(), Error>(())
/// ```
pub trait Driver: Send + Sync + Sized + 'static {
    /// What the driver knows about the devices an id matches, one per id of
    /// [`Driver::ID_TABLE`].
    type IdInfo: 'static;

    /// Driver name; also used for the regions [`Device::memremap_bar`] claims. Use the module
    /// name. (Upstream takes the module's name; 6.12's `module!` gives a driver no access to
    /// it.)
    const NAME: &'static CStr;

    /// The devices this driver binds to.
    const ID_TABLE: IdTable<Self::IdInfo>;

    /// Binds the driver to `dev`, whose id in [`Driver::ID_TABLE`] came with `id_info`:
    /// returns the initialiser of the device's data. Process context, may sleep.
    ///
    /// On error, whatever was acquired through `dev` is released again.
    fn probe(dev: &Device, id_info: &Self::IdInfo) -> impl PinInit<Self, Error>;

    /// Unbinds the driver from `dev`. Process context, may sleep.
    ///
    /// `this` is dropped right after this returns; then the device's resources are released.
    fn unbind(dev: &Device, this: Pin<&Self>) {
        let _ = (dev, this);
    }

    /// Quiesces `dev` before a reboot or power-off (`pci_driver::shutdown`). Process
    /// context, may sleep. (Not in upstream's Rust PCI driver yet.)
    ///
    /// The device stays bound and `this` alive afterwards; the system may go on running
    /// (kexec), so the device must stay safe to use.
    fn shutdown(dev: &Device, this: Pin<&Self>) {
        let _ = (dev, this);
    }
}

/// What the driver core holds for a bound device (its `drvdata`).
#[pin_data]
struct Bound<T> {
    #[pin]
    data: T,
    /// The regions requested through the device while probing.
    requested: u8,
}

/// The registration of a PCI driver with the PCI core.
///
/// Registering probes all matching devices; dropping unregisters the driver, which removes it
/// from every bound device (calling [`Driver::unbind`]) before it returns. Keep it pinned in the
/// module, e.g. as `Pin<KBox<Registration<T>>>` made with `KBox::pin_init`, or use
/// [`module_pci_driver!`](crate::module_pci_driver).
///
/// # Invariants
///
/// `drv` is registered with the PCI core, with the callbacks of `T`, from the end of
/// initialisation until `drop`.
#[pin_data(PinnedDrop)]
pub struct Registration<T: Driver> {
    #[pin]
    drv: Opaque<bindings::pci_driver>,
    _driver: PhantomData<T>,
}

// SAFETY: After registration the `pci_driver` is only used by the PCI core, which synchronises
// its own accesses; unregistration may happen from any thread.
unsafe impl<T: Driver> Send for Registration<T> {}

// SAFETY: `&Registration` gives no access to the `pci_driver`.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers `T` (`__pci_register_driver()`) on behalf of `module`.
    pub fn new(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let init = move |slot: *mut Opaque<bindings::pci_driver>| {
            let drv = Opaque::raw_get(slot);
            // SAFETY: `drv` is valid for writes; all-zero is a valid `pci_driver`.
            unsafe {
                drv.write_bytes(0, 1);
                (*drv).name = T::NAME.as_char_ptr();
                (*drv).id_table = T::ID_TABLE.as_ptr();
                (*drv).probe = Some(probe_callback::<T>);
                (*drv).remove = Some(remove_callback::<T>);
                (*drv).shutdown = Some(shutdown_callback::<T>);
            }
            // SAFETY: `drv` is initialised and pinned for as long as it stays registered
            // (until `drop`); the name and id table are `'static`.
            to_result(unsafe {
                bindings::__pci_register_driver(drv, module.as_ptr(), T::NAME.as_char_ptr())
            })
        };
        // SAFETY: The closure initialises the slot fully before returning `Ok`, and on error
        // leaves nothing registered.
        let drv = unsafe { pin_init_from_closure(init) };
        try_pin_init!(Self {
            drv <- drv,
            _driver: PhantomData,
        })
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant, `drv` is registered.
        unsafe { bindings::pci_unregister_driver(self.drv.get()) };
    }
}

/// # Safety
///
/// Only for `pci_driver::probe` of a driver registered by `Registration<T>`.
unsafe extern "C" fn probe_callback<T: Driver>(
    pdev: *mut bindings::pci_dev,
    id: *const bindings::pci_device_id,
) -> c_int {
    from_result(|| {
        let pdev = NonNull::new(pdev).ok_or(EINVAL)?;
        // INVARIANT: The PCI core calls probe with a valid device that is being bound to `T`.
        let dev = Device {
            pdev,
            name: T::NAME,
            requested: Cell::new(0),
        };
        // SAFETY: The PCI core passes the matching entry of `T::ID_TABLE`, valid during the
        // call, whose `driver_data` `RawIdArray::new` set to its index.
        let index = unsafe { (*id).driver_data };
        let info = T::ID_TABLE.info(index).ok_or(EINVAL)?;
        let bound = KBox::pin_init(
            // Fields are initialised in this order: `requested` after probe.
            try_pin_init!(Bound {
                data <- T::probe(&dev, info),
                requested: dev.requested.get(),
            }? Error),
            GFP_KERNEL,
        )?;
        // SAFETY: `pdev` is valid; the driver core owns drvdata while the device is bound to
        // us. The box stays pinned: only `remove_callback` takes it back, as a pinned box.
        unsafe {
            bindings::pci_set_drvdata(
                pdev.as_ptr(),
                KBox::into_raw(Pin::into_inner_unchecked(bound)).cast(),
            )
        };
        Ok(0)
    })
}

/// # Safety
///
/// Only for `pci_driver::remove` of a driver registered by `Registration<T>`.
unsafe extern "C" fn remove_callback<T: Driver>(pdev: *mut bindings::pci_dev) {
    let Some(pdev) = NonNull::new(pdev) else {
        return;
    };
    // SAFETY: `pdev` is bound to `T`, so probe succeeded and its drvdata is the pinned
    // `Bound` it stored, which is ours to take back, pinned again.
    let bound = unsafe {
        Pin::new_unchecked(KBox::from_raw(
            bindings::pci_get_drvdata(pdev.as_ptr()).cast::<Bound<T>>(),
        ))
    };
    // INVARIANT: The PCI core calls remove with a valid device bound to `T`.
    let dev = Device {
        pdev,
        name: T::NAME,
        requested: Cell::new(bound.requested),
    };
    // SAFETY: `data` is structurally pinned: nothing moves it out of the pinned box.
    let data = unsafe { bound.as_ref().map_unchecked(|b| &b.data) };
    T::unbind(&dev, data);
    drop(bound);
    // The driver core now releases the devres-managed resources.
}

/// # Safety
///
/// Only for `pci_driver::shutdown` of a driver registered by `Registration<T>`.
unsafe extern "C" fn shutdown_callback<T: Driver>(pdev: *mut bindings::pci_dev) {
    let Some(pdev) = NonNull::new(pdev) else {
        return;
    };
    // SAFETY: The driver core calls shutdown only for a device whose probe succeeded, so its
    // drvdata is the pinned `Bound` probe stored; it stays owned by the driver core (only
    // `remove` takes it back, never concurrently with shutdown), so it is only borrowed here.
    let bound = unsafe {
        Pin::new_unchecked(&*bindings::pci_get_drvdata(pdev.as_ptr()).cast::<Bound<T>>())
    };
    // INVARIANT: The PCI core calls shutdown with a valid device bound to `T`.
    let dev = Device {
        pdev,
        name: T::NAME,
        requested: Cell::new(bound.requested),
    };
    // SAFETY: As in `remove_callback`.
    let data = unsafe { bound.map_unchecked(|b| &b.data) };
    T::shutdown(&dev, data);
}

/// Declares a module that registers one PCI driver.
///
/// # Examples
///
/// ```ignore
/// kernel::module_pci_driver! {
///     type: Sample,
///     name: "sample",
///     author: "pvmm developers",
///     description: "Sample PCI driver",
///     license: "GPL",
/// }
/// ```
#[macro_export]
macro_rules! module_pci_driver {
    (type: $driver:ty, $($rest:tt)*) => {
        struct __PciDriverModule {
            _reg: ::core::pin::Pin<$crate::alloc::KBox<$crate::pci::Registration<$driver>>>,
        }

        impl $crate::Module for __PciDriverModule {
            fn init(module: &'static $crate::ThisModule) -> $crate::error::Result<Self> {
                Ok(Self {
                    _reg: $crate::alloc::KBox::pin_init(
                        $crate::pci::Registration::<$driver>::new(module),
                        $crate::alloc::flags::GFP_KERNEL,
                    )?,
                })
            }
        }

        $crate::prelude::module! {
            type: __PciDriverModule,
            $($rest)*
        }
    };
}
