//! The messages a group commit releases: an append acknowledgement covered by a later one in the same
//! batch is left out; everything else goes out as it was, in order.

use raftkv_raft::{AppendResult, Message, MessageBody};
use raftkv_replica::storage::released_messages;
use raftkv_replica::PersistJob;

fn accepted(to: u64, term: u64, last_index: u64) -> Message {
    Message {
        from: 2,
        to,
        term,
        body: MessageBody::AppendResponse(AppendResult::Accepted { last_index }),
    }
}

fn rejected(to: u64, term: u64, prev_index: u64) -> Message {
    Message {
        from: 2,
        to,
        term,
        body: MessageBody::AppendResponse(AppendResult::Rejected {
            prev_index,
            hint_index: prev_index - 1,
            hint_term: term,
        }),
    }
}

fn jobs(messages: Vec<Vec<Message>>) -> Vec<PersistJob> {
    messages
        .into_iter()
        .map(|messages_after_persist| PersistJob {
            messages_after_persist,
            ..PersistJob::default()
        })
        .collect()
}

#[test]
fn three_appends_in_one_sync_are_answered_once() {
    let mut batch = jobs(vec![
        vec![accepted(1, 3, 7)],
        vec![accepted(1, 3, 14)],
        vec![accepted(1, 3, 21)],
    ]);
    assert_eq!(released_messages(&mut batch), vec![accepted(1, 3, 21)]);
    assert!(batch
        .iter()
        .all(|job| job.messages_after_persist.is_empty()));
}

#[test]
fn rejections_other_terms_other_leaders_and_older_answers_stay() {
    let vote = Message {
        from: 2,
        to: 3,
        term: 4,
        body: MessageBody::VoteResponse { granted: true },
    };
    let messages = [
        accepted(1, 3, 7),  // covered by (1, 3, 9) below
        rejected(1, 3, 12), // a rejection says something an acceptance does not
        accepted(1, 2, 8),  // another term
        accepted(3, 3, 5),  // another leader
        vote.clone(),
        accepted(1, 3, 9),
        accepted(1, 3, 6), // later but lower: it covers nothing and is not covered by what follows
    ];
    let mut batch = jobs(vec![messages[..3].to_vec(), messages[3..].to_vec()]);
    assert_eq!(
        released_messages(&mut batch),
        vec![
            rejected(1, 3, 12),
            accepted(1, 2, 8),
            accepted(3, 3, 5),
            vote,
            accepted(1, 3, 9),
            accepted(1, 3, 6),
        ]
    );
}
