// SPDX-License-Identifier: GPL-2.0

//! The pvmm wire format for host-side Rust.
//!
//! The protocol lives in the guest driver's tree, in `drivers/pvmm/wire/` (its map
//! and rules are in `drivers/pvmm/wire.rs`): the layout, the entry formats, the
//! ring arithmetic, the guest's ring ends and the host's. The guest kernel module
//! compiles all but the host's; this crate includes all five with `#[path]` instead
//! of copying them, so the host stub, its tests and the fuzzer run the guest's own
//! code as the peer. [`mem::MemShm`] adds a safe in-memory [`SharedMemory`] for
//! tests and fuzzing.

#![no_std]
#![forbid(unsafe_code)]

#[path = "../../../drivers/pvmm/wire/entry.rs"]
mod entry;
#[path = "../../../drivers/pvmm/wire/guest.rs"]
mod guest;
#[path = "../../../drivers/pvmm/wire/host.rs"]
mod host;
#[path = "../../../drivers/pvmm/wire/layout.rs"]
mod layout;
#[path = "../../../drivers/pvmm/wire/ring.rs"]
mod ring;

pub use entry::*;
pub use guest::*;
pub use host::*;
pub use layout::*;
pub use ring::*;

pub mod mem;
