// SPDX-License-Identifier: GPL-2.0

//! The counter time series (`--series`): a CSV file to which the main thread
//! appends one row per slot at a fixed interval.
//!
//! ```text
//! ms,slot,creates,destroys,...
//! 100,0,12,10,...
//! 100,1,7,7,...
//! ```
//!
//! `ms` is milliseconds since the stub started (monotonic clock), `slot` the
//! slot number, then that slot's counters in [`Snapshot::NAMES`] order.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::stats::Snapshot;

/// The header line, without its newline.
pub fn header() -> String {
    format!("ms,slot,{}", Snapshot::NAMES.join(","))
}

/// An open series file.
#[derive(Debug)]
pub struct Series {
    file: File,
}

impl Series {
    /// Creates or truncates `path` and writes the header. A symlink as the
    /// last path component is refused (`O_NOFOLLOW`), so the stub never
    /// truncates a file it was pointed at by a link.
    pub fn create(path: &Path) -> io::Result<Series> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)?;
        let mut s = Series { file };
        s.file.write_all(format!("{}\n", header()).as_bytes())?;
        Ok(s)
    }

    /// Appends one row per slot (`slots[i]` is slot `i`), all stamped `ms`.
    /// The batch goes out in one write and is flushed, so a reader sees
    /// complete lines while the stub runs.
    pub fn write_rows(&mut self, ms: u64, slots: &[Snapshot]) -> io::Result<()> {
        let mut text = String::new();
        for (slot, snap) in slots.iter().enumerate() {
            let _ = write!(text, "{ms},{slot}");
            for (_, v) in snap.pairs() {
                let _ = write!(text, ",{v}");
            }
            text.push('\n');
        }
        self.file.write_all(text.as_bytes())?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pvmm-series-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rows_parse_back() {
        let dir = tmp("rows");
        let path = dir.join("series.csv");
        std::fs::write(&path, "old contents that must go\n").unwrap();
        let mut s = Series::create(&path).unwrap();
        let a = Snapshot {
            creates: 3,
            work_us: 70,
            ..Snapshot::default()
        };
        let b = Snapshot {
            refused: 1,
            ..Snapshot::default()
        };
        // Two slots, two samples.
        s.write_rows(100, &[a, b]).unwrap();
        s.write_rows(250, &[b, a]).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let names: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(names[..2], ["ms", "slot"]);
        assert_eq!(names[2..], *Snapshot::NAMES);
        let rows: Vec<Vec<u64>> = lines
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect();
        let want = [(100, 0, a), (100, 1, b), (250, 0, b), (250, 1, a)];
        assert_eq!(rows.len(), want.len());
        for (row, (ms, slot, snap)) in rows.iter().zip(want) {
            assert_eq!(row.len(), names.len());
            assert_eq!(row[..2], [ms, slot]);
            let want: Vec<u64> = snap.pairs().into_iter().map(|(_, v)| v).collect();
            assert_eq!(row[2..], want);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tmp("link");
        let target = dir.join("target");
        std::fs::write(&target, "keep me\n").unwrap();
        let link = dir.join("series.csv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = Series::create(&link).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
