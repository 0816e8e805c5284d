//! Routing client requests: proposing writes, starting ReadIndex reads, holding requests back to keep
//! each connection's order, parking them while no leader is known, and redirecting them.

use super::*;

impl NodeLoop {
    // ----- Client requests ---------------------------------------------------------------------

    pub(super) fn handle_request(&mut self, request: ClientRequest) {
        let status = self.raft.status();
        if status.role == Role::Leader {
            let is_write = matches!(request.op, Op::Write(_));
            if !self.state.held.is_empty() || (is_write && self.reads_pending()) {
                self.state.held.push_back(request);
                return;
            }
            match request.op {
                Op::Write(command) => self.propose_write(command, request.reply),
                Op::Read(read) => self.start_read(read, request.reply),
            }
            return;
        }
        match status.leader {
            Some(leader) if leader != self.id => {
                let _ = request.reply.send(self.redirect_to(leader));
            }
            _ => self.park(request),
        }
    }

    pub(super) fn reads_pending(&self) -> bool {
        !self.state.reads_awaiting_index.is_empty() || !self.state.reads_awaiting_apply.is_empty()
    }

    /// Lets held requests go, in order, as far as the reads in progress allow.
    pub(super) fn release_held(&mut self) {
        while let Some(request) = self.state.held.front() {
            let is_write = matches!(request.op, Op::Write(_));
            if is_write && self.reads_pending() && self.raft.status().role == Role::Leader {
                return;
            }
            if let Some(request) = self.state.held.pop_front() {
                self.dispatch(request);
            }
        }
    }

    /// Routes a request without the ordering check of `handle_request`.
    pub(super) fn dispatch(&mut self, request: ClientRequest) {
        if self.raft.status().role == Role::Leader {
            match request.op {
                Op::Write(command) => self.propose_write(command, request.reply),
                Op::Read(read) => self.start_read(read, request.reply),
            }
        } else {
            self.handle_request(request);
        }
    }

    pub(super) fn park(&mut self, request: ClientRequest) {
        if self.state.waiting_for_leader.len() >= MAX_WAITING_FOR_LEADER {
            let _ = request.reply.send(Reply::ErrInternal);
            return;
        }
        let wait = Duration::from_millis(self.config.tunables.election_timeout_ms * 2);
        self.state
            .waiting_for_leader
            .push_back((Instant::now() + wait, request));
    }

    pub(super) fn redirect_to(&self, leader: NodeId) -> Reply {
        let Some(node) = self.config.node(leader) else {
            return Reply::ErrInternal;
        };
        match node
            .client_addr
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

    pub(super) fn propose_write(&mut self, command: Command, reply: oneshot::Sender<Reply>) {
        let stamp_ms = self.next_stamp();
        let proposal = Proposal { stamp_ms, command };
        self.state.encode_buf.reserve(proposal.encoded_len());
        proposal.encode(&mut self.state.encode_buf);
        let data: Bytes = self.state.encode_buf.split().freeze();
        match self.raft.propose(data) {
            Ok((index, term)) => {
                self.state
                    .writes
                    .insert(index, PendingWrite { term, reply });
            }
            Err(ProposeError::Transferring) => {
                // Leadership is moving away; the new leader will take it.
                let request = ClientRequest {
                    op: Op::Write(proposal.command),
                    reply,
                };
                self.park(request);
            }
            Err(ProposeError::NotLeader { .. }) => {
                let _ = reply.send(Reply::ErrInternal);
            }
        }
    }

    /// The leader's wall clock, never behind a stamp already used, so expiry never runs backwards.
    pub(super) fn next_stamp(&mut self) -> u64 {
        let now = wall_clock_ms()
            .max(self.store.clock_ms())
            .max(self.state.last_stamp_ms);
        self.state.last_stamp_ms = now;
        now
    }

    pub(super) fn start_read(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        self.state.next_read_ctx += 1;
        let ctx = self.state.next_read_ctx;
        let floor = self.raft.status().last_index;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.state.reads_awaiting_index.insert(
                    ctx,
                    PendingRead {
                        request,
                        reply,
                        floor,
                    },
                );
            }
            Err(_) => self.park(ClientRequest {
                op: Op::Read(request),
                reply,
            }),
        }
    }

    pub(super) fn maybe_propose_expire(&mut self) {
        let leader = self.raft.status().role == Role::Leader;
        if !leader || self.reads_pending() || !self.store.has_expired(wall_clock_ms()) {
            return;
        }
        let stamp_ms = self.next_stamp();
        let proposal = Proposal {
            stamp_ms,
            command: Command::Expire,
        };
        proposal.encode(&mut self.state.encode_buf);
        let data = self.state.encode_buf.split().freeze();
        let _ = self.raft.propose(data);
    }

    /// Answers requests that waited too long for a leader, and re-routes the rest once one is known.
    pub(super) fn expire_waiting(&mut self) {
        let now = Instant::now();
        while let Some((deadline, _)) = self.state.waiting_for_leader.front() {
            if *deadline > now {
                break;
            }
            if let Some((_, request)) = self.state.waiting_for_leader.pop_front() {
                let _ = request.reply.send(Reply::ErrInternal);
            }
        }
    }

    pub(super) fn route_waiting(&mut self) {
        let status = self.raft.status();
        let ready = status.leader.is_some()
            && (status.leader != Some(self.id) || status.role == Role::Leader);
        if !ready {
            return;
        }
        let waiting = std::mem::take(&mut self.state.waiting_for_leader);
        for (_, request) in waiting {
            self.handle_request(request);
        }
    }
}
