// SPDX-License-Identifier: GPL-2.0

//! QEMU's ivshmem server protocol (docs/specs/ivshmem-spec.rst), server side.
//! `tests/ivshmem.rs` plays the client, as QEMU does.
//!
//! Every message is a little-endian `i64`, some with one file descriptor
//! attached through `SCM_RIGHTS`. On connect a client gets: the protocol
//! version (0); its own id; -1 with the shared-memory fd; for every other peer
//! its id once per vector with that vector's eventfd; and finally its own id
//! once per vector with its own eventfds. Existing clients learn of a new peer
//! the same way (its id with its eventfds) and of a departed one by its id
//! without an fd.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{eventfd, EventfdFlags};
use rustix::fs::Mode;
use rustix::net::{
    sendmsg, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

/// Protocol version of the ivshmem server protocol.
pub const PROTOCOL_VERSION: i64 = 0;
/// Largest peer id the device accepts.
pub const MAX_PEER: u16 = u16::MAX;

/// Sends one message, with an fd if given.
pub fn send_msg(sock: BorrowedFd<'_>, val: i64, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let bytes = val.to_le_bytes();
    let fds;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if let Some(fd) = fd {
        fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
    }
    let n = sendmsg(
        sock,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n != bytes.len() {
        // Unix stream sockets take small writes whole or not at all.
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(())
}

/// `n` fresh eventfds, one per interrupt vector.
pub fn eventfds(n: u32) -> io::Result<Vec<OwnedFd>> {
    (0..n)
        .map(|_| eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(Into::into))
        .collect()
}

/// Rings an eventfd (adds 1), as a peer's doorbell write does.
pub fn notify(fd: BorrowedFd<'_>) -> io::Result<()> {
    // EAGAIN only when the counter is about to overflow: it is rung anyway.
    match rustix::io::write(fd, &1u64.to_ne_bytes()) {
        Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads and resets a non-blocking eventfd's counter; 0 if it was not rung.
pub fn drain(fd: BorrowedFd<'_>) -> u64 {
    let mut buf = [0u8; 8];
    match rustix::io::read(fd, &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

/// One connected client.
#[derive(Debug)]
pub struct Client {
    /// Its peer id.
    pub id: u16,
    /// The connection; QEMU never sends anything, so readability means hang-up.
    pub stream: UnixStream,
    /// The eventfds on which it receives interrupts, one per vector.
    pub vectors: Vec<OwnedFd>,
}

/// An ivshmem server on one socket, with this process as a peer of its own.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    vectors: u32,
    host_id: u16,
    host_vectors: Vec<OwnedFd>,
    clients: Vec<Client>,
    next_id: u16,
    max_clients: usize,
}

impl Server {
    /// Listens on `path`, removing a stale socket file there first. The host is
    /// peer `host_id` with `vectors` eventfds; clients get ids from `host_id + 1`.
    /// The socket file is mode 0600 ([`listen_private`]).
    pub fn bind(path: &Path, vectors: u32, host_id: u16, max_clients: usize) -> io::Result<Server> {
        remove_stale_socket(path)?;
        let listener = listen_private(path)?;
        Ok(Server {
            listener,
            path: path.to_owned(),
            vectors,
            host_id,
            host_vectors: eventfds(vectors)?,
            clients: Vec::new(),
            next_id: host_id.wrapping_add(1),
            max_clients,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket, to poll for new connections.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The host's own eventfds, rung by clients' doorbells.
    pub fn host_vectors(&self) -> &[OwnedFd] {
        &self.host_vectors
    }

    /// Connected clients.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// Whether another client would exceed `max_clients`.
    pub fn full(&self) -> bool {
        self.clients.len() >= self.max_clients
    }

    /// Accepts one pending connection, if any.
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        match self.listener.accept() {
            Ok((s, _)) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes `stream` a client: gives it an id and eventfds, sends it the
    /// connect sequence with `shm`, and announces it to the other clients.
    pub fn add_client(&mut self, stream: UnixStream, shm: BorrowedFd<'_>) -> io::Result<u16> {
        stream.set_nonblocking(false)?;
        // A client that stops reading must not wedge the server.
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let id = self.alloc_id().ok_or(io::ErrorKind::AddrInUse)?;
        if self.clients.is_empty() {
            // Fresh doorbells for a fresh set of peers: an earlier client (or
            // anyone it passed the fds to) must not ring this one's host.
            self.host_vectors = eventfds(self.vectors)?;
        }
        let client = Client {
            id,
            stream,
            vectors: eventfds(self.vectors)?,
        };
        let s = client.stream.as_fd();
        send_msg(s, PROTOCOL_VERSION, None)?;
        send_msg(s, i64::from(id), None)?;
        send_msg(s, -1, Some(shm))?;
        // Every other peer: the host first, then other clients.
        for fd in &self.host_vectors {
            send_msg(s, i64::from(self.host_id), Some(fd.as_fd()))?;
        }
        for other in &self.clients {
            for fd in &other.vectors {
                send_msg(s, i64::from(other.id), Some(fd.as_fd()))?;
            }
        }
        // Its own vectors last.
        for fd in &client.vectors {
            send_msg(s, i64::from(id), Some(fd.as_fd()))?;
        }
        // Tell the others about it; a failing one is dropped later on hang-up.
        for other in &self.clients {
            for fd in &client.vectors {
                if let Err(e) = send_msg(other.stream.as_fd(), i64::from(id), Some(fd.as_fd())) {
                    log::warn!("peer {}: cannot announce peer {id}: {e}", other.id);
                }
            }
        }
        self.clients.push(client);
        Ok(id)
    }

    fn alloc_id(&mut self) -> Option<u16> {
        for _ in 0..=MAX_PEER {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if id != self.host_id && self.clients.iter().all(|c| c.id != id) {
                return Some(id);
            }
        }
        None
    }

    /// Drops client `id` and tells the others it is gone.
    pub fn remove(&mut self, id: u16) -> Option<Client> {
        let i = self.clients.iter().position(|c| c.id == id)?;
        let gone = self.clients.remove(i);
        for other in &self.clients {
            if let Err(e) = send_msg(other.stream.as_fd(), i64::from(id), None) {
                log::warn!("peer {}: cannot announce departure of {id}: {e}", other.id);
            }
        }
        Some(gone)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A non-blocking listening socket at `path` that only its owner (and root)
/// can connect to: connect(2) needs write permission on the socket file, and
/// nobody can connect before listen(2), so the mode is set in between. Not
/// through the umask, which is the whole process's.
fn listen_private(path: &Path) -> io::Result<UnixListener> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    let listening = rustix::fs::chmod(path, Mode::from_raw_mode(0o600))
        .and_then(|()| rustix::net::listen(&fd, 128));
    if let Err(e) = listening {
        let _ = std::fs::remove_file(path);
        return Err(e.into());
    }
    Ok(UnixListener::from(fd))
}

/// The user id of the process at the other end of `stream` when it
/// connected (`SO_PEERCRED`).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(stream)?.uid.as_raw())
}

/// Removes a socket file nobody listens on. Refuses to touch a live socket or
/// anything that is not a socket.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", path.display()),
        ));
    }
    log::info!("removing stale socket {}", path.display());
    std::fs::remove_file(path)
}
