//! One blocking CS733 connection to one node, one request at a time, every wait bounded: what a
//! workload client needs to tell "answered", "refused before sending" and "sent, fate unknown" apart.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use raftkv_protocol::{parse_reply, Parsed, Reply, ReplyKind, DEFAULT_MAX_VALUE_SIZE};

/// Why a call has no reply.
#[derive(Debug)]
pub enum CallError {
    /// Nothing was sent (no connection): the request certainly did not take effect.
    NotSent(String),
    /// The request may have reached the node; its reply did not come back in time, or the
    /// connection broke. The connection must be dropped.
    Lost(String),
    /// The node answered something that is not a reply to the request (or more than one): a
    /// protocol bug. The connection must be dropped.
    Garbled(String),
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    pub fn connect(addr: &str, timeout: Duration) -> Result<Conn, CallError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| CallError::NotSent(format!("resolve {addr}: {e}")))?
            .collect();
        let first = addrs
            .first()
            .ok_or_else(|| CallError::NotSent(format!("{addr} resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(first, timeout)
            .map_err(|e| CallError::NotSent(format!("connect {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| CallError::NotSent(e.to_string()))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            timeout,
        })
    }

    /// Sends `request` and waits up to the connection's timeout, in all, for the reply to a `kind`
    /// command.
    pub fn call(&mut self, request: &[u8], kind: ReplyKind) -> Result<Reply, CallError> {
        let deadline = Instant::now() + self.timeout;
        self.stream
            .write_all(request)
            .map_err(|e| CallError::Lost(format!("write: {e}")))?;
        loop {
            match parse_reply(&self.buf, kind, DEFAULT_MAX_VALUE_SIZE) {
                Ok(Parsed::Complete { reply, consumed }) => {
                    if consumed != self.buf.len() {
                        // One request at a time: nothing may follow its reply.
                        return Err(CallError::Garbled(format!(
                            "{} bytes after the reply to {kind:?}",
                            self.buf.len() - consumed
                        )));
                    }
                    let buf = &self.buf;
                    let reply = reply.map_value(|range| {
                        bytes::Bytes::copy_from_slice(buf.get(range).unwrap_or_default())
                    });
                    self.buf.clear();
                    return Ok(reply);
                }
                Ok(Parsed::Incomplete) => {}
                Err(err) => return Err(CallError::Garbled(err.to_string())),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Lost("no reply in time".into()));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| CallError::Lost(e.to_string()))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(CallError::Lost("connection closed".into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(CallError::Lost(format!("read: {e}"))),
            }
        }
    }
}
