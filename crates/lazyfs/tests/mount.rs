//! Through a real mount: what a process fsyncs survives a power loss, what it only wrote does not, and
//! the kernel's cache does not hide the difference. Skips where FUSE cannot be mounted.

use std::fs::{self, OpenOptions};
use std::io::Write;

use raftkv_lazyfs::LazyFs;

#[test]
fn a_power_loss_keeps_exactly_what_was_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let fs = match LazyFs::mount(dir.path()) {
        Ok(fs) => fs,
        Err(err) => {
            eprintln!("SKIPPED: cannot mount FUSE here: {err}");
            return;
        }
    };
    let node = dir.path().join("node1");
    fs::create_dir(&node).unwrap();
    let path = node.join("wal");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all(b"synced;").unwrap();
    file.sync_data().unwrap();
    file.write_all(b"not synced").unwrap();
    drop(file);
    fs::write(node.join("never-synced"), b"gone").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"synced;not synced");
    assert_eq!(fs.unsynced_bytes(), 14);

    fs.power_loss(std::slice::from_ref(&node)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"synced;");
    // Directory entries are durable at once; contents only through fsync.
    assert_eq!(fs::read(node.join("never-synced")).unwrap(), b"");
    fs::rename(&path, node.join("renamed")).unwrap();
    assert_eq!(fs::read(node.join("renamed")).unwrap(), b"synced;");
    assert!(fs.power_loss(&[dir.path().join("elsewhere")]).is_err());
}
