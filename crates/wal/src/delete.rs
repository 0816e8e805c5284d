//! Deleting, outside the log, the files a log with `defer_deletes` hands out: in order, each deletion
//! durable before the next.

use std::path::PathBuf;

/// Deletes files handed out by [`Wal::take_garbage`](crate::Wal::take_garbage) on the real file system, in
/// order, each deletion made durable (directory fsync) before the next. Files already gone are skipped.
pub fn delete_in_order(paths: &[PathBuf]) -> std::io::Result<()> {
    for path in paths {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
            Ok(()) => {}
        }
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}
