use super::*;
use crate::protocol::RawJson;

fn settings() -> Settings {
    Settings {
        addresses: vec![Address::parse("127.0.0.1:6379", &crate::config::Redis::default()).unwrap()],
        prefix: "centrifugo".into(),
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(4),
        client_name: String::new(),
        presence_ttl: Duration::from_secs(60),
        sentinel: None,
        sharded: false,
        slots: None,
    }
}

fn publication(data: &str) -> Publication {
    Publication { data: RawJson::from_value_str(data).unwrap(), ..Publication::default() }
}

fn bulk(s: &[u8]) -> BytesFrame {
    BytesFrame::BulkString(Bytes::copy_from_slice(s))
}

#[test]
fn addresses_parse_with_defaults_and_reject_what_is_unsupported() {
    let d = crate::config::Redis::default();
    let a = Address::parse("redis://bob:s3cret@10.0.0.1:6380/2", &d).unwrap();
    assert_eq!(
        (a.host.as_str(), a.port, a.user.as_str(), a.password.as_str(), a.db),
        ("10.0.0.1", 6380, "bob", "s3cret", 2)
    );
    let a = Address::parse("localhost", &d).unwrap();
    assert_eq!((a.host.as_str(), a.port, a.db), ("localhost", 6379, 0));
    assert!(Address::parse("rediss://h:1", &d).unwrap_err().contains("TLS"));
    assert!(Address::parse("redis://h:port", &d).is_err());
    assert!(Address::parse("redis://:1", &d).is_err());
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

#[test]
fn links_refuse_commands_while_down() {
    let mut link = Link::default();
    assert!(link.push(&[b"PING"], Then::Ignore).is_err());
    link.up = true;
    assert!(link.push(&[b"PING"], Then::Ignore).is_ok());
    assert_eq!(&link.out[..], b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(link.down().len(), 1);
    assert!(link.out.is_empty() && !link.up);
}

#[test]
fn a_link_is_stalled_only_when_its_oldest_command_waited_the_whole_limit() {
    let mut link = Link { up: true, ..Link::default() };
    assert!(!link.stalled(Duration::ZERO), "nothing outstanding");
    link.push(&[b"PING"], Then::Ignore).unwrap();
    link.push(&[b"PING"], Then::Ignore).unwrap();
    assert!(link.stalled(Duration::ZERO));
    assert!(!link.stalled(Duration::from_secs(60)), "just sent");
    link.pop();
    assert!(link.stalled_since.is_some(), "one still outstanding");
    link.pop();
    assert!(!link.stalled(Duration::ZERO), "all answered");
}

#[test]
fn channels_spread_over_servers_and_mostly_stay_when_one_is_added() {
    let names: Vec<String> = (0..2000).map(|i| format!("ns:channel-{i}")).collect();
    assert!(names.iter().all(|c| server_index(c, 1) == 0));
    for n in 1..6 {
        let mut per = vec![0usize; n + 1];
        for c in &names {
            let before = server_index(c, n);
            let after = server_index(c, n + 1);
            assert!(before < n && after <= n);
            // Jump hash: growing the set only moves channels to the new server.
            assert!(after == before || after == n, "{c}: {before} -> {after}");
            per[after] += 1;
        }
        let even = names.len() / (n + 1);
        assert!(per.iter().all(|&k| k > even / 2 && k < even * 2), "{per:?}");
    }
}
