// SPDX-License-Identifier: GPL-2.0

//! `--fault`: a host that misbehaves on purpose, so that the guest driver's
//! failure paths (lost, late and bogus completions, interrupt storms) can be
//! tested end to end. [`Fault`] is the parsed option; [`Injector`] is the
//! per-connection state [`crate::ring::RingHost`] consults at its hooks.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::time::{Duration, Instant};

use pvmm_wire::{Completion, Op, Status, MAX_SPACE};

/// Pace of the periodic faults (`cq-flood`, `irq-storm`).
pub const PERIOD: Duration = Duration::from_millis(1);

/// Longest `late-ack` delay, milliseconds.
pub const MAX_LATE_MS: u64 = 600_000;

/// Most completions `late-ack` holds; beyond, the host stops taking
/// submissions until some are posted, so a guest cannot make it grow without
/// bound (the normal path has the same rule for the CQ overflow).
pub const MAX_DELAYED: usize = 1 << 16;

/// The fault a slot injects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Process requests but never post a completion.
    NeverAck,
    /// Post each completion this long after its request was taken.
    LateAck(Duration),
    /// Also fill every free CQ slot with completions that match nothing.
    CqFlood,
    /// Also interrupt the guest every [`PERIOD`] without completions.
    IrqStorm,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        Ok(match s {
            "none" => Fault::None,
            "never-ack" => Fault::NeverAck,
            "cq-flood" => Fault::CqFlood,
            "irq-storm" => Fault::IrqStorm,
            _ => {
                let Some(ms) = s.strip_prefix("late-ack:") else {
                    return Err(format!(
                        "unknown fault {s:?}: expected none, never-ack, late-ack:MS, cq-flood or irq-storm"
                    ));
                };
                match ms.parse::<u64>() {
                    Ok(ms) if (1..=MAX_LATE_MS).contains(&ms) => {
                        Fault::LateAck(Duration::from_millis(ms))
                    }
                    _ => {
                        return Err(format!(
                            "late-ack:MS needs MS from 1 to {MAX_LATE_MS}, not {ms:?}"
                        ))
                    }
                }
            }
        })
    }
}

/// The `--fault` spelling, so a logged value can be pasted back.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::NeverAck => f.write_str("never-ack"),
            Fault::LateAck(d) => write!(f, "late-ack:{}", d.as_millis()),
            Fault::CqFlood => f.write_str("cq-flood"),
            Fault::IrqStorm => f.write_str("irq-storm"),
        }
    }
}

impl Fault {
    /// What the host does wrong, for the startup log line.
    pub fn describe(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::NeverAck => "requests are processed but no completion is ever posted",
            Fault::LateAck(_) => "every completion is posted only after the delay",
            Fault::CqFlood => {
                "free completion slots are filled with completions that match nothing"
            }
            Fault::IrqStorm => "the guest is interrupted every millisecond without completions",
        }
    }
}

/// Fault state of one connection: the `late-ack` queue, the periodic tick
/// and the generator of bogus completions.
#[derive(Debug)]
pub struct Injector {
    fault: Fault,
    /// `late-ack`: completions and when they are due, oldest first. One delay
    /// for all keeps the due times in request order.
    delayed: VecDeque<(Instant, Completion)>,
    /// `cq-flood`, `irq-storm`: when the next periodic round is due.
    tick: Instant,
    /// xorshift64 state for bogus tags and ids; seeded per connection so
    /// that runs do not repeat the same values.
    rng: u64,
}

/// What [`Injector::intercept`] did with a finished completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intercept {
    /// Post it now, as usual.
    Post(Completion),
    /// Dropped for good (`never-ack`).
    Withheld,
    /// Queued until its time (`late-ack`).
    Delayed,
}

impl Injector {
    /// State for a fresh connection.
    pub fn new(fault: Fault) -> Injector {
        Injector {
            fault,
            delayed: VecDeque::new(),
            tick: Instant::now() + PERIOD,
            // RandomState is seeded from the OS: a random seed without a crate.
            rng: RandomState::new().hash_one(0u64) | 1,
        }
    }

    /// The fault injected.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// Takes a completion the host finished for a request taken at `taken`.
    pub fn intercept(&mut self, c: Completion, taken: Instant) -> Intercept {
        match self.fault {
            Fault::NeverAck => Intercept::Withheld,
            Fault::LateAck(d) => {
                self.delayed.push_back((taken + d, c));
                Intercept::Delayed
            }
            _ => Intercept::Post(c),
        }
    }

    /// The oldest delayed completion if its time has come.
    pub fn pop_due(&mut self, now: Instant) -> Option<Completion> {
        match self.delayed.front() {
            Some(&(due, c)) if due <= now => {
                self.delayed.pop_front();
                Some(c)
            }
            _ => None,
        }
    }

    /// Drops every delayed completion (the guest reset); returns how many.
    pub fn clear(&mut self) -> usize {
        std::mem::take(&mut self.delayed).len()
    }

    /// Delayed completions held now.
    pub fn held(&self) -> usize {
        self.delayed.len()
    }

    /// Whether the host must stop taking submissions for now.
    pub fn backlog_full(&self) -> bool {
        self.delayed.len() >= MAX_DELAYED
    }

    /// How long the serving loop may sleep before this fault needs a round
    /// (zero: now); `None` when it needs none.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        let at = match self.fault {
            Fault::LateAck(_) => self.delayed.front()?.0,
            Fault::CqFlood | Fault::IrqStorm => self.tick,
            Fault::None | Fault::NeverAck => return None,
        };
        Some(at.saturating_duration_since(now))
    }

    /// Whether the periodic fault is due at `now`; if so, sets the next tick.
    /// `cq-flood` fills the CQ in every round, so any round is due for it and
    /// the tick only makes sure a round comes within [`PERIOD`].
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.fault {
            Fault::CqFlood => {
                self.tick = now + PERIOD;
                true
            }
            Fault::IrqStorm if now >= self.tick => {
                // Keep to the grid; after a stall, skip what it missed
                // instead of firing a burst.
                self.tick += PERIOD;
                if self.tick <= now {
                    self.tick = now + PERIOD;
                }
                true
            }
            _ => false,
        }
    }

    /// A completion that matches nothing the guest has outstanding: status
    /// `Ok`, a random op and tag, and a random space id in the upper half of
    /// the id range, where no page frame of a real guest lies (ids are pgd
    /// frame numbers), and for which `live` (the host's objects) says no.
    pub fn bogus(&mut self, live: impl Fn(u64) -> bool) -> Completion {
        let half = (MAX_SPACE >> 1) + 1;
        let space = loop {
            let space = half | (self.next() & (half - 1));
            if !live(space) {
                break space;
            }
        };
        let r = self.next();
        Completion {
            op: if r & 1 == 0 { Op::Create } else { Op::Destroy },
            status: Status::Ok,
            tag: (r >> 32) as u32,
            space,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spec() {
        let ok = |s: &str| s.parse::<Fault>().unwrap();
        assert_eq!(ok("none"), Fault::None);
        assert_eq!(ok("never-ack"), Fault::NeverAck);
        assert_eq!(
            ok("late-ack:250"),
            Fault::LateAck(Duration::from_millis(250))
        );
        assert_eq!(ok("late-ack:1"), Fault::LateAck(Duration::from_millis(1)));
        assert_eq!(
            ok("late-ack:600000"),
            Fault::LateAck(Duration::from_millis(600_000))
        );
        assert_eq!(ok("cq-flood"), Fault::CqFlood);
        assert_eq!(ok("irq-storm"), Fault::IrqStorm);
        for s in ["none", "never-ack", "late-ack:250", "cq-flood", "irq-storm"] {
            assert_eq!(ok(s).to_string(), s, "round trip");
        }
    }

    #[test]
    fn rejects_bad_specs() {
        for s in [
            "late-ack:0",
            "late-ack:x",
            "late-ack:",
            "late-ack",
            "late-ack:600001",
            "late-ack:-5",
            "bogus",
            "",
            "None",
        ] {
            assert!(s.parse::<Fault>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn late_ack_releases_in_order_when_due() {
        let mut inj = Injector::new(Fault::LateAck(Duration::from_millis(10)));
        let t0 = Instant::now();
        let c = |tag| Completion {
            op: Op::Create,
            status: Status::Ok,
            tag,
            space: 1,
        };
        assert_eq!(inj.intercept(c(1), t0), Intercept::Delayed);
        assert_eq!(
            inj.intercept(c(2), t0 + Duration::from_millis(1)),
            Intercept::Delayed
        );
        assert_eq!(inj.due_in(t0), Some(Duration::from_millis(10)));
        assert_eq!(inj.pop_due(t0 + Duration::from_millis(9)), None);
        let late = t0 + Duration::from_millis(20);
        assert_eq!(inj.pop_due(late), Some(c(1)));
        assert_eq!(inj.pop_due(late), Some(c(2)));
        assert_eq!((inj.pop_due(late), inj.due_in(late)), (None, None));
    }

    #[test]
    fn storm_ticks_on_a_grid() {
        let t0 = Instant::now();
        let mut inj = Injector::new(Fault::IrqStorm);
        assert!(!inj.tick(t0), "the first tick is a period away");
        assert!(inj.due_in(Instant::now()).unwrap() <= PERIOD);
        let later = t0 + Duration::from_millis(50);
        assert!(inj.tick(later));
        assert!(!inj.tick(later), "a stall does not cause a burst");
        assert_eq!(inj.due_in(later), Some(PERIOD));
        assert!(inj.tick(later + PERIOD));
        assert!(!Injector::new(Fault::None).tick(later));
        assert_eq!(Injector::new(Fault::None).due_in(later), None);
    }

    #[test]
    fn bogus_completions_avoid_live_and_real_ids() {
        let mut inj = Injector::new(Fault::CqFlood);
        for _ in 0..1000 {
            let c = inj.bogus(|s| s % 2 == 0);
            assert!(c.space > MAX_SPACE >> 1 && c.space <= MAX_SPACE);
            assert_eq!(c.space % 2, 1);
            assert_eq!(c.status, Status::Ok);
            assert_eq!(Completion::decode(c.encode()), Ok(c), "well formed");
        }
    }
}
