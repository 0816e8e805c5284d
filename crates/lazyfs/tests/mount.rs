//! Through a real mount: what a process fsyncs survives a power loss, what it only wrote survives at
//! most as a prefix, directory entries need the directory's fsync, and the kernel's cache does not
//! hide the difference. Skips where FUSE cannot be mounted.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use raftkv_lazyfs::LazyFs;

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
fn a_power_loss_keeps_exactly_what_was_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let fs = match LazyFs::mount(dir.path(), 7) {
        Ok(fs) => fs,
        Err(err) => {
            eprintln!("SKIPPED: cannot mount FUSE here: {err}");
            return;
        }
    };
    let node = dir.path().join("node1");
    fs::create_dir(&node).unwrap();
    sync_dir(dir.path());
    let path = node.join("wal");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    sync_dir(&node);
    file.write_all(b"synced;").unwrap();
    file.sync_data().unwrap();
    file.write_all(b"not synced").unwrap();
    drop(file);
    fs::write(node.join("entry-not-synced"), b"gone").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"synced;not synced");
    assert_eq!(fs.unsynced_bytes(), 14);

    fs.power_loss(std::slice::from_ref(&node)).unwrap();
    let after = fs::read(&path).unwrap();
    assert!(
        after == b"synced;" || after == b"synced;not synced",
        "{after:?}"
    );
    assert!(!node.join("entry-not-synced").exists());
    fs::rename(&path, node.join("renamed")).unwrap();
    assert_eq!(fs::read(node.join("renamed")).unwrap(), after);
    fs.power_loss(std::slice::from_ref(&node)).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        after,
        "the rename was never made durable"
    );
    assert!(fs.power_loss(&[dir.path().join("elsewhere")]).is_err());
}
