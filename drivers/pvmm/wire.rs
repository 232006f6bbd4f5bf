// SPDX-License-Identifier: GPL-2.0

//! The pvmm wire format: the shared-memory contract between a guest and its host.
//!
//! One source for both ends, in `wire/`: `layout` (where everything lies in the
//! window, and the header and control lines), `entry` (the entry formats and their
//! codes), `ring` (ring index arithmetic and the generic ring end), `guest` (the
//! guest's ends) and `host` (the host's). The driver compiles all but `host.rs`; the
//! host stub builds all of them through its `pvmm-wire` crate, which includes them
//! by `#[path]`, so both ends share one source. It is plain `core` code without
//! `unsafe`: memory access goes through [`SharedMemory`], which each side implements
//! over its own mapping. `Documentation/protocol.md` is the contract in prose.
//!
//! # Layout
//!
//! ```text
//! 0x000  Header     host writes before the guest attaches, then read-only
//! 0x040  GuestCtl   guest writes: sq_tail, cq_head, flags, features, epoch, reset
//! 0x080  HostCtl    host writes: sq_head, cq_tail, flags, errors, reset_ack
//! 0x100  SQ         sq_entries * 32 bytes, guest writes
//! cq_off CQ         cq_entries * 16 bytes, host writes
//! log_off LOG       log_entries * 16 bytes, guest writes (only with FEATURE_RELEASE_LOG)
//! ```
//!
//! Every cache line has exactly one writer. All fields are little-endian.
//!
//! # Memory ordering
//!
//! Ring indices are free-running `u32` values; a slot is `index & (entries - 1)`.
//! A producer writes the entry, then publishes the index with a store-release. A
//! consumer reads the index with a load-acquire, then reads the entry, then
//! releases the slot by publishing its own index with a store-release. Before a
//! producer tests a peer's wakeup flag it executes a full fence after publishing,
//! and a consumer that sets its wakeup flag executes a full fence before it
//! re-reads the producer index, so that no notification is lost.
//!
//! Nothing read from the peer is trusted: indices, opcodes, ids and counts are all
//! validated here before use.
//!
//! # Reset
//!
//! With [`FEATURE_RESET`], the guest can ask the host to forget every object it holds
//! for this guest: it stores a new value into `guest_ctl::RESET` with a store-release
//! and rings. At the start of its next round, and between requests, the host reads
//! `RESET` with a load-acquire; when it differs from the last value it acknowledged,
//! the host drops every object and every completion it holds back, discards the
//! unconsumed submissions (its `sq_head` becomes the guest's `sq_tail`), and then
//! stores the value into `host_ctl::RESET_ACK` with a store-release and interrupts.
//! Once the guest reads its value back with a load-acquire, the host holds nothing
//! of the guest's any more: every parked page directory may be released, and the
//! guest skips the completions posted before the acknowledgment. A guest uses this
//! when it detaches and to recover a ring whose indices went wrong.

mod entry;
mod guest;
mod layout;
mod ring;

// The driver names the ring ends by their aliases in `guest`.
pub use entry::*;
pub use guest::*;
pub use layout::*;
