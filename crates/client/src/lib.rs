//! Async client for raftkv, a Raft-replicated linearizable key-value store.
//!
//! Give [`Client::connect`] any list of node addresses: it finds the leader, follows
//! `ERR_REDIRECT`, and retries what is safe to retry (reads, and writes the server says it did not
//! execute) until a deadline ([`Config::deadline`], 5 s by default). A write whose fate is unknown —
//! the connection broke after it was sent, or the server answered `ERR_INTERNAL` — is never retried
//! blindly: it fails with [`Error::OutcomeUnknown`], and the caller decides (for example by reading
//! the key back with [`Client::getm`]).
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

/// The `bytes` crate, re-exported because values are returned as [`bytes::Bytes`].
pub use bytes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use conn::{CallError, Connection};
use proto::Reply;
use proto::ReplyKind;

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
    /// The write was sent but its reply was lost: it may or may not have been applied.
    #[error("outcome unknown: {0}; the write may or may not have been applied")]
    OutcomeUnknown(String),
    /// The server found the command malformed (`ERR_CMD_ERR`), e.g. a value above its size limit.
    #[error("server rejected the command as malformed (ERR_CMD_ERR)")]
    Rejected,
    /// A reply that is valid protocol but makes no sense for the command.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
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
        let mut request = Vec::with_capacity(key.len() + value.len() + 32);
        proto::encode_set(&mut request, key.as_bytes(), exptime, value);
        match self.execute(request, ReplyKind::Set).await? {
            Reply::Ok { version } => Ok(version),
            other => Err(unexpected(other)),
        }
    }

    /// Reads the value of `key`; `None` if it does not exist or expired.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        proto::validate_key(key.as_bytes())?;
        let mut request = Vec::with_capacity(key.len() + 8);
        proto::encode_get(&mut request, key.as_bytes());
        match self.execute(request, ReplyKind::Get).await? {
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
        match self.execute(request, ReplyKind::Getm).await? {
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
        let mut request = Vec::with_capacity(key.len() + value.len() + 48);
        proto::encode_cas(&mut request, key.as_bytes(), exptime, version, value);
        match self.execute(request, ReplyKind::Cas).await? {
            Reply::Ok { version } => Ok(CasOutcome::Swapped { version }),
            Reply::ErrVersion => Ok(CasOutcome::VersionMismatch),
            Reply::ErrNotFound => Ok(CasOutcome::NotFound),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `key`; `false` if it did not exist.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        proto::validate_key(key.as_bytes())?;
        let mut request = Vec::with_capacity(key.len() + 10);
        proto::encode_delete(&mut request, key.as_bytes());
        match self.execute(request, ReplyKind::Delete).await? {
            Reply::Deleted => Ok(true),
            Reply::ErrNotFound => Ok(false),
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

    /// Sends one request to the leader, retrying whatever is safe to retry until the deadline.
    async fn execute(&self, request: Vec<u8>, kind: ReplyKind) -> Result<Reply> {
        let config = &self.inner.config;
        let deadline = Instant::now() + config.deadline;
        let request = Bytes::from(request);
        let mut backoff = config.initial_backoff;
        let mut redirects_in_a_row = 0usize;
        let mut last_problem = String::from("no attempt finished");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable(format!(
                    "gave up after {:?}; last problem: {last_problem}",
                    config.deadline
                )));
            }
            let pause = match self.connection(deadline).await {
                Err(problem) => {
                    last_problem = problem;
                    true
                }
                Ok(connection) => {
                    let call = connection.call(request.clone(), kind);
                    match tokio::time::timeout_at(deadline, call).await {
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
                            if kind.is_write() {
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
