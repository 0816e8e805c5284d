//! Replication round-trip times per follower, as the leader sees them: from sending an Append whose
//! last entry is at index `i` to receiving the follower's acknowledgement of exactly `i`. It includes
//! the follower's fsync, which is what a slow follower costs a write.

use crate::metrics::{Metrics, PeerLabels};
use prometheus_client::metrics::histogram::Histogram;
use raftkv_raft::{AppendResult, Index, Message, MessageBody};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Appends remembered per follower; older ones are forgotten (their acknowledgements are then not
/// timed, which only thins the sample).
const MAX_OUTSTANDING: usize = 256;

#[derive(Default)]
pub struct RoundTrips {
    /// The term of the Appends remembered; a new term forgets them (another leader's log).
    term: u64,
    sent: HashMap<u64, VecDeque<(Index, Instant)>>,
    histograms: HashMap<u64, Histogram>,
}

impl RoundTrips {
    /// Notes an outgoing Append.
    pub fn sending(&mut self, msg: &Message, now: Instant) {
        let MessageBody::Append {
            prev_index,
            entries,
            ..
        } = &msg.body
        else {
            return;
        };
        if msg.term != self.term {
            self.term = msg.term;
            self.sent.clear();
        }
        let last = entries.last().map_or(*prev_index, |entry| entry.index);
        let sent = self.sent.entry(msg.to).or_default();
        if sent.back().is_some_and(|(index, _)| *index >= last) {
            // A retransmission or a probe: time the first send only.
            return;
        }
        if sent.len() == MAX_OUTSTANDING {
            sent.pop_front();
        }
        sent.push_back((last, now));
    }

    /// Times an incoming acknowledgement against the Append it answers.
    pub fn received(&mut self, msg: &Message, now: Instant, metrics: &Metrics) {
        let MessageBody::AppendResponse(AppendResult::Accepted { last_index }) = msg.body else {
            return;
        };
        if msg.term != self.term {
            return;
        }
        let Some(sent) = self.sent.get_mut(&msg.from) else {
            return;
        };
        while sent.front().is_some_and(|(index, _)| *index < last_index) {
            sent.pop_front();
        }
        if let Some(&(index, at)) = sent.front() {
            if index == last_index {
                sent.pop_front();
                self.histograms
                    .entry(msg.from)
                    .or_insert_with(|| {
                        metrics
                            .peer_round_trip
                            .get_or_create(&PeerLabels { peer: msg.from })
                            .clone()
                    })
                    .observe(now.duration_since(at).as_secs_f64());
            }
        }
    }
}
