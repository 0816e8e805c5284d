//! Power loss for the nodes: their data directories live on a [`raftkv_lazyfs::LazyFs`] mounted for
//! the run, and a power loss throws away what they wrote and did not fsync.

use std::path::{Path, PathBuf};

use raftkv_lazyfs::LazyFs;

use crate::nemesis::PowerSwitch;

/// Why power loss cannot be simulated here, or `None`.
pub fn unavailable() -> Option<String> {
    raftkv_lazyfs::unavailable()
}

pub struct PowerLossFs(LazyFs);

impl PowerLossFs {
    /// Mounts the lazy file system on `dir` (the nodes' data root); `seed` decides which unsynced
    /// writes survive each power loss.
    pub fn mount(dir: &Path, seed: u64) -> Result<PowerLossFs, String> {
        LazyFs::mount(dir, seed)
            .map(PowerLossFs)
            .map_err(|e| format!("mount the power-loss file system on {}: {e}", dir.display()))
    }
}

impl PowerSwitch for PowerLossFs {
    fn power_loss(&self, data_dirs: &[PathBuf]) -> Result<(), String> {
        self.0.power_loss(data_dirs)
    }
}
