//! The clients' side of a run: sending requests on connections, following redirects, delivering
//! replies in each connection's order, and resolving what happened to writes nobody heard back from.

use raftkv_raft::{Index, NodeId};

use super::{Simulator, BASE_PORT};
use crate::client::{self, Effect, Fate, InFlight, Meaning};
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
        if let Some(&(index, term)) = self.proposals.get(&record.op_id) {
            return match self.checks.applied_replies.get(&index) {
                Some((applied_term, _, _)) if *applied_term == term => {
                    applied_at(index).unwrap_or(Effect::Never)
                }
                _ => Effect::Never,
            };
        }
        match record.op.kind {
            OpKind::Set { write, .. } | OpKind::Cas { write, .. } => {
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
            let open = self.healed.is_none() || !self.client_quota_met(c);
            if open && self.now >= client.next_at && client.in_flight.len() < self.params.pipeline {
                self.send(c);
            }
        }
    }

    /// Sends the client's next request on its connection.
    pub(super) fn send(&mut self, c: usize) {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        let key = self.rng.below(self.params.keys);
        let last_version = self.clients[c].versions.get(&key).copied();
        let (request, kind, noreply) = client::draw_op(
            &mut self.rng,
            op_id,
            key,
            self.params.read_ppm,
            self.params.ttl_ppm,
            last_version,
        );
        let conn = self.clients[c].conn;
        let target = self.clients[c].target;
        let slot = self.history.invoke(op_id, conn, key, kind, self.now);
        self.trace(|| {
            format!(
                "client {} conn {conn} -> node {target}: op {op_id} {request:?} noreply={noreply}",
                c + 1
            )
        });
        if !self.nodes[(target - 1) as usize].is_up() {
            // Connection refused: nothing happened; try another node a little later.
            self.history.settle(slot, Fate::Dropped);
            self.retarget(c, None);
            return;
        }
        self.nodes[(target - 1) as usize].request(self.now, request, op_id);
        let client = &mut self.clients[c];
        if noreply {
            // The client will never know: the write may or may not happen.
            self.history.settle(slot, Fate::Unknown);
            client.next_at = self.now + self.rng.range(0, self.params.think_ms);
            return;
        }
        if client.in_flight.is_empty() {
            client.deadline = self.now + self.params.op_timeout_ms;
        }
        client.in_flight.push_back(InFlight {
            op_id,
            slot,
            reply: None,
        });
        self.owner.insert(op_id, c);
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
            self.owner.remove(&request.op_id);
            let is_read = client::is_read(&self.history.records[request.slot].op.kind);
            let fate = if is_read {
                Fate::Dropped
            } else {
                Fate::Unknown
            };
            self.history.settle(request.slot, fate);
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
            // The client may have given up already, or never waited (noreply).
            let Some(&c) = self.owner.get(&op_id) else {
                continue;
            };
            let client = &mut self.clients[c];
            let Some(request) = client.in_flight.iter_mut().find(|r| r.op_id == op_id) else {
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
        self.owner.remove(&done.op_id);
        let Some(reply) = done.reply else { return };
        let record = &self.history.records[done.slot];
        let kind = record.op.kind;
        let key = record.op.key;
        self.trace(|| format!("client {} op {}: {reply:?}", c + 1, done.op_id));
        let node_of_port = |port: u16| {
            let id = u64::from(port.checked_sub(BASE_PORT)?);
            (1..=self.params.nodes as u64).contains(&id).then_some(id)
        };
        match client::interpret(kind, &reply, node_of_port) {
            Ok(Meaning::Done(kind)) => {
                self.history.respond(done.slot, kind, self.now);
                let client = &mut self.clients[c];
                client.completed += 1;
                let version = match kind {
                    OpKind::Set { version, .. } | OpKind::Cas { version, .. } => version,
                    OpKind::Getm {
                        value: Some((_, version, _)),
                    } => Some(version),
                    _ => None,
                };
                if let Some(version) = version {
                    client.versions.insert(key, version);
                }
                client.next_at = client
                    .next_at
                    .max(self.now + self.rng.range(0, self.params.think_ms));
            }
            Ok(Meaning::Redirect(to)) => {
                self.history.settle(done.slot, Fate::Dropped);
                self.retarget(c, to);
            }
            Ok(Meaning::Failed) => {
                let fate = if client::is_read(&kind) {
                    Fate::Dropped
                } else {
                    Fate::Unknown
                };
                self.history.settle(done.slot, fate);
                self.retarget(c, None);
            }
            Err(what) => {
                self.history.settle(done.slot, Fate::Dropped);
                self.checks.fail(0, format!("protocol: {what}"));
            }
        }
    }
}
