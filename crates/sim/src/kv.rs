//! The tiny replicated state machine: a map of registers. Log entries carry `put key value` commands
//! tagged with the client operation's unique id; snapshots are the whole map.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use raftkv_raft::{Index, Snapshot, Term};

use crate::linearizability::{Key, Value};

/// `put key value`, tagged with the id of the client operation that proposed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Put {
    pub op_id: u64,
    pub key: Key,
    pub value: Value,
}

impl Put {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(24);
        for word in [self.op_id, self.key, self.value] {
            buf.extend_from_slice(&word.to_le_bytes());
        }
        buf.freeze()
    }

    pub fn decode(data: &[u8]) -> Put {
        assert_eq!(data.len(), 24, "a normal entry holds one 24-byte put");
        let word =
            |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Put {
            op_id: word(0),
            key: word(1),
            value: word(2),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub map: BTreeMap<Key, Value>,
    pub applied: Index,
    pub applied_term: Term,
    /// Where the last snapshot (taken or restored) stands.
    pub snapshot_index: Index,
}

impl StateMachine {
    pub fn apply(&mut self, index: Index, term: Term, put: Option<Put>) {
        assert_eq!(
            index,
            self.applied + 1,
            "state machine: entries must be applied in order, without gaps"
        );
        if let Some(put) = put {
            self.map.insert(put.key, put.value);
        }
        self.applied = index;
        self.applied_term = term;
    }

    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.map.len() * 16);
        for (key, value) in &self.map {
            buf.extend_from_slice(&key.to_le_bytes());
            buf.extend_from_slice(&value.to_le_bytes());
        }
        buf.freeze()
    }

    pub fn restore(snapshot: &Snapshot) -> StateMachine {
        let data = &snapshot.data;
        assert_eq!(
            data.len() % 16,
            0,
            "snapshot data is a list of (key, value) pairs"
        );
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let map = (0..data.len() / 16)
            .map(|i| (word(i * 16), word(i * 16 + 8)))
            .collect();
        StateMachine {
            map,
            applied: snapshot.meta.index,
            applied_term: snapshot.meta.term,
            snapshot_index: snapshot.meta.index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_raft::SnapshotMeta;

    #[test]
    fn put_and_snapshot_round_trip() {
        let put = Put {
            op_id: 7,
            key: 3,
            value: 99,
        };
        assert_eq!(Put::decode(&put.encode()), put);
        let mut sm = StateMachine::default();
        sm.apply(1, 1, Some(put));
        sm.apply(2, 1, None);
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 2,
                term: 1,
                ..Default::default()
            },
            data: sm.encode(),
        };
        let restored = StateMachine::restore(&snap);
        assert_eq!(restored.map, sm.map);
        assert_eq!(restored.applied, 2);
    }
}
