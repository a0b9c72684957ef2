//! Centrifugo keys Rotor does not implement yet, with the real binary: harmless ones (one per
//! family) are skipped with one warning each and the server serves; keys an operator relies
//! on, switched on, refuse to start naming the key (from the file and from the environment);
//! `checkconfig` reports both lists.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ROTOR: &str = env!("CARGO_BIN_EXE_rotor");

fn write_config(name: &str, cfg: &Value) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("rotor-keys-{}-{name}.json", std::process::id()));
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

/// One harmless key of each family, as a Centrifugo v6 user's config carries them.
fn harmless() -> (Value, Vec<&'static str>) {
    let patch = json!({
        "usage_stats": {"disabled": true},
        "swagger": {"enabled": true},
        "opentelemetry": {"enabled": true, "api": true},
        "http_server": {"http3": {"enabled": true}},
        "engine": {"redis": {"force_resp2": true}},
        "websocket": {"use_write_buffer_pool": true},
        "uni_websocket": {"disable_closing_handshake": true},
        "admin": {"web_path": "/var/www/admin"},
        "prometheus": {"native_histograms": true},
        "channel": {"proxy": {"subscribe_stream": {"endpoint": "grpc://x:1"}}},
        "map_broker": {"type": "memory"},
    });
    let keys = vec![
        "usage_stats",
        "swagger",
        "opentelemetry",
        "http_server.http3",
        "engine.redis.force_resp2",
        "websocket.use_write_buffer_pool",
        "uni_websocket.disable_closing_handshake",
        "admin.web_path",
        "prometheus.native_histograms",
        "channel.proxy.subscribe_stream",
        "map_broker",
    ];
    (patch, keys)
}

/// Rotor on `config` with both output streams piped.
fn spawn(config: &std::path::Path) -> std::process::Child {
    Command::new(ROTOR)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn harmless_keys_are_skipped_with_one_warning_each_and_the_server_serves() {
    let (patch, keys) = harmless();
    let mut cfg = base_config();
    merge(&mut cfg, patch);
    let path = write_config("harmless", &cfg);
    let mut child = spawn(&path);
    let port = listening_port(&mut child);
    let mut http = Http::connect(port);
    assert_eq!(http.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    assert_eq!(http.api("publish", json!({"channel": "a", "data": {}})).status, 200);
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    for key in keys {
        let warned = stderr.lines().filter(|l| l.contains(&format!("\"{key}\""))).count();
        assert_eq!(warned, 1, "{key} warned {warned} times:\n{stderr}");
    }
    let _ = std::fs::remove_file(path);
}

#[test]
fn relied_on_keys_switched_on_refuse_to_start_naming_the_key() {
    let cases = [
        (json!({"grpc_api": {"enabled": true}}), "grpc_api"),
        (json!({"http_server": {"tls_autocert": {"enabled": true}}}), "http_server.tls_autocert"),
        (json!({"consumers": [{"name": "pg", "enabled": true}]}), "consumers"),
        (
            json!({"client": {"channel_position_max_time_lag": "10s"}}),
            "client.channel_position_max_time_lag",
        ),
        (
            json!({"engine": {"redis": {"presence_hash_field_ttl": true}}}),
            "engine.redis.presence_hash_field_ttl",
        ),
        (
            json!({"channel": {"without_namespace": {"subscribe_stream_proxy_enabled": true}}}),
            "channel.without_namespace.subscribe_stream_proxy_enabled",
        ),
        (json!({"broker": {"nats": {"raw_mode": {"enabled": true}}}}), "broker.nats.raw_mode"),
    ];
    for (i, (patch, key)) in cases.into_iter().enumerate() {
        let mut cfg = base_config();
        merge(&mut cfg, patch);
        let path = write_config(&format!("relied-{i}"), &cfg);
        let mut child = spawn(&path);
        let status = eventually(Duration::from_secs(10), Duration::from_millis(20), || {
            child.try_wait().unwrap().ok_or_else(|| format!("{key}: rotor is still running"))
        });
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "{key}: started");
        assert!(stderr.contains(key) && stderr.contains("refusing to start"), "{key}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
        let _ = std::fs::remove_file(path);
    }
    // The same from the environment.
    let path = write_config("relied-env", &base_config());
    let out = Command::new(ROTOR)
        .arg("-c")
        .arg(&path)
        .env("CENTRIFUGO_GRPC_API_ENABLED", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CENTRIFUGO_GRPC_API_ENABLED"));
    let _ = std::fs::remove_file(path);
}

#[test]
fn checkconfig_reports_the_skipped_and_the_refused_keys() {
    let (patch, keys) = harmless();
    let mut cfg = base_config();
    merge(&mut cfg, patch);
    merge(&mut cfg, json!({"uni_grpc": {"enabled": true}, "webtransport": {"enabled": true}}));
    let path = write_config("checkconfig", &cfg);
    let out = Command::new(ROTOR).arg("checkconfig").arg("-c").arg(&path).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    for key in keys {
        assert!(stdout.contains(&format!("\"{key}\" is not supported")), "{key}: {stdout}");
    }
    for key in ["uni_grpc (rotor cannot", "webtransport (rotor cannot"] {
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
    let _ = std::fs::remove_file(path);
}
