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

/// One reply's share of the budget, released on drop.
pub struct Charge {
    budget: Arc<ReplyBudget>,
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

    /// Charges `reply`'s value bytes (nothing for replies without a value).
    pub fn charge(self: &Arc<Self>, reply: Reply) -> ChargedReply {
        let bytes = match &reply {
            Reply::Value { value } | Reply::ValueMeta { value, .. } => value.len(),
            _ => 0,
        };
        if bytes == 0 {
            return (reply, None);
        }
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        let charge = Charge {
            budget: self.clone(),
            bytes,
        };
        (reply, Some(charge))
    }

    /// Bytes charged now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Returns once the queued bytes are within the limit.
    pub async fn wait_within_limit(&self) {
        // The common case costs one atomic load; registering a waiter takes a lock.
        if self.queued() <= self.limit {
            return;
        }
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a release between the check and the wait is not missed.
            drained.as_mut().enable();
            if self.queued() <= self.limit {
                return;
            }
            drained.await;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let before = self.budget.queued.fetch_sub(self.bytes, Ordering::AcqRel);
        if before > self.budget.limit && before - self.bytes <= self.budget.limit {
            self.budget.drained.notify_waiters();
        }
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
        let (_, none) = budget.charge(Reply::Ok { version: 1 });
        assert!(none.is_none());
        let first = budget.charge(value(60));
        let second = budget.charge(value(60));
        assert_eq!(budget.queued(), 120);
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.wait_within_limit().await })
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
    }
}
