//! Routing client requests: proposing writes, reading through ReadIndex at the replicated clock,
//! holding requests back to keep each connection's order, parking them while no leader is known,
//! redirecting.

use raftkv_kv::protocol::SessionSeq;
use raftkv_kv::{Command, Proposal, Reply, Request};
use raftkv_raft::{Index, NodeId, ProposeError, Role, Term};

use crate::clock::{read_needs_clock, Now};
use crate::mutation::Mutation;
use crate::replica::{BackupCopy, Replica};
use crate::request::{ClientRequest, Op, PendingRead, PendingWrite};

/// Requests parked while no leader is known.
const MAX_WAITING_FOR_LEADER: usize = 65_536;
/// Requests held back to keep one connection's pipeline in order (see `Replica::held`).
const MAX_HELD: usize = 65_536;

impl<H> Replica<H> {
    /// Whether the driver may hand over more requests now (false while too many are held back).
    pub fn accepting_requests(&self) -> bool {
        self.held.len() < MAX_HELD
    }

    /// A client request, at `now`.
    pub fn request(&mut self, now: Now, request: ClientRequest<H>) {
        self.set_now(now);
        self.handle_request(request);
    }

    fn handle_request(&mut self, request: ClientRequest<H>) {
        let status = self.raft.status();
        if let Op::StaleRead { read, max_lag } = request.op {
            self.serve_stale(read, max_lag, request.handle);
            return;
        }
        if status.role == Role::Leader {
            // Requests parked during a leadership transfer keep their place: everything after them
            // waits with them (a connection's requests take effect in the order sent).
            if !self.waiting_for_leader.is_empty() {
                self.park(request);
                return;
            }
            let is_write = matches!(request.op, Op::Write { .. });
            if !self.held.is_empty() || (is_write && self.reads_pending()) {
                self.held.push_back(request);
                return;
            }
            self.start(request);
            return;
        }
        match self.redirect_target() {
            Some(leader) => {
                let reply = self.redirect_to(leader);
                self.out.replies.push((request.handle, reply));
            }
            // A node that knows no membership yet (it joined and is waiting to be added) has no
            // leader to wait for: the client had better ask another node now.
            None if self.raft.membership().voters.is_empty() => {
                self.out.replies.push((request.handle, Reply::ErrInternal));
            }
            None => self.park(request),
        }
    }

    fn start(&mut self, request: ClientRequest<H>) {
        match request.op {
            Op::Write { command, session } => self.propose_write(command, session, request.handle),
            Op::Read(read) => self.start_read(read, request.handle),
            Op::StaleRead { read, max_lag } => self.serve_stale(read, max_lag, request.handle),
            Op::Members(members) => self.start_members(members, request.handle),
        }
    }

    /// A stale read: answered at once from this node's applied state, at the replicated clock it has
    /// applied, if a leader is known and the state is at most `max_lag` entries behind the commit index
    /// this node knows; otherwise redirected to the leader (or, with no leader known, parked like any
    /// request). Not ordered with the connection's other requests, and not linearizable.
    fn serve_stale(&mut self, read: Request, max_lag: u64, handle: H) {
        if self.removed {
            // Its state only ages from here: send the client to the cluster.
            let reply = match self.redirect_target() {
                Some(to) => self.redirect_to(to),
                None => Reply::ErrInternal,
            };
            self.out.replies.push((handle, reply));
            return;
        }
        let status = self.raft.status();
        let applied = self.store.applied_index();
        let Some(leader) = status.leader else {
            // A learner has no election of its own to wait for: it names a voter at once.
            if let Some(to) = self.redirect_target() {
                let reply = self.redirect_to(to);
                self.out.replies.push((handle, reply));
                return;
            }
            self.park(ClientRequest {
                op: Op::StaleRead { read, max_lag },
                handle,
            });
            return;
        };
        if status.commit.saturating_sub(applied) > max_lag && leader != self.id {
            let reply = self.redirect_to(leader);
            self.out.replies.push((handle, reply));
            return;
        }
        let reply = self.store.read(&read, self.store.clock_ms());
        self.out.replies.push((handle, reply));
    }

    pub(crate) fn reads_pending(&self) -> bool {
        !self.reads_awaiting_index.is_empty()
            || !self.reads_awaiting_apply.is_empty()
            || !self.reads_awaiting_clock.is_empty()
    }

    /// Lets held requests go, in order, as far as the reads in progress allow.
    pub(crate) fn release_held(&mut self) {
        if !self.waiting_for_leader.is_empty() && self.raft.status().role == Role::Leader {
            // Something ahead of them is parked: they queue behind it, in order.
            while let Some(request) = self.held.pop_front() {
                self.park(request);
            }
            return;
        }
        while let Some(request) = self.held.front() {
            let is_write = matches!(request.op, Op::Write { .. });
            let leader = self.raft.status().role == Role::Leader;
            if is_write && self.reads_pending() && leader {
                return;
            }
            let Some(request) = self.held.pop_front() else {
                return;
            };
            if leader {
                self.start(request);
            } else {
                self.handle_request(request);
            }
        }
    }

    fn park(&mut self, request: ClientRequest<H>) {
        if self.waiting_for_leader.len() >= MAX_WAITING_FOR_LEADER {
            self.out.replies.push((request.handle, Reply::ErrInternal));
            return;
        }
        let deadline = self.now.mono_ms + self.config.leader_wait_ms;
        self.waiting_for_leader.push_back((deadline, request));
    }

    fn redirect_to(&self, leader: NodeId) -> Reply {
        let Some(addr) = self.client_addr_of(leader) else {
            return Reply::ErrInternal;
        };
        match addr
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse().ok()?)))
        {
            Some((host, port)) => Reply::ErrRedirect {
                host: host.trim_matches(['[', ']']).to_string(),
                port,
            },
            None => Reply::ErrInternal,
        }
    }

    /// Encodes `command` (in `session`, if any) with the next stamp and proposes it; the index and term
    /// it will have, or why not.
    fn propose_command(
        &mut self,
        command: Command,
        session: Option<SessionSeq>,
    ) -> Result<(Index, Term), (ProposeError, Command)> {
        let stamp_ms = self.next_stamp();
        let proposal = Proposal {
            stamp_ms,
            session,
            command,
        };
        self.encode_buf.reserve(proposal.encoded_len());
        proposal.encode(&mut self.encode_buf);
        let data = self.encode_buf.split().freeze();
        self.raft
            .propose(data)
            .map_err(|err| (err, proposal.command))
    }

    fn propose_write(&mut self, command: Command, session: Option<SessionSeq>, handle: H) {
        if session.is_some_and(|at| self.store.session_is_gone(at)) {
            // Certain to be refused when applied: refuse it now, without a log entry.
            self.out.replies.push((handle, Reply::ErrSessionExpired));
            return;
        }
        match self.propose_command(command, session) {
            Ok((index, term)) => {
                self.writes.insert(index, PendingWrite { term, handle });
            }
            Err((ProposeError::Transferring, command)) => {
                // Leadership is moving away; the new leader will take it.
                self.park(ClientRequest {
                    op: Op::Write { command, session },
                    handle,
                });
            }
            Err((ProposeError::NotLeader { .. }, _)) => {
                self.out.replies.push((handle, Reply::ErrInternal));
            }
        }
    }

    /// The leader's wall clock, never behind a stamp already used, so expiry never runs backwards.
    fn next_stamp(&mut self) -> u64 {
        let now = self
            .now
            .wall_ms
            .max(self.store.clock_ms())
            .max(self.last_stamp_ms);
        self.last_stamp_ms = now;
        now
    }

    fn start_read(&mut self, request: Request, handle: H) {
        if self.config.mutation == Some(Mutation::ReadsWithoutReadIndex) {
            let reply = self.store.read(&request, self.store.clock_ms());
            self.out.replies.push((handle, reply));
            return;
        }
        self.next_read_ctx += 1;
        let ctx = self.next_read_ctx;
        let floor = self.raft.status().last_index;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.reads_awaiting_index.insert(
                    ctx,
                    PendingRead {
                        request,
                        handle,
                        floor,
                        judged_at_ms: None,
                    },
                );
            }
            Err(_) => self.park(ClientRequest {
                op: Op::Read(request),
                handle,
            }),
        }
    }

    /// Answers every read whose index is applied, at the store's clock; a read whose answer depends on
    /// time the store's clock has not reached waits for a clock entry (see [`crate::clock`]).
    pub(crate) fn serve_applied_reads(&mut self) {
        let applied = self.store.applied_index();
        while let Some(entry) = self.reads_awaiting_apply.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                self.serve_read(read);
            }
        }
    }

    fn serve_read(&mut self, mut read: PendingRead<H>) {
        let wall = read.judged_at_ms.unwrap_or(self.now.wall_ms);
        if self.config.mutation == Some(Mutation::ExpiryAtLocalClock)
            && read.request != Request::Backup
        {
            let reply = self.store.read(&read.request, wall);
            self.out.replies.push((read.handle, reply));
            return;
        }
        // A read queued behind a clock entry is judged, when its turn comes, at the time it arrived:
        // judged at the time the entry applied (always later, by the commit's latency) it would
        // need an entry of its own, and pipelined TTLs, whose clock must be exact, would each wait
        // for the one before (tests/ttl_reads.rs).
        read.judged_at_ms = Some(wall);
        // A read whose clock entry could not be proposed yet keeps every later read behind it, as
        // one waiting for its entry to apply does: one connection's pipelined reads must take effect
        // in the order they were sent (simulator seeds 2801 and 142709).
        if !self.reads_awaiting_clock.is_empty() {
            self.reads_awaiting_clock.push_back(read);
            return;
        }
        let applied = self.store.applied_index();
        // A read that waits for a clock entry keeps every later read behind it: one connection's
        // pipelined reads must take effect in the order they were sent.
        if let Some(index) = self.clock_entry.filter(|index| *index > applied) {
            self.reads_awaiting_apply
                .entry(index)
                .or_default()
                .push(read);
            return;
        }
        // A backup waits its turn behind the reads above like any read, then copies the store.
        if read.request == Request::Backup {
            // Everything committed before the request arrived is applied: copy the store as it is.
            let copy = BackupCopy {
                store: self.store.clone(),
                term: self.snapshot_policy.applied_term(),
            };
            // A leader serves a read only once an entry of its own term is applied, so the term of the
            // copy's last entry is known (a restored cluster's snapshot needs it).
            debug_assert!(copy.term > 0, "a backup copy at an unknown term");
            self.out.backups.push((read.handle, copy));
            return;
        }
        if !read_needs_clock(&self.store, &read.request, wall) {
            let reply = self.store.read(&read.request, self.store.clock_ms());
            self.out.replies.push((read.handle, reply));
            return;
        }
        // The entry's stamp is at least `wall` (stamps never run behind the clock that asked).
        let index = match self.propose_command(Command::Expire, None) {
            Ok((index, _)) => {
                self.clock_entry = Some(index);
                Some(index)
            }
            Err(_) => None,
        };
        match index {
            Some(index) => self
                .reads_awaiting_apply
                .entry(index)
                .or_default()
                .push(read),
            // Leadership is moving: propose the entry once the transfer has ended (or fail the read
            // with the others if this node loses leadership). Parking it for the next leader instead
            // would let the reads behind it be answered first.
            None => self.reads_awaiting_clock.push_back(read),
        }
    }

    /// Proposes the clock entry that reads wait for, once proposals are accepted again; the reads go
    /// behind it in the order they came.
    pub(crate) fn retry_clock_entry(&mut self) {
        if self.reads_awaiting_clock.is_empty() || self.raft.status().role != Role::Leader {
            return;
        }
        let Ok((index, _)) = self.propose_command(Command::Expire, None) else {
            return;
        };
        self.clock_entry = Some(index);
        let reads = self.reads_awaiting_apply.entry(index).or_default();
        reads.extend(self.reads_awaiting_clock.drain(..));
    }

    pub(crate) fn maybe_propose_expire(&mut self) {
        let leader = self.raft.status().role == Role::Leader;
        if !leader || self.reads_pending() || !self.store.has_expired(self.now.wall_ms) {
            return;
        }
        let _ = self.propose_command(Command::Expire, None);
    }

    /// Answers requests that waited too long for a leader.
    pub(crate) fn expire_waiting(&mut self) {
        let now = self.now.mono_ms;
        while let Some((deadline, _)) = self.waiting_for_leader.front() {
            if *deadline > now {
                break;
            }
            if let Some((_, request)) = self.waiting_for_leader.pop_front() {
                self.out.replies.push((request.handle, Reply::ErrInternal));
            }
        }
    }

    /// Re-routes parked requests once a leader is known.
    pub(crate) fn route_waiting(&mut self) {
        let status = self.raft.status();
        let ready = status.leader.is_some()
            && (status.leader != Some(self.id) || status.role == Role::Leader);
        if !ready {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting_for_leader);
        for (_, request) in waiting {
            self.handle_request(request);
        }
    }
}
