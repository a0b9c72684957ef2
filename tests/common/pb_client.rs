//! A Protobuf client over the harness's WebSocket client: the `centrifuge-protobuf`
//! subprotocol, length-delimited commands out, replies in.

use prost::Message as _;
use rotor::protocol::pb;
use tungstenite::Message;

use super::{Client, Server};

/// A WebSocket client speaking Protobuf to `server`.
pub fn pb_client(server: &Server) -> Client {
    Client::connect(
        server.port,
        "/connection/websocket",
        &[("Sec-WebSocket-Protocol", "centrifuge-protobuf")],
    )
}

/// Sends `cmds` in one binary frame.
pub fn send(c: &mut Client, cmds: &[pb::Command]) {
    let mut frame = Vec::new();
    for cmd in cmds {
        cmd.encode_length_delimited(&mut frame).unwrap();
    }
    c.ws.send(Message::binary(frame)).unwrap();
}

/// Next replies (a frame may batch several); server pings (empty replies) are skipped.
pub fn next(c: &mut Client) -> Vec<pb::Reply> {
    loop {
        match c.ws.read().expect("read") {
            Message::Binary(b) => {
                let mut rest = &b[..];
                let mut out = Vec::new();
                while !rest.is_empty() {
                    out.push(pb::Reply::decode_length_delimited(&mut rest).expect("reply"));
                }
                out.retain(|r| *r != pb::Reply::default());
                if !out.is_empty() {
                    return out;
                }
            }
            Message::Text(t) => panic!("text frame on a protobuf connection: {t}"),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}
