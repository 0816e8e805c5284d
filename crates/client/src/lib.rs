//! Async client for raftkv, a Raft-replicated linearizable key-value store.
//!
//! Give [`Client::connect`] any list of node addresses: it finds the leader, follows
//! `ERR_REDIRECT`, and retries until a deadline ([`Config::deadline`], 5 s by default).
//!
//! **Writes are exactly-once.** Each write goes through a session (opened lazily, see
//! "Sessions" in `docs/protocol.md`) with a sequence number, and is retried with that same number
//! through timeouts, broken connections, `ERR_INTERNAL` and leader changes until the cluster gives a
//! definite answer: the cluster applies it at most once and, if the first attempt took effect, answers
//! the retry with the first attempt's reply (a retried `cas` that had succeeded reports success, not
//! a version mismatch). [`Error::OutcomeUnknown`] remains for two cases only: the session itself
//! was lost (it expired or was evicted between an attempt that may have been applied and a retry),
//! or the cluster gave no definite answer before the deadline. With [`Config::exactly_once`] off,
//! writes are plain CS733 commands and a write whose fate is unknown is never retried: it fails with
//! `OutcomeUnknown` at once. Sessions need a server that has them (every raftkv node of this release;
//! an older one answers `register` with `ERR_CMD_ERR`, which the client reports as
//! [`Error::Rejected`]).
//!
//! A `Client` is cheap to clone and all clones share one pipelined connection: requests from many
//! tasks are written back to back and their replies matched in order, with at most
//! [`Config::max_in_flight`] outstanding.
//!
//! ```no_run
//! use raftkv_client::{CasOutcome, Client};
//!
//! # async fn demo() -> Result<(), raftkv_client::Error> {
//! let addrs = vec!["127.0.0.1:9000".to_string(), "127.0.0.1:9001".to_string()];
//! let client = Client::connect(&addrs).await?;
//!
//! let version = client.set("greeting", b"hello", None).await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//!
//! // Compare-and-swap: only replaces the value if nobody wrote it since.
//! match client.cas("greeting", version, b"bonjour", Some(60)).await? {
//!     CasOutcome::Swapped { version } => println!("now at version {version}"),
//!     CasOutcome::VersionMismatch => println!("someone else wrote it first"),
//!     CasOutcome::NotFound => println!("it is gone"),
//! }
//!
//! let meta = client.getm("greeting").await?.expect("just written");
//! println!("version {} expires in {} s", meta.version, meta.exptime);
//! assert!(client.delete("greeting").await?);
//! # Ok(())
//! # }
//! ```
//!
//! Invalid arguments are caught before anything is sent:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use raftkv_client::{Client, Config, Error};
//! use std::time::Duration;
//!
//! let config = Config { deadline: Duration::from_millis(100), ..Config::default() };
//! let client = Client::new(&["127.0.0.1:1".to_string()], config).unwrap();
//! assert!(matches!(client.get("has space").await, Err(Error::InvalidKey(_))));
//! # }
//! ```

/// The wire format (`raftkv-protocol`): request encoders, the reply type and its parser, the limits.
pub use raftkv_protocol as proto;

mod conn;
mod sessions;

/// The `bytes` crate, re-exported because values are returned as [`bytes::Bytes`].
pub use bytes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use conn::{CallError, Connection};
use proto::Reply;
use proto::ReplyKind;
use sessions::{Session, SessionPool};

/// Tuning knobs; [`Config::default`] suits most uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest time one operation may take, retries and leader search included.
    pub deadline: Duration,
    /// Longest time to wait for one TCP connect.
    pub connect_timeout: Duration,
    /// Most requests outstanding on the connection at once; further callers wait.
    pub max_in_flight: usize,
    /// Largest value sent or accepted; must not exceed the server's limit.
    pub max_value_size: usize,
    /// First pause between retries; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// TLS for nodes whose client port requires it (see [`tls_config`]); `None` speaks plain TCP.
    pub tls: Option<Arc<raftkv_tls::rustls::ClientConfig>>,
    /// Send writes in sessions and retry them until they have a definite answer (the default). Off,
    /// writes are plain commands that are never retried once sent.
    pub exactly_once: bool,
    /// Longest wait for one attempt's reply before a write in a session is sent again (a leader that
    /// was partitioned away or paused never answers).
    pub attempt_timeout: Duration,
}

/// A TLS configuration trusting the CA in the PEM file `ca`, presenting the certificate and key in
/// `identity` to nodes that demand a client certificate.
pub fn tls_config(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<Arc<raftkv_tls::rustls::ClientConfig>> {
    raftkv_tls::client_config(ca, identity)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            deadline: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_in_flight: 4096,
            max_value_size: proto::DEFAULT_MAX_VALUE_SIZE,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
            tls: None,
            exactly_once: true,
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

/// What can go wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid key: {0}")]
    InvalidKey(#[from] proto::KeyError),
    #[error("value is {len} bytes; the maximum is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("ttl of {0} s is longer than 10 years")]
    InvalidTtl(u32),
    #[error("no node addresses given")]
    NoAddresses,
    /// No leader could be reached before the deadline; nothing was changed.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have been applied: with sessions, the session was lost or no definite
    /// answer came before the deadline; without, the reply to the one attempt was lost.
    #[error("outcome unknown: {0}; the write may or may not have been applied")]
    OutcomeUnknown(String),
    /// The server found the command malformed (`ERR_CMD_ERR`), e.g. a value above its size limit.
    #[error("server rejected the command as malformed (ERR_CMD_ERR)")]
    Rejected,
    /// A reply that is valid protocol but makes no sense for the command.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// The leader refused a membership change (`ERR_MEMBERSHIP`), with its reason; nothing changed.
    #[error("{0}")]
    MembershipRefused(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A value with its metadata, as returned by [`Client::getm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMeta {
    /// Version of the write that produced the value (unique and increasing across all keys).
    pub version: u64,
    /// Remaining lifetime in whole seconds, rounded up; 0 means it never expires.
    pub exptime: u64,
    pub value: Bytes,
}

/// How a compare-and-swap ended. A mismatch is an expected outcome, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was replaced; this is its new version.
    Swapped { version: u64 },
    /// The key exists at another version; nothing changed.
    VersionMismatch,
    /// The key does not exist (or expired); nothing changed.
    NotFound,
}

/// A handle to a raftkv cluster. Clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    addrs: Vec<String>,
    sessions: SessionPool,
    route: Mutex<Route>,
    // Serialises connection attempts so that many callers finding the connection gone open one
    // new connection rather than one each.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Route {
    current: Option<Arc<Connection>>,
    /// Where the last redirect pointed: tried before going round the list.
    leader_hint: Option<String>,
    next_addr: usize,
}

impl Client {
    /// Connects to the cluster at `addrs` with the default [`Config`] and finds the leader.
    pub async fn connect(addrs: &[String]) -> Result<Client> {
        Self::connect_with(addrs, Config::default()).await
    }

    /// Like [`Client::connect`] with a chosen configuration.
    pub async fn connect_with(addrs: &[String], config: Config) -> Result<Client> {
        let client = Self::new(addrs, config)?;
        // A write would prove leadership but change the store; a read of a key nobody uses goes
        // through the same leader checks and redirects without side effects.
        client.get("raftkv-client-probe").await?;
        Ok(client)
    }

    /// Makes a client without contacting anyone; the first operation connects.
    pub fn new(addrs: &[String], config: Config) -> Result<Client> {
        if addrs.is_empty() {
            return Err(Error::NoAddresses);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                addrs: addrs.to_vec(),
                sessions: SessionPool::default(),
                route: Mutex::new(Route::default()),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Address of the node the client is talking to (the leader, as far as it knows).
    pub fn connected_to(&self) -> Option<String> {
        self.route()
            .current
            .as_ref()
            .map(|c| c.address().to_string())
    }

    /// Stores `value` under `key`, expiring after `ttl` seconds (`None` or `Some(0)`: never).
    /// Returns the new version.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Option<u32>) -> Result<u64> {
        let exptime = self.check_write(key, value, ttl)?;
        let encode = |request: &mut Vec<u8>| {
            proto::encode_set(request, key.as_bytes(), exptime, value);
        };
        match self.write(encode, ReplyKind::Set).await? {
            Reply::Ok { version } => Ok(version),
            other => Err(unexpected(other)),
        }
    }

    /// Reads the value of `key`; `None` if it does not exist or expired.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        proto::validate_key(key.as_bytes())?;
        let mut request = Vec::with_capacity(key.len() + 8);
        proto::encode_get(&mut request, key.as_bytes());
        match self.read(request, ReplyKind::Get).await? {
            Reply::Value { value } => Ok(Some(value)),
            Reply::ErrNotFound => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Reads the value of `key` with its version and remaining lifetime.
    pub async fn getm(&self, key: &str) -> Result<Option<ValueMeta>> {
        proto::validate_key(key.as_bytes())?;
        let mut request = Vec::with_capacity(key.len() + 8);
        proto::encode_getm(&mut request, key.as_bytes());
        match self.read(request, ReplyKind::Getm).await? {
            Reply::ValueMeta {
                version,
                exptime,
                value,
            } => Ok(Some(ValueMeta {
                version,
                exptime,
                value,
            })),
            Reply::ErrNotFound => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces the value of `key` only if its current version is `version`.
    pub async fn cas(
        &self,
        key: &str,
        version: u64,
        value: &[u8],
        ttl: Option<u32>,
    ) -> Result<CasOutcome> {
        let exptime = self.check_write(key, value, ttl)?;
        let encode = |request: &mut Vec<u8>| {
            proto::encode_cas(request, key.as_bytes(), exptime, version, value);
        };
        match self.write(encode, ReplyKind::Cas).await? {
            Reply::Ok { version } => Ok(CasOutcome::Swapped { version }),
            Reply::ErrVersion => Ok(CasOutcome::VersionMismatch),
            Reply::ErrNotFound => Ok(CasOutcome::NotFound),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `key`; `false` if it did not exist.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        proto::validate_key(key.as_bytes())?;
        let encode = |request: &mut Vec<u8>| proto::encode_delete(request, key.as_bytes());
        match self.write(encode, ReplyKind::Delete).await? {
            Reply::Deleted => Ok(true),
            Reply::ErrNotFound => Ok(false),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster's membership as the leader sees it (`members`).
    pub async fn members(&self) -> Result<proto::MembersTable> {
        self.members_request(&proto::MembersRequest::List).await
    }

    /// Adds a learner, promotes one, or removes a member (`members add|promote|remove`), and returns
    /// the membership once the change has committed. A change whose reply was lost is not retried (it
    /// may have happened): that is [`Error::OutcomeUnknown`], and `members` tells.
    pub async fn members_request(
        &self,
        request: &proto::MembersRequest,
    ) -> Result<proto::MembersTable> {
        let deadline = Instant::now() + self.inner.config.deadline;
        let mut encoded = Vec::with_capacity(64);
        request.encode(&mut encoded);
        let kind = if request.is_change() {
            ReplyKind::MembersChange
        } else {
            ReplyKind::MembersList
        };
        match self.execute(encoded, kind, deadline, &mut None).await? {
            Reply::Members { table } => proto::MembersTable::parse(&table).ok_or_else(|| {
                Error::UnexpectedReply("a membership table that does not parse".into())
            }),
            Reply::ErrMembership { reason } => Err(Error::MembershipRefused(reason)),
            Reply::ErrCmdErr => Err(Error::Rejected),
            other => Err(unexpected(other)),
        }
    }

    fn check_write(&self, key: &str, value: &[u8], ttl: Option<u32>) -> Result<u32> {
        proto::validate_key(key.as_bytes())?;
        let max = self.inner.config.max_value_size;
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        match ttl.unwrap_or(0) {
            secs if secs > proto::MAX_EXPTIME_SECS => Err(Error::InvalidTtl(secs)),
            secs => Ok(secs),
        }
    }

    fn route(&self) -> std::sync::MutexGuard<'_, Route> {
        // The lock is never held across an await or a panic-prone call, so poisoning cannot
        // leave the route inconsistent; recover rather than propagate.
        self.inner
            .route
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends one read, retried until it is answered or the deadline passes.
    async fn read(&self, request: Vec<u8>, kind: ReplyKind) -> Result<Reply> {
        let deadline = Instant::now() + self.inner.config.deadline;
        self.execute(request, kind, deadline, &mut None).await
    }

    /// Sends one write encoded by `encode`: in a session, retried until it has a definite answer, or
    /// (without [`Config::exactly_once`]) as a plain command sent once.
    async fn write(&self, encode: impl Fn(&mut Vec<u8>), kind: ReplyKind) -> Result<Reply> {
        let deadline = Instant::now() + self.inner.config.deadline;
        let mut request = Vec::with_capacity(128);
        if !self.inner.config.exactly_once {
            encode(&mut request);
            return self.execute(request, kind, deadline, &mut None).await;
        }
        loop {
            let session = match self.inner.sessions.take() {
                Some(session) => session,
                None => self.open_session(deadline).await?,
            };
            request.clear();
            proto::encode_session_prefix(&mut request, session.id, session.next_seq);
            encode(&mut request);
            let mut maybe_applied = Some(false);
            let result = self
                .execute(request.clone(), kind, deadline, &mut maybe_applied)
                .await;
            let may_have_applied = maybe_applied == Some(true);
            match result {
                Ok(Reply::ErrSessionExpired) if !may_have_applied => {
                    // The session was gone before anything could apply this write: a new one is
                    // safe. Pause first, so that a cluster evicting sessions is not flooded.
                    let pause = jittered(self.inner.config.initial_backoff);
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(pause.min(remaining)).await;
                    continue;
                }
                Ok(Reply::ErrSessionExpired) => {
                    return Err(Error::OutcomeUnknown(format!(
                        "session {} expired while its write was being retried",
                        session.id
                    )));
                }
                Ok(Reply::ErrSequence { .. }) | Err(Error::Rejected) if may_have_applied => {
                    // A retry refused (another write took the sequence number, or a node that does
                    // not know sessions): the attempt before it may still have been applied.
                    return Err(Error::OutcomeUnknown(format!(
                        "a retry in session {} was refused",
                        session.id
                    )));
                }
                Ok(reply @ Reply::ErrSequence { .. }) => {
                    // Only a session used by two writers at once gets here; do not use it again.
                    return Err(unexpected(reply));
                }
                other => {
                    self.inner.sessions.give_back(session.advanced());
                    return other;
                }
            }
        }
    }

    /// Registers a new session. A registration whose outcome is unknown is simply made again: the
    /// one that may have happened is never used, and expires.
    async fn open_session(&self, deadline: Instant) -> Result<Session> {
        let mut request = Vec::with_capacity(16);
        proto::encode_register(&mut request);
        let mut retry_unknown = Some(false);
        match self
            .execute(request, ReplyKind::Register, deadline, &mut retry_unknown)
            .await
        {
            Ok(Reply::Session { id }) => Ok(Session::opened(id)),
            Ok(other) => Err(unexpected(other)),
            // Nothing of the caller's was sent yet.
            Err(Error::OutcomeUnknown(why)) => Err(Error::Unavailable(why)),
            Err(other) => Err(other),
        }
    }

    /// Sends one request to the leader, retrying whatever is safe to retry until `deadline`.
    /// `retry_unknown` is `Some` for a write in a session: then an attempt whose outcome is unknown is
    /// retried too, and the flag records that one was (so the write may have been applied).
    async fn execute(
        &self,
        request: Vec<u8>,
        kind: ReplyKind,
        deadline: Instant,
        retry_unknown: &mut Option<bool>,
    ) -> Result<Reply> {
        let config = &self.inner.config;
        let request = Bytes::from(request);
        let mut backoff = config.initial_backoff;
        let mut redirects_in_a_row = 0usize;
        let mut last_problem = String::from("no attempt finished");
        loop {
            let now = Instant::now();
            if now >= deadline {
                let why = format!(
                    "gave up after {:?}; last problem: {last_problem}",
                    config.deadline
                );
                return Err(if *retry_unknown == Some(true) {
                    Error::OutcomeUnknown(why)
                } else {
                    Error::Unavailable(why)
                });
            }
            let pause = match self.connection(deadline).await {
                Err(problem) => {
                    last_problem = problem;
                    true
                }
                Ok(connection) => {
                    let call = connection.call(request.clone(), kind);
                    let give_up_at = match retry_unknown {
                        Some(_) => deadline.min(now + config.attempt_timeout),
                        None => deadline,
                    };
                    match tokio::time::timeout_at(give_up_at, call).await {
                        Err(_) if retry_unknown.is_some() => {
                            self.forget(&connection, None);
                            last_problem =
                                format!("no reply from {} in time", connection.address());
                            *retry_unknown = Some(true);
                            true
                        }
                        Err(_) => {
                            // A node that does not answer in time is not worth keeping.
                            self.forget(&connection, None);
                            let why = format!("no reply from {} in time", connection.address());
                            return Err(if kind.is_write() {
                                Error::OutcomeUnknown(why)
                            } else {
                                Error::Unavailable(why)
                            });
                        }
                        Ok(Ok(reply @ Reply::ErrRedirect { .. })) => {
                            let leader = reply.redirect_address().unwrap_or_default();
                            // The node did not execute the command: safe to send it to the leader.
                            last_problem =
                                format!("{} redirected to {leader}", connection.address());
                            self.forget(&connection, Some(leader));
                            redirects_in_a_row += 1;
                            // During an election nodes may point at each other; slow down then.
                            redirects_in_a_row > self.inner.addrs.len()
                        }
                        Ok(Ok(Reply::ErrInternal)) if retry_unknown.is_some() => {
                            last_problem =
                                format!("{} answered ERR_INTERNAL", connection.address());
                            self.forget(&connection, None);
                            *retry_unknown = Some(true);
                            true
                        }
                        Ok(Ok(Reply::ErrInternal)) if kind.is_write() => {
                            self.forget(&connection, None);
                            return Err(Error::OutcomeUnknown(format!(
                                "{} answered ERR_INTERNAL",
                                connection.address()
                            )));
                        }
                        Ok(Ok(Reply::ErrInternal)) => {
                            last_problem = format!("{} has no leader", connection.address());
                            self.forget(&connection, None);
                            true
                        }
                        Ok(Ok(Reply::ErrCmdErr)) => return Err(Error::Rejected),
                        Ok(Ok(response)) => return Ok(response),
                        Ok(Err(CallError::NotSent(problem))) => {
                            last_problem = problem;
                            self.forget(&connection, None);
                            false
                        }
                        Ok(Err(CallError::LostAfterSend(problem))) => {
                            self.forget(&connection, None);
                            if retry_unknown.is_some() {
                                *retry_unknown = Some(true);
                            } else if kind.is_write() {
                                return Err(Error::OutcomeUnknown(format!(
                                    "{}: {problem}",
                                    connection.address()
                                )));
                            }
                            last_problem = problem;
                            true
                        }
                    }
                }
            };
            if pause {
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(jittered(backoff).min(remaining)).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }

    /// The live connection, opening one (to the hinted leader, else the next address) if needed.
    async fn connection(&self, deadline: Instant) -> std::result::Result<Arc<Connection>, String> {
        if let Some(live) = self.live_connection() {
            return Ok(live);
        }
        let _one_at_a_time = self.inner.connecting.lock().await;
        if let Some(live) = self.live_connection() {
            return Ok(live);
        }
        let target = {
            let mut route = self.route();
            route.current = None;
            match route.leader_hint.take() {
                Some(leader) => leader,
                None => {
                    let addrs = &self.inner.addrs;
                    let target = addrs[route.next_addr % addrs.len()].clone();
                    route.next_addr = route.next_addr.wrapping_add(1);
                    target
                }
            }
        };
        let config = &self.inner.config;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let connection = conn::open_within(
            &target,
            config.connect_timeout.min(remaining),
            config.max_in_flight,
            config.max_value_size,
            config.tls.as_ref(),
        )
        .await
        .map(Arc::new)?;
        self.route().current = Some(connection.clone());
        Ok(connection)
    }

    fn live_connection(&self) -> Option<Arc<Connection>> {
        self.route()
            .current
            .as_ref()
            .filter(|c| !c.is_dead())
            .cloned()
    }

    /// Stops using `connection` (if it is still the current one), going to `leader` next if known.
    fn forget(&self, connection: &Arc<Connection>, leader: Option<String>) {
        let mut route = self.route();
        if route
            .current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, connection))
        {
            route.current = None;
        }
        if leader.is_some() {
            route.leader_hint = leader;
        }
    }
}

fn unexpected(response: Reply) -> Error {
    Error::UnexpectedReply(format!("{response:?}"))
}

/// Spreads retries of many clients over time so they do not hit a new leader at once.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Between 50 % and 100 % of the nominal pause.
    backoff / 2 + backoff.mul_f64(f64::from(nanos % 1000) / 2000.0)
}
