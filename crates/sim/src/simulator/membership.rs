//! Membership changes under fault: in a seed that has them, an operator adds learners, promotes
//! them, removes voters and learners (the leader too), and adds removed nodes back, through the same
//! `members ...` requests `raftkv members` sends, while every other fault goes on.

use std::collections::BTreeSet;

use raftkv_kv::protocol::MembersRequest;
use raftkv_raft::NodeId;
use raftkv_replica::Op;

use super::Simulator;
use crate::rng::Rng;

/// What a seed draws for membership changes, from a generator of its own so that seeds without them
/// run as they did before.
#[derive(Clone, Debug)]
pub struct MembershipPlan {
    /// How many of the nodes form the initial cluster; the rest start empty and join later.
    pub initial_voters: usize,
    /// Chance (per million, per ms) of a change.
    pub change_ppm: u32,
}

impl MembershipPlan {
    pub fn draw(seed: u64, nodes: usize) -> Option<MembershipPlan> {
        let mut rng = Rng::new(seed ^ 0x3E3B_E125);
        if !rng.chance(400_000) {
            return None;
        }
        Some(MembershipPlan {
            initial_voters: if nodes == 5 { 3 } else { nodes },
            change_ppm: rng.range(2_000, 10_000) as u32,
        })
    }
}

impl Simulator {
    /// Asks the leader for one random change its membership allows (it may still refuse: a change in
    /// progress, a learner not caught up); the answer is not waited for.
    pub(super) fn change_membership(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        let Some(replica) = self.nodes[(leader - 1) as usize].replica.as_ref() else {
            return;
        };
        let membership = replica.raft().membership().clone();
        let all: Vec<NodeId> = (1..=self.params.nodes as NodeId).collect();
        let outsiders: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|id| !membership.contains(*id))
            .collect();
        let members: Vec<NodeId> = membership.members().collect();
        let request = match self.rng.below(3) {
            0 if !outsiders.is_empty() => {
                let id = outsiders[self.rng.index(outsiders.len())];
                // The operator starts the node with --join, which tells it every member.
                self.nodes[(id - 1) as usize].join_peers =
                    all.iter().copied().collect::<BTreeSet<_>>();
                MembersRequest::AddLearner {
                    id,
                    client_addr: format!("node{id}:{}", super::BASE_PORT + id as u16),
                    peer_addr: format!("node{id}:peer"),
                    // Joined nodes carry a Redis address, so books with and without one are in logs
                    // and snapshots (the founders' have none).
                    resp_addr: Some(format!("node{id}:resp")),
                }
            }
            1 if !membership.learners.is_empty() => MembersRequest::Promote {
                id: membership.learners[self.rng.index(membership.learners.len())],
            },
            2 if membership.voters.len() > 2 || !membership.learners.is_empty() => {
                let id = if self.rng.chance(200_000) {
                    leader
                } else {
                    members[self.rng.index(members.len())]
                };
                MembersRequest::Remove { id }
            }
            _ => return,
        };
        let op = self.next_op_id;
        self.next_op_id += 1;
        self.trace(|| format!("membership: ask leader {leader}: {request:?}"));
        self.nodes[(leader - 1) as usize].request(self.now, Op::Members(request), op);
        self.stats.membership_requests += 1;
    }
}
