//! The node: roles, elections, replication, reads, transfer. (API skeleton; being implemented.)

use bytes::Bytes;

use crate::config::Config;
use crate::ready::Ready;
use crate::types::*;

/// What a node recovered from its storage at start-up (all empty for a fresh node).
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The newest durable snapshot; the log continues right after it.
    pub snapshot: Option<Snapshot>,
    /// The durable log after the snapshot, in order, contiguous.
    pub entries: Vec<Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is who it believes is.
    NotLeader { leader: Option<NodeId> },
    /// A leadership transfer is under way; proposals would be lost.
    Transferring,
}

/// A snapshot of the node's volatile position, for drivers, tests and the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub first_index: Index,
    pub last_index: Index,
}

pub struct Raft {
    _config: Config,
}

impl Raft {
    pub fn new(config: Config, initial: InitialState) -> Raft {
        let _ = initial;
        todo!("{config:?}")
    }
    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        todo!()
    }
    /// Handles a message from a peer. Messages from stale terms or unknown senders are ignored.
    pub fn step(&mut self, msg: Message) {
        let _ = msg;
        todo!()
    }
    /// Appends `data` to the log if this node is the leader; returns its index and term. The entry is
    /// committed once `committed` in a later `Ready` contains it; if a different entry shows up at that
    /// index, the proposal was lost.
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term), ProposeError> {
        let _ = data;
        todo!()
    }
    /// Requests a linearizable read. `ctx` comes back in a `ReadState` once the read is safe.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        let _ = ctx;
        todo!()
    }
    /// Asks the leader to hand leadership to `to` (dissertation §3.10).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        let _ = to;
        todo!()
    }
    pub fn has_ready(&self) -> bool {
        todo!()
    }
    pub fn ready(&mut self) -> Ready {
        todo!()
    }
    /// Reports that entries up to `index` (whose entry has `term`) and every hard state handed out with
    /// them are durable.
    pub fn persisted(&mut self, index: Index, term: Term) {
        let _ = (index, term);
        todo!()
    }
    /// Reports that the state machine has applied everything up to `index`.
    pub fn applied(&mut self, index: Index) {
        let _ = index;
        todo!()
    }
    /// Installs the driver's newest snapshot as the log's base: entries up to `snapshot.meta.index` are
    /// dropped from memory and the snapshot is what lagging followers will receive.
    pub fn compact(&mut self, snapshot: Snapshot) {
        let _ = snapshot;
        todo!()
    }
    pub fn status(&self) -> Status {
        todo!()
    }
    /// The in-memory log after the snapshot, for checks and tests.
    pub fn entries(&self) -> &[Entry] {
        todo!()
    }
    pub fn membership(&self) -> &Membership {
        todo!()
    }
}
