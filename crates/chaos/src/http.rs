//! Just enough HTTP/1.1 to read a node's `/status` and `/digest` (small JSON bodies, `Connection:
//! close`), with every wait bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `GET path` on `addr`: the status code and the parsed JSON body.
pub fn get_json(addr: &str, path: &str, timeout: Duration) -> Option<(u16, serde_json::Value)> {
    let (code, body) = get_text(addr, path, timeout)?;
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    Some((code, json))
}

/// `GET path` on `addr`: the status code and the body as text (a node's `/metrics` is a few tens of
/// kilobytes; anything past 1 MiB is cut).
pub fn get_text(addr: &str, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let target: SocketAddr = addr.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&target, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}
