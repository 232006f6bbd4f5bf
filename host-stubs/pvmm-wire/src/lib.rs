// SPDX-License-Identifier: GPL-2.0

//! The pvmm wire format for host-side Rust.
//!
//! The protocol itself lives in `drivers/pvmm/wire.rs`, which the guest kernel
//! module compiles too; this crate includes that one file instead of copying it.
//! [`mem::MemShm`] adds a safe in-memory [`SharedMemory`] for tests and fuzzing.

#![no_std]
#![forbid(unsafe_code)]

#[path = "../../../drivers/pvmm/wire.rs"]
mod wire;
pub use wire::*;

pub mod mem;
