// SPDX-License-Identifier: GPL-2.0

//! Backing processes (`--work process`): spawned, populated, killed and
//! reaped, and never leaked. The tests spawn children of this process and
//! check that none is left, so they run one at a time.

mod common;

use std::path::PathBuf;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::Duration;

use common::{req, Rig};
use pvmm_host::backing::{Backing, Model};
use pvmm_host::ring::Config;
use pvmm_wire::{Layout, Op, Status};
use rustix::process::{wait, WaitOptions};

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the lock; a test that failed while holding it does not matter here.
fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_no_children();
    guard
}

fn model() -> Model {
    Model {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_pvmm-host")),
        scale_pct: 100,
        max_mib: 64,
    }
}

fn never() -> bool {
    false
}

/// No child of this process, running or zombie, is left.
fn assert_no_children() {
    match wait(WaitOptions::NOHANG) {
        Err(rustix::io::Errno::CHILD) => {}
        other => panic!("a child is left: {other:?}"),
    }
}

fn proc_status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

fn status_kib(status: &str, key: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn spawn_runs_the_backing_process() {
    let _g = serial();
    let b = Backing::spawn(&model(), &never).unwrap();
    let pid = b.pid();
    let status = proc_status(pid).expect("the child runs");
    let ppid = status_kib(&status, "PPid:");
    assert_eq!(ppid, u64::from(std::process::id()));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("--backing-process"));
    b.kill().unwrap();
    assert!(proc_status(pid).is_none(), "reaped");
    assert_no_children();
}

#[test]
fn populate_maps_the_pages_and_kill_reaps() {
    let _g = serial();
    let mut b = Backing::spawn(&model(), &never).unwrap();
    let pid = b.pid();
    let before = status_kib(&proc_status(pid).unwrap(), "RssAnon:");
    b.populate(8192, &never).unwrap();
    let after = status_kib(&proc_status(pid).unwrap(), "RssAnon:");
    assert!(after >= before + 8192 * 4, "RssAnon {before} -> {after} kB");
    b.kill().unwrap();
    assert!(proc_status(pid).is_none(), "reaped");
    assert_no_children();
}

/// The child takes the destroy worker's priority before it populates, so
/// its teardown runs at that priority too.
#[test]
fn populate_runs_at_the_priority_asked() {
    use pvmm_host::priority::{Policy, Priority};
    let _g = serial();
    let mut b = Backing::spawn(&model(), &never).unwrap();
    let pid = b.pid();
    b.run_at(Priority {
        policy: Policy::Batch,
        nice: 19,
    });
    b.populate(16, &never).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name: state is field 3, nice 19, policy 41.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split(' ').collect();
    assert_eq!((fields[17], fields[39]), ("19", "3"), "nice, SCHED_BATCH");
    b.kill().unwrap();
    assert_no_children();
}

#[test]
fn destroy_populates_then_reaps() {
    let _g = serial();
    for pages in [0, 1, 2560] {
        let b = Backing::spawn(&model(), &never).unwrap();
        let pid = b.pid();
        let d = b.destroy(pages, &never).unwrap();
        assert_eq!(d.pages, pages);
        assert!(d.exit_cpu.is_some(), "the zombie's CPU time read");
        if pages >= 2560 {
            assert!(
                d.populate_cpu > Duration::ZERO,
                "10 MiB populated in no CPU time"
            );
        }
        assert!(proc_status(pid).is_none(), "reaped");
    }
    assert_no_children();
}

#[test]
fn drop_kills_and_reaps() {
    let _g = serial();
    for populated in [false, true] {
        let mut b = Backing::spawn(&model(), &never).unwrap();
        let pid = b.pid();
        if populated {
            b.populate(256, &never).unwrap();
        }
        // Drop on another thread, so a Drop that does not kill fails the
        // test instead of hanging it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            drop(b);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("Drop returned");
        assert!(proc_status(pid).is_none(), "child {pid} gone, not a zombie");
    }
    assert_no_children();
}

#[test]
fn failure_to_spawn_is_an_error() {
    let _g = serial();
    let mut m = model();
    m.exe = PathBuf::from("/nonexistent/pvmm-host");
    assert!(Backing::spawn(&m, &never).is_err());
    // Starts but is no backing process: exits without saying it runs.
    m.exe = PathBuf::from("/bin/true");
    assert!(Backing::spawn(&m, &never).is_err());
    assert_no_children();
}

#[test]
fn model_scales_and_caps() {
    let m = Model {
        scale_pct: 50,
        max_mib: 4,
        ..model()
    };
    assert_eq!(m.host_pages(200), 100);
    assert_eq!(m.host_pages(1 << 20), 4 * 256);
    assert_eq!(m.host_pages(u64::MAX), 4 * 256);
}

fn rig(m: Model) -> Rig {
    Rig::with(
        Layout::new(4, 8).unwrap(),
        Config {
            backing: Some(m),
            ..Config::default()
        },
    )
}

#[test]
fn ring_backs_every_space() {
    let _g = serial();
    let mut r = rig(model());
    r.submit(&[req(Op::Create, 1, 0x1000, 0), req(Op::Create, 2, 0x2000, 0)]);
    r.process();
    let done = r.ok_completions();
    assert!(done.iter().all(|c| c.status == Status::Ok), "{done:?}");
    r.submit(&[req(Op::Destroy, 1, 0x1000, 512)]);
    r.process();
    assert_eq!(r.ok_completions()[0].status, Status::Ok);
    let s = r.counters.snapshot();
    assert_eq!((s.backing_spawned, s.backing_failed), (2, 0));
    assert_eq!(
        (s.backing_pages, s.work_us),
        (512, 0),
        "no busy loop on top"
    );
    assert!(s.backing_spawn_us > 0 && s.backing_populate_us > 0 && s.backing_exit_us > 0);
    // The guest goes away: its last space's process goes with it.
    r.host.disconnect();
    assert_no_children();
}

/// With two lanes the worker tears the processes down; a reset and then a
/// disconnect in the middle of that leave no child behind.
#[test]
fn two_lanes_leave_no_child_behind() {
    use pvmm_host::priority::{Policy, Priority};
    let _g = serial();
    let mut r = Rig::with(
        Layout::new(4, 8).unwrap(),
        Config {
            backing: Some(model()),
            destroy_worker: Some(Priority {
                policy: Policy::Batch,
                nice: 19,
            }),
            ..Config::default()
        },
    );
    let created = |r: &mut Rig, spaces: &[u64]| {
        let reqs: Vec<_> = spaces.iter().map(|&s| req(Op::Create, 1, s, 0)).collect();
        r.submit(&reqs);
        r.process();
        assert_eq!(r.ok_completions().len(), spaces.len());
    };
    created(&mut r, &[0x1000, 0x2000, 0x3000]);
    // 64 MiB each (the model's cap): the first is being populated when the
    // reset comes, the others wait in the queue.
    let destroys: Vec<_> = [0x1000, 0x2000, 0x3000]
        .iter()
        .map(|&s| req(Op::Destroy, 1, s, 1 << 20))
        .collect();
    r.submit(&destroys);
    r.process();
    std::thread::sleep(Duration::from_millis(20));
    let seq = pvmm_wire::guest_request_reset(&r.shm);
    r.process();
    assert!(pvmm_wire::guest_reset_done(&r.shm, seq));
    r.cq.skip_all(&r.shm);
    assert_eq!(r.host.lane_in_flight(), 0);
    created(&mut r, &[0x4000, 0x5000]);
    r.submit(&[req(Op::Destroy, 1, 0x4000, 1 << 20)]);
    r.process();
    std::thread::sleep(Duration::from_millis(20));
    r.host.disconnect();
    assert_no_children();
}

#[test]
fn ring_create_fails_without_a_process() {
    let _g = serial();
    let mut r = rig(Model {
        exe: PathBuf::from("/nonexistent/pvmm-host"),
        ..model()
    });
    r.submit(&[req(Op::Create, 1, 0x1000, 0)]);
    r.process();
    assert_eq!(r.ok_completions()[0].status, Status::NoMemory);
    let s = r.counters.snapshot();
    assert_eq!((s.backing_spawned, s.backing_failed, s.creates), (0, 1, 0));
    assert_eq!(r.host.live_objects(), 0);
}
