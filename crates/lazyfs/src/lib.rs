//! # raftkv-lazyfs: a file system that loses what was not fsynced
//!
//! `kill -9` leaves a dead process's writes in the page cache, so no process test can tell whether a
//! node skipped an `fsync`. This FUSE file system (LazyFS-style) keeps every file in memory twice: as
//! the processes see it, and as a disk would have it after the last `fsync`/`fdatasync` of that file.
//! [`LazyFs::power_loss`] throws away, under the given directories, everything written since: files
//! fall back to their last synced contents, exactly what a machine that lost power would find.
//!
//! Model and limits: file data is durable only through `fsync`/`fdatasync` of the file; directory
//! operations (create, rename, unlink, mkdir) are durable at once, like a journaling file system's
//! metadata, so a file created and never synced comes back empty, not absent. Every open uses direct
//! I/O, so no stale page survives a power loss in the kernel's cache. Everything lives in memory; it
//! is for tests. Mounting needs root (or `fusermount3`) and `/dev/fuse`.
//!
//! It owns that file system and nothing else: no knowledge of raftkv's files.

mod tree;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use tree::Tree;

/// A mounted lazy file system; unmounted when dropped.
pub struct LazyFs {
    mountpoint: PathBuf,
    tree: Arc<Mutex<Tree>>,
    _session: fuser::BackgroundSession,
}

/// Why this machine cannot mount it, or `None` if it can (as far as can be told without trying).
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    None
}

impl LazyFs {
    /// Mounts an empty file system on `mountpoint` (an existing directory).
    pub fn mount(mountpoint: &Path) -> std::io::Result<LazyFs> {
        let tree = Arc::new(Mutex::new(Tree::new()));
        let options = [
            fuser::MountOption::FSName("raftkv-lazyfs".into()),
            fuser::MountOption::RW,
        ];
        let session = fuser::spawn_mount2(tree::Fuse(tree.clone()), mountpoint, &options)?;
        Ok(LazyFs {
            mountpoint: mountpoint.to_path_buf(),
            tree,
            _session: session,
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Power loss under `dirs` (paths inside the mount): every file below them goes back to what its
    /// last fsync made durable. The processes using them must be dead already (a live one would keep
    /// writing into the past). `Err` if a directory is not in this file system.
    pub fn power_loss(&self, dirs: &[PathBuf]) -> Result<(), String> {
        let mut tree = self.tree.lock().map_err(|_| "the file system panicked")?;
        for dir in dirs {
            let inside = dir.strip_prefix(&self.mountpoint).map_err(|_| {
                format!(
                    "{} is not under {}",
                    dir.display(),
                    self.mountpoint.display()
                )
            })?;
            tree.power_loss(inside)?;
        }
        Ok(())
    }

    /// Bytes written and not yet synced, over the whole file system.
    pub fn unsynced_bytes(&self) -> u64 {
        self.tree.lock().map_or(0, |tree| tree.unsynced_bytes())
    }
}
