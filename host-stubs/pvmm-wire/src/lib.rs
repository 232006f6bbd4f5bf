// SPDX-License-Identifier: GPL-2.0

//! The pvmm wire format for host-side Rust.
//!
//! The protocol lives in the guest driver's tree, in `drivers/pvmm/wire/`: the common
//! part, the guest's ring ends and the host's. The guest kernel module compiles the
//! first two; this crate includes all three with `#[path]` instead of copying them,
//! so the host stub, its tests and the fuzzer run the guest's own code as the peer.
//! [`mem::MemShm`] adds a safe in-memory [`SharedMemory`] for tests and fuzzing.

#![no_std]
#![forbid(unsafe_code)]

#[path = "../../../drivers/pvmm/wire/common.rs"]
mod common;
#[path = "../../../drivers/pvmm/wire/guest.rs"]
mod guest;
#[path = "../../../drivers/pvmm/wire/host.rs"]
mod host;

pub use common::*;
pub use guest::*;
pub use host::*;

pub mod mem;
