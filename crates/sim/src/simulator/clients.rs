//! The clients' side of a run: sending requests on connections, following redirects, delivering
//! replies in each connection's order, and resolving what happened to writes nobody heard back from.

use raftkv_kv::protocol::SessionSeq;
use raftkv_kv::{Command, Reply};
use raftkv_raft::{Index, NodeId};
use raftkv_replica::Op as Request2;

use super::{Simulator, BASE_PORT};
use crate::client::{self, Effect, Fate, InFlight, Meaning, Retry};
use crate::linearizability::OpKind;

impl Simulator {
    /// What the cluster did with a write: found by the index and term it was proposed at (the
    /// simulator records every pending write after every step, and a proposal stays pending at least
    /// until the step ends), or else (a `set` or `cas`) by its unique value. A write never seen pending
    /// and never applied was never proposed.
    pub(super) fn effect_of(&self, record: &client::Record) -> Effect {
        let applied_at = |index: Index| {
            let (_, reply, clock) = self.checks.applied_replies.get(&index)?;
            Some(Effect::Applied {
                index,
                reply: reply.clone(),
                clock: *clock,
            })
        };
        if let Some(attempts) = self.attempts.get(&record.op_id) {
            // A write in a session takes effect where its first attempt was applied; any later
            // attempt is a duplicate the store answers without applying.
            let first = attempts
                .iter()
                .filter_map(|attempt| self.proposals.get(attempt))
                .filter(|(index, term)| {
                    // Applied in its term, and not refused by the session table.
                    self.checks.applied_replies.get(index).is_some_and(
                        |(applied_term, reply, _)| {
                            applied_term == term
                                && !matches!(
                                    reply,
                                    Some(Reply::ErrSessionExpired | Reply::ErrSequence { .. })
                                )
                        },
                    )
                })
                .map(|(index, _)| *index)
                .min();
            if let Some(index) = first {
                return applied_at(index).unwrap_or(Effect::Unresolved);
            }
            return match record.op.kind {
                OpKind::Set { write, .. }
                | OpKind::Cas { write, .. }
                | OpKind::SetWith { write, .. } => {
                    match self.checks.write_outcomes.get(&client::value_bytes(write)) {
                        Some((index, _)) => applied_at(*index).unwrap_or(Effect::Unresolved),
                        None => Effect::Never,
                    }
                }
                // A delete leaves no value to find it by: attempts not seen pending were never proposed.
                _ => Effect::Never,
            };
        }
        if let Some(&(index, term)) = self.proposals.get(&record.op_id) {
            return match self.checks.applied_replies.get(&index) {
                Some((applied_term, _, _)) if *applied_term == term => {
                    applied_at(index).unwrap_or(Effect::Never)
                }
                _ => Effect::Never,
            };
        }
        match record.op.kind {
            OpKind::Set { write, .. }
            | OpKind::Cas { write, .. }
            | OpKind::SetWith { write, .. } => {
                match self.checks.write_outcomes.get(&client::value_bytes(write)) {
                    Some((index, _)) => applied_at(*index).unwrap_or(Effect::Unresolved),
                    None => Effect::Never,
                }
            }
            _ => Effect::Never,
        }
    }

    // ---- clients ----

    pub(super) fn run_clients(&mut self) {
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if !client.in_flight.is_empty() && self.now >= client.deadline {
                self.trace(|| format!("client {} gives up on its connection", c + 1));
                self.reconnect(c, true);
                continue;
            }
            // A write being retried goes out whatever the quota: it must get its answer.
            let open = self.healed.is_none() || !self.client_quota_met(c) || client.retry.is_some();
            let window = match client.session {
                Some(_) => 1,
                None => self.params.pipeline,
            };
            if open && self.now >= client.next_at && client.in_flight.len() < window {
                self.send(c);
            }
        }
    }

    /// Sends the client's next request on its connection: a session client first registers its
    /// session, and sends a write it does not know the outcome of again before anything new.
    pub(super) fn send(&mut self, c: usize) {
        let attempt = self.next_op_id;
        self.next_op_id += 1;
        if let Some(session) = self.clients[c].session {
            if session.id.is_none() {
                let register = Retry {
                    slot: 0,
                    request: Request2::write(Command::Register),
                    uncertain: false,
                };
                self.send_request(c, attempt, None, register, false);
                return;
            }
            if let Some(mut retry) = self.clients[c].retry.take() {
                let op_id = self.history.records[retry.slot].op_id;
                self.attempts.entry(op_id).or_default().push(attempt);
                self.stats.retries += 1;
                if let Request2::Write {
                    session: Some(at), ..
                } = &mut retry.request
                {
                    if Some(at.session) != session.id {
                        // Its session was gone before any attempt could apply it: a new one is safe.
                        *at = self.next_session_seq(c);
                    }
                }
                self.send_request(c, attempt, Some(retry.slot), retry, false);
                return;
            }
        }
        let op_id = attempt;
        let key = self.rng.below(self.params.keys);
        let last_version = self.clients[c].versions.get(&key).copied();
        let in_session = self.clients[c].session.is_some();
        // As in the server: the Redis front end has no exactly-once sessions (the session table keeps
        // only the text protocol's replies), so its commands come from clients without one.
        let redis_ops = self.params.redis_ops && !in_session;
        let mix = client::Mix {
            read_ppm: self.params.read_ppm,
            ttl_ppm: self.params.ttl_ppm,
            redis_ops,
            compound_keys: (redis_ops && self.params.compound_ops).then_some(self.params.keys),
            instants: redis_ops && self.params.instant_expiry,
        };
        let (mut request, kind, mut noreply) =
            client::draw_op(&mut self.rng, op_id, key, last_version, mix);
        if let (true, Request2::Write { session: at, .. }) = (in_session, &mut request) {
            *at = Some(self.next_session_seq(c));
            // One write at a time in a session: the next one waits for this one's answer.
            noreply = false;
            self.attempts.insert(op_id, vec![op_id]);
        }
        let conn = self.clients[c].conn;
        let slot = self.history.invoke(op_id, conn, key, kind, self.now);
        let retry = Retry {
            slot,
            request,
            uncertain: false,
        };
        self.send_request(c, attempt, Some(slot), retry, noreply);
    }

    /// The next sequence number of the client's (registered) session.
    fn next_session_seq(&mut self, c: usize) -> SessionSeq {
        let session = self.clients[c].session.get_or_insert_with(Default::default);
        let at = SessionSeq {
            session: session.id.unwrap_or_default(),
            seq: session.next_seq,
        };
        session.next_seq += 1;
        at
    }

    /// Sends one attempt of a request (`slot` None: a session registration).
    fn send_request(
        &mut self,
        c: usize,
        attempt: u64,
        slot: Option<usize>,
        retry: Retry,
        noreply: bool,
    ) {
        let Retry {
            request, uncertain, ..
        } = retry;
        let conn = self.clients[c].conn;
        let target = self.clients[c].target;
        self.trace(|| {
            format!(
                "client {} conn {conn} -> node {target}: attempt {attempt} {request:?} noreply={noreply}",
                c + 1
            )
        });
        let in_session = matches!(
            request,
            Request2::Write {
                session: Some(_),
                ..
            }
        );
        if !self.nodes[(target - 1) as usize].is_up() {
            // Connection refused: nothing happened; try another node a little later.
            match slot {
                Some(slot) if in_session => {
                    self.clients[c].retry = Some(Retry {
                        slot,
                        request,
                        uncertain,
                    })
                }
                Some(slot) => self.history.settle(slot, Fate::Dropped),
                None => {}
            }
            self.retarget(c, None);
            return;
        }
        self.nodes[(target - 1) as usize].request(self.now, request.clone(), attempt);
        let client = &mut self.clients[c];
        if noreply {
            // The client will never know: the write may or may not happen.
            if let Some(slot) = slot {
                self.history.settle(slot, Fate::Unknown);
            }
            client.next_at = self.now + self.rng.range(0, self.params.think_ms);
            return;
        }
        if client.in_flight.is_empty() {
            client.deadline = self.now + self.params.op_timeout_ms;
        }
        client.in_flight.push_back(InFlight {
            attempt,
            slot,
            request: in_session.then_some(request),
            uncertain,
            reply: None,
        });
        self.owner.insert(attempt, c);
        client.next_at = self.now + self.rng.range(0, self.params.think_ms / 4 + 1);
    }

    /// Points the client at another node (the one named by a redirect, or a random one), after a pause.
    pub(super) fn retarget(&mut self, c: usize, to: Option<NodeId>) {
        let target = to.unwrap_or_else(|| self.rng.range(1, self.params.nodes as u64));
        let pause = if to.is_some() {
            1
        } else {
            self.rng.range(5, 20)
        };
        let client = &mut self.clients[c];
        if client.target != target && !client.in_flight.is_empty() {
            // A new node means a new connection; what is in flight on the old one is abandoned.
            self.reconnect(c, false);
        }
        let client = &mut self.clients[c];
        client.target = target;
        client.next_at = self.now + pause;
    }

    /// Closes the client's connection: requests in flight end with an unknown outcome (writes) or no
    /// answer (reads), and the next request goes out on a new connection.
    pub(super) fn reconnect(&mut self, c: usize, random_target: bool) {
        let abandoned: Vec<InFlight> = self.clients[c].in_flight.drain(..).collect();
        for request in abandoned {
            self.owner.remove(&request.attempt);
            let Some(slot) = request.slot else {
                continue;
            };
            if let Some(request) = request.request {
                // Lost with the connection: it may have been applied.
                self.clients[c].retry = Some(Retry {
                    slot,
                    request,
                    uncertain: true,
                });
                continue;
            }
            let is_read = client::is_read(&self.history.records[slot].op.kind);
            let fate = if is_read {
                Fate::Dropped
            } else {
                Fate::Unknown
            };
            self.history.settle(slot, fate);
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let target = self.rng.range(1, self.params.nodes as u64);
        let pause = self.rng.range(5, 20);
        let client = &mut self.clients[c];
        client.conn = conn;
        if random_target {
            client.target = target;
            client.next_at = self.now + pause;
        }
    }

    pub(super) fn break_connections_to(&mut self, id: NodeId) {
        for c in 0..self.clients.len() {
            if self.clients[c].target == id {
                self.reconnect(c, true);
            }
        }
    }

    pub(super) fn handle_replies(&mut self) {
        for (op_id, reply) in std::mem::take(&mut self.replies) {
            if matches!(reply, raftkv_kv::Reply::Members { .. }) {
                // Only the membership nemesis asks `members ...`: its change committed.
                self.stats.membership_changes += 1;
                self.trace(|| format!("membership: change {op_id} committed"));
                continue;
            }
            // The client may have given up already, or never waited (noreply).
            let Some(&c) = self.owner.get(&op_id) else {
                continue;
            };
            let client = &mut self.clients[c];
            let Some(request) = client.in_flight.iter_mut().find(|r| r.attempt == op_id) else {
                continue;
            };
            assert!(request.reply.is_none(), "op {op_id} answered twice");
            request.reply = Some(reply);
            // The connection delivers replies in request order.
            while self.clients[c]
                .in_flight
                .front()
                .is_some_and(|r| r.reply.is_some())
            {
                let Some(done) = self.clients[c].in_flight.pop_front() else {
                    break;
                };
                self.deliver(c, done);
                if self.clients[c].in_flight.is_empty() {
                    break;
                }
            }
            let now = self.now;
            let timeout = self.params.op_timeout_ms;
            let client = &mut self.clients[c];
            if !client.in_flight.is_empty() {
                client.deadline = now + timeout;
            }
        }
    }

    pub(super) fn deliver(&mut self, c: usize, done: InFlight) {
        self.owner.remove(&done.attempt);
        let Some(reply) = done.reply else { return };
        let node_of_port = |port: u16| {
            let id = u64::from(port.checked_sub(BASE_PORT)?);
            (1..=self.params.nodes as u64).contains(&id).then_some(id)
        };
        let Some(slot) = done.slot else {
            // A session registration: keep the id, or register again (elsewhere) later.
            self.trace(|| format!("client {} registration: {reply:?}", c + 1));
            match reply {
                Reply::Session { id } => {
                    if let Some(session) = &mut self.clients[c].session {
                        *session = client::Session {
                            id: Some(id),
                            next_seq: 1,
                        };
                    }
                }
                Reply::ErrRedirect { port, .. } => self.retarget(c, node_of_port(port)),
                _ => self.retarget(c, None),
            }
            return;
        };
        let record = &self.history.records[slot];
        let kind = record.op.kind;
        let key = record.op.key;
        self.trace(|| format!("client {} op {}: {reply:?}", c + 1, record.op_id));
        let uncertain = done.uncertain;
        let retry = |request: Option<Request2>, uncertain: bool| {
            request.map(|request| Retry {
                slot,
                request,
                uncertain,
            })
        };
        if reply == Reply::ErrSessionExpired && done.request.is_some() {
            // Evicted or expired: register again. If no attempt can have been applied, the write goes
            // on in the new session; otherwise its outcome can no longer be learned.
            self.stats.sessions_lost += 1;
            if let Some(session) = &mut self.clients[c].session {
                session.id = None;
            }
            match retry(done.request, false) {
                Some(retry) if !uncertain => self.clients[c].retry = Some(retry),
                _ => self.history.settle(slot, Fate::Unknown),
            }
            return;
        }
        match client::interpret(kind, &reply, node_of_port) {
            Ok(Meaning::Done(kind)) => {
                self.history.respond(slot, kind, self.now);
                let client = &mut self.clients[c];
                client.completed += 1;
                if let Some(version) = kind.version() {
                    client.versions.insert(key, version);
                }
                client.next_at = client
                    .next_at
                    .max(self.now + self.rng.range(0, self.params.think_ms));
            }
            Ok(Meaning::Redirect(to)) => {
                match retry(done.request, uncertain) {
                    // An earlier attempt may have been applied: the write is not over.
                    Some(retry) => self.clients[c].retry = Some(retry),
                    None => self.history.settle(slot, Fate::Dropped),
                }
                self.retarget(c, to);
            }
            Ok(Meaning::Failed) => {
                match retry(done.request, true) {
                    Some(retry) => self.clients[c].retry = Some(retry),
                    None if client::is_read(&kind) => self.history.settle(slot, Fate::Dropped),
                    None => self.history.settle(slot, Fate::Unknown),
                }
                self.retarget(c, None);
            }
            Err(what) => {
                self.history.settle(slot, Fate::Dropped);
                self.checks.fail(0, format!("protocol: {what}"));
            }
        }
    }
}
