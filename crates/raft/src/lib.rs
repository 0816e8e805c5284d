//! # raftkv-raft: Raft consensus as a pure, deterministic state machine
//!
//! This crate is the consensus core of raftkv: leader election with randomized timeouts, pre-vote
//! (dissertation §9.6), check-quorum (§6.2), log replication with fast backtracking, batching and
//! pipelining, commitment by counting current-term replicas (§5.4.2), ReadIndex reads (§6.4),
//! leadership transfer (§3.10) and snapshot installation (§7). It performs **no I/O**: it never
//! touches a socket, a file, a clock, a thread or a global random source. Everything it knows arrives
//! through method calls and everything it wants done leaves in a [`Ready`]. The code that owns the
//! disk, the network and the state machine — the *driver* (the server, or the simulator) — runs the
//! loop below.
//!
//! ## The driver loop
//!
//! ```text
//!   inputs ──► tick() / step(msg) / propose(data) / read_index(ctx) / transfer_leadership(to)
//!                                   │
//!                    has_ready()? ──┴─► ready() ─► Ready
//!   1. persist   snapshot, entries, hard_state (in this order, batches in ready() order)
//!   2. send      messages                 — immediately, even while step 1 is still writing
//!                messages_after_persist   — only once step 1 is durable
//!   3. apply     snapshot (if any), then committed entries, in order
//!   4. serve     read_states once the applied index reaches their index
//!   5. report    persisted(last index, term) when step 1 is durable; applied(index) after step 3
//! ```
//!
//! * **Time** moves only through [`Raft::tick`]; the driver calls it at a fixed interval (e.g. every
//!   100 ms). Election and heartbeat timeouts are counted in ticks ([`Config`]).
//! * **Messages** from peers go to [`Raft::step`]. Stale, duplicated, reordered or lost messages are
//!   expected and safe; the driver needs no reliable transport.
//! * **Proposals** go to [`Raft::propose`] on the leader, which returns the index and term the entry
//!   will have. The proposal succeeded if that same index and term later appears in
//!   [`Ready::committed`]; if a different entry commits there, it was lost with a leadership change.
//!
//! ## What must be durable before which message is sent
//!
//! Figure 2 of the paper says persistent state is "updated on stable storage before responding to
//! RPCs". The core encodes this by splitting outgoing messages in two lists:
//!
//! * [`Ready::messages_after_persist`] carries promises about this node's disk: vote responses (the
//!   vote and term must survive a crash, or the node could vote twice in a term), a candidate's own
//!   vote requests (its self-vote and new term), and append/snapshot responses (an acknowledgement
//!   means "these entries are on my disk", which the leader counts toward a commit majority). They may
//!   be sent only after everything in the same `Ready` — and every earlier one — is durable.
//! * [`Ready::messages`] promise nothing about this node's disk (appends and heartbeats from the
//!   leader, heartbeat answers, pre-votes, TimeoutNow) and may be sent at once.
//!
//! Entries at an index the storage already holds replace it and everything after it (a conflicting
//! suffix was truncated). When a batch is durable the driver calls [`Raft::persisted`] with the index
//! and term of its last entry (or of its snapshot); reports for entries that were replaced since are
//! ignored.
//!
//! ## The leader overlaps its disk write with replication
//!
//! As in dissertation §10.2.1, a leader's appends are in `messages`, so followers can write the new
//! entries while the leader writes them too. The leader's own log counts toward the commit majority
//! only up to what [`Raft::persisted`] reported; followers count up to what they acknowledged (which
//! they do only after their write). A 3-node cluster can therefore commit on two followers' disks
//! before the leader's own write completes. Committed entries are durable on a majority, so the driver
//! may apply them before this node's own copy is durable; the commit index in [`HardState`] may then
//! run ahead of the durable log, and is clamped to it on restart.
//!
//! The driver may call `ready()` again before the previous batch is durable (pipelining its disk), as
//! long as it persists batches in order and holds back each batch's `messages_after_persist` until
//! that batch is durable.
//!
//! ## Linearizable reads (ReadIndex)
//!
//! [`Raft::read_index`] registers a read with a caller-chosen context on the leader. The leader waits
//! until it has committed an entry of its own term (its no-op), records its commit index, and confirms
//! it is still leader with a heartbeat round acknowledged by a majority; every read that arrived before
//! the round starts shares it. The read then comes back in [`Ready::read_states`] with that index; the
//! driver serves it once its state machine has applied that index. If the leader loses leadership
//! first, its pending reads are dropped: the driver sees the role change in [`Ready::soft_state`] and
//! must fail (or retry elsewhere) every read it still waits for.
//!
//! With [`Config::lease_reads`] (opt-in), a leader whose lease holds releases a read at once, at its
//! commit index, without a round: see the `lease` module for the rule and the clock assumption.
//!
//! ## Snapshots and compaction
//!
//! The log need not start at index 1: [`InitialState`] may hold a snapshot, and the log continues after
//! it. Once the state machine has applied an index, the driver may hand a snapshot of it to
//! [`Raft::compact`], which drops the entries it covers from memory and keeps the snapshot for
//! followers that fall behind it; those receive an `InstallSnapshot`. A follower that installs one
//! returns it in [`Ready::snapshot`]: the driver persists it (replacing its log), restores its state
//! machine from it before applying any later `committed` entries, and reports it with `persisted` and
//! `applied` at the snapshot's index. The voter set ([`Membership`]) travels in the snapshot.
//!
//! ## Where each rule of the paper's Figure 2 lives
//!
//! | Figure 2 rule | function |
//! |---|---|
//! | State: `currentTerm`, `votedFor`, `log[]` persisted before responding | [`HardState`] and `entries` in [`Ready`]; responses in [`Ready::messages_after_persist`] |
//! | State: `commitIndex`, `lastApplied` | `RaftLog::commit` (`log.rs`); [`Raft::applied`] |
//! | State: `nextIndex[]`, `matchIndex[]` (leaders) | `Progress` (`progress.rs`), set up by `become_leader` (`raft/election.rs`) |
//! | AppendEntries receiver, rules 1–5 | `check_term` (rule 1), `handle_append` (rules 2–5) in `raft/replication.rs` |
//! | RequestVote receiver, rules 1–2 | `check_term` (rule 1), `handle_vote_request` (rule 2) in `raft/election.rs` |
//! | All servers: apply entries up to `commitIndex` | [`Ready::committed`], applied by the driver |
//! | All servers: a higher term in any RPC → follower | `check_term`, `become_follower` (`raft/election.rs`) |
//! | Followers: respond to RPCs; election timeout → candidate | `step`, `tick_election` (`raft/election.rs`) |
//! | Candidates: new term, vote for self, reset timer, send RequestVote | `campaign`, `start_election`, `request_votes` |
//! | Candidates: majority of votes → leader; AppendEntries from a leader → follower; timeout → new election | `record_vote`, `step_from_leader`, `tick_election` |
//! | Leaders: initial empty AppendEntries, heartbeats while idle | `become_leader` (its no-op, §8), `tick_leader`, `broadcast_heartbeat` |
//! | Leaders: client command → append, respond after applied | [`Raft::propose`] → `append_entry`; the driver answers once applied |
//! | Leaders: last log index ≥ nextIndex → AppendEntries; success/failure update | `send_append`, `handle_append_response` (`raft/replication.rs`) |
//! | Leaders: commit the highest index on a majority, if of the current term | `maybe_commit` (§5.3, §5.4.2) |
//!
//! ## Determinism
//!
//! The only random choice Raft makes — the election timeout jitter, drawn uniformly from
//! `[election_ticks, 2 * election_ticks)` — comes from a small generator inside the node seeded by
//! [`Config::seed`]. Given the same configuration, the same initial state and the same sequence of
//! calls, a node produces the same `Ready` batches, bit for bit. That is what lets the simulator
//! replay any failure from its seed.
//!
//! ## What this crate must never do
//!
//! No I/O of any kind (files, sockets, stdout in the library), no reading of clocks (`Instant`,
//! `SystemTime`), no threads or async runtimes, no global or OS randomness, no `unsafe`. Its only
//! dependency is `bytes`. Anything that needs one of these belongs in the driver.
#![forbid(unsafe_code)]

mod config;
mod lease;
mod log;
mod membership;
mod progress;
mod raft;
mod read_index;
mod ready;
mod rng;
mod types;

pub use config::Config;
pub use lease::{lease_ticks, MAX_CLOCK_RATE_DIFFERENCE_PERCENT};
pub use membership::{ConfChange, ConfChangeError, MAX_CONTEXT_BYTES, MAX_MEMBERS};
pub use raft::{InitialState, ProposeError, Raft, Status};
pub use ready::Ready;
pub use types::*;
