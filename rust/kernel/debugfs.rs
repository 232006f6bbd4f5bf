// SPDX-License-Identifier: GPL-2.0

//! Debugfs directories and files.
//!
//! A [`Dir`] is a debugfs directory; a [`File`] is a file in it that owns its data: read-only
//! files show it through [`Writer`], which every [`core::fmt::Display`] type is, and read-write
//! files also parse what is written to them through [`Reader`]. Both are removed when dropped.
//!
//! Following kernel convention, debugfs errors are not reported to the caller: a directory or
//! file that could not be created is simply absent, and everything still works otherwise
//! (children of a missing directory are missing too). Only allocation of the per-file state can
//! fail [`Dir::read_only_file`] and [`Dir::read_write_file`].
//!
//! Lifetime: files are created with `debugfs_create_file()`, i.e. behind debugfs' full proxy,
//! which takes a reference on the file around every `open`/`read`/`write`/`llseek` call. Removing
//! the file (`debugfs_remove()`) makes new calls fail with `EIO` and waits until the running ones
//! have returned. A [`File`] therefore removes the dentry first and only then releases its
//! `Arc<T>`: no callback can see `T` after that. The file operations themselves are a `static`
//! in the kernel image, not in the module, because an open file descriptor reaches them again on
//! `close()`, possibly after the module is gone.
//!
//! A directory is removed only after all of its children have been dropped: each child holds a
//! reference to its parent. Dropping the last handle removes the directory recursively.
//!
//! Without `CONFIG_DEBUG_FS` nothing is created, as with the C stubs, and everything else works
//! the same.
//!
//! This is a local stand-in, for Linux 6.12, for the `debugfs` module of later kernels (6.18),
//! with its names: `Dir`, `File`, `read_only_file`, `read_write_file`, `Writer`, `Reader`.
//! Upstream's files take an in-place initialiser of their data and are pinned, and `Reader`
//! reads from a user slice; here the data is boxed and `Reader` gets the copied bytes.
//!
//! C header: [`include/linux/debugfs.h`](srctree/include/linux/debugfs.h)

use crate::{
    alloc::KVec,
    bindings,
    error::from_err_ptr,
    ffi::{c_char, c_void},
    page::PAGE_SIZE,
    prelude::*,
    str::CStr,
    sync::Arc,
    uaccess::UserSlice,
};
use core::{fmt, ptr};

/// The three debugfs calls used here; without debugfs they are `static inline` stubs in C,
/// which bindgen does not see, so they are stubbed here the same way.
#[cfg(CONFIG_DEBUG_FS)]
mod raw {
    pub(super) use crate::bindings::{debugfs_create_dir, debugfs_create_file, debugfs_remove};
}

#[cfg(not(CONFIG_DEBUG_FS))]
mod raw {
    use crate::{
        bindings::{dentry, file_operations, umode_t},
        ffi::{c_char, c_void},
    };
    use core::ptr;

    /// Creates nothing; null is treated as failure.
    ///
    /// # Safety
    ///
    /// None needed: `unsafe` only to match the C function it stands in for.
    pub(super) unsafe fn debugfs_create_dir(_: *const c_char, _: *mut dentry) -> *mut dentry {
        ptr::null_mut()
    }

    /// Creates nothing; null is treated as failure.
    ///
    /// # Safety
    ///
    /// As for [`debugfs_create_dir`].
    pub(super) unsafe fn debugfs_create_file(
        _: *const c_char,
        _: umode_t,
        _: *mut dentry,
        _: *mut c_void,
        _: *const file_operations,
    ) -> *mut dentry {
        ptr::null_mut()
    }

    /// Never called: nothing was created.
    ///
    /// # Safety
    ///
    /// As for [`debugfs_create_dir`].
    pub(super) unsafe fn debugfs_remove(_: *mut dentry) {}
}

/// A debugfs dentry that is removed when the last reference goes.
///
/// # Invariants
///
/// `dentry` was returned by a successful `debugfs_create_*()` call and has not been removed.
/// While `parent` is alive, so is the directory that contains `dentry`.
struct Entry {
    dentry: *mut bindings::dentry,
    _parent: Option<Arc<Entry>>,
}

// SAFETY: A dentry pointer can be passed to `debugfs_remove()` from any thread.
unsafe impl Send for Entry {}

// SAFETY: `&Entry` only gives the dentry pointer to debugfs functions that do their own locking.
unsafe impl Sync for Entry {}

impl Entry {
    /// Wraps the result of a `debugfs_create_*()` call; `None` if it failed.
    fn new(dentry: *mut bindings::dentry, parent: Option<Arc<Entry>>) -> Option<Self> {
        let dentry = from_err_ptr(dentry).ok()?;
        if dentry.is_null() {
            return None;
        }
        // INVARIANT: `dentry` was just created; `parent` is the directory it was created in.
        Some(Self {
            dentry,
            _parent: parent,
        })
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, `dentry` is a live debugfs dentry. For a file this waits
        // for running file operations; for a directory, its children are already gone, since
        // each of them holds a reference to this entry.
        unsafe { raw::debugfs_remove(self.dentry) };
    }
}

/// A debugfs directory, removed when this handle and all of its children are dropped.
///
/// Created in process context; `Dir` is [`Send`] and [`Sync`], and creating children through a
/// shared reference needs no locking (debugfs locks internally).
///
/// # Examples
///
/// ```
/// use core::{
///     fmt,
///     sync::atomic::{AtomicU32, Ordering::Relaxed},
/// };
/// use kernel::{c_str, debugfs::{Dir, Reader}, prelude::*};
///
/// // A counter that shows its value and is reset by writing "0".
/// struct Counter(AtomicU32);
///
/// impl fmt::Display for Counter {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         writeln!(f, "{}", self.0.load(Relaxed))
///     }
/// }
///
/// impl Reader for Counter {
///     fn read_from_slice(&self, input: &[u8]) -> Result {
///         match input.strip_suffix(b"\n").unwrap_or(input) {
///             b"0" => {
///                 self.0.store(0, Relaxed);
///                 Ok(())
///             }
///             _ => Err(EINVAL),
///         }
///     }
/// }
///
/// let dir = Dir::new(c_str!("rust_doctest_debugfs"));
/// let version = dir.read_only_file(c_str!("version"), 3u32)?;
/// let counter = dir.read_write_file(c_str!("counter"), Counter(AtomicU32::new(0)))?;
/// // The directory stays until its last file is gone.
/// drop(dir);
/// drop(counter);
/// drop(version);
/// # Ok::<(), Error>(())
/// ```
pub struct Dir {
    entry: Option<Arc<Entry>>,
}

impl Dir {
    /// Creates directory `name` at the debugfs root.
    pub fn new(name: &CStr) -> Dir {
        // SAFETY: `name` is NUL-terminated and copied by debugfs; a null parent is the root.
        let dentry = unsafe { raw::debugfs_create_dir(name.as_char_ptr(), ptr::null_mut()) };
        let Some(entry) = Entry::new(dentry, None) else {
            return Dir { entry: None };
        };
        // Dropping `entry` on allocation failure removes the directory again.
        Dir {
            entry: Arc::new(entry, GFP_KERNEL).ok(),
        }
    }

    /// Creates the read-only (`0444`) file `name` inside `self`, which shows `data` as its
    /// [`Writer`] (any [`fmt::Display`]) renders it.
    ///
    /// Fails only with `ENOMEM`; if debugfs cannot create the file, the returned [`File`] holds
    /// `data` without a dentry.
    pub fn read_only_file<T>(&self, name: &CStr, data: T) -> Result<File<T>>
    where
        T: Writer + Send + Sync + 'static,
    {
        self.file(name, 0o444, data, None)
    }

    /// Creates the read-write (`0644`) file `name` inside `self`, which shows `data` as
    /// [`Dir::read_only_file`] does and hands what is written to it to its [`Reader`].
    pub fn read_write_file<T>(&self, name: &CStr, data: T) -> Result<File<T>>
    where
        T: Writer + Reader + Send + Sync + 'static,
    {
        self.file(name, 0o644, data, Some(store_shim::<T>))
    }

    fn file<T>(&self, name: &CStr, mode: u16, data: T, store: Option<StoreFn>) -> Result<File<T>>
    where
        T: Writer + Send + Sync + 'static,
    {
        let data = KBox::new(data, GFP_KERNEL)?;
        let data_ptr: *const T = &*data;
        let node = KBox::new(
            Node {
                data: data_ptr.cast(),
                show: show_shim::<T>,
                store,
            },
            GFP_KERNEL,
        )?;
        let entry = match &self.entry {
            Some(parent) => {
                let node_ptr: *const Node = &*node;
                // SAFETY: `name` is NUL-terminated and copied; `parent` keeps the directory
                // alive; `node` stays at this address until the `File` drops it, after the
                // dentry is removed; `FILE_OPS` is `'static`.
                let dentry = unsafe {
                    raw::debugfs_create_file(
                        name.as_char_ptr(),
                        mode,
                        parent.dentry,
                        node_ptr.cast_mut().cast(),
                        &FILE_OPS.0,
                    )
                };
                Entry::new(dentry, Some(parent.clone()))
            }
            None => None,
        };
        Ok(File {
            _entry: entry,
            _node: node,
            _data: data,
        })
    }
}

/// What a debugfs file shows: implemented for everything that is [`fmt::Display`].
///
/// Called in process context for each `read()`, possibly from several readers at once, so a
/// reader that uses several calls can see content from different moments; readers that want a
/// snapshot read at least one page at a time (as `cat` does). May sleep.
pub trait Writer {
    /// Writes the whole content of the file.
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl<T: fmt::Display + ?Sized> Writer for T {
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a writable debugfs file does with what is written to it.
///
/// Called in process context, possibly concurrently with reads and other writes; use interior
/// mutability with proper synchronisation for state.
pub trait Reader {
    /// Handles one `write()` call with its `input`, at most one page long; the file offset is
    /// ignored. May sleep.
    fn read_from_slice(&self, input: &[u8]) -> Result;
}

/// A debugfs file that owns its data, removed on drop.
///
/// Holds `data` until the file is removed and all running reads and writes have returned, so
/// the callbacks never see a dropped `T`. Drop it in process context (removal may sleep).
pub struct File<T> {
    // Field order is drop order: the dentry goes first.
    _entry: Option<Entry>,
    _node: KBox<Node>,
    _data: KBox<T>,
}

/// Type-erased per-file state; debugfs hands a pointer to it to the file operations.
///
/// # Invariants
///
/// `data` points to the `T` that `show` and `store` were instantiated for, alive as long as the
/// node is reachable from a dentry.
struct Node {
    data: *const c_void,
    show: unsafe fn(*const c_void, &mut Buffer) -> fmt::Result,
    /// `None` for a read-only file.
    store: Option<StoreFn>,
}

/// The type-erased [`Reader::read_from_slice`] of a file's data.
type StoreFn = unsafe fn(*const c_void, &[u8]) -> Result;

// SAFETY: `data` points to a `T` that is `Send + Sync`; the rest are function pointers.
unsafe impl Send for Node {}

// SAFETY: As for `Send`; the node is never mutated after creation.
unsafe impl Sync for Node {}

/// Renders a [`Writer`] with `{}`.
struct Shown<'a, T>(&'a T);

impl<T: Writer> fmt::Display for Shown<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write(f)
    }
}

/// # Safety
///
/// `data` must point to a live `T`.
unsafe fn show_shim<T: Writer>(data: *const c_void, w: &mut Buffer) -> fmt::Result {
    // SAFETY: Guaranteed by the caller.
    let data = unsafe { &*data.cast::<T>() };
    fmt::Write::write_fmt(w, format_args!("{}", Shown(data)))
}

/// # Safety
///
/// `data` must point to a live `T`.
unsafe fn store_shim<T: Reader>(data: *const c_void, input: &[u8]) -> Result {
    // SAFETY: Guaranteed by the caller.
    unsafe { &*data.cast::<T>() }.read_from_slice(input)
}

/// The growable kernel buffer a file is rendered into.
struct Buffer {
    buf: KVec<u8>,
    oom: bool,
}

impl fmt::Write for Buffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| {
                self.oom = true;
                fmt::Error
            })
    }
}

/// The file operations of every [`File`]: in the kernel image, since a `close()` after the
/// module is gone still reads them (the debugfs proxy's `release`).
struct FileOps(bindings::file_operations);

// SAFETY: Immutable after compilation; only read by the VFS.
unsafe impl Sync for FileOps {}

static FILE_OPS: FileOps = FileOps(bindings::file_operations {
    // Copies `i_private` (the `Node`) to `file->private_data`.
    open: Some(bindings::simple_open),
    read: Some(file_read),
    write: Some(file_write),
    llseek: Some(bindings::default_llseek),
    // SAFETY: All-zero is a valid `file_operations` (no callback, no owner).
    ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
});

/// Maps a Rust error to a `read`/`write` return value.
fn err_ret(e: Error) -> isize {
    e.to_errno() as isize
}

/// # Safety
///
/// Only as `file_operations::read` of a file created by [`Dir::file`].
unsafe extern "C" fn file_read(
    file: *mut bindings::file,
    ubuf: *mut c_char,
    count: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: `simple_open` stored the `Node` in `private_data`; the proxy keeps the dentry, and
    // so the `Node` and its data, alive during this call.
    let node = unsafe { &*(*file).private_data.cast::<Node>() };
    let mut w = Buffer {
        buf: KVec::new(),
        oom: false,
    };
    // SAFETY: By the invariant of `Node`, `data` is the live `T` that `show` expects.
    if unsafe { (node.show)(node.data, &mut w) }.is_err() {
        return err_ret(if w.oom { ENOMEM } else { EIO });
    }
    // SAFETY: `ubuf`/`count`/`ppos` come from the VFS; the source is `w.buf`, valid for
    // `w.buf.len()` bytes until it is dropped after the copy.
    // This copies the part at `*ppos` and advances it, so sequential reads see everything.
    unsafe {
        bindings::simple_read_from_buffer(
            ubuf.cast(),
            count,
            ppos,
            w.buf.as_ptr().cast(),
            w.buf.len(),
        )
    }
}

/// # Safety
///
/// Only as `file_operations::write` of a file created by [`Dir::file`].
unsafe extern "C" fn file_write(
    file: *mut bindings::file,
    ubuf: *const c_char,
    count: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: As in `file_read`.
    let node = unsafe { &*(*file).private_data.cast::<Node>() };
    if count > PAGE_SIZE {
        return err_ret(EINVAL);
    }
    let mut input = KVec::new();
    if let Err(e) = UserSlice::new(ubuf as usize, count).read_all(&mut input, GFP_KERNEL) {
        return err_ret(e);
    }
    let Some(store) = node.store else {
        // Read-only: root could otherwise bypass the file mode.
        return err_ret(EPERM);
    };
    // SAFETY: By the invariant of `Node`, `data` is the live `T` that `store` expects.
    match unsafe { store(node.data, &input) } {
        // At most a page, so it fits.
        Ok(()) => count as isize,
        Err(e) => err_ret(e),
    }
}
