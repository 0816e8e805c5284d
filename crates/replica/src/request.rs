//! A client request as the replica receives it, and the bookkeeping of one in progress.

use raftkv_kv::protocol::{MembersRequest, SessionSeq};
use raftkv_kv::{Command, Request};
use raftkv_raft::{Index, Term};

/// One client command and the driver's handle for its answer. A connection keeps its requests'
/// answers in request order, which is how pipelined replies stay in order.
#[derive(Debug)]
pub struct ClientRequest<H> {
    pub op: Op,
    pub handle: H,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A write, validated by the parser, to go through the log; in a session if it names one.
    Write {
        command: Command,
        session: Option<SessionSeq>,
    },
    /// `get` or `getm`, served through ReadIndex.
    Read(Request),
    /// `get` or `getm` that any node answers at once from its applied state, if that is at most
    /// `max_lag` entries behind the commit index it knows (`stale <max_lag> ...`).
    StaleRead { read: Request, max_lag: u64 },
    /// `members ...`: list or change the membership, on the leader.
    Members(MembersRequest),
}

pub(crate) struct PendingWrite<H> {
    pub(crate) term: Term,
    pub(crate) handle: H,
}

pub(crate) struct PendingRead<H> {
    pub(crate) request: Request,
    pub(crate) handle: H,
    /// The log's last index when the read arrived. Serving only after it is applied makes a pipelined
    /// `set` followed by `get` on one connection read its own write, as a client would expect, even
    /// though linearizability alone would allow ordering the concurrent read first.
    pub(crate) floor: Index,
    /// The leader's wall clock when the read was found to need a clock entry. Judged again after the
    /// entry is applied, it is at that same time, which the entry's stamp has reached: one clock entry
    /// per read at most, however long the commit took.
    pub(crate) judged_at_ms: Option<u64>,
}

impl Op {
    /// A write outside any session.
    pub fn write(command: Command) -> Op {
        Op::Write {
            command,
            session: None,
        }
    }
}
