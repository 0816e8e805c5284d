//! Helpers for the node's background threads (snapshots, file deletion).

/// Lowers the calling thread's scheduling priority (nice 10), so that background work such as
/// serialising a snapshot yields the CPU to the node loop and the disk thread, whose latency clients
/// see. On Linux, `setpriority(PRIO_PROCESS, 0, ..)` applies to the calling thread only. Failure is
/// harmless (the thread keeps the default priority), so it is ignored.
pub fn lower_this_thread_priority() {
    // SAFETY: setpriority takes plain integers, touches no memory of ours, and cannot break any Rust
    // invariant; its only effect is the scheduling priority of this thread.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
}
