//! A channel event as the frame each encoding needs: the bytes fan-out shares among every
//! subscriber of one encoding on a shard.
//!
//! Owns: the mapping from ([`Event`], [`Encoding`]) to a queued [`Out`] frame. Must not decide
//! who gets it.

use crate::broker::Event;
use crate::client::queue::Out;
use crate::protocol::{json, protobuf, PushBody};
use crate::transport::Encoding;

/// A channel event as one push frame in an encoding; `None` for binary data in JSON.
pub fn event_out(channel: &str, event: &Event, encoding: Encoding) -> Option<Out> {
    let bare = |body: PushBody| {
        Out::json(|buf| json::encode_push(channel, &body, json::PushFraming::Bare, buf))
    };
    Some(match (event, encoding) {
        (Event::Pub(p), Encoding::Json | Encoding::JsonPush) if p.binary => return None,
        (Event::Pub(p), Encoding::Json) => {
            Out::json(|buf| json::encode_publication_push(channel, p, buf))
        }
        (Event::Join(i), Encoding::Json) => {
            Out::json(|buf| json::encode_join_push(channel, i, buf))
        }
        (Event::Leave(i), Encoding::Json) => {
            Out::json(|buf| json::encode_leave_push(channel, i, buf))
        }
        (Event::Pub(p), Encoding::Protobuf) => {
            Out::binary(|buf| protobuf::encode_publication_push(channel, p, buf))
        }
        (Event::Join(i), Encoding::Protobuf) => Out::binary(|buf| {
            protobuf::encode_push(channel, &PushBody::Join((**i).clone()), buf);
        }),
        (Event::Leave(i), Encoding::Protobuf) => Out::binary(|buf| {
            protobuf::encode_push(channel, &PushBody::Leave((**i).clone()), buf);
        }),
        (Event::Pub(p), Encoding::JsonPush) => bare(PushBody::Publication((**p).clone())),
        (Event::Join(i), Encoding::JsonPush) => bare(PushBody::Join((**i).clone())),
        (Event::Leave(i), Encoding::JsonPush) => bare(PushBody::Leave((**i).clone())),
    })
}
