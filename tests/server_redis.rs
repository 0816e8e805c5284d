//! The Redis front end with a real Redis client (the `redis` crate) against a 3-node cluster: every
//! supported command through the leader and through followers (which relay to the leader), the store
//! shared with the CS733 port, errors as Redis words them, and writes through a follower across a
//! leader kill with no acknowledged write lost.

mod support;

use std::time::{Duration, Instant};

use redis::{Commands, Connection, RedisResult, Value};
use support::*;

fn connect(addr: &str) -> Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("a redis URL");
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match client.get_connection_with_timeout(Duration::from_secs(5)) {
            Ok(mut conn) => {
                // The connection is routed once a leader is known: check it answers.
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return conn;
                }
            }
            Err(err) if Instant::now() > deadline => panic!("cannot connect to {addr}: {err}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "no answer from {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_command_through_the_leader_and_the_followers() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    for i in [leader, (leader + 1) % 3, (leader + 2) % 3] {
        let mut c = connect(&cluster.nodes[i].resp_addr);
        let k = |name: &str| format!("n{i}:{name}");
        // Connection commands.
        assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
        assert_eq!(
            redis::cmd("ECHO")
                .arg("hi")
                .query::<String>(&mut c)
                .unwrap(),
            "hi"
        );
        let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
        assert!(redis::cmd("SELECT").arg(1).query::<()>(&mut c).is_err());
        let _: () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("app")
            .query(&mut c)
            .unwrap();
        assert_eq!(
            redis::cmd("CLIENT")
                .arg("GETNAME")
                .query::<String>(&mut c)
                .unwrap(),
            "app"
        );
        // Strings.
        let _: () = c.set(k("a"), "1").unwrap();
        assert_eq!(c.get::<_, String>(k("a")).unwrap(), "1");
        assert_eq!(c.get::<_, Option<String>>(k("missing")).unwrap(), None);
        let _: () = c.set_ex(k("ttl"), "v", 100).unwrap();
        let ttl: i64 = c.ttl(k("ttl")).unwrap();
        assert!((99..=100).contains(&ttl), "{ttl}");
        assert_eq!(c.ttl::<_, i64>(k("a")).unwrap(), -1);
        assert_eq!(c.ttl::<_, i64>(k("missing")).unwrap(), -2);
        let _: () = redis::cmd("SET")
            .arg(k("px"))
            .arg("v")
            .arg("PX")
            .arg(1500)
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("PSETEX")
            .arg(k("ps"))
            .arg(100_000)
            .arg("v")
            .query(&mut c)
            .unwrap();
        let values: Vec<Option<String>> = c.mget(&[k("a"), k("missing"), k("ttl")]).unwrap();
        assert_eq!(
            values,
            vec![Some("1".to_string()), None, Some("v".to_string())]
        );
        assert_eq!(c.exists::<_, i64>(&[k("a"), k("missing")]).unwrap(), 1);
        let _: () = c.set(k("s"), "This is a string").unwrap();
        assert_eq!(c.strlen::<_, i64>(k("s")).unwrap(), 16);
        assert_eq!(c.getrange::<_, String>(k("s"), -3, -1).unwrap(), "ing");
        assert_eq!(
            redis::cmd("TYPE")
                .arg(k("s"))
                .query::<String>(&mut c)
                .unwrap(),
            "string"
        );
        assert_eq!(c.del::<_, i64>(&[k("a"), k("missing")]).unwrap(), 1);
        assert_eq!(c.get::<_, Option<String>>(k("a")).unwrap(), None);
        // Binary values round-trip.
        let binary = vec![0u8, 13, 10, 255, 1];
        let _: () = c.set(k("bin"), binary.clone()).unwrap();
        assert_eq!(c.get::<_, Vec<u8>>(k("bin")).unwrap(), binary);
        // Errors, in Redis's words.
        let err = redis::cmd("NOSUCH")
            .arg("x")
            .query::<()>(&mut c)
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown command 'NOSUCH'"),
            "{err}"
        );
        let err = redis::cmd("GET").query::<()>(&mut c).unwrap_err();
        assert!(
            err.to_string().contains("wrong number of arguments"),
            "{err}"
        );
        let err = redis::cmd("LPUSH")
            .arg(k("x"))
            .arg("x")
            .query::<()>(&mut c)
            .unwrap_err();
        assert!(err.to_string().contains("unknown command 'LPUSH'"), "{err}");
        // Counters and other read-modify-write commands: one log entry each.
        assert_eq!(c.incr::<_, _, i64>(k("n"), 1).unwrap(), 1);
        assert_eq!(c.incr::<_, _, i64>(k("n"), 10).unwrap(), 11);
        assert_eq!(c.decr::<_, _, i64>(k("n"), 3).unwrap(), 8);
        assert_eq!(
            redis::cmd("DECR").arg(k("n")).query::<i64>(&mut c).unwrap(),
            7
        );
        let err = c.incr::<_, _, i64>(k("s"), 1).unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
        assert_eq!(c.append::<_, _, i64>(k("ap"), "Hello").unwrap(), 5);
        assert_eq!(c.append::<_, _, i64>(k("ap"), " World").unwrap(), 11);
        assert_eq!(c.get::<_, String>(k("ap")).unwrap(), "Hello World");
        let _: () = c.mset(&[(k("m1"), "a"), (k("m2"), "b")]).unwrap();
        assert_eq!(c.get::<_, String>(k("m2")).unwrap(), "b");
        assert!(!c
            .mset_nx::<_, _, bool>(&[(k("m2"), "x"), (k("m3"), "y")])
            .unwrap());
        assert_eq!(c.get::<_, Option<String>>(k("m3")).unwrap(), None);
        assert!(c
            .mset_nx::<_, _, bool>(&[(k("m3"), "x"), (k("m4"), "y")])
            .unwrap());
        let err: RedisResult<()> = c.set("bad key", "v");
        assert!(err.unwrap_err().to_string().contains("keys are"));
        // Server commands.
        let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert!(size >= 0);
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
        assert!(info.contains("role:master"), "{info}");
        let config: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query(&mut c)
            .unwrap();
        assert_eq!(config, vec!["appendfsync", "always"]);
        // Globs, case-insensitive, each setting once; the limits are the cluster file's.
        let config: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("MAX*")
            .arg("maxclients")
            .arg("t?meout")
            .query(&mut c)
            .unwrap();
        assert_eq!(
            config,
            vec![
                "maxmemory",
                "0",
                "maxmemory-policy",
                "noeviction",
                "maxclients",
                "10000",
                "timeout",
                "0"
            ]
        );
        let time: Vec<String> = redis::cmd("TIME").query(&mut c).unwrap();
        assert_eq!(time.len(), 2);
    }

    // One store behind both protocols.
    let mut c = connect(&cluster.nodes[leader].resp_addr);
    let _: () = c.set("shared", "from-redis").unwrap();
    let mut cs733 = Client::new(cluster.addrs());
    let reply = cs733.call_retry(b"get shared\r\n", LEADER_TIMEOUT);
    assert_eq!(show(&reply), show(b"VALUE 10\r\nfrom-redis\r\n"));
    cs733.set_retry("from-cs733", b"hello", LEADER_TIMEOUT);
    assert_eq!(c.get::<_, String>("from-cs733").unwrap(), "hello");

    // Pipelining keeps order.
    let mut pipe = redis::pipe();
    for n in 0..100 {
        pipe.set(format!("p{n}"), n).ignore();
    }
    pipe.get("p99");
    let (last,): (i64,) = pipe.query(&mut c).unwrap();
    assert_eq!(last, 99);

    // RESP3 after HELLO 3.
    let hello: Value = redis::cmd("HELLO").arg(3).query(&mut c).unwrap();
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    cluster.terminate(leader);
}

#[test]
fn writes_through_a_follower_survive_a_leader_kill() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let follower = (leader + 1) % 3;
    let addr = cluster.nodes[follower].resp_addr.clone();
    let mut acked = Vec::new();
    let mut conn = connect(&addr);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut killed_at = None;
    let mut n = 0;
    while Instant::now() < deadline {
        if killed_at.is_none() && acked.len() >= 200 {
            cluster.kill(leader);
            killed_at = Some(acked.len());
        }
        n += 1;
        let key = format!("k{n}");
        match conn.set::<_, _, ()>(&key, n) {
            Ok(()) => acked.push((key, n)),
            // The relay ends with the old leader: reconnect, through the same follower.
            Err(_) => conn = connect(&addr),
        }
    }
    let killed_at = killed_at.unwrap_or_else(|| panic!("only {} writes in time", acked.len()));
    let after = acked.len() - killed_at;
    assert!(after > 20, "writes continued after the kill: {after}");
    let mut conn = connect(&addr);
    for (key, n) in &acked {
        assert_eq!(conn.get::<_, i64>(key).unwrap(), *n, "{key} lost");
    }
}

#[test]
fn transactions_key_walks_and_the_newer_commands_through_every_node() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    for i in [leader, (leader + 1) % 3, (leader + 2) % 3] {
        let mut c = connect(&cluster.nodes[i].resp_addr);
        let mut other = connect(&cluster.nodes[(i + 1) % 3].resp_addr);
        let k = |name: &str| format!("t{i}:{name}");

        // MULTI/EXEC as the redis crate sends it: one atomic pipeline.
        let (a, n, got): (String, i64, String) = redis::pipe()
            .atomic()
            .set(k("a"), "1")
            .incr(k("n"), 5)
            .get(k("a"))
            .query(&mut c)
            .unwrap();
        assert_eq!((a.as_str(), n, got.as_str()), ("OK", 5, "1"));

        // WATCH: a write by another client between WATCH and EXEC aborts the transaction.
        let _: () = redis::cmd("WATCH").arg(k("a")).query(&mut c).unwrap();
        let _: () = other.set(k("a"), "changed").unwrap();
        let aborted: Option<(String,)> = redis::pipe()
            .atomic()
            .set(k("a"), "mine")
            .query(&mut c)
            .unwrap();
        assert_eq!(aborted, None);
        assert_eq!(c.get::<_, String>(k("a")).unwrap(), "changed");
        // ... and without one, it commits.
        let _: () = redis::cmd("WATCH").arg(k("a")).query(&mut c).unwrap();
        let done: Option<(String,)> = redis::pipe()
            .atomic()
            .set(k("a"), "mine")
            .query(&mut c)
            .unwrap();
        assert_eq!(done, Some(("OK".to_string(),)));

        // RENAME, INCRBYFLOAT, GETEX, SETRANGE.
        let _: () = c.rename(k("a"), k("b")).unwrap();
        assert_eq!(c.get::<_, String>(k("b")).unwrap(), "mine");
        assert!(!c.exists::<_, bool>(k("a")).unwrap());
        let f: f64 = c.incr(k("f"), 2.5).unwrap();
        assert_eq!(f, 2.5);
        let v: String = redis::cmd("GETEX")
            .arg(k("b"))
            .arg("EX")
            .arg(100)
            .query(&mut c)
            .unwrap();
        assert_eq!(v, "mine");
        assert!(c.ttl::<_, i64>(k("b")).unwrap() > 90);
        let len: i64 = c.setrange(k("b"), 2, "ne!").unwrap();
        assert_eq!(len, 5);
        assert_eq!(c.get::<_, String>(k("b")).unwrap(), "mine!");
    }

    // Walks over the key space: SCAN returns every key, KEYS filters, RANDOMKEY finds one.
    let mut c = connect(&cluster.nodes[(leader + 1) % 3].resp_addr);
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let mut pipe = redis::pipe();
    for n in 0..3000 {
        pipe.set(format!("walk:{n}"), n).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let scanned: std::collections::HashSet<String> =
        c.scan_match::<_, String>("walk:*").unwrap().collect();
    assert_eq!(scanned.len(), 3000);
    let mut tens: Vec<String> = c.keys("walk:1?").unwrap();
    tens.sort();
    assert_eq!(tens.len(), 10);
    assert_eq!(tens[0], "walk:10");
    let random: String = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(random.starts_with("walk:"), "{random}");
    // FLUSHDB empties every node.
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let left: Vec<String> = c.keys("*").unwrap();
    assert!(left.is_empty(), "{left:?}");
    let nothing: Option<String> = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert_eq!(nothing, None);
    cluster.terminate(leader);
}

/// A transaction's queued commands count against the connection's byte budget: past it, the command
/// is refused and EXEC discards the transaction; the connection then works as before (its permits
/// were given back, nothing waits forever).
#[test]
fn a_transaction_larger_than_the_connection_budget_is_refused_and_nothing_hangs() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let mut c = connect(&cluster.nodes[leader].resp_addr);
    let value = vec![b'v'; 900_000];
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let mut refused = 0;
    for n in 0..6 {
        let queued: RedisResult<String> = redis::cmd("SET")
            .arg(format!("big{n}"))
            .arg(&value[..])
            .query(&mut c);
        match queued {
            Ok(status) => assert_eq!(status, "QUEUED"),
            Err(err) => {
                assert!(
                    err.to_string().contains("max_request_bytes_in_flight"),
                    "{err}"
                );
                refused += 1;
            }
        }
    }
    assert!(refused >= 1, "4 MiB of budget cannot queue 5.4 MB");
    let exec: RedisResult<Value> = redis::cmd("EXEC").query(&mut c);
    let exec_err = exec.unwrap_err().to_string();
    // The client names the EXECABORT code as its own error kind.
    assert!(exec_err.contains("Transaction discarded"), "{exec_err}");
    assert!(!c.exists::<_, bool>("big0").unwrap());
    let (a,): (String,) = redis::pipe()
        .atomic()
        .set("small", "1")
        .query(&mut c)
        .unwrap();
    assert_eq!(a, "OK");
    cluster.terminate(leader);
}

/// TTL counts down with no other write in between, as in Redis. The store's clock moves only with
/// the log, so before this a TTL read at the clock of the last write: `SET k v EX 100`, two seconds
/// of quiet, and TTL still said 100.
#[test]
fn ttl_counts_down_without_writes() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let mut c = connect(&cluster.nodes[leader].resp_addr);
    let _: () = redis::cmd("SET")
        .arg("countdown")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    std::thread::sleep(Duration::from_millis(2_200));
    let ttl: i64 = c.ttl("countdown").unwrap();
    let pttl: i64 = c.pttl("countdown").unwrap();
    assert!((1..=98).contains(&ttl), "TTL {ttl} after 2.2 s of 100 s");
    assert!(
        (1..=97_800).contains(&pttl),
        "PTTL {pttl} after 2.2 s of 100 s"
    );
}

/// RESET returns the connection to RESP2 and forgets its name, as Redis does (seen against
/// redis-server 7.0: after `HELLO 3` and `RESET`, a missing key is `$-1` again, not `_`).
#[test]
fn reset_returns_to_resp2_and_forgets_the_name() {
    use std::io::{Read, Write};
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let _ = connect(&cluster.nodes[leader].resp_addr);
    let mut conn = std::net::TcpStream::connect(&cluster.nodes[leader].resp_addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(
        b"HELLO 3 SETNAME before\r\nGET missing:reset\r\nRESET\r\nGET missing:reset\r\n\
          CLIENT GETNAME\r\nECHO end\r\n",
    )
    .unwrap();
    let mut replies = Vec::new();
    let mut buf = [0u8; 4096];
    while !replies.ends_with(b"$3\r\nend\r\n") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", show(&replies));
        replies.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&replies);
    let after_hello = &text[text.find("modules").unwrap()..];
    assert!(
        after_hello.ends_with("*0\r\n_\r\n+RESET\r\n$-1\r\n$-1\r\n$3\r\nend\r\n"),
        "{after_hello:?}"
    );
}

/// PSETEX is exact to the millisecond, as `SET ... PX` (it used to round up to whole seconds: 1500 ms
/// lasted 2 s).
#[test]
fn psetex_keeps_its_milliseconds() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let mut c = connect(&cluster.nodes[leader].resp_addr);
    let _: () = redis::cmd("PSETEX")
        .arg("ms")
        .arg(1_500)
        .arg("v")
        .query(&mut c)
        .unwrap();
    let pttl: i64 = c.pttl("ms").unwrap();
    assert!((1..=1_500).contains(&pttl), "PTTL {pttl} after PSETEX 1500");
}

/// The fields `redis-cli --stat` and exporters read from INFO are there and count: clients,
/// commands, connections, memory, and keys with an expiry in the keyspace line; several sections
/// may be asked for at once, and an unknown one is an empty string, as in Redis.
#[test]
fn info_has_what_monitoring_tools_read() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let mut c = connect(&cluster.nodes[leader].resp_addr);
    let _: () = c.set_ex("expiring", "v", 1000).unwrap();
    let _: () = c.set("lasting", "v").unwrap();
    let field = |info: &str, name: &str| -> i64 {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {info}"))
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {info}"))
    };
    let info = |c: &mut Connection, sections: &[&str]| -> String {
        let mut cmd = redis::cmd("INFO");
        for section in sections {
            cmd.arg(*section);
        }
        cmd.query(c).unwrap()
    };
    let stats = info(&mut c, &["clients", "STATS", "memory"]);
    assert!(field(&stats, "connected_clients") >= 1, "{stats}");
    assert_eq!(field(&stats, "blocked_clients"), 0);
    assert!(field(&stats, "total_connections_received") >= 1);
    let commands = field(&stats, "total_commands_processed");
    assert!(commands >= 3, "{stats}");
    assert!(field(&stats, "used_memory") > 0, "{stats}");
    assert!(!stats.contains("# Server"), "{stats}");
    let again = info(&mut c, &["stats"]);
    assert!(field(&again, "total_commands_processed") > commands);
    // The status INFO reads is refreshed every 100 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keyspace = info(&mut c, &["keyspace"]);
        if keyspace.contains("db0:keys=2,expires=1,") {
            break;
        }
        assert!(Instant::now() < deadline, "{keyspace}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(info(&mut c, &["nosuch"]), "");
    let everything = info(&mut c, &[]);
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
    ] {
        assert!(everything.contains(section), "{everything}");
    }
    assert!(everything.contains("# Replication\r\nrole:master\r\n"));
}

/// WAIT counts the other nodes holding the connection's writes: a majority's worth at once (every
/// reply waits for one), both followers once they have caught up, and after a follower is killed,
/// what is left once the timeout passes. Its arguments are checked as Redis checks them, and it
/// cannot be queued in MULTI.
#[test]
fn wait_counts_the_nodes_holding_the_writes() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let mut c = connect(&cluster.nodes[leader].resp_addr);
    let wait = |c: &mut Connection, replicas: i64, timeout_ms: i64| -> i64 {
        redis::cmd("WAIT")
            .arg(replicas)
            .arg(timeout_ms)
            .query(c)
            .unwrap()
    };
    let _: () = c.set("k", "v1").unwrap();
    let started = Instant::now();
    assert_eq!(
        wait(&mut c, 1, 0),
        1,
        "a majority of three holds every answered write"
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    let _: () = c.set("k", "v2").unwrap();
    assert_eq!(wait(&mut c, 2, 10_000), 2);
    // More nodes than there are: the timeout decides, and the answer is what holds.
    let started = Instant::now();
    assert_eq!(wait(&mut c, 5, 300), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let _: () = c.set("k", "v3").unwrap();
    assert_eq!(wait(&mut c, 2, 500), 1);

    let err = |c: &mut Connection, args: &[&str]| -> String {
        let mut cmd = redis::cmd("WAIT");
        for arg in args {
            cmd.arg(*arg);
        }
        cmd.query::<Value>(c).unwrap_err().to_string()
    };
    assert!(err(&mut c, &["x", "0"]).contains("value is not an integer"));
    assert!(err(&mut c, &["1", "-1"]).contains("timeout is negative"));
    assert!(err(&mut c, &["1", "x"]).contains("timeout is not an integer"));
    assert!(err(&mut c, &["1"]).contains("wrong number of arguments"));
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    assert!(err(&mut c, &["1", "0"]).contains("inside MULTI"));
    assert!(redis::cmd("EXEC").query::<Value>(&mut c).is_err());
}

/// No WAIT blocks longer than the request timeout (a client asking for more nodes than exist gets
/// the count then), and a connection waiting for a WAIT's answer is not idle.
#[test]
fn wait_is_bounded_and_not_idle() {
    let tunables =
        format!("{FAST_TUNABLES}client_request_timeout_s = 2\nclient_idle_timeout_s = 1\n");
    let mut cluster = Cluster::start(3, &tunables);
    let leader = cluster.wait_leader();
    let mut c = connect(&cluster.nodes[leader].resp_addr);
    let _: () = c.set("k", "v").unwrap();
    let started = Instant::now();
    let count: i64 = redis::cmd("WAIT").arg(5).arg(0).query(&mut c).unwrap();
    assert_eq!(count, 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // The WAIT outlasted the idle timeout and the connection still serves.
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
}

/// A transaction whose queued commands hold most of a small node budget still completes when its
/// next command arrives in pieces: the bytes of a command inside MULTI take no more budget (they did,
/// and waited for ever for budget only EXEC could release).
#[test]
fn a_transaction_fills_a_small_node_budget_without_hanging() {
    let tunables = format!(
        "{FAST_TUNABLES}max_buffered_request_bytes = {}\nmax_value_size = {}\n",
        4 << 20,
        2 << 20
    );
    let mut cluster = Cluster::start(3, &tunables);
    let leader = cluster.wait_leader();
    let mut c = connect(&cluster.nodes[leader].resp_addr);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // 3 MiB queued, then a value that fits the connection's 4 MiB but not with 16 KiB to spare.
    let sizes = [3 << 19, 3 << 19, (1 << 20) - (8 << 10)];
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    for (n, size) in sizes.iter().enumerate() {
        let queued: String = redis::cmd("SET")
            .arg(format!("t{n}"))
            .arg(vec![b'v'; *size])
            .query(&mut c)
            .unwrap();
        assert_eq!(queued, "QUEUED");
    }
    let replies: Vec<String> = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(replies, vec!["OK", "OK", "OK"]);
    assert_eq!(c.strlen::<_, usize>("t2").unwrap(), sizes[2]);
}
