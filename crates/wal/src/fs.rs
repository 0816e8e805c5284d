//! The few file-system operations the log uses, behind the [`Fs`] trait: [`RealFs`] in production, and
//! [`crate::sim_fs::SimFs`], which loses or tears un-synced writes on demand, in this crate's crash and
//! property tests and in the cluster simulator (`crates/sim`, through `Wal::open_with_fs`).

use std::any::Any;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

/// A file opened for writing at a cursor: each write goes where the previous one ended, overwriting what
/// is there (the zeros of a pre-allocated segment) or extending the file.
pub trait WalFile: Send + Debug {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: the written bytes (and the file size) are durable when this returns.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Held for as long as the data directory is in use; dropping it releases the lock.
pub type LockGuard = Box<dyn Any + Send>;

pub trait Fs: Send + Sync + Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files directly inside `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Creates `path`, or empties it if it exists, for writing from its start.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file for writing from byte `offset` on, keeping its contents and size.
    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn WalFile>>;
    /// Sets the file's length to `len` bytes and makes it, and everything written to the file before,
    /// durable (`set_len` + `fsync`).
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive advisory lock on `path` (created if absent); `None` if someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;
    /// Whether slow preparatory work (zero-filling the next segment) may run on a background thread.
    /// The simulated file system says no: the crash tests and the cluster simulator that run on it replay a
    /// run from its seed, which needs every operation in a deterministic order.
    fn allows_background_work(&self) -> bool {
        false
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl WalFile for RealFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn WalFile>> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(RealFile(file)))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        // The pid is only a hint for whoever finds the directory busy; the lock itself is the flock.
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Some(Box::new(file)))
    }

    fn allows_background_work(&self) -> bool {
        true
    }
}

/// TEST ONLY: the real file system with every fsync skipped (`unsafe_skip_fsync` in a cluster file).
/// Writes are acknowledged while they sit in the page cache; a power loss then loses them. It exists
/// to prove that the power-loss tests catch exactly that (`raftkv-chaos --unsafe-skip-fsync`).
#[derive(Clone, Copy, Debug, Default)]
pub struct UnsyncedFs;

/// A real file whose syncs do nothing.
#[derive(Debug)]
struct UnsyncedFile(Box<dyn WalFile>);

impl WalFile for UnsyncedFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Fs for UnsyncedFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        RealFs.list_dir(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        RealFs.read(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        RealFs.file_len(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(UnsyncedFile(RealFs.create(path)?)))
    }

    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(UnsyncedFile(RealFs.open_at(path, offset)?)))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        RealFs.try_lock(path)
    }

    fn allows_background_work(&self) -> bool {
        true
    }
}
