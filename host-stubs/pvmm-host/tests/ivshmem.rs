// SPDX-License-Identifier: GPL-2.0

//! The ivshmem server protocol (`src/ivshmem.rs`) against a client that
//! reads the connect sequence as QEMU does: ids, the shared memory, every
//! peer's eventfds, announcements of peers that come and go.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use pvmm_host::ivshmem::{self, Server, PROTOCOL_VERSION};
use pvmm_host::shm::MappedShm;
use pvmm_wire::SharedMemory;
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

/// Receives one message and the fd that came with it, if any. `Ok(None)` at
/// end of stream.
fn recv_msg(sock: BorrowedFd<'_>) -> io::Result<Option<(i64, Option<OwnedFd>)>> {
    let mut bytes = [0u8; 8];
    let mut got = 0;
    let mut fd = None;
    while got < bytes.len() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let r = recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut bytes[got..])],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                for f in fds {
                    // Keep the first; extra ones are closed on drop.
                    fd.get_or_insert(f);
                }
            }
        }
        if r.bytes == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += r.bytes;
    }
    Ok(Some((i64::from_le_bytes(bytes), fd)))
}

/// What a client learns at connect time.
#[derive(Debug)]
struct ClientSetup {
    /// Its own peer id.
    id: u16,
    /// The shared memory.
    shm: OwnedFd,
    /// Other peers' eventfds, as `(peer id, vector fds)`.
    peers: Vec<(u16, Vec<OwnedFd>)>,
    /// Its own eventfds, one per vector.
    own: Vec<OwnedFd>,
}

/// Client side of the connect sequence for `vectors` vectors, as QEMU does it.
fn client_handshake(sock: &UnixStream, vectors: u32) -> io::Result<ClientSetup> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let next = || recv_msg(sock.as_fd())?.ok_or_else(|| bad("server hung up"));
    let (v, fd) = next()?;
    if v != PROTOCOL_VERSION || fd.is_some() {
        return Err(bad("bad version message"));
    }
    let (id, fd) = next()?;
    let id = u16::try_from(id).map_err(|_| bad("bad id message"))?;
    if fd.is_some() {
        return Err(bad("fd with id message"));
    }
    let (m, shm) = next()?;
    let shm = match (m, shm) {
        (-1, Some(fd)) => fd,
        _ => return Err(bad("bad shared-memory message")),
    };
    let mut peers: Vec<(u16, Vec<OwnedFd>)> = Vec::new();
    let mut own = Vec::new();
    while (own.len() as u32) < vectors {
        let (p, fd) = next()?;
        let p = u16::try_from(p).map_err(|_| bad("bad peer id"))?;
        let Some(fd) = fd else {
            peers.retain(|(q, _)| *q != p);
            continue;
        };
        if p == id {
            own.push(fd);
        } else if let Some((_, fds)) = peers.iter_mut().find(|(q, _)| *q == p) {
            fds.push(fd);
        } else {
            peers.push((p, vec![fd]));
        }
    }
    Ok(ClientSetup {
        id,
        shm,
        peers,
        own,
    })
}

/// Accepts the pending connection and runs the server's half of the connect
/// sequence; returns the new peer's id.
fn accept(server: &mut Server, shm: &MappedShm) -> u16 {
    let stream = server.accept().unwrap().expect("a pending connection");
    server.add_client(stream, shm.fd()).unwrap()
}

#[test]
fn connect_sequence_and_peer_announcements() {
    const VECTORS: u32 = 2;
    let dir = std::env::temp_dir().join(format!("pvmm-ivshmem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let shm = MappedShm::create("pvmm-test", 4096).unwrap();
    shm.write_u32(0, 0x1234_5678);
    let mut server = Server::bind(&path, VECTORS, 0, 2).unwrap();
    assert!(server.accept().unwrap().is_none(), "nobody connected yet");
    // connect(2) needs write permission: only the stub's user (and root).
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600, "socket mode {mode:o}");

    // The first client sees the host (peer 0) and itself.
    let a = UnixStream::connect(&path).unwrap();
    let a_id = accept(&mut server, &shm);
    let sa = client_handshake(&a, VECTORS).unwrap();
    assert_eq!((sa.id, a_id), (1, 1));
    assert_eq!(sa.own.len(), VECTORS as usize);
    assert_eq!(sa.peers.len(), 1);
    assert_eq!(sa.peers[0].0, 0);
    assert_eq!(sa.peers[0].1.len(), VECTORS as usize);
    // The same memory, not a copy.
    assert_eq!(MappedShm::map(sa.shm).unwrap().read_u32(0), 0x1234_5678);

    // Its doorbell rings the host's eventfd, and the host's interrupt its own.
    ivshmem::notify(sa.peers[0].1[0].as_fd()).unwrap();
    assert_eq!(ivshmem::drain(server.host_vectors()[0].as_fd()), 1);
    assert_eq!(ivshmem::drain(server.host_vectors()[0].as_fd()), 0);
    ivshmem::notify(server.clients()[0].vectors[1].as_fd()).unwrap();
    assert_eq!(ivshmem::drain(sa.own[1].as_fd()), 1);

    // A second client sees both, and the first learns of it.
    let b = UnixStream::connect(&path).unwrap();
    let b_id = accept(&mut server, &shm);
    let sb = client_handshake(&b, VECTORS).unwrap();
    assert_eq!(sb.id, b_id);
    assert_ne!(b_id, a_id);
    let ids: Vec<u16> = sb.peers.iter().map(|(p, _)| *p).collect();
    assert_eq!(ids, [0, a_id]);
    assert!(server.full());
    for _ in 0..VECTORS {
        let (p, fd) = recv_msg(a.as_fd()).unwrap().unwrap();
        assert_eq!(p, i64::from(b_id));
        assert!(fd.is_some());
    }

    // Its departure is announced by its id without an fd.
    drop(b);
    assert!(server.remove(b_id).is_some());
    assert!(server.remove(b_id).is_none(), "removed once");
    let (p, fd) = recv_msg(a.as_fd()).unwrap().unwrap();
    assert_eq!(p, i64::from(b_id));
    assert!(fd.is_none());
    assert!(!server.full());

    // The socket file goes with the server.
    drop(server);
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_departed_client_cannot_ring_the_next_ones_doorbell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sock");
    let shm = MappedShm::create("pvmm-test", 4096).unwrap();
    let mut server = Server::bind(&path, 1, 0, 1).unwrap();
    let a = UnixStream::connect(&path).unwrap();
    let a_id = accept(&mut server, &shm);
    let old = client_handshake(&a, 1).unwrap().peers.remove(0).1.remove(0);
    server.remove(a_id);
    drop(a);

    let b = UnixStream::connect(&path).unwrap();
    accept(&mut server, &shm);
    let sb = client_handshake(&b, 1).unwrap();
    ivshmem::notify(old.as_fd()).unwrap();
    assert_eq!(ivshmem::drain(server.host_vectors()[0].as_fd()), 0);
    ivshmem::notify(sb.peers[0].1[0].as_fd()).unwrap();
    assert_eq!(ivshmem::drain(server.host_vectors()[0].as_fd()), 1);
}

/// A slot serving one guest on a thread of its own, with `ring` and an idle
/// sleep of `idle`.
struct Slot {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    counters: std::sync::Arc<pvmm_host::stats::Counters>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Slot {
    fn start(ring: pvmm_host::ring::Config, idle: std::time::Duration) -> Slot {
        use pvmm_host::priority::Priority;
        use pvmm_host::serve::{default_allow_uids, serve, SlotConfig};
        use pvmm_host::stats::Counters;
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let server = Server::bind(&path, 1, 0, 1).unwrap();
        let counters = Arc::new(Counters::default());
        let cfg = SlotConfig {
            index: 0,
            shm_size: 64 << 10,
            layout: pvmm_wire::Layout::new(4, 8).unwrap(),
            ring,
            idle_timeout: idle,
            poll_soon: std::time::Duration::from_millis(1),
            all_counters: Arc::new(vec![Arc::clone(&counters)]),
            counters: Arc::clone(&counters),
            stats_file: None,
            priority: Priority::default(),
            allow_uids: default_allow_uids(),
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || serve(server, cfg, &stop))
        };
        Slot {
            path,
            _dir: dir,
            counters,
            stop,
            thread,
        }
    }

    /// Connects a guest and submits `reqs` (tag 1, no pages unless given),
    /// ringing once.
    fn guest(&self, reqs: &[(pvmm_wire::Op, u64, u64)]) -> (UnixStream, ClientSetup, MappedShm) {
        use pvmm_wire::{guest_attach, Header, Request, SqProducer};
        let guest = UnixStream::connect(&self.path).unwrap();
        let setup = client_handshake(&guest, 1).unwrap();
        let shm = MappedShm::map(setup.shm.try_clone().unwrap()).unwrap();
        let header = Header::read(&shm).unwrap();
        guest_attach(&shm, header.features);
        let mut sq = SqProducer::resume(header.layout, &shm);
        for &(op, space, pages) in reqs {
            let r = Request {
                op,
                tag: 1,
                space,
                pages,
            };
            sq.push(&shm, &r).unwrap();
        }
        sq.publish(&shm);
        ivshmem::notify(setup.peers[0].1[0].as_fd()).unwrap();
        (guest, setup, shm)
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap().unwrap();
    }
}

fn wait_for(what: &str, f: &dyn Fn() -> bool) -> std::time::Duration {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "waited for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    t.elapsed()
}

/// A guest that hangs up while its slot works on a long DESTROY is noticed
/// within the round, not after it.
#[test]
fn a_hang_up_is_noticed_during_a_long_round() {
    use pvmm_host::ring::Config;
    use pvmm_wire::Op;
    use std::time::Duration;

    // One DESTROY is 10 s of CPU time.
    let ring = Config {
        cost_base_us: 10_000_000,
        ..Config::default()
    };
    let slot = Slot::start(ring, Duration::from_millis(50));
    let reqs = [(Op::Create, 1, 0), (Op::Create, 2, 0), (Op::Destroy, 1, 0)];
    let (guest, setup, shm) = slot.guest(&reqs);
    let counters = &slot.counters;
    wait_for("the CREATEs", &|| counters.snapshot().creates == 2);
    std::thread::sleep(Duration::from_millis(50));

    drop((guest, setup, shm));
    let took = wait_for("the hang-up", &|| counters.snapshot().objects_dropped == 1);
    assert!(
        took < Duration::from_secs(2),
        "hang-up noticed after {took:?}"
    );
    slot.stop();
}

/// With two lanes the worker's finished DESTROY wakes the serving loop: it
/// is published long before the idle sleep would end, with no doorbell.
#[test]
fn a_finished_destroy_wakes_the_slot() {
    use pvmm_host::priority::Priority;
    use pvmm_host::ring::Config;
    use pvmm_wire::{CqConsumer, Header, Op};
    use std::time::Duration;

    // 100 ms of CPU time per DESTROY.
    let ring = Config {
        cost_base_us: 100_000,
        destroy_worker: Some(Priority::default()),
        ..Config::default()
    };
    let slot = Slot::start(ring, Duration::from_secs(10));
    let (guest, setup, shm) = slot.guest(&[(Op::Create, 1, 0), (Op::Destroy, 1, 0)]);
    let mut cq = CqConsumer::resume(Header::read(&shm).unwrap().layout, &shm);
    let t = std::time::Instant::now();
    let mut got = Vec::new();
    while got.len() < 2 && t.elapsed() < Duration::from_secs(5) {
        while let Some(c) = cq.pop(&shm).unwrap() {
            got.push(c.unwrap().op);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(got, [Op::Create, Op::Destroy], "after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop((guest, setup, shm));
    slot.stop();
}
