// SPDX-License-Identifier: GPL-2.0

//! pvmm host stub: serves QEMU's ivshmem-doorbell protocol and the pvmm rings.
//!
//! [`ring::RingHost`] holds all request processing and needs no I/O, so tests
//! and the fuzzer ([`fuzz::run`]) drive it over an in-memory window;
//! [`serve`] wires it to a socket, a memfd and eventfds. [`fuzz`] is the one
//! module the stub does not use: it is public for `tests/ring.rs` and
//! `examples/fuzz.rs` (`make fuzz`).

pub mod audit;
pub mod backing;
pub mod budget;
pub mod fault;
pub mod fuzz;
pub mod ivshmem;
pub mod priority;
mod ratelimit;
pub mod ring;
pub mod series;
pub mod serve;
pub mod shm;
pub mod stats;
