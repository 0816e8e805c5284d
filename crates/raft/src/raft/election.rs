//! Time and elections (§5.2, dissertation §9.6 pre-vote, §6.2 check-quorum): ticks, terms, roles and
//! votes.

use bytes::Bytes;

use super::*;

impl Raft {
    // ----- Time --------------------------------------------------------------------------------

    /// Figure 2, Rules for Servers, Followers and Candidates: an election timeout without hearing from
    /// a leader starts an election (§5.2).
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_timeout && self.may_campaign() {
            self.campaign(false);
        }
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.transfer_target.is_some() {
            // A transfer that did not finish within an election timeout is abandoned (§3.10). It has its
            // own clock so that repeated transfer requests cannot postpone the check-quorum above.
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_ticks {
                self.transfer_target = None;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            let round = if self.lease_reads_enabled() {
                // A round of its own renews the lease; it confirms any pending read round as well.
                let round = self.reads.next_round();
                self.lease.sent(round, self.ticks);
                round
            } else {
                // Re-ask for the newest read round, in case its heartbeats or their answers were lost.
                self.reads.newest_pending_round()
            };
            self.broadcast_heartbeat(round);
        }
    }

    /// Check-quorum (§6.2): has a majority been heard from since the last check? Resets the marks.
    pub(super) fn quorum_active(&mut self) -> bool {
        let id = self.id;
        let mut active = 0;
        for voter in &self.membership.voters {
            if *voter == id {
                active += 1;
            } else if let Some(p) = self.progress.get_mut(voter) {
                if p.recent_active {
                    active += 1;
                }
                p.previously_active = p.recent_active;
                p.recent_active = false;
            }
        }
        active >= self.membership.quorum()
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_ticks.max(1);
        self.randomized_election_timeout = base + self.rng.below(base as u64) as u32;
    }

    // ----- Terms and roles ---------------------------------------------------------------------

    /// §5.1: adopt a newer term, refuse an older one. Returns whether the message should be handled.
    pub(super) fn check_term(&mut self, msg: &Message) -> bool {
        if msg.term > self.term {
            match msg.body {
                MessageBody::PreVote { .. } => return !self.in_leader_lease(),
                // A granted pre-vote names the term we would campaign in; it changes nothing yet.
                MessageBody::PreVoteResponse { granted: true } => return true,
                MessageBody::Vote { transfer, .. } if !transfer && self.in_leader_lease() => {
                    return false
                }
                _ => {}
            }
            let leader = match msg.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => Some(msg.from),
                _ => None,
            };
            self.become_follower(msg.term, leader);
            return true;
        }
        if msg.term < self.term {
            match msg.body {
                // A stale leader (e.g. back from a partition) must learn the new term, or with
                // check-quorum and pre-vote it could hold on to followers that never campaign.
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                    self.send(msg.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::PreVote { .. } => {
                    self.send(msg.from, MessageBody::PreVoteResponse { granted: false });
                }
                _ => {}
            }
            return false;
        }
        true
    }

    /// With check-quorum, a node that heard from a leader within the minimum election timeout refuses to
    /// help depose it (§4.2.3), so a node that rejoins after a partition cannot disrupt a healthy leader.
    ///
    /// With leader leases a node refuses for an election timeout after it last heard from any
    /// leader, even if a higher term (from a rejected pre-vote, say) has since made it forget that
    /// leader, whose lease counts on it; and for its first election timeout after it starts: it may
    /// have answered a heartbeat just before it crashed.
    pub(super) fn in_leader_lease(&self) -> bool {
        let heard_from_leader =
            self.leader.is_some() && self.election_elapsed < self.config.election_ticks;
        let window = u64::from(self.config.election_ticks);
        let leased = self.lease_reads_enabled()
            && (self.ticks < window
                || self
                    .leader_contact_at
                    .is_some_and(|at| self.ticks.saturating_sub(at) < window));
        self.config.check_quorum && (heard_from_leader || leased)
    }

    /// Leader leases need check-quorum (the refusal window they stand on) and enough ticks for a margin.
    pub(super) fn lease_reads_enabled(&self) -> bool {
        self.config.lease_reads
            && self.config.check_quorum
            && crate::lease::lease_ticks(self.config.election_ticks) > 0
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.reads.clear();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.transfer_target = None;
        self.broadcast_pending = false;
        self.reset_election_timer();
    }

    /// Starts an election: first a pre-vote round if configured (§9.6), unless leadership is being
    /// handed to us, in which case the old leader has already stepped aside.
    pub(super) fn campaign(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.votes.clear();
            self.reset_election_timer();
            self.request_votes(true, false);
        } else {
            self.start_election(transfer);
        }
    }

    /// §5.2: increment the term, vote for ourselves, ask everyone else.
    pub(super) fn start_election(&mut self, transfer: bool) {
        self.role = Role::Candidate;
        self.term += 1;
        self.vote = Some(self.id);
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(false, transfer);
    }

    pub(super) fn request_votes(&mut self, pre: bool, transfer: bool) {
        if !pre && self.is_sole_voter() {
            // Our own vote is a vote like any other: it counts once durable. With other voters that is
            // implied (their answers come after our vote requests, which wait for the disk); alone, we
            // send it to ourselves after the disk. Winning at once instead, a sole voter that crashed
            // before its new term reached the disk could lead that term twice, with different entries
            // at the same index and term.
            let own = Message {
                from: self.id,
                to: self.id,
                term: self.term,
                body: MessageBody::VoteResponse { granted: true },
            };
            self.messages_after_persist.push(own);
            return;
        }
        // Our own vote counts first (a pre-vote promises nothing, so a lone pre-candidate goes on at once).
        if self.record_vote(self.id, true) {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let term = if pre { self.term + 1 } else { self.term };
        for &to in &self.membership.voters {
            if to == self.id {
                continue;
            }
            let body = if pre {
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                }
            };
            let msg = Message {
                from: self.id,
                to,
                term,
                body,
            };
            // A real vote request announces a term and a self-vote that must be durable first.
            if pre {
                self.messages.push(msg);
            } else {
                self.messages_after_persist.push(msg);
            }
        }
    }

    /// Counts a (pre-)vote. Returns true if the campaign ended (won or lost).
    /// Figure 2, Rules for Servers, Candidates: votes received from a majority make us leader (§5.2).
    pub(super) fn record_vote(&mut self, from: NodeId, granted: bool) -> bool {
        // Only voters of our membership count (§4.1); anyone else's answer is noise.
        if self.membership.is_voter(from) {
            self.votes.entry(from).or_insert(granted);
        }
        let granted_count = self.votes.values().filter(|g| **g).count();
        let rejected_count = self.votes.len() - granted_count;
        let quorum = self.membership.quorum();
        if granted_count >= quorum {
            if self.role == Role::PreCandidate {
                self.start_election(false);
                return true;
            }
            self.become_leader();
            return true;
        }
        if rejected_count >= quorum {
            self.become_follower(self.term, None);
            return true;
        }
        false
    }

    /// Figure 2, RequestVote RPC, receiver implementation (§5.2, §5.4.1): grant the vote if we have not
    /// voted for someone else this term and the candidate's log is at least as up-to-date as ours
    /// (rule 1, a stale term, is [`Raft::check_term`]'s). With `pre`, answers a pre-vote (§9.6) without
    /// recording anything. A granted vote is answered only after it is durable
    /// (`messages_after_persist`), since "persistent state" must be saved before responding.
    pub(super) fn handle_vote_request(
        &mut self,
        msg: &Message,
        last_index: Index,
        last_term: Term,
        pre: bool,
    ) {
        // A leader's lease may count on us even after a higher term made us forget it: with leases,
        // no vote for anyone new inside the window (a transfer's vote is the leader's own wish).
        let transfer = matches!(msg.body, MessageBody::Vote { transfer: true, .. });
        let leased = self.lease_reads_enabled() && !transfer && self.in_leader_lease();
        let can_vote = self.vote == Some(msg.from)
            || (self.vote.is_none() && self.leader.is_none() && !leased)
            || (pre && msg.term > self.term && !leased);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if pre {
            let term = if granted { msg.term } else { self.term };
            let response = MessageBody::PreVoteResponse { granted };
            self.messages.push(Message {
                from: self.id,
                to: msg.from,
                term,
                body: response,
            });
            return;
        }
        if granted {
            self.vote = Some(msg.from);
            self.reset_election_timer();
        }
        let response = Message {
            from: self.id,
            to: msg.from,
            term: self.term,
            body: MessageBody::VoteResponse { granted },
        };
        self.messages_after_persist.push(response);
    }

    /// Figure 2, Rules for Servers, Leaders: on election, initialise `nextIndex` (last log index + 1)
    /// and `matchIndex` (0) for each follower, and append a no-op of the new term (§8), whose first
    /// Append doubles as the initial heartbeat.
    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.transfer_target = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.lease.new_term();
        let next = self.log.last_index() + 1;
        // Learners too: they receive the log like voters, they just do not count.
        self.progress = self
            .membership
            .members()
            .filter(|id| *id != self.id)
            .map(|id| (id, Progress::new(next)))
            .collect();
        // §8: an entry of the new term, so that committing it commits everything before it.
        self.append_entry(EntryKind::Noop, Bytes::new());
    }

    pub(super) fn ensure_leader(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::Transferring);
        }
        Ok(())
    }
}
