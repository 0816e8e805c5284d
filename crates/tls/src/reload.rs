//! Configurations rebuilt from files when the files change, so certificates rotate without a restart.

use anyhow::Context;
use std::path::PathBuf;
use std::sync::RwLock;

type Build<T> = Box<dyn Fn() -> anyhow::Result<T> + Send + Sync>;

/// A value built from some files, rebuilt by [`Reloadable::reload_if_changed`] when their contents
/// change. A rebuild that fails (a half-written file, a key that does not match) keeps the last good
/// value, so a botched rotation never takes a running node down; the caller logs the error.
pub struct Reloadable<T> {
    paths: Vec<PathBuf>,
    build: Build<T>,
    current: RwLock<(T, Vec<u8>)>,
}

impl<T: Clone> Reloadable<T> {
    /// Builds the first value now; an error here is a start-up error.
    pub fn new(
        paths: Vec<PathBuf>,
        build: impl Fn() -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Reloadable<T>> {
        let fingerprint = fingerprint(&paths)?;
        let value = build()?;
        Ok(Reloadable {
            paths,
            build: Box::new(build),
            current: RwLock::new((value, fingerprint)),
        })
    }

    /// The current value (cheap: the configurations are `Arc`s).
    pub fn get(&self) -> T {
        match self.current.read() {
            Ok(current) => current.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Rebuilds the value if any file's contents changed since the last build. Returns whether it did.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let fingerprint = fingerprint(&self.paths)?;
        if self.read_fingerprint() == fingerprint {
            return Ok(false);
        }
        let value = (self.build)()?;
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = (value, fingerprint);
        Ok(true)
    }

    fn read_fingerprint(&self) -> Vec<u8> {
        match self.current.read() {
            Ok(current) => current.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }
}

/// The files' contents, concatenated with their lengths: certificates and keys are a few KiB, so
/// comparing them whole is cheaper to reason about than modification times (coarse, and unchanged by
/// an atomic rename of an older file).
fn fingerprint(paths: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut all = Vec::new();
    for path in paths {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        all.extend_from_slice(&bytes);
    }
    Ok(all)
}
