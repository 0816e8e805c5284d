//! The in-memory model: directories and files, each with what the processes see and what a disk
//! would hold after a power loss. A file's contents become durable at its `fsync`/`fdatasync`; a
//! directory's entries (creations, renames, removals) at the directory's `fsync`, as POSIX requires.
//! At a power loss each file keeps its durable contents plus a random prefix of the writes made
//! since (the last of them possibly torn at a 512-byte boundary), as a disk may have written some of
//! them on its own; each directory goes back to its durable entries.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path};
use std::time::SystemTime;

use fuser::{FileAttr, FileType};
use libc::{EEXIST, EFBIG, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};

pub const ROOT: u64 = 1;

/// Largest file: a bug that writes at an absurd offset gets `EFBIG`, not the tester's memory.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Torn writes are cut at this granularity (a disk sector).
const SECTOR: usize = 512;

/// A change to a file's contents not yet made durable.
#[derive(Debug, Clone)]
enum Unsynced {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct File {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// What happened to `current` since the last sync, in order: replayed onto `durable` at a sync.
    unsynced: Vec<Unsynced>,
}

fn apply(data: &mut Vec<u8>, change: &Unsynced) {
    match change {
        Unsynced::Write { offset, bytes } => {
            let start = *offset as usize;
            let end = start + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        Unsynced::SetLen(len) => data.resize(*len as usize, 0),
    }
}

impl File {
    fn change(&mut self, change: Unsynced) {
        apply(&mut self.current, &change);
        self.unsynced.push(change);
    }

    fn sync(&mut self) {
        for change in self.unsynced.drain(..) {
            apply(&mut self.durable, &change);
        }
        debug_assert_eq!(self.current, self.durable);
    }

    /// Keeps the durable contents and `kept` of the unsynced changes, the next one torn to
    /// `torn` sectors if it is a write.
    fn power_loss(&mut self, kept: usize, torn: usize) {
        let mut survivors: Vec<Unsynced> = self.unsynced.drain(..).collect();
        let next = survivors.get(kept).cloned();
        survivors.truncate(kept);
        if let Some(Unsynced::Write { offset, mut bytes }) = next {
            bytes.truncate(torn * SECTOR);
            if !bytes.is_empty() {
                survivors.push(Unsynced::Write { offset, bytes });
            }
        }
        for change in &survivors {
            apply(&mut self.durable, change);
        }
        self.current.clone_from(&self.durable);
    }
}

#[derive(Debug)]
enum Kind {
    Dir {
        entries: BTreeMap<OsString, u64>,
        /// The entries as of the directory's last fsync.
        durable: BTreeMap<OsString, u64>,
    },
    File(File),
}

#[derive(Debug)]
struct Inode {
    kind: Kind,
    perm: u16,
    mtime: SystemTime,
}

/// A small seeded generator (SplitMix64): power losses replay from the mount's seed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((u128::from(z ^ (z >> 31)) * u128::from(n.max(1))) >> 64) as u64
    }
}

/// The whole file system's state.
#[derive(Debug)]
pub struct Tree {
    inodes: HashMap<u64, Inode>,
    next: u64,
    rng: Rng,
}

impl Tree {
    /// An empty tree; `seed` decides which unsynced writes survive each power loss.
    pub fn new(seed: u64) -> Tree {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                kind: Kind::Dir {
                    entries: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                perm: 0o755,
                mtime: SystemTime::now(),
            },
        );
        Tree {
            inodes,
            next: ROOT + 1,
            rng: Rng(seed),
        }
    }

    pub fn attr(&self, ino: u64) -> Option<FileAttr> {
        let inode = self.inodes.get(&ino)?;
        let (kind, size, nlink) = match &inode.kind {
            Kind::Dir { .. } => (FileType::Directory, 0, 2),
            Kind::File(file) => (FileType::RegularFile, file.current.len() as u64, 1),
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: inode.mtime,
            mtime: inode.mtime,
            ctime: inode.mtime,
            crtime: inode.mtime,
            kind,
            perm: inode.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    pub fn set_perm(&mut self, ino: u64, perm: u16) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.perm = perm;
        }
    }

    /// The directory's current entries, with each child's type.
    pub fn list(&self, ino: u64) -> Result<Vec<(OsString, u64, FileType)>, i32> {
        Ok(self
            .entries(ino)?
            .iter()
            .map(|(name, &child)| {
                let kind = match self.inodes.get(&child).map(|inode| &inode.kind) {
                    Some(Kind::Dir { .. }) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                (name.clone(), child, kind)
            })
            .collect())
    }

    fn entries(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, i32> {
        match &self.inodes.get(&ino).ok_or(ENOENT)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            Kind::File(_) => Err(ENOTDIR),
        }
    }

    fn entries_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, i32> {
        match &mut self.inodes.get_mut(&ino).ok_or(ENOENT)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            Kind::File(_) => Err(ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut File, i32> {
        match &mut self.inodes.get_mut(&ino).ok_or(ENOENT)?.kind {
            Kind::File(file) => Ok(file),
            Kind::Dir { .. } => Err(EISDIR),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, i32> {
        self.entries(parent)?.get(name).copied().ok_or(ENOENT)
    }

    /// Creates a file or directory `name` in `parent`; its inode.
    pub fn make(&mut self, parent: u64, name: &OsStr, dir: bool, perm: u16) -> Result<u64, i32> {
        if self.entries(parent)?.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let kind = if dir {
            Kind::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            }
        } else {
            Kind::File(File::default())
        };
        self.inodes.insert(
            ino,
            Inode {
                kind,
                perm,
                mtime: SystemTime::now(),
            },
        );
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), i32> {
        let ino = self.lookup(parent, name)?;
        match (&self.inodes[&ino].kind, dir) {
            (Kind::Dir { entries, .. }, true) if !entries.is_empty() => return Err(ENOTEMPTY),
            (Kind::Dir { .. }, false) => return Err(EISDIR),
            (Kind::File(_), true) => return Err(ENOTDIR),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        self.collect(&[ino]);
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Result<(), i32> {
        let ino = self.lookup(parent, name)?;
        self.entries(new_parent)?;
        if let Ok(target) = self.lookup(new_parent, new_name) {
            if target == ino {
                return Ok(());
            }
            let target_is_dir = matches!(self.inodes[&target].kind, Kind::Dir { .. });
            self.remove(new_parent, new_name, target_is_dir)?;
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<&[u8], i32> {
        match &self.inodes.get(&ino).ok_or(ENOENT)?.kind {
            Kind::File(file) => {
                let start = (offset as usize).min(file.current.len());
                let end = start.saturating_add(size).min(file.current.len());
                Ok(&file.current[start..end])
            }
            Kind::Dir { .. } => Err(EISDIR),
        }
    }

    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), i32> {
        if offset.saturating_add(bytes.len() as u64) > MAX_FILE_BYTES {
            return Err(EFBIG);
        }
        self.file_mut(ino)?.change(Unsynced::Write {
            offset,
            bytes: bytes.to_vec(),
        });
        self.touch(ino);
        Ok(())
    }

    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), i32> {
        if len > MAX_FILE_BYTES {
            return Err(EFBIG);
        }
        self.file_mut(ino)?.change(Unsynced::SetLen(len));
        self.touch(ino);
        Ok(())
    }

    /// `fsync`: a file's contents, or a directory's entries, as they are now become what survives a
    /// power loss.
    pub fn sync(&mut self, ino: u64) -> Result<(), i32> {
        let dropped = match &mut self.inodes.get_mut(&ino).ok_or(ENOENT)?.kind {
            Kind::File(file) => {
                file.sync();
                return Ok(());
            }
            Kind::Dir { entries, durable } => {
                let dropped: Vec<u64> = durable
                    .values()
                    .filter(|child| !entries.values().any(|c| c == *child))
                    .copied()
                    .collect();
                durable.clone_from(entries);
                dropped
            }
        };
        self.collect(&dropped);
        Ok(())
    }

    fn touch(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.mtime = SystemTime::now();
        }
    }

    /// Frees those of `candidates` (and what they hold) that no directory names any more, now or
    /// durably.
    fn collect(&mut self, candidates: &[u64]) {
        let mut stack = candidates.to_vec();
        while let Some(ino) = stack.pop() {
            let named = self.inodes.values().any(|inode| match &inode.kind {
                Kind::Dir { entries, durable } => {
                    entries.values().chain(durable.values()).any(|&c| c == ino)
                }
                Kind::File(_) => false,
            });
            if named || ino == ROOT {
                continue;
            }
            if let Some(Inode {
                kind: Kind::Dir { entries, durable },
                ..
            }) = self.inodes.remove(&ino)
            {
                stack.extend(entries.values().chain(durable.values()));
            }
        }
    }

    /// The inode at `path`, relative to the root.
    pub fn resolve(&self, path: &Path) -> Result<u64, String> {
        let mut ino = ROOT;
        for component in path.components() {
            match component {
                Component::Normal(name) => {
                    ino = self
                        .lookup(ino, name)
                        .map_err(|_| format!("{} does not exist", path.display()))?;
                }
                Component::CurDir => {}
                _ => return Err(format!("{} is not a plain relative path", path.display())),
            }
        }
        Ok(ino)
    }

    /// Power loss below `path`: every directory goes back to its durable entries, every file to its
    /// durable contents plus a random prefix of its unsynced writes (the last one perhaps torn).
    pub fn power_loss(&mut self, path: &Path) -> Result<(), String> {
        let mut stack = vec![self.resolve(path)?];
        let mut dropped = Vec::new();
        while let Some(ino) = stack.pop() {
            let unsynced = match self.inodes.get(&ino).map(|inode| &inode.kind) {
                Some(Kind::File(file)) => file.unsynced.len() as u64,
                _ => 0,
            };
            let kept = self.rng.below(unsynced + 1) as usize;
            let torn = self.rng.below(8) as usize;
            match self.inodes.get_mut(&ino).map(|inode| &mut inode.kind) {
                Some(Kind::File(file)) => file.power_loss(kept, torn),
                Some(Kind::Dir { entries, durable }) => {
                    dropped.extend(
                        entries
                            .values()
                            .filter(|c| !durable.values().any(|d| d == *c)),
                    );
                    entries.clone_from(durable);
                    stack.extend(entries.values().copied());
                }
                None => {}
            }
        }
        self.collect(&dropped);
        Ok(())
    }

    pub fn unsynced_bytes(&self) -> u64 {
        self.inodes
            .values()
            .filter_map(|inode| match &inode.kind {
                Kind::File(file) => Some(file.unsynced.iter().map(|change| match change {
                    Unsynced::Write { bytes, .. } => bytes.len() as u64,
                    Unsynced::SetLen(_) => 0,
                })),
                Kind::Dir { .. } => None,
            })
            .flatten()
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn synced_contents_survive_and_unsynced_ones_survive_only_as_a_prefix() {
        for seed in 0..50 {
            let mut tree = Tree::new(seed);
            let dir = tree.make(ROOT, name("node1"), true, 0o755).unwrap();
            let file = tree.make(dir, name("wal"), false, 0o644).unwrap();
            tree.sync(dir).unwrap();
            tree.write(file, 0, b"durable").unwrap();
            tree.sync(file).unwrap();
            tree.write(file, 7, b"-one").unwrap();
            tree.write(file, 11, b"-two").unwrap();
            assert_eq!(tree.unsynced_bytes(), 8);
            tree.power_loss(Path::new("node1")).unwrap();
            let after = tree.read(file, 0, 100).unwrap();
            assert!(
                [&b"durable"[..], b"durable-one", b"durable-one-two"].contains(&after),
                "seed {seed}: {after:?}"
            );
            assert_eq!(tree.unsynced_bytes(), 0);
        }
    }

    #[test]
    fn a_torn_write_keeps_whole_sectors_only() {
        let mut file = File::default();
        file.change(Unsynced::Write {
            offset: 0,
            bytes: vec![7; 3 * SECTOR + 100],
        });
        file.power_loss(0, 2);
        assert_eq!(file.current, vec![7; 2 * SECTOR]);
    }

    #[test]
    fn directory_entries_need_the_directory_fsync() {
        let mut tree = Tree::new(1);
        let dir = tree.make(ROOT, name("d"), true, 0o755).unwrap();
        tree.sync(ROOT).unwrap();
        let kept = tree.make(dir, name("kept"), false, 0o644).unwrap();
        tree.sync(dir).unwrap();
        tree.make(dir, name("new"), false, 0o644).unwrap();
        tree.rename(dir, name("kept"), dir, name("renamed"))
            .unwrap();
        tree.power_loss(Path::new("d")).unwrap();
        assert_eq!(tree.lookup(dir, name("kept")), Ok(kept));
        assert_eq!(tree.lookup(dir, name("new")), Err(ENOENT));
        assert_eq!(tree.lookup(dir, name("renamed")), Err(ENOENT));
    }

    #[test]
    fn a_removed_file_lives_on_until_its_removal_is_durable() {
        let mut tree = Tree::new(1);
        let dir = tree.make(ROOT, name("d"), true, 0o755).unwrap();
        let file = tree.make(dir, name("f"), false, 0o644).unwrap();
        tree.write(file, 0, b"x").unwrap();
        tree.sync(file).unwrap();
        tree.sync(dir).unwrap();
        tree.remove(dir, name("f"), false).unwrap();
        assert!(
            tree.attr(file).is_some(),
            "still named by the durable entries"
        );
        tree.power_loss(Path::new("d")).unwrap();
        assert_eq!(tree.read(file, 0, 10).unwrap(), b"x");
        tree.remove(dir, name("f"), false).unwrap();
        tree.sync(dir).unwrap();
        assert!(tree.attr(file).is_none(), "freed once no entry names it");
    }

    #[test]
    fn power_loss_is_confined_to_the_named_directory() {
        let mut tree = Tree::new(1);
        let a = tree.make(ROOT, name("a"), true, 0o755).unwrap();
        let b = tree.make(ROOT, name("b"), true, 0o755).unwrap();
        tree.sync(ROOT).unwrap();
        let fa = tree.make(a, name("f"), false, 0o644).unwrap();
        let fb = tree.make(b, name("f"), false, 0o644).unwrap();
        tree.sync(a).unwrap();
        tree.write(fa, 0, &[1; 4 * SECTOR]).unwrap();
        tree.write(fb, 0, b"b").unwrap();
        tree.power_loss(Path::new("b")).unwrap();
        assert_eq!(tree.read(fa, 0, 10).unwrap(), &[1; 10]);
        assert_eq!(tree.lookup(b, name("f")), Err(ENOENT));
        assert!(tree.power_loss(Path::new("c")).is_err());
    }

    #[test]
    fn rename_replaces_and_remove_refuses_a_full_directory() {
        let mut tree = Tree::new(1);
        let d = tree.make(ROOT, name("d"), true, 0o755).unwrap();
        let x = tree.make(d, name("x.tmp"), false, 0o644).unwrap();
        tree.make(d, name("x"), false, 0o644).unwrap();
        tree.rename(d, name("x.tmp"), d, name("x")).unwrap();
        assert_eq!(tree.lookup(d, name("x")), Ok(x));
        assert_eq!(tree.lookup(d, name("x.tmp")), Err(ENOENT));
        assert_eq!(tree.remove(ROOT, name("d"), true), Err(ENOTEMPTY));
        tree.remove(d, name("x"), false).unwrap();
        tree.remove(ROOT, name("d"), true).unwrap();
        assert_eq!(
            tree.write(x, 0, b"y"),
            Err(ENOENT),
            "freed: never durably named"
        );
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let mut tree = Tree::new(1);
        let f = tree.make(ROOT, name("f"), false, 0o644).unwrap();
        assert_eq!(tree.write(f, MAX_FILE_BYTES, b"y"), Err(EFBIG));
        assert_eq!(tree.set_len(f, MAX_FILE_BYTES + 1), Err(EFBIG));
    }
}
