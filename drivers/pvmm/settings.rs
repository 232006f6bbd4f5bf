// SPDX-License-Identifier: GPL-2.0

//! Run-time settings: the teardown [`Mode`] and the numbers that tune it.
//!
//! Every setting is declared once, in the [`settings!`] table below: its name,
//! description, limits and default. The [`Setting`] enum, [`Setting::ALL`],
//! [`SETTING_INFO`], the [`SETTINGS`] that hold the values and one module parameter
//! per setting are generated from it, so they cannot disagree.
//!
//! The module parameters are the driver's user interface: `insmod pvmm.ko batch=32`,
//! `pvmm.batch=32` on the command line of a kernel with pvmm built in, and
//! `/sys/module/pvmm/parameters/batch` at run time, whether or not a device is bound.

use core::{
    fmt,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};
use kernel::{module_param, prelude::*};

use crate::wire;

/// How teardowns started now reach the host.
///
/// A plain value; the current one is kept in [`Settings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No host involvement: new address spaces are not registered. The latency floor.
    Off = 0,
    /// One blocking host call per teardown, with interrupts off until the host acknowledges,
    /// like a non-preemptible hypercall.
    Sync = 1,
    /// Like `Sync`, but interrupts (and preemption) are allowed between bounded chunks of
    /// waiting, like a hypercall with continuations.
    Chunked = 2,
    /// Batched submission, deferred page-directory release on completion.
    Async = 3,
}

impl Mode {
    /// Every mode, in numeric order.
    pub(crate) const ALL: [Mode; 4] = [Mode::Off, Mode::Sync, Mode::Chunked, Mode::Async];

    /// Whether this kernel offers the mode: the blocking baselines can stall a vCPU
    /// on a dead host and exist only with `CONFIG_PVMM_SYNC_BASELINES`.
    pub(crate) fn available(self) -> bool {
        cfg!(CONFIG_PVMM_SYNC_BASELINES) || !matches!(self, Mode::Sync | Mode::Chunked)
    }

    /// The name in the `mode` parameter and the `stats` file.
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Sync => "sync",
            Mode::Chunked => "chunked",
            Mode::Async => "async",
        }
    }
}

/// The mode stored as `value`; `EINVAL` for a number that is none.
impl TryFrom<u64> for Mode {
    type Error = Error;

    fn try_from(value: u64) -> Result<Self> {
        Mode::ALL
            .into_iter()
            .find(|m| *m as u64 == value)
            .ok_or(EINVAL)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mode named `name`; `EINVAL` for anything else.
impl FromStr for Mode {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or(EINVAL)
    }
}

/// A setting's name and limits.
///
/// # Lifetime
///
/// Only the `'static` entries of [`SETTING_INFO`] exist.
pub(crate) struct SettingInfo {
    /// The name of the module parameter, and in the `stats` file.
    pub(crate) name: &'static str,
    pub(crate) min: u64,
    pub(crate) max: u64,
}

/// Generates [`Setting`], [`Setting::ALL`], [`SETTING_INFO`], [`SETTINGS`] and a module
/// parameter per setting from one table, in its order.
macro_rules! settings {
    ($($setting:ident = $name:ident {
        desc: $desc:literal, min: $min:expr, max: $max:expr, default: $default:expr $(,)?
    })*) => {
        /// A setting: its index in [`SETTING_INFO`] and [`SETTINGS`]. A plain value.
        #[derive(Clone, Copy)]
        pub(crate) enum Setting {
            $(#[doc = $desc] $setting,)*
        }

        impl Setting {
            /// Every setting, in [`SETTING_INFO`] order.
            pub(crate) const ALL: [Setting; [$(stringify!($name)),*].len()] =
                [$(Setting::$setting),*];
        }

        /// The settings' names and limits, indexed by [`Setting`].
        pub(crate) const SETTING_INFO: [SettingInfo; Setting::ALL.len()] = [$(SettingInfo {
            name: stringify!($name),
            min: $min,
            max: $max,
        }),*];

        /// The driver's settings, shared by every bound device and kept across binds.
        pub(crate) static SETTINGS: Settings = Settings([$(AtomicU64::new($default)),*]);

        $(const _: () = {
            static PARAM: SettingParam = SettingParam(Setting::$setting);
            kernel::module_param!(PARAM, SettingParam, "pvmm", $name, 0o644, $desc);
        };)*
    };
}

settings! {
    Mode = mode {
        desc: "Teardown mode from now on: off, sync, chunked or async",
        min: 0, max: 3, default: Mode::Async as u64,
    }
    Batch = batch {
        desc: "Submissions per doorbell while the host is idle",
        min: 1, max: wire::MAX_ENTRIES as u64, default: 16,
    }
    FlushUs = flush_us {
        desc: "Longest delay of a doorbell for an incomplete batch (us)",
        min: 1, max: 1_000_000, default: 1000,
    }
    CapSpaces = cap_spaces {
        desc: "Cap on outstanding teardowns (address spaces)",
        min: 1, max: 1 << 20, default: 256,
    }
    CapPages = cap_pages {
        desc: "Cap on outstanding teardown work (pages)",
        min: 1, max: wire::MAX_PAGES, default: 1 << 20,
    }
    ChunkUs = chunk_us {
        desc: "Longest interrupts-off stretch in chunked mode (us)",
        min: 1, max: 1_000_000, default: 100,
    }
    // Interrupts stay off for up to this long in `sync`: well below the hard-lockup
    // detector (10 s) and RCU stall warnings (21 s), which a dead host must not trip.
    SyncTimeoutMs = sync_timeout_ms {
        desc: "Longest synchronous wait for the host before switching to async (ms)",
        min: 1, max: 1_000, default: 1_000,
    }
    ThrottleTimeoutMs = throttle_timeout_ms {
        desc: "Longest throttled wait of a fork or exec before it fails (ms)",
        min: 1, max: 3_600_000, default: 30_000,
    }
    // A fork or exec waits for its address space's CREATE: long against a host that
    // serves creation behind a queue of teardowns, bounded against one that stopped.
    CreateTimeoutMs = create_timeout_ms {
        desc: "Longest wait of a fork or exec for the host to create its address \
               space before it fails (ms)",
        min: 1, max: 3_600_000, default: 30_000,
    }
    // Long enough for the slowest host the benchmarks model (a starved worker at
    // 100 ms of CPU per teardown), short against a throttle timeout.
    HostTimeoutMs = host_timeout_ms {
        desc: "Time without an acknowledgment, with work owed, after which \
               the host is taken for dead and creation is no longer throttled (ms)",
        min: 100, max: 3_600_000, default: 10_000,
    }
}

/// The module parameter of one setting: reads and writes [`SETTINGS`].
///
/// # Locking
///
/// None: settings are atomics.
struct SettingParam(Setting);

impl module_param::ParamType for SettingParam {
    fn set(&self, value: &[u8]) -> Result {
        SETTINGS.store(self.0, value)
    }

    fn show(&self, w: &mut impl fmt::Write) -> fmt::Result {
        SETTINGS.show(self.0, w)
    }
}

impl Setting {
    /// Name and limits; the default is only in the table.
    pub(crate) fn info(self) -> &'static SettingInfo {
        &SETTING_INFO[self as usize]
    }
}

/// Current settings; each is read once per decision, so a change applies to what starts
/// after it.
///
/// # Locking
///
/// Relaxed atomics, no lock: read from the hooks, the interrupt thread, the flush timer
/// and the synchronous waits alike, written through the module parameters and by a
/// synchronous wait that gives up.
///
/// # Lifetime
///
/// The driver's are the `static` [`SETTINGS`].
pub(crate) struct Settings([AtomicU64; SETTING_INFO.len()]);

impl Settings {
    /// The value of `setting`.
    pub(crate) fn get(&self, setting: Setting) -> u64 {
        self.0[setting as usize].load(Relaxed)
    }

    /// Sets `setting`; `EINVAL` outside its limits.
    pub(crate) fn set(&self, setting: Setting, value: u64) -> Result {
        let info = setting.info();
        if !(info.min..=info.max).contains(&value)
            || (matches!(setting, Setting::Mode)
                && !Mode::try_from(value).is_ok_and(Mode::available))
        {
            return Err(EINVAL);
        }
        self.0[setting as usize].store(value, Relaxed);
        Ok(())
    }

    /// The teardown mode.
    pub(crate) fn mode(&self) -> Mode {
        Mode::try_from(self.get(Setting::Mode)).unwrap_or(Mode::Async)
    }

    /// Writes the value of `setting` as text: the mode's name, or the number.
    pub(crate) fn show(&self, setting: Setting, w: &mut impl fmt::Write) -> fmt::Result {
        match setting {
            Setting::Mode => write!(w, "{}", self.mode()),
            s => write!(w, "{}", self.get(s)),
        }
    }

    /// Sets `setting` from text: a mode's name, or a number, ignoring surrounding
    /// whitespace. `EINVAL` for anything else.
    pub(crate) fn store(&self, setting: Setting, input: &[u8]) -> Result {
        let text = core::str::from_utf8(input).map_err(|_| EINVAL)?.trim();
        let value = match setting {
            Setting::Mode => text.parse::<Mode>()? as u64,
            _ => text.parse::<u64>().map_err(|_| EINVAL)?,
        };
        self.set(setting, value)
    }
}
