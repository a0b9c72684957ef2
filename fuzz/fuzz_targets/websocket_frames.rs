//! WebSocket frame reader: the inbound side of a WebSocket connection after its handshake, as
//! `server::read_loop` runs it. The input is the byte stream a client sends, arriving in reads
//! of a size chosen by the input; with permessage-deflate negotiated (chosen by the input)
//! the bytes go through `transport::deflate::Inflater` first, then tungstenite parses frames
//! from the in-memory `transport::websocket::Wire` with the server's settings
//! (`websocket::context`). Like the server, reading stops at the first fatal error.
//!
//! Checked besides "no panic": no message tungstenite hands over is larger than the limit it
//! was given (the inflated limit with deflate), and what the inflater keeps buffered between
//! reads stays within one frame header plus the wire limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rotor::transport::deflate::{Inflater, Limits};
use rotor::transport::websocket::{self, Wire};
use tungstenite::{Error, Message};

/// Longest WebSocket frame header: 2 bytes, 8 of length, 4 of mask key.
const HEADER_MAX: usize = 14;

fuzz_target!(|data: &[u8]| {
    let [mode, read, rest @ ..] = data else { return };
    let deflate = mode & 1 != 0;
    // Small limits (so the limit paths are reached) or the defaults' order of size.
    let (wire, inflated) = if mode & 2 != 0 { (64, 256) } else { (65_536, 655_360) };
    // tungstenite's read chunk: the server's default when `read_buffer_size` is 0, or larger.
    let read_buffer_size = if mode & 4 != 0 { 256 } else { 4096 };
    let read_size = usize::from(*read) + 1;
    let parsed_limit = if deflate { inflated } else { wire };
    let limits = Limits { wire, inflated };

    let mut ctx = websocket::context(parsed_limit, read_buffer_size);
    let mut inflater = deflate.then(Inflater::default);
    let (mut raw, mut input, mut output) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in rest.chunks(read_size) {
        // `ReadState::take_in`.
        match &mut inflater {
            None => input.extend_from_slice(chunk),
            Some(inflater) => {
                raw.extend_from_slice(chunk);
                if inflater.feed(&mut raw, &mut input, limits).is_err() {
                    return;
                }
                assert!(raw.len() < HEADER_MAX + wire, "inflater keeps {} bytes", raw.len());
            }
        }
        loop {
            match ctx.read(&mut Wire { input: &mut input, output: &mut output }) {
                Ok(Message::Close(_)) => {
                    let _ = ctx.flush(&mut Wire { input: &mut input, output: &mut output });
                    return;
                }
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                    assert!(message.len() <= parsed_limit, "a message over the limit");
                }
                Ok(_) => {}
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
            output.clear();
        }
    }
});
