//! The faults, and the schedule that injects them: quiet, fault, hold, heal, again, each nemesis in
//! turn, every injection and heal recorded as an [`Event`] in the history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftkv_sim::rng::Rng;

use crate::cluster::Cluster;
use crate::history::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nemesis {
    /// kill -9 a random node; restart it at the heal.
    Kill,
    /// kill -9 the leader; restart it at the heal.
    KillLeader,
    /// SIGSTOP the leader (or a random node) for seconds; SIGCONT at the heal.
    Pause,
    /// kill -9 every node at once; restart them all.
    AllKill,
    /// Split the nodes into a random majority and minority.
    Partition,
    /// Cut the leader off from every other node (clients still reach it).
    IsolateLeader,
    /// Two halves that cannot talk, and one node that talks to both.
    Bridge,
    /// The leader's packets to the others are dropped, or theirs to it: one direction only.
    OneWay,
    /// A random share (10–40%) of every packet between nodes is dropped.
    Loss,
    /// Slow, jittery links (netem delay and reordering where the kernel has it).
    Slow,
    /// One node's wall clock jumps tens of seconds ahead or behind (libfaketime).
    Clock,
    /// kill -9 a node, or all, and drop what they wrote but did not fsync (power-loss file system).
    PowerLoss,
    /// Remove a node (the leader, sometimes) from the membership and wipe it; at the heal it joins
    /// again, empty, as a learner, and is promoted once caught up.
    Membership,
}

pub const ALL: [Nemesis; 13] = [
    Nemesis::Kill,
    Nemesis::KillLeader,
    Nemesis::Pause,
    Nemesis::AllKill,
    Nemesis::Partition,
    Nemesis::IsolateLeader,
    Nemesis::Bridge,
    Nemesis::OneWay,
    Nemesis::Loss,
    Nemesis::Slow,
    Nemesis::Clock,
    Nemesis::PowerLoss,
    Nemesis::Membership,
];

impl Nemesis {
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::KillLeader => "kill-leader",
            Nemesis::Pause => "pause",
            Nemesis::AllKill => "all-kill",
            Nemesis::Partition => "partition",
            Nemesis::IsolateLeader => "isolate-leader",
            Nemesis::Bridge => "bridge",
            Nemesis::OneWay => "one-way",
            Nemesis::Loss => "loss",
            Nemesis::Slow => "slow",
            Nemesis::Clock => "clock",
            Nemesis::PowerLoss => "power-loss",
            Nemesis::Membership => "membership",
        }
    }

    pub fn from_name(name: &str) -> Option<Nemesis> {
        ALL.into_iter().find(|n| n.name() == name)
    }

    /// Whether it works on the network between namespaces (not on loopback).
    pub fn needs_netns(self) -> bool {
        matches!(
            self,
            Nemesis::Partition
                | Nemesis::IsolateLeader
                | Nemesis::Bridge
                | Nemesis::OneWay
                | Nemesis::Loss
                | Nemesis::Slow
        )
    }
}

/// Longest wait for one membership change (elections, a learner catching up).
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(60);

/// Cuts the power of the nodes whose data directories are named: everything they wrote and did not
/// fsync is gone (the processes must already be dead).
pub trait PowerSwitch {
    fn power_loss(&self, data_dirs: &[std::path::PathBuf]) -> Result<(), String>;
}

/// How long faults last and how long the cluster is left alone between them.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub quiet: (Duration, Duration),
    pub fault: (Duration, Duration),
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            quiet: (Duration::from_secs(2), Duration::from_secs(4)),
            fault: (Duration::from_secs(3), Duration::from_secs(6)),
        }
    }
}

/// Set (by a Ctrl-C handler) to end the faults early: the run then heals and checks what it recorded.
pub static STOP: AtomicBool = AtomicBool::new(false);

fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps for `span`, or until [`STOP`].
fn nap(span: Duration) {
    let until = Instant::now() + span;
    while !stopping() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

fn between(rng: &mut Rng, (low, high): (Duration, Duration)) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    low + Duration::from_millis(rng.below(span + 1))
}

/// What must be undone at the heal.
#[derive(Default)]
struct Undo {
    /// Removed from the membership and wiped: to join again and be promoted.
    rejoin: Vec<usize>,
    restart: Vec<usize>,
    resume: Vec<usize>,
    network: bool,
    clocks: Vec<usize>,
}

pub struct Schedule<'a> {
    pub cluster: &'a mut Cluster,
    pub nemeses: Vec<Nemesis>,
    pub timing: Timing,
    pub rng: Rng,
    pub start: Instant,
    pub power: Option<&'a dyn PowerSwitch>,
    pub events: Vec<Event>,
    /// Power losses so far: odd ones take every node down, even ones one node.
    pub power_losses: u64,
}

impl Schedule<'_> {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn record(&mut self, heal: bool, what: String) {
        eprintln!(
            "[{:>8.3}s] {} {what}",
            self.start.elapsed().as_secs_f64(),
            if heal { "heal " } else { "fault" }
        );
        let at_us = self.now_us();
        self.events.push(Event { at_us, heal, what });
    }

    /// Faults, one nemesis after another, until `until` (time since start) and every nemesis has had
    /// its turn at least once.
    pub fn run(&mut self, until: Duration) -> Result<(), String> {
        let mut turn = 0;
        let count = self.nemeses.len();
        let start = self.start;
        let more = |turn: usize| (start.elapsed() < until || turn < count) && !stopping();
        while more(turn) && !self.nemeses.is_empty() {
            let quiet = between(&mut self.rng, self.timing.quiet);
            nap(quiet);
            if !more(turn) {
                break;
            }
            let nemesis = self.nemeses[turn % self.nemeses.len()];
            turn += 1;
            let mut undo = Undo::default();
            let what = self.inject(nemesis, &mut undo)?;
            self.record(false, format!("{}: {what}", nemesis.name()));
            let hold = between(&mut self.rng, self.timing.fault);
            let remaining = until.saturating_sub(self.start.elapsed());
            nap(hold.min(remaining.max(Duration::from_secs(1))));
            self.heal(undo)?;
            self.record(true, format!("{} healed", nemesis.name()));
        }
        Ok(())
    }

    fn pick(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn leader_or_any(&mut self) -> usize {
        match self.cluster.leader() {
            Some(leader) => leader,
            None => self.pick(self.cluster.nodes()),
        }
    }

    fn shuffled(&mut self) -> Vec<usize> {
        let mut nodes: Vec<usize> = (0..self.cluster.nodes()).collect();
        for i in (1..nodes.len()).rev() {
            let j = self.pick(i + 1);
            nodes.swap(i, j);
        }
        nodes
    }

    fn inject(&mut self, nemesis: Nemesis, undo: &mut Undo) -> Result<String, String> {
        let n = self.cluster.nodes();
        match nemesis {
            Nemesis::Kill | Nemesis::KillLeader => {
                let i = if nemesis == Nemesis::Kill {
                    self.pick(n)
                } else {
                    self.leader_or_any()
                };
                self.cluster.kill(i);
                undo.restart.push(i);
                Ok(format!("killed node {}", i + 1))
            }
            Nemesis::Pause => {
                let i = if self.rng.below(2) == 0 {
                    self.leader_or_any()
                } else {
                    self.pick(n)
                };
                self.cluster.pause(i, true);
                undo.resume.push(i);
                Ok(format!("paused node {}", i + 1))
            }
            Nemesis::AllKill => {
                for i in 0..n {
                    self.cluster.kill(i);
                }
                undo.restart.extend(0..n);
                Ok("killed every node".into())
            }
            Nemesis::PowerLoss => {
                let power = self
                    .power
                    .ok_or("power-loss needs the power-loss file system")?;
                self.power_losses += 1;
                let victims: Vec<usize> = if self.power_losses % 2 == 1 {
                    (0..n).collect()
                } else {
                    vec![self.pick(n)]
                };
                for &i in &victims {
                    self.cluster.kill(i);
                }
                let dirs: Vec<_> = victims.iter().map(|&i| self.cluster.data_dir(i)).collect();
                power.power_loss(&dirs)?;
                undo.restart.extend(&victims);
                let names: Vec<String> = victims.iter().map(|i| (i + 1).to_string()).collect();
                Ok(format!("power lost on node(s) {}", names.join(",")))
            }
            Nemesis::Membership => {
                let i = if self.rng.below(3) == 0 {
                    self.leader_or_any()
                } else {
                    self.pick(n)
                };
                let id = i + 1;
                self.cluster.change_members(
                    &format!("members remove {id}"),
                    |reason| reason.contains("is not a member"),
                    MEMBERSHIP_WAIT,
                )?;
                self.cluster.wipe_for_rejoin(i)?;
                undo.rejoin.push(i);
                Ok(format!("node {id} removed from the membership and wiped"))
            }
            Nemesis::Clock => {
                let i = if self.rng.below(2) == 0 {
                    self.leader_or_any()
                } else {
                    self.pick(n)
                };
                let magnitude = 20 + self.rng.below(100) as i64;
                let offset = if self.rng.below(2) == 0 {
                    magnitude
                } else {
                    -magnitude
                };
                self.cluster.set_clock(i, offset)?;
                undo.clocks.push(i);
                // The fault must be real: the node's own status must show its clock moved.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let seen = self.cluster.clock_offset(i);
                    if seen.is_some_and(|seen| (seen - offset).abs() <= 2) {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "node {}'s clock did not move to {offset:+} s (its /status says \
                             {seen:?} s): is libfaketime preloaded?",
                            i + 1
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(format!("node {}'s clock jumped {offset:+} s", i + 1))
            }
            _ => self.inject_network(nemesis, undo),
        }
    }

    fn inject_network(&mut self, nemesis: Nemesis, undo: &mut Undo) -> Result<String, String> {
        let n = self.cluster.nodes();
        let leader = self.leader_or_any();
        let order = self.shuffled();
        let loss = 10 + self.rng.below(31) as u8;
        let inbound = self.rng.below(2) == 0;
        let net = self
            .cluster
            .network()
            .ok_or_else(|| format!("{} needs --netns", nemesis.name()))?;
        undo.network = true;
        let cut = |net: &mut crate::netns::Network, a: &[usize], b: &[usize]| {
            for &x in a {
                for &y in b {
                    net.block(x, y)?;
                    net.block(y, x)?;
                }
            }
            Ok::<(), String>(())
        };
        let names = |nodes: &[usize]| {
            let ids: Vec<String> = nodes.iter().map(|i| (i + 1).to_string()).collect();
            format!("{{{}}}", ids.join(","))
        };
        match nemesis {
            Nemesis::Partition => {
                let (minority, majority) = order.split_at(n / 2);
                cut(net, minority, majority)?;
                Ok(format!("{} | {}", names(minority), names(majority)))
            }
            Nemesis::IsolateLeader => {
                let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
                cut(net, &[leader], &others)?;
                Ok(format!("leader {} cut off", leader + 1))
            }
            Nemesis::Bridge => {
                let bridge = order[0];
                let (left, right) = order[1..].split_at((n - 1) / 2);
                cut(net, left, right)?;
                Ok(format!(
                    "{} | {} bridged by {}",
                    names(left),
                    names(right),
                    bridge + 1
                ))
            }
            Nemesis::OneWay => {
                for other in (0..n).filter(|&i| i != leader) {
                    if inbound {
                        net.block(other, leader)?;
                    } else {
                        net.block(leader, other)?;
                    }
                }
                let direction = if inbound { "to" } else { "from" };
                Ok(format!("packets {direction} leader {} dropped", leader + 1))
            }
            Nemesis::Loss => {
                for i in 0..n {
                    net.set_loss(i, loss)?;
                }
                Ok(format!("{loss}% of packets between nodes dropped"))
            }
            Nemesis::Slow => {
                let mut how = String::new();
                for i in 0..n {
                    how = net.slow(i)?;
                }
                Ok(format!("every link slow: {how}"))
            }
            _ => unreachable!("process faults are handled by inject"),
        }
    }

    fn heal(&mut self, undo: Undo) -> Result<(), String> {
        if undo.network {
            if let Some(net) = self.cluster.network() {
                net.heal()?;
            }
        }
        for i in undo.resume {
            self.cluster.pause(i, false);
        }
        for i in undo.clocks {
            self.cluster.set_clock(i, 0)?;
        }
        for i in undo.restart {
            self.cluster.start(i)?;
        }
        for i in undo.rejoin {
            // `--join` adds it as a learner; promotion waits until it has caught up.
            self.cluster.start(i)?;
            let id = i + 1;
            self.cluster.change_members(
                &format!("members promote {id}"),
                |reason| reason.contains("already a voter"),
                MEMBERSHIP_WAIT,
            )?;
        }
        Ok(())
    }

    /// Undoes everything, whatever state the run ended in.
    pub fn heal_all(&mut self) -> Result<(), String> {
        if let Some(net) = self.cluster.network() {
            net.heal()?;
        }
        self.cluster.revive_all()?;
        self.record(true, "everything healed".into());
        Ok(())
    }
}
