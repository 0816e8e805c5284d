//! Membership administration on the client port: the `members` requests and the table a `MEMBERS`
//! reply carries (see "Membership" in `docs/protocol.md`).
//!
//! The table is a small text block, one member per line, so that a human with `nc` can read it too:
//!
//! ```text
//! leader 1 last_index 57 config_index 12 committed yes
//! 1 voter 10.0.0.1:7001 10.0.0.1:8001 57
//! 4 learner 10.0.0.4:7001 10.0.0.4:8001 50
//! ```
//! The match index is how far the member's log is known to agree with the leader's; the lag is
//! `last_index` minus it.

use std::fmt::Write as _;

/// Longest address (`host:port`) a member may have.
pub const MAX_ADDRESS_LEN: usize = 255;

/// A `members ...` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembersRequest {
    /// `members`: the current membership as the leader sees it.
    List,
    /// `members add <id> <client_addr> <peer_addr> [<resp_addr>]`: a new learner (with its Redis
    /// port, if it has one, so that the others can relay Redis clients to it when it leads).
    AddLearner {
        id: u64,
        client_addr: String,
        peer_addr: String,
        resp_addr: Option<String>,
    },
    /// `members promote <id>`: a caught-up learner becomes a voter.
    Promote { id: u64 },
    /// `members remove <id>`: a voter or learner leaves.
    Remove { id: u64 },
}

impl MembersRequest {
    /// Appends the request line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match self {
            MembersRequest::List => "members".to_string(),
            MembersRequest::AddLearner {
                id,
                client_addr,
                peer_addr,
                resp_addr: None,
            } => format!("members add {id} {client_addr} {peer_addr}"),
            MembersRequest::AddLearner {
                id,
                client_addr,
                peer_addr,
                resp_addr: Some(resp_addr),
            } => format!("members add {id} {client_addr} {peer_addr} {resp_addr}"),
            MembersRequest::Promote { id } => format!("members promote {id}"),
            MembersRequest::Remove { id } => format!("members remove {id}"),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Whether the request changes the membership (and so must not be blindly retried).
    pub fn is_change(&self) -> bool {
        !matches!(self, MembersRequest::List)
    }
}

/// Whether `addr` can be a member's address: `host:port` with a port number, printable ASCII without
/// spaces, at most [`MAX_ADDRESS_LEN`] bytes. Host names are allowed; they are resolved when used.
pub fn is_valid_address(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    addr.len() <= MAX_ADDRESS_LEN
        && addr.bytes().all(|b| b.is_ascii_graphic())
        && !host.is_empty()
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// One member in a [`MembersTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub id: u64,
    pub voter: bool,
    pub client_addr: String,
    pub peer_addr: String,
    /// How far its log is known to match the leader's (the leader's own last index for the leader).
    pub match_index: u64,
}

/// What a `MEMBERS` reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersTable {
    pub leader: u64,
    /// The leader's last log index.
    pub last_index: u64,
    /// The log index of the entry this membership comes from.
    pub config_index: u64,
    /// Whether that entry has committed (false while a change is in progress).
    pub committed: bool,
    /// Voters first, then learners, each by id.
    pub members: Vec<MemberRow>,
}

impl MembersTable {
    pub fn encode(&self) -> String {
        let mut out = format!(
            "leader {} last_index {} config_index {} committed {}\n",
            self.leader,
            self.last_index,
            self.config_index,
            if self.committed { "yes" } else { "no" }
        );
        for m in &self.members {
            let _ = writeln!(
                out,
                "{} {} {} {} {}",
                m.id,
                if m.voter { "voter" } else { "learner" },
                m.client_addr,
                m.peer_addr,
                m.match_index
            );
        }
        out
    }

    /// Parses what [`MembersTable::encode`] wrote; `None` for anything else.
    pub fn parse(text: &[u8]) -> Option<MembersTable> {
        let text = std::str::from_utf8(text).ok()?;
        let mut lines = text.lines();
        let head: Vec<&str> = lines.next()?.split(' ').collect();
        let ["leader", leader, "last_index", last, "config_index", config, "committed", committed] =
            head[..]
        else {
            return None;
        };
        let mut table = MembersTable {
            leader: leader.parse().ok()?,
            last_index: last.parse().ok()?,
            config_index: config.parse().ok()?,
            committed: match committed {
                "yes" => true,
                "no" => false,
                _ => return None,
            },
            members: Vec::new(),
        };
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let [id, role, client, peer, matched] = fields[..] else {
                return None;
            };
            table.members.push(MemberRow {
                id: id.parse().ok()?,
                voter: match role {
                    "voter" => true,
                    "learner" => false,
                    _ => return None,
                },
                client_addr: client.to_string(),
                peer_addr: peer.to_string(),
                match_index: matched.parse().ok()?,
            });
        }
        Some(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_round_trips() {
        let table = MembersTable {
            leader: 2,
            last_index: 57,
            config_index: 12,
            committed: false,
            members: vec![
                MemberRow {
                    id: 2,
                    voter: true,
                    client_addr: "db-2.local:7001".into(),
                    peer_addr: "[::1]:8001".into(),
                    match_index: 57,
                },
                MemberRow {
                    id: 4,
                    voter: false,
                    client_addr: "10.0.0.4:7001".into(),
                    peer_addr: "10.0.0.4:8001".into(),
                    match_index: 3,
                },
            ],
        };
        assert_eq!(MembersTable::parse(table.encode().as_bytes()), Some(table));
        assert_eq!(MembersTable::parse(b"leader x"), None);
        assert_eq!(
            MembersTable::parse(
                b"leader 1 last_index 2 config_index 0 committed yes\n1 boss a:1 b:2 3\n"
            ),
            None
        );
    }

    #[test]
    fn an_add_request_round_trips_with_and_without_a_redis_address() {
        use crate::{ParseOutcome, Parser, Request};
        for resp_addr in [None, Some("10.0.0.4:6379".to_string())] {
            let request = MembersRequest::AddLearner {
                id: 4,
                client_addr: "10.0.0.4:9000".into(),
                peer_addr: "10.0.0.4:10000".into(),
                resp_addr,
            };
            let mut line = Vec::new();
            request.encode(&mut line);
            let mut buf = bytes::BytesMut::from(&line[..]);
            match Parser::new(1024).parse(&mut buf) {
                ParseOutcome::Request(Request::Members(parsed)) => assert_eq!(parsed, request),
                other => panic!("{other:?}"),
            }
        }
        let mut buf = bytes::BytesMut::from(&b"members add 4 a:1 b:2 not-an-address\r\n"[..]);
        assert!(matches!(
            Parser::new(1024).parse(&mut buf),
            ParseOutcome::Error(_)
        ));
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert!(is_valid_address("127.0.0.1:7001"));
        assert!(is_valid_address("db-1.example.com:7001"));
        assert!(is_valid_address("[::1]:7001"));
        for bad in [
            "",
            "host",
            "host:",
            ":7001",
            "host:0",
            "host:70000",
            "a b:1",
            "h\u{e9}:1",
        ] {
            assert!(!is_valid_address(bad), "{bad:?}");
        }
        assert!(!is_valid_address(&format!("{}:1", "h".repeat(300))));
    }
}
