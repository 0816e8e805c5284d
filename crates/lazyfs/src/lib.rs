//! # raftkv-lazyfs: a file system that loses what was not fsynced
//!
//! `kill -9` leaves a dead process's writes in the page cache, so no process test can tell whether a
//! node skipped an `fsync`. This FUSE file system (LazyFS-style) keeps every file and directory in
//! memory twice: as the processes see it, and as a disk holds it after the last `fsync`.
//! [`LazyFs::power_loss`] throws away, under the given directories, what was not made durable:
//!
//! - a file's contents are durable through `fsync`/`fdatasync` of the file; of the writes made since,
//!   a random prefix survives (a disk may write some on its own), the last one perhaps torn at a
//!   512-byte boundary;
//! - a directory's entries (creations, renames, removals) are durable through `fsync` of the
//!   directory, as POSIX requires: a file created, renamed or removed since comes back as it was.
//!
//! It does not model reordered writes within a file, lost metadata such as sizes set by a sync of a
//! neighbouring file, or an fsync that fails. An unlinked file stays readable through an open
//! descriptor only until its removal is durable. Everything lives in memory; it is for tests.
//! Mounting needs root (or `fusermount3`) and `/dev/fuse`.
//!
//! It owns that file system and nothing else: no knowledge of raftkv's files.

mod fuse;
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

/// Why this machine cannot mount it, or `None` if it can: tried for real, on a scratch directory.
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    let dir = std::env::temp_dir().join(format!("raftkv-lazyfs-probe-{}", std::process::id()));
    if let Err(err) = std::fs::create_dir_all(&dir) {
        return Some(format!("{}: {err}", dir.display()));
    }
    let mounted = LazyFs::mount(&dir, 0).map(drop);
    let _ = std::fs::remove_dir(&dir);
    mounted.err().map(|err| format!("cannot mount FUSE: {err}"))
}

impl LazyFs {
    /// Mounts an empty file system on `mountpoint` (an existing directory); `seed` decides which
    /// unsynced writes survive each power loss.
    pub fn mount(mountpoint: &Path, seed: u64) -> std::io::Result<LazyFs> {
        let tree = Arc::new(Mutex::new(Tree::new(seed)));
        let options = [
            fuser::MountOption::FSName("raftkv-lazyfs".into()),
            fuser::MountOption::RW,
        ];
        let session = fuser::spawn_mount2(fuse::Fuse(tree.clone()), mountpoint, &options)?;
        Ok(LazyFs {
            mountpoint: mountpoint.to_path_buf(),
            tree,
            _session: session,
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Power loss under `dirs` (paths inside the mount): everything below them goes back to what was
    /// durable (see the crate's documentation). The processes using them must be dead already (a live one would keep
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
