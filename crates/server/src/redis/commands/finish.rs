//! Turning the replies of a command's requests into its Redis reply.

use bytes::Bytes;
use raftkv_kv::Reply;
use raftkv_resp::Value;

use super::Finish;

/// The Redis reply for a command whose requests were answered with `replies` (in order). `None` if a
/// reply says this node is not the leader (any more): the connection must end.
pub fn finish(finish: Finish, replies: Vec<Reply>) -> Option<Value> {
    if replies
        .iter()
        .any(|r| matches!(r, Reply::ErrRedirect { .. }))
    {
        return None;
    }
    if let Some(failed) = replies.iter().find(|r| {
        matches!(
            r,
            Reply::ErrInternal | Reply::ErrCmdErr | Reply::ErrSessionExpired
        )
    }) {
        return Some(match failed {
            Reply::ErrCmdErr => Value::err("the cluster refused the command as malformed"),
            _ => Value::err(
                "no answer from the cluster (leadership changed or no leader): the outcome is unknown",
            ),
        });
    }
    let value_of = |reply: &Reply| match reply {
        Reply::Value { value } | Reply::ValueMeta { value, .. } => Some(value.clone()),
        _ => None,
    };
    Some(match finish {
        Finish::Ok => Value::ok(),
        Finish::Value => replies
            .first()
            .and_then(value_of)
            .map_or(Value::Null, Value::Bulk),
        Finish::Values => Value::Array(
            replies
                .iter()
                .map(|r| value_of(r).map_or(Value::Null, Value::Bulk))
                .collect(),
        ),
        Finish::Count => Value::Integer(
            replies
                .iter()
                .filter(|r| matches!(r, Reply::Deleted | Reply::Value { .. }))
                .count() as i64,
        ),
        Finish::Len => Value::Integer(
            replies
                .first()
                .and_then(value_of)
                .map_or(0, |v| v.len() as i64),
        ),
        Finish::Range(start, end) => {
            let value = replies.first().and_then(value_of).unwrap_or_default();
            Value::Bulk(range(&value, start, end))
        }
        // Redis rounds the milliseconds left to the nearest second.
        Finish::Ttl => match replies.first() {
            Some(Reply::Integer { value }) if *value < 0 => Value::Integer(*value),
            Some(Reply::Integer { value }) => Value::Integer((value + 500) / 1000),
            _ => Value::Integer(-2),
        },
        Finish::Type => match replies.first().and_then(value_of) {
            Some(_) => Value::Simple("string".into()),
            None => Value::Simple("none".into()),
        },
        Finish::SetWith => match replies.first() {
            Some(Reply::Ok { .. }) => Value::ok(),
            _ => Value::Null,
        },
        Finish::SetNx => {
            Value::Integer(i64::from(matches!(replies.first(), Some(Reply::Ok { .. }))))
        }
        Finish::Store => match replies.into_iter().next() {
            Some(Reply::Integer { value }) => Value::Integer(value),
            Some(Reply::ErrValue { message }) => Value::err(message),
            Some(Reply::Value { value }) => Value::Bulk(value),
            _ => Value::ok(),
        },
        Finish::Rename => match replies.into_iter().next() {
            Some(Reply::Integer { value }) => Value::Integer(value),
            Some(Reply::ErrNotFound) => Value::err("no such key"),
            _ => Value::ok(),
        },
        Finish::Keys => match replies.into_iter().next() {
            Some(Reply::Keys { keys, .. }) => {
                Value::Array(keys.into_iter().map(Value::Bulk).collect())
            }
            _ => Value::Array(Vec::new()),
        },
        Finish::NullOrError(error) => match replies.first() {
            Some(Reply::ErrNotFound) => Value::Null,
            _ => Value::err(error),
        },
        Finish::Scan => match replies.into_iter().next() {
            Some(Reply::Keys { cursor, keys }) => Value::Array(vec![
                Value::bulk(cursor.to_string()),
                Value::Array(keys.into_iter().map(Value::Bulk).collect()),
            ]),
            _ => Value::Array(vec![Value::bulk("0"), Value::Array(Vec::new())]),
        },
    })
}

/// GETRANGE's inclusive range with negative offsets from the end, clamped as Redis clamps it.
fn range(value: &Bytes, start: i64, end: i64) -> Bytes {
    let len = value.len() as i64;
    if len == 0 {
        return Bytes::new();
    }
    let fix = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (fix(start), fix(end).min(len - 1));
    if start > end || start >= len {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_clamps_like_redis() {
        let v = Bytes::from_static(b"This is a string");
        assert_eq!(range(&v, 0, 3), Bytes::from_static(b"This"));
        assert_eq!(range(&v, -3, -1), Bytes::from_static(b"ing"));
        assert_eq!(range(&v, 0, -1), v);
        assert_eq!(range(&v, 10, 100), Bytes::from_static(b"string"));
        assert_eq!(range(&v, 5, 2), Bytes::new());
    }
}
