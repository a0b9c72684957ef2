//! End-to-end tests of the channel features (history, recovery, presence, join/leave) and the
//! server API methods around them, against the real binary with 3 shards and round-robin
//! placement: the k-th accepted TCP connection lands on shard k mod 3.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The base config plus a namespace with every channel feature on.
fn config() -> Value {
    let mut cfg = base_config();
    let room = json!({
        "name": "room",
        "allow_subscribe_for_client": true,
        "allow_publish_for_subscriber": true,
        "presence": true,
        "join_leave": true,
        "allow_presence_for_subscriber": true,
        "allow_history_for_subscriber": true,
        "history_size": 100,
        "history_ttl": "300s",
        "force_recovery": true
    });
    cfg["channel"]["namespaces"].as_array_mut().unwrap().push(room);
    let small = json!({
        "name": "small", "allow_subscribe_for_client": true, "force_recovery": true,
        "history_size": 2, "history_ttl": "300s"
    });
    cfg["channel"]["namespaces"].as_array_mut().unwrap().push(small);
    cfg
}

fn publish(api: &mut Http, channel: &str, data: Value) -> Value {
    let r = api.api("publish", json!({"channel": channel, "data": data}));
    assert_eq!(r.status, 200);
    r.json()
}

/// A recovering subscribe command: `recover` from `offset` in `epoch`.
fn recover(c: &mut Client, channel: &str, offset: u64, epoch: &str) -> Value {
    let id = c.command(json!({"subscribe": {
        "channel": channel, "recover": true, "offset": offset, "epoch": epoch, "flag": 1
    }}));
    let reply = c.next_json();
    assert_eq!(reply["id"], id, "{reply}");
    reply
}

#[test]
fn recovery_after_reconnect_returns_exactly_the_missed_publications_across_shards() {
    let server = Server::start(config());
    let mut api = server.http(); // shard 0
    let channel = channel_homed_at("room:r", 2, 3);
    let mut c = server.ws(); // shard 1: the stream lives on shard 2
    c.handshake(&token("alice"));
    let first = c.subscribe(&channel);
    let sub = &first["subscribe"];
    assert_eq!(sub["recoverable"], true, "{first}");
    assert_eq!(sub["positioned"], true);
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    assert_eq!(sub["offset"], Value::Null, "a fresh stream has offset 0 (omitted)");
    for n in 1..=3 {
        publish(&mut api, &channel, json!({"n": n}));
    }
    for n in 1..=3 {
        assert_eq!(c.next_json()["push"]["pub"], json!({"data": {"n": n}, "offset": n}));
    }
    drop(c);
    // Offline: three more.
    for n in 4..=6 {
        publish(&mut api, &channel, json!({"n": n}));
    }
    // Placement rotates: skip shard 2 so the recovering client lands on shard 0, away from the
    // stream's home.
    let _skip = server.ws();
    let mut again = server.ws();
    again.handshake(&token("alice"));
    let reply = recover(&mut again, &channel, 3, &epoch);
    let sub = &reply["subscribe"];
    assert_eq!(sub["recovered"], true, "{reply}");
    assert_eq!(sub["was_recovering"], true);
    assert_eq!(sub["offset"], 3, "a recovered reply echoes the client's offset");
    assert_eq!(sub["epoch"], epoch.as_str());
    let offsets: Vec<u64> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![4, 5, 6]);
    assert_eq!(sub["publications"][0]["data"], json!({"n": 4}));
    // Live publications continue after the recovered ones, with no duplicate.
    publish(&mut api, &channel, json!({"n": 7}));
    assert_eq!(again.next_json()["push"]["pub"]["offset"], 7);
    again.expect_silence(Duration::from_millis(200));
}

#[test]
fn recovery_fails_on_a_wrong_epoch_or_a_too_old_offset() {
    let server = Server::start(config());
    let mut api = server.http();
    let mut c = server.ws();
    c.handshake(&token("bob"));
    let epoch = {
        let r = c.subscribe("small:s");
        r["subscribe"]["epoch"].as_str().unwrap().to_owned()
    };
    for n in 1..=5 {
        publish(&mut api, "small:s", json!({"n": n}));
        c.next_json();
    }
    c.command(json!({"unsubscribe": {"channel": "small:s"}}));
    assert_eq!(c.next_json()["unsubscribe"], json!({}));
    // History keeps 2 (offsets 4 and 5); recovering from 1 misses 2 and 3.
    let reply = recover(&mut c, "small:s", 1, &epoch);
    let sub = &reply["subscribe"];
    assert_eq!(sub["was_recovering"], true, "{reply}");
    assert_eq!(sub["recovered"], Value::Null, "not recovered (false is omitted)");
    assert_eq!(sub["offset"], 5, "not recovered: the current top");
    assert!(sub["publications"].is_null());
    c.command(json!({"unsubscribe": {"channel": "small:s"}}));
    c.next_json();
    let reply = recover(&mut c, "small:s", 5, "another");
    assert_eq!(reply["subscribe"]["recovered"], Value::Null, "{reply}");
    // With the reject-unrecovered flag (2) the answer is error 112 instead.
    c.command(json!({"unsubscribe": {"channel": "small:s"}}));
    c.next_json();
    let id = c.command(json!({"subscribe": {
        "channel": "small:s", "recover": true, "offset": 1, "epoch": epoch, "flag": 3
    }}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 112, "message": "unrecoverable position"}})
    );
    // And in sync with the top, recovery succeeds with nothing to deliver.
    let reply = recover(&mut c, "small:s", 5, &epoch);
    assert_eq!(reply["subscribe"]["recovered"], true, "{reply}");
    assert!(reply["subscribe"]["publications"].is_null());
}

#[test]
fn presence_and_join_leave_between_clients_on_different_shards() {
    let server = Server::start(config());
    let mut api = server.http(); // shard 0
    let channel = channel_homed_at("room:p", 0, 3);
    let mut a = server.ws(); // shard 1
    let mut b = server.ws(); // shard 2
    a.handshake(&token_with(json!({"sub": "alice", "info": {"name": "A"}})));
    let b_connect = b.handshake(&token("bob"));
    let b_client = b_connect["connect"]["client"].as_str().unwrap().to_owned();
    let id = a.command(json!({"subscribe": {"channel": channel, "join_leave": true}}));
    assert_eq!(a.next_json()["id"], id);
    let a_join = a.next_json();
    assert_eq!(a_join["push"]["join"]["info"]["user"], "alice", "own join: {a_join}");
    assert_eq!(a_join["push"]["join"]["info"]["conn_info"], json!({"name": "A"}));
    b.subscribe(&channel);
    let join = a.next_json();
    assert_eq!(
        join,
        json!({"push": {"channel": channel, "join": {"info": {"user": "bob", "client": b_client}}}})
    );
    // Presence seen by a client and by the API.
    let id = a.command(json!({"presence": {"channel": channel}}));
    let p = a.next_json();
    assert_eq!(p["id"], id);
    let entries = p["presence"]["presence"].as_object().unwrap();
    assert_eq!(entries.len(), 2, "{p}");
    assert_eq!(entries[&b_client], json!({"user": "bob", "client": b_client}));
    let id = b.command(json!({"presence_stats": {"channel": channel}}));
    assert_eq!(
        b.next_json(),
        json!({"id": id, "presence_stats": {"num_clients": 2, "num_users": 2}})
    );
    let stats = api.api("presence_stats", json!({"channel": channel})).json();
    assert_eq!(stats, json!({"result": {"num_clients": 2, "num_users": 2}}));
    // Bob leaves by disconnecting: alice gets the leave, presence shrinks.
    drop(b);
    let leave = a.next_json();
    assert_eq!(leave["push"]["leave"]["info"]["user"], "bob", "{leave}");
    let presence = api.api("presence", json!({"channel": channel})).json();
    let entries = presence["result"]["presence"].as_object().unwrap();
    assert_eq!(entries.len(), 1, "{presence}");
    assert!(entries.values().all(|e| e["user"] == "alice"));
}

#[test]
fn client_history_and_its_errors() {
    let server = Server::start(config());
    let mut api = server.http();
    let mut c = server.ws();
    c.handshake(&token("carol"));
    // History permission comes from being a subscriber in `room`.
    let id = c.command(json!({"history": {"channel": "room:h", "limit": 10}}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 103, "message": "permission denied"}})
    );
    c.subscribe("room:h");
    for n in 1..=4 {
        publish(&mut api, "room:h", json!({"n": n}));
        c.next_json();
    }
    let id = c.command(json!({"history": {"channel": "room:h", "limit": 2, "reverse": true}}));
    let h = c.next_json();
    assert_eq!(h["id"], id);
    let offsets: Vec<u64> = h["history"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![4, 3]);
    assert_eq!(h["history"]["offset"], 4);
    let epoch = h["history"]["epoch"].as_str().unwrap().to_owned();
    let id = c.command(json!({"history": {"channel": "room:h", "limit": 10, "since": {"offset": 2, "epoch": epoch}}}));
    let h = c.next_json();
    assert_eq!(h["id"], id);
    assert_eq!(h["history"]["publications"].as_array().unwrap().len(), 2);
    let id = c.command(json!({"history": {"channel": "room:h", "limit": 10, "since": {"offset": 2, "epoch": "xx"}}}));
    assert_eq!(c.next_json()["error"]["code"], 112, "epoch mismatch (id {id})");
    let id = c.command(json!({"history": {"channel": "room:h", "limit": 1, "reverse": true, "since": {"offset": 0, "epoch": epoch}}}));
    assert_eq!(c.next_json()["error"]["code"], 107, "reverse from offset 0 (id {id})");
    // No history in the namespace → 108; RPC without a handler → 104.
    let id = c.command(json!({"history": {"channel": "chat:x"}}));
    assert_eq!(c.next_json()["error"]["code"], 108, "id {id}");
    // RPC: without an extension or proxy the connection has no RPC handler (108, as upstream).
    let id = c.command(json!({"rpc": {"method": "anything", "data": {}}}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 108, "message": "not available"}})
    );
}

#[test]
fn rpc_with_the_ping_extension_answers_ping_and_104_for_other_methods() {
    let mut cfg = config();
    merge(&mut cfg, json!({"rpc": {"ping": {"enabled": true}}}));
    let server = Server::start(cfg);
    let mut c = server.ws();
    c.handshake(&token("pinger"));
    let id = c.command(json!({"rpc": {"method": "ping"}}));
    assert_eq!(c.next_json(), json!({"id": id, "rpc": {}}));
    let id = c.command(json!({"rpc": {"method": "other", "data": {"x": 1}}}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 104, "message": "method not found"}})
    );
}

#[test]
fn api_subscribe_unsubscribe_refresh_and_disconnect_act_on_live_connections_on_any_shard() {
    let server = Server::start(config());
    let mut api = server.http(); // shard 0
    let mut a = server.ws(); // shard 1
    let mut b = server.ws(); // shard 2
    let mut other = server.ws(); // shard 0, another user
    let a_client = a.handshake(&token("frank"))["connect"]["client"].as_str().unwrap().to_owned();
    let b_client = b.handshake(&token("frank"))["connect"]["client"].as_str().unwrap().to_owned();
    other.handshake(&token("gina"));
    // subscribe: both of frank's connections get a subscribe push, then publications.
    let r =
        api.api("subscribe", json!({"user": "frank", "channel": "room:srv", "data": {"hello": 1}}));
    assert_eq!(r.json(), json!({"result": {}}));
    for c in [&mut a, &mut b] {
        let push = c.next_json();
        assert_eq!(push["push"]["channel"], "room:srv", "{push}");
        let sub = &push["push"]["subscribe"];
        assert_eq!(sub["data"], json!({"hello": 1}));
        assert_eq!(
            (sub["recoverable"].clone(), sub["positioned"].clone()),
            (json!(true), json!(true))
        );
    }
    publish(&mut api, "room:srv", json!({"n": 1}));
    for c in [&mut a, &mut b] {
        assert_eq!(c.next_json()["push"]["pub"]["data"], json!({"n": 1}));
    }
    other.expect_silence(Duration::from_millis(200));
    // Server-side subscriptions count in presence (the namespace keeps presence).
    let stats = api.api("presence_stats", json!({"channel": "room:srv"})).json();
    assert_eq!(stats["result"], json!({"num_clients": 2, "num_users": 1}));
    // unsubscribe one client only.
    let r =
        api.api("unsubscribe", json!({"user": "frank", "client": b_client, "channel": "room:srv"}));
    assert_eq!(r.json(), json!({"result": {}}));
    assert_eq!(
        b.next_json(),
        json!({"push": {"channel": "room:srv", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}}})
    );
    publish(&mut api, "room:srv", json!({"n": 2}));
    assert_eq!(a.next_json()["push"]["pub"]["data"], json!({"n": 2}));
    b.expect_silence(Duration::from_millis(200));
    // refresh: a new expiry is pushed to the client.
    let at = now() + 600;
    let r = api.api("refresh", json!({"user": "frank", "client": a_client, "expire_at": at}));
    assert_eq!(r.json(), json!({"result": {}}));
    let push = a.next_json();
    assert_eq!(push["push"]["refresh"]["expires"], true, "{push}");
    let ttl = push["push"]["refresh"]["ttl"].as_u64().unwrap();
    assert!((595..=600).contains(&ttl), "ttl {ttl}");
    // disconnect with a custom code, sparing a whitelisted client.
    let r = api.api(
        "disconnect",
        json!({"user": "frank", "whitelist": [a_client], "disconnect": {"code": 4001, "reason": "bye"}}),
    );
    assert_eq!(r.json(), json!({"result": {}}));
    assert_eq!(b.expect_close(), (4001, "bye".to_owned()));
    a.expect_silence(Duration::from_millis(200));
    // Default code, user required, bad codes refused.
    assert_eq!(api.api("disconnect", json!({"user": "frank"})).json(), json!({"result": {}}));
    assert_eq!(a.expect_close(), (3503, "force disconnect".to_owned()));
    assert_eq!(api.api("disconnect", json!({})).json()["error"]["code"], 107);
    let bad = api.api("disconnect", json!({"user": "gina", "disconnect": {"code": 1000}}));
    assert_eq!(bad.json()["error"]["code"], 107);
    let r = api.api("refresh", json!({"user": "gina", "expired": true}));
    assert_eq!(r.json(), json!({"result": {}}));
    assert_eq!(other.expect_close(), (3005, "connection expired".to_owned()));
}

#[test]
fn api_history_history_remove_channels_info_and_batch() {
    let server = Server::start(config());
    let mut api = server.http();
    let mut c = server.ws();
    c.handshake(&token("dave"));
    c.subscribe("room:api");
    c.subscribe("chat:one");
    for n in 1..=3 {
        publish(&mut api, "room:api", json!({"n": n}));
    }
    let all = api.api("history", json!({"channel": "room:api", "limit": -1})).json();
    assert_eq!(all["result"]["publications"].as_array().unwrap().len(), 3, "{all}");
    let none = api.api("history", json!({"channel": "room:api"})).json();
    assert_eq!(none["result"]["publications"], json!([]), "limit 0: position only");
    assert_eq!(none["result"]["offset"], 3);
    let removed = api.api("history_remove", json!({"channel": "room:api"})).json();
    assert_eq!(removed, json!({"result": {}}));
    let after = api.api("history", json!({"channel": "room:api", "limit": -1})).json();
    assert_eq!(after["result"]["publications"], json!([]));
    assert_eq!(after["result"]["offset"], 3, "position survives history_remove");
    let no_history = api.api("history", json!({"channel": "chat:one"})).json();
    assert_eq!(no_history["error"]["code"], 108);
    let unknown = api.api("presence", json!({"channel": "nope:x"})).json();
    assert_eq!(unknown["error"]["code"], 102);
    // channels, with and without a pattern.
    let chans = api.api("channels", json!({})).json();
    assert_eq!(chans["result"]["channels"]["room:api"], json!({"num_clients": 1}), "{chans}");
    assert_eq!(chans["result"]["channels"]["chat:one"], json!({"num_clients": 1}));
    let chans = api.api("channels", json!({"pattern": "chat:*"})).json();
    assert_eq!(chans["result"]["channels"].as_object().unwrap().len(), 1, "{chans}");
    // An invalid pattern is an internal error upstream (100), not a bad request.
    let bad = api.api("channels", json!({"pattern": "chat:["})).json();
    assert_eq!(bad, json!({"error": {"code": 100, "message": "internal server error"}}));
    // info: one node, one client and user, two subscriptions.
    let info = api.api("info", json!({})).json();
    let node = &info["result"]["nodes"][0];
    assert_eq!(node["num_clients"], 1, "{info}");
    assert_eq!(node["num_users"], 1);
    assert_eq!(node["num_subs"], 2);
    assert_eq!(node["num_channels"], 2);
    assert!(node["uid"].as_str().is_some_and(|u| u.len() == 36));
    // Batch: replies in order, keyed by method, errors in place.
    let batch = api
        .api(
            "batch",
            json!({"commands": [
                {"publish": {"channel": "room:api", "data": {"n": 4}}},
                {"presence_stats": {"channel": "room:api"}},
                {"frobnicate": {}},
                null,
                {"history": {"channel": "nope:x"}}
            ]}),
        )
        .json();
    let replies = batch["replies"].as_array().unwrap();
    assert_eq!(replies[0]["publish"]["offset"], 4, "{batch}");
    assert_eq!(replies[1], json!({"presence_stats": {"num_clients": 1, "num_users": 1}}));
    assert_eq!(replies[2], json!({"error": {"code": 104, "message": "not found"}}));
    assert_eq!(replies[3]["error"]["code"], 107);
    assert_eq!(replies[4]["error"]["code"], 102);
    let parallel = api
        .api(
            "batch",
            json!({"parallel": true, "commands": [
                {"publish": {"channel": "room:api", "data": {"n": 5}}},
                {"publish": {"channel": "chat:one", "data": {"n": 6}}}
            ]}),
        )
        .json();
    assert_eq!(parallel["replies"][0]["publish"]["offset"], 5, "{parallel}");
    assert_eq!(parallel["replies"][1], json!({"publish": {}}));
    let rpc = api.api("rpc", json!({"method": "x"})).json();
    assert_eq!(rpc["error"], json!({"code": 104, "message": "not found"}));
}

#[test]
fn idempotent_and_versioned_publishes_are_not_repeated() {
    let server = Server::start(config());
    let mut api = server.http();
    let mut c = server.ws();
    c.handshake(&token("erin"));
    c.subscribe("room:idem");
    let body = json!({"channel": "room:idem", "data": {"x": 1}, "idempotency_key": "k1"});
    let first = api.api("publish", body.clone()).json();
    let again = api.api("publish", body).json();
    assert_eq!(first, again, "the repeat returns the first result");
    assert_eq!(c.next_json()["push"]["pub"]["offset"], 1);
    c.expect_silence(Duration::from_millis(200));
    let v = |n: u64| json!({"channel": "room:idem", "data": {"v": n}, "version": n});
    assert_eq!(api.api("publish", v(5)).json()["result"]["offset"], 2);
    assert_eq!(api.api("publish", v(4)).json()["result"]["offset"], 2, "older version skipped");
    assert_eq!(api.api("publish", v(6)).json()["result"]["offset"], 3);
    assert_eq!(c.next_json()["push"]["pub"]["data"], json!({"v": 5}));
    assert_eq!(c.next_json()["push"]["pub"]["data"], json!({"v": 6}));
}

#[test]
fn token_subs_claim_and_recovery_of_server_side_subscriptions_on_reconnect() {
    let server = Server::start(config());
    let mut api = server.http();
    let claims = json!({
        "sub": "hana",
        "subs": {"room:srvside": {"data": {"welcome": true}, "info": {"seat": 3}}}
    });
    let mut c = server.ws();
    let reply = c.handshake(&token_with(claims.clone()));
    let sub = &reply["connect"]["subs"]["room:srvside"];
    assert_eq!(sub["data"], json!({"welcome": true}), "{reply}");
    assert_eq!(sub["recoverable"], true);
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    publish(&mut api, "room:srvside", json!({"n": 1}));
    assert_eq!(c.next_json()["push"]["pub"]["offset"], 1);
    // chan_info from the token shows in presence.
    let p = api.api("presence", json!({"channel": "room:srvside"})).json();
    let entry = p["result"]["presence"].as_object().unwrap().values().next().unwrap().clone();
    assert_eq!(entry["chan_info"], json!({"seat": 3}), "{p}");
    drop(c);
    publish(&mut api, "room:srvside", json!({"n": 2}));
    publish(&mut api, "room:srvside", json!({"n": 3}));
    // Reconnect carrying the position, as SDKs do for server-side subscriptions.
    let mut again = server.ws();
    let id = again.command(json!({"connect": {
        "token": token_with(claims),
        "subs": {"room:srvside": {"recover": true, "offset": 1, "epoch": epoch}}
    }}));
    let reply = again.next_json();
    assert_eq!(reply["id"], id);
    let sub = &reply["connect"]["subs"]["room:srvside"];
    assert_eq!(sub["recovered"], true, "{reply}");
    assert_eq!(sub["was_recovering"], true);
    let data: Vec<Value> =
        sub["publications"].as_array().unwrap().iter().map(|p| p["data"].clone()).collect();
    assert_eq!(data, vec![json!({"n": 2}), json!({"n": 3})]);
    // Unknown namespace in the token: connect error 102.
    let mut bad = server.ws();
    bad.command(
        json!({"connect": {"token": token_with(json!({"sub": "x", "channels": ["nope:1"]}))}}),
    );
    assert_eq!(bad.next_json()["error"]["code"], 102);
}

#[test]
fn connection_limits_and_the_personal_channel() {
    let mut cfg = config();
    merge(
        &mut cfg,
        json!({"client": {
            "user_connection_limit": 2,
            "channel_limit": 2,
            "subscribe_to_user_personal_channel": {"enabled": true}
        }}),
    );
    let server = Server::start(cfg);
    let mut api = server.http();
    let mut one = server.ws();
    let mut two = server.ws();
    let reply = one.handshake(&token("lee"));
    assert!(reply["connect"]["subs"]["#lee"].is_object(), "personal channel: {reply}");
    two.handshake(&token("lee"));
    let mut three = server.ws();
    three.command(json!({"connect": {"token": token("lee")}}));
    assert_eq!(three.expect_close(), (3504, "connection limit".to_owned()));
    // Once one leaves, the user may connect again (the count lives on the user's home shard).
    drop(two);
    let mut admitted = None;
    for _ in 0..50 {
        let mut c = server.ws();
        c.command(json!({"connect": {"token": token("lee")}}));
        match c.next_event() {
            Event::Json(v) if v["connect"].is_object() => {
                admitted = Some(c);
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(admitted.is_some(), "a freed slot is reusable");
    // The personal channel receives API publications.
    publish(&mut api, "#lee", json!({"dm": 1}));
    assert_eq!(one.next_json()["push"]["pub"]["data"], json!({"dm": 1}));
    // channel_limit counts the personal channel: one more client subscription fits, two do not.
    one.subscribe("chat:a");
    let id = one.command(json!({"subscribe": {"channel": "chat:b"}}));
    assert_eq!(
        one.next_json(),
        json!({"id": id, "error": {"code": 106, "message": "limit exceeded"}})
    );
}

#[test]
fn subscription_token_expiry_refresh_and_unsubscribe_2501() {
    let mut cfg = config();
    merge(&mut cfg, json!({"client": {"expired_sub_close_delay": "0s"}}));
    cfg["channel"]["namespaces"].as_array_mut().unwrap().push(json!({"name": "priv"}));
    let server = Server::start(cfg);
    let mut c = server.ws();
    let client = c.handshake(&token("mia"))["connect"]["client"].as_str().unwrap().to_owned();
    let sub_token = |exp: i64| token_with(json!({"sub": "mia", "channel": "priv:a", "exp": exp}));
    let id = c.command(json!({"subscribe": {"channel": "priv:a", "token": sub_token(now() + 2)}}));
    let r = c.next_json();
    assert_eq!(r["id"], id);
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    assert!(r["subscribe"]["ttl"].as_u64().is_some_and(|t| t <= 2));
    // A second channel refreshed in time survives; the first one expires with 2501.
    let id = c.command(json!({"subscribe": {"channel": "priv:b", "token":
        token_with(json!({"sub": "mia", "channel": "priv:b", "exp": now() + 2, "client": client}))}}));
    assert_eq!(c.next_json()["id"], id);
    let fresh = token_with(json!({"sub": "mia", "channel": "priv:b", "exp": now() + 600}));
    let id = c.command(json!({"sub_refresh": {"channel": "priv:b", "token": fresh}}));
    let r = c.next_json();
    assert_eq!(r["id"], id);
    assert_eq!(r["sub_refresh"]["expires"], true, "{r}");
    let push = c.next_json();
    assert_eq!(
        push,
        json!({"push": {"channel": "priv:a", "unsubscribe": {"code": 2501, "reason": "subscription expired"}}})
    );
    c.expect_silence(Duration::from_millis(300));
    // sub_refresh errors: not subscribed 103; another user's token closes with 3500.
    let id =
        c.command(json!({"sub_refresh": {"channel": "priv:zzz", "token": sub_token(now() + 60)}}));
    assert_eq!(c.next_json()["error"]["code"], 103, "id {id}");
    let other = token_with(json!({"sub": "someone", "channel": "priv:b", "exp": now() + 60}));
    c.command(json!({"sub_refresh": {"channel": "priv:b", "token": other}}));
    assert_eq!(c.expect_close(), (3500, "invalid token".to_owned()));
}

#[test]
fn channel_feature_error_and_disconnect_codes() {
    let mut cfg = config();
    merge(
        &mut cfg,
        json!({"client": {
            "channel_limit": 2,
            "expired_sub_close_delay": "0s",
            "disallow_anonymous_connection_tokens": true
        }}),
    );
    cfg["channel"]["namespaces"].as_array_mut().unwrap().push(json!({"name": "priv"}));
    let server = Server::start(cfg);
    let mut api = server.http();
    // 110: the token's expire_at is already past (its exp is fine).
    let mut c = server.ws();
    let id = c.command(json!({"connect": {"token":
        token_with(json!({"sub": "nina", "exp": now() + 600, "expire_at": now() - 10}))}}));
    assert_eq!(c.next_json(), json!({"id": id, "error": {"code": 110, "message": "expired"}}));
    c.handshake(&token("nina"));
    let id = c.command(json!({"subscribe": {"channel": "priv:x", "token":
        token_with(json!({"sub": "nina", "channel": "priv:x", "exp": now() + 600, "expire_at": now() - 10}))}}));
    assert_eq!(c.next_json()["error"]["code"], 110, "subscription expire_at in the past (id {id})");
    // 3507: anonymous tokens are refused.
    let mut anon = server.ws();
    anon.command(json!({"connect": {"token": token_with(json!({"sub": ""}))}}));
    assert_eq!(anon.expect_close(), (3507, "permission denied".to_owned()));
    // 3505: more token channels than client.channel_limit.
    let mut many = server.ws();
    many.command(json!({"connect": {"token":
        token_with(json!({"sub": "oli", "channels": ["chat:1", "chat:2", "chat:3"]}))}}));
    assert_eq!(many.expect_close(), (3505, "channel limit".to_owned()));
    // 3006: a server-side subscription (API) whose expire_at passes.
    let mut s = server.ws();
    s.handshake(&token("pia"));
    let r =
        api.api("subscribe", json!({"user": "pia", "channel": "chat:exp", "expire_at": now() + 1}));
    assert_eq!(r.json(), json!({"result": {}}));
    assert!(s.next_json()["push"]["subscribe"].is_object());
    assert_eq!(s.expect_close(), (3006, "subscription expired".to_owned()));
    // 3010: a refresh token whose server-side channel set changed.
    let mut t = server.ws();
    t.handshake(&token_with(json!({"sub": "quin", "channels": ["chat:q"], "exp": now() + 600})));
    let id = t.command(json!({"refresh": {"token":
        token_with(json!({"sub": "quin", "channels": ["chat:q"], "exp": now() + 900}))}}));
    assert_eq!(t.next_json()["id"], id, "same channels: refreshed");
    t.command(json!({"refresh": {"token":
        token_with(json!({"sub": "quin", "channels": ["chat:q", "chat:r"], "exp": now() + 900}))}}));
    assert_eq!(t.expect_close(), (3010, "insufficient state".to_owned()));
}

#[test]
fn cache_recovery_delivers_only_the_latest_publication() {
    let mut cfg = config();
    for ns in [
        json!({"name": "state", "allow_subscribe_for_client": true, "history_size": 1,
               "history_ttl": "300s", "force_recovery": true, "force_recovery_mode": "cache"}),
        json!({"name": "auto", "allow_subscribe_for_client": true, "history_size": 1,
               "history_ttl": "300s", "force_recovery": true, "force_recovery_mode": "cache",
               "auto_cache_recover": true}),
    ] {
        cfg["channel"]["namespaces"].as_array_mut().unwrap().push(ns);
    }
    let server = Server::start(cfg);
    let mut api = server.http();
    let mut c = server.ws();
    c.handshake(&token("rae"));
    let epoch = c.subscribe("state:s")["subscribe"]["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        publish(&mut api, "state:s", json!({"n": n}));
        c.next_json();
    }
    c.command(json!({"unsubscribe": {"channel": "state:s"}}));
    c.next_json();
    for n in 4..=6 {
        publish(&mut api, "state:s", json!({"n": n}));
    }
    // Cache mode: recovered, with only the newest publication.
    let reply = recover(&mut c, "state:s", 3, &epoch);
    let sub = &reply["subscribe"];
    assert_eq!(sub["recovered"], true, "{reply}");
    assert_eq!(sub["publications"], json!([{"data": {"n": 6}, "offset": 6}]));
    assert_eq!(sub["offset"], 3, "a recovered reply echoes the client's offset");
    // auto_cache_recover: a plain subscribe gets the latest publication too.
    publish(&mut api, "auto:a", json!({"latest": true}));
    let reply = c.subscribe("auto:a");
    let sub = &reply["subscribe"];
    assert_eq!(sub["was_recovering"], true, "{reply}");
    assert_eq!(sub["recovered"], true);
    assert_eq!(sub["publications"][0]["data"], json!({"latest": true}));
}

#[test]
fn connection_rate_limit_answers_503_beyond_the_rate_and_admits_again_later() {
    let mut cfg = config();
    merge(&mut cfg, json!({"client": {"connection_rate_limit": 2}, "runtime": {"shards": 1}}));
    let server = Server::start(cfg);
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for _ in 0..8 {
        match Client::try_connect(server.port, "/connection/websocket", &[]) {
            Ok(c) => admitted.push(c),
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // 2 per second with a burst of 2: eight quick attempts cannot all pass.
    assert!(admitted.len() >= 2 && refused >= 2, "{} admitted, {refused} refused", admitted.len());
    // The bucket refills: a connection is admitted again.
    eventually(Duration::from_secs(5), Duration::from_millis(100), || {
        Client::try_connect(server.port, "/connection/websocket", &[])
            .map(drop)
            .map_err(|e| format!("still refused: {e}"))
    });
    // The API is not a client connection: never limited.
    for _ in 0..4 {
        assert_eq!(server.http().api("publish", json!({"channel": "x", "data": {}})).status, 200);
    }
}
