//! Multi-node end-to-end tests with the Redis engine: a real `redis-server` (Debian package) on
//! a free loopback port, started and stopped by PID here, and two or three real Rotor nodes
//! sharing it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    api_publish as publish, base_config, connect_as as connect, eventually, merge, next_pub,
    RedisServer as Redis, Server,
};
use serde_json::{json, Value};

/// How often the polling checks below try again.
const POLL: Duration = Duration::from_millis(200);

fn node(redis: &Redis, name: &str) -> Server {
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({
            "node": {"name": name},
            "engine": {"type": "redis", "redis": {"address": format!("redis://127.0.0.1:{}", redis.port)}},
            "channel": {"namespaces": [
                {"name": "chat", "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true,
                 "presence": true, "join_leave": true, "force_push_join_leave": true},
                {"name": "hist", "allow_subscribe_for_client": true, "history_size": 100,
                 "history_ttl": "300s", "force_recovery": true}
            ]}
        }),
    );
    Server::start(cfg)
}

#[test]
fn a_publish_on_one_node_reaches_subscribers_on_every_node() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    let mut on_a = connect(&a, "u1");
    let mut on_b = connect(&b, "u2");
    let mut on_c = connect(&c, "u3");
    for c in [&mut on_a, &mut on_b, &mut on_c] {
        let r = c.subscribe("chat:room");
        assert!(r["subscribe"].is_object(), "{r}");
    }
    for i in 0..5 {
        let r = publish(&b, "chat:room", json!({"n": i}));
        assert!(r.get("error").is_none(), "{r}");
    }
    for c in [&mut on_a, &mut on_b, &mut on_c] {
        for i in 0..5 {
            assert_eq!(next_pub(c, "chat:room")["data"], json!({"n": i}));
        }
    }
}

#[test]
fn history_is_shared_and_a_client_recovers_on_another_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut first = connect(&a, "u1");
    let sub = first.subscribe("hist:feed");
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    let p1 = publish(&a, "hist:feed", json!({"n": 1}));
    assert_eq!(p1["result"]["offset"], 1, "{p1}");
    assert_eq!(p1["result"]["epoch"], epoch.as_str());
    assert_eq!(next_pub(&mut first, "hist:feed")["offset"], 1);
    drop(first);
    // Missed while away, published through the other node.
    for n in 2..=4 {
        let p = publish(&b, "hist:feed", json!({"n": n}));
        assert_eq!(p["result"]["offset"], n);
    }
    let h = b.http().api("history", json!({"channel": "hist:feed", "limit": -1}));
    let h = h.json();
    assert_eq!(h["result"]["epoch"], epoch.as_str(), "{h}");
    assert_eq!(h["result"]["offset"], 4);
    let offsets: Vec<u64> = h["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4]);

    let mut back = connect(&b, "u1");
    let id = back.command(json!({"subscribe": {"channel": "hist:feed", "recover": true, "offset": 1, "epoch": epoch}}));
    let r = back.next_json();
    assert_eq!(r["id"], id);
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let recovered: Vec<Value> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].clone())
        .collect();
    assert_eq!(recovered, [json!(2), json!(3), json!(4)]);
    publish(&a, "hist:feed", json!({"n": 5}));
    assert_eq!(next_pub(&mut back, "hist:feed")["offset"], 5);
}

#[test]
fn keys_follow_centrifugo_layout() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    publish(&a, "hist:layout", json!({"x": 1}));
    publish(&a, "hist:layout", json!({"x": 2}));
    let meta = redis.command(&["HGETALL", "centrifugo.stream.meta.hist:layout"]);
    assert!(meta.contains("\r\ne\r\n") && meta.contains("\r\ns\r\n$1\r\n2\r\n"), "{meta}");
    let entries = redis.command(&["XRANGE", "centrifugo.stream.hist:layout", "-", "+"]);
    assert!(entries.contains("1-0") && entries.contains("2-0"), "{entries}");
    assert!(entries.contains("\r\nd\r\n") && entries.contains("{\"x\":2}"), "{entries}");
}

#[test]
fn presence_join_leave_and_info_span_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut watcher = connect(&b, "watcher");
    watcher.subscribe("chat:lobby");
    let mut joiner = connect(&a, "alice");
    joiner.subscribe("chat:lobby");
    let join = loop {
        let m = watcher.next_json();
        if m["push"]["join"].is_object() && m["push"]["join"]["info"]["user"] == "alice" {
            break m;
        }
    };
    assert_eq!(join["push"]["channel"], "chat:lobby");

    let p = b.http().api("presence", json!({"channel": "chat:lobby"})).json();
    let users: std::collections::BTreeSet<String> = p["result"]["presence"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(users, ["alice", "watcher"].map(String::from).into(), "{p}");

    drop(joiner);
    loop {
        let m = watcher.next_json();
        if m["push"]["leave"].is_object() && m["push"]["leave"]["info"]["user"] == "alice" {
            break;
        }
    }
    let p = a.http().api("presence", json!({"channel": "chat:lobby"})).json();
    assert_eq!(p["result"]["presence"].as_object().unwrap().len(), 1, "{p}");

    // Nodes announce themselves every 3 s.
    let info = eventually(Duration::from_secs(10), POLL, || {
        let info = a.http().api("info", json!({})).json();
        let listed = info["result"]["nodes"].as_array().map_or(0, Vec::len);
        // b's entry shows its watcher once an announcement made after the connect arrived.
        if listed == 2 && info["result"]["nodes"][1]["num_clients"] == 1 {
            Ok(info)
        } else {
            Err(format!("info never listed both nodes: {info}"))
        }
    });
    let names: Vec<&str> = info["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "{info}");
    assert_eq!(info["result"]["nodes"][0]["num_clients"], 0, "{info}");
}

#[test]
fn publishing_fails_fast_while_redis_is_down_and_works_once_it_is_back() {
    let mut redis = Redis::start();
    let a = node(&redis, "a");
    let mut c = connect(&a, "u1");
    let epoch = c.subscribe("hist:r")["subscribe"]["epoch"].as_str().unwrap().to_owned();
    publish(&a, "hist:r", json!({"n": 1}));
    assert_eq!(next_pub(&mut c, "hist:r")["offset"], 1);

    redis.kill();
    let started = Instant::now();
    let r = publish(&a, "hist:r", json!({"n": 2}));
    assert_eq!(r["error"]["code"], 100, "{r}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    redis.spawn();
    let accepted = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let r = publish(&a, "hist:r", json!({"n": 2}));
        r.get("error")
            .is_none()
            .then(|| r.clone())
            .ok_or(format!("publishing never recovered: {r}"))
    });
    // The append-only file kept the stream: same epoch, next offset, nothing lost.
    assert_eq!(accepted["result"]["epoch"], epoch.as_str(), "{accepted}");
    assert_eq!(accepted["result"]["offset"], 2);
    assert_eq!(next_pub(&mut c, "hist:r")["offset"], 2);
}

#[test]
fn a_client_of_a_killed_node_recovers_exactly_the_missed_publications_on_another() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut c = connect(&a, "u1");
    let epoch = c.subscribe("hist:live")["subscribe"]["epoch"].as_str().unwrap().to_owned();
    let mut last = 0;
    for n in 1..=3 {
        publish(&b, "hist:live", json!({"n": n}));
        last = next_pub(&mut c, "hist:live")["offset"].as_u64().unwrap();
    }
    assert_eq!(last, 3);
    drop(a); // SIGKILL: no goodbye, no leave, nothing flushed.
    drop(c);
    for n in 4..=6 {
        publish(&b, "hist:live", json!({"n": n}));
    }
    let mut again = connect(&b, "u1");
    let id = again.command(json!({"subscribe": {"channel": "hist:live", "recover": true, "offset": last, "epoch": epoch}}));
    let r = again.next_json();
    assert_eq!(r["id"], id);
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let got: Vec<u64> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [4, 5, 6]);
    publish(&b, "hist:live", json!({"n": 7}));
    assert_eq!(next_pub(&mut again, "hist:live")["offset"], 7);
}

#[test]
fn api_operations_on_a_user_reach_the_node_it_is_connected_to() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut c = connect(&a, "bob");
    let r = b.http().api("subscribe", json!({"user": "bob", "channel": "chat:direct"}));
    assert_eq!(r.status, 200);
    let push = c.next_json();
    assert_eq!(push["push"]["channel"], "chat:direct", "{push}");
    assert!(push["push"]["subscribe"].is_object(), "{push}");
    publish(&b, "chat:direct", json!({"hi": 1}));
    assert_eq!(next_pub(&mut c, "chat:direct")["data"], json!({"hi": 1}));

    b.http().api("unsubscribe", json!({"user": "bob", "channel": "chat:direct"}));
    let push = c.next_json();
    assert_eq!(push["push"]["unsubscribe"]["code"], 2000, "{push}");

    b.http()
        .api("disconnect", json!({"user": "bob", "disconnect": {"code": 4009, "reason": "moved"}}));
    assert_eq!(c.expect_close(), (4009, "moved".to_owned()));
}

#[test]
fn several_redis_servers_split_channels_the_same_way_on_every_node() {
    let (r1, r2) = (Redis::start(), Redis::start());
    let start = |name: &str| {
        let mut cfg = base_config();
        let addresses = [r1.port, r2.port].map(|p| format!("redis://127.0.0.1:{p}"));
        merge(
            &mut cfg,
            json!({
                "node": {"name": name},
                "engine": {"type": "redis", "redis": {"address": addresses}},
                "channel": {"namespaces": [{"name": "hist", "allow_subscribe_for_client": true,
                    "history_size": 10, "history_ttl": "60s"}]}
            }),
        );
        Server::start(cfg)
    };
    let (a, b) = (start("a"), start("b"));
    let channels: Vec<String> = (0..6).map(|i| format!("hist:s{i}")).collect();
    let mut c = connect(&a, "u");
    for ch in &channels {
        c.subscribe(ch);
    }
    for ch in &channels {
        publish(&b, ch, json!({"on": ch}));
        assert_eq!(next_pub(&mut c, ch)["data"]["on"], ch.as_str());
        let home = rotor::broker::redis::server_index(ch, 2);
        let key = format!("centrifugo.stream.{ch}");
        let (kept, other) = if home == 0 { (&r1, &r2) } else { (&r2, &r1) };
        assert_eq!(kept.command(&["EXISTS", &key]), ":1\r\n", "{ch} belongs on server {home}");
        assert_eq!(other.command(&["EXISTS", &key]), ":0\r\n");
    }
    let used: std::collections::BTreeSet<usize> =
        channels.iter().map(|c| rotor::broker::redis::server_index(c, 2)).collect();
    assert_eq!(used.len(), 2, "the test channels should cover both servers");
}

/// `calls=` of one command in `INFO commandstats`.
fn calls(redis: &Redis, command: &str) -> u64 {
    let stats = redis.command(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn a_publish_is_one_script_call_and_a_positioned_subscribe_two_commands() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let mut c = connect(&a, "u");
    redis.command(&["CONFIG", "RESETSTAT"]);
    c.subscribe("hist:rt");
    assert_eq!((calls(&redis, "subscribe"), calls(&redis, "evalsha")), (1, 1));
    redis.command(&["CONFIG", "RESETSTAT"]);
    for n in 0..10 {
        publish(&a, "hist:rt", json!({"n": n}));
        next_pub(&mut c, "hist:rt");
    }
    assert_eq!(calls(&redis, "evalsha"), 10, "history append and PUBLISH in one script");
    assert_eq!(calls(&redis, "xadd"), 10);
}

#[test]
fn idle_links_stay_healthy_across_many_io_timeout_checks() {
    let redis = Redis::start();
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({"engine": {"type": "redis", "redis": {
            "address": format!("127.0.0.1:{}", redis.port), "io_timeout": "200ms"}}}),
    );
    let a = Server::start(cfg);
    let mut c = connect(&a, "u");
    c.subscribe("chat:quiet");
    // Dozens of stall checks pass while nothing is outstanding; reads they interrupt must not
    // corrupt what the links read next.
    std::thread::sleep(Duration::from_millis(1500));
    for n in 0..3 {
        let r = publish(&a, "chat:quiet", json!({"n": n}));
        assert!(r.get("error").is_none(), "{r}");
        assert_eq!(next_pub(&mut c, "chat:quiet")["data"]["n"], n);
    }
}

#[test]
fn a_sentinel_failover_is_followed_and_history_survives_it() {
    let master = Redis::start();
    let replica = Redis::start_with(|_, dir| {
        let dir = dir.display().to_string();
        let of = master.port.to_string();
        ["--replicaof", "127.0.0.1", &of, "--save", "", "--dir", &dir].map(String::from).to_vec()
    });
    let sentinel = Redis::start_with(|port, dir| {
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor main 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds main 400\nsentinel failover-timeout main 2000\n",
            dir.display(),
            master.port
        );
        std::fs::write(&conf, text).unwrap();
        vec![conf.display().to_string(), "--sentinel".to_owned()]
    });
    // The Sentinel must know the replica before the master goes.
    eventually(Duration::from_secs(20), Duration::from_millis(100), || {
        let replicas = sentinel.command(&["SENTINEL", "replicas", "main"]);
        let seen = replicas.contains(&replica.port.to_string());
        seen.then_some(()).ok_or("sentinel never saw the replica".to_owned())
    });
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({
            "engine": {"type": "redis", "redis": {
                "sentinel_address": [format!("127.0.0.1:{}", sentinel.port)],
                "sentinel_master_name": "main", "io_timeout": "1s"}},
            "channel": {"namespaces": [{"name": "hist", "allow_subscribe_for_client": true,
                "history_size": 10, "history_ttl": "60s", "force_recovery": true}]}
        }),
    );
    let a = Server::start(cfg);
    let mut c = connect(&a, "u");
    let sub = c.subscribe("hist:fo");
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap_or_else(|| panic!("{sub}")).to_owned();
    let p = publish(&a, "hist:fo", json!({"n": 1}));
    assert_eq!(p["result"]["offset"], 1, "{p}");
    assert_eq!(next_pub(&mut c, "hist:fo")["offset"], 1);
    // Replicated before the master dies, so the failover loses nothing.
    assert_eq!(master.command(&["WAIT", "1", "5000"]), ":1\r\n");

    let mut master = master;
    master.kill();
    let accepted = eventually(Duration::from_secs(30), POLL, || {
        let r = publish(&a, "hist:fo", json!({"n": 2}));
        if r.get("error").is_none() {
            return Ok(r);
        }
        assert_eq!(r["error"]["code"], 100, "{r}");
        Err(format!("no new master was followed: {r}"))
    });
    assert_eq!(accepted["result"]["epoch"], epoch.as_str(), "{accepted}");
    assert_eq!(accepted["result"]["offset"], 2);
    assert!(replica.command(&["ROLE"]).contains("master"), "the replica was promoted");
    assert_eq!(next_pub(&mut c, "hist:fo")["offset"], 2);
}

#[test]
fn a_redis_cluster_of_three_masters_keeps_each_channel_in_one_slot() {
    cluster_round_trip(false, |nodes| json!({"cluster_address": [nodes[1].clone()]}));
}

#[test]
fn sharded_pubsub_keeps_channel_messages_on_their_slots_master() {
    cluster_round_trip(true, |nodes| json!({"cluster_address": [nodes[1].clone()]}));
}

/// A plain address that is a cluster node is used as a cluster seed (upstream's client detects
/// it), sharded PUB/SUB included.
#[test]
fn a_plain_address_of_a_cluster_node_is_used_as_a_cluster() {
    cluster_round_trip(true, |nodes| json!({"address": format!("redis://{}", nodes[2])}));
}

/// Upstream's cluster URL: `redis+cluster://seed?addr=seed2`.
#[test]
fn a_redis_cluster_url_names_the_seeds() {
    cluster_round_trip(
        false,
        |nodes| json!({"address": format!("redis+cluster://{}?addr={}", nodes[0], nodes[1])}),
    );
}

/// Two nodes on a 3-master cluster, reached as `redis` (the Redis object, from the nodes'
/// addresses) says: publications cross nodes, each channel's keys (and, with sharded PUB/SUB,
/// its subscription) live on the master of its slot.
fn cluster_round_trip(sharded: bool, redis: impl Fn(&[String]) -> Value) {
    let masters: Vec<Redis> = (0..3)
        .map(|_| {
            Redis::start_with(|_, dir| {
                let conf = dir.join("nodes.conf").display().to_string();
                let dir = dir.display().to_string();
                ["--cluster-enabled", "yes", "--cluster-config-file", &conf, "--save", ""]
                    .into_iter()
                    .chain(["--dir", &dir])
                    .map(String::from)
                    .collect()
            })
        })
        .collect();
    let nodes: Vec<String> = masters.iter().map(|m| format!("127.0.0.1:{}", m.port)).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .expect("redis-cli must be installed (Debian package redis-tools)");
    assert!(created.success());
    eventually(Duration::from_secs(20), Duration::from_millis(100), || {
        let ok =
            masters.iter().all(|m| m.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
        ok.then_some(()).ok_or("the cluster never became ok".to_owned())
    });
    let start = |name: &str| {
        let mut cfg = base_config();
        let mut object = redis(&nodes);
        merge(&mut object, json!({"sharded_pubsub": sharded}));
        merge(
            &mut cfg,
            json!({
                "node": {"name": name},
                "engine": {"type": "redis", "redis": object},
                "channel": {"namespaces": [{"name": "hist", "allow_subscribe_for_client": true,
                    "history_size": 10, "history_ttl": "60s", "force_recovery": true}]}
            }),
        );
        Server::start(cfg)
    };
    let (a, b) = (start("a"), start("b"));
    let channels: Vec<String> = (0..8).map(|i| format!("hist:c{i}")).collect();
    let mut c = connect(&a, "u");
    for ch in &channels {
        c.subscribe(ch);
    }
    let mut holders = std::collections::BTreeSet::new();
    for ch in &channels {
        let r = publish(&b, ch, json!({"on": ch}));
        assert_eq!(r["result"]["offset"], 1, "{r}");
        let p = next_pub(&mut c, ch);
        assert_eq!((p["offset"].as_u64(), p["data"]["on"].as_str()), (Some(1), Some(ch.as_str())));
        // Every key of the channel carries the {channel} hash tag and lives on one master.
        let key = format!("centrifugo.stream.{{{ch}}}");
        let meta = format!("centrifugo.stream.meta.{{{ch}}}");
        let with: Vec<usize> =
            (0..3).filter(|&i| masters[i].command(&["EXISTS", &key, &meta]) == ":2\r\n").collect();
        assert_eq!(with.len(), 1, "{ch}: keys on masters {with:?}");
        let subject = format!("centrifugo.client.{{{ch}}}");
        let shard_subs = masters[with[0]].command(&["PUBSUB", "SHARDNUMSUB", &subject]);
        let plain_subs = masters[with[0]].command(&["PUBSUB", "NUMSUB", &subject]);
        // Both nodes listen: node a for its subscriber, node b not at all (no subscribers).
        let (sharded_n, plain_n) =
            if sharded { (":1\r\n", ":0\r\n") } else { (":0\r\n", ":1\r\n") };
        assert!(shard_subs.ends_with(sharded_n), "{ch}: SHARDNUMSUB {shard_subs:?}");
        assert!(plain_subs.ends_with(plain_n), "{ch}: NUMSUB {plain_subs:?}");
        holders.extend(with);
    }
    assert!(holders.len() >= 2, "8 channels should spread over the masters: {holders:?}");
    let h = a.http().api("history", json!({"channel": channels[3], "limit": -1})).json();
    assert_eq!(h["result"]["publications"].as_array().map(Vec::len), Some(1), "{h}");
}

/// Each shard reads the cluster's slots as it starts; a seed that is no cluster must stop the
/// whole server, with the reason, instead of leaving it up without a slot map.
#[test]
fn a_cluster_seed_that_is_not_a_cluster_stops_the_start() {
    let redis = Redis::start();
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({"engine": {"type": "redis", "redis": {
            "cluster_address": [format!("127.0.0.1:{}", redis.port)]}}}),
    );
    let path =
        std::env::temp_dir().join(format!("rotor-test-{}-not-a-cluster.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    // Killed and reaped however the test ends: a server that did start must not outlive it.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_rotor"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rotor"),
    );
    let status = eventually(Duration::from_secs(20), Duration::from_millis(50), || {
        child.0.try_wait().unwrap().ok_or("rotor started on a seed that is no cluster".to_owned())
    });
    let _ = std::fs::remove_file(&path);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("engine.redis.cluster_address: cannot read the cluster's slots (")
            && stderr.contains("not a cluster"),
        "{stderr}"
    );
}

#[test]
fn api_channels_counts_subscribers_on_every_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut on_a = connect(&a, "u1");
    on_a.subscribe("x");
    let mut on_b = connect(&b, "u2");
    on_b.subscribe("x");
    on_b.subscribe("y");
    // Channels outside the join/leave namespace, so no push races the subscribe replies.
    // Surveys ask the nodes that announced themselves (every 3 s).
    eventually(Duration::from_secs(10), POLL, || {
        let r = a.http().api("channels", json!({})).json();
        let want = json!({"x": {"num_clients": 2}, "y": {"num_clients": 1}});
        let covered = r["result"]["channels"] == want;
        covered.then_some(()).ok_or(format!("channels never covered both nodes: {r}"))
    });
    let r = b.http().api("channels", json!({"pattern": "y"})).json();
    assert_eq!(r["result"]["channels"], json!({"y": {"num_clients": 1}}), "{r}");
}

#[test]
fn a_redis_restart_mid_stream_loses_nothing_accepted_for_a_recovering_client() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut c = connect(&a, "u");
    let sub = c.subscribe("hist:stream");
    let epoch = sub["subscribe"]["epoch"].as_str().unwrap().to_owned();
    let mut accepted = std::collections::BTreeSet::new();
    let mut received = std::collections::BTreeSet::new();
    // 60 publishes through node b, Redis restarted after the 20th; failures are simply not
    // accepted (the backend would retry them).
    for n in 0..60 {
        if n == 20 {
            redis.kill();
            redis.spawn();
        }
        let r = publish(&b, "hist:stream", json!({"n": n}));
        if let Some(offset) = r["result"]["offset"].as_u64() {
            assert_eq!(r["result"]["epoch"], epoch.as_str(), "{r}");
            accepted.insert(offset);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(accepted.len() >= 40, "publishing never came back: {accepted:?}");
    // The client takes what arrives live; told it missed something (insufficient state), it
    // resubscribes from its last offset, as the SDKs do.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received != accepted {
        assert!(Instant::now() < deadline, "missing {:?}", accepted.difference(&received));
        c.ws.get_ref().set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let m = match c.ws.read() {
            Ok(tungstenite::Message::Text(t)) => serde_json::from_str::<Value>(t.as_str()).unwrap(),
            Ok(_) => continue,
            Err(_) => json!({"push": {"channel": "hist:stream", "unsubscribe": {"code": 0}}}),
        };
        if let Some(offset) = m["push"]["pub"]["offset"].as_u64() {
            received.insert(offset);
            last = last.max(offset);
        } else if m["push"]["unsubscribe"].is_object() || m == json!({}) {
            // Unsubscribed for insufficient state, or quiet: recover from the last offset.
            if m["push"]["unsubscribe"]["code"] != 0 {
                assert_eq!(m["push"]["unsubscribe"]["code"], 2500, "{m}");
            } else {
                c.command(json!({"unsubscribe": {"channel": "hist:stream"}}));
                let _ = c.next_json();
            }
            let id = c.command(json!({"subscribe": {"channel": "hist:stream", "recover": true,
                "offset": last, "epoch": epoch}}));
            let r = loop {
                let r = c.next_json();
                if r["id"] == id {
                    break r;
                }
            };
            assert_eq!(r["subscribe"]["recovered"], true, "{r}");
            for p in r["subscribe"]["publications"].as_array().unwrap() {
                let offset = p["offset"].as_u64().unwrap();
                received.insert(offset);
                last = last.max(offset);
            }
        }
    }
}
