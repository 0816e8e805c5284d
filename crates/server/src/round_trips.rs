//! Replication round-trip times per follower, as the leader sees them: from sending an Append whose
//! last entry is at index `i` to receiving the first acknowledgement of `i` or more (a follower that
//! took several Appends into one fsync answers them all with its last acknowledgement). It includes
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
        let histogram = self.histograms.entry(msg.from).or_insert_with(|| {
            metrics
                .peer_round_trip
                .get_or_create(&PeerLabels { peer: msg.from })
                .clone()
        });
        while let Some(&(index, at)) = sent.front() {
            if index > last_index {
                break;
            }
            sent.pop_front();
            histogram.observe(now.duration_since(at).as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raftkv_raft::{Entry, EntryKind};
    use std::time::Duration;

    fn append(to: u64, first: Index, last: Index) -> Message {
        Message {
            from: 1,
            to,
            term: 2,
            body: MessageBody::Append {
                prev_index: first - 1,
                prev_term: 2,
                entries: (first..=last)
                    .map(|index| Entry {
                        index,
                        term: 2,
                        kind: EntryKind::Normal,
                        data: Bytes::new(),
                    })
                    .collect(),
                commit: 0,
            },
        }
    }

    fn samples(metrics: &Metrics, peer: u64) -> String {
        let text = metrics.encode();
        let prefix =
            format!("raftkv_peer_replication_round_trip_seconds_count{{peer=\"{peer}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or("none")
            .to_string()
    }

    /// Three Appends answered by one acknowledgement (one fsync took them all) are three samples.
    #[test]
    fn one_acknowledgement_times_every_append_it_covers() {
        let metrics = Metrics::new();
        let mut trips = RoundTrips::default();
        let t0 = Instant::now();
        for (i, (first, last)) in [(1, 7), (8, 14), (15, 21), (22, 30)]
            .into_iter()
            .enumerate()
        {
            trips.sending(
                &append(2, first, last),
                t0 + Duration::from_millis(i as u64),
            );
        }
        let ack = Message {
            from: 2,
            to: 1,
            term: 2,
            body: MessageBody::AppendResponse(AppendResult::Accepted { last_index: 21 }),
        };
        trips.received(&ack, t0 + Duration::from_millis(5), &metrics);
        assert_eq!(samples(&metrics, 2), "3");
        // The fourth is still outstanding.
        assert_eq!(trips.sent[&2].len(), 1);
    }
}
