//! The FUSE side of the file system: each request locks the [`Tree`], does its one thing, replies.
//! Attributes and entries are never cached by the kernel (they change under it at a power loss) and
//! every open uses direct I/O, so no page of a file outlives a power loss in the kernel's cache.

use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::{
    FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};
use libc::{EEXIST, EINVAL, EIO, ENOENT};

use crate::tree::Tree;

const TTL: Duration = Duration::ZERO;

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
                tree.set_perm(ino, (mode & 0o7777) as u16);
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
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags != 0 {
            // RENAME_NOREPLACE, RENAME_EXCHANGE...: not modelled; refuse rather than pretend.
            return reply.error(EINVAL);
        }
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
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(reply, self.with(|tree| tree.sync(ino)));
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
            let mut entries = vec![
                (OsString::from("."), ino, FileType::Directory),
                (OsString::from(".."), ino, FileType::Directory),
            ];
            entries.extend(tree.list(ino)?);
            Ok(entries)
        });
        match listing {
            Ok(entries) => {
                let skip = usize::try_from(offset).unwrap_or(0);
                for (i, (name, child, kind)) in entries.into_iter().enumerate().skip(skip) {
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
