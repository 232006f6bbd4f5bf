// SPDX-License-Identifier: GPL-2.0

//! One socket, one guest: the serving loop of a slot.

use std::cell::Cell;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pvmm_wire::Layout;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::fault::Fault;
use crate::ivshmem::{self, Server};
use crate::priority::Priority;
use crate::ratelimit::RateLimit;
use crate::ring::{Config, Next, RingHost};
use crate::shm::MappedShm;
use crate::stats::{Counters, CpuMeter, Snapshot, StatsFile};

/// Everything one slot needs besides its socket.
#[derive(Clone, Debug)]
pub struct SlotConfig {
    /// Slot number, for names.
    pub index: usize,
    /// Size of each guest's shared memory (a power of two).
    pub shm_size: usize,
    /// Ring layout written into each fresh window.
    pub layout: Layout,
    /// Request processing tunables.
    pub ring: Config,
    /// Sleep limit when idle: a safety net against a lost doorbell.
    pub idle_timeout: Duration,
    /// Poll period while completions wait for CQ slots.
    pub poll_soon: Duration,
    /// This slot's counters.
    pub counters: Arc<Counters>,
    /// Every slot's counters, for the stats file.
    pub all_counters: Arc<Vec<Arc<Counters>>>,
    /// Live stats file, if wanted.
    pub stats_file: Option<PathBuf>,
    /// Scheduling policy and nice value the serving thread gives itself;
    /// the destroy worker's, with two lanes, is `ring.destroy_worker`.
    pub priority: Priority,
    /// User ids allowed to connect (`--allow-uid`), checked with `SO_PEERCRED`.
    pub allow_uids: Vec<u32>,
}

/// Most connections one loop iteration accepts, so that a connect flood
/// cannot keep the slot thread from its guest's rings.
pub const ACCEPTS_PER_ROUND: usize = 8;

/// The user ids allowed to connect when `--allow-uid` is not given: the
/// stub's own and root's.
pub fn default_allow_uids() -> Vec<u32> {
    let own = rustix::process::getuid().as_raw();
    if own == 0 {
        vec![0]
    } else {
        vec![own, 0]
    }
}

/// The guest connected to a slot.
struct Conn {
    id: u16,
    shm: MappedShm,
    ring: RingHost,
}

/// Serves `server` until `stop` is set. Call it on the slot's own thread: it
/// first applies `cfg.priority` to that thread. Guest misbehaviour never ends
/// this loop; only errors of the host itself (priority refused, poll failing)
/// do.
pub fn serve(mut server: Server, cfg: SlotConfig, stop: &AtomicBool) -> Result<()> {
    let name = format!("slot{}", cfg.index);
    let (slot_opts, worker) = match cfg.ring.destroy_worker {
        None => ("--worker-sched/--worker-nice", None),
        Some(p) => ("--slot-sched/--slot-nice", Some(p)),
    };
    cfg.priority
        .apply()
        .with_context(|| format!("{name}: cannot apply {slot_opts} ({})", cfg.priority))?;
    log::info!("{name}: serving thread runs with {}", cfg.priority);
    if let Some(p) = worker {
        // Each guest's worker applies it itself: find out now if it cannot.
        std::thread::spawn(move || p.apply())
            .join()
            .map_err(|_| anyhow::anyhow!("priority probe panicked"))?
            .with_context(|| format!("{name}: cannot apply --worker-sched/--worker-nice ({p})"))?;
        log::info!("{name}: two lanes; each guest's destroy worker runs with {p}");
    }
    let mut stats = cfg.stats_file.as_deref().map(StatsFile::new);
    // `now`: the first and the last write; otherwise at most every
    // StatsFile::MIN_INTERVAL, however busy the guest keeps the slot.
    let write_stats = |stats: &mut Option<StatsFile>, now: bool| {
        if let Some(f) = stats {
            let total = || Snapshot::total(cfg.all_counters.iter());
            let r = if now {
                f.write(&total())
            } else {
                f.write_due(total)
            };
            if let Err(e) = r {
                log::warn!("{name}: cannot write stats file: {e}");
            }
        }
    };
    write_stats(&mut stats, true);
    let stop_fn = || stop.load(Ordering::Relaxed);
    // All of this thread's CPU time, from its start; its workers add theirs.
    let mut cpu = CpuMeter(0);
    let mut conn: Option<Conn> = None;
    let mut next = Next::WaitDoorbell;
    let mut refusals = RateLimit::new();
    log::info!(
        "{name}: listening on {} (shm {} KiB, sq {} / cq {} entries, {} vectors)",
        server.path().display(),
        cfg.shm_size / 1024,
        cfg.layout.sq_entries,
        cfg.layout.cq_entries,
        server.host_vectors().len()
    );

    if cfg.ring.fault != Fault::None {
        log::info!(
            "{name}: FAULT INJECTION --fault {}: {}",
            cfg.ring.fault,
            cfg.ring.fault.describe()
        );
    }

    while !stop_fn() {
        let mut timeout = match (&conn, next) {
            (Some(_), Next::Run) => Duration::ZERO,
            (Some(_), Next::PollSoon) => cfg.poll_soon,
            _ => cfg.idle_timeout,
        };
        // A timed fault needs its round even while the guest is silent.
        if let Some(due) = conn.as_ref().and_then(|c| c.ring.fault_due_in()) {
            timeout = timeout.min(due);
        }
        // And a changed stats file its deferred write.
        if let Some(due) = stats.as_ref().and_then(|f| f.due_in(Instant::now())) {
            timeout = timeout.min(due);
        }
        let lane = conn.as_ref().and_then(|c| c.ring.lane_fd());
        let (listen_ev, client_ev, bells) =
            wait(&server, conn.as_ref().map(|c| c.id), lane, timeout)?;
        let mut changed = false;

        if bells > 0 {
            cfg.counters.doorbells.fetch_add(bells, Ordering::Relaxed);
        }
        if client_ev {
            if let Some(c) = &conn {
                if hung_up(&server, c.id) {
                    let c = conn.take().expect("checked above");
                    disconnect(&mut server, c, &name);
                    changed = true;
                }
            }
        }
        if listen_ev {
            changed |= accept_all(&mut server, &mut conn, &cfg, &name, &mut refusals);
        }

        let mut gone = false;
        if let Some(c) = &mut conn {
            c.ring.woken(&c.shm);
            let irq_fd = server
                .clients()
                .iter()
                .find(|p| p.id == c.id)
                .and_then(|p| p.vectors.first());
            let mut irq = || {
                if let Some(fd) = irq_fd {
                    if let Err(e) = ivshmem::notify(fd.as_fd()) {
                        log::warn!("{name}: cannot interrupt peer {}: {e}", c.id);
                    }
                }
            };
            // A round may take sq_entries x --max-destroy-us: notice a
            // hang-up within it, and end it.
            let hup = HangupWatch::new(&server, c.id);
            let batch = c
                .ring
                .process(&c.shm, &mut irq, &|| stop_fn() || hup.gone());
            next = c.ring.next(&c.shm);
            changed |= batch.did_work();
            gone = hup.seen.get();
        }
        if gone {
            let c = conn.take().expect("checked above");
            disconnect(&mut server, c, &name);
            changed = true;
        }
        cpu.charge(&cfg.counters);
        if changed {
            if let Some(f) = &mut stats {
                f.mark();
            }
        }
        write_stats(&mut stats, false);
    }

    if let Some(c) = conn.take() {
        disconnect(&mut server, c, &name);
    }
    cpu.charge(&cfg.counters);
    write_stats(&mut stats, true);
    Ok(())
}

/// Runs a slot's body `f` and then sets `stop`, however `f` ends: a slot
/// that stopped serving its socket stops the process. A panic becomes an
/// error naming the slot and the panic's message.
pub fn run_slot(name: &str, stop: &AtomicBool, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    stop.store(true, Ordering::Relaxed);
    r.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Err(anyhow::anyhow!("{name}: serving thread panicked: {msg}"))
    })
}

/// Sleeps until a connection, a hang-up, a doorbell, a DESTROY the `lane`
/// finished, or `timeout`. Returns (listener readable, client readable,
/// doorbells drained); the lane's eventfd is drained, its work is taken in
/// the round.
fn wait(
    server: &Server,
    client: Option<u16>,
    lane: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<(bool, bool, u64)> {
    let client_fd = client.and_then(|id| server.clients().iter().find(|c| c.id == id));
    let mut fds = Vec::with_capacity(3 + server.host_vectors().len());
    let listener = server.listener();
    fds.push(PollFd::new(&listener, PollFlags::IN));
    let bells_at = if let Some(c) = client_fd {
        fds.push(PollFd::new(&c.stream, PollFlags::IN));
        2
    } else {
        1
    };
    for v in server.host_vectors() {
        fds.push(PollFd::new(v, PollFlags::IN));
    }
    if let Some(fd) = &lane {
        fds.push(PollFd::new(fd, PollFlags::IN));
    }
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    match poll(&mut fds, Some(&ts)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e).context("poll"),
    }
    let ready = |f: &PollFd<'_>| !f.revents().is_empty();
    let listen = ready(&fds[0]);
    let client = bells_at == 2 && ready(&fds[1]);
    let mut bells = 0u64;
    for (f, v) in fds[bells_at..].iter().zip(server.host_vectors()) {
        if ready(f) {
            bells = bells.saturating_add(ivshmem::drain(v.as_fd()));
        }
    }
    if let (Some(fd), Some(f)) = (lane, fds.last()) {
        if ready(f) {
            ivshmem::drain(fd);
        }
    }
    Ok((listen, client, bells))
}

/// Whether client `id`'s socket is at end of stream (QEMU never sends data;
/// anything it might send is discarded).
fn hung_up(server: &Server, id: u16) -> bool {
    let Some(c) = server.clients().iter().find(|c| c.id == id) else {
        return true;
    };
    let mut buf = [0u8; 64];
    // Poll said readable, so this does not block.
    !matches!((&c.stream).read(&mut buf), Ok(n) if n > 0)
}

/// Checks, at most every [`HangupWatch::EVERY`], whether a client hung up
/// while a round runs.
struct HangupWatch<'a> {
    server: &'a Server,
    id: u16,
    next: Cell<Instant>,
    seen: Cell<bool>,
}

impl<'a> HangupWatch<'a> {
    const EVERY: Duration = Duration::from_millis(10);

    fn new(server: &'a Server, id: u16) -> Self {
        HangupWatch {
            server,
            id,
            next: Cell::new(Instant::now() + Self::EVERY),
            seen: Cell::new(false),
        }
    }

    fn gone(&self) -> bool {
        let now = Instant::now();
        if self.seen.get() || now < self.next.get() {
            return self.seen.get();
        }
        self.next.set(now + Self::EVERY);
        let Some(c) = self.server.clients().iter().find(|c| c.id == self.id) else {
            return false;
        };
        let mut fds = [PollFd::new(&c.stream, PollFlags::IN)];
        let ready = matches!(poll(&mut fds, Some(&Timespec::default())), Ok(n) if n > 0);
        // Readable: data (discarded) or end of stream.
        if ready && hung_up(self.server, self.id) {
            self.seen.set(true);
        }
        self.seen.get()
    }
}

fn disconnect(server: &mut Server, c: Conn, name: &str) {
    log::info!(
        "{name}: peer {} disconnected; dropping its {} host objects and its shared memory",
        c.id,
        c.ring.live_objects()
    );
    server.remove(c.id);
    c.ring.disconnect();
}

/// Accepts up to [`ACCEPTS_PER_ROUND`] pending connections: the first from an
/// allowed user becomes the guest (with a fresh window); others are refused
/// while it is connected, and those of other users always.
fn accept_all(
    server: &mut Server,
    conn: &mut Option<Conn>,
    cfg: &SlotConfig,
    name: &str,
    limit: &mut RateLimit,
) -> bool {
    let mut changed = false;
    for _ in 0..ACCEPTS_PER_ROUND {
        let stream = match server.accept() {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => {
                log::warn!("{name}: accept failed: {e}");
                break;
            }
        };
        changed = true;
        match ivshmem::peer_uid(&stream) {
            Ok(uid) if cfg.allow_uids.contains(&uid) => {}
            r => {
                cfg.counters.denied.fetch_add(1, Ordering::Relaxed);
                let who = r.map_or_else(|e| format!("unknown ({e})"), |u| u.to_string());
                refuse(
                    limit,
                    name,
                    format_args!("refusing uid {who}: not in --allow-uid"),
                );
                continue;
            }
        }
        if conn.is_some() || server.full() {
            cfg.counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse(
                limit,
                name,
                format_args!(
                    "refusing a second client on {}: one guest per socket",
                    server.path().display()
                ),
            );
            continue;
        }
        match connect(server, stream, cfg, name) {
            Ok(c) => *conn = Some(c),
            Err(e) => log::warn!("{name}: client setup failed: {e:#}"),
        }
    }
    changed
}

/// A refused connection's warning, rate-limited: any local user allowed to
/// connect could otherwise flood the log.
fn refuse(limit: &mut RateLimit, name: &str, msg: std::fmt::Arguments<'_>) {
    if let Some(dropped) = limit.allow() {
        if dropped > 0 {
            log::warn!("{name}: {dropped} similar messages suppressed");
        }
        log::warn!("{name}: {msg}");
    }
}

fn connect(
    server: &mut Server,
    stream: std::os::unix::net::UnixStream,
    cfg: &SlotConfig,
    name: &str,
) -> Result<Conn> {
    let shm = MappedShm::create(&format!("pvmm-{name}"), cfg.shm_size).context("shared memory")?;
    let ring = RingHost::new(
        name,
        cfg.layout,
        cfg.ring.clone(),
        Arc::clone(&cfg.counters),
    );
    ring.init_shm(&shm);
    let id = server
        .add_client(stream, shm.fd())
        .context("ivshmem connect sequence")?;
    cfg.counters.connects.fetch_add(1, Ordering::Relaxed);
    log::info!("{name}: peer {id} connected");
    Ok(Conn { id, shm, ring })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn slot(allow_uids: Vec<u32>) -> SlotConfig {
        let counters = Arc::new(Counters::default());
        SlotConfig {
            index: 0,
            shm_size: 64 << 10,
            layout: Layout::new(4, 8).unwrap(),
            ring: Config::default(),
            idle_timeout: Duration::from_millis(50),
            poll_soon: Duration::from_millis(1),
            all_counters: Arc::new(vec![Arc::clone(&counters)]),
            counters,
            stats_file: None,
            priority: Priority::default(),
            allow_uids,
        }
    }

    fn server(name: &str) -> (tempfile::TempDir, Server) {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::bind(&dir.path().join(name), 1, 0, 1).unwrap();
        (dir, server)
    }

    #[test]
    fn a_panicking_slot_stops_the_process_with_its_message() {
        let stop = AtomicBool::new(false);
        let r = run_slot("slot3", &stop, || panic!("ring {} broke", 7));
        assert!(
            stop.load(Ordering::Relaxed),
            "the other slots were not stopped"
        );
        let e = format!("{:#}", r.unwrap_err());
        assert_eq!(e, "slot3: serving thread panicked: ring 7 broke");
        let stop = AtomicBool::new(false);
        assert!(run_slot("slot0", &stop, || Ok(())).is_ok());
        assert!(
            stop.load(Ordering::Relaxed),
            "a slot that ends stops the process"
        );
    }

    #[test]
    fn a_connect_flood_is_taken_a_few_at_a_time() {
        let (_dir, mut server) = server("flood");
        let cfg = slot(default_allow_uids());
        let clients: Vec<UnixStream> = (0..20)
            .map(|_| UnixStream::connect(server.path()).unwrap())
            .collect();
        let (mut conn, mut limit) = (None, RateLimit::new());
        assert!(accept_all(&mut server, &mut conn, &cfg, "t", &mut limit));
        assert!(conn.is_some(), "the first client is the guest");
        let s = cfg.counters.snapshot();
        assert_eq!((s.connects, s.refused), (1, ACCEPTS_PER_ROUND as u64 - 1));
        accept_all(&mut server, &mut conn, &cfg, "t", &mut limit);
        assert_eq!(
            cfg.counters.snapshot().refused,
            2 * ACCEPTS_PER_ROUND as u64 - 1
        );
        drop(clients);
    }

    #[test]
    fn only_allowed_users_connect() {
        let (_dir, mut server) = server("uid");
        let own = rustix::process::getuid().as_raw();
        assert!(default_allow_uids().contains(&own));
        assert!(default_allow_uids().contains(&0));
        let cfg = slot(vec![own.wrapping_add(4242)]);
        let _c = UnixStream::connect(server.path()).unwrap();
        let (mut conn, mut limit) = (None, RateLimit::new());
        accept_all(&mut server, &mut conn, &cfg, "t", &mut limit);
        assert!(conn.is_none(), "another user's guest was accepted");
        let s = cfg.counters.snapshot();
        assert_eq!((s.denied, s.connects), (1, 0));

        let cfg = slot(vec![own]);
        let _c = UnixStream::connect(server.path()).unwrap();
        accept_all(&mut server, &mut conn, &cfg, "t", &mut limit);
        assert!(conn.is_some());
        assert_eq!(cfg.counters.snapshot().denied, 0);
    }
}
