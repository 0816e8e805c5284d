//! The in-memory tree of directories and files, each file with its current contents and its durable
//! ones, and the FUSE requests mapped onto it ([`Fuse`]).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};
use libc::{EEXIST, EINVAL, EIO, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};

const ROOT: u64 = 1;
/// Attributes are never cached by the kernel: sizes change under it at a power loss.
const TTL: Duration = Duration::ZERO;

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

impl File {
    fn write(&mut self, offset: u64, bytes: &[u8]) {
        apply_write(&mut self.current, offset, bytes);
        self.unsynced.push(Unsynced::Write {
            offset,
            bytes: bytes.to_vec(),
        });
    }

    fn set_len(&mut self, len: u64) {
        self.current.resize(len as usize, 0);
        self.unsynced.push(Unsynced::SetLen(len));
    }

    fn sync(&mut self) {
        for change in self.unsynced.drain(..) {
            match change {
                Unsynced::Write { offset, bytes } => apply_write(&mut self.durable, offset, &bytes),
                Unsynced::SetLen(len) => self.durable.resize(len as usize, 0),
            }
        }
        debug_assert_eq!(self.current, self.durable);
    }

    fn power_loss(&mut self) {
        self.unsynced.clear();
        self.current.clone_from(&self.durable);
    }
}

fn apply_write(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

#[derive(Debug)]
enum Kind {
    Dir(BTreeMap<OsString, u64>),
    File(File),
}

#[derive(Debug)]
struct Inode {
    kind: Kind,
    perm: u16,
    mtime: SystemTime,
}

/// The whole file system's state.
#[derive(Debug)]
pub struct Tree {
    inodes: HashMap<u64, Inode>,
    next: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                kind: Kind::Dir(BTreeMap::new()),
                perm: 0o755,
                mtime: SystemTime::now(),
            },
        );
        Tree {
            inodes,
            next: ROOT + 1,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let inode = self.inodes.get(&ino)?;
        let (kind, size, nlink) = match &inode.kind {
            Kind::Dir(_) => (FileType::Directory, 0, 2),
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

    fn children(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, i32> {
        match &self.inodes.get(&ino).ok_or(ENOENT)?.kind {
            Kind::Dir(children) => Ok(children),
            Kind::File(_) => Err(ENOTDIR),
        }
    }

    fn children_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, i32> {
        match &mut self.inodes.get_mut(&ino).ok_or(ENOENT)?.kind {
            Kind::Dir(children) => Ok(children),
            Kind::File(_) => Err(ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut File, i32> {
        match &mut self.inodes.get_mut(&ino).ok_or(ENOENT)?.kind {
            Kind::File(file) => Ok(file),
            Kind::Dir(_) => Err(EISDIR),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, i32> {
        self.children(parent)?.get(name).copied().ok_or(ENOENT)
    }

    /// Creates a file or directory `name` in `parent`; its inode.
    pub fn make(&mut self, parent: u64, name: &OsStr, dir: bool, perm: u16) -> Result<u64, i32> {
        if self.children(parent)?.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let kind = if dir {
            Kind::Dir(BTreeMap::new())
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
        self.children_mut(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), i32> {
        let ino = self.lookup(parent, name)?;
        match (&self.inodes[&ino].kind, dir) {
            (Kind::Dir(children), true) if !children.is_empty() => return Err(ENOTEMPTY),
            (Kind::Dir(_), false) => return Err(EISDIR),
            (Kind::File(_), true) => return Err(ENOTDIR),
            _ => {}
        }
        self.children_mut(parent)?.remove(name);
        self.inodes.remove(&ino);
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
        self.children(new_parent)?;
        if let Ok(target) = self.lookup(new_parent, new_name) {
            if target == ino {
                return Ok(());
            }
            let target_is_dir = matches!(self.inodes[&target].kind, Kind::Dir(_));
            self.remove(new_parent, new_name, target_is_dir)?;
        }
        self.children_mut(parent)?.remove(name);
        self.children_mut(new_parent)?
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
            Kind::Dir(_) => Err(EISDIR),
        }
    }

    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), i32> {
        self.file_mut(ino)?.write(offset, bytes);
        self.touch(ino);
        Ok(())
    }

    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), i32> {
        self.file_mut(ino)?.set_len(len);
        self.touch(ino);
        Ok(())
    }

    /// `fsync`/`fdatasync`: the file's contents as they are now become what survives a power loss.
    pub fn sync(&mut self, ino: u64) -> Result<(), i32> {
        match self.file_mut(ino) {
            Ok(file) => {
                file.sync();
                Ok(())
            }
            // Syncing a directory: its entries are durable already.
            Err(EISDIR) => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn touch(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.mtime = SystemTime::now();
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

    /// Every file under `path` goes back to its durable contents.
    pub fn power_loss(&mut self, path: &Path) -> Result<(), String> {
        let mut stack = vec![self.resolve(path)?];
        while let Some(ino) = stack.pop() {
            match self.inodes.get_mut(&ino).map(|inode| &mut inode.kind) {
                Some(Kind::File(file)) => file.power_loss(),
                Some(Kind::Dir(children)) => stack.extend(children.values().copied()),
                None => {}
            }
        }
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
                Kind::Dir(_) => None,
            })
            .flatten()
            .sum()
    }
}

/// The FUSE side: each request locks the tree, does its one thing, replies.
pub struct Fuse(pub Arc<Mutex<Tree>>);

impl Fuse {
    fn with<T>(&self, f: impl FnOnce(&mut Tree) -> Result<T, i32>) -> Result<T, i32> {
        let mut tree = self.0.lock().map_err(|_| EIO)?;
        f(&mut tree)
    }

    fn entry(&self, reply: ReplyEntry, made: Result<u64, i32>) {
        match made.and_then(|ino| self.with(|tree| tree.attr(ino).ok_or(ENOENT))) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(err) => reply.error(err),
        }
    }
}

fn done(reply: ReplyEmpty, result: Result<(), i32>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(err),
    }
}

impl Filesystem for Fuse {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let found = self.with(|tree| tree.lookup(parent, name));
        self.entry(reply, found);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.with(|tree| tree.attr(ino).ok_or(ENOENT)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(err) => reply.error(err),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let result = self.with(|tree| {
            if let Some(size) = size {
                tree.set_len(ino, size)?;
            }
            if let Some(mode) = mode {
                if let Some(inode) = tree.inodes.get_mut(&ino) {
                    inode.perm = (mode & 0o7777) as u16;
                }
            }
            tree.attr(ino).ok_or(ENOENT)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(err) => reply.error(err),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.with(|tree| tree.make(parent, name, true, (mode & 0o7777) as u16));
        self.entry(reply, made);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        done(reply, self.with(|tree| tree.remove(parent, name, false)));
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        done(reply, self.with(|tree| tree.remove(parent, name, true)));
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        done(
            reply,
            self.with(|tree| tree.rename(parent, name, new_parent, new_name)),
        );
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.with(|tree| tree.attr(ino).ok_or(ENOENT)) {
            Ok(_) => reply.opened(0, FOPEN_DIRECT_IO),
            Err(err) => reply.error(err),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.with(|tree| {
            let ino = match tree.lookup(parent, name) {
                Ok(_) if flags & libc::O_EXCL != 0 => return Err(EEXIST),
                Ok(ino) => ino,
                Err(_) => tree.make(parent, name, false, (mode & 0o7777) as u16)?,
            };
            if flags & libc::O_TRUNC != 0 {
                tree.set_len(ino, 0)?;
            }
            tree.attr(ino).ok_or(ENOENT)
        });
        match result {
            Ok(attr) => reply.created(&TTL, &attr, 0, 0, FOPEN_DIRECT_IO),
            Err(err) => reply.error(err),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Ok(tree) = self.0.lock() else {
            return reply.error(EIO);
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(EINVAL);
        };
        match tree.read(ino, offset, size as usize) {
            Ok(bytes) => reply.data(bytes),
            Err(err) => reply.error(err),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(EINVAL);
        };
        match self.with(|tree| tree.write(ino, offset, data)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(err) => reply.error(err),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(reply, self.with(|tree| tree.sync(ino)));
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let listing = self.with(|tree| {
            let children = tree.children(ino)?;
            let mut entries = vec![
                (ino, FileType::Directory, OsString::from(".")),
                (ino, FileType::Directory, OsString::from("..")),
            ];
            for (name, &child) in children {
                let kind = match tree.inodes.get(&child).map(|inode| &inode.kind) {
                    Some(Kind::Dir(_)) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                entries.push((child, kind, name.clone()));
            }
            Ok(entries)
        });
        match listing {
            Ok(entries) => {
                let skip = usize::try_from(offset).unwrap_or(0);
                for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(skip) {
                    if reply.add(child, (i + 1) as i64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(err) => reply.error(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_contents_survive_a_power_loss() {
        let mut tree = Tree::new();
        let dir = tree.make(ROOT, OsStr::new("node1"), true, 0o755).unwrap();
        let file = tree.make(dir, OsStr::new("wal"), false, 0o644).unwrap();
        tree.write(file, 0, b"durable").unwrap();
        tree.sync(file).unwrap();
        tree.write(file, 7, b" and lost").unwrap();
        tree.set_len(file, 3).unwrap();
        tree.write(file, 3, b"X").unwrap();
        assert_eq!(tree.read(file, 0, 100).unwrap(), b"durX");
        assert_eq!(tree.unsynced_bytes(), 10);
        tree.power_loss(Path::new("node1")).unwrap();
        assert_eq!(tree.read(file, 0, 100).unwrap(), b"durable");
        assert_eq!(tree.unsynced_bytes(), 0);
    }

    #[test]
    fn power_loss_is_confined_to_the_named_directory() {
        let mut tree = Tree::new();
        let a = tree.make(ROOT, OsStr::new("a"), true, 0o755).unwrap();
        let b = tree.make(ROOT, OsStr::new("b"), true, 0o755).unwrap();
        let fa = tree.make(a, OsStr::new("f"), false, 0o644).unwrap();
        let fb = tree.make(b, OsStr::new("f"), false, 0o644).unwrap();
        tree.write(fa, 0, b"a").unwrap();
        tree.write(fb, 0, b"b").unwrap();
        tree.power_loss(Path::new("a")).unwrap();
        assert_eq!(tree.read(fa, 0, 10).unwrap(), b"");
        assert_eq!(tree.read(fb, 0, 10).unwrap(), b"b");
        assert!(tree.power_loss(Path::new("c")).is_err());
    }

    #[test]
    fn rename_replaces_and_remove_refuses_a_full_directory() {
        let mut tree = Tree::new();
        let d = tree.make(ROOT, OsStr::new("d"), true, 0o755).unwrap();
        let x = tree.make(d, OsStr::new("x.tmp"), false, 0o644).unwrap();
        tree.make(d, OsStr::new("x"), false, 0o644).unwrap();
        tree.rename(d, OsStr::new("x.tmp"), d, OsStr::new("x"))
            .unwrap();
        assert_eq!(tree.lookup(d, OsStr::new("x")), Ok(x));
        assert_eq!(tree.lookup(d, OsStr::new("x.tmp")), Err(ENOENT));
        assert_eq!(tree.remove(ROOT, OsStr::new("d"), true), Err(ENOTEMPTY));
        tree.remove(d, OsStr::new("x"), false).unwrap();
        tree.remove(ROOT, OsStr::new("d"), true).unwrap();
    }
}
