//! One simulated node: the server's own [`Replica`] with the real store, driven like the server's node
//! loop drives it, over the real WAL on a simulated disk, with a skewed clock of its own.

use std::collections::{BTreeMap, BTreeSet};

use raftkv_raft::{Entry, Index, Message, NodeId, Role, SnapshotMeta, Term};
use raftkv_replica::{
    is_fresh, AddressBook, ClientRequest, Mutation, Now, Op, PersistJob, Replica, ReplicaConfig,
    SnapshotTask,
};

use crate::checks::Checks;
use crate::clock::NodeClock;
use crate::disk::Disk;
use crate::network::Network;
use crate::rng::Rng;

/// A client request's handle in the simulator: the operation's id.
pub type OpId = u64;

/// The shared things a node's driver touches.
pub struct Env<'a> {
    pub now: u64,
    pub rng: &'a mut Rng,
    pub net: &'a mut Network,
    pub checks: &'a mut Checks,
    /// Replies to client operations, as the replica produced them.
    pub replies: &'a mut Vec<(OpId, raftkv_kv::Reply)>,
}

pub struct Node {
    pub id: NodeId,
    config: ReplicaConfig,
    pub replica: Option<Replica<OpId>>,
    pub disk: Disk,
    pub clock: NodeClock,
    /// A snapshot being built, and when it will be written.
    snapshot_work: Option<(u64, SnapshotTask)>,
    snapshot_delay: (u64, u64),
    /// Term of each entry handed out for persistence, for the log-matching check (index -> term).
    log_terms: BTreeMap<Index, Term>,
    /// This node ticks when its monotonic clock enters a new period of this length.
    pub tick_ms: u64,
    /// The period of the last tick (None until the first step of each process lifetime).
    ticked_period: Option<u64>,
    pub crashes: u64,
    /// Reads its replicas released from a leader lease, over every restart.
    pub lease_reads: u64,
    /// Why the node stopped by itself (a storage failure), if it did.
    pub stopped: Option<String>,
    /// For a node of the initial cluster: the membership it bootstraps its empty disk with.
    pub bootstrap: Option<AddressBook>,
    /// Whom the transport connects to, as the replica last said ([`raftkv_replica::Outputs::membership`]).
    member_peers: BTreeSet<NodeId>,
    /// The members a node was told when it joined (`raftkv server --join`): always reachable.
    pub join_peers: BTreeSet<NodeId>,
    /// Nodes that contacted this one since it started: the server's transport learns their addresses
    /// from their handshakes and can answer them, members or not.
    learned: BTreeSet<NodeId>,
    /// Messages to itself (a sole voter's own vote), handed back at its next flush as the server's
    /// transport loops them back into its inbound queue.
    loopback: Vec<Message>,
}

impl Node {
    pub fn new(
        config: ReplicaConfig,
        disk: Disk,
        clock: NodeClock,
        tick_ms: u64,
        snapshot_delay: (u64, u64),
    ) -> Node {
        Node {
            id: config.raft.id,
            config,
            replica: None,
            disk,
            clock,
            snapshot_work: None,
            snapshot_delay,
            log_terms: BTreeMap::new(),
            tick_ms,
            ticked_period: None,
            crashes: 0,
            lease_reads: 0,
            stopped: None,
            bootstrap: None,
            member_peers: BTreeSet::new(),
            join_peers: BTreeSet::new(),
            learned: BTreeSet::new(),
            loopback: Vec::new(),
        }
    }

    /// Whether the transport has a connection to `to`: the server's sends only to the members, those
    /// it was given with `--join`, and nodes that contacted it; it drops the rest.
    pub fn can_send_to(&self, to: NodeId) -> bool {
        self.member_peers.contains(&to)
            || self.join_peers.contains(&to)
            || self.learned.contains(&to)
    }

    /// A message from `from` arrived: the transport now knows where `from` is.
    pub fn heard_from(&mut self, from: NodeId) {
        self.learned.insert(from);
    }

    fn send(&mut self, env: &mut Env, msg: Message) {
        if msg.to == self.id {
            self.loopback.push(msg);
        } else if self.can_send_to(msg.to) {
            env.net.send(env.rng, env.now, msg);
        }
    }

    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    pub fn now(&self, virtual_ms: u64) -> Now {
        self.clock.now(virtual_ms)
    }

    pub fn role(&self) -> Option<Role> {
        self.replica.as_ref().map(|r| r.raft().status().role)
    }

    /// Starts the replica from exactly what the disk recovers. A disk that cannot be recovered is a
    /// violation: the simulated file system only loses what was never synced.
    pub fn start(&mut self, seed: u64, checks: &mut Checks) {
        assert!(self.replica.is_none(), "node {} started twice", self.id);
        let mut initial = match self.disk.open() {
            Ok(initial) => initial,
            Err(err) => {
                checks.fail(self.id, format!("recovery failed: {err}"));
                return;
            }
        };
        if let Some(book) = self.bootstrap.as_ref().filter(|_| is_fresh(&initial)) {
            if let Err(err) = self.disk.bootstrap(&mut initial, book) {
                checks.fail(self.id, format!("cannot write the bootstrap entry: {err}"));
                return;
            }
        }
        checks.on_recovered_hard_state(self.id, initial.hard_state);
        self.log_terms.clear();
        if let Some(s) = &initial.snapshot {
            self.log_terms.insert(s.meta.index, s.meta.term);
        }
        self.log_terms
            .extend(initial.entries.iter().map(|e| (e.index, e.term)));
        let mut config = self.config.clone();
        config.raft.seed = config.raft.seed.wrapping_add(seed);
        match Replica::new(config, initial) {
            Ok(replica) => self.replica = Some(replica),
            Err(err) => checks.fail(self.id, format!("cannot start the replica: {err}")),
        }
        self.stopped = None;
    }

    /// Power loss: the process and everything not durable are gone.
    pub fn crash(&mut self, seed: u64) {
        assert!(self.replica.is_some(), "node {} crashed twice", self.id);
        self.lease_reads += self
            .replica
            .as_ref()
            .map_or(0, |r| r.raft().lease_reads_served());
        self.replica = None;
        self.ticked_period = None;
        self.loopback.clear();
        self.learned.clear();
        self.snapshot_work = None;
        self.crashes += 1;
        self.disk.crash(seed);
    }

    fn stop(&mut self, why: String, seed: u64) {
        self.stopped = Some(why);
        self.crash(seed);
    }

    /// Hands a client request to the replica.
    pub fn request(&mut self, now: u64, op: Op, handle: OpId) {
        let at = self.now(now);
        if let Some(replica) = self.replica.as_mut() {
            replica.request(at, ClientRequest { op, handle });
        }
    }

    /// One virtual millisecond of this node: disk completions, snapshot work, its tick.
    pub fn step(&mut self, env: &mut Env) {
        if self.replica.is_none() {
            return;
        }
        match self.disk.complete_due(env.rng, env.now) {
            Ok(None) => {}
            Ok(Some(done)) => {
                env.checks.on_durable_hard_state(
                    self.id,
                    done.hard_state_before,
                    done.hard_state_after,
                );
                if let Some(replica) = self.replica.as_mut() {
                    let _ = replica.persisted(done.durable);
                }
                for msg in done.messages {
                    self.send(env, msg);
                }
            }
            Err(err) => {
                let seed = env.rng.next_u64();
                self.stop(format!("storage failed: {err}"), seed);
                return;
            }
        }
        if self
            .snapshot_work
            .as_ref()
            .is_some_and(|(due, _)| *due <= env.now)
        {
            if let Some((_, task)) = self.snapshot_work.take() {
                self.build_snapshot(task, env);
            }
        }
        let now = self.now(env.now);
        // A tick each time the monotonic clock enters a new tick period (a clock running fast may
        // skip a millisecond, one running slow may repeat one).
        let period = now.mono_ms / self.tick_ms;
        let due = match self.ticked_period {
            None => now.mono_ms.is_multiple_of(self.tick_ms),
            Some(last) => period > last,
        };
        self.ticked_period = Some(period);
        if due {
            if let Some(replica) = self.replica.as_mut() {
                replica.tick(now);
            }
        }
    }

    fn build_snapshot(&mut self, task: SnapshotTask, env: &mut Env) {
        let Some(writer) = self.disk.snapshot_writer() else {
            return;
        };
        let built = task.build(&writer);
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        if let Err(err) = replica.snapshot_built(built) {
            let seed = env.rng.next_u64();
            self.stop(format!("{err}"), seed);
        }
    }

    /// Runs the replica's Ready processing and carries out its outputs, as the server's loop does.
    pub fn flush(&mut self, env: &mut Env) {
        for _round in 0..1000 {
            let Some(replica) = self.replica.as_mut() else {
                return;
            };
            for msg in std::mem::take(&mut self.loopback) {
                replica.step(msg);
            }
            if let Err(err) = replica.advance() {
                let seed = env.rng.next_u64();
                self.stop(format!("{err}"), seed);
                return;
            }
            let ack_early = self.config.mutation == Some(Mutation::AckBeforeFsync);
            let out = replica.outputs();
            if let Some(book) = out.membership.take() {
                self.member_peers = book.members.keys().copied().collect();
            }
            let messages = std::mem::take(&mut out.messages);
            let jobs = std::mem::take(&mut out.persist);
            env.replies.append(&mut out.replies);
            out.released.clear();
            let task = out.snapshot.take();
            let applied = std::mem::take(&mut out.applied);
            for msg in messages {
                self.send(env, msg);
            }
            for (entry, reply) in &applied {
                env.checks.on_apply(self.id, entry, reply.as_ref());
            }
            let mut early = Vec::new();
            for mut job in jobs {
                self.note_job(&job, env.checks);
                if ack_early {
                    early.append(&mut job.messages_after_persist);
                    if let Some(last) = job.entries.last() {
                        early_durable(replica_of(&mut self.replica), last.index, last.term);
                    }
                }
                self.disk.submit(env.rng, env.now, job);
            }
            for msg in early {
                self.send(env, msg);
            }
            if let Some(task) = task {
                let delay = env.rng.range(self.snapshot_delay.0, self.snapshot_delay.1);
                self.snapshot_work = Some((env.now + delay, task));
            }
            let more = self.replica.as_ref().is_some_and(|r| r.raft().has_ready());
            if !more && self.loopback.is_empty() {
                return;
            }
        }
        panic!("node {}: Ready keeps coming after 1000 rounds", self.id);
    }

    /// Log-matching bookkeeping for what the replica hands to its disk.
    fn note_job(&mut self, job: &PersistJob, checks: &mut Checks) {
        if let Some(snapshot) = &job.snapshot {
            self.note_snapshot(&snapshot.meta, checks);
        }
        if let Some(first) = job.entries.first() {
            self.note_entries(&job.entries, first.index, checks);
        }
    }

    fn note_snapshot(&mut self, meta: &SnapshotMeta, checks: &mut Checks) {
        checks.on_snapshot(self.id, meta.index, meta.term);
        if self.log_terms.get(&meta.index) != Some(&meta.term) {
            self.log_terms.clear();
        } else {
            self.log_terms = self.log_terms.split_off(&meta.index);
        }
        self.log_terms.insert(meta.index, meta.term);
    }

    fn note_entries(&mut self, entries: &[Entry], first: Index, checks: &mut Checks) {
        self.log_terms.split_off(&first);
        let prev_term = if first == 1 {
            0
        } else {
            match self.log_terms.get(&(first - 1)) {
                Some(term) => *term,
                None => {
                    checks.fail(
                        self.id,
                        format!(
                            "entries from {first} handed out with no entry {} before them",
                            first - 1
                        ),
                    );
                    0
                }
            }
        };
        checks.on_append(self.id, prev_term, entries);
        self.log_terms
            .extend(entries.iter().map(|e| (e.index, e.term)));
    }
}

fn replica_of(replica: &mut Option<Replica<OpId>>) -> &mut Replica<OpId> {
    replica.as_mut().expect("a running replica")
}

/// [`Mutation::AckBeforeFsync`]: tell the replica a batch is durable before the disk has it.
fn early_durable(replica: &mut Replica<OpId>, index: Index, term: Term) {
    let _ = replica.persisted(raftkv_replica::Durable {
        index,
        term,
        ..Default::default()
    });
}
