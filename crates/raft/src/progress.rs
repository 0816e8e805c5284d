//! What a leader knows about each follower's log, and how hard it may push entries at it.
//!
//! As in etcd's `tracker`, a follower is in one of three states:
//! - `Probe`: we do not know where its log matches ours; send one Append at a time and wait for the
//!   answer (or the next heartbeat) before sending another.
//! - `Replicate`: its log matches up to `match_index`; stream Appends optimistically, advancing
//!   `next_index` as we send, bounded by a window of in-flight messages and bytes.
//! - `Snapshot`: its next entry is compacted away; an InstallSnapshot is on its way.

use std::collections::VecDeque;

use crate::types::Index;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    Probe,
    Replicate,
    Snapshot { pending: Index },
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: Index,
    pub(crate) next_index: Index,
    pub(crate) state: ReplicationState,
    /// In `Probe`, an Append is outstanding; cleared by its answer or by a heartbeat answer.
    pub(crate) probe_sent: bool,
    /// Heard from within the current check-quorum window.
    pub(crate) recent_active: bool,
    /// Heard from within the previous window (so "recently" does not depend on where in the current
    /// window the question comes).
    pub(crate) previously_active: bool,
    /// The highest ReadIndex round this follower has acknowledged.
    pub(crate) read_round_acked: u64,
    /// Heartbeats sent since an InstallSnapshot went out unanswered.
    pub(crate) snapshot_wait: u32,
    /// Last index and byte size of each un-acknowledged Append, oldest first.
    inflight: VecDeque<(Index, usize)>,
    inflight_bytes: usize,
}

impl Progress {
    pub(crate) fn new(next_index: Index) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            recent_active: true,
            previously_active: true,
            read_round_acked: 0,
            snapshot_wait: 0,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
        }
    }

    /// Heard from within the last one or two check-quorum windows.
    pub(crate) fn is_alive(&self) -> bool {
        self.recent_active || self.previously_active
    }

    /// Whether the leader must hold back further Appends to this follower for now.
    pub(crate) fn is_paused(&self, max_msgs: usize, max_bytes: usize) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => {
                self.inflight.len() >= max_msgs || self.inflight_bytes >= max_bytes
            }
            ReplicationState::Snapshot { .. } => true,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot the follower holds at least the snapshot's index.
        if let ReplicationState::Snapshot { pending } = self.state {
            self.next_index = self.next_index.max(pending + 1).max(self.match_index + 1);
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ReplicationState::Probe;
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub(crate) fn become_snapshot(&mut self, pending: Index) {
        self.state = ReplicationState::Snapshot { pending };
        self.snapshot_wait = 0;
        self.clear_inflight();
    }

    /// Records an Append just sent that ends at `last` and carries `bytes`.
    pub(crate) fn sent(&mut self, last: Index, bytes: usize) {
        match self.state {
            ReplicationState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot { .. } => {}
        }
    }

    /// The follower holds everything up to `index`. Returns whether that is news.
    pub(crate) fn acknowledge(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        advanced
    }

    /// Forgets the oldest in-flight Append if the window is full (heartbeat answered: the follower is
    /// alive, so a stuck window means answers were lost).
    pub(crate) fn free_one_if_window_full(&mut self, max_msgs: usize, max_bytes: usize) {
        if self.state == ReplicationState::Replicate && self.is_paused(max_msgs, max_bytes) {
            if let Some((_, bytes)) = self.inflight.pop_front() {
                self.inflight_bytes -= bytes;
            }
        }
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}
