//! The client against scripted in-test servers: redirects, unknown outcomes, retries, pipelining.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raftkv_client::{CasOutcome, Client, Config, Error, ValueMeta};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// `session <id> <seq>` before the command, if it had one.
    session: Option<(u64, u64)>,
    verb: String,
    key: String,
    fields: Vec<String>,
    value: Vec<u8>,
}

enum Action {
    Reply(Vec<u8>),
    /// Drop the connection without answering.
    Close,
    /// Answer, then drop the connection (a node restarting between requests).
    ReplyThenClose(Vec<u8>),
}

type Script = dyn Fn(&Seen, usize) -> Action + Send + Sync;

/// A server answering each request by `script(request, index of the request across connections)`.
struct FakeServer {
    address: String,
    received: Arc<AtomicUsize>,
}

impl FakeServer {
    async fn start(script: impl Fn(&Seen, usize) -> Action + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let received = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let counter = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, script.clone(), counter.clone()));
            }
        });
        FakeServer { address, received }
    }

    fn addrs(&self) -> Vec<String> {
        vec![self.address.clone()]
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    fn redirect_line(&self) -> Vec<u8> {
        let (host, port) = self.address.rsplit_once(':').unwrap();
        format!("ERR_REDIRECT {host} {port}\r\n").into_bytes()
    }
}

async fn serve(stream: TcpStream, script: Arc<Script>, received: Arc<AtomicUsize>) {
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    loop {
        let Some(seen) = read_request(&mut reader).await else {
            return;
        };
        let index = received.fetch_add(1, Ordering::SeqCst);
        match script(&seen, index) {
            Action::Reply(bytes) => {
                if write_half.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Action::Close => return,
            Action::ReplyThenClose(bytes) => {
                let _ = write_half.write_all(&bytes).await;
                return;
            }
        }
    }
}

async fn read_request(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut words: Vec<String> = line.trim_end().split(' ').map(str::to_string).collect();
    let mut session = None;
    if words.first()? == "session" && words.len() > 3 {
        session = Some((words[1].parse().ok()?, words[2].parse().ok()?));
        words.drain(..3);
    }
    let verb = words.first()?.clone();
    let key = words.get(1).cloned().unwrap_or_default();
    let fields = words[2.min(words.len())..].to_vec();
    let mut value = Vec::new();
    if verb == "set" || verb == "cas" {
        let numbytes: usize = fields.last()?.parse().ok()?;
        value.resize(numbytes + 2, 0);
        reader.read_exact(&mut value).await.ok()?;
        value.truncate(numbytes);
    }
    Some(Seen {
        session,
        verb,
        key,
        fields,
        value,
    })
}

/// Plain CS733 writes, as these scripted servers expect (sessions have their own tests below).
fn quick() -> Config {
    Config {
        deadline: Duration::from_millis(1500),
        exactly_once: false,
        ..Config::default()
    }
}

fn reply(text: &str) -> Action {
    Action::Reply(text.as_bytes().to_vec())
}

#[tokio::test]
async fn follows_redirect_to_the_leader_for_reads_and_writes() {
    let leader = FakeServer::start(|seen, _| match seen.verb.as_str() {
        "set" => reply("OK 42\r\n"),
        "get" => reply("VALUE 5\r\nhello\r\n"),
        _ => reply("ERR_NOT_FOUND\r\n"),
    })
    .await;
    let redirect = leader.redirect_line();
    let follower = FakeServer::start(move |_, _| Action::Reply(redirect.clone())).await;

    let client = Client::connect_with(&follower.addrs(), quick())
        .await
        .unwrap();
    assert_eq!(client.connected_to(), Some(leader.address.clone()));
    assert_eq!(client.set("k", b"hello", None).await, Ok(42));
    assert_eq!(
        client.get("k").await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    // Only the probe went to the follower.
    assert_eq!(follower.received(), 1);
}

#[tokio::test]
async fn a_redirected_write_is_executed_once_at_the_leader() {
    let leader = FakeServer::start(|_, _| reply("OK 7\r\n")).await;
    let redirect = leader.redirect_line();
    let follower = FakeServer::start(move |_, _| Action::Reply(redirect.clone())).await;
    let client = Client::new(&follower.addrs(), quick()).unwrap();
    assert_eq!(client.set("k", b"v", Some(30)).await, Ok(7));
    assert_eq!((follower.received(), leader.received()), (1, 1));
}

#[tokio::test]
async fn a_write_lost_after_sending_is_reported_as_outcome_unknown_and_not_retried() {
    let server = FakeServer::start(|seen, _| match seen.verb.as_str() {
        "get" => reply("ERR_NOT_FOUND\r\n"),
        _ => Action::Close,
    })
    .await;
    let client = Client::connect_with(&server.addrs(), quick())
        .await
        .unwrap();
    let before = server.received();
    let outcome = client.set("k", b"v", None).await;
    assert!(
        matches!(outcome, Err(Error::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    let outcome = client.cas("k", 3, b"v", None).await;
    assert!(
        matches!(outcome, Err(Error::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    let outcome = client.delete("k").await;
    assert!(
        matches!(outcome, Err(Error::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    assert_eq!(
        server.received() - before,
        3,
        "each write was sent exactly once"
    );
}

#[tokio::test]
async fn err_internal_after_a_write_is_outcome_unknown() {
    let server = FakeServer::start(|_, _| reply("ERR_INTERNAL\r\n")).await;
    let client = Client::new(&server.addrs(), quick()).unwrap();
    let outcome = client.set("k", b"v", None).await;
    assert!(
        matches!(outcome, Err(Error::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    assert_eq!(server.received(), 1);
}

#[tokio::test]
async fn reads_are_retried_after_connection_loss_and_err_internal() {
    // Request 0 loses its connection, request 1 meets a node without a leader, request 2 succeeds.
    let server = FakeServer::start(|_, index| match index {
        0 => Action::Close,
        1 => reply("ERR_INTERNAL\r\n"),
        _ => reply("VALUE 3 0 2\r\nok\r\n"),
    })
    .await;
    let client = Client::new(&server.addrs(), quick()).unwrap();
    let expected = ValueMeta {
        version: 3,
        exptime: 0,
        value: bytes::Bytes::from_static(b"ok"),
    };
    assert_eq!(client.getm("k").await, Ok(Some(expected)));
    assert_eq!(server.received(), 3);
}

#[tokio::test]
async fn a_node_without_leader_makes_the_client_try_the_next_one() {
    let no_leader = FakeServer::start(|_, _| reply("ERR_INTERNAL\r\n")).await;
    let healthy = FakeServer::start(|_, _| reply("VALUE 1\r\nx\r\n")).await;
    let client = Client::new(
        &[no_leader.address.clone(), healthy.address.clone()],
        quick(),
    )
    .unwrap();
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(client.connected_to(), Some(healthy.address.clone()));
}

#[tokio::test]
async fn replies_are_matched_to_pipelined_requests_in_order() {
    const REQUESTS: usize = 200;
    // This server reads every request before answering any, which only a client that keeps them
    // all in flight on one connection can satisfy; it answers each get with the key as value.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read_half, mut write_half) = stream.into_split();
        let mut reader = BufReader::new(read_half);
        let mut replies = Vec::new();
        for _ in 0..REQUESTS {
            let seen = read_request(&mut reader).await.unwrap();
            replies.extend(format!("VALUE {}\r\n{}\r\n", seen.key.len(), seen.key).bytes());
        }
        write_half.write_all(&replies).await.unwrap();
        // Keep the connection open until the client is done.
        let _ = read_request(&mut reader).await;
    });
    let client = Client::new(&[address], quick()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("key-{i}");
            let value = client.get(&key).await;
            (key, value)
        }));
    }
    for task in tasks {
        let (key, value) = task.await.unwrap();
        assert_eq!(value.unwrap().as_deref(), Some(key.as_bytes()));
    }
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn values_with_line_breaks_and_every_outcome_round_trip() {
    let server = FakeServer::start(|seen, _| match (seen.verb.as_str(), seen.key.as_str()) {
        ("set", _) => {
            assert_eq!(seen.fields, ["60", "4"]);
            assert_eq!(seen.value, b"a\r\nb");
            reply("OK 10\r\n")
        }
        ("cas", "stale") => reply("ERR_VERSION\r\n"),
        ("cas", "gone") | ("delete", "gone") | ("get", _) => reply("ERR_NOT_FOUND\r\n"),
        ("cas", _) => {
            assert_eq!(seen.fields, ["0", "10", "1"]);
            reply("OK 11\r\n")
        }
        ("delete", _) => reply("DELETED\r\n"),
        _ => reply("ERR_CMD_ERR\r\n"),
    })
    .await;
    let client = Client::new(&server.addrs(), quick()).unwrap();
    assert_eq!(client.set("k", b"a\r\nb", Some(60)).await, Ok(10));
    assert_eq!(
        client.cas("k", 10, b"c", None).await,
        Ok(CasOutcome::Swapped { version: 11 })
    );
    assert_eq!(
        client.cas("stale", 1, b"c", None).await,
        Ok(CasOutcome::VersionMismatch)
    );
    assert_eq!(
        client.cas("gone", 1, b"c", None).await,
        Ok(CasOutcome::NotFound)
    );
    assert_eq!(client.get("k").await, Ok(None));
    assert_eq!(client.delete("k").await, Ok(true));
    assert_eq!(client.delete("gone").await, Ok(false));
    assert_eq!(client.getm("x").await, Err(Error::Rejected));
}

#[tokio::test]
async fn gives_up_when_no_node_answers_before_the_deadline() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let config = Config {
        deadline: Duration::from_millis(300),
        exactly_once: false,
        ..Config::default()
    };
    let started = std::time::Instant::now();
    let outcome = Client::connect_with(&[closed], config).await;
    assert!(
        matches!(outcome, Err(Error::Unavailable(_))),
        "{:?}",
        outcome.err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn nodes_redirecting_to_each_other_cannot_hold_the_client_past_its_deadline() {
    let first = FakeServer::start(|_, _| reply("ERR_REDIRECT 127.0.0.1 1\r\n")).await;
    let config = Config {
        deadline: Duration::from_millis(300),
        exactly_once: false,
        ..Config::default()
    };
    let client = Client::new(&first.addrs(), config).unwrap();
    let outcome = client.set("k", b"v", None).await;
    assert!(matches!(outcome, Err(Error::Unavailable(_))), "{outcome:?}");
}

#[tokio::test]
async fn a_silent_server_yields_outcome_unknown_for_writes_and_unavailable_for_reads() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    // Accepts and reads, never answers.
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let config = Config {
        deadline: Duration::from_millis(200),
        exactly_once: false,
        ..Config::default()
    };
    let client = Client::new(&[address], config).unwrap();
    assert!(matches!(
        client.set("k", b"v", None).await,
        Err(Error::OutcomeUnknown(_))
    ));
    assert!(matches!(client.get("k").await, Err(Error::Unavailable(_))));
}

#[tokio::test]
async fn invalid_arguments_are_rejected_before_sending() {
    let client = Client::new(&["127.0.0.1:1".to_string()], quick()).unwrap();
    assert!(matches!(client.get("").await, Err(Error::InvalidKey(_))));
    assert!(matches!(
        client.get(&"k".repeat(251)).await,
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        client.delete("tab\tkey").await,
        Err(Error::InvalidKey(_))
    ));
    let huge = vec![0u8; (1 << 20) + 1];
    assert!(matches!(
        client.set("k", &huge, None).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        client.set("k", b"v", Some(u32::MAX)).await,
        Err(Error::InvalidTtl(_))
    ));
    assert_eq!(Client::new(&[], quick()).err(), Some(Error::NoAddresses));
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced_before_the_next_write() {
    // Every connection serves one request and is then closed by the server, as when a node
    // restarts between two requests: no write is lost or reported unknown because of that.
    let server = FakeServer::start(|_, index| {
        Action::ReplyThenClose(format!("OK {}\r\n", index + 1).into_bytes())
    })
    .await;
    let client = Client::new(&server.addrs(), quick()).unwrap();
    for expected in 1..=3 {
        assert_eq!(client.set("k", b"v", None).await, Ok(expected));
        // Gives the client time to notice the close, as any real gap between requests would.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.received(), 3);
}

// ---------- sessions ----------

/// A config with sessions (the default) and short pauses.
fn with_sessions() -> Config {
    Config {
        deadline: Duration::from_millis(3000),
        attempt_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_write_lost_after_sending_is_retried_in_its_session_with_the_same_sequence_number() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = FakeServer::start(move |request, index| {
        log.lock().unwrap().push(request.clone());
        match (request.verb.as_str(), index) {
            ("register", _) => reply("SESSION 5\r\n"),
            // The first attempt is lost, the second hears what the first did.
            (_, 1) => Action::Close,
            (_, 2) => reply("ERR_INTERNAL\r\n"),
            ("cas", _) => reply("OK 7\r\n"),
            _ => reply("OK 8\r\n"),
        }
    })
    .await;
    let client = Client::new(&server.addrs(), with_sessions()).unwrap();
    assert_eq!(
        client.cas("k", 3, b"v", None).await,
        Ok(CasOutcome::Swapped { version: 7 })
    );
    assert_eq!(client.set("k", b"w", None).await, Ok(8));
    let seen = seen.lock().unwrap();
    let writes: Vec<_> = seen.iter().filter(|s| s.verb != "register").collect();
    assert_eq!(seen.iter().filter(|s| s.verb == "register").count(), 1);
    assert_eq!(writes.len(), 4);
    for attempt in &writes[..3] {
        assert_eq!(attempt.session, Some((5, 1)), "{attempt:?}");
        assert_eq!(attempt.verb, "cas");
    }
    assert_eq!(writes[3].session, Some((5, 2)), "the session moved on");
}

#[tokio::test]
async fn a_silent_leader_is_left_for_another_attempt_within_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let answering = FakeServer::start(|request, _| match request.verb.as_str() {
        "register" => reply("SESSION 9\r\n"),
        _ => reply("DELETED\r\n"),
    })
    .await;
    // Registered on the answering node, then the write goes to the silent one first.
    let client = Client::new(&[silent, answering.address.clone()], with_sessions()).unwrap();
    assert_eq!(client.delete("k").await, Ok(true));
}

#[tokio::test]
async fn an_expired_session_is_replaced_when_nothing_was_applied_and_unknown_otherwise() {
    let server = FakeServer::start(|request, _| match request.verb.as_str() {
        "register" => reply("SESSION 3\r\n"),
        _ => match request.session {
            // The first session is gone at once: safe to retry in a new one.
            Some((3, _)) => reply("ERR_SESSION_EXPIRED\r\n"),
            _ => reply("OK 1\r\n"),
        },
    })
    .await;
    let client = Client::new(&server.addrs(), with_sessions()).unwrap();
    // Every registration answers 3, so the retry meets an expired session again until the deadline.
    let outcome = client.set("k", b"v", None).await;
    assert!(
        matches!(outcome, Err(Error::Unavailable(_))),
        "nothing can have been applied: {outcome:?}"
    );

    let server = FakeServer::start(|request, index| match request.verb.as_str() {
        "register" => reply("SESSION 4\r\n"),
        _ if index == 1 => Action::Close,
        _ => reply("ERR_SESSION_EXPIRED\r\n"),
    })
    .await;
    let client = Client::new(&server.addrs(), with_sessions()).unwrap();
    let outcome = client.set("k", b"v", None).await;
    assert!(
        matches!(outcome, Err(Error::OutcomeUnknown(_))),
        "the lost attempt may have been applied: {outcome:?}"
    );
}

#[tokio::test]
async fn a_write_that_never_gets_a_definite_answer_is_outcome_unknown_at_the_deadline() {
    let server = FakeServer::start(|request, _| match request.verb.as_str() {
        "register" => reply("SESSION 2\r\n"),
        _ => reply("ERR_INTERNAL\r\n"),
    })
    .await;
    let config = Config {
        deadline: Duration::from_millis(500),
        ..with_sessions()
    };
    let client = Client::new(&server.addrs(), config).unwrap();
    let outcome = client.set("k", b"v", None).await;
    assert!(
        matches!(outcome, Err(Error::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    assert!(server.received() > 2, "it was retried");
}

#[tokio::test]
async fn a_retry_refused_after_a_lost_attempt_is_outcome_unknown_not_a_definite_failure() {
    for refusal in ["ERR_SEQUENCE 9\r\n", "ERR_CMD_ERR\r\n"] {
        let server = FakeServer::start(move |request, index| match request.verb.as_str() {
            "register" => reply("SESSION 4\r\n"),
            _ if index == 1 => Action::Close,
            _ => reply(refusal),
        })
        .await;
        let client = Client::new(&server.addrs(), with_sessions()).unwrap();
        let outcome = client.cas("k", 1, b"v", None).await;
        assert!(
            matches!(outcome, Err(Error::OutcomeUnknown(_))),
            "{refusal:?}: {outcome:?}"
        );
    }
}
