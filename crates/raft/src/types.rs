//! The vocabulary shared by the core, its driver and the wire: ids, entries, messages, snapshots.

use bytes::Bytes;

pub use crate::membership::Membership;

/// A node's identity within one cluster. Never 0 (0 means "none" on the wire).
pub type NodeId = u64;
/// A Raft term (§5.1). Starts at 0 on a fresh node.
pub type Term = u64;
/// A log index. The first real entry of a fresh log has index 1; index 0 is the empty prefix.
pub type Index = u64;

/// What must survive a crash besides the log (§5.2, Figure 2 "Persistent state").
///
/// `commit` is persisted too (as etcd does) so a restarted node can re-apply what it knows is committed
/// without waiting for the leader; losing it would be safe, merely slower.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Opaque application data, handed to the state machine when committed.
    Normal,
    /// The empty entry a new leader appends at the start of its term (§5.4.2, §8): committing it commits
    /// everything before it. The state machine skips it but the driver still reports it applied.
    Noop,
    /// A new cluster membership ([`Membership::encode`]): in force on every node from the moment the
    /// entry is in its log, committed or not (dissertation §4.1). The state machine skips it.
    Config,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts for in flow control and batching limits.
    pub fn size(&self) -> usize {
        self.data.len() + 24
    }
}

/// Describes the state a snapshot captures: everything up to and including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub membership: Membership,
}

/// A state-machine snapshot: metadata plus the application's opaque serialised state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// A message between two nodes. `term` is the sender's current term, except for pre-votes, where it is
/// the term the sender would campaign in (dissertation §9.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// The largest term or index a message may carry: beyond any real log (2^62 entries at a million a
/// second is 146,000 years), and far enough below `u64::MAX` that arithmetic on accepted values
/// (`index + 1`, `index + entries`, `term + 1`) cannot overflow.
pub const MAX_INDEX: Index = 1 << 62;

impl Message {
    /// Whether every term and index in the message is at most [`MAX_INDEX`]. The core ignores a message
    /// that is not: only a broken or hostile peer sends one.
    pub fn within_bounds(&self) -> bool {
        let ok = |value: u64| value <= MAX_INDEX;
        ok(self.term)
            && match &self.body {
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
                | MessageBody::Vote {
                    last_index,
                    last_term,
                    ..
                } => ok(*last_index) && ok(*last_term),
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                } => {
                    ok(*prev_index)
                        && ok(*prev_term)
                        && ok(*commit)
                        && entries.iter().all(|e| ok(e.index) && ok(e.term))
                }
                MessageBody::AppendResponse(AppendResult::Accepted { last_index }) => {
                    ok(*last_index)
                }
                MessageBody::AppendResponse(AppendResult::Rejected {
                    prev_index,
                    hint_index,
                    hint_term,
                }) => ok(*prev_index) && ok(*hint_index) && ok(*hint_term),
                MessageBody::Heartbeat { commit, .. } => ok(*commit),
                MessageBody::InstallSnapshot { snapshot } => {
                    ok(snapshot.meta.index) && ok(snapshot.meta.term)
                }
                MessageBody::PreVoteResponse { .. }
                | MessageBody::VoteResponse { .. }
                | MessageBody::HeartbeatResponse { .. }
                | MessageBody::TimeoutNow => true,
            }
    }
}

impl Message {
    /// Whether every `Config` entry the message carries decodes. A node that took in one that does not
    /// could not know its own membership; only a broken or hostile peer sends one.
    pub fn config_entries_decode(&self) -> bool {
        match &self.body {
            MessageBody::Append { entries, .. } => entries
                .iter()
                .filter(|e| e.kind == EntryKind::Config)
                .all(|e| Membership::from_entry_data(&e.data).is_some()),
            _ => true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me if I campaigned?" Changes no state on the receiver.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// RequestVote (§5.2). `transfer` is set when the campaign was started by TimeoutNow, so receivers
    /// must not refuse it on the ground that they heard from a leader recently.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    /// AppendEntries (§5.3). `commit` is the leader's commit index.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    AppendResponse(AppendResult),
    /// Keeps followers from campaigning and carries the commit index (capped at what the follower is
    /// known to hold). `read_round` is non-zero when the heartbeat also confirms leadership for
    /// ReadIndex; the follower echoes it.
    Heartbeat {
        commit: Index,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// InstallSnapshot (§7): the whole snapshot in one message in this version of the core.
    InstallSnapshot {
        snapshot: Snapshot,
    },
    /// Leadership transfer (dissertation §3.10): "campaign now, ignoring your election timer".
    TimeoutNow,
}

/// A follower's answer to `Append` or `InstallSnapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The follower's log now matches the leader's up to `last_index`.
    Accepted { last_index: Index },
    /// The consistency check failed at `prev_index`. `hint_index`/`hint_term` let the leader skip a whole
    /// conflicting term at once: the follower's entry at `hint_index` has `hint_term`, and
    /// `hint_index` is the follower's first index of that term (or its last index if its log is shorter).
    Rejected {
        prev_index: Index,
        hint_index: Index,
        hint_term: Term,
    },
}

/// A linearizable read that became safe: once the state machine has applied `index`, the read whose
/// context is `ctx` may be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile facts about a node that its driver may want to watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: Term,
}
