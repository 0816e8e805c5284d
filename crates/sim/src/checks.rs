//! Raft's safety properties, checked as the simulation runs (Raft paper, Figure 3):
//! election safety, leader append-only, log matching, leader completeness, state machine safety; plus
//! monotonic term/commit/applied per node and durable term/vote/commit across restarts.
//!
//! Everything is checked incrementally, from what the nodes hand to their drivers, so a step costs
//! O(new entries + nodes), not O(log length).

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_raft::{Entry, EntryKind, HardState, Index, NodeId, Role, Status, Term};

use raftkv_kv::protocol::SessionSeq;
use raftkv_kv::{Command, Proposal};

/// An entry's identity and content, as far as the checks care.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Content {
    kind: EntryKind,
    data: Bytes,
}

impl Content {
    fn of(entry: &Entry) -> Content {
        Content {
            kind: entry.kind,
            data: entry.data.clone(),
        }
    }
}

/// What the checks remember about one node between steps (reset when it restarts).
#[derive(Clone, Debug, Default)]
struct Watch {
    term: Term,
    commit: Index,
    applied: Index,
    /// Set while the node is leader: (term, last index, term of the last entry) at the last step.
    leading: Option<(Term, Index, Term)>,
}

#[derive(Default)]
pub struct Checks {
    pub violations: Vec<String>,
    /// Election safety: the one leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Every entry any node has applied, by index (index 0 unused).
    committed: Vec<Option<(Term, Content)>>,
    /// The highest commit index any node has had in each term. A node in term t learned its commit
    /// from a leader of term t or earlier, so the entries up to it were committed in term t or
    /// earlier: every leader of a later term must hold them (leader completeness, §5.4).
    commit_by_term: BTreeMap<Term, Index>,
    /// Every entry any node has appended to its log: (index, term) -> (content, term of the entry before).
    /// Same (index, term) with another content or another predecessor term breaks log matching.
    appended: BTreeMap<(Index, Term), (Content, Term)>,
    /// Where each client write was committed (by its unique value): never at two indices.
    op_index: BTreeMap<Bytes, Index>,
    /// The value each session sequence number wrote.
    session_writes: BTreeMap<SessionSeq, Bytes>,
    /// What applying each client write answered (its first application not refused by the session
    /// table), by its unique value: how the simulator learns the
    /// outcome of a write whose client never heard back.
    pub write_outcomes: BTreeMap<Bytes, (Index, Option<raftkv_kv::Reply>)>,
    /// What applying each index answered (the first node to apply it), with the entry's term and the
    /// history's clock by then (set by the simulator at the end of the step).
    pub applied_replies: BTreeMap<Index, (Term, Option<raftkv_kv::Reply>, u64)>,
    /// Indexes first applied during the current step, waiting for their history clock.
    pub newly_applied: Vec<Index>,
    /// Each node's newest durable hard state, which a restart must recover (or a later one).
    durable_hard_state: BTreeMap<NodeId, HardState>,
    watch: Vec<Watch>,
    pub now: u64,
}

const MAX_REPORTED: usize = 20;

impl Checks {
    pub fn new(nodes: usize) -> Checks {
        Checks {
            committed: vec![None],
            watch: vec![Watch::default(); nodes],
            ..Checks::default()
        }
    }

    pub fn fail(&mut self, node: NodeId, what: String) {
        if self.violations.len() < MAX_REPORTED {
            self.violations
                .push(format!("t={}ms node {node}: {what}", self.now));
        }
    }

    pub fn is_known_leader(&self, term: Term) -> bool {
        self.leaders.contains_key(&term)
    }

    pub fn committed_len(&self) -> Index {
        self.committed.len() as Index - 1
    }

    /// Log matching: `entries` were appended to `node`'s log right after an entry of term `prev_term`.
    pub fn on_append(&mut self, node: NodeId, mut prev_term: Term, entries: &[Entry]) {
        for entry in entries {
            let content = Content::of(entry);
            match self.appended.get(&(entry.index, entry.term)) {
                None => {
                    self.appended
                        .insert((entry.index, entry.term), (content, prev_term));
                }
                Some((seen, seen_prev)) => {
                    if *seen != content {
                        self.fail(
                            node,
                            format!(
                                "log matching: two different entries at index {} term {}",
                                entry.index, entry.term
                            ),
                        );
                    } else if *seen_prev != prev_term {
                        self.fail(node, format!(
                            "log matching: entry {}/{} follows term {prev_term} here but term {seen_prev} elsewhere",
                            entry.index, entry.term
                        ));
                    }
                }
            }
            prev_term = entry.term;
        }
    }

    /// Stamps the entries first applied in this step with the history's clock at its end.
    pub fn stamp_applied(&mut self, clock: u64) {
        for index in self.newly_applied.drain(..) {
            if let Some(applied) = self.applied_replies.get_mut(&index) {
                applied.2 = clock;
            }
        }
    }

    /// State machine safety: no two nodes apply different entries at one index.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry, reply: Option<&raftkv_kv::Reply>) {
        let index = entry.index as usize;
        if self.committed.len() <= index {
            self.committed.resize(index + 1, None);
        }
        match &self.committed[index] {
            None => {
                self.applied_replies
                    .insert(entry.index, (entry.term, reply.cloned(), u64::MAX));
                self.newly_applied.push(entry.index);
                if let Some((value, session)) = written_value(entry) {
                    let refused = matches!(
                        reply,
                        Some(
                            raftkv_kv::Reply::ErrSessionExpired
                                | raftkv_kv::Reply::ErrSequence { .. }
                        )
                    );
                    if !refused {
                        self.write_outcomes
                            .entry(value.clone())
                            .or_insert((entry.index, reply.cloned()));
                    }
                    match session {
                        // A write in a session may be committed again by a retry (and the store
                        // answers the retry without applying it); one sequence number is one write.
                        Some(at) => {
                            if let Some(other) = self.session_writes.insert(at, value.clone()) {
                                if other != value {
                                    self.fail(node, format!("{at:?} carried two writes"));
                                }
                            }
                        }
                        None => {
                            if let Some(other) = self.op_index.insert(value.clone(), entry.index) {
                                self.fail(
                                    node,
                                    format!(
                                        "write of {value:?} committed twice, at {other} and {}",
                                        entry.index
                                    ),
                                );
                            }
                        }
                    }
                }
                self.committed[index] = Some((entry.term, Content::of(entry)));
            }
            Some((term, content)) => {
                if *term != entry.term || *content != Content::of(entry) {
                    self.fail(
                        node,
                        format!(
                        "state machine safety: applied {}/{} where another node applied {}/{term}",
                        entry.index, entry.term, entry.index
                    ),
                    );
                }
            }
        }
    }

    /// A snapshot installed from a leader must describe committed history.
    pub fn on_snapshot(&mut self, node: NodeId, index: Index, term: Term) {
        if let Some(Some((committed_term, _))) = self.committed.get(index as usize) {
            if *committed_term != term {
                self.fail(
                    node,
                    format!(
                        "snapshot at {index} has term {term}, committed entry has {committed_term}"
                    ),
                );
            }
        }
    }

    /// Durable term and vote never go backwards, a vote never changes within a term, and the durable
    /// commit index never decreases, across crashes and restarts alike.
    pub fn on_durable_hard_state(&mut self, node: NodeId, before: HardState, after: HardState) {
        self.durable_hard_state.insert(node, after);
        if after.term < before.term {
            self.fail(
                node,
                format!(
                    "durable term went back from {} to {}",
                    before.term, after.term
                ),
            );
        }
        if after.term == before.term && before.vote.is_some() && after.vote != before.vote {
            self.fail(
                node,
                format!(
                    "vote changed within term {}: {:?} -> {:?}",
                    after.term, before.vote, after.vote
                ),
            );
        }
        if after.commit < before.commit {
            self.fail(
                node,
                format!(
                    "durable commit went back from {} to {}",
                    before.commit, after.commit
                ),
            );
        }
    }

    /// A restarted node recovered `recovered` from its disk: nothing durable may be missing.
    pub fn on_recovered_hard_state(&mut self, node: NodeId, recovered: HardState) {
        self.watch[(node - 1) as usize] = Watch::default();
        let before = self
            .durable_hard_state
            .get(&node)
            .copied()
            .unwrap_or_default();
        self.on_durable_hard_state(node, before, recovered);
    }

    /// Per-step checks of one running node. `log` is its in-memory log, `applied` its state machine's.
    pub fn after_step(&mut self, status: &Status, applied: Index, log: &[Entry]) {
        let node = status.id;
        let w = self.watch[(node - 1) as usize].clone();
        if status.term < w.term {
            self.fail(
                node,
                format!("term went back from {} to {}", w.term, status.term),
            );
        }
        if status.commit < w.commit {
            self.fail(
                node,
                format!("commit went back from {} to {}", w.commit, status.commit),
            );
        }
        if applied < w.applied {
            self.fail(
                node,
                format!("applied went back from {} to {applied}", w.applied),
            );
        }
        if status.commit > status.last_index {
            self.fail(
                node,
                format!(
                    "commit {} beyond last index {}",
                    status.commit, status.last_index
                ),
            );
        }
        let entry_at = |index: Index| -> Option<&Entry> {
            let first = log.first()?.index;
            log.get(index.checked_sub(first)? as usize)
                .filter(|e| e.index == index)
        };
        let commit = self.commit_by_term.entry(status.term).or_default();
        *commit = (*commit).max(status.commit);
        let mut leading = None;
        if status.role == Role::Leader {
            let holder = *self.leaders.entry(status.term).or_insert(node);
            if holder != node {
                self.fail(
                    node,
                    format!(
                        "election safety: nodes {holder} and {node} both lead term {}",
                        status.term
                    ),
                );
            }
            match w.leading {
                Some((term, last_index, last_term)) if term == status.term => {
                    // Leader append-only: nothing it held was removed or replaced.
                    let replaced = entry_at(last_index).is_some_and(|e| e.term != last_term);
                    if status.last_index < last_index || replaced {
                        self.fail(node, format!("leader append-only: entry {last_index}/{last_term} removed or replaced"));
                    }
                }
                _ => self.check_leader_completeness(status, log),
            }
            let last_term = entry_at(status.last_index).map_or(0, |e| e.term);
            leading = Some((status.term, status.last_index, last_term));
        }
        self.watch[(node - 1) as usize] = Watch {
            term: status.term,
            commit: status.commit,
            applied: applied.max(w.applied),
            leading,
        };
    }

    /// Leader completeness: a new leader holds every entry committed in an earlier term (those its
    /// snapshot does not already cover). An entry first committed in a later term need not be there:
    /// a leader of term 8 whose votes arrived late may be elected after a leader of term 9 committed
    /// an entry it lacks (seed 101729); it can commit nothing, since a majority is past its term.
    fn check_leader_completeness(&mut self, status: &Status, log: &[Entry]) {
        let first = log.first().map_or(status.last_index + 1, |e| e.index);
        let committed_before = self
            .commit_by_term
            .range(..status.term)
            .map(|(_, &index)| index)
            .max()
            .unwrap_or(0);
        let end = (self.committed.len() as Index).min(committed_before + 1);
        let mut missing = None;
        for index in first..end {
            let Some((term, content)) = &self.committed[index as usize] else {
                continue;
            };
            let held = log.get((index - first) as usize);
            if held
                .is_none_or(|e| e.index != index || e.term != *term || Content::of(e) != *content)
            {
                missing = Some((index, *term));
                break;
            }
        }
        if let Some((index, term)) = missing {
            self.fail(
                status.id,
                format!(
                    "leader completeness: leader of term {} lacks committed entry {index}/{term}",
                    status.term
                ),
            );
        }
    }
}

/// The client operation a committed entry carries, by the value it writes (values are unique per
/// operation), and its session, for the check that no operation commits twice.
fn written_value(entry: &Entry) -> Option<(Bytes, Option<SessionSeq>)> {
    if entry.kind != EntryKind::Normal {
        return None;
    }
    let proposal = Proposal::decode(&entry.data).ok()?;
    match proposal.command {
        Command::Set { value, .. }
        | Command::Cas { value, .. }
        | Command::SetWith { value, .. } => Some((value, proposal.session)),
        _ => None,
    }
}
