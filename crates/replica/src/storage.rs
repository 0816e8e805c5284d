//! What a replica asks of its disk, and the group commit that does it.
//!
//! The replica emits one [`PersistJob`] per Ready that must become durable, in order. The driver's disk
//! side takes every job waiting, hands them to [`write_batches`] (which writes them all and syncs once),
//! then reports the new [`Durable`] position back to the replica and sends the messages that waited for
//! it. The server does this on its disk thread over the real file system; the simulator does the same
//! over its simulated one, with the same function.

use raftkv_raft::{
    AppendResult, Entry, HardState, Index, Message, MessageBody, NodeId, Snapshot, Term,
};
use raftkv_wal::{Wal, WalError, WrittenSnapshot};

/// One Ready's worth of work for the disk.
#[derive(Debug, Default)]
pub struct PersistJob {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    /// Sent only once everything in this job (and every earlier one) is durable.
    pub messages_after_persist: Vec<Message>,
    /// A snapshot of this node's own state, already written durably elsewhere: adopted after the batch,
    /// then the log prefix it covers is compacted away.
    pub compact_to: Option<WrittenSnapshot>,
}

/// What the disk has made durable so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub index: Index,
    pub term: Term,
    /// Bumped on every sync, so a driver can tell a new report from an old one.
    pub syncs: u64,
    /// Set when the disk failed: the node must stop.
    pub failed: bool,
}

/// Writes every job of `batch` in order and syncs once (group commit), advancing `position` to the last
/// entry or snapshot written. On error nothing after the failing write may be assumed durable: the
/// caller must stop the node.
pub fn write_batches(
    wal: &mut Wal,
    batch: &mut [PersistJob],
    position: &mut Durable,
) -> Result<(), WalError> {
    for job in batch.iter_mut() {
        if let Some(snapshot) = &job.snapshot {
            wal.save_snapshot(snapshot)?;
            position.index = snapshot.meta.index;
            position.term = snapshot.meta.term;
        }
        if !job.entries.is_empty() {
            wal.append(&job.entries)?;
            if let Some(last) = job.entries.last() {
                position.index = last.index;
                position.term = last.term;
            }
        }
        if let Some(hs) = job.hard_state {
            wal.set_hard_state(hs)?;
        }
        if let Some(written) = job.compact_to.take() {
            // The file is already durable; adopting it syncs what is buffered first, then compacting
            // deletes whole segments, so this costs no more than a group commit.
            let index = written.index();
            wal.sync()?;
            wal.adopt_snapshot(written)?;
            wal.compact(index)?;
            tracing::info!(
                index,
                disk_bytes = wal.disk_usage(),
                "snapshot adopted and log compacted"
            );
        }
    }
    wal.sync()?;
    position.syncs += 1;
    Ok(())
}

/// Takes the messages the jobs of one group commit held back, in order, leaving out every append
/// acknowledgement that a later one in the same batch covers: an `Accepted { last_index }` says the
/// log matches up to `last_index`, so a later acceptance to the same leader, in the same term, of at
/// least that index says everything the earlier one did (the leader keeps the highest match and frees
/// its in-flight window up to it). A follower that took three appends into one fdatasync then answers
/// once instead of three times. Rejections and every other message are kept as they are.
pub fn released_messages(batch: &mut [PersistJob]) -> Vec<Message> {
    let mut messages: Vec<Message> = batch
        .iter_mut()
        .flat_map(|job| std::mem::take(&mut job.messages_after_persist))
        .collect();
    let mut covered = vec![false; messages.len()];
    // Walking backwards, remember the highest acceptance seen per (leader, term).
    let mut latest: Vec<(NodeId, Term, Index)> = Vec::new();
    for (at, msg) in messages.iter().enumerate().rev() {
        let MessageBody::AppendResponse(AppendResult::Accepted { last_index }) = msg.body else {
            continue;
        };
        match latest
            .iter_mut()
            .find(|(to, term, _)| *to == msg.to && *term == msg.term)
        {
            Some((_, _, highest)) if *highest >= last_index => covered[at] = true,
            Some((_, _, highest)) => *highest = last_index,
            None => latest.push((msg.to, msg.term, last_index)),
        }
    }
    let mut at = 0;
    messages.retain(|_| {
        at += 1;
        !covered[at - 1]
    });
    messages
}
