// SPDX-License-Identifier: GPL-2.0

//! The entry formats: what a submission, a completion and a release log entry say,
//! and the codes they carry. Each side encodes what it produces and decodes, and
//! validates, what it consumes (in `guest.rs` and `host.rs`).

use core::{fmt, str::FromStr};

/// Size of one submission entry.
pub const SQE_SIZE: usize = 32;
/// Size of one completion entry.
pub const CQE_SIZE: usize = 16;
/// Size of one release log entry.
pub const LOG_ENTRY_SIZE: usize = 16;
/// Largest space id: a physical address below 2^52.
pub const MAX_SPACE: u64 = (1 << 52) - 1;
/// Largest page count a request may carry (4 PiB of 4 KiB pages).
pub const MAX_PAGES: u64 = 1 << 40;

/// A name that is not one of a code's names, from [`FromStr`] on [`Op`], [`Status`] or
/// [`Why`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownName;

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown name")
    }
}

/// Defines a wire code: an enum of the given width with its protocol names, decoded
/// with `TryFrom` from that width (the error carries the raw value), shown with
/// `Display` and parsed back with `FromStr`.
macro_rules! code {
    (
        $(#[$doc:meta])*
        pub enum $name:ident: $repr:ident, bad $bad:path {
            $( $(#[$vdoc:meta])* $variant:ident = $raw:literal, $text:literal; )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr($repr)]
        pub enum $name {
            $( $(#[$vdoc])* $variant = $raw, )*
        }

        impl TryFrom<$repr> for $name {
            type Error = BadEntry;

            fn try_from(raw: $repr) -> Result<$name, BadEntry> {
                match raw {
                    $( $raw => Ok($name::$variant), )*
                    _ => Err($bad(raw)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $( $name::$variant => $text, )*
                })
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<$name, UnknownName> {
                match s {
                    $( $text => Ok($name::$variant), )*
                    _ => Err(UnknownName),
                }
            }
        }
    };
}

code! {
    /// Submission opcodes.
    pub enum Op: u16, bad BadEntry::Opcode {
        /// A new address space exists. `pages` is zero.
        Create = 1, "CREATE";
        /// An address space is being torn down; `pages` is its size.
        Destroy = 2, "DESTROY";
    }
}

code! {
    /// Completion status codes.
    pub enum Status: u16, bad BadEntry::Status {
        /// Done.
        Ok = 0, "OK";
        /// DESTROY of a space the host does not know.
        UnknownSpace = 1, "UNKNOWN_SPACE";
        /// CREATE of a space the host already has.
        Exists = 2, "EXISTS";
        /// The host could not allocate its object.
        NoMemory = 3, "NO_MEMORY";
        /// DESTROY whose tag is not the one the space was created with; nothing done.
        StaleTag = 4, "STALE_TAG";
    }
}

/// One submission, guest to host.
///
/// Wire form (32 bytes): `opcode: u16, flags: u16, tag: u32, space: u64, pages: u64,
/// reserved: u64`. `flags` and `reserved` must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Guest cookie echoed in the completion; lets the guest reject stale completions.
    pub tag: u32,
    /// Address space id (the pgd's physical address), `1..=MAX_SPACE`.
    pub space: u64,
    /// Size of the address space in pages, `0..=MAX_PAGES`.
    pub pages: u64,
}

/// Why an entry read from the peer was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadEntry {
    /// Unknown opcode.
    Opcode(u16),
    /// Unknown status.
    Status(u16),
    /// Flags or reserved bits set.
    // This, `Pages` and `Why` come from the decoders of the guest's entries, in `host.rs`.
    #[allow(dead_code)]
    Reserved,
    /// Space id zero or above [`MAX_SPACE`].
    Space(u64),
    /// Page count above [`MAX_PAGES`].
    #[allow(dead_code)]
    Pages(u64),
    /// Unknown release reason.
    #[allow(dead_code)]
    Why(u32),
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadEntry::Opcode(o) => write!(f, "unknown opcode {o}"),
            BadEntry::Status(s) => write!(f, "unknown status {s}"),
            BadEntry::Reserved => f.write_str("reserved bits set"),
            BadEntry::Space(s) => write!(f, "space id {s:#x} out of range"),
            BadEntry::Pages(p) => write!(f, "page count {p} out of range"),
            BadEntry::Why(w) => write!(f, "unknown release reason {w}"),
        }
    }
}

pub(crate) fn check_space(space: u64) -> Result<u64, BadEntry> {
    if space == 0 || space > MAX_SPACE {
        Err(BadEntry::Space(space))
    } else {
        Ok(space)
    }
}

/// One completion, host to guest.
///
/// Wire form (16 bytes): `space: u64, tag: u32, opcode: u16, status: u16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Opcode of the request this completes.
    pub op: Op,
    /// Outcome.
    pub status: Status,
    /// Tag of the request.
    pub tag: u32,
    /// Space id of the request.
    pub space: u64,
}

code! {
    /// Why the guest released a page directory, as reported in the release log.
    pub enum Why: u32, bad BadEntry::Why {
        /// After the host's DESTROY completion.
        Acked = 0, "Acked";
        /// After the host acknowledged a reset, which forgets every object.
        Reset = 1, "Reset";
        /// Without an acknowledgment: at detach, what a host without the reset handshake,
        /// or one that did not acknowledge it in time, still held; and on a stopped ring
        /// that no reset can restart. Taking the host for dead releases nothing. The
        /// guest counts and logs these.
        Forced = 2, "Forced";
    }
}

/// One release log entry, guest to host.
///
/// Wire form (16 bytes): `space: u64, tag: u32, why: u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// The space whose page directory was released.
    pub space: u64,
    /// Tag of the space's requests.
    pub tag: u32,
    /// On what grounds.
    pub why: Why,
}
