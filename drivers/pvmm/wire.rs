// SPDX-License-Identifier: GPL-2.0

//! The pvmm wire format, as the guest uses it: the common part (`wire/common.rs`:
//! layout, entries, errors, ring arithmetic, and the protocol's documentation) and
//! the guest's ring ends (`wire/guest.rs`).
//!
//! The host's ring ends (`wire/host.rs`) are not compiled here. The host stub builds
//! all three files through its `pvmm-wire` crate, which includes them by `#[path]`,
//! so both ends share one source.

mod common;
mod guest;

pub use common::*;
pub use guest::*;
