// SPDX-License-Identifier: GPL-2.0

//! Real host work (`--work process`): every guest address space the host
//! accepts is backed by a host address space, a child process of the stub.
//!
//! CREATE spawns the child (fork, exec of the stub's own binary with
//! [`CHILD_ARG`], a fresh address space and its page tables) and waits until
//! it runs. DESTROY tells the child how many pages the guest's space had; the
//! child maps and touches that much anonymous memory in 4 KiB pages, then the
//! stub kills and reaps it, so the host kernel frees the pages, tears down the
//! page tables and flushes the TLBs, as a hypervisor destroying a guest
//! address space would. Populating and exiting are timed apart.
//!
//! The child talks over one socket (its stdin and stdout): it writes
//! [`READY`], reads a decimal page count and a newline (optionally preceded
//! by a policy name and a nice value it gives itself first: the destroy
//! worker's, which a child spawned by the slot thread did not inherit),
//! writes [`POPULATED`]
//! with the CPU microseconds populating took and its own so far
//! (`P<populate> <total>\n`), then waits to be killed. It asks for SIGKILL when the thread that spawned it
//! exits, so a stub killed without cleanup leaves no children behind.

use std::io::{self, BufRead, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{WaitId, WaitIdOptions};

use crate::priority::{Policy, Priority};
use rustix::time::ClockId;

/// First argument that turns the stub binary into a backing process.
pub const CHILD_ARG: &str = "--backing-process";
/// Byte the child writes once it runs.
pub const READY: u8 = b'R';
/// Byte the child writes once its memory is populated.
pub const POPULATED: u8 = b'P';

/// Longest wait for a child to start: longer than any sane exec, short
/// enough that a wedged one cannot hold a CREATE for good.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a wait checks `stop`.
const POLL: Duration = Duration::from_millis(50);
const PAGE: usize = 4096;

/// How guest address spaces map to host ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// Binary to run with [`CHILD_ARG`]: the stub itself (`/proc/self/exe`).
    pub exe: PathBuf,
    /// Percent of the guest's page count the child populates.
    pub scale_pct: u32,
    /// Most MiB one child populates.
    pub max_mib: u64,
}

impl Model {
    /// The stub's own binary, at the given scale and cap.
    pub fn this_exe(scale_pct: u32, max_mib: u64) -> Model {
        Model {
            exe: PathBuf::from("/proc/self/exe"),
            scale_pct,
            max_mib,
        }
    }

    /// Host pages for a guest space of `guest_pages`: scaled, then capped.
    pub fn host_pages(&self, guest_pages: u64) -> u64 {
        let scaled = u128::from(guest_pages) * u128::from(self.scale_pct) / 100;
        let cap = u128::from(self.max_mib) * 256;
        u64::try_from(scaled.min(cap)).unwrap_or(u64::MAX)
    }
}

/// What one [`Backing::destroy`] cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destroyed {
    /// Pages the child populated.
    pub pages: u64,
    /// From sending the page count to the child's answer.
    pub populate: Duration,
    /// From SIGKILL to the child reaped (its address space torn down).
    pub exit: Duration,
    /// CPU time the child spent populating.
    pub populate_cpu: Duration,
    /// CPU time the child spent dying (its total less what it had used when
    /// populated); `None` without `/proc/PID/schedstat`.
    pub exit_cpu: Option<Duration>,
}

/// What one [`Backing::kill`] cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exited {
    /// From SIGKILL to reaped.
    pub wall: Duration,
    /// The child's CPU time over its whole life, read while it is a
    /// zombie; `None` without `/proc/PID/schedstat`.
    pub total_cpu: Option<Duration>,
}

/// What one [`Backing::populate`] cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Populated {
    /// Wall-clock time, from sending the page count to the answer.
    pub wall: Duration,
    /// See [`Destroyed::populate_cpu`].
    pub cpu: Duration,
    /// CPU time of the child from its start until populated.
    pub child_cpu: Duration,
}

/// One host address space: a live child process. Dropping it kills and
/// reaps the child.
#[derive(Debug)]
pub struct Backing {
    /// `None` once reaped.
    child: Option<Child>,
    sock: UnixStream,
    /// The priority the child takes before it populates; `None`: its own.
    priority: Option<Priority>,
}

impl Backing {
    /// Spawns a child of `model.exe` and waits until it runs (or fails,
    /// or [`START_TIMEOUT`] passes, or `stop` turns true).
    pub fn spawn(model: &Model, stop: &dyn Fn() -> bool) -> io::Result<Backing> {
        let (ours, theirs) = UnixStream::pair()?;
        let theirs_out = theirs.try_clone()?;
        let child = Command::new(&model.exe)
            .arg(CHILD_ARG)
            .arg(std::process::id().to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_out)))
            .spawn()?;
        // From here on, Drop reaps the child whatever goes wrong.
        let mut b = Backing {
            child: Some(child),
            sock: ours,
            priority: None,
        };
        b.expect(READY, Some(Instant::now() + START_TIMEOUT), stop)?;
        Ok(b)
    }

    /// Has the child run its populating and its exit at `p` (it applies it
    /// itself, so only lowering its priority is sure to work).
    pub fn run_at(&mut self, p: Priority) {
        self.priority = Some(p);
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Has the child populate `pages` 4 KiB pages, then kills and reaps it.
    /// On error (the child died, `stop`) the child is killed and reaped too.
    pub fn destroy(mut self, pages: u64, stop: &dyn Fn() -> bool) -> io::Result<Destroyed> {
        let p = self.populate(pages, stop)?;
        let e = self.kill()?;
        Ok(Destroyed {
            pages,
            populate: p.wall,
            exit: e.wall,
            populate_cpu: p.cpu,
            exit_cpu: e.total_cpu.map(|t| t.saturating_sub(p.child_cpu)),
        })
    }

    /// The first half of [`Self::destroy`]: has the child map and touch
    /// `pages` pages (once; it ignores further requests) and returns how
    /// long that took.
    pub fn populate(&mut self, pages: u64, stop: &dyn Fn() -> bool) -> io::Result<Populated> {
        let t0 = Instant::now();
        match self.priority {
            Some(p) => writeln!(self.sock, "{} {} {pages}", p.policy.name(), p.nice)?,
            None => writeln!(self.sock, "{pages}")?,
        }
        self.expect(POPULATED, None, stop)?;
        let wall = t0.elapsed();
        let mut line = Vec::new();
        while line.len() < 64 {
            match self.read_byte(None, stop)? {
                b'\n' => break,
                b => line.push(b),
            }
        }
        let us: Vec<u64> = String::from_utf8_lossy(&line)
            .split(' ')
            .map_while(|w| w.parse().ok())
            .collect();
        let [cpu, child_cpu] = us[..] else {
            return Err(io::Error::other("backing process out of step"));
        };
        Ok(Populated {
            wall,
            cpu: Duration::from_micros(cpu),
            child_cpu: Duration::from_micros(child_cpu),
        })
    }

    /// The second half of [`Self::destroy`]: SIGKILL, reap, and how long
    /// that took (the teardown of the child's address space).
    pub fn kill(mut self) -> io::Result<Exited> {
        let t0 = Instant::now();
        let total_cpu = self.reap()?;
        Ok(Exited {
            wall: t0.elapsed(),
            total_cpu,
        })
    }

    /// Waits for byte `want` from the child.
    fn expect(
        &mut self,
        want: u8,
        deadline: Option<Instant>,
        stop: &dyn Fn() -> bool,
    ) -> io::Result<()> {
        match self.read_byte(deadline, stop)? {
            b if b == want => Ok(()),
            _ => Err(io::Error::other("backing process out of step")),
        }
    }

    /// Reads one byte from the child, checking `stop` and `deadline` while
    /// it waits.
    fn read_byte(&mut self, deadline: Option<Instant>, stop: &dyn Fn() -> bool) -> io::Result<u8> {
        self.sock.set_read_timeout(Some(POLL))?;
        let mut byte = [0u8];
        loop {
            match self.sock.read(&mut byte) {
                Ok(0) => return Err(io::Error::other("backing process exited")),
                Ok(_) => return Ok(byte[0]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if stop() {
                return Err(io::Error::other("stopped"));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "backing process did not answer",
                ));
            }
        }
    }

    /// SIGKILL and wait; a no-op once reaped. Returns the child's CPU time,
    /// read once it is a zombie (its address space gone), before reaping.
    fn reap(&mut self) -> io::Result<Option<Duration>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // Fails only if it was reaped already, which `take` rules out.
        let killed = child.kill();
        let pid = rustix::process::Pid::from_raw(child.id() as i32);
        let mut cpu = None;
        if let (Ok(()), Some(pid)) = (&killed, pid) {
            let dead = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
            while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(WaitId::Pid(pid), dead)
            {
            }
            cpu = std::fs::read_to_string(format!("/proc/{}/schedstat", child.id()))
                .ok()
                .and_then(|s| s.split(' ').next()?.parse().ok())
                .map(Duration::from_nanos);
        }
        child.wait()?;
        killed.map(|()| cpu)
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Err(e) = self.reap() {
            log::warn!("backing process {}: {e}", self.pid());
        }
    }
}

/// The backing process's `main`: `args` are the ones after [`CHILD_ARG`]
/// (the parent's pid). Never returns.
pub fn child_main(args: &[String]) -> ! {
    // SIGKILL when the spawning thread dies; if the parent died before this
    // took effect, we were re-parented: leave at once.
    let parent: Option<i32> = args.first().and_then(|a| a.parse().ok());
    let ok = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .is_ok();
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if !ok || parent.is_none() || ppid != parent {
        std::process::exit(2);
    }
    std::process::exit(match child_serve() {
        Ok(()) => 0,
        Err(_) => 1,
    })
}

fn child_serve() -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(&[READY])?;
    out.flush()?;
    let mut input = io::stdin().lock();
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let (pages, priority) = match words[..] {
        [pages] => (pages, None),
        [policy, nice, pages] => (pages, Some((policy, nice))),
        _ => return Err(io::Error::other("bad populate request")),
    };
    let pages: u64 = pages
        .parse()
        .map_err(|_| io::Error::other("bad page count"))?;
    if let Some((policy, nice)) = priority {
        let policy = <Policy as clap::ValueEnum>::from_str(policy, false);
        if let (Ok(policy), Ok(nice)) = (policy, nice.parse()) {
            // Best effort: at worst the child keeps the slot thread's.
            let _ = Priority { policy, nice }.apply();
        }
    }
    let t0 = cpu_us(ClockId::ThreadCPUTime);
    // Keep the mapping until the kill: its teardown is the point.
    let _kept = populate(pages)?;
    let total = cpu_us(ClockId::ProcessCPUTime);
    let populate = cpu_us(ClockId::ThreadCPUTime).saturating_sub(t0);
    writeln!(out, "{}{populate} {total}", POPULATED as char)?;
    out.flush()?;
    // Wait for SIGKILL; the parent closing the socket ends us too.
    while input.read(&mut [0u8; 64])? != 0 {}
    Ok(())
}

fn cpu_us(clock: ClockId) -> u64 {
    let t = rustix::time::clock_gettime(clock);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1000
}

/// Maps `pages` private anonymous 4 KiB pages and writes to each, so each
/// gets its own frame and page-table entry. Returns the mapping's address.
fn populate(pages: u64) -> io::Result<usize> {
    if pages == 0 {
        return Ok(0);
    }
    let len = usize::try_from(pages)
        .ok()
        .and_then(|p| p.checked_mul(PAGE))
        .ok_or_else(|| io::Error::other("too many pages"))?;
    use rustix::mm::{madvise, mmap_anonymous, Advice, MapFlags, ProtFlags};
    // SAFETY: a fresh private anonymous mapping at an address the kernel
    // picks overlaps nothing Rust owns.
    let base = unsafe {
        mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }?;
    // SAFETY: advice on the mapping just made, which nothing else uses.
    // 4 KiB pages whatever the host's THP setting: a guest space has those.
    let _ = unsafe { madvise(base, len, Advice::LinuxNoHugepage) };
    // SAFETY: as above; write faults on every page of our own mapping.
    if unsafe { madvise(base, len, Advice::LinuxPopulateWrite) }.is_err() {
        for i in (0..len).step_by(PAGE) {
            // SAFETY: `i < len`, inside the writable mapping made above.
            unsafe { base.cast::<u8>().add(i).write_volatile(1) };
        }
    }
    Ok(base as usize)
}
