//! This process as a node of a (future) cluster: its id, name and start time, as API `info`
//! reports them.
//!
//! Owns: process-wide identity set once at start. Must not hold anything that changes.

use std::sync::OnceLock;
use std::time::Instant;

/// Identity of this node.
#[derive(Debug)]
pub struct Node {
    /// Random id for this run (UUID v4).
    pub uid: String,
    /// `<hostname>_<port>`, as Centrifugo names nodes by default.
    pub name: String,
    /// When the process started serving.
    pub started: Instant,
}

static NODE: OnceLock<Node> = OnceLock::new();

/// Records this node's identity (`name`: `node.name`, empty = `<hostname>_<port>`); later
/// calls keep the first one.
pub fn init(name: &str, port: u16) -> &'static Node {
    NODE.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        Node {
            uid: uuid::Uuid::new_v4().to_string(),
            name: if name.is_empty() { format!("{host}_{port}") } else { name.to_owned() },
            started: Instant::now(),
        }
    })
}

/// This node (initialised with port 0 when `init` was never called, as in unit tests).
pub fn get() -> &'static Node {
    init("", 0)
}
