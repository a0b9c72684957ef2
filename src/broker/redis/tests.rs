//! Tests of the engine and of the protocol state its files share (PUB/SUB subscriptions,
//! replies and payloads), without Redis. Each file keeps the tests of what it alone owns.

use bytes::Bytes;

use super::*;
use crate::broker::stream::{HistoryError, Position};
use crate::broker::Event;
use crate::protocol::RawJson;
use crate::shard::id::Lane;

fn settings() -> Settings {
    Settings {
        addresses: vec![Address::parse("127.0.0.1:6379", &crate::config::Redis::default()).unwrap()],
        cluster: Vec::new(),
        probe: Vec::new(),
        keys: Keys::new("centrifugo", false),
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(4),
        client_name: String::new(),
        presence_ttl: Duration::from_secs(60),
        sentinel: None,
        sharded: false,
        sharded_pubsub: false,
        tls: None,
    }
}

fn publication(data: &str) -> Publication {
    Publication { data: RawJson::from_value_str(data).unwrap(), ..Publication::default() }
}

fn bulk(s: &[u8]) -> BytesFrame {
    BytesFrame::BulkString(Bytes::copy_from_slice(s))
}

#[test]
fn pubsub_payloads_of_every_form_decode() {
    let p = publication(r#"{"a":1}"#);
    let pb = protobuf::broker_publication(&p, 5, false);
    let mut positioned = b"__p1:7:abcdefgh__".to_vec();
    positioned.extend_from_slice(&pb);
    let Some(Event::Pub(got)) = parse_message(&positioned) else { panic!() };
    assert_eq!((got.offset, got.data.as_bytes()), (7, &br#"{"a":1}"#[..]));
    assert!(!got.binary && !got.delta_eligible);

    let prev = protobuf::broker_publication(&publication("[1]"), 4, false);
    let mut delta = format!("__d1:8:abcdefgh:{}:", prev.len()).into_bytes();
    delta.extend_from_slice(&prev);
    delta.extend_from_slice(format!(":{}:", pb.len()).as_bytes());
    delta.extend_from_slice(&pb);
    let Some(Event::Pub(got)) = parse_message(&delta) else { panic!() };
    assert_eq!((got.offset, got.data.as_bytes()), (8, &br#"{"a":1}"#[..]));
    assert!(got.delta_eligible, "a __d1 publication may be sent as a patch");

    let plain = protobuf::broker_publication(&publication("2"), 1, true);
    let Some(Event::Pub(got)) = parse_message(&plain) else { panic!() };
    assert_eq!(got.offset, 0);
    assert!(got.delta_eligible);

    let info =
        ClientInfo { user: "u".into(), client: "c".into(), conn_info: None, chan_info: None };
    let mut join = b"__j__".to_vec();
    join.extend_from_slice(&protobuf::encode_client_info(&info));
    assert!(matches!(parse_message(&join), Some(Event::Join(i)) if i.user == "u"));
    join[2] = b'l';
    assert!(matches!(parse_message(&join), Some(Event::Leave(i)) if i.client == "c"));
    assert!(parse_message(b"__p1:x:y__").is_none());
}

#[test]
fn binary_data_from_another_node_stays_binary() {
    let p = Publication {
        data: RawJson(Bytes::from_static(&[0xff, 0x00])),
        binary: true,
        ..Default::default()
    };
    let Some(Event::Pub(got)) = parse_message(&protobuf::broker_publication(&p, 0, false)) else {
        panic!()
    };
    assert!(got.binary, "JSON clients must never get non-JSON data");
}

#[test]
fn a_channel_becomes_active_only_after_its_last_subscribe_is_confirmed() {
    let s = settings();
    let mut ps = PubSub { up: true, ..PubSub::default() };
    let ch: Arc<str> = Arc::from("news");
    assert!(!ps.want(&s, &ch), "first interest waits for Redis");
    assert!(String::from_utf8_lossy(&ps.out).contains("centrifugo.client.news"));
    ps.channels.get_mut("news").unwrap().acks.push((ShardId(1), 9));
    // Interest goes away and comes back before Redis answers: two SUBSCRIBEs in flight.
    ps.unwant(&s, "news");
    assert!(!ps.want(&s, &ch));
    assert!(ps.confirmed("news").is_none(), "the first confirmation predates the UNSUBSCRIBE");
    let held = ps.confirmed("news").expect("second confirmation activates");
    assert_eq!(held.acks, vec![(ShardId(1), 9)]);
    assert!(ps.want(&s, &ch), "already active");
    ps.unwant(&s, "news");
    assert!(ps.channels.is_empty());
}

#[test]
fn a_broken_pubsub_link_keeps_acks_until_the_resubscription_is_confirmed() {
    let s = settings();
    let mut ps = PubSub { up: true, ..PubSub::default() };
    ps.want(&s, &Arc::from("a"));
    ps.channels.get_mut("a").unwrap().acks.push((ShardId(0), 1));
    assert!(ps.down().is_empty(), "no positioned call was waiting");
    assert!(!ps.want(&s, &Arc::from("a")), "not delivered while down");
    assert!(!ps.want(&s, &Arc::from("b")), "no SUBSCRIBE while down");
    ps.out.clear();
    ps.resubscribe(&s, &["centrifugo.control".to_owned()]);
    let sent = String::from_utf8_lossy(&ps.out).into_owned();
    for name in ["centrifugo.control", "centrifugo.client.a", "centrifugo.client.b"] {
        assert!(sent.contains(name), "{sent}");
    }
    let held = ps.confirmed("a").expect("confirmed after the reconnect");
    assert_eq!(held.acks, vec![(ShardId(0), 1)], "the acknowledgement waited for Redis");
    assert!(ps.confirmed("b").is_some());
}

#[test]
fn history_replies_become_answers() {
    let stored = protobuf::broker_publication(&publication("1"), 0, false);
    let entry =
        BytesFrame::Array(vec![bulk(b"3-0"), BytesFrame::Array(vec![bulk(b"d"), bulk(&stored)])]);
    let reply = BytesFrame::Array(vec![
        BytesFrame::Integer(3),
        bulk(b"epochxyz"),
        BytesFrame::Array(vec![entry]),
    ]);
    let query = HistoryQuery { limit: None, since: None, reverse: false };
    let Reply::History(Ok((pubs, top))) = answer(Parse::History(query), Ok(reply.clone())) else {
        panic!()
    };
    assert_eq!((pubs.len(), pubs[0].offset, top.offset, top.epoch.as_str()), (1, 3, 3, "epochxyz"));

    let stale = HistoryQuery {
        since: Some(Position { offset: 1, epoch: "other".into() }),
        ..Default::default()
    };
    assert!(matches!(
        answer(Parse::History(stale), Ok(reply)),
        Reply::History(Err(HistoryError::UnrecoverablePosition))
    ));
    // Meta read as a string (HMGET) or missing altogether.
    let reply = BytesFrame::Array(vec![bulk(b"12"), bulk(b"e")]);
    assert!(matches!(
        answer(Parse::Subscribed(None), Ok(reply)),
        Reply::Subscribed { top: Some(Position { offset: 12, .. }), .. }
    ));
    assert!(matches!(answer(Parse::Top, Ok(BytesFrame::Null)), Reply::Position(None)));
    assert!(matches!(answer(Parse::Published, Err(RedisError::Unavailable)), Reply::Failed));
    assert!(matches!(answer(Parse::Done, Ok(BytesFrame::Error("ERR x".into()))), Reply::Failed));
    let idem = BytesFrame::Array(vec![bulk(b"5"), bulk(b"")]);
    assert!(matches!(answer(Parse::Published, Ok(idem)), Reply::Published(None)));
}

/// An engine on a two-master cluster whose slots 0..=8191 are on the first master.
fn cluster_engine() -> Redis {
    let mut s = settings();
    s.keys = Keys::new("centrifugo", true);
    s.cluster = s.addresses.clone();
    let addresses = vec![s.addresses[0].clone(), s.addresses[0].clone()];
    let slots = Some((0..16384).map(|slot| u16::from(slot >= 8192)).collect());
    let r = Redis::new(Arc::new(s), Topology { addresses, slots }, true, true);
    for server in &r.servers {
        let mut server = server.borrow_mut();
        server.cmd.up = true;
        server.sub.up = true;
        server.shas = (0..6).map(|i| format!("sha{i}")).collect();
    }
    r
}

#[test]
fn in_a_cluster_a_channel_s_commands_go_to_its_slot_s_master_with_tagged_keys() {
    let mut r = cluster_engine();
    let to = ReplyTo { origin: ShardId(0), req: 1, lane: Lane::Reply };
    for channel in ["a", "b", "ns:x", "ns:y"] {
        let home = usize::from(redis_protocol::redis_keyslot(channel.as_bytes()) >= 8192);
        let p = publication("1");
        let then = Then::Answer(to, Parse::Published);
        assert!(r.publish(channel, &p, HistoryPolicy::default(), None, None, 0, then).is_ok());
        let sent = String::from_utf8_lossy(&r.servers[home].borrow().cmd.out).into_owned();
        assert!(
            sent.contains(&format!(
                "PUBLISH\r\n${}\r\ncentrifugo.client.{{{channel}}}\r\n",
                20 + channel.len()
            )),
            "{sent}"
        );
        assert!(
            r.servers[1 - home].borrow().cmd.out.is_empty(),
            "{channel}: nothing on the other master"
        );
        r.servers[home].borrow_mut().cmd.out.clear();
        r.presence_add(
            channel,
            &ClientInfo { user: "u".into(), client: "c".into(), ..Default::default() },
            0,
        );
        let sent = String::from_utf8_lossy(&r.servers[home].borrow().cmd.out).into_owned();
        assert!(sent.contains(&format!("centrifugo.presence.expire.{{{channel}}}")), "{sent}");
        assert!(sent.contains(&format!("centrifugo.presence.data.{{{channel}}}")), "{sent}");
        r.servers[home].borrow_mut().cmd.out.clear();
    }
}

#[test]
fn in_a_cluster_pubsub_names_carry_the_hash_tag_both_ways() {
    let r = cluster_engine();
    let frame =
        |kind: &[u8], name: &str| BytesFrame::Array(vec![bulk(kind), bulk(name.as_bytes())]);
    let confirmed = r.incoming(frame(b"ssubscribe", "centrifugo.client.{ns:a}"));
    assert!(matches!(confirmed, Incoming::Subscribed(c) if &*c == "ns:a"));
    assert!(matches!(r.incoming(frame(b"subscribe", "centrifugo.client.ns:a")), Incoming::Other));
    let payload = protobuf::broker_publication(&publication("3"), 0, false);
    let message = BytesFrame::Array(vec![
        bulk(b"smessage"),
        bulk(b"centrifugo.client.{ns:a}"),
        bulk(&payload),
    ]);
    assert!(matches!(r.incoming(message), Incoming::Event(c, Event::Pub(_)) if &*c == "ns:a"));
    let control =
        BytesFrame::Array(vec![bulk(b"message"), bulk(b"centrifugo.control"), bulk(b"hi")]);
    assert!(matches!(r.incoming(control), Incoming::Control(d) if &d[..] == b"hi"));
}
