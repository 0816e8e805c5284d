//! MULTI, EXEC, DISCARD and WATCH for one connection. Commands queued after MULTI are planned as
//! usual, and EXEC sends all their requests as one log entry ([`Command::Transaction`]), so they
//! apply at one index with nothing in between on any replica. WATCH reads the keys' versions
//! (through ReadIndex, like any read); the entry carries them, and the state machine refuses the
//! whole transaction if one has changed by the time it applies.

use raftkv_kv::{Command, Reply, Request, TxOp, Watch};
use raftkv_resp::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::commands::{self, Finish, LocalQuery, Plan, TxCommand};
use crate::request::Op;

/// The most commands one MULTI may queue (its bytes are bounded by the connection's budget too).
const MAX_QUEUED: usize = 10_000;

/// Bytes of the connection's budget a transaction leaves for EXEC itself.
const EXEC_ROOM: usize = 64;

/// A command's bytes held against the connection's and the node's budgets until it is answered.
pub(super) type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// The connection's transaction state.
#[derive(Default)]
pub(super) struct Transaction {
    /// The commands queued since MULTI; `None` outside MULTI.
    queued: Option<Vec<Queued>>,
    /// A command was refused while queuing: EXEC must discard the transaction.
    failed: bool,
    /// Bytes of the queued commands' arguments (each held in `held`): the transaction is one log
    /// entry and one request, held against the connection's budget like any other.
    queued_bytes: usize,
    /// The budgets' permits for those bytes, taken as each command is queued and kept until EXEC's
    /// answer is written (or DISCARD): queued commands count against the node's memory bound too.
    held: Vec<Permits>,
    watches: Vec<Watch>,
}

/// A queued command.
pub(super) enum Queued {
    /// Answered in place (PING, ECHO, SELECT...).
    Answer(Value),
    /// Answered from the node's status when EXEC runs (TIME, INFO...).
    Local(LocalQuery),
    /// Requests that go into the transaction's entry, and how their replies become the answer.
    Node { ops: Vec<TxOp>, finish: Finish },
}

/// How one queued command's answer is found in EXEC's reply.
pub(super) enum Part {
    Answer(Value),
    /// The next `count` replies of the transaction's entry, finished as the command's own.
    Node {
        count: usize,
        finish: Finish,
    },
}

/// What EXEC does.
pub(super) enum Exec {
    /// Answer without the log (an error, or a transaction without requests or watches).
    Answer(Value),
    /// Send this write; its reply and `parts` make the answer. `held` are the queued commands'
    /// permits, to keep until then.
    Submit {
        op: Op,
        parts: Vec<Part>,
        held: Vec<Permits>,
    },
}

/// What to do with a command given the transaction state.
pub(super) enum Step {
    /// Run it as usual.
    Run(Plan),
    /// Answer this (MULTI, DISCARD, a queued command...).
    Answer(Value),
    /// EXEC.
    Exec,
    /// WATCH these keys: read their versions, then [`Transaction::watched`].
    Watch(Vec<bytes::Bytes>),
}

impl Transaction {
    pub(super) fn in_multi(&self) -> bool {
        self.queued.is_some()
    }

    /// Whether a command of `cost` bytes may still be queued within `max_bytes` (leaving room for
    /// EXEC's own request, which takes its permits from the same budget).
    pub(super) fn fits(&self, cost: usize, max_bytes: usize) -> bool {
        self.queued_bytes + cost <= max_bytes.saturating_sub(EXEC_ROOM)
    }

    /// Keeps the permits of a command of `cost` bytes about to be queued.
    pub(super) fn hold(&mut self, permits: Permits, cost: usize) {
        self.held.push(permits);
        self.queued_bytes += cost;
    }

    /// Takes a planned command: transaction commands change the state; inside MULTI other commands
    /// are queued, unless `too_large` (it did not [`Transaction::fits`]).
    pub(super) fn step(&mut self, plan: Plan, too_large: bool) -> Step {
        let plan = match plan {
            Plan::Transaction(command) => return self.command(command),
            plan if !self.in_multi() => return Step::Run(plan),
            plan => plan,
        };
        let entry = match plan {
            Plan::Now {
                value,
                close: false,
            } => {
                if commands::aborts_transaction(&value) {
                    // As Redis: an unknown command or a wrong argument count discards the
                    // transaction; other errors are answered in their place in EXEC's reply.
                    self.failed = true;
                    return Step::Answer(value);
                }
                Queued::Answer(value)
            }
            Plan::Local(query) => Queued::Local(query),
            Plan::Node { ops, finish } => match ops.into_iter().map(tx_op).collect() {
                Some(ops) => Queued::Node { ops, finish },
                None => {
                    self.failed = true;
                    return Step::Answer(Value::err(
                        "raftkv cannot run this command inside MULTI (KEYS, SCAN, RANDOMKEY and \
                         DBSIZE look at the whole key space)",
                    ));
                }
            },
            Plan::Wait { .. } => {
                self.failed = true;
                return Step::Answer(Value::err("raftkv cannot run WAIT inside MULTI"));
            }
            Plan::Now { close: true, .. } | Plan::Hello { .. } | Plan::SetName(_) => {
                self.failed = true;
                return Step::Answer(Value::err("Command not allowed inside a transaction"));
            }
            Plan::Transaction(_) => unreachable!("handled above"),
        };
        let queue = self.queued.get_or_insert_with(Vec::new);
        if queue.len() >= MAX_QUEUED || too_large {
            self.failed = true;
            return Step::Answer(Value::err(format!(
                "a transaction holds at most {MAX_QUEUED} commands, and the bytes of \
                 max_request_bytes_in_flight"
            )));
        }
        queue.push(entry);
        Step::Answer(Value::Simple("QUEUED".into()))
    }

    fn command(&mut self, command: TxCommand) -> Step {
        match (command, self.in_multi()) {
            (TxCommand::Multi, true) => Step::Answer(Value::err("MULTI calls can not be nested")),
            (TxCommand::Multi, false) => {
                self.queued = Some(Vec::new());
                self.failed = false;
                Step::Answer(Value::ok())
            }
            (TxCommand::Exec, false) => Step::Answer(Value::err("EXEC without MULTI")),
            (TxCommand::Exec, true) => Step::Exec,
            (TxCommand::Discard, false) => Step::Answer(Value::err("DISCARD without MULTI")),
            (TxCommand::Discard, true) => {
                self.reset();
                Step::Answer(Value::ok())
            }
            (TxCommand::Watch(_), true) => {
                Step::Answer(Value::err("WATCH inside MULTI is not allowed"))
            }
            (TxCommand::Watch(keys), false) => Step::Watch(keys),
            (TxCommand::Reset, _) => {
                self.reset();
                Step::Answer(Value::Simple("RESET".into()))
            }
            (TxCommand::Unwatch, _) => {
                // Inside MULTI, Redis queues UNWATCH; its effect (none, after EXEC) is the same.
                if self.in_multi() {
                    let ok = Plan::Now {
                        value: Value::ok(),
                        close: false,
                    };
                    return self.step(ok, false);
                }
                self.watches.clear();
                Step::Answer(Value::ok())
            }
        }
    }

    /// Records a watched key's version (0: absent).
    pub(super) fn watched(&mut self, watch: Watch) {
        if !self.watches.iter().any(|w| w.key == watch.key) {
            self.watches.push(watch);
        }
    }

    /// Ends the transaction: EXEC's request and how to read its reply, `local` answering the
    /// queued local queries.
    pub(super) fn exec(&mut self, mut local: impl FnMut(LocalQuery) -> Value) -> Exec {
        let queued = self.queued.take().unwrap_or_default();
        let failed = std::mem::take(&mut self.failed);
        let watches = std::mem::take(&mut self.watches);
        self.queued_bytes = 0;
        let held = std::mem::take(&mut self.held);
        if failed {
            return Exec::Answer(Value::Error(
                "EXECABORT Transaction discarded because of previous errors.".into(),
            ));
        }
        let mut parts = Vec::with_capacity(queued.len());
        let mut ops = Vec::new();
        for entry in queued {
            parts.push(match entry {
                Queued::Answer(value) => Part::Answer(value),
                Queued::Local(query) => Part::Answer(local(query)),
                Queued::Node {
                    ops: requests,
                    finish,
                } => {
                    let count = requests.len();
                    ops.extend(requests);
                    Part::Node { count, finish }
                }
            });
        }
        if ops.is_empty() && watches.is_empty() {
            let answers = parts.into_iter().map(|part| match part {
                Part::Answer(value) => value,
                Part::Node { .. } => Value::Array(Vec::new()),
            });
            return Exec::Answer(Value::Array(answers.collect()));
        }
        Exec::Submit {
            op: Op::write(Command::Transaction { watches, ops }),
            parts,
            held,
        }
    }

    fn reset(&mut self) {
        *self = Transaction::default();
    }
}

/// A request as a transaction step; `None` for the reads a transaction cannot carry.
fn tx_op(op: Op) -> Option<TxOp> {
    match op {
        Op::Write {
            command,
            session: None,
        } => Some(TxOp::Write(command)),
        Op::Read(Request::Get { key }) => Some(TxOp::Get(key)),
        Op::Read(Request::Pttl { key }) => Some(TxOp::Pttl(key)),
        _ => None,
    }
}

/// EXEC's answer from its entry's reply. `None` if the node is no longer the leader.
pub(super) fn exec_reply(reply: Reply, parts: Vec<Part>) -> Option<Value> {
    let replies = match reply {
        Reply::Multi { replies } => replies,
        Reply::ExecAborted => return Some(Value::NullArray),
        other => {
            // Not applied (or not known to be): answer as a single command would.
            return commands::finish(Finish::Ok, vec![other]);
        }
    };
    let mut replies = replies.into_iter();
    let mut answers = Vec::with_capacity(parts.len());
    for part in parts {
        answers.push(match part {
            Part::Answer(value) => value,
            Part::Node { count, finish } => {
                let own: Vec<Reply> = replies.by_ref().take(count).collect();
                commands::finish(finish, own)?
            }
        });
    }
    Some(Value::Array(answers))
}
