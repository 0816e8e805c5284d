//! MULTI/EXEC as one log entry: the watched keys are checked and every op applied at one index,
//! so no other write can come between them on any replica.

use super::Store;
use crate::command::{TxOp, Watch};
use crate::protocol::{Reply, Request};

impl Store {
    pub(super) fn transaction(
        &mut self,
        index: u64,
        now_ms: u64,
        watches: &[Watch],
        ops: &[TxOp],
    ) -> Reply {
        let unchanged = watches.iter().all(|watch| {
            let version = self.live(&watch.key, now_ms).map_or(0, |e| e.version);
            version == watch.version
        });
        if !unchanged {
            return Reply::ExecAborted;
        }
        let replies = ops
            .iter()
            .map(|op| match op {
                TxOp::Write(command) => self.apply_command(index, command),
                TxOp::Get(key) => self.read(&Request::Get { key: key.clone() }, now_ms),
                TxOp::Pttl(key) => self.read(&Request::Pttl { key: key.clone() }, now_ms),
            })
            .collect();
        Reply::Multi { replies }
    }
}
