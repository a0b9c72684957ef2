//! Sessions of the emulated and unidirectional transports (spec §1.4–§1.6): the session id a
//! connect reply carries, the `/emulation` commands it routes to its connection, and the
//! disconnect a unidirectional client gets instead of a connect error.
//!
//! Owns: the session → connection map and each emulated connection's inbox of commands waiting
//! for its command task. Session ids start with the owning shard's index, so a request that
//! arrives on any shard reaches the owner in one hop.
//!
//! Must not: run commands here (the connection's task in `server` does, in order).

use bytes::Bytes;

use super::Command;
use crate::hub::ConnKey;
use crate::protocol::{codes, decode_commands, Disconnect};
use crate::shard::id::Lane;
use crate::shard::id::ShardId;
use crate::shard::msg::{Cast, ShardMsg};
use crate::shard::Shard;

/// A session id that names no shard of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown session")]
pub struct UnknownSession;

/// An emulated connection's session.
#[derive(Debug)]
pub struct Emulated {
    /// The random part of its session id.
    pub session: uuid::Uuid,
    /// Commands received through `/emulation`, not handled yet.
    pub inbox: Vec<Command>,
}

/// Session id as the client sees it: `<shard>.<uuid>`.
pub fn session_id(shard: ShardId, session: uuid::Uuid) -> String {
    format!("{}.{session}", shard.index())
}

/// The shard and random part of a session id; `None` if it is not one of ours.
pub fn parse_session(id: &str) -> Option<(usize, uuid::Uuid)> {
    let (shard, session) = id.split_once('.')?;
    Some((shard.parse().ok()?, uuid::Uuid::parse_str(session).ok()?))
}

impl Shard {
    /// Registers a new emulated connection's session; returns the id for its connect reply.
    pub(crate) fn open_session(&mut self, key: ConnKey) -> String {
        let session = uuid::Uuid::new_v4();
        self.sessions.insert(session, key);
        self.emulated.insert(key, Emulated { session, inbox: Vec::new() });
        session_id(self.id, session)
    }

    /// Forgets a closed connection's session.
    pub(crate) fn close_session(&mut self, key: ConnKey) {
        if let Some(e) = self.emulated.remove(&key) {
            self.sessions.remove(&e.session);
        }
    }

    /// Commands from `/emulation` for `session` (its `data`: the command frame, JSON text or
    /// delimited Protobuf as the connection speaks). An unknown session is ignored, as upstream
    /// does: the stream it belonged to is gone and the client reconnects. A frame that does
    /// not decode closes the connection with 3501.
    pub fn emulate(&mut self, session: uuid::Uuid, data: &Bytes, quoted: bool) {
        let Some(&key) = self.sessions.get(&session) else { return };
        let protobuf = self.is_protobuf(key);
        let unquoted;
        let data = if quoted && !protobuf {
            match serde_json::from_slice::<String>(data) {
                Ok(text) => {
                    unquoted = Bytes::from(text.into_bytes());
                    &unquoted
                }
                Err(_) => {
                    self.disconnect(key, codes::DISCONNECT_BAD_REQUEST);
                    return;
                }
            }
        } else {
            data
        };
        let Some(commands) = decode_commands(protobuf, data) else {
            self.disconnect(key, codes::DISCONNECT_BAD_REQUEST);
            return;
        };
        let Some(e) = self.emulated.get_mut(&key) else { return };
        e.inbox.extend(commands);
        if let Some(w) = self.conn_mut(key).and_then(|c| c.reader.take()) {
            w.wake();
        }
    }

    /// Hands `/emulation` commands to the shard owning `session` (this one, or another in one
    /// hop). `quoted`: `data` is a JSON string holding a JSON session's commands (what another
    /// node forwards).
    pub fn emulate_session(
        &mut self,
        session: &str,
        data: Bytes,
        quoted: bool,
    ) -> Result<(), UnknownSession> {
        let (owner, session) = parse_session(session).ok_or(UnknownSession)?;
        if owner >= self.count {
            return Err(UnknownSession);
        }
        if owner == self.id.index() {
            self.emulate(session, &data, quoted);
        } else {
            let cast = Cast::Emulation { session, data, quoted };
            self.send(Lane::Main, ShardId(owner as u16), ShardMsg::Cast(Box::new(cast)));
        }
        Ok(())
    }

    /// Takes an emulated connection's waiting commands (empty when none).
    pub fn take_inbox(&mut self, key: ConnKey) -> Vec<Command> {
        self.emulated.get_mut(&key).map(|e| std::mem::take(&mut e.inbox)).unwrap_or_default()
    }

    /// The disconnect a unidirectional client gets for a connect error:
    /// `client.connect_code_to_unidirectional_disconnect` when enabled, else the built-in map
    /// (spec §1.6).
    pub(crate) fn uni_connect_error(&self, code: u32) -> Disconnect {
        let map = &self.cfg.client.connect_code_to_unidirectional_disconnect;
        if map.enabled {
            if let Some(t) = map.transforms.iter().find(|t| t.code == code) {
                return Disconnect { code: t.to.code, reason: t.to.reason.clone().into() };
            }
        }
        match code {
            109 | 110 => codes::DISCONNECT_EXPIRED,
            111 => codes::DISCONNECT_TOO_MANY_REQUESTS,
            103 => codes::DISCONNECT_PERMISSION_DENIED,
            _ => codes::DISCONNECT_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_name_their_shard() {
        let u = uuid::Uuid::from_u128(7);
        let id = session_id(ShardId(3), u);
        assert_eq!(parse_session(&id), Some((3, u)));
        assert_eq!(parse_session("3"), None);
        assert_eq!(parse_session("x.00000000-0000-0000-0000-000000000007"), None);
        assert_eq!(parse_session("1.not-a-uuid"), None);
    }
}
