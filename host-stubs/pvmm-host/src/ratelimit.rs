// SPDX-License-Identifier: GPL-2.0

//! Rate-limited logging, so that a hostile guest cannot flood the log.

use std::time::{Duration, Instant};

/// Limits warnings to a burst per second, so a hostile guest cannot flood the log.
#[derive(Debug)]
pub(crate) struct RateLimit {
    window: Instant,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    const BURST: u32 = 10;

    pub(crate) fn new() -> RateLimit {
        RateLimit {
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether to log now; reports how many were dropped before.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.used = 0;
        }
        if self.used < Self::BURST {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Logs at `$level` through the rate limiter `$self.$limit`, first saying how
/// many messages it suppressed since the last one it let through.
macro_rules! log_limited {
    ($self:ident, $limit:ident, $level:expr, $($arg:tt)+) => {
        if let Some(dropped) = $self.$limit.allow() {
            if dropped > 0 {
                log::log!($level, "{}: {} similar messages suppressed", $self.name, dropped);
            }
            log::log!($level, "{}: {}", $self.name, format_args!($($arg)+));
        }
    };
}

/// A warning through `$self.limit`.
macro_rules! warn_limited {
    ($self:ident, $($arg:tt)+) => {
        $crate::ratelimit::log_limited!($self, limit, log::Level::Warn, $($arg)+)
    };
}

/// An informational message through `$self.info_limit`.
macro_rules! info_limited {
    ($self:ident, $($arg:tt)+) => {
        $crate::ratelimit::log_limited!($self, info_limit, log::Level::Info, $($arg)+)
    };
}

pub(crate) use info_limited;
pub(crate) use log_limited;
pub(crate) use warn_limited;
