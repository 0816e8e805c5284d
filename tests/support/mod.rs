//! The one harness of the process tests: a cluster of real `raftkv server` processes on loopback
//! that a test starts, kills (SIGKILL) and stops (SIGTERM) node by node, and a raw-TCP client that
//! reads replies byte for byte; [`spawner`] starts a whole cluster with `raftkv cluster` instead (for
//! the client, CLI and bench tests).
//!
//! Every process a [`Cluster`] starts is killed and reaped when it is dropped (also on panic, when
//! the tail of every node's log is printed to help diagnose the failure). Every socket operation has
//! a timeout, so no test can hang on a silent server.
#![allow(dead_code)]

pub mod spawner;

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const RAFTKV: &str = env!("CARGO_BIN_EXE_raftkv");

/// Default limit on one socket read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a cluster may take to elect a leader (generous: two cores shared with compilers).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// Tunables for tests that kill nodes: elections settle quickly.
pub const FAST_TUNABLES: &str = "tick_ms = 10\nheartbeat_ms = 30\nelection_timeout_ms = 300\n";
/// The server's defaults, for tests where a spurious election would spoil byte-exact expectations.
pub const DEFAULT_TUNABLES: &str = "";

// ----- Ports ------------------------------------------------------------------------------------

/// Ports handed out by this process, so one test binary never gives the same port twice.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port that is free now, below the kernel's ephemeral range (32768..) so that the nodes' own
/// outgoing connections cannot take it between this check and the node's bind.
pub fn free_port() -> u16 {
    let mut used = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    for _ in 0..10_000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let port = 12_000 + (hasher.finish() % 20_000) as u16;
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    panic!("no free port found");
}

// ----- Processes --------------------------------------------------------------------------------

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid of a child we started and have not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits for `child` to exit, at most `limit`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Output of a process that was expected to exit by itself.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `raftkv` with `args` and waits at most `limit` for it to exit (it is killed otherwise, and
/// the result says so through a `None`).
pub fn run_raftkv(args: &[&str], limit: Duration) -> Option<Finished> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("stdout");
    let err = dir.path().join("stderr");
    let mut child = Command::new(RAFTKV)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start raftkv");
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into();
    status.map(|status| Finished {
        status,
        stdout: read(&out),
        stderr: read(&err),
    })
}

pub struct Node {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    /// Where the node serves /metrics, /health and /status.
    pub http_addr: String,
    /// Where the node speaks RESP (the Redis front end).
    pub resp_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// How many times this node has been started (each start appends to the same log).
    pub starts: u32,
}

/// A cluster of `raftkv server` processes described by one config file in a temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Writes the config of an `n`-node cluster with the given `[tunables]` body; starts nothing.
    pub fn configure(n: usize, tunables: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut nodes = Vec::new();
        let mut toml = format!("cluster_id = \"t\"\n\n[tunables]\n{tunables}\n");
        for i in 0..n {
            let id = i as u64 + 1;
            let node = Node {
                id,
                client_addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                http_addr: format!("127.0.0.1:{}", free_port()),
                resp_addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("node{id}")),
                log: dir.path().join(format!("node{id}.log")),
                child: None,
                starts: 0,
            };
            toml.push_str(&format!(
                "[[nodes]]\nid = {id}\nclient_addr = \"{}\"\npeer_addr = \"{}\"\nhttp_addr = \"{}\"\nresp_addr = \"{}\"\ndata_dir = \"{}\"\n\n",
                node.client_addr,
                node.peer_addr,
                node.http_addr,
                node.resp_addr,
                node.data_dir.display()
            ));
            nodes.push(node);
        }
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, toml).expect("write the config");
        Cluster { dir, config, nodes }
    }

    /// Like [`Cluster::configure`] for `members + spares` nodes, but the config file lists only the first
    /// `members`: the spares are machines that join later (`raftkv server --join`).
    pub fn configure_with_spares(members: usize, spares: usize, tunables: &str) -> Cluster {
        let cluster = Cluster::configure(members + spares, tunables);
        let text = std::fs::read_to_string(&cluster.config).expect("read the config");
        let cut = text
            .match_indices("[[nodes]]")
            .nth(members)
            .map_or(text.len(), |(at, _)| at);
        std::fs::write(&cluster.config, &text[..cut]).expect("write the config");
        cluster
    }

    /// Starts spare node `i` with `--join` through the client addresses of the nodes `through`.
    pub fn start_joining(&mut self, i: usize, through: &[usize]) {
        self.start_joining_with(i, through, &[]);
    }

    /// [`Cluster::start_joining`] with more flags.
    pub fn start_joining_with(&mut self, i: usize, through: &[usize], extra: &[&str]) {
        let join: Vec<String> = through.iter().map(|&j| self.addr(j).to_string()).collect();
        let node = &self.nodes[i];
        let mut flags = vec![
            "--join".to_string(),
            join.join(","),
            "--client-addr".to_string(),
            node.client_addr.clone(),
            "--peer-addr".to_string(),
            node.peer_addr.clone(),
            "--data-dir".to_string(),
            node.data_dir.display().to_string(),
        ];
        flags.extend(extra.iter().map(|flag| flag.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.start_node_with(i, &[], &flags);
    }

    /// Runs `raftkv members <args> --addr <every node>` and returns how it finished.
    pub fn members(&self, args: &[&str]) -> Finished {
        let addrs = self.addrs().join(",");
        let mut all: Vec<&str> = vec!["members"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--addr", &addrs, "--timeout", "30"]);
        run_raftkv(&all, Duration::from_secs(60)).expect("raftkv members finished in time")
    }

    /// Configures and starts an `n`-node cluster, then waits for a leader.
    pub fn start(n: usize, tunables: &str) -> Cluster {
        let mut cluster = Cluster::configure(n, tunables);
        for i in 0..n {
            cluster.start_node(i);
        }
        cluster.wait_leader();
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn addr(&self, i: usize) -> &str {
        &self.nodes[i].client_addr
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client_addr.clone()).collect()
    }

    /// Index of the node serving clients at `addr`.
    pub fn index_of(&self, addr: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.client_addr == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
    }

    /// Starts node `i` (0-based) with this cluster's config; its stderr is appended to its log.
    pub fn start_node(&mut self, i: usize) {
        self.start_node_with_env(i, &[]);
    }

    /// [`Cluster::start_node`] with extra environment variables (e.g. a faked clock).
    pub fn start_node_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        self.start_node_with(i, env, &[]);
    }

    /// [`Cluster::start_node`] with extra environment variables and extra `raftkv server` flags.
    pub fn start_node_with(&mut self, i: usize, env: &[(&str, &str)], flags: &[&str]) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} is already running", node.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open the node's log");
        let child = Command::new(RAFTKV)
            .arg("server")
            .arg("--config")
            .arg(&self.config)
            .args(["--id", &node.id.to_string()])
            .args(flags)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start raftkv server");
        node.child = Some(child);
        node.starts += 1;
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.nodes[i].child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `kill -9` node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `i` and wait (at most 15 s, then SIGKILL) for it; returns its exit status, or
    /// `None` if it had to be killed.
    pub fn terminate(&mut self, i: usize) -> Option<ExitStatus> {
        let mut child = self.nodes[i].child.take()?;
        signal(child.id(), libc::SIGTERM);
        let status = wait_timeout(&mut child, Duration::from_secs(15));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// Indices of the nodes this cluster currently runs.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// Waits until one of the running nodes serves reads as leader; returns its index.
    pub fn wait_leader(&mut self) -> usize {
        self.wait_leader_for(LEADER_TIMEOUT)
            .unwrap_or_else(|| panic!("no leader within {LEADER_TIMEOUT:?}"))
    }

    pub fn wait_leader_for(&mut self, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            for i in self.running() {
                if probe(self.addr(i)) == Probe::Leader {
                    return Some(i);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits until a leader is elected that is not `old` (a node that was killed or stopped).
    pub fn wait_new_leader(&mut self, old: usize) -> usize {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(i) = self.wait_leader_for(Duration::from_secs(1)) {
                if i != old {
                    return i;
                }
            }
        }
        panic!("no new leader (other than node index {old}) within {LEADER_TIMEOUT:?}");
    }

    /// The last lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read(&node.log).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "----- node {} ({} client, {} peer), last {} of {} log lines -----\n",
                node.id,
                node.client_addr,
                node.peer_addr,
                all.len() - from,
                all.len()
            ));
            for line in &all[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// A client that knows every node of this cluster.
    pub fn client(&self) -> Client {
        Client::new(self.addrs())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(80));
        }
    }
}

// ----- HTTP ---------------------------------------------------------------------------------------

/// `GET path` over HTTP/1.1; returns the status code and the body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    raftkv_chaos::http::get_text(addr, path, IO_TIMEOUT)
}

// ----- Raw connections --------------------------------------------------------------------------

/// One raw TCP connection to a node. Replies are returned as their exact bytes.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: &str) -> io::Result<Conn> {
        Conn::connect_with(addr, IO_TIMEOUT)
    }

    pub fn connect_with(addr: &str, timeout: Duration) -> io::Result<Conn> {
        let sock = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        let _ = self.stream.set_read_timeout(Some(timeout));
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads exactly one reply: a line, plus the value block after a `VALUE` line.
    pub fn read_reply(&mut self) -> io::Result<Vec<u8>> {
        let line_end = loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break pos + 2;
            }
            self.fill()?;
        };
        let mut total = line_end;
        if self.buf.starts_with(b"VALUE ") {
            let line = String::from_utf8_lossy(&self.buf[..line_end - 2]).into_owned();
            let numbytes: usize = line
                .split(' ')
                .next_back()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad VALUE line {line:?}")))?;
            total += numbytes + 2;
        }
        while self.buf.len() < total {
            self.fill()?;
        }
        Ok(self.buf.drain(..total).collect())
    }

    pub fn request(&mut self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        self.send(bytes)?;
        self.read_reply()
    }

    /// Bytes received but not consumed by a reply yet.
    pub fn unread(&self) -> &[u8] {
        &self.buf
    }

    /// True if the server closes the connection within `limit` (after any bytes still to come,
    /// which are collected into the unread buffer).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.set_timeout(limit);
        loop {
            match self.fill() {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return true,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return true
                }
                Err(_) => return false,
            }
        }
    }
}

/// Renders reply bytes readably for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// The version in an `OK <version>\r\n` reply.
pub fn ok_version(reply: &[u8]) -> Option<u64> {
    let rest = reply.strip_prefix(b"OK ")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// `(version, exptime, value)` of a getm `VALUE` reply.
pub fn getm_fields(reply: &[u8]) -> Option<(u64, u64, Vec<u8>)> {
    let end = reply.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&reply[..end]).ok()?;
    let mut tokens = line.split(' ');
    if tokens.next()? != "VALUE" {
        return None;
    }
    let version = tokens.next()?.parse().ok()?;
    let exptime = tokens.next()?.parse().ok()?;
    let numbytes: usize = tokens.next()?.parse().ok()?;
    let value = reply.get(end + 2..end + 2 + numbytes)?.to_vec();
    Some((version, exptime, value))
}

/// `host:port` of an `ERR_REDIRECT <host> <port>\r\n` reply.
pub fn redirect_target(reply: &[u8]) -> Option<String> {
    let rest = reply
        .strip_prefix(b"ERR_REDIRECT ")?
        .strip_suffix(b"\r\n")?;
    let text = std::str::from_utf8(rest).ok()?;
    let (host, port) = text.split_once(' ')?;
    Some(format!("{host}:{port}"))
}

pub fn set_cmd(key: &str, exptime: u64, value: &[u8]) -> Vec<u8> {
    let mut cmd = format!("set {key} {exptime} {}\r\n", value.len()).into_bytes();
    cmd.extend_from_slice(value);
    cmd.extend_from_slice(b"\r\n");
    cmd
}

pub fn cas_cmd(key: &str, exptime: u64, version: u64, value: &[u8]) -> Vec<u8> {
    let mut cmd = format!("cas {key} {exptime} {version} {}\r\n", value.len()).into_bytes();
    cmd.extend_from_slice(value);
    cmd.extend_from_slice(b"\r\n");
    cmd
}

#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    Leader,
    Redirect(String),
    NoLeader,
    Down,
}

/// Asks the node at `addr` who leads, with a read (only a leader can serve it).
pub fn probe(addr: &str) -> Probe {
    let Ok(mut conn) = Conn::connect_with(addr, Duration::from_secs(3)) else {
        return Probe::Down;
    };
    match conn.request(b"get __probe\r\n") {
        Ok(reply) if reply == b"ERR_NOT_FOUND\r\n" || reply.starts_with(b"VALUE ") => Probe::Leader,
        Ok(reply) => match redirect_target(&reply) {
            Some(target) => Probe::Redirect(target),
            None => Probe::NoLeader,
        },
        Err(_) => Probe::Down,
    }
}

// ----- A client that finds the leader -----------------------------------------------------------

/// Sends each request to the node it believes leads, following `ERR_REDIRECT`s. It never resends a
/// request whose outcome it does not know (only redirected ones, which did not run).
pub struct Client {
    addrs: Vec<String>,
    target: usize,
    redirect: Option<String>,
    conn: Option<Conn>,
    pub timeout: Duration,
}

impl Client {
    pub fn new(addrs: Vec<String>) -> Client {
        Client {
            addrs,
            target: 0,
            redirect: None,
            conn: None,
            timeout: IO_TIMEOUT,
        }
    }

    fn next_target(&mut self) {
        self.conn = None;
        self.redirect = None;
        self.target = (self.target + 1) % self.addrs.len();
    }

    fn connection(&mut self) -> io::Result<&mut Conn> {
        if self.conn.is_none() {
            let addr = self
                .redirect
                .clone()
                .unwrap_or_else(|| self.addrs[self.target].clone());
            match Conn::connect_with(&addr, self.timeout) {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => {
                    self.next_target();
                    return Err(e);
                }
            }
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// One attempt: the reply, after following at most a few redirects. On an I/O error (outcome
    /// unknown) the connection is dropped and the next node will be tried next time.
    pub fn call(&mut self, request: &[u8]) -> io::Result<Vec<u8>> {
        for _ in 0..4 {
            let reply = self.connection()?.request(request);
            match reply {
                Ok(reply) => {
                    if let Some(target) = redirect_target(&reply) {
                        self.conn = None;
                        self.redirect = Some(target);
                        continue;
                    }
                    if reply == b"ERR_INTERNAL\r\n" {
                        // Perhaps this node lost leadership; look elsewhere next time.
                        self.next_target();
                    }
                    return Ok(reply);
                }
                Err(e) => {
                    self.next_target();
                    return Err(e);
                }
            }
        }
        Err(io::Error::other("too many redirects"))
    }

    /// For requests that are safe to repeat (reads): retries on errors and `ERR_INTERNAL` until a
    /// definite reply or `limit`.
    pub fn call_retry(&mut self, request: &[u8], limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.call(request) {
                Ok(reply) if reply != b"ERR_INTERNAL\r\n" => return reply,
                Ok(reply) => last = show(&reply),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no definite reply to {} within {limit:?}; last: {last}",
            show(request)
        );
    }

    /// A `set` retried until it is acknowledged (for setup, where a duplicate write is harmless).
    pub fn set_retry(&mut self, key: &str, value: &[u8], limit: Duration) -> u64 {
        let reply = self.call_retry(&set_cmd(key, 0, value), limit);
        ok_version(&reply).unwrap_or_else(|| panic!("set {key}: {}", show(&reply)))
    }
}

// ----- Write load -------------------------------------------------------------------------------

/// A write the cluster acknowledged with `OK <version>`.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: String,
    pub value: Vec<u8>,
    pub version: u64,
    pub at: Instant,
}

/// Writer threads, each setting fresh keys (`<prefix>-w<writer>-<n>`, each key written once) one
/// request at a time, recording every acknowledged write, until stopped.
pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(Vec<Acked>, u64)>>,
}

impl WriteLoad {
    pub fn start(addrs: Vec<String>, prefix: &str, writers: usize) -> WriteLoad {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..writers)
            .map(|w| {
                let stop = stop.clone();
                let mut client = Client::new(addrs.clone());
                client.target = w % addrs.len();
                client.timeout = Duration::from_secs(3);
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut failed = 0;
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let key = format!("{prefix}-w{w}-{n}");
                        let value = format!("value of {key}").into_bytes();
                        match client.call(&set_cmd(&key, 0, &value)) {
                            Ok(reply) => match ok_version(&reply) {
                                Some(version) => acked.push(Acked {
                                    key,
                                    value,
                                    version,
                                    at: Instant::now(),
                                }),
                                None => {
                                    failed += 1;
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                            },
                            Err(_) => {
                                failed += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        WriteLoad { stop, threads }
    }

    /// Stops the writers; returns every acknowledged write and the number of failed attempts.
    pub fn stop(self) -> (Vec<Acked>, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        let mut failed = 0;
        for t in self.threads {
            let (acked, f) = t.join().expect("writer thread");
            all.extend(acked);
            failed += f;
        }
        (all, failed)
    }
}

/// Checks through the leader that every acknowledged write is readable with its exact value and
/// version (each key was written once).
pub fn check_acked(client: &mut Client, acked: &[Acked]) {
    let mut versions = HashSet::new();
    for a in acked {
        assert!(
            versions.insert(a.version),
            "version {} acknowledged twice",
            a.version
        );
        let reply = client.call_retry(format!("getm {}\r\n", a.key).as_bytes(), LEADER_TIMEOUT);
        let mut expected = format!("VALUE {} 0 {}\r\n", a.version, a.value.len()).into_bytes();
        expected.extend_from_slice(&a.value);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(
            show(&reply),
            show(&expected),
            "acknowledged write of {} lost or changed",
            a.key
        );
    }
}

// ----- Snapshots: process control, logs and disk use -------------------------------------------

impl Cluster {
    /// The process id of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(|c| c.id())
    }

    /// SIGSTOP node `i`: it stays alive but does nothing until [`Cluster::resume`].
    pub fn pause(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONT node `i` after [`Cluster::pause`].
    pub fn resume(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, libc::SIGCONT);
        }
    }

    /// The text of node `i`'s log (every start appends to it).
    pub fn log_text(&self, i: usize) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.nodes[i].log).unwrap_or_default()).into()
    }

    /// Lines of node `i`'s log containing `needle`.
    pub fn log_count(&self, i: usize, needle: &str) -> usize {
        self.log_text(i)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits at most `limit` until node `i`'s log has at least `count` lines containing `needle`.
    pub fn wait_log(&self, i: usize, needle: &str, count: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.log_count(i, needle) >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes every follower of `leader` hold the leader's whole log: for each follower in turn the
    /// other followers are paused (SIGSTOP) and a write is committed, which needs that follower's
    /// acknowledgement, so its log matches the leader's up to that write. A paused follower misses at
    /// most the last of these writes, which the next heartbeat brings. Then waits `settle` so that
    /// every node learns the commit index and applies everything.
    pub fn sync_followers(&mut self, leader: usize, settle: Duration) {
        let followers: Vec<usize> = self
            .running()
            .into_iter()
            .filter(|&i| i != leader)
            .collect();
        let mut client = Client::new(vec![self.addr(leader).to_string()]);
        for &f in &followers {
            let others: Vec<usize> = followers.iter().copied().filter(|&o| o != f).collect();
            for &o in &others {
                self.pause(o);
            }
            let reply = client.call(&set_cmd(&format!("__sync-{}", f + 1), 0, b"synced"));
            for &o in &others {
                self.resume(o);
            }
            let reply = reply.unwrap_or_else(|e| panic!("sync write through node {}: {e}", f + 1));
            assert!(
                ok_version(&reply).is_some(),
                "sync write through node {}: {}",
                f + 1,
                show(&reply)
            );
        }
        std::thread::sleep(settle);
    }
}

/// What a node logged on graceful shutdown: `final state applied=<i> keys=<n> digest=<d>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    pub applied: u64,
    pub keys: u64,
    pub digest: u64,
}

/// Removes ANSI colour sequences (`ESC [ ... m`), in case a log was written to a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of field `name` (`name=value`) in a tracing log line.
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(name)?.strip_prefix('='))
}

/// The last `final state` line of a node's log.
pub fn final_state(log_text: &str) -> Option<FinalState> {
    let text = strip_ansi(log_text);
    let line = text.lines().rev().find(|l| l.contains("final state"))?;
    Some(FinalState {
        applied: log_field(line, "applied")?.parse().ok()?,
        keys: log_field(line, "keys")?.parse().ok()?,
        digest: log_field(line, "digest")?.parse().ok()?,
    })
}

/// Total size in bytes of the files under `path`, recursively.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Sends `requests` over one connection to `addr`, `batch` at a time (every request of a batch is
/// written before any reply is read); returns the replies in order. Panics on an I/O error.
pub fn pipeline(addr: &str, requests: &[Vec<u8>], batch: usize) -> Vec<Vec<u8>> {
    let mut conn = Conn::connect_with(addr, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut replies = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(batch.max(1)) {
        let bytes: Vec<u8> = chunk.concat();
        conn.send(&bytes)
            .unwrap_or_else(|e| panic!("pipelined send to {addr}: {e}"));
        for _ in chunk {
            let reply = conn
                .read_reply()
                .unwrap_or_else(|e| panic!("pipelined reply from {addr}: {e}"));
            replies.push(reply);
        }
    }
    replies
}
