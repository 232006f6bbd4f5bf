// SPDX-License-Identifier: GPL-2.0

//! The shared-memory window: a memfd mapped into this process.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use pvmm_wire::SharedMemory;
use rustix::fs::{
    fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create, MemfdFlags, SealFlags,
};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// A shared mapping of a memory file, accessed only through atomics.
///
/// The guest writes the same pages concurrently and may write anything, so
/// Rust references to the memory are never formed, except to atomics: every
/// access is a single atomic load or store of the size the wire format says.
#[derive(Debug)]
pub struct MappedShm {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only accessed through atomics, which are Sync, and it
// stays valid until drop; the raw pointer is what makes the type !Send/!Sync.
unsafe impl Send for MappedShm {}
// SAFETY: as above.
unsafe impl Sync for MappedShm {}

impl MappedShm {
    /// Creates a zeroed memfd of `len` bytes, seals its size and maps it.
    ///
    /// The fd goes to QEMU, and from there anyone holding it could shrink the
    /// file under our mapping (SIGBUS on the next access) or grow it; the seals
    /// forbid both, and F_SEAL_SEAL keeps them from being lifted, as vhost-user
    /// backends do with the memory they share.
    pub fn create(name: &str, len: usize) -> io::Result<MappedShm> {
        let fd = memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        ftruncate(&fd, len as u64)?;
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        MappedShm::map(fd)
    }

    /// Maps all of an existing memory file, e.g. one received from a server.
    /// The file must be a memfd sealed against shrinking: otherwise whoever
    /// else holds it could cut it under the mapping, and the next access
    /// would be a SIGBUS.
    pub fn map(fd: OwnedFd) -> io::Result<MappedShm> {
        let seals = fcntl_get_seals(&fd)?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "shared memory not sealed against shrinking",
            ));
        }
        let len = usize::try_from(fstat(&fd)?.st_size)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if len == 0 || len % 8 != 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint) aliases
        // no Rust object; the file is `len` bytes, so every mapped page is backed.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(io::ErrorKind::InvalidData)?;
        Ok(MappedShm { fd, base, len })
    }

    /// The memory file, to pass to a peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Pointer to `off` if `size` bytes there are inside the window and aligned.
    fn at(&self, off: usize, size: usize) -> Option<*const u8> {
        let end = off.checked_add(size)?;
        (end <= self.len && off % size == 0)
            .then(|| self.base.as_ptr().wrapping_add(off) as *const u8)
    }

    fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        // SAFETY: `at` checked that the 4 bytes are inside the live mapping and
        // 4-aligned (the base is page-aligned); the mapping outlives `&self`,
        // and all accesses to it are atomic.
        self.at(off, 4)
            .map(|p| unsafe { AtomicU32::from_ptr(p as *mut u32) })
    }

    fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        // SAFETY: as in `u32_at`, for 8 bytes at an 8-aligned offset.
        self.at(off, 8)
            .map(|p| unsafe { AtomicU64::from_ptr(p as *mut u64) })
    }
}

impl Drop for MappedShm {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, and no
        // reference into it outlives `&self`.
        if let Err(e) = unsafe { munmap(self.base.as_ptr().cast(), self.len) } {
            log::error!("munmap of shared memory failed: {e}");
        }
    }
}

// Little-endian hosts only: the wire format's byte order is the native one here.
#[cfg(not(target_endian = "little"))]
compile_error!("pvmm-host maps the little-endian wire format directly");

impl SharedMemory for MappedShm {
    fn size(&self) -> usize {
        self.len
    }

    fn read_u32(&self, off: usize) -> u32 {
        self.u32_at(off).map_or(0, |a| a.load(Ordering::Relaxed))
    }

    fn write_u32(&self, off: usize, val: u32) {
        if let Some(a) = self.u32_at(off) {
            a.store(val, Ordering::Relaxed)
        }
    }

    fn read_u64(&self, off: usize) -> u64 {
        self.u64_at(off).map_or(0, |a| a.load(Ordering::Relaxed))
    }

    fn write_u64(&self, off: usize, val: u64) {
        if let Some(a) = self.u64_at(off) {
            a.store(val, Ordering::Relaxed)
        }
    }

    fn load_acquire_u32(&self, off: usize) -> u32 {
        self.u32_at(off).map_or(0, |a| a.load(Ordering::Acquire))
    }

    fn store_release_u32(&self, off: usize, val: u32) {
        if let Some(a) = self.u32_at(off) {
            a.store(val, Ordering::Release)
        }
    }

    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_share_memory() {
        let a = MappedShm::create("pvmm-test", 4096).unwrap();
        let b = MappedShm::map(a.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(b.size(), 4096);
        a.write_u64(8, 0x1122_3344_5566_7788);
        assert_eq!(b.read_u32(8), 0x5566_7788);
        assert_eq!(b.read_u32(12), 0x1122_3344);
        b.store_release_u32(4092, 9);
        assert_eq!(a.load_acquire_u32(4092), 9);
    }

    #[test]
    fn bounds_and_alignment() {
        let a = MappedShm::create("pvmm-test", 4096).unwrap();
        a.write_u32(4096, 1);
        a.write_u64(4092, 1);
        a.write_u32(2, 1);
        a.write_u64(usize::MAX - 3, 1);
        assert_eq!(a.read_u32(4096), 0);
        assert_eq!(a.read_u64(4088), 0);
        assert_eq!(a.read_u64(usize::MAX), 0);
        assert_eq!(a.load_acquire_u32(usize::MAX - 1), 0);
        for off in (0..4096).step_by(8) {
            assert_eq!(a.read_u64(off), 0, "{off}");
        }
    }

    #[test]
    fn size_is_sealed() {
        let a = MappedShm::create("pvmm-test", 8192).unwrap();
        // What a peer gets: its own fd for the same file.
        let peer = a.fd().try_clone_to_owned().unwrap();
        for len in [0, 4096, 16384] {
            assert_eq!(ftruncate(&peer, len), Err(rustix::io::Errno::PERM), "{len}");
        }
        let seals = rustix::fs::fcntl_get_seals(&peer).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        assert_eq!(
            fcntl_add_seals(&peer, SealFlags::WRITE),
            Err(rustix::io::Errno::PERM),
            "the seals are sealed"
        );
        // The mapping is intact and still shared.
        let b = MappedShm::map(peer).unwrap();
        assert_eq!(b.size(), 8192);
        a.write_u64(8184, 42);
        assert_eq!(b.read_u64(8184), 42);
    }

    #[test]
    fn refuses_files_that_can_shrink() {
        let fd =
            memfd_create("pvmm-test", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        ftruncate(&fd, 4096).unwrap();
        let peer = fd.try_clone().unwrap();
        assert!(MappedShm::map(peer).is_err(), "an unsealed file was mapped");
        fcntl_add_seals(&fd, SealFlags::GROW).unwrap();
        assert!(MappedShm::map(fd.try_clone().unwrap()).is_err());
        fcntl_add_seals(&fd, SealFlags::SHRINK).unwrap();
        assert_eq!(MappedShm::map(fd).unwrap().size(), 4096);
        let file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        assert!(
            MappedShm::map(file.into()).is_err(),
            "a plain file was mapped"
        );
    }

    #[test]
    fn rejects_odd_files() {
        let fd = memfd_create("pvmm-test", MemfdFlags::CLOEXEC).unwrap();
        assert!(MappedShm::map(fd).is_err());
    }
}
