//! Behaviour tests for `channel`: resolution tables and every §5.4 permission rule.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::{self, ChannelOptions};

/// Centrifugo's defaults for the grammar keys (the config stub defaults are empty).
fn channel_cfg(namespaces: Vec<config::Namespace>) -> config::Channel {
    config::Channel {
        without_namespace: ChannelOptions { presence: true, ..Default::default() },
        namespaces,
        max_length: 255,
        private_prefix: "$".into(),
        namespace_boundary: ":".into(),
        user_boundary: "#".into(),
        user_separator: ",".into(),
        ..Default::default()
    }
}

fn ns(name: &str, options: ChannelOptions) -> config::Namespace {
    config::Namespace { name: name.into(), options }
}

fn table() -> Namespaces {
    Namespaces::new(&channel_cfg(vec![
        ns("chat", ChannelOptions { join_leave: true, ..Default::default() }),
        ns("dm", ChannelOptions { allow_user_limited_channels: true, ..Default::default() }),
        ns("a.b-c_9", ChannelOptions::default()),
    ]))
    .unwrap()
}

#[test]
fn resolution_table() {
    let t = table();
    // (channel, namespace, private, user list)
    type Case = (&'static str, Option<&'static str>, bool, Option<&'static [&'static str]>);
    let cases: &[Case] = &[
        ("news", None, false, None),
        ("chat:room", Some("chat"), false, None),
        ("chat:room:sub", Some("chat"), false, None),
        ("$chat:room", Some("chat"), true, None),
        ("$news", None, true, None),
        ("dm:#42,43", Some("dm"), false, Some(&["42", "43"])),
        ("dm:a#b#42", Some("dm"), false, Some(&["42"])),
        ("#42", None, false, Some(&["42"])),
        ("dm:#", Some("dm"), false, Some(&[])),
        ("dm:#,,7,", Some("dm"), false, Some(&["7"])),
        ("a.b-c_9:x", Some("a.b-c_9"), false, None),
        (":x", None, false, None),
        ("$:x", None, true, None),
        ("$", None, true, None),
    ];
    for &(channel, namespace, private, users) in cases {
        let r = t.resolve(channel).unwrap_or_else(|e| panic!("{channel}: {e}"));
        assert_eq!(r.namespace, namespace, "{channel}");
        assert_eq!(r.private, private, "{channel}");
        assert_eq!(r.user_limited.as_deref(), users, "{channel}");
        let expected = t.options(namespace).unwrap();
        assert!(std::ptr::eq(r.options, expected), "{channel}");
    }
    assert!(t.resolve("chat:x").unwrap().options.join_leave);
    assert!(t.resolve("news").unwrap().options.presence);
}

#[test]
fn unknown_namespace_is_102() {
    let t = table();
    for channel in ["nope:x", "$nope:x", "Chat:x", "chat2:x", "$$chat:x:y"] {
        let err = t.resolve(channel).unwrap_err();
        assert_eq!((err, err.code()), (ChannelError::UnknownChannel, 102), "{channel}");
    }
}

#[test]
fn too_long_empty_non_ascii_or_control_character_names_are_107() {
    let t = table();
    let max = "a".repeat(255);
    assert!(t.resolve(&max).is_ok());
    let long = "a".repeat(256);
    for channel in [long.as_str(), "", "café", "chat:é", "\u{1F600}", "a\0b", "chat:\n", "x\x7f"]
    {
        let err = t.resolve(channel).unwrap_err();
        assert_eq!((err, err.code()), (ChannelError::BadRequest, 107), "{channel:?}");
    }
    // Length counts bytes of the whole name, prefix and namespace included.
    let ns_long = format!("chat:{}", "a".repeat(251));
    assert_eq!(t.resolve(&ns_long).unwrap_err(), ChannelError::BadRequest);
}

#[test]
fn custom_grammar_strings_are_honoured() {
    let cfg = config::Channel {
        private_prefix: "private-".into(),
        namespace_boundary: "::".into(),
        user_boundary: "@@".into(),
        user_separator: ";".into(),
        max_length: 0, // 0 = no limit
        ..channel_cfg(vec![ns("room", ChannelOptions::default())])
    };
    let t = Namespaces::new(&cfg).unwrap();
    let r = t.resolve("private-room::x@@1;2").unwrap();
    assert_eq!((r.namespace, r.private), (Some("room"), true));
    assert_eq!(r.user_limited.unwrap(), ["1", "2"]);
    assert_eq!(t.resolve("room:x").unwrap().namespace, None);
    assert!(t.resolve(&"a".repeat(10_000)).is_ok());
}

#[test]
fn bad_namespace_config_names_the_key() {
    let err = |nss| Namespaces::new(&channel_cfg(nss)).unwrap_err();
    for bad in ["a", "", "has:colon", "sp ace", "ü-x"] {
        assert!(matches!(
            err(vec![ns(bad, ChannelOptions::default())]),
            ChannelConfigError::Invalid { key, .. } if key == "channel.namespaces[0].name"
        ));
    }
    assert!(matches!(
        err(vec![ns("ok", ChannelOptions::default()), ns("ok", ChannelOptions::default())]),
        ChannelConfigError::Invalid { key, .. } if key == "channel.namespaces[1].name"
    ));
    let bad_regex = ChannelOptions { channel_regex: "^[a-z+$".into(), ..Default::default() };
    assert!(matches!(
        err(vec![ns("ok", ChannelOptions::default()), ns("re", bad_regex.clone())]),
        ChannelConfigError::Invalid { key, .. } if key == "channel.namespaces[1].channel_regex"
    ));
    let cfg = config::Channel { without_namespace: bad_regex, ..channel_cfg(vec![]) };
    assert!(matches!(
        Namespaces::new(&cfg).unwrap_err(),
        ChannelConfigError::Invalid { key, .. } if key == "channel.without_namespace.channel_regex"
    ));
    let cfg = config::Channel { namespace_boundary: String::new(), ..channel_cfg(vec![]) };
    assert!(matches!(
        Namespaces::new(&cfg).unwrap_err(),
        ChannelConfigError::Invalid { key, .. } if key == "channel.namespace_boundary"
    ));
}

fn regex_table() -> Namespaces {
    let open = ChannelOptions {
        allow_subscribe_for_client: true,
        allow_publish_for_client: true,
        ..Default::default()
    };
    let room = ChannelOptions { channel_regex: "^[a-z0-9]+$".into(), ..open.clone() };
    let words = ChannelOptions { channel_regex: r"^\w+$".into(), ..open.clone() };
    let cfg = config::Channel {
        without_namespace: ChannelOptions { channel_regex: "^news".into(), ..open.clone() },
        ..channel_cfg(vec![ns("room", room), ns("words", words), ns("plain", open)])
    };
    Namespaces::new(&cfg).unwrap()
}

#[test]
fn channel_regex_matches_the_part_after_the_namespace() {
    let t = regex_table();
    let verdict = |channel: &str| {
        let r = t.resolve(channel).unwrap_or_else(|e| panic!("{channel}: {e}"));
        let name = check_name(&r);
        assert_eq!(check_subscribe(&r, &USER, false), name, "{channel}");
        assert_eq!(check_publish(&r, &USER, false), name, "{channel}");
        name
    };
    // Namespace part and private prefix are not part of what the regex sees; only
    // the first boundary splits.
    for ok in ["room:abc1", "news", "newsroom", "plain:ANY thing:goes"] {
        assert_eq!(verdict(ok), Ok(()), "{ok}");
    }
    assert_eq!(check_name(&t.resolve("$news").unwrap()), Ok(()));
    for bad in ["room:ABC", "room:a:b", "room:", "world", "$world", ":news"] {
        assert_eq!(verdict(bad), Err(ChannelError::BadRequest), "{bad}");
        assert_eq!(ChannelError::BadRequest.code(), 107);
    }
    // `$` channels still need a token once the name passes.
    let r = t.resolve("$room:abc").unwrap();
    assert_eq!(check_subscribe(&r, &USER, false), Err(ChannelError::PermissionDenied));
    assert_eq!(check_subscribe(&r, &USER, true), Ok(()));
    let r = t.resolve("$room:ABC").unwrap();
    assert_eq!(check_subscribe(&r, &USER, true), Err(ChannelError::BadRequest));
}

#[test]
fn channel_regex_namespaces_accept_non_ascii_names() {
    let t = regex_table();
    let r = t.resolve("words:café").unwrap();
    assert_eq!(check_name(&r), Ok(()));
    let r = t.resolve("room:café").unwrap();
    assert_eq!(check_name(&r), Err(ChannelError::BadRequest));
    // Without a regex the ASCII rule still holds.
    assert_eq!(t.resolve("plain:café").unwrap_err(), ChannelError::BadRequest);
    // Unknown namespaces are reported before any name rule.
    assert_eq!(t.resolve("nope:café").unwrap_err(), ChannelError::UnknownChannel);
}

#[test]
fn namespaces_without_channel_regex_accept_every_ascii_name() {
    let t = table();
    for channel in ["chat:ROOM 1", "news", "$x"] {
        assert_eq!(check_name(&t.resolve(channel).unwrap()), Ok(()), "{channel}");
    }
}

#[test]
fn error_codes_match_the_protocol() {
    assert_eq!(ChannelError::UnknownChannel.code(), 102);
    assert_eq!(ChannelError::PermissionDenied.code(), 103);
    assert_eq!(ChannelError::BadRequest.code(), 107);
    assert_eq!(ChannelError::NotAvailable.code(), 108);
    assert_eq!(ChannelError::PermissionDenied.to_string(), "permission denied");
}

// ---- permissions -------------------------------------------------------------

const USER: Subject<'static> = Subject { user: "42", insecure: false };
const ANON: Subject<'static> = Subject { user: "", insecure: false };
const INSECURE_ANON: Subject<'static> = Subject { user: "", insecure: true };

fn single(options: ChannelOptions) -> Namespaces {
    Namespaces::new(&channel_cfg(vec![ns("ns", options)])).unwrap()
}

fn sub(
    options: ChannelOptions,
    channel: &str,
    who: Subject<'_>,
    token: bool,
) -> Result<(), ChannelError> {
    let t = single(options);
    let r = t.resolve(channel).unwrap();
    check_subscribe(&r, &who, token)
}

const DENIED: Result<(), ChannelError> = Err(ChannelError::PermissionDenied);
const NOT_AVAILABLE: Result<(), ChannelError> = Err(ChannelError::NotAvailable);

#[test]
fn subscribe_is_denied_by_default_and_allowed_for_clients_when_enabled() {
    assert_eq!(sub(ChannelOptions::default(), "ns:x", USER, false), DENIED);
    let client = ChannelOptions { allow_subscribe_for_client: true, ..Default::default() };
    assert_eq!(sub(client.clone(), "ns:x", USER, false), Ok(()));
    assert_eq!(sub(client.clone(), "ns:x", ANON, false), DENIED);
    let anon = ChannelOptions { allow_subscribe_for_anonymous: true, ..client };
    assert_eq!(sub(anon.clone(), "ns:x", ANON, false), Ok(()));
    // `_for_anonymous` alone grants nothing.
    let only_anon = ChannelOptions { allow_subscribe_for_anonymous: true, ..Default::default() };
    assert_eq!(sub(only_anon, "ns:x", ANON, false), DENIED);
}

#[test]
fn subscribe_with_a_verified_token_is_allowed_regardless_of_options() {
    assert_eq!(sub(ChannelOptions::default(), "ns:x", USER, true), Ok(()));
    assert_eq!(sub(ChannelOptions::default(), "ns:x", ANON, true), Ok(()));
    assert_eq!(sub(ChannelOptions::default(), "$ns:x", USER, true), Ok(()));
    assert_eq!(sub(ChannelOptions::default(), "ns:#7", USER, true), Ok(()));
    let proxied = ChannelOptions { subscribe_proxy_enabled: true, ..Default::default() };
    assert_eq!(sub(proxied, "ns:x", USER, true), Ok(()));
}

#[test]
fn private_channels_need_a_token_even_when_insecure() {
    let open = ChannelOptions {
        allow_subscribe_for_client: true,
        allow_subscribe_for_anonymous: true,
        allow_user_limited_channels: true,
        ..Default::default()
    };
    assert_eq!(sub(open.clone(), "$ns:x", USER, false), DENIED);
    assert_eq!(sub(open.clone(), "$ns:x", INSECURE_ANON, false), DENIED);
    assert_eq!(sub(open, "$ns:x#42", USER, false), DENIED);
}

#[test]
fn user_limited_channels_admit_listed_users_only() {
    let ul = ChannelOptions { allow_user_limited_channels: true, ..Default::default() };
    assert_eq!(sub(ul.clone(), "ns:#42", USER, false), Ok(()));
    assert_eq!(sub(ul.clone(), "ns:#1,42", USER, false), Ok(()));
    assert_eq!(sub(ul.clone(), "ns:#1,2", USER, false), DENIED);
    assert_eq!(sub(ul.clone(), "ns:#4,2", USER, false), DENIED); // no substring matches
    assert_eq!(sub(ul.clone(), "ns:#", ANON, false), DENIED); // empty list matches nobody
    assert_eq!(sub(ul.clone(), "ns:#,", ANON, false), DENIED);
    // Listed users get in even through a subscribe proxy namespace.
    let proxied = ChannelOptions { subscribe_proxy_enabled: true, ..ul.clone() };
    assert_eq!(sub(proxied, "ns:#42", USER, false), Ok(()));
    // `allow_subscribe_for_client` does not open someone else's user channel.
    let both = ChannelOptions { allow_subscribe_for_client: true, ..ul };
    assert_eq!(sub(both.clone(), "ns:#1", USER, false), DENIED);
    assert_eq!(sub(both, "ns:plain", USER, false), Ok(()));
}

#[test]
fn hash_channels_without_user_limited_option_are_denied_q13() {
    let client = ChannelOptions {
        allow_subscribe_for_client: true,
        allow_subscribe_for_anonymous: true,
        ..Default::default()
    };
    assert_eq!(sub(client.clone(), "ns:#42", USER, false), DENIED);
    assert_eq!(sub(client.clone(), "ns:a#b", USER, false), DENIED);
    assert_eq!(sub(client, "ns:#42", ANON, false), DENIED);
}

#[test]
fn subscribe_proxy_namespace_leaves_the_decision_to_the_proxy() {
    let proxied = ChannelOptions {
        subscribe_proxy_enabled: true,
        allow_subscribe_for_client: true,
        ..Default::default()
    };
    assert_eq!(sub(proxied.clone(), "ns:x", USER, false), Err(ChannelError::Proxied));
    // Upstream asks the proxy before looking at insecure mode.
    let insecure = Subject { user: "42", insecure: true };
    assert_eq!(sub(proxied, "ns:x", insecure, false), Err(ChannelError::Proxied));
}

#[test]
fn insecure_mode_allows_every_non_private_subscription() {
    let none = ChannelOptions::default();
    assert_eq!(sub(none.clone(), "ns:x", INSECURE_ANON, false), Ok(()));
    assert_eq!(sub(none.clone(), "ns:#1", INSECURE_ANON, false), Ok(()));
    assert_eq!(sub(none, "plain", Subject { user: "u", insecure: true }, false), Ok(()));
}

/// Runs one of the three `client/subscriber/anonymous` permission families through
/// every combination of flags, subject and subscription state.
fn check_family(
    check: fn(&Resolved<'_>, &Subject<'_>, bool) -> Result<(), ChannelError>,
    enable: fn(&mut ChannelOptions),
    set: fn(&mut ChannelOptions, bool, bool, bool),
) {
    for bits in 0..8u8 {
        let (client, subscriber, anonymous) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
        let mut o = ChannelOptions::default();
        enable(&mut o);
        set(&mut o, client, subscriber, anonymous);
        let t = single(o);
        let r = t.resolve("ns:x").unwrap();
        for who in [USER, ANON] {
            for subscribed in [false, true] {
                let user_ok = !who.user.is_empty() || anonymous;
                let expect_ok = (client && user_ok) || (subscriber && subscribed && user_ok);
                let expected = if expect_ok { Ok(()) } else { DENIED };
                assert_eq!(
                    check(&r, &who, subscribed),
                    expected,
                    "client={client} subscriber={subscriber} anonymous={anonymous} user={:?} subscribed={subscribed}",
                    who.user
                );
                let insecure = Subject { insecure: true, ..who };
                assert_eq!(check(&r, &insecure, subscribed), Ok(()));
            }
        }
    }
}

#[test]
fn publish_permission_rules() {
    check_family(
        check_publish,
        |_| {},
        |o, c, s, a| {
            o.allow_publish_for_client = c;
            o.allow_publish_for_subscriber = s;
            o.allow_publish_for_anonymous = a;
        },
    );
}

#[test]
fn publish_proxy_namespace_leaves_the_decision_to_the_proxy() {
    let t = single(ChannelOptions {
        publish_proxy_enabled: true,
        allow_publish_for_client: true,
        ..Default::default()
    });
    let r = t.resolve("ns:x").unwrap();
    assert_eq!(check_publish(&r, &USER, true), Err(ChannelError::Proxied));
    assert_eq!(check_publish(&r, &INSECURE_ANON, true), Err(ChannelError::Proxied));
}

#[test]
fn presence_permission_rules() {
    check_family(
        check_presence,
        |o| o.presence = true,
        |o, c, s, a| {
            o.allow_presence_for_client = c;
            o.allow_presence_for_subscriber = s;
            o.allow_presence_for_anonymous = a;
        },
    );
}

#[test]
fn presence_disabled_is_108_even_for_permitted_or_insecure() {
    let t = single(ChannelOptions {
        allow_presence_for_client: true,
        allow_presence_for_anonymous: true,
        ..Default::default()
    });
    let r = t.resolve("ns:x").unwrap();
    assert_eq!(check_presence(&r, &USER, true), NOT_AVAILABLE);
    assert_eq!(check_presence(&r, &INSECURE_ANON, true), NOT_AVAILABLE);
    assert_eq!(NOT_AVAILABLE.unwrap_err().code(), 108);
}

#[test]
fn history_permission_rules() {
    check_family(
        check_history,
        |o| {
            o.history_size = 10;
            o.history_ttl = Duration::from_secs(60);
        },
        |o, c, s, a| {
            o.allow_history_for_client = c;
            o.allow_history_for_subscriber = s;
            o.allow_history_for_anonymous = a;
        },
    );
}

#[test]
fn history_needs_both_size_and_ttl() {
    let base = ChannelOptions { allow_history_for_client: true, ..Default::default() };
    for (size, ttl) in [(0, 0), (10, 0), (0, 60)] {
        let t = single(ChannelOptions {
            history_size: size,
            history_ttl: Duration::from_secs(ttl),
            ..base.clone()
        });
        let r = t.resolve("ns:x").unwrap();
        assert_eq!(check_history(&r, &USER, true), NOT_AVAILABLE, "size={size} ttl={ttl}");
        assert_eq!(check_history(&r, &INSECURE_ANON, true), NOT_AVAILABLE);
    }
}

proptest! {
    #[test]
    fn resolve_never_panics(channel in any::<String>()) {
        let t = table();
        if let Ok(r) = t.resolve(&channel) {
            prop_assert!(channel.is_ascii() && !channel.is_empty() && channel.len() <= 255);
            for who in [USER, ANON, INSECURE_ANON] {
                let _ = check_subscribe(&r, &who, false);
                let _ = check_publish(&r, &who, true);
            }
        }
    }

    #[test]
    fn resolve_never_panics_on_grammar_heavy_names(channel in "[$:#,a-z0-9.é]{0,40}") {
        let t = table();
        if let Ok(r) = t.resolve(&channel) {
            prop_assert_eq!(r.private, channel.starts_with('$'));
            if let Some(users) = &r.user_limited {
                prop_assert!(users.iter().all(|u| !u.is_empty() && !u.contains(',') && !u.contains('#')));
            }
        }
    }
}
