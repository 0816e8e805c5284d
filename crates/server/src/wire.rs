//! The binary encoding of Raft messages between nodes, and of the peer handshake.
//!
//! Hand-written rather than derived so the format is explicit, stable across compiler and library
//! versions, and cheap: entry data is never copied on decode (it is sliced out of the received frame).
//! Everything is little-endian. Each message starts with [`WIRE_VERSION`] so a future format can be
//! introduced without ambiguity.
//!
//! Decoding treats its input as hostile: it never panics, rejects anything malformed with a
//! [`WireError`], and never allocates more than the input's length can justify (every count is checked
//! against the bytes that remain before anything is reserved).
//!
//! Message layout:
//! ```text
//! version u8 | type u8 | from u64 | to u64 | term u64 | body
//! PreVote / Vote      last_index u64, last_term u64 [, transfer u8 (Vote only)]
//! *Response (votes)   granted u8
//! Append              prev_index u64, prev_term u64, commit u64, count u32, count × entry
//!   entry             index u64, term u64, kind u8 (0 normal, 1 no-op, 2 config), len u32, data[len]
//! AppendResponse      0 u8, last_index u64 | 1 u8, prev_index u64, hint_index u64, hint_term u64
//! Heartbeat           commit u64, read_round u64
//! HeartbeatResponse   read_round u64
//! InstallSnapshot     index u64, term u64, membership, len u64, data[len]
//!   membership        raftkv_raft::Membership::encode (version u8, voters, learners, address book)
//! TimeoutNow          (nothing)
//! ```
//!
//! A snapshot travels on a connection of its own (see [`crate::snapshot_stream`]): after a handshake
//! marked [`StreamKind::Snapshot`], the dialler sends one frame holding a [`SnapshotHeader`], then the
//! snapshot data raw (it is checked by the header's CRC, not framed).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raftkv_raft::{
    AppendResult, Entry, EntryKind, Membership, Message, MessageBody, Snapshot, SnapshotMeta,
};

/// Version of the message encoding, first byte of every message.
pub const WIRE_VERSION: u8 = 1;

/// First bytes of every handshake, so a stray client (or anything not raftkv) is recognised at once.
pub const HANDSHAKE_MAGIC: [u8; 8] = *b"RAFTKVP\0";

/// Longest peer address a handshake may carry.
const MAX_HANDSHAKE_ADDR_LEN: usize = 255;

/// Version of the peer protocol (handshake, framing and message encoding together).
pub const PROTOCOL_VERSION: u16 = 2;

const TYPE_PRE_VOTE: u8 = 1;
const TYPE_PRE_VOTE_RESPONSE: u8 = 2;
const TYPE_VOTE: u8 = 3;
const TYPE_VOTE_RESPONSE: u8 = 4;
const TYPE_APPEND: u8 = 5;
const TYPE_APPEND_RESPONSE: u8 = 6;
const TYPE_HEARTBEAT: u8 = 7;
const TYPE_HEARTBEAT_RESPONSE: u8 = 8;
const TYPE_INSTALL_SNAPSHOT: u8 = 9;
const TYPE_TIMEOUT_NOW: u8 = 10;

/// Smallest encoding of one entry (empty data); bounds how many entries a buffer can possibly hold.
const MIN_ENTRY_LEN: usize = 8 + 8 + 1 + 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated input: needed {needed} more bytes for {what}, {remaining} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    #[error("invalid {field}: {value}")]
    InvalidValue { field: &'static str, value: u64 },
    #[error("{what}: count {count} cannot fit in the {remaining} bytes left")]
    ImpossibleCount {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("bad handshake magic")]
    BadMagic,
    #[error("handshake cluster id is not UTF-8")]
    ClusterIdNotUtf8,
}

/// What a peer connection carries, declared by the dialler in its handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamKind {
    /// Framed Raft messages, for as long as the connection lives.
    #[default]
    Messages,
    /// Exactly one snapshot: a header frame, then the raw data (see [`crate::snapshot_stream`]).
    Snapshot,
}

/// Handshake byte marking a snapshot stream. A message stream has no such byte, so its handshake is
/// byte for byte the one of the first version of the protocol.
const STREAM_KIND_SNAPSHOT: u8 = 1;

/// Appends the encoding of `msg` to `out`.
pub fn encode_message(msg: &Message, out: &mut BytesMut) {
    out.reserve(encoded_len(msg));
    out.put_u8(WIRE_VERSION);
    out.put_u8(message_type(&msg.body));
    out.put_u64_le(msg.from);
    out.put_u64_le(msg.to);
    out.put_u64_le(msg.term);
    match &msg.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => {
            out.put_u64_le(*last_index);
            out.put_u64_le(*last_term);
        }
        MessageBody::PreVoteResponse { granted } | MessageBody::VoteResponse { granted } => {
            out.put_u8(u8::from(*granted));
        }
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            out.put_u64_le(*last_index);
            out.put_u64_le(*last_term);
            out.put_u8(u8::from(*transfer));
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.put_u64_le(*prev_index);
            out.put_u64_le(*prev_term);
            out.put_u64_le(*commit);
            // The core caps entries per message far below u32::MAX; the frame limit rejects anything
            // absurd before it reaches the network.
            out.put_u32_le(entries.len() as u32);
            for entry in entries {
                out.put_u64_le(entry.index);
                out.put_u64_le(entry.term);
                out.put_u8(match entry.kind {
                    EntryKind::Normal => 0,
                    EntryKind::Noop => 1,
                    EntryKind::Config => 2,
                });
                out.put_u32_le(entry.data.len() as u32);
                out.put_slice(&entry.data);
            }
        }
        MessageBody::AppendResponse(result) => match *result {
            AppendResult::Accepted { last_index } => {
                out.put_u8(0);
                out.put_u64_le(last_index);
            }
            AppendResult::Rejected {
                prev_index,
                hint_index,
                hint_term,
            } => {
                out.put_u8(1);
                out.put_u64_le(prev_index);
                out.put_u64_le(hint_index);
                out.put_u64_le(hint_term);
            }
        },
        MessageBody::Heartbeat { commit, read_round } => {
            out.put_u64_le(*commit);
            out.put_u64_le(*read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => out.put_u64_le(*read_round),
        MessageBody::InstallSnapshot { snapshot } => {
            out.put_u64_le(snapshot.meta.index);
            out.put_u64_le(snapshot.meta.term);
            encode_membership(&snapshot.meta.membership, out);
            out.put_u64_le(snapshot.data.len() as u64);
            out.put_slice(&snapshot.data);
        }
        MessageBody::TimeoutNow => {}
    }
}

/// Exact number of bytes [`encode_message`] appends for `msg`.
pub fn encoded_len(msg: &Message) -> usize {
    let header = 1 + 1 + 8 + 8 + 8;
    let body = match &msg.body {
        MessageBody::PreVote { .. } => 16,
        MessageBody::PreVoteResponse { .. } | MessageBody::VoteResponse { .. } => 1,
        MessageBody::Vote { .. } => 17,
        MessageBody::Append { entries, .. } => {
            24 + 4
                + entries
                    .iter()
                    .map(|e| MIN_ENTRY_LEN + e.data.len())
                    .sum::<usize>()
        }
        MessageBody::AppendResponse(AppendResult::Accepted { .. }) => 1 + 8,
        MessageBody::AppendResponse(AppendResult::Rejected { .. }) => 1 + 24,
        MessageBody::Heartbeat { .. } => 16,
        MessageBody::HeartbeatResponse { .. } => 8,
        MessageBody::InstallSnapshot { snapshot } => {
            16 + snapshot.meta.membership.encoded_len() + 8 + snapshot.data.len()
        }
        MessageBody::TimeoutNow => 0,
    };
    header + body
}

fn message_type(body: &MessageBody) -> u8 {
    match body {
        MessageBody::PreVote { .. } => TYPE_PRE_VOTE,
        MessageBody::PreVoteResponse { .. } => TYPE_PRE_VOTE_RESPONSE,
        MessageBody::Vote { .. } => TYPE_VOTE,
        MessageBody::VoteResponse { .. } => TYPE_VOTE_RESPONSE,
        MessageBody::Append { .. } => TYPE_APPEND,
        MessageBody::AppendResponse(_) => TYPE_APPEND_RESPONSE,
        MessageBody::Heartbeat { .. } => TYPE_HEARTBEAT,
        MessageBody::HeartbeatResponse { .. } => TYPE_HEARTBEAT_RESPONSE,
        MessageBody::InstallSnapshot { .. } => TYPE_INSTALL_SNAPSHOT,
        MessageBody::TimeoutNow => TYPE_TIMEOUT_NOW,
    }
}

/// Consumes one message from the front of `buf`. On error `buf` is left at an unspecified position: the
/// stream cannot be resynchronised and its connection should be closed.
pub fn decode_message(buf: &mut Bytes) -> Result<Message, WireError> {
    let version = get_u8(buf, "version")?;
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let message_type = get_u8(buf, "message type")?;
    let from = get_node_id(buf, "from")?;
    let to = get_node_id(buf, "to")?;
    let term = get_u64(buf, "term")?;
    let body = match message_type {
        TYPE_PRE_VOTE => MessageBody::PreVote {
            last_index: get_u64(buf, "last_index")?,
            last_term: get_u64(buf, "last_term")?,
        },
        TYPE_PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse {
            granted: get_bool(buf, "granted")?,
        },
        TYPE_VOTE => MessageBody::Vote {
            last_index: get_u64(buf, "last_index")?,
            last_term: get_u64(buf, "last_term")?,
            transfer: get_bool(buf, "transfer")?,
        },
        TYPE_VOTE_RESPONSE => MessageBody::VoteResponse {
            granted: get_bool(buf, "granted")?,
        },
        TYPE_APPEND => decode_append(buf)?,
        TYPE_APPEND_RESPONSE => {
            let result = match get_u8(buf, "append result")? {
                0 => AppendResult::Accepted {
                    last_index: get_u64(buf, "last_index")?,
                },
                1 => AppendResult::Rejected {
                    prev_index: get_u64(buf, "prev_index")?,
                    hint_index: get_u64(buf, "hint_index")?,
                    hint_term: get_u64(buf, "hint_term")?,
                },
                other => {
                    return Err(WireError::InvalidValue {
                        field: "append result",
                        value: other.into(),
                    })
                }
            };
            MessageBody::AppendResponse(result)
        }
        TYPE_HEARTBEAT => MessageBody::Heartbeat {
            commit: get_u64(buf, "commit")?,
            read_round: get_u64(buf, "read_round")?,
        },
        TYPE_HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse {
            read_round: get_u64(buf, "read_round")?,
        },
        TYPE_INSTALL_SNAPSHOT => decode_install_snapshot(buf)?,
        TYPE_TIMEOUT_NOW => MessageBody::TimeoutNow,
        other => return Err(WireError::UnknownMessageType(other)),
    };
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

fn decode_append(buf: &mut Bytes) -> Result<MessageBody, WireError> {
    let prev_index = get_u64(buf, "prev_index")?;
    let prev_term = get_u64(buf, "prev_term")?;
    let commit = get_u64(buf, "commit")?;
    let count = get_u32(buf, "entry count")? as usize;
    check_count(buf, "entries", count, MIN_ENTRY_LEN)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let index = get_u64(buf, "entry index")?;
        let term = get_u64(buf, "entry term")?;
        let kind = match get_u8(buf, "entry kind")? {
            0 => EntryKind::Normal,
            1 => EntryKind::Noop,
            2 => EntryKind::Config,
            other => {
                return Err(WireError::InvalidValue {
                    field: "entry kind",
                    value: other.into(),
                })
            }
        };
        let len = get_u32(buf, "entry length")? as usize;
        let data = take_bytes(buf, "entry data", len)?;
        entries.push(Entry {
            index,
            term,
            kind,
            data,
        });
    }
    Ok(MessageBody::Append {
        prev_index,
        prev_term,
        entries,
        commit,
    })
}

fn decode_install_snapshot(buf: &mut Bytes) -> Result<MessageBody, WireError> {
    let index = get_u64(buf, "snapshot index")?;
    let term = get_u64(buf, "snapshot term")?;
    let membership = decode_membership(buf)?;
    let len = get_u64(buf, "snapshot length")?;
    let len = usize::try_from(len).map_err(|_| WireError::InvalidValue {
        field: "snapshot length",
        value: len,
    })?;
    let data = take_bytes(buf, "snapshot data", len)?;
    Ok(MessageBody::InstallSnapshot {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership,
            },
            data,
        },
    })
}

/// A membership ([`Membership::encode`]: version, voters, learners, the address book), length-checked
/// and validated by the core's decoder: sorted, disjoint, bounded lists, so a corrupted message
/// cannot silently change quorum arithmetic.
fn decode_membership(buf: &mut Bytes) -> Result<Membership, WireError> {
    let Some((membership, used)) = Membership::decode(buf) else {
        return Err(WireError::InvalidValue {
            field: "membership",
            value: buf.len() as u64,
        });
    };
    buf.advance(used);
    Ok(membership)
}

fn encode_membership(membership: &Membership, out: &mut BytesMut) {
    let mut encoded = Vec::with_capacity(membership.encoded_len());
    membership.encode(&mut encoded);
    out.put_slice(&encoded);
}

/// What a node says about itself when it opens a peer connection, and what the acceptor answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub protocol_version: u16,
    pub cluster_id: String,
    pub node_id: u64,
    /// What the connection will carry. The acceptor echoes the dialler's kind.
    pub stream: StreamKind,
    /// Where this node's peers reach it (`host:port`): how a node that does not know the sender yet
    /// (it missed the membership change that added it) can answer. Empty if not given.
    pub peer_addr: String,
}

impl Handshake {
    /// Layout: magic [8] | protocol_version u16 | node_id u64 | cluster_id_len u16 | cluster_id |
    /// stream u8 (0 messages, 1 snapshot) | peer_addr_len u16 | peer_addr. (Version 1 ended after the
    /// cluster id, with an optional 1 for a snapshot stream; a handshake that says version 1 is still
    /// decoded that way, so that an old node is told its version is wrong rather than its bytes.)
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&HANDSHAKE_MAGIC);
        out.put_u16_le(self.protocol_version);
        out.put_u64_le(self.node_id);
        let id = self.cluster_id.as_bytes();
        let len = id.len().min(u16::MAX as usize);
        out.put_u16_le(len as u16);
        out.put_slice(&id[..len]);
        out.put_u8(match self.stream {
            StreamKind::Messages => 0,
            StreamKind::Snapshot => STREAM_KIND_SNAPSHOT,
        });
        let addr = self.peer_addr.as_bytes();
        let len = addr.len().min(MAX_HANDSHAKE_ADDR_LEN);
        out.put_u16_le(len as u16);
        out.put_slice(&addr[..len]);
    }

    /// Decodes a whole handshake payload; trailing bytes are an error. The version is returned as
    /// sent, for the caller to judge, so it can log what the stranger spoke.
    pub fn decode(mut buf: Bytes) -> Result<Handshake, WireError> {
        let magic = take_bytes(&mut buf, "handshake magic", HANDSHAKE_MAGIC.len())?;
        if magic[..] != HANDSHAKE_MAGIC {
            return Err(WireError::BadMagic);
        }
        let protocol_version = get_u16(&mut buf, "protocol version")?;
        let node_id = get_u64(&mut buf, "node id")?;
        let len = get_u16(&mut buf, "cluster id length")? as usize;
        let id = take_bytes(&mut buf, "cluster id", len)?;
        let cluster_id = String::from_utf8(id.to_vec()).map_err(|_| WireError::ClusterIdNotUtf8)?;
        let (stream, peer_addr) = match buf[..] {
            // Version 1's layout, decoded only so that the caller can name the old version.
            [] if protocol_version < 2 => (StreamKind::Messages, String::new()),
            [STREAM_KIND_SNAPSHOT] if protocol_version < 2 => (StreamKind::Snapshot, String::new()),
            _ => {
                let stream = match get_u8(&mut buf, "stream kind")? {
                    0 => StreamKind::Messages,
                    STREAM_KIND_SNAPSHOT => StreamKind::Snapshot,
                    other => {
                        return Err(WireError::InvalidValue {
                            field: "stream kind",
                            value: u64::from(other),
                        })
                    }
                };
                let len = get_u16(&mut buf, "peer address length")? as usize;
                if len > MAX_HANDSHAKE_ADDR_LEN {
                    return Err(WireError::InvalidValue {
                        field: "peer address length",
                        value: len as u64,
                    });
                }
                let addr = take_bytes(&mut buf, "peer address", len)?;
                let addr = String::from_utf8(addr.to_vec())
                    .ok()
                    .filter(|a| a.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or(WireError::InvalidValue {
                        field: "peer address",
                        value: len as u64,
                    })?;
                if buf.has_remaining() {
                    return Err(WireError::InvalidValue {
                        field: "handshake trailing bytes",
                        value: buf.len() as u64,
                    });
                }
                (stream, addr)
            }
        };
        Ok(Handshake {
            protocol_version,
            cluster_id,
            node_id,
            stream,
            peer_addr,
        })
    }
}

/// The first frame of a snapshot stream: who sends which snapshot, and how to check its data.
///
/// Layout: version u8 | from u64 | to u64 | term u64 | index u64 | snapshot term u64 | membership
/// | data_len u64 | data_crc32c u32. `from`, `to` and `term` are those of the
/// `InstallSnapshot` message the stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub from: u64,
    pub to: u64,
    pub term: u64,
    pub meta: SnapshotMeta,
    pub data_len: u64,
    pub data_crc: u32,
}

impl SnapshotHeader {
    /// The header for an `InstallSnapshot` message whose data has checksum `data_crc`; `None` for any
    /// other message.
    pub fn for_message(msg: &Message, data_crc: u32) -> Option<SnapshotHeader> {
        match &msg.body {
            MessageBody::InstallSnapshot { snapshot } => Some(SnapshotHeader {
                from: msg.from,
                to: msg.to,
                term: msg.term,
                meta: snapshot.meta.clone(),
                data_len: snapshot.data.len() as u64,
                data_crc,
            }),
            _ => None,
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(WIRE_VERSION);
        out.put_u64_le(self.from);
        out.put_u64_le(self.to);
        out.put_u64_le(self.term);
        out.put_u64_le(self.meta.index);
        out.put_u64_le(self.meta.term);
        encode_membership(&self.meta.membership, out);
        out.put_u64_le(self.data_len);
        out.put_u32_le(self.data_crc);
    }

    /// Decodes a whole header payload; trailing bytes are an error. The length is not judged here: the
    /// receiver compares it with its own limit.
    pub fn decode(mut buf: Bytes) -> Result<SnapshotHeader, WireError> {
        let version = get_u8(&mut buf, "version")?;
        if version != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let from = get_node_id(&mut buf, "from")?;
        let to = get_node_id(&mut buf, "to")?;
        let term = get_u64(&mut buf, "term")?;
        let index = get_u64(&mut buf, "snapshot index")?;
        let snapshot_term = get_u64(&mut buf, "snapshot term")?;
        let membership = decode_membership(&mut buf)?;
        let data_len = get_u64(&mut buf, "snapshot length")?;
        let data_crc = get_u32(&mut buf, "snapshot checksum")?;
        if buf.has_remaining() {
            return Err(WireError::InvalidValue {
                field: "snapshot header trailing bytes",
                value: buf.len() as u64,
            });
        }
        Ok(SnapshotHeader {
            from,
            to,
            term,
            meta: SnapshotMeta {
                index,
                term: snapshot_term,
                membership,
            },
            data_len,
            data_crc,
        })
    }

    /// The `InstallSnapshot` message this header announced, once its data has arrived.
    pub fn into_message(self, data: Bytes) -> Message {
        Message {
            from: self.from,
            to: self.to,
            term: self.term,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: self.meta,
                    data,
                },
            },
        }
    }
}

fn check_count(
    buf: &Bytes,
    what: &'static str,
    count: usize,
    min_item_len: usize,
) -> Result<(), WireError> {
    if count.saturating_mul(min_item_len) > buf.remaining() {
        return Err(WireError::ImpossibleCount {
            what,
            count: count as u64,
            remaining: buf.remaining(),
        });
    }
    Ok(())
}

fn ensure(buf: &Bytes, what: &'static str, needed: usize) -> Result<(), WireError> {
    if buf.remaining() < needed {
        return Err(WireError::Truncated {
            what,
            needed,
            remaining: buf.remaining(),
        });
    }
    Ok(())
}

fn get_u8(buf: &mut Bytes, what: &'static str) -> Result<u8, WireError> {
    ensure(buf, what, 1)?;
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut Bytes, what: &'static str) -> Result<u16, WireError> {
    ensure(buf, what, 2)?;
    Ok(buf.get_u16_le())
}

fn get_u32(buf: &mut Bytes, what: &'static str) -> Result<u32, WireError> {
    ensure(buf, what, 4)?;
    Ok(buf.get_u32_le())
}

fn get_u64(buf: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    ensure(buf, what, 8)?;
    Ok(buf.get_u64_le())
}

fn get_bool(buf: &mut Bytes, what: &'static str) -> Result<bool, WireError> {
    match get_u8(buf, what)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(WireError::InvalidValue {
            field: what,
            value: other.into(),
        }),
    }
}

/// Node ids are never 0 (0 means "none"), so a 0 here is corruption.
fn get_node_id(buf: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    match get_u64(buf, what)? {
        0 => Err(WireError::InvalidValue {
            field: what,
            value: 0,
        }),
        id => Ok(id),
    }
}

/// Slices `len` bytes off the front without copying.
fn take_bytes(buf: &mut Bytes, what: &'static str, len: usize) -> Result<Bytes, WireError> {
    ensure(buf, what, len)?;
    Ok(buf.split_to(len))
}
