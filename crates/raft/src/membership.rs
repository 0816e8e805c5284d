//! Who is in the cluster: voters, learners, and the driver's opaque description of them; how a single
//! change turns one membership into the next (dissertation §4.1–4.2); and the bytes a `Config` entry
//! and a snapshot carry it in.
//!
//! Changes go one server at a time. Any two majorities of memberships that differ by one voter
//! overlap, so no change can produce two leaders in a term or lose a committed entry, provided that
//! a leader starts a change only after committing an entry of its own term and only once the previous
//! change has committed (both enforced by [`crate::Raft::propose_conf_change`]).

use bytes::Bytes;

use crate::types::NodeId;

/// Most members (voters plus learners) a membership may list. Far above any real cluster; it bounds what
/// a decoded entry from a peer or a disk can make a node allocate.
pub const MAX_MEMBERS: usize = 1024;
/// Most bytes of driver context a membership may carry.
pub const MAX_CONTEXT_BYTES: usize = 1 << 20;

const ENCODING_VERSION: u8 = 1;

/// The members of the cluster. Voters elect leaders and count toward commit; learners receive the log
/// and snapshots but count for nothing. `context` is the driver's, carried along unread (raftkv keeps
/// every member's addresses there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Sorted, without duplicates.
    pub voters: Vec<NodeId>,
    /// Sorted, without duplicates, disjoint from `voters`.
    pub learners: Vec<NodeId>,
    pub context: Bytes,
}

/// One change of membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// A new, non-voting member.
    AddLearner(NodeId),
    /// A learner becomes a voter (only once it has caught up with the leader).
    Promote(NodeId),
    /// A voter or a learner leaves. Removing the leader is allowed: it steps down once the change
    /// commits, handing leadership to the most caught-up voter.
    Remove(NodeId),
}

impl ConfChange {
    pub fn node(&self) -> NodeId {
        match *self {
            ConfChange::AddLearner(id) | ConfChange::Promote(id) | ConfChange::Remove(id) => id,
        }
    }
}

/// Why a membership change was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// This node is not the leader; `leader` is who it believes is.
    NotLeader {
        leader: Option<NodeId>,
    },
    /// A leadership transfer is under way.
    Transferring,
    /// The previous change has not committed yet, or this leader has not yet committed an entry of its
    /// own term (the rule that keeps single-server changes safe across leader changes).
    InProgress,
    AlreadyMember {
        id: NodeId,
    },
    UnknownMember {
        id: NodeId,
    },
    /// `Promote` of a node that is already a voter.
    NotLearner {
        id: NodeId,
    },
    /// The learner is `lag` entries behind the leader; more than the caller allows.
    NotCaughtUp {
        id: NodeId,
        lag: u64,
    },
    /// The change would leave the cluster without a voter.
    NoVotersLeft,
    /// The new voters would have no majority of nodes the leader has heard from recently: the change
    /// could never commit, and nothing could undo it, until they came back. `responding` of `needed`.
    NoLiveMajority {
        responding: usize,
        needed: usize,
    },
    /// Node id 0 means "none" and cannot be a member.
    InvalidId,
    /// More than [`MAX_MEMBERS`] members or [`MAX_CONTEXT_BYTES`] of context.
    TooLarge,
}

impl std::fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfChangeError::NotLeader { leader: Some(id) } => {
                write!(f, "not the leader (node {id} is)")
            }
            ConfChangeError::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            ConfChangeError::Transferring => write!(f, "leadership transfer in progress"),
            ConfChangeError::InProgress => {
                write!(
                    f,
                    "another membership change is in progress; retry once it commits"
                )
            }
            ConfChangeError::AlreadyMember { id } => write!(f, "node {id} is already a member"),
            ConfChangeError::UnknownMember { id } => write!(f, "node {id} is not a member"),
            ConfChangeError::NotLearner { id } => write!(f, "node {id} is already a voter"),
            ConfChangeError::NotCaughtUp { id, lag } => write!(
                f,
                "learner {id} is not caught up ({lag} entries behind the leader); retry later"
            ),
            ConfChangeError::NoVotersLeft => write!(f, "the change would leave no voters"),
            ConfChangeError::NoLiveMajority { responding, needed } => write!(
                f,
                "the new voters would have no working majority (only {responding} of the {needed} \
                 needed respond); bring nodes back first"
            ),
            ConfChangeError::InvalidId => write!(f, "node id 0 is not allowed"),
            ConfChangeError::TooLarge => write!(f, "the membership would be too large"),
        }
    }
}

impl std::error::Error for ConfChangeError {}

impl Membership {
    /// A membership of `voters` only, without context.
    pub fn new(voters: Vec<NodeId>) -> Self {
        Membership {
            voters: sorted(voters),
            learners: Vec::new(),
            context: Bytes::new(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(&self.learners).copied()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The membership after `change`, with `context` as its new context; or why the change is not
    /// possible from this membership. Says nothing about timing (in progress, caught up): that is the
    /// leader's to check.
    pub fn apply(&self, change: ConfChange, context: Bytes) -> Result<Membership, ConfChangeError> {
        let id = change.node();
        if id == 0 {
            return Err(ConfChangeError::InvalidId);
        }
        let mut next = Membership {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            context,
        };
        match change {
            ConfChange::AddLearner(_) => {
                if self.contains(id) {
                    return Err(ConfChangeError::AlreadyMember { id });
                }
                next.learners = sorted([next.learners, vec![id]].concat());
            }
            ConfChange::Promote(_) => {
                if self.is_voter(id) {
                    return Err(ConfChangeError::NotLearner { id });
                }
                if !self.is_learner(id) {
                    return Err(ConfChangeError::UnknownMember { id });
                }
                next.learners.retain(|l| *l != id);
                next.voters = sorted([next.voters, vec![id]].concat());
            }
            ConfChange::Remove(_) => {
                if !self.contains(id) {
                    return Err(ConfChangeError::UnknownMember { id });
                }
                next.voters.retain(|v| *v != id);
                next.learners.retain(|l| *l != id);
                if next.voters.is_empty() {
                    return Err(ConfChangeError::NoVotersLeft);
                }
            }
        }
        if next.voters.len() + next.learners.len() > MAX_MEMBERS
            || next.context.len() > MAX_CONTEXT_BYTES
        {
            return Err(ConfChangeError::TooLarge);
        }
        Ok(next)
    }

    /// Appends the membership's encoding (the data of a `Config` entry, and a snapshot's membership on
    /// the wire and on disk): a version byte, then voters and learners as `u32` counts of `u64` ids,
    /// then the context as a `u32` length and its bytes, all little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(ENCODING_VERSION);
        for list in [&self.voters, &self.learners] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for id in list {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.context.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.context);
    }

    /// Bytes [`Membership::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + 4 + 8 * self.voters.len() + 4 + 8 * self.learners.len() + 4 + self.context.len()
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        Bytes::from(out)
    }

    /// Decodes a membership from the start of `data`; returns it and the bytes it took. `None` for
    /// anything [`Membership::encode`] would not have written: unknown version, truncated, lists not
    /// sorted or not disjoint, id 0, or past [`MAX_MEMBERS`] / [`MAX_CONTEXT_BYTES`].
    pub fn decode(data: &Bytes) -> Option<(Membership, usize)> {
        let mut at = 0usize;
        let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
            let end = at.checked_add(n)?;
            let bytes = data.get(*at..end)?;
            *at = end;
            Some(bytes)
        };
        if *take(&mut at, 1)?.first()? != ENCODING_VERSION {
            return None;
        }
        let mut lists: [Vec<NodeId>; 2] = [Vec::new(), Vec::new()];
        let mut total = 0usize;
        for list in lists.iter_mut() {
            let count = u32::from_le_bytes(take(&mut at, 4)?.try_into().ok()?) as usize;
            total += count;
            if total > MAX_MEMBERS {
                return None;
            }
            for _ in 0..count {
                let id = u64::from_le_bytes(take(&mut at, 8)?.try_into().ok()?);
                if id == 0 || list.last().is_some_and(|last| *last >= id) {
                    return None;
                }
                list.push(id);
            }
        }
        let context_len = u32::from_le_bytes(take(&mut at, 4)?.try_into().ok()?) as usize;
        if context_len > MAX_CONTEXT_BYTES {
            return None;
        }
        take(&mut at, context_len)?;
        let context = data.slice(at - context_len..at);
        let [voters, learners] = lists;
        if learners.iter().any(|l| voters.binary_search(l).is_ok()) {
            return None;
        }
        Some((
            Membership {
                voters,
                learners,
                context,
            },
            at,
        ))
    }

    /// Decodes a `Config` entry's data, which must hold exactly one membership.
    pub fn from_entry_data(data: &Bytes) -> Option<Membership> {
        match Membership::decode(data)? {
            (membership, used) if used == data.len() => Some(membership),
            _ => None,
        }
    }
}

fn sorted(mut ids: Vec<NodeId>) -> Vec<NodeId> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(voters: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            context: Bytes::from_static(b"ctx"),
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_what_encode_never_writes() {
        let m = membership(&[1, 2, 3], &[7]);
        let bytes = m.to_bytes();
        assert_eq!(bytes.len(), m.encoded_len());
        assert_eq!(Membership::from_entry_data(&bytes), Some(m.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(Membership::from_entry_data(&bytes.slice(..cut)), None);
        }
        let unsorted = membership(&[2, 1], &[]).to_bytes();
        assert_eq!(Membership::from_entry_data(&unsorted), None);
        let overlapping = membership(&[1, 2], &[2]).to_bytes();
        assert_eq!(Membership::from_entry_data(&overlapping), None);
        let zero = membership(&[0, 1], &[]).to_bytes();
        assert_eq!(Membership::from_entry_data(&zero), None);
        let mut huge = vec![ENCODING_VERSION];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Membership::from_entry_data(&Bytes::from(huge)), None);
    }

    #[test]
    fn changes_check_who_is_a_member() {
        let m = membership(&[1, 2, 3], &[4]);
        let ctx = Bytes::new;
        assert_eq!(
            m.apply(ConfChange::AddLearner(5), ctx()).unwrap().learners,
            vec![4, 5]
        );
        assert_eq!(
            m.apply(ConfChange::AddLearner(2), ctx()),
            Err(ConfChangeError::AlreadyMember { id: 2 })
        );
        let promoted = m.apply(ConfChange::Promote(4), ctx()).unwrap();
        assert_eq!(
            (promoted.voters, promoted.learners),
            (vec![1, 2, 3, 4], vec![])
        );
        assert_eq!(
            m.apply(ConfChange::Promote(1), ctx()),
            Err(ConfChangeError::NotLearner { id: 1 })
        );
        assert_eq!(
            m.apply(ConfChange::Promote(9), ctx()),
            Err(ConfChangeError::UnknownMember { id: 9 })
        );
        assert_eq!(
            m.apply(ConfChange::Remove(9), ctx()),
            Err(ConfChangeError::UnknownMember { id: 9 })
        );
        assert_eq!(
            m.apply(ConfChange::Remove(2), ctx()).unwrap().voters,
            vec![1, 3]
        );
        assert_eq!(
            membership(&[1], &[2]).apply(ConfChange::Remove(1), ctx()),
            Err(ConfChangeError::NoVotersLeft)
        );
        assert_eq!(
            m.apply(ConfChange::AddLearner(0), ctx()),
            Err(ConfChangeError::InvalidId)
        );
    }
}
