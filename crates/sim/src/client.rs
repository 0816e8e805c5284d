//! The workload: clients that each run one operation at a time against the node they believe leads,
//! following redirects, and the history of invocations and responses they record.

use raftkv_raft::NodeId;

use crate::linearizability::{Key, Op, OpKind, Value};

/// Who handles an operation right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Not accepted by any node yet: (re)try at `retry_at`.
    Routing { retry_at: u64 },
    /// Accepted by this node's core (`propose` or `read_index` returned Ok).
    Accepted { node: NodeId },
}

#[derive(Clone, Copy, Debug)]
pub struct Current {
    pub op_id: u64,
    /// Index of the operation in the history.
    pub slot: usize,
    pub stage: Stage,
    pub deadline: u64,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub id: u64,
    pub leader_guess: NodeId,
    pub current: Option<Current>,
    /// When the next operation may start (think time).
    pub next_at: u64,
    pub completed: u64,
}

/// How an operation ended, as the history records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Pending,
    Ok,
    /// A write that may or may not have happened: it stays in the history without a return.
    Unknown,
    /// A write that certainly did not happen, or a read with no answer: left out of the history.
    Dropped,
}

#[derive(Clone, Debug)]
pub struct Record {
    pub op: Op,
    pub fate: Fate,
    /// Virtual times, for humans reading a failure.
    pub called_at: u64,
    pub returned_at: Option<u64>,
}

/// The client-visible history. `clock` orders every invocation and response in the one thread, so that
/// the checker sees real-time order exactly.
#[derive(Default)]
pub struct History {
    pub records: Vec<Record>,
    clock: u64,
}

impl History {
    pub fn invoke(&mut self, client: u64, key: Key, kind: OpKind, now: u64) -> usize {
        self.clock += 1;
        self.records.push(Record {
            op: Op {
                client,
                key,
                kind,
                call: self.clock,
                ret: None,
            },
            fate: Fate::Pending,
            called_at: now,
            returned_at: None,
        });
        self.records.len() - 1
    }

    pub fn respond(&mut self, slot: usize, read_value: Option<Option<Value>>, now: u64) {
        self.clock += 1;
        let record = &mut self.records[slot];
        assert_eq!(
            record.fate,
            Fate::Pending,
            "an operation answered twice: {record:?}"
        );
        match (&mut record.op.kind, read_value) {
            (OpKind::Read { value }, Some(v)) => *value = v,
            (OpKind::Write { .. }, None) => {}
            (kind, _) => panic!("reply does not match the operation: {kind:?}"),
        }
        record.op.ret = Some(self.clock);
        record.fate = Fate::Ok;
        record.returned_at = Some(now);
    }

    pub fn settle(&mut self, slot: usize, fate: Fate) {
        let record = &mut self.records[slot];
        assert_eq!(
            record.fate,
            Fate::Pending,
            "an operation settled twice: {record:?}"
        );
        assert!(matches!(fate, Fate::Unknown | Fate::Dropped));
        record.fate = fate;
    }

    /// The history the checker sees: answered ops and writes of unknown outcome.
    pub fn for_checker(&self) -> Vec<Op> {
        self.records
            .iter()
            .filter(|r| match r.fate {
                Fate::Ok => true,
                Fate::Unknown | Fate::Pending => matches!(r.op.kind, OpKind::Write { .. }),
                Fate::Dropped => false,
            })
            .map(|r| r.op)
            .collect()
    }

    pub fn count(&self, fate: Fate) -> usize {
        self.records.iter().filter(|r| r.fate == fate).count()
    }
}
