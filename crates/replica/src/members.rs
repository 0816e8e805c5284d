//! Membership as raftkv sees it: every member's addresses (the [`AddressBook`] that rides in the core's
//! membership context), the `members ...` admin requests, and the bootstrap entry that puts a new
//! cluster's first membership into its log.
//!
//! Changes go through the core one server at a time ([`raftkv_raft::ConfChange`]); a change is answered
//! once its `Config` entry is applied, with the membership table as the leader sees it then.

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_kv::protocol::{MemberRow, MembersRequest, MembersTable, MAX_ADDRESS_LEN};
use raftkv_kv::Reply;
use raftkv_raft::{
    ConfChange, ConfChangeError, Entry, EntryKind, HardState, InitialState, Membership, NodeId,
    Role,
};
use raftkv_wal::{Wal, WalError};
use tracing::{info, warn};

use crate::replica::Replica;

/// A learner is promoted only when at most this many entries behind the leader's log.
pub const DEFAULT_PROMOTE_MAX_LAG: u64 = 1_000;

/// How other nodes and clients reach one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Where clients connect (`host:port`), for redirects and `members` tables.
    pub client: String,
    /// Where peers connect (`host:port`).
    pub peer: String,
    /// Where Redis clients connect, if the node has a RESP port.
    pub resp: Option<String>,
}

/// Marks the section of RESP addresses after the members in an encoded [`AddressBook`].
const RESP_SECTION: u8 = 1;

/// Reads an encoded [`AddressBook`] front to back; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    /// A `u16` length and that many bytes of UTF-8, at most [`MAX_ADDRESS_LEN`].
    fn address(&mut self) -> Option<String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        if len > MAX_ADDRESS_LEN {
            return None;
        }
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Every member's addresses, by id. Encoded into the core's membership context: a `u32` count, then
/// per member its id (`u64`) and both addresses (each a `u16` length and the bytes), little-endian;
/// then, if any member has a RESP address, the byte [`RESP_SECTION`] and per member, in ascending id
/// order (the members' order too, since the book is a sorted map), a `u16` length and the address
/// (0: none). Contexts written before RESP addresses end after the
/// members and still decode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressBook {
    pub members: BTreeMap<NodeId, MemberAddrs>,
}

impl AddressBook {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for (id, addrs) in &self.members {
            out.extend_from_slice(&id.to_le_bytes());
            for addr in [&addrs.client, &addrs.peer] {
                out.extend_from_slice(&(addr.len() as u16).to_le_bytes());
                out.extend_from_slice(addr.as_bytes());
            }
        }
        if self.members.values().any(|addrs| addrs.resp.is_some()) {
            out.push(RESP_SECTION);
            for addrs in self.members.values() {
                let resp = addrs.resp.as_deref().unwrap_or("");
                out.extend_from_slice(&(resp.len() as u16).to_le_bytes());
                out.extend_from_slice(resp.as_bytes());
            }
        }
        Bytes::from(out)
    }

    /// Decodes a context; an empty one (a cluster bootstrapped before addresses were in the log) is an
    /// empty book. `None` for anything [`AddressBook::encode`] would not write.
    pub fn decode(context: &[u8]) -> Option<AddressBook> {
        let mut book = AddressBook::default();
        if context.is_empty() {
            return Some(book);
        }
        let mut reader = Cursor { bytes: context };
        let count = u32::from_le_bytes(reader.take(4)?.try_into().ok()?);
        for _ in 0..count {
            let id = u64::from_le_bytes(reader.take(8)?.try_into().ok()?);
            let (client, peer) = (reader.address()?, reader.address()?);
            let addrs = MemberAddrs {
                client,
                peer,
                resp: None,
            };
            if book.members.insert(id, addrs).is_some() {
                return None;
            }
        }
        if !reader.bytes.is_empty() {
            if reader.take(1)? != [RESP_SECTION] {
                return None;
            }
            for addrs in book.members.values_mut() {
                let resp = reader.address()?;
                addrs.resp = (!resp.is_empty()).then_some(resp);
            }
        }
        reader.bytes.is_empty().then_some(book)
    }
}

/// The first entry of a new cluster's log: its membership, with every member's addresses, at index 1
/// and term 1, already committed. Every node of the cluster writes the same one before it starts, so
/// the cluster agrees on it without an election; from then on the membership in the log, not the
/// cluster file, is the truth.
pub fn bootstrap_entry(book: &AddressBook) -> (Entry, HardState) {
    let membership = Membership {
        voters: book.members.keys().copied().collect(),
        learners: Vec::new(),
        context: book.encode(),
    };
    let entry = Entry {
        index: 1,
        term: 1,
        kind: EntryKind::Config,
        data: membership.to_bytes(),
    };
    let hard_state = HardState {
        term: 1,
        vote: None,
        commit: 1,
    };
    (entry, hard_state)
}

/// Whether a data directory held nothing at all (a node that has never run).
pub fn is_fresh(initial: &InitialState) -> bool {
    initial.snapshot.is_none()
        && initial.entries.is_empty()
        && initial.hard_state == HardState::default()
}

/// Writes the [`bootstrap_entry`] for `book` and its hard state durably, and adds them to what the node
/// starts from. For a node of a new cluster, before its replica starts.
pub fn write_bootstrap(
    wal: &mut Wal,
    initial: &mut InitialState,
    book: &AddressBook,
) -> Result<(), WalError> {
    let (entry, hard_state) = bootstrap_entry(book);
    wal.append(std::slice::from_ref(&entry))?;
    wal.set_hard_state(hard_state)?;
    wal.sync()?;
    initial.entries.push(entry);
    initial.hard_state = hard_state;
    Ok(())
}

impl<H> Replica<H> {
    /// Every member's addresses: the membership's own, else (a cluster bootstrapped before addresses
    /// were in the log) the configured ones.
    pub fn address_book(&self) -> AddressBook {
        self.book_of(self.raft.membership())
    }

    /// The addresses of `membership`'s members (see [`Replica::address_book`]).
    fn book_of(&self, membership: &Membership) -> AddressBook {
        let mut book = AddressBook::decode(&membership.context).unwrap_or_default();
        for id in membership.members() {
            if let (false, Some(client)) = (
                book.members.contains_key(&id),
                self.config.client_addrs.get(&id),
            ) {
                let addrs = MemberAddrs {
                    client: client.clone(),
                    peer: self.config.peer_addrs.get(&id).cloned().unwrap_or_default(),
                    resp: None,
                };
                book.members.insert(id, addrs);
            }
        }
        book.members.retain(|id, _| membership.contains(*id));
        book
    }

    /// Where clients reach member `id`.
    pub(crate) fn client_addr_of(&self, id: NodeId) -> Option<String> {
        self.address_book()
            .members
            .remove(&id)
            .map(|addrs| addrs.client)
            .or_else(|| self.config.client_addrs.get(&id).cloned())
    }

    /// Whether this node is in its current membership.
    pub fn is_member(&self) -> bool {
        self.raft.membership().contains(self.id)
    }

    /// The membership table as this (leading) node sees it.
    pub(crate) fn members_table(&self) -> MembersTable {
        let status = self.raft.status();
        let membership = self.raft.membership();
        let book = self.address_book();
        let members = membership
            .members()
            .map(|id| {
                let addrs = book.members.get(&id).cloned().unwrap_or_default();
                let match_index = if id == self.id {
                    status.last_index
                } else {
                    self.raft.match_index(id).unwrap_or(0)
                };
                MemberRow {
                    id,
                    voter: membership.is_voter(id),
                    client_addr: addrs.client,
                    peer_addr: addrs.peer,
                    match_index,
                }
            })
            .collect();
        MembersTable {
            leader: status.leader.unwrap_or(0),
            last_index: status.last_index,
            config_index: self.raft.config_index(),
            committed: status.commit >= self.raft.config_index(),
            members,
        }
    }

    pub(crate) fn members_reply(&self) -> Reply {
        Reply::Members {
            table: Bytes::from(self.members_table().encode()),
        }
    }

    /// A `members ...` request on the leader: a list is answered at once, a change is proposed and
    /// answered when its entry is applied (or refused now, with the reason).
    pub(crate) fn start_members(&mut self, request: MembersRequest, handle: H) {
        if self.raft.status().role != Role::Leader {
            self.out.replies.push((handle, Reply::ErrInternal));
            return;
        }
        let mut book = self.address_book();
        let change = match request {
            MembersRequest::List => {
                let reply = self.members_reply();
                self.out.replies.push((handle, reply));
                return;
            }
            MembersRequest::AddLearner {
                id,
                client_addr,
                peer_addr,
                resp_addr,
            } => {
                if !self.raft.membership().contains(id) {
                    let addrs = MemberAddrs {
                        client: client_addr,
                        peer: peer_addr,
                        resp: resp_addr,
                    };
                    book.members.insert(id, addrs);
                }
                ConfChange::AddLearner(id)
            }
            MembersRequest::Promote { id } => ConfChange::Promote(id),
            MembersRequest::Remove { id } => {
                book.members.remove(&id);
                ConfChange::Remove(id)
            }
        };
        let max_lag = self.config.promote_max_lag;
        match self
            .raft
            .propose_conf_change(change, book.encode(), max_lag)
        {
            Ok((index, term)) => {
                info!(?change, index, "membership change proposed");
                self.writes
                    .insert(index, crate::request::PendingWrite { term, handle });
            }
            Err(ConfChangeError::NotLeader { .. }) => {
                self.out.replies.push((handle, Reply::ErrInternal));
            }
            Err(error) => {
                warn!(?change, "membership change refused: {error}");
                let reason = error.to_string();
                self.out
                    .replies
                    .push((handle, Reply::ErrMembership { reason }));
            }
        }
    }

    /// Called after every Ready: notices a new membership (or that it committed), tells the driver
    /// whom to connect to, and says in the log when this node is no longer a member.
    pub(crate) fn track_membership(&mut self) {
        let index = self.raft.config_index();
        let committed = self.raft.status().commit >= index;
        let membership = self.raft.membership();
        // The membership itself is compared, not only its index: an uncommitted entry may be replaced
        // by another leader's at the same index.
        let same = self
            .known_config
            .as_ref()
            .is_some_and(|(known, known_committed)| {
                known == membership && *known_committed == committed
            });
        if same {
            return;
        }
        let new_membership = self
            .known_config
            .as_ref()
            .is_none_or(|(known, _)| known != membership);
        let before: Vec<NodeId> = self
            .known_config
            .as_ref()
            .map(|(known, _)| known.members().collect())
            .unwrap_or_default();
        let membership = membership.clone();
        self.known_config = Some((membership.clone(), committed));
        self.out.membership = Some(self.peer_book());
        if !new_membership {
            return;
        }
        // A member that just joined (or came back) gets a full grace period before auto-removal.
        let now = self.now.mono_ms;
        for id in membership.members().filter(|id| !before.contains(id)) {
            self.last_heard.insert(id, now);
        }
        if membership.contains(self.id) {
            self.ever_member = true;
            if self.removed {
                info!("this node is a member again");
                self.removed = false;
            }
        } else if self.ever_member && !self.removed {
            warn!(
                index,
                "this node was removed from the cluster: it no longer votes or serves; clients are \
                 redirected to the leader until it is shut down"
            );
            self.removed = true;
        }
        info!(
            index,
            voters = ?membership.voters,
            learners = ?membership.learners,
            "membership"
        );
    }

    /// Whom this node must be able to reach: every member, and while a change is uncommitted the
    /// members of the membership before it too (a removed leader counts on its old followers'
    /// answers to commit its own removal, and a follower on hearing from it).
    fn peer_book(&self) -> AddressBook {
        let mut book = self.address_book();
        let status = self.raft.status();
        if status.commit < self.raft.config_index() {
            let before = self.book_of(&self.raft.membership_at(status.commit));
            for (id, addrs) in before.members {
                book.members.entry(id).or_insert(addrs);
            }
        }
        book
    }

    /// With auto-removal on, a leader removes one member it has not heard from for the configured time
    /// (rqlite's "reap"): a learner always, a voter only if at least three voters remain.
    pub(crate) fn remove_unreachable(&mut self) {
        let after = self.config.auto_remove_after_ms;
        if after == 0 || self.raft.status().role != Role::Leader {
            return;
        }
        let now = self.now.mono_ms;
        let membership = self.raft.membership().clone();
        let silent = membership.members().find(|id| {
            let quiet = self
                .last_heard
                .get(id)
                .is_none_or(|at| now.saturating_sub(*at) > after);
            let removable = membership.is_learner(*id) || membership.voters.len() > 3;
            *id != self.id && quiet && removable
        });
        let Some(id) = silent else {
            return;
        };
        let mut book = self.address_book();
        book.members.remove(&id);
        let max_lag = self.config.promote_max_lag;
        // Refused while another change is in progress, or before this leader's first commit: the next
        // check tries again.
        if let Ok((index, _)) =
            self.raft
                .propose_conf_change(ConfChange::Remove(id), book.encode(), max_lag)
        {
            warn!(
                node = id,
                index,
                silent_ms = now.saturating_sub(self.last_heard.get(&id).copied().unwrap_or(0)),
                "removing a member not heard from for longer than auto_remove_after_s"
            );
        }
    }

    /// Whether a membership in this node's log or snapshot (or its bootstrap) lists it: at start, to
    /// tell a removed node from one that is joining.
    pub(crate) fn was_ever_member(&self) -> bool {
        let raft = &self.raft;
        raft.snapshot_meta().membership.contains(self.id)
            || self.config.raft.voters.contains(&self.id)
            || raft
                .entries()
                .iter()
                .filter(|e| e.kind == EntryKind::Config)
                .filter_map(|e| Membership::from_entry_data(&e.data))
                .any(|m| m.contains(self.id))
    }

    /// Whether this node has been removed from the cluster it belonged to.
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// The voters a client may try when this node can never lead and knows no leader (it is a
    /// learner, or was removed): the other voters of the newest membership it knows. Empty for a
    /// voter, which waits for an election instead.
    pub fn voters_to_try(&self) -> Vec<NodeId> {
        let membership = self.raft.membership();
        if !self.removed && !membership.is_learner(self.id) {
            return Vec::new();
        }
        membership
            .voters
            .iter()
            .copied()
            .filter(|id| *id != self.id)
            .collect()
    }

    /// Where to send a client: the leader this node knows; for a removed node, whose knowledge of the
    /// leader may be stale, only a leader that is still in the newest membership it knows, else each
    /// voter of that membership in turn. (Removed nodes that each name the other, from memberships of
    /// different ages, would otherwise send a client back and forth for ever.) A learner that knows no
    /// leader also names the voters in turn: it cannot be elected, so there is no election of its own
    /// to wait for, and it may have been removed without hearing of it (seed 293771: learners removed
    /// while down never hear from the leader again; each parked every client for the full wait).
    pub(crate) fn redirect_target(&mut self) -> Option<NodeId> {
        let membership = self.raft.membership();
        let leader = self.raft.status().leader.filter(|l| *l != self.id);
        if let Some(leader) = leader.filter(|l| !self.removed || membership.is_voter(*l)) {
            return Some(leader);
        }
        // Empty for a voter: it waits for an election instead.
        let others = self.voters_to_try();
        if others.is_empty() {
            return None;
        }
        self.redirect_turn = self.redirect_turn.wrapping_add(1);
        others
            .get((self.redirect_turn % others.len() as u64) as usize)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_book_round_trips_and_rejects_garbage() {
        let mut book = AddressBook::default();
        book.members.insert(
            3,
            MemberAddrs {
                client: "db-3:7001".into(),
                peer: "10.0.0.3:8001".into(),
                resp: None,
            },
        );
        book.members.insert(1, MemberAddrs::default());
        let bytes = book.encode();
        assert_eq!(AddressBook::decode(&bytes), Some(book));
        for cut in 1..bytes.len() {
            assert_eq!(AddressBook::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(AddressBook::decode(b""), Some(AddressBook::default()));
        assert_eq!(AddressBook::decode(&[0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn resp_addresses_follow_the_members_and_older_books_still_decode() {
        let mut book = AddressBook::default();
        let member = |id: u64, resp: Option<&str>| MemberAddrs {
            client: format!("10.0.0.{id}:9000"),
            peer: format!("10.0.0.{id}:10000"),
            resp: resp.map(str::to_string),
        };
        book.members.insert(1, member(1, None));
        book.members.insert(4, member(4, Some("10.0.0.4:6379")));
        let bytes = book.encode();
        assert_eq!(AddressBook::decode(&bytes), Some(book.clone()));
        // The members alone are a book written before RESP addresses: it decodes, without them.
        let mut without = book.clone();
        without.members.values_mut().for_each(|m| m.resp = None);
        let members_end = without.encode().len();
        assert_eq!(&bytes[..members_end], &without.encode()[..]);
        for cut in 1..bytes.len() {
            let expected = (cut == members_end).then(|| without.clone());
            assert_eq!(AddressBook::decode(&bytes[..cut]), expected, "cut at {cut}");
        }
        // An unknown section, or bytes after the last one, are refused.
        let mut tagged = bytes.to_vec();
        tagged[members_end] = 9;
        assert_eq!(AddressBook::decode(&tagged), None);
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(AddressBook::decode(&longer), None);
        // One id twice is no book.
        let mut twice = 2u32.to_le_bytes().to_vec();
        for _ in 0..2 {
            twice.extend_from_slice(&7u64.to_le_bytes());
            twice.extend_from_slice(&[0, 0, 0, 0]);
        }
        assert_eq!(AddressBook::decode(&twice), None);
    }

    #[test]
    fn the_bootstrap_entry_holds_every_member_as_a_voter() {
        let mut book = AddressBook::default();
        for id in [1, 2, 3] {
            book.members.insert(id, MemberAddrs::default());
        }
        let (entry, hard_state) = bootstrap_entry(&book);
        let membership = Membership::from_entry_data(&entry.data).unwrap();
        assert_eq!(membership.voters, vec![1, 2, 3]);
        assert_eq!(AddressBook::decode(&membership.context), Some(book));
        assert_eq!((entry.index, entry.term, hard_state.commit), (1, 1, 1));
    }
}
