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
//! Mappings ([`IoMem`], [`SharedMem`]) and interrupt registrations ([`crate::irq`]) are owned by
//! the driver: keep them in its data, so they are gone before the resources they use.
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
    io::{IoMem, ResourceSize, SharedMem},
    irq::IrqRequest,
    prelude::*,
    str::CStr,
    types::Opaque,
};
use core::{cell::Cell, marker::PhantomData, ptr::addr_of_mut, ptr::NonNull};

/// Number of standard BARs (`PCI_STD_NUM_BARS`).
const NUM_BARS: u32 = bindings::PCI_STD_NUM_BARS;

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
/// ```ignore
/// kernel::pci_device_table!(
///     PVMM_PCI_TABLE,
///     MODULE_PVMM_PCI_TABLE,
///     <PvmmDevice as kernel::pci::Driver>::IdInfo,
///     [(kernel::pci::DeviceId::from_id(0x1af4, 0x1110), ())]
/// );
///
/// impl kernel::pci::Driver for PvmmDevice {
///     type IdInfo = ();
///     const ID_TABLE: kernel::pci::IdTable<Self::IdInfo> = &PVMM_PCI_TABLE;
///     // ...
/// }
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

/// A mapped memory BAR of at least `SIZE` bytes, made by [`Device::iomap_region_sized`].
///
/// Upstream's `Bar<SIZE>` is a type of its own behind `Devres`, revoked when the device is
/// unbound; without `Devres` in 6.12 it is the mapping itself, owned by the driver's data.
pub type Bar<const SIZE: usize> = IoMem<SIZE>;

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

/// # Safety
///
/// `pdev` must be a valid `struct pci_dev`.
unsafe extern "C" fn free_irq_vectors_action(pdev: *mut c_void) {
    // SAFETY: Guaranteed by the caller; freeing without vectors allocated is a no-op.
    unsafe { bindings::pci_free_irq_vectors(pdev.cast()) };
}

/// A PCI driver: its type is the data of a bound device.
///
/// The bus allocates `Self` pinned for each device it binds, initialises it with the
/// initialiser [`Driver::probe`] returns, and drops it after [`Driver::unbind`].
///
/// # Examples
///
/// ```ignore
/// use kernel::{c_str, pci, prelude::*};
///
/// kernel::pci_device_table!(
///     IDS,
///     MODULE_IDS,
///     <Sample as pci::Driver>::IdInfo,
///     [(pci::DeviceId::from_id(0x1af4, 0x1110), ())]
/// );
///
/// struct Sample {
///     regs: pci::Bar<16>,
/// }
///
/// impl pci::Driver for Sample {
///     type IdInfo = ();
///     const NAME: &'static CStr = c_str!("sample");
///     const ID_TABLE: pci::IdTable<Self::IdInfo> = &IDS;
///
///     fn probe(dev: &pci::Device, _info: &Self::IdInfo) -> impl PinInit<Self, Error> {
///         let regs = dev
///             .enable_device_mem()
///             .and_then(|()| dev.iomap_region_sized::<16>(0, Self::NAME));
///         regs.map(|regs| Sample { regs })
///     }
/// }
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
