//! The sequential model of a group of keys: what each operation does to it, exactly as the store
//! does it, and whether the reply the client saw is the one it would have given.
//!
//! Expiry is the model's one choice: before an operation, any key it touches that has a lifetime
//! may have vanished ([`Group::successors`] tries each such subset). An operation whose outcome is
//! unknown takes effect as the success it may have been; its failure changes nothing, which "never
//! took effect" already covers.

use std::cell::RefCell;
use std::collections::HashMap;

use super::value::{Texts, Value, WriteId};
use super::{
    CasOutcome, Key, Op, OpKind, RenameOutcome, SetCondition, TtlCondition, TxAction, TxStep,
    MAX_GROUP, PAST_LIFETIME_S,
};

/// What the whole sub-history says about its writes' versions, independent of order.
pub(super) struct Facts {
    /// The version (log index) of each write, where some reply or the simulator told it.
    versions: HashMap<WriteId, u64>,
    /// Which write holds each known version.
    owners: HashMap<u64, WriteId>,
}

impl Facts {
    pub(super) fn gather(ops: &[Op]) -> Result<Facts, String> {
        let mut facts = Facts {
            versions: HashMap::new(),
            owners: HashMap::new(),
        };
        // A getm names a value and a version; the value names its write only while no operation
        // re-versions a value without changing it (RENAME, EXPIRE).
        let reversioned = ops.iter().any(|op| {
            matches!(
                op.kind,
                OpKind::Rename { .. } | OpKind::SetTtl { .. } | OpKind::GetEx { .. }
            )
        });
        for op in ops {
            let write = op.kind.write();
            if let (Some(write), Some(version)) = (write, op.kind.version()) {
                facts.learn(write, version)?;
            }
            // An op's writes all happen at the index it was applied at.
            if let (Some(write), Some(index)) = (write, op.index) {
                facts.learn(write, index)?;
            }
            if let OpKind::Getm {
                value: Some((Value::Write(write), version, _)),
            } = op.kind
            {
                if !reversioned {
                    facts.learn(write, version)?;
                }
            }
        }
        Ok(facts)
    }

    fn learn(&mut self, write: WriteId, version: u64) -> Result<(), String> {
        if let Some(old) = self.versions.insert(write, version) {
            if old != version {
                return Err(format!(
                    "write {write} seen with versions {old} and {version}"
                ));
            }
        }
        if let Some(other) = self.owners.insert(version, write) {
            if other != write {
                return Err(format!(
                    "version {version} belongs to writes {other} and {write}"
                ));
            }
        }
        Ok(())
    }

    /// Whether write `holder` has version `expected`: Some(answer), or None if the history cannot tell.
    fn has_version(&self, holder: WriteId, expected: u64) -> Option<bool> {
        if let Some(&version) = self.versions.get(&holder) {
            return Some(version == expected);
        }
        self.owners.get(&expected).map(|&owner| owner == holder)
    }
}

/// What one key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Holds {
    Absent,
    /// `maker` is the write that last changed the key (its index is the key's version); `ttl_s` the
    /// lifetime it was given last (0: none).
    Live {
        value: Value,
        maker: WriteId,
        ttl_s: u32,
    },
}

/// The state of a group: what each key holds, and the newest log index of a write to the group so
/// far (writes take effect in log order; a version is the index of the write that made it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct State {
    keys: [Holds; MAX_GROUP],
    last_index: u64,
}

impl State {
    pub(super) const INITIAL: State = State {
        keys: [Holds::Absent; MAX_GROUP],
        last_index: 0,
    };
}

/// A group's keys and facts, and the texts the model has made while searching it.
pub(super) struct Group<'a> {
    keys: Vec<Key>,
    /// Lifetimes this long (in seconds) or longer cannot run out during the history.
    lasting_ttl_s: u32,
    facts: &'a Facts,
    texts: RefCell<Texts>,
}

/// One operation applied to a state, reply checked: Err(()) where it cannot take effect.
type Applied = Result<(), ()>;

impl<'a> Group<'a> {
    /// The group of `keys`; lifetimes of `lasting_ttl_s` seconds or more never run out.
    pub(super) fn new(keys: &[Key], facts: &'a Facts, lasting_ttl_s: Option<u32>) -> Group<'a> {
        assert!(keys.len() <= MAX_GROUP, "group of {} keys", keys.len());
        Group {
            keys: keys.to_vec(),
            lasting_ttl_s: lasting_ttl_s.unwrap_or(u32::MAX),
            facts,
            texts: RefCell::new(Texts::default()),
        }
    }

    fn slot(&self, key: Key) -> usize {
        self.keys
            .iter()
            .position(|&k| k == key)
            .expect("an op's keys are in its group")
    }

    /// Every state `op` may leave `state` in (none: it cannot take effect here): log order first,
    /// then each subset of its expiring keys vanished before it.
    pub(super) fn successors(&self, state: State, op: &Op) -> Vec<State> {
        let state = match op.index {
            Some(index) if index <= state.last_index => return Vec::new(),
            Some(index) => State {
                last_index: index,
                ..state
            },
            None => state,
        };
        let expiring: Vec<usize> = op
            .keys()
            .into_iter()
            .map(|key| self.slot(key))
            .filter(|&slot| {
                matches!(state.keys[slot], Holds::Live { ttl_s, .. }
                    if ttl_s > 0 && ttl_s < self.lasting_ttl_s)
            })
            .collect();
        let mut next = Vec::new();
        for subset in 0..1u32 << expiring.len() {
            let mut before = state;
            for (bit, &slot) in expiring.iter().enumerate() {
                if subset & (1 << bit) != 0 {
                    before.keys[slot] = Holds::Absent;
                }
            }
            if self.apply(&mut before, op).is_ok() && !next.contains(&before) {
                next.push(before);
            }
        }
        next
    }

    fn apply(&self, state: &mut State, op: &Op) -> Applied {
        let slot = self.slot(op.key);
        let holds = state.keys[slot];
        let live = matches!(holds, Holds::Live { .. });
        match op.kind {
            OpKind::Set {
                write,
                ttl_s,
                version,
            } => self.write_value(state, slot, Value::Write(write), write, ttl_s, version),
            OpKind::Cas {
                write,
                ttl_s,
                expected,
                outcome,
                version,
            } => {
                let Holds::Live { maker, .. } = holds else {
                    return expect(outcome, CasOutcome::NotFound);
                };
                match (self.facts.has_version(maker, expected), outcome) {
                    (Some(true) | None, None | Some(CasOutcome::Ok)) => {
                        self.write_value(state, slot, Value::Write(write), write, ttl_s, version)
                    }
                    (Some(false) | None, Some(CasOutcome::VersionMismatch)) => Ok(()),
                    _ => Err(()),
                }
            }
            OpKind::Delete { deleted } => {
                expect(deleted, live)?;
                state.keys[slot] = Holds::Absent;
                Ok(())
            }
            OpKind::Get { value } => same(value, holds),
            OpKind::Getm { value: None } => same(None, holds),
            OpKind::Getm {
                value: Some((seen, version, remaining)),
            } => {
                let Holds::Live {
                    value,
                    maker,
                    ttl_s,
                } = holds
                else {
                    return Err(());
                };
                let remaining_ok = match ttl_s {
                    0 => remaining == 0,
                    ttl => (1..=u64::from(ttl)).contains(&remaining),
                };
                let version_ok = self.facts.has_version(maker, version) != Some(false);
                ok(value == seen && remaining_ok && version_ok)
            }
            OpKind::SetWith {
                write,
                ttl_s,
                keep_ttl,
                condition,
                wrote,
                old,
                version,
                ..
            } => {
                if let Some(old) = old {
                    same(old, holds)?;
                }
                let writes = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => !live,
                    SetCondition::IfPresent => live,
                };
                expect(wrote, writes)?;
                // KEEPTTL: the lifetime the key has now (none if it is absent, or vanished).
                let ttl_s = match holds {
                    Holds::Live { ttl_s: kept, .. } if keep_ttl => kept,
                    _ if keep_ttl => 0,
                    _ => ttl_s,
                };
                if writes {
                    self.write_value(state, slot, Value::Write(write), write, ttl_s, version)?;
                    if !keep_ttl && ttl_s == PAST_LIFETIME_S {
                        state.keys[slot] = Holds::Absent;
                    }
                }
                Ok(())
            }
            OpKind::GetDel { value } => {
                match value {
                    Some(seen) => same(seen, holds)?,
                    None => ok(live)?,
                }
                state.keys[slot] = Holds::Absent;
                Ok(())
            }
            OpKind::IncrBy { write, by, result } => self.incr(state, slot, write, by, result),
            OpKind::IncrByFloat {
                write,
                by_bits,
                result,
            } => {
                let (current, ttl_s) = match holds {
                    Holds::Absent => (Some(0.0), 0),
                    Holds::Live { ttl_s, .. } => (float_of(&self.bytes(holds)), ttl_s),
                };
                let next = current
                    .map(|n| n + f64::from_bits(by_bits))
                    .filter(|n| n.is_finite());
                match (next, result) {
                    (Some(n), None | Some(Some(_))) => {
                        // Written as Redis's reply shows it: the shortest form, -0 as 0.
                        let text = format!("{}", n + 0.0).into_bytes();
                        let value = self.texts.borrow_mut().name(text);
                        expect(result, Some(value))?;
                        state.keys[slot] = Holds::Live {
                            value,
                            maker: write,
                            ttl_s,
                        };
                        Ok(())
                    }
                    (None, Some(None)) => Ok(()),
                    _ => Err(()),
                }
            }
            OpKind::Append { write, len } => {
                let mut bytes = self.bytes(holds);
                bytes.extend_from_slice(format!("a{write}").as_bytes());
                self.grow(state, slot, write, bytes, len)
            }
            OpKind::SetRange { write, offset, len } => {
                let piece = format!("r{write}").into_bytes();
                let mut bytes = self.bytes(holds);
                let (start, end) = (offset as usize, offset as usize + piece.len());
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[start..end].copy_from_slice(&piece);
                self.grow(state, slot, write, bytes, len)
            }
            OpKind::SetTtl {
                write,
                ttl_s,
                condition,
                changed,
            } => {
                let Holds::Live {
                    value,
                    ttl_s: current,
                    ..
                } = holds
                else {
                    return expect(changed, false);
                };
                // PERSIST of a key without a lifetime changes nothing; NX and XX ask whether it has
                // one. GT and LT count a key without a lifetime as living for ever (GT never
                // changes it, LT always does); between two lifetimes they compare instants the
                // model does not know, so the reply decides.
                let allowed = match condition {
                    TtlCondition::IfNone => current == 0,
                    TtlCondition::IfSome => current > 0,
                    TtlCondition::Always => true,
                    TtlCondition::IfLater | TtlCondition::IfSomeAndEarlier if current == 0 => false,
                    TtlCondition::IfEarlier if current == 0 => true,
                    _ => changed.unwrap_or(true),
                };
                let changes = (ttl_s > 0 || current > 0) && allowed;
                expect(changed, changes)?;
                if changes {
                    state.keys[slot] = Holds::Live {
                        value,
                        maker: write,
                        ttl_s,
                    };
                }
                Ok(())
            }
            OpKind::GetEx {
                write,
                ttl_s,
                value,
            } => {
                match value {
                    Some(seen) => same(seen, holds)?,
                    None => ok(live)?,
                }
                if let Holds::Live {
                    value,
                    ttl_s: current,
                    ..
                } = holds
                {
                    // PERSIST of a key without a lifetime changes nothing (not even its version).
                    if ttl_s > 0 || current > 0 {
                        state.keys[slot] = Holds::Live {
                            value,
                            maker: write,
                            ttl_s,
                        };
                    }
                }
                Ok(())
            }
            OpKind::Flush { .. } => {
                state.keys = [Holds::Absent; MAX_GROUP];
                Ok(())
            }
            OpKind::MSet {
                write,
                other,
                nx,
                wrote,
                version,
            } => {
                let other = self.slot(other);
                let writes = !nx || (!live && state.keys[other] == Holds::Absent);
                expect(wrote, writes)?;
                if writes {
                    self.write_value(state, slot, Value::Write(write), write, 0, version)?;
                    self.write_value(state, other, Value::Write(write), write, 0, None)?;
                }
                Ok(())
            }
            OpKind::Rename {
                write,
                to,
                nx,
                outcome,
                version,
            } => {
                let to = self.slot(to);
                let Holds::Live { value, ttl_s, .. } = holds else {
                    return expect(outcome, RenameOutcome::NotFound);
                };
                if nx && (to == slot || state.keys[to] != Holds::Absent) {
                    return expect(outcome, RenameOutcome::TargetExists);
                }
                expect(outcome, RenameOutcome::Moved)?;
                if to != slot {
                    state.keys[slot] = Holds::Absent;
                    self.write_value(state, to, value, write, ttl_s, version)?;
                }
                Ok(())
            }
            OpKind::Tx(tx) => {
                // Whether the watched key still has the version watched (None: cannot tell).
                let unchanged = match tx.watch {
                    None => Some(true),
                    Some((key, version)) => match state.keys[self.slot(key)] {
                        Holds::Absent => Some(version == 0),
                        Holds::Live { .. } if version == 0 => Some(false),
                        Holds::Live { maker, .. } => self.facts.has_version(maker, version),
                    },
                };
                match (tx.aborted, unchanged) {
                    (Some(true), Some(false) | None) => return Ok(()),
                    (Some(false) | None, Some(true) | None) => {}
                    _ => return Err(()),
                }
                for &TxStep { key, action } in tx.steps() {
                    self.tx_step(state, self.slot(key), tx.write, action)?;
                }
                Ok(())
            }
        }
    }

    fn tx_step(&self, state: &mut State, slot: usize, write: WriteId, action: TxAction) -> Applied {
        let holds = state.keys[slot];
        match action {
            TxAction::Set => self.write_value(state, slot, Value::Write(write), write, 0, None),
            TxAction::Get { value: None } => Ok(()),
            TxAction::Get { value: Some(seen) } => same(seen, holds),
            TxAction::Incr { result } => match self.incr(state, slot, write, 1, result) {
                // Inside EXEC an unknown failure is still the step's answer, not "never".
                Err(()) if result.is_none() => Ok(()),
                applied => applied,
            },
            TxAction::Delete { deleted } => {
                expect(deleted, matches!(holds, Holds::Live { .. }))?;
                state.keys[slot] = Holds::Absent;
                Ok(())
            }
        }
    }

    /// INCRBY: an absent key counts as 0; the key keeps its lifetime.
    fn incr(
        &self,
        state: &mut State,
        slot: usize,
        write: WriteId,
        by: i64,
        result: Option<Option<i64>>,
    ) -> Applied {
        let (current, ttl_s) = match state.keys[slot] {
            Holds::Absent => (Some(0), 0),
            Holds::Live {
                value: Value::Int(n),
                ttl_s,
                ..
            } => (Some(n), ttl_s),
            Holds::Live { ttl_s, .. } => (None, ttl_s),
        };
        let next = current.and_then(|n| n.checked_add(by));
        match (next, result) {
            (Some(n), None) | (Some(n), Some(Some(_))) => {
                ok(result.is_none_or(|r| r == Some(n)))?;
                state.keys[slot] = Holds::Live {
                    value: Value::Int(n),
                    maker: write,
                    ttl_s,
                };
                Ok(())
            }
            (None, Some(None)) => Ok(()),
            _ => Err(()),
        }
    }

    /// The key's new bytes (APPEND, SETRANGE), keeping its lifetime; `len` is what the reply said.
    fn grow(
        &self,
        state: &mut State,
        slot: usize,
        write: WriteId,
        bytes: Vec<u8>,
        len: Option<u64>,
    ) -> Applied {
        expect(len, bytes.len() as u64)?;
        let ttl_s = match state.keys[slot] {
            Holds::Live { ttl_s, .. } => ttl_s,
            Holds::Absent => 0,
        };
        let value = self.texts.borrow_mut().name(bytes);
        state.keys[slot] = Holds::Live {
            value,
            maker: write,
            ttl_s,
        };
        Ok(())
    }

    fn bytes(&self, holds: Holds) -> Vec<u8> {
        match holds {
            Holds::Absent => Vec::new(),
            Holds::Live { value, .. } => self
                .texts
                .borrow()
                .bytes(value)
                .expect("the model made every text a key holds"),
        }
    }

    /// A write of `value` by `maker` to the key in `slot`; a `version` its reply told must not be
    /// older than a write already in effect.
    fn write_value(
        &self,
        state: &mut State,
        slot: usize,
        value: Value,
        maker: WriteId,
        ttl_s: u32,
        version: Option<u64>,
    ) -> Applied {
        if let Some(v) = version {
            ok(v >= state.last_index)?;
            state.last_index = v;
        }
        state.keys[slot] = Holds::Live {
            value,
            maker,
            ttl_s,
        };
        Ok(())
    }
}

/// A value as INCRBYFLOAT reads one: a finite decimal number without spaces.
fn float_of(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    plain
        .then(|| text.parse::<f64>().ok())
        .flatten()
        .filter(|n| n.is_finite())
}

fn ok(holds: bool) -> Applied {
    if holds {
        Ok(())
    } else {
        Err(())
    }
}

/// A reply, if known, must be `actual`.
fn expect<T: PartialEq>(reply: Option<T>, actual: T) -> Applied {
    ok(reply.is_none_or(|r| r == actual))
}

/// A read, if it named a value (or absence), must match what the key holds.
fn same(seen: Option<Value>, holds: Holds) -> Applied {
    match (seen, holds) {
        (None, Holds::Absent) => Ok(()),
        (Some(seen), Holds::Live { value, .. }) => ok(seen == value),
        _ => Err(()),
    }
}
