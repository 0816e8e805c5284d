//! The node-wide budget of queued reply bytes: values on their way back to clients that have not yet
//! reached a connection's write buffer.
//!
//! A reply to `get` shares its value with the store, but once the key is overwritten the queued reply
//! is the only owner: a crowd of clients that pipeline reads of large values and read their replies
//! slowly could otherwise hold any amount of memory. The node loop charges each reply's value bytes
//! when it produces it (never waiting: it must not block); the charge is released when the connection
//! has copied the reply into its bounded write buffer, or drops it. While more than the budget is
//! charged, connections stop reading new requests, so no new replies are produced until writers drain
//! (and a writer whose client accepts nothing for the request timeout is closed, releasing its share).
//!
//! Charges are also counted per connection, so that one slow reader cannot pause everyone: a
//! connection stops taking requests once its own queued replies pass its limit; while the node is past
//! its budget, only connections with nothing queued go on, and only up to twice the budget. A client
//! that reads its replies promptly therefore never waits on one that does not.

use raftkv_protocol::Reply;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Bytes of queued reply values, and the limit past which connections stop reading.
#[derive(Debug)]
pub struct ReplyBudget {
    queued: AtomicUsize,
    limit: usize,
    drained: Notify,
}

/// One connection's queued reply bytes.
#[derive(Debug, Default)]
pub struct ConnectionReplies {
    queued: AtomicUsize,
    drained: Notify,
}

impl ConnectionReplies {
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// One reply's share of the budget (the node's and its connection's), released on drop.
pub struct Charge {
    budget: Arc<ReplyBudget>,
    connection: Arc<ConnectionReplies>,
    bytes: usize,
}

/// A reply with its charge, as the node loop hands it to a connection.
pub type ChargedReply = (Reply, Option<Charge>);

impl ReplyBudget {
    pub fn new(limit: usize) -> Arc<ReplyBudget> {
        Arc::new(ReplyBudget {
            queued: AtomicUsize::new(0),
            limit,
            drained: Notify::new(),
        })
    }

    /// Charges `reply`'s value bytes to the node and to `connection` (nothing for replies without a
    /// value).
    pub fn charge(
        self: &Arc<Self>,
        reply: Reply,
        connection: &Arc<ConnectionReplies>,
    ) -> ChargedReply {
        let bytes = reply_bytes(&reply);
        if bytes == 0 {
            return (reply, None);
        }
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        connection.queued.fetch_add(bytes, Ordering::AcqRel);
        let charge = Charge {
            budget: self.clone(),
            connection: connection.clone(),
            bytes,
        };
        (reply, Some(charge))
    }

    /// Bytes charged now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether `connection` may take another request: its own queued replies are within
    /// `connection_limit`, and the node is within its budget, or (for a connection with nothing
    /// queued) within twice its budget.
    fn admits(&self, connection: &ConnectionReplies, connection_limit: usize) -> bool {
        let mine = connection.queued();
        let all = self.queued();
        mine <= connection_limit
            && (all <= self.limit || (mine == 0 && all <= self.limit.saturating_mul(2)))
    }

    /// Returns once `connection` may take another request (see [`ReplyBudget::admits`]).
    pub async fn wait_admitted(&self, connection: &ConnectionReplies, connection_limit: usize) {
        // The common case costs two atomic loads; registering waiters takes locks.
        if self.admits(connection, connection_limit) {
            return;
        }
        loop {
            let node_drained = self.drained.notified();
            let mine_drained = connection.drained.notified();
            tokio::pin!(node_drained, mine_drained);
            // Registered before the check, so a release between the check and the wait is not missed.
            node_drained.as_mut().enable();
            mine_drained.as_mut().enable();
            if self.admits(connection, connection_limit) {
                return;
            }
            tokio::select! {
                _ = node_drained => {}
                _ = mine_drained => {}
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let before = self.budget.queued.fetch_sub(self.bytes, Ordering::AcqRel);
        let after = before - self.bytes;
        let limit = self.budget.limit;
        // Waiters care about crossing the budget or twice it; wake them on either.
        let twice = limit.saturating_mul(2);
        if (before > limit && after <= limit) || (before > twice && after <= twice) {
            self.budget.drained.notify_waiters();
        }
        self.connection
            .queued
            .fetch_sub(self.bytes, Ordering::AcqRel);
        // The connection's reader may be waiting on its own limit, or for its queue to empty.
        self.connection.drained.notify_waiters();
    }
}

/// The bytes a reply holds in memory until it is written: values, keys of a KEYS or SCAN, and every
/// reply of a transaction.
fn reply_bytes(reply: &Reply) -> usize {
    match reply {
        Reply::Value { value } | Reply::ValueMeta { value, .. } => value.len(),
        Reply::Keys { keys, .. } => keys.iter().map(|key| key.len() + 16).sum(),
        Reply::Multi { replies } => replies.iter().map(reply_bytes).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn value(len: usize) -> Reply {
        Reply::Value {
            value: Bytes::from(vec![b'v'; len]),
        }
    }

    #[tokio::test]
    async fn readers_wait_while_replies_exceed_the_budget_and_resume_when_they_drain() {
        let budget = ReplyBudget::new(100);
        let slow = Arc::new(ConnectionReplies::default());
        let (_, none) = budget.charge(Reply::Ok { version: 1 }, &slow);
        assert!(none.is_none());
        let first = budget.charge(value(60), &slow);
        let second = budget.charge(value(60), &slow);
        assert_eq!(budget.queued(), 120);
        assert_eq!(slow.queued(), 120);
        // A connection with nothing queued goes on while the node is within twice its budget.
        let idle = ConnectionReplies::default();
        tokio::time::timeout(Duration::from_secs(5), budget.wait_admitted(&idle, 1000))
            .await
            .expect("a connection with nothing queued is admitted");
        // The slow one waits until the node is back within its budget.
        let waiter = {
            let (budget, slow) = (budget.clone(), slow.clone());
            tokio::spawn(async move { budget.wait_admitted(&slow, 1000).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a reader went on past the budget");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the reader resumed")
            .expect("no panic");
        drop(second);
        assert_eq!(budget.queued(), 0);
        assert_eq!(slow.queued(), 0);
    }

    #[tokio::test]
    async fn a_connection_waits_on_its_own_limit() {
        let budget = ReplyBudget::new(1000);
        let mine = Arc::new(ConnectionReplies::default());
        let charge = budget.charge(value(60), &mine);
        let waiter = {
            let (budget, mine) = (budget.clone(), mine.clone());
            tokio::spawn(async move { budget.wait_admitted(&mine, 50).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the connection went on past its own limit"
        );
        drop(charge);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("resumed")
            .expect("no panic");
    }
}
