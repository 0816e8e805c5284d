//! The batch of work the core hands to its driver.

use crate::types::*;

/// Everything the driver must do since the last `ready()`, in this order:
///
/// 1. **Persist**, in one atomic-enough step and in `ready()` order: `snapshot` (if any), then `entries`
///    (an entry at an index the storage already holds replaces it and every entry after it), then
///    `hard_state`. When they are durable, call [`crate::Raft::persisted`] with the last entry's (or
///    snapshot's) index and term.
/// 2. **Send** `messages` at once, even before step 1 finishes: the core only puts there messages that do not
///    depend on this batch being durable (a leader's appends, heartbeats, its own vote requests are in the
///    other list). **Send** `messages_after_persist` only once step 1 is durable: they promise the receiver
///    that a vote or an entry is on disk.
/// 3. **Apply** `committed` in order (after restoring `snapshot` into the state machine if one is given),
///    then call [`crate::Raft::applied`]. Committed entries are durable on a majority, so they may be
///    applied before this node's own copy is durable.
/// 4. **Serve** each `read_states` item once the applied index reaches its `index`.
///
/// The driver may call `ready()` again before an earlier batch is durable (that is how a leader overlaps
/// its disk write with replication, dissertation §10.2.1) as long as it persists batches in order.
#[derive(Debug, Default)]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub messages_after_persist: Vec<Message>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty()
            && self.committed.is_empty()
            && self.read_states.is_empty()
    }

    /// Whether step 1 has anything to persist.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}
