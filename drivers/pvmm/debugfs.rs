// SPDX-License-Identifier: GPL-2.0

//! The debugfs directory `pvmm/`: `stats` and `device`.
//!
//! Counters and gauges are for tests and diagnosis, not a stable interface; the
//! settings are module parameters (see `settings`). Without debugfs the driver works
//! the same, only these files are missing.

use core::{fmt, sync::atomic::Ordering::Relaxed};
use kernel::{c_str, debugfs, prelude::*, sync::Arc};

use crate::{ivshmem::Teardown, settings::Setting, wire};

/// The `stats` file: settings, counters and gauges as `name value` lines.
///
/// # Locking
///
/// Reading takes the teardown lock once, for the gauges; settings, counters and
/// maxima are read without it.
struct StatsFile(Arc<Teardown>);

impl fmt::Display for StatsFile {
    fn fmt(&self, w: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.0;
        let g = t.gauges();
        for setting in Setting::ALL {
            write!(w, "{} ", setting.info().name)?;
            t.settings.show(setting, w)?;
            writeln!(w)?;
        }
        writeln!(w, "hooks_active {}", u8::from(g.hooks_active))?;
        let mut res = Ok(());
        t.stats().for_each(|name, v| {
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
        writeln!(w, "host_rejected {}", g.host_rejected)?;
        let m = t.maxima();
        writeln!(w, "sync_wait_max_us {}", m.sync_wait_max_us.load(Relaxed))?;
        writeln!(w, "irq_off_max_us {}", m.irq_off_max_us.load(Relaxed))?;
        writeln!(
            w,
            "create_wait_max_us {}",
            m.create_wait_max_us.load(Relaxed)
        )?;
        writeln!(w, "throttled {}", g.throttled)?;
        writeln!(w, "pgds_pending {}", g.pgds_pending)?;
        writeln!(w, "backlog {}", g.backlog)?;
        writeln!(w, "ring_broken {}", u8::from(g.broken))?;
        writeln!(w, "resetting {}", u8::from(g.resetting))?;
        writeln!(w, "host_dead {}", u8::from(g.host_dead))
    }
}

impl debugfs::Reader for StatsFile {
    /// `reset_peaks` restarts the peak gauges and the maxima.
    fn read_from_slice(&self, input: &[u8]) -> Result {
        if core::str::from_utf8(input).map(str::trim) != Ok("reset_peaks") {
            return Err(EINVAL);
        }
        self.0.reset_peaks();
        Ok(())
    }
}

/// The `device` file: what the host announced at attach. Immutable.
struct DeviceFile {
    peer: u32,
    header: wire::Header,
}

impl fmt::Display for DeviceFile {
    fn fmt(&self, w: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// The debugfs directory and its files.
///
/// # Lifetime
///
/// Removed when dropped, first thing when detaching; each file holds a reference to
/// the device's [`Teardown`].
pub(crate) struct DebugFiles {
    _stats: debugfs::File<StatsFile>,
    _device: debugfs::File<DeviceFile>,
    _dir: debugfs::Dir,
}

impl DebugFiles {
    /// Creates `pvmm/` with its files for `teardown` of the device `peer` that the
    /// host described in `header`.
    pub(crate) fn new(teardown: &Arc<Teardown>, peer: u32, header: wire::Header) -> Result<Self> {
        let dir = debugfs::Dir::new(c_str!("pvmm"));
        Ok(DebugFiles {
            _stats: dir.read_write_file(c_str!("stats"), StatsFile(teardown.clone()))?,
            _device: dir.read_only_file(c_str!("device"), DeviceFile { peer, header })?,
            _dir: dir,
        })
    }
}
