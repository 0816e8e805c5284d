//! Deliberate bugs, for proving that the simulator finds bugs.
//!
//! A test may build a replica with one of these switched on and check that the simulator reports a
//! violation within a bounded number of seeds. The server never sets one: its configuration has no way
//! to name them.

/// One deliberate departure from the correct protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutation {
    /// A leader answers reads from its own state at once, without the ReadIndex round that proves it
    /// still leads (a deposed leader serves stale data).
    ReadsWithoutReadIndex,
    /// The driver reports a batch durable, and sends the messages that promise it is, before the disk
    /// has it (an acknowledged write can be lost in a crash). Implemented by the simulator's disk.
    AckBeforeFsync,
    /// Reads judge expiry at the serving leader's local wall clock instead of the replicated clock (the
    /// bug fixed by the clock rule in [`crate::clock`]).
    ExpiryAtLocalClock,
    /// The state machine ignores sessions: a write retried after a lost reply is applied again (a
    /// retried `cas` that had succeeded now fails, a retried `set` overwrites what came between).
    WritesAppliedTwice,
    /// Redis's SET NX and SET XX write whatever the key holds (the condition is dropped when the
    /// entry is applied).
    SetConditionIgnored,
    /// MULTI/EXEC ignores WATCH: a transaction applies although a watched key changed.
    WatchIgnored,
    /// MSET writes only its first pair (the "all" of all-or-nothing is lost).
    MSetFirstPairOnly,
    /// `set`'s lifetime is taken in milliseconds instead of seconds (a unit slip: keys expire a
    /// thousand times too early).
    LifetimeInMs,
    /// Redis's SET KEEPTTL drops the key's lifetime instead of keeping it.
    KeepTtlDropped,
    /// Redis's SET EXAT/PXAT takes its instant as a lifetime from now (an instant in the past then
    /// lasts for ever).
    InstantAsLifetime,
}

impl Mutation {
    /// The command a node with this mutation applies instead of `command` (the mutations of the
    /// state machine's commands; the others leave it as it is).
    pub(crate) fn apply_to(self, command: &mut raftkv_kv::Command) {
        use raftkv_kv::Command;
        match (self, &mut *command) {
            (Mutation::SetConditionIgnored, Command::SetWith { condition, .. }) => {
                *condition = raftkv_kv::SetCondition::Always;
            }
            (Mutation::WatchIgnored, Command::Transaction { watches, .. }) => watches.clear(),
            (Mutation::MSetFirstPairOnly, Command::MSet { pairs, .. }) => pairs.truncate(1),
            (Mutation::KeepTtlDropped, Command::SetWith { expiry, .. })
                if *expiry == raftkv_kv::SetExpiry::Keep =>
            {
                *expiry = raftkv_kv::SetExpiry::Never;
            }
            (Mutation::InstantAsLifetime, Command::SetWith { expiry, .. }) => {
                if let raftkv_kv::SetExpiry::AtMs(at) = *expiry {
                    *expiry = raftkv_kv::SetExpiry::AfterMs(at.min(raftkv_kv::MAX_EXPIRY_MS));
                }
            }
            (
                Mutation::LifetimeInMs,
                Command::Set {
                    key,
                    exptime,
                    value,
                },
            ) if *exptime > 0 => {
                *command = Command::SetWith {
                    key: key.clone(),
                    value: value.clone(),
                    condition: raftkv_kv::SetCondition::Always,
                    get: false,
                    expiry: raftkv_kv::SetExpiry::AfterMs(u64::from(*exptime)),
                };
            }
            _ => {}
        }
    }
}
