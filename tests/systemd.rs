//! Service-manager integration: sd_notify messages from the real binary, and the unit file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

fn next_message(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 512];
    sock.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn notifies_ready_then_watchdog_then_stopping() {
    let path = std::env::temp_dir().join(format!("rotor-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let notify = path.to_str().unwrap().to_string();
    // 1 s watchdog → a ping every 500 ms while all shards tick.
    let mut server = Server::start_with_env(
        base_config(),
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "1000000")],
    );
    let ready = next_message(&sock).expect("READY=1");
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains(&format!("STATUS=listening on 127.0.0.1:{}", server.port)), "{ready:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut watchdogs = 0;
    while watchdogs < 2 && Instant::now() < deadline {
        assert_eq!(next_message(&sock).as_deref(), Some("WATCHDOG=1"));
        watchdogs += 1;
    }
    assert_eq!(watchdogs, 2);
    let status = server.terminate();
    assert!(status.success());
    // Watchdog pings may still be queued before STOPPING=1; nothing may follow it.
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut rest = Vec::new();
    while let Some(m) = next_message(&sock) {
        rest.push(m);
    }
    assert_eq!(rest.last().map(String::as_str), Some("STOPPING=1"), "{rest:?}");
    assert!(rest[..rest.len() - 1].iter().all(|m| m == "WATCHDOG=1"), "{rest:?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/rotor.service"))
            .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    // verify checks that ExecStart exists, so point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("rotor-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rotor.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/rotor", env!("CARGO_BIN_EXE_rotor")))
        .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze must be installed (the systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pid_file_holds_the_pid_while_running_and_goes_at_exit() {
    let path = std::env::temp_dir().join(format!("rotor-pid-{}.pid", std::process::id()));
    let mut cfg = common::base_config();
    common::merge(&mut cfg, serde_json::json!({"pid_file": path.display().to_string()}));
    let mut server = common::Server::start(cfg);
    let written = std::fs::read_to_string(&path).expect("pid_file written once listening");
    assert_eq!(written.trim(), server.pid().to_string());
    assert!(server.terminate().success());
    assert!(!path.exists(), "pid_file removed at exit");
}
