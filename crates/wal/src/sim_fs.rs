//! An in-memory file system that models what a crash does to un-synced data, for crash tests and the
//! cluster simulator.
//!
//! Each file keeps the bytes written so far and, separately, the bytes known durable (as of its last
//! `sync_data`), plus the writes made since then, in order; each directory entry likewise has a current and
//! a durable version (as of the last `sync_dir`). [`SimFs::fail_after`] makes the n-th mutating operation
//! fail and the "machine" die: every later call fails until [`SimFs::crash`], which keeps the durable state
//! and, chosen from a seed, a random part of the rest: for each file, the first few of its un-synced writes
//! whole and a prefix of the next one, whose last part may be lost (there the file shows what it held before
//! the write: the zeros of a pre-allocated segment, or zeros past the old end of the file), and possibly
//! zeros appended (a size update without the data); a file emptied by `create` keeps either its durable or
//! its current contents; directory changes since the last `sync_dir` are kept or undone one by one.
//! Writes reach the disk in order within a file (later writes never survive an earlier lost one): the same
//! assumption the torn-tail rule makes (see `docs/storage.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{Fs, LockGuard, WalFile};

#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

type InodeId = u64;

#[derive(Debug, Default)]
struct SimState {
    inodes: BTreeMap<InodeId, Inode>,
    next_inode: InodeId,
    names: BTreeMap<PathBuf, InodeId>,
    durable_names: BTreeMap<PathBuf, InodeId>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    /// Bumped by every crash so that lock guards from before it release nothing.
    generation: u64,
    mutations: u64,
    fail_at: Option<u64>,
    dead: bool,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: `(offset, bytes)`. Replaying them over `durable` gives `data`
    /// (unless `emptied`).
    unsynced: Vec<(usize, Vec<u8>)>,
    /// `create` emptied the file since the last sync: a crash keeps either `durable` or `data` whole.
    emptied: bool,
}

/// Writes `bytes` at `offset` of `data`, zero-filling any gap past its end.
fn write_at(data: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset..end].copy_from_slice(bytes);
}

fn dead_error() -> io::Error {
    io::Error::other("simulated machine crash")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

/// SplitMix64: enough randomness for choosing crash outcomes, and replayable from the seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

impl SimState {
    /// Counts a mutating operation and decides whether the machine dies at it.
    fn mutate(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(dead_error());
        }
        self.mutations += 1;
        if self.fail_at == Some(self.mutations) {
            self.dead = true;
            return Err(dead_error());
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(dead_error())
        } else {
            Ok(())
        }
    }

    fn inode_mut(&mut self, path: &Path) -> io::Result<&mut Inode> {
        let id = *self.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(self
            .inodes
            .get_mut(&id)
            .expect("names point at live inodes"))
    }

    fn inode(&self, path: &Path) -> io::Result<&Inode> {
        let id = *self.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(&self.inodes[&id])
    }
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Mutating operations performed so far (writes, syncs, creations, renames, removals, truncations).
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// The machine dies at the `n`-th mutating operation from now (`n >= 1`): it fails, and so does every
    /// call after it until [`SimFs::crash`].
    pub fn fail_after(&self, n: u64) {
        let mut state = self.lock();
        state.fail_at = Some(state.mutations + n);
    }

    /// Cancels a failure armed with [`SimFs::fail_after`] that has not happened yet.
    pub fn cancel_failure(&self) {
        self.lock().fail_at = None;
    }

    /// Whether the machine has died (a fault point was reached).
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Simulates the power coming back: keeps what was durable plus a seeded random part of the rest, and
    /// forgets every lock.
    pub fn crash(&self, seed: u64) {
        let mut rng = SplitMix64(seed);
        let mut state = self.lock();
        let changed: BTreeSet<PathBuf> = state
            .names
            .iter()
            .filter(|(path, id)| state.durable_names.get(*path) != Some(id))
            .map(|(path, _)| path.clone())
            .chain(
                state
                    .durable_names
                    .keys()
                    .filter(|path| !state.names.contains_key(*path))
                    .cloned(),
            )
            .collect();
        for path in changed {
            let keep_new = rng.chance(2);
            let chosen = if keep_new {
                state.names.get(&path)
            } else {
                state.durable_names.get(&path)
            }
            .copied();
            match chosen {
                Some(id) => {
                    state.names.insert(path.clone(), id);
                    state.durable_names.insert(path, id);
                }
                None => {
                    state.names.remove(&path);
                    state.durable_names.remove(&path);
                }
            }
        }
        for inode in state.inodes.values_mut() {
            let survived = if inode.emptied {
                if rng.chance(2) {
                    inode.data.clone()
                } else {
                    inode.durable.clone()
                }
            } else {
                let mut bytes = inode.durable.clone();
                let writes = inode.unsynced.len();
                let whole = rng.between(0, writes);
                for (offset, written) in &inode.unsynced[..whole] {
                    write_at(&mut bytes, *offset, written);
                }
                if let Some((offset, written)) = inode.unsynced.get(whole) {
                    // A prefix reached the disk; of that, the last sectors may not have: the file then
                    // shows its old bytes there, or zeros where it grew (the size made it, the data did not).
                    let kept = rng.between(0, written.len());
                    let landed = if kept > 0 && rng.chance(3) {
                        rng.between(0, kept)
                    } else {
                        kept
                    };
                    write_at(&mut bytes, *offset, &written[..landed]);
                    if bytes.len() < offset + kept {
                        bytes.resize(offset + kept, 0);
                    }
                }
                if inode.data.len() > inode.durable.len() && writes > 0 && rng.chance(4) {
                    let zeros = rng.between(1, 600);
                    bytes.resize(bytes.len() + zeros, 0);
                }
                bytes
            };
            inode.durable = survived.clone();
            inode.data = survived;
            inode.unsynced.clear();
            inode.emptied = false;
        }
        state.locks.clear();
        state.generation += 1;
        state.dead = false;
        state.fail_at = None;
    }

    /// Flips one bit of a file, durably: bit rot, or a bug in some other program.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        let mut state = self.lock();
        let inode = state.inode_mut(path).expect("flip_bit: no such file");
        let offset = offset as usize;
        inode.data[offset] ^= 1 << bit;
        if offset < inode.durable.len() {
            inode.durable[offset] ^= 1 << bit;
        }
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    inode: InodeId,
    /// Where the next write goes.
    position: usize,
}

impl SimFile {
    /// Counts one mutating operation (which may be the one that kills the machine), then changes
    /// this file's inode.
    fn mutate_inode(&self, change: impl FnOnce(&mut Inode)) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.mutate()?;
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .expect("open files keep their inode");
        change(inode);
        Ok(())
    }
}

impl WalFile for SimFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let position = self.position;
        self.mutate_inode(|inode| {
            write_at(&mut inode.data, position, bytes);
            inode.unsynced.push((position, bytes.to_vec()));
        })?;
        self.position += bytes.len();
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.mutate_inode(|inode| {
            inode.durable = inode.data.clone();
            inode.unsynced.clear();
            inode.emptied = false;
        })
    }
}

struct SimLock {
    fs: SimFs,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.fs.lock();
        if state.generation == self.generation {
            state.locks.remove(&self.path);
        }
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.alive()?;
        state.dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.alive()?;
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        state.alive()?;
        Ok(state.inode(path)?.data.clone())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.lock();
        state.alive()?;
        Ok(state.inode(path)?.data.len() as u64)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let mut state = self.lock();
        state.mutate()?;
        let id = match state.names.get(path) {
            Some(&id) => {
                let inode = state
                    .inodes
                    .get_mut(&id)
                    .expect("names point at live inodes");
                inode.data.clear();
                inode.unsynced.clear();
                inode.emptied = !inode.durable.is_empty();
                id
            }
            None => {
                let id = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(id, Inode::default());
                state.names.insert(path.to_path_buf(), id);
                id
            }
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: id,
            position: 0,
        }))
    }

    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn WalFile>> {
        let state = self.lock();
        state.alive()?;
        let id = *state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: id,
            position: offset as usize,
        }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        let inode = state.inode_mut(path)?;
        inode.data.resize(len as usize, 0);
        // The real implementation fsyncs the file, so the new length and every earlier write are durable.
        inode.durable = inode.data.clone();
        inode.unsynced.clear();
        inode.emptied = false;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        let id = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        let state = &mut *state;
        state
            .durable_names
            .retain(|path, _| path.parent() != Some(dir));
        for (path, id) in &state.names {
            if path.parent() == Some(dir) {
                state.durable_names.insert(path.clone(), *id);
            }
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let mut state = self.lock();
        state.alive()?;
        if !state.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_path_buf(),
            generation: state.generation,
        })))
    }
}
