//! Raft's safety properties, checked as the simulation runs (Raft paper, Figure 3):
//! election safety, leader append-only, log matching, leader completeness, state machine safety; plus
//! monotonic term/commit/applied per node and durable term/vote/commit across restarts.
//!
//! Everything is checked incrementally, from what the nodes hand to their drivers, so a step costs
//! O(new entries + nodes), not O(log length).

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_raft::{Entry, EntryKind, HardState, Index, NodeId, Role, Status, Term};

use crate::kv::Put;

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
    /// Every entry any node has appended to its log: (index, term) -> (content, term of the entry before).
    /// Same (index, term) with another content or another predecessor term breaks log matching.
    appended: BTreeMap<(Index, Term), (Content, Term)>,
    /// Where each client operation was committed: an op must never be committed at two indices.
    op_index: BTreeMap<u64, Index>,
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

    /// State machine safety: no two nodes apply different entries at one index.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) {
        let index = entry.index as usize;
        if self.committed.len() <= index {
            self.committed.resize(index + 1, None);
        }
        match &self.committed[index] {
            None => {
                if entry.kind == EntryKind::Normal {
                    let op = Put::decode(&entry.data).op_id;
                    if let Some(other) = self.op_index.insert(op, entry.index) {
                        self.fail(
                            node,
                            format!("op {op} committed twice, at {other} and {}", entry.index),
                        );
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

    pub fn on_restart(&mut self, node: NodeId) {
        self.watch[(node - 1) as usize] = Watch::default();
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

    /// Leader completeness: a new leader holds every entry committed so far (those its snapshot does not
    /// already cover).
    fn check_leader_completeness(&mut self, status: &Status, log: &[Entry]) {
        let first = log.first().map_or(status.last_index + 1, |e| e.index);
        let mut missing = None;
        for index in first..self.committed.len() as Index {
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
