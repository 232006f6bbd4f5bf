// SPDX-License-Identifier: GPL-2.0

//! `--fault`: a host that misbehaves on purpose, so that the guest driver's
//! failure paths (lost, late and bogus completions, interrupt storms) can be
//! tested end to end. [`Fault`] is the parsed option; [`Injector`] is the
//! per-connection state [`crate::ring::RingHost`] consults at its hooks, and
//! the hooks that act on the rings (`break-ring`, `late-ack`, `cq-flood`,
//! `irq-storm`) are `RingHost` methods in `ring/fault_hooks.rs`.

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
    /// Process requests but never post a DESTROY completion (CREATEs are
    /// answered: the guest waits for those before it uses a space).
    NeverAck,
    /// Post each DESTROY completion this long after its request was taken.
    LateAck(Duration),
    /// Also fill every free CQ slot with completions that match nothing.
    CqFlood,
    /// Also interrupt the guest every [`PERIOD`] without completions.
    IrqStorm,
    /// Post every completion twice.
    DupAck,
    /// For every CREATE, first post a DESTROY completion with its space and
    /// tag, then the real CREATE completion.
    ForgedAck,
    /// After this many requests, publish an impossible CQ tail once.
    BreakRing(u64),
    /// After this many requests, publish an impossible SQ head, until the
    /// guest resets or re-announces `GUEST_READY`.
    BreakRingBack(u64),
    /// After the [`STALL_AT`]th DESTROY, serve nothing for this long; once.
    Stall(Duration),
    /// Never write the header: the device looks like any other user's
    /// ivshmem-doorbell device, which pvmm must leave alone.
    NoHeader,
    /// Publish completions as usual but never interrupt the guest: the
    /// interrupt it waits for after a cut completion pass never comes.
    NoIrq,
    /// After this many requests, serve nothing at all: take no request, post
    /// nothing (not even what that round finished), answer no reset.
    Stop(u64),
    /// Do not offer `FEATURE_NEED_WAKEUP`, and never set `HOST_NEED_WAKEUP`.
    NoWakeup,
}

/// The DESTROY after which `stall` starts: late enough to fall inside the
/// guest's test rather than its start-up, whose forks wait for the host.
pub const STALL_AT: u64 = 16;

/// Most requests before a `break-ring` or `break-ring-back`.
const MAX_COUNT: u64 = 1 << 32;

/// `PREFIX:N` with N in `range`, or `None` if `s` does not start with `PREFIX:`.
fn numbered(
    s: &str,
    prefix: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Option<Result<u64, String>> {
    let n = s.strip_prefix(prefix)?.strip_prefix(':')?;
    Some(match n.parse::<u64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!(
            "{prefix}:N needs N from {} to {}, not {n:?}",
            range.start(),
            range.end()
        )),
    })
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        Ok(match s {
            "none" => Fault::None,
            "never-ack" => Fault::NeverAck,
            "cq-flood" => Fault::CqFlood,
            "irq-storm" => Fault::IrqStorm,
            "dup-ack" => Fault::DupAck,
            "forged-ack" => Fault::ForgedAck,
            "no-header" => Fault::NoHeader,
            "no-irq" => Fault::NoIrq,
            "no-wakeup" => Fault::NoWakeup,
            _ => {
                let ms = |v| Duration::from_millis(v);
                if let Some(v) = numbered(s, "late-ack", 1..=MAX_LATE_MS) {
                    Fault::LateAck(ms(v?))
                } else if let Some(v) = numbered(s, "stall", 1..=MAX_LATE_MS) {
                    Fault::Stall(ms(v?))
                } else if let Some(v) = numbered(s, "stop", 1..=MAX_COUNT) {
                    Fault::Stop(v?)
                } else if let Some(v) = numbered(s, "break-ring", 1..=MAX_COUNT) {
                    Fault::BreakRing(v?)
                } else if let Some(v) = numbered(s, "break-ring-back", 1..=MAX_COUNT) {
                    Fault::BreakRingBack(v?)
                } else {
                    return Err(format!(
                        "unknown fault {s:?}: expected none, never-ack, late-ack:MS, cq-flood, \
                         irq-storm, dup-ack, forged-ack, break-ring:N, break-ring-back:N, \
                         stall:MS, no-header, no-irq, stop:N or no-wakeup"
                    ));
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
            Fault::DupAck => f.write_str("dup-ack"),
            Fault::ForgedAck => f.write_str("forged-ack"),
            Fault::BreakRing(n) => write!(f, "break-ring:{n}"),
            Fault::BreakRingBack(n) => write!(f, "break-ring-back:{n}"),
            Fault::Stall(d) => write!(f, "stall:{}", d.as_millis()),
            Fault::NoHeader => f.write_str("no-header"),
            Fault::NoIrq => f.write_str("no-irq"),
            Fault::Stop(n) => write!(f, "stop:{n}"),
            Fault::NoWakeup => f.write_str("no-wakeup"),
        }
    }
}

impl Fault {
    /// What the host does wrong, for the startup log line.
    pub fn describe(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::NeverAck => "requests are processed but no DESTROY is ever acknowledged",
            Fault::LateAck(_) => "every DESTROY completion is posted only after the delay",
            Fault::CqFlood => {
                "free completion slots are filled with completions that match nothing"
            }
            Fault::IrqStorm => "the guest is interrupted every millisecond without completions",
            Fault::DupAck => "every completion is posted twice",
            Fault::ForgedAck => {
                "every CREATE is answered with a DESTROY completion first, then its own"
            }
            Fault::BreakRing(_) => {
                "after the given number of requests an impossible CQ tail is published once"
            }
            Fault::BreakRingBack(_) => {
                "after the given number of requests an impossible SQ head is published"
            }
            Fault::Stall(_) => "after the 16th DESTROY nothing is served for the given time",
            Fault::NoHeader => "no header is written: the device is not marked for pvmm",
            Fault::NoIrq => "completions are published but the guest is never interrupted",
            Fault::Stop(_) => "after the given number of requests nothing is served",
            Fault::NoWakeup => {
                "FEATURE_NEED_WAKEUP is not offered: the guest rings for every batch"
            }
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
    /// Requests taken so far, for `break-ring` and `break-ring-back`.
    requests: u64,
    /// DESTROYs taken so far, for `stall`.
    destroys: u64,
    /// Whether the one-shot fault (`break-ring*`, `stall`) happened.
    fired: bool,
    /// `stall`: serve nothing until then.
    stall_until: Option<Instant>,
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
    /// Post it twice (`dup-ack`).
    Twice(Completion),
    /// Post the forged DESTROY completion, then the real one (`forged-ack`).
    Forged(Completion, Completion),
}

/// A ring index the guest must see as impossible, once `break-ring*` is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Break {
    /// Publish CQ tail = guest's CQ head + cq_entries + 1.
    CqTail,
    /// Publish SQ head = guest's SQ tail - sq_entries - 1.
    SqHead,
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
            requests: 0,
            destroys: 0,
            fired: false,
            stall_until: None,
        }
    }

    /// The fault injected.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// Takes a completion the host finished for a request taken at `taken`.
    pub fn intercept(&mut self, c: Completion, taken: Instant) -> Intercept {
        match self.fault {
            Fault::NeverAck if c.op == Op::Destroy => Intercept::Withheld,
            Fault::LateAck(d) if c.op == Op::Destroy => {
                // In request order: a DESTROY the destroy worker finished
                // goes ahead of the completions of requests taken after it.
                let due = taken + d;
                let at = self.delayed.partition_point(|&(t, _)| t <= due);
                self.delayed.insert(at, (due, c));
                Intercept::Delayed
            }
            Fault::DupAck => Intercept::Twice(c),
            Fault::ForgedAck if c.op == Op::Create => {
                let forged = Completion {
                    op: Op::Destroy,
                    status: Status::Ok,
                    ..c
                };
                Intercept::Forged(forged, c)
            }
            _ => Intercept::Post(c),
        }
    }

    /// Counts a request taken; after the [`STALL_AT`]th DESTROY, `stall`
    /// starts (once). Returns whether a stall started.
    pub fn taken(&mut self, op: Option<Op>, now: Instant) -> bool {
        self.requests += 1;
        if op == Some(Op::Destroy) {
            self.destroys += 1;
        }
        match self.fault {
            Fault::Stall(d) if self.destroys == STALL_AT && !self.fired => {
                self.fired = true;
                self.stall_until = Some(now + d);
                true
            }
            _ => false,
        }
    }

    /// Whether `stall` (or `stop`, for good) holds all service at `now`.
    pub fn stalled(&mut self, now: Instant) -> bool {
        if matches!(self.fault, Fault::Stop(n) if self.requests >= n) {
            return true;
        }
        match self.stall_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.stall_until = None;
                false
            }
            None => false,
        }
    }

    /// The index to break, once the request count is reached (only once).
    pub fn take_break(&mut self) -> Option<Break> {
        let (n, what) = match self.fault {
            Fault::BreakRing(n) => (n, Break::CqTail),
            Fault::BreakRingBack(n) => (n, Break::SqHead),
            _ => return None,
        };
        if self.fired || self.requests < n {
            return None;
        }
        self.fired = true;
        Some(what)
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
            Fault::Stall(_) => self.stall_until?,
            Fault::None
            | Fault::NeverAck
            | Fault::DupAck
            | Fault::ForgedAck
            | Fault::NoHeader
            | Fault::NoIrq
            | Fault::Stop(_)
            | Fault::NoWakeup
            | Fault::BreakRing(_)
            | Fault::BreakRingBack(_) => return None,
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
    /// the id range, where no page directory of these guests lies (ids are
    /// pgd physical addresses, and their memory is far below 2^51), and for
    /// which `live` (the host's objects) says no.
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
        assert_eq!(ok("dup-ack"), Fault::DupAck);
        assert_eq!(ok("forged-ack"), Fault::ForgedAck);
        assert_eq!(ok("break-ring:1"), Fault::BreakRing(1));
        assert_eq!(ok("break-ring-back:20"), Fault::BreakRingBack(20));
        assert_eq!(ok("stall:3000"), Fault::Stall(Duration::from_secs(3)));
        assert_eq!(ok("no-header"), Fault::NoHeader);
        assert_eq!(ok("no-irq"), Fault::NoIrq);
        assert_eq!(ok("stop:200"), Fault::Stop(200));
        assert_eq!(ok("no-wakeup"), Fault::NoWakeup);
        for s in [
            "none",
            "never-ack",
            "late-ack:250",
            "cq-flood",
            "irq-storm",
            "dup-ack",
            "forged-ack",
            "break-ring:7",
            "break-ring-back:4294967296",
            "stall:600000",
            "no-header",
            "no-irq",
            "stop:3",
            "no-wakeup",
        ] {
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
            "break-ring:0",
            "break-ring",
            "break-ring:",
            "break-ring-back:0",
            "break-ring-back:4294967297",
            "stall:0",
            "stall:600001",
            "stall",
            "dup-ack:1",
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
            op: Op::Destroy,
            status: Status::Ok,
            tag,
            space: 1,
        };
        // CREATEs are never delayed: the guest waits for them.
        let create = Completion {
            op: Op::Create,
            ..c(3)
        };
        assert_eq!(inj.intercept(create, t0), Intercept::Post(create));
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
        // A completion finished late (a destroy worker's) for a request
        // taken early goes ahead of one taken after it.
        assert_eq!(
            inj.intercept(c(4), t0 + Duration::from_millis(5)),
            Intercept::Delayed
        );
        assert_eq!(
            inj.intercept(c(3), t0 + Duration::from_millis(2)),
            Intercept::Delayed
        );
        assert_eq!(inj.due_in(t0), Some(Duration::from_millis(12)));
        assert_eq!(inj.pop_due(late), Some(c(3)));
        assert_eq!(inj.pop_due(late), Some(c(4)));
    }

    #[test]
    fn one_shot_faults_fire_once() {
        let t0 = Instant::now();
        let mut inj = Injector::new(Fault::BreakRing(2));
        assert!(!inj.taken(Some(Op::Create), t0));
        assert_eq!(inj.take_break(), None);
        inj.taken(None, t0);
        assert_eq!(inj.take_break(), Some(Break::CqTail));
        inj.taken(Some(Op::Create), t0);
        assert_eq!(inj.take_break(), None, "once");
        let mut inj = Injector::new(Fault::BreakRingBack(1));
        inj.taken(Some(Op::Destroy), t0);
        assert_eq!(inj.take_break(), Some(Break::SqHead));
        assert!(!inj.stalled(t0));

        let d = Duration::from_millis(30);
        let mut inj = Injector::new(Fault::Stall(d));
        assert!(!inj.taken(Some(Op::Create), t0), "a CREATE does not stall");
        for _ in 1..STALL_AT {
            assert!(!inj.taken(Some(Op::Destroy), t0));
        }
        assert_eq!(inj.due_in(t0), None);
        assert!(inj.taken(Some(Op::Destroy), t0));
        assert!(inj.stalled(t0 + d / 2));
        assert_eq!(inj.due_in(t0), Some(d));
        assert!(!inj.stalled(t0 + d));
        assert!(!inj.taken(Some(Op::Destroy), t0 + d), "once");
        assert!(!inj.stalled(t0 + d));
        assert_eq!(inj.take_break(), None);
        let mut inj = Injector::new(Fault::Stop(1));
        assert!(!inj.stalled(t0));
        inj.taken(Some(Op::Create), t0);
        assert!(inj.stalled(t0 + d), "for good");
    }

    #[test]
    fn dup_and_forged_acks() {
        let t0 = Instant::now();
        let c = |op| Completion {
            op,
            status: Status::NoMemory,
            tag: 9,
            space: 5,
        };
        let mut inj = Injector::new(Fault::DupAck);
        assert_eq!(
            inj.intercept(c(Op::Create), t0),
            Intercept::Twice(c(Op::Create))
        );
        let mut inj = Injector::new(Fault::ForgedAck);
        let forged = Completion {
            status: Status::Ok,
            ..c(Op::Destroy)
        };
        assert_eq!(
            inj.intercept(c(Op::Create), t0),
            Intercept::Forged(forged, c(Op::Create))
        );
        assert_eq!(
            inj.intercept(c(Op::Destroy), t0),
            Intercept::Post(c(Op::Destroy))
        );
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
