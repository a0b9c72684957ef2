use super::*;

fn endpoint(transforms: Vec<StatusTransform>) -> Endpoint {
    Endpoint {
        key: "test".into(),
        name: Arc::from("default"),
        target: parse_target("http://127.0.0.1:1/x").unwrap(),
        timeout: Duration::from_secs(1),
        http_headers: vec!["cookie".into(), "authorization".into()],
        emulated_headers: vec!["authorization".into(), "x-tenant".into()],
        static_headers: vec![("X-Static".into(), "s".into()), ("Cookie".into(), "static".into())],
        transforms,
        binary: false,
        include_meta: false,
        tls: None,
        server_name: String::new(),
    }
}

#[test]
fn targets_parse_with_default_ports_paths_and_ipv6() {
    let t = parse_target("https://backend.example/centrifugo/connect?x=1").unwrap();
    assert_eq!((t.tls, t.host.as_str(), t.port), (true, "backend.example", 443));
    assert_eq!(t.path, "/centrifugo/connect?x=1");
    let t = parse_target("http://[::1]:3000").unwrap();
    assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 3000, "/"));
    assert_eq!(t.authority, "[::1]:3000");
    for bad in ["ftp://x", "http://", "http://u@h/", "http://h:99999/", "http://h/#f", "grpc://h"] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
}

#[test]
fn headers_are_static_then_listed_emulated_then_listed_transport() {
    let ep = endpoint(Vec::new());
    let emulated = vec![
        ("Authorization".to_owned(), "Bearer emulated".to_owned()),
        ("X-Tenant".to_owned(), "t1".to_owned()),
        ("X-Unlisted".to_owned(), "no".to_owned()),
    ];
    let transport = vec![
        ("cookie".to_owned(), b"session=1".to_vec()),
        ("x-forwarded-for".to_owned(), b"no".to_vec()),
    ];
    let h = request_headers(&ep, &emulated, &transport);
    let get =
        |n: &str| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_slice());
    assert_eq!(get("x-static"), Some(&b"s"[..]));
    assert_eq!(get("cookie"), Some(&b"session=1"[..]), "a transport header replaces a static one");
    assert_eq!(get("authorization"), Some(&b"Bearer emulated"[..]), "no real one: emulated");
    assert_eq!(get("x-tenant"), Some(&b"t1"[..]));
    assert_eq!(get("x-unlisted"), None);
    assert_eq!(get("x-forwarded-for"), None);
    let real = vec![("authorization".to_owned(), b"Bearer real".to_vec())];
    let h = request_headers(&ep, &emulated, &real);
    let auth: Vec<_> = h.iter().filter(|(k, _)| k.eq_ignore_ascii_case("authorization")).collect();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].1, b"Bearer real", "the transport value wins over the emulated one");
}

#[test]
fn verdicts_follow_the_envelope_and_the_status_transforms() {
    let to_error = StatusTransform {
        status_code: 403,
        to_error: crate::config::TransformError {
            code: 1403,
            message: "no".into(),
            temporary: false,
        },
        ..StatusTransform::default()
    };
    let to_disconnect = StatusTransform {
        status_code: 401,
        to_disconnect: crate::config::TransformDisconnect { code: 4401, reason: "auth".into() },
        ..StatusTransform::default()
    };
    let ep = endpoint(vec![to_error, to_disconnect]);
    let v = |o: Outcome| verdict::<wire::RpcResult>(&ep, o);
    assert!(matches!(v(Err(CallError::Status(403))), Verdict::Error(e) if e.code == 1403));
    assert!(matches!(v(Err(CallError::Status(401))), Verdict::Disconnect(d) if d.code == 4401));
    assert!(matches!(v(Err(CallError::Status(500))), Verdict::Failed(_)));
    assert!(matches!(v(Err(CallError::Timeout)), Verdict::Failed(_)));
    assert!(matches!(v(Ok(Bytes::from_static(b"nope"))), Verdict::Failed(_)));
    assert!(matches!(v(Ok(Bytes::from_static(b"{}"))), Verdict::Result(None)));
    let both = br#"{"error":{"code":1001},"disconnect":{"code":4000,"reason":"r"}}"#;
    assert!(matches!(v(Ok(Bytes::from_static(both))), Verdict::Disconnect(d) if d.code == 4000));
    let ok = br#"{"result":{"data":{"a":1},"b64data":"eyJiIjoyfQ=="}}"#;
    let Verdict::Result(Some(r)) = v(Ok(Bytes::from_static(ok))) else { panic!("a result") };
    assert_eq!(wire::pick(&r.data, &r.b64data).unwrap().unwrap(), &br#"{"b":2}"#[..], "b64 wins");
}
