//! Locking the few plain maps shared between tasks (peer queues, snapshot streams in progress).

use std::sync::{Mutex, MutexGuard};

/// Poisoning only means another thread panicked mid-update of a plain map; the map is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
