//! Sessions of the emulated transports (spec §1.4–§1.5): the session id a connect reply carries
//! and the `/emulation` commands it routes to its connection.
//!
//! Owns: the session id format and the routing of commands to the shard that owns the session.
//! Session ids start with the owning shard's index, so a request that arrives on any shard
//! reaches the owner in one hop. The session → connection map and the inbox are the connection
//! table's. Must not: run commands here (the connection's task in `server` does, in order).

use bytes::Bytes;

use crate::client::Clients;
use crate::protocol::{codes, decode_commands};
use crate::shard::id::{Lane, ShardId};
use crate::shard::msg::{Cast, ShardMsg};

/// A session id that names no shard of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown session")]
pub struct UnknownSession;

/// Session id as the client sees it: `<shard>.<uuid>`.
pub fn session_id(shard: ShardId, session: uuid::Uuid) -> String {
    format!("{}.{session}", shard.index())
}

/// The shard and random part of a session id; `None` if it is not one of ours.
pub fn parse_session(id: &str) -> Option<(usize, uuid::Uuid)> {
    let (shard, session) = id.split_once('.')?;
    Some((shard.parse().ok()?, uuid::Uuid::parse_str(session).ok()?))
}

impl Clients<'_> {
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
        let owner = u16::try_from(owner).ok().filter(|o| usize::from(*o) < self.mesh.count());
        let owner = ShardId(owner.ok_or(UnknownSession)?);
        let cast = Cast::Emulate { session, data, quoted };
        self.mesh.send(Lane::Main, owner, ShardMsg::Cast(Box::new(cast)));
        Ok(())
    }

    /// Commands from `/emulation` for `session` (its `data`: the command frame, JSON text or
    /// delimited Protobuf as the connection speaks). An unknown session is ignored, as upstream
    /// does: the stream it belonged to is gone and the client reconnects. A frame that does
    /// not decode closes the connection with 3501.
    pub fn emulate(&mut self, session: uuid::Uuid, data: &Bytes, quoted: bool) {
        let Some(key) = self.conns.session_conn(session) else { return };
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
        self.conns.deliver_commands(key, commands);
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
