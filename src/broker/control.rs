//! Node-to-node control messages: Centrifugo's `controlpb.Command` (the subset Rotor sends and
//! reads), so Rotor and Centrifugo nodes on one broker see each other in API `info`.
//!
//! Owns: the wire structs and the node registry kept by shard 0. Must not: touch connections.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message;

/// A node not heard from for this long is dropped from `info` (spec §10.1).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(7);

/// How often a node announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(3);

/// `controlpb.Command`: one control message; Rotor reads and writes the `node` kind.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Command {
    /// Sending node's id.
    #[prost(string, tag = "1")]
    pub uid: String,
    /// A node announcement.
    #[prost(message, optional, tag = "4")]
    pub node: Option<Node>,
}

/// `controlpb.Node`: a node's identity and counts, as API `info` shows them.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Node {
    /// Node id.
    #[prost(string, tag = "1")]
    pub uid: String,
    /// Node name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Server version.
    #[prost(string, tag = "3")]
    pub version: String,
    /// Connected clients.
    #[prost(uint32, tag = "4")]
    pub num_clients: u32,
    /// Distinct users.
    #[prost(uint32, tag = "5")]
    pub num_users: u32,
    /// Channels with subscribers.
    #[prost(uint32, tag = "6")]
    pub num_channels: u32,
    /// Seconds since start.
    #[prost(uint32, tag = "7")]
    pub uptime: u32,
    /// Subscriptions.
    #[prost(uint32, tag = "10")]
    pub num_subs: u32,
}

impl Node {
    /// The announcement message for this node.
    pub fn announcement(&self) -> Vec<u8> {
        Command { uid: self.uid.clone(), node: Some(self.clone()) }.encode_to_vec()
    }
}

/// Other nodes heard on the control channel (kept by shard 0).
#[derive(Debug, Default)]
pub struct Registry {
    nodes: HashMap<String, (Node, Instant)>,
}

impl Registry {
    /// Reads a control message; node announcements from other nodes are remembered.
    pub fn receive(&mut self, data: &[u8], own_uid: &str, now: Instant) {
        let Ok(cmd) = Command::decode(data) else {
            tracing::debug!("undecodable control message");
            return;
        };
        if let Some(node) = cmd.node.filter(|n| !n.uid.is_empty() && n.uid != own_uid) {
            self.nodes.insert(node.uid.clone(), (node, now));
        }
    }

    /// Nodes heard within [`NODE_TIMEOUT`], by name; older ones are forgotten.
    pub fn alive(&mut self, now: Instant) -> Vec<Node> {
        self.nodes.retain(|_, (_, seen)| now.duration_since(*seen) < NODE_TIMEOUT);
        let mut out: Vec<Node> = self.nodes.values().map(|(n, _)| n.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.uid.cmp(&b.uid)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: &str, name: &str) -> Node {
        Node { uid: uid.into(), name: name.into(), num_clients: 3, ..Node::default() }
    }

    #[test]
    fn registry_keeps_other_nodes_until_they_go_quiet() {
        let mut r = Registry::default();
        let t0 = Instant::now();
        r.receive(&node("b", "beta").announcement(), "a", t0);
        r.receive(&node("a", "self").announcement(), "a", t0);
        r.receive(b"\xff\xff not protobuf", "a", t0);
        let alive = r.alive(t0 + Duration::from_secs(1));
        assert_eq!(alive.len(), 1, "own announcements and garbage are ignored");
        assert_eq!((alive[0].name.as_str(), alive[0].num_clients), ("beta", 3));
        assert!(r.alive(t0 + NODE_TIMEOUT).is_empty(), "a silent node is dropped after 7s");
    }
}
