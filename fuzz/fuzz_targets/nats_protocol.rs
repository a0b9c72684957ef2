//! NATS protocol parser: what a NATS server sends to the broker's connection (`INFO`, `MSG`
//! with its payload, `PING`, `PONG`, `+OK`, `-ERR`; `HMSG` is never asked for, so it is a
//! protocol error). The input is the byte stream, arriving in reads of a size chosen by the
//! input; operations are cut by `broker::nats::parse` as the link does, and each is handled as
//! `broker::nats::io` does: a `MSG` becomes an event of its subscription
//! (`Nats::message`, protobuf pushes from other nodes), `PING` is answered, `PONG` confirms
//! subscriptions.
//!
//! Checked besides "no panic": a parsed operation consumes bytes and an incomplete one none,
//! and the operations do not depend on how the stream was split into reads.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rotor::broker::nats::{self, Nats, Op, Settings};

/// The operations of `stream` read in pieces of `read` bytes, and whether reading stopped on
/// a protocol error.
fn ops(stream: &[u8], read: usize) -> (Vec<Op>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in stream.chunks(read) {
        buf.extend_from_slice(chunk);
        loop {
            // `parse` only takes bytes off the front, so lengths tell what it consumed.
            let before = buf.len();
            match nats::parse(&mut buf) {
                Ok(Some(op)) => {
                    assert!(buf.len() < before, "an operation that consumed nothing");
                    out.push(op);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete operation consumed bytes");
                    break;
                }
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let [read_size, stream @ ..] = data else { return };
    let (whole, whole_failed) = ops(stream, stream.len().max(1));
    let (pieces, pieces_failed) = ops(stream, usize::from(*read_size) + 1);
    assert_eq!(whole_failed, pieces_failed, "an error depends on how the stream was split");
    assert_eq!(whole, pieces, "operations depend on how the stream was split into reads");

    let Ok(settings) = Settings::from_config(&rotor::config::Nats::default()) else { return };
    let mut link = Nats::new(Arc::new(settings), false);
    link.resubscribe();
    for channel in ["news", "chat:room", "a"] {
        link.want(&Arc::from(channel), None);
    }
    for op in whole {
        match op {
            Op::Msg { sid, payload } => {
                let _ = link.message(sid, payload);
            }
            Op::Ping => link.ping(),
            Op::Pong => {
                let _ = link.pong();
            }
            Op::Info { .. } | Op::Ok | Op::Err(_) => {}
        }
    }
});
