//! A connection's outbound queue: the frames waiting for its writer, bounded in bytes, and how
//! a writer takes them as one write.
//!
//! Owns: [`Out`] (a queued frame, often shared by every subscriber that gets the same bytes),
//! [`Batch`] and the batching rules per transport. Must not decide what to send or when to
//! close (the caller checks the bound and disconnects), or perform I/O.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::transport::websocket::{self, OpCode};
use crate::transport::{stream, Transport};

/// Room reserved in front of an encoded payload for the largest WebSocket header, so a frame is
/// built without copying the payload.
const HEADER_ROOM: usize = 10;

/// One item of a connection's outbound queue.
#[derive(Debug, Clone)]
pub enum Out {
    /// A complete text/binary data frame whose payload starts at `header`; consecutive data
    /// items are merged into one frame at flush time (text newline-joined, binary concatenated:
    /// Protobuf messages are length-delimited already).
    Data {
        /// Whole frame, shared by every subscriber that gets the same bytes.
        frame: Bytes,
        /// Length of the frame header.
        header: u8,
    },
    /// A control frame (close, pong) written as is.
    Control(Bytes),
}

impl Out {
    /// Encodes a JSON payload straight into a text frame.
    pub fn json(encode: impl FnOnce(&mut Vec<u8>)) -> Out {
        Out::frame(OpCode::Text, encode)
    }

    /// Encodes delimited Protobuf messages straight into a binary frame.
    pub fn binary(encode: impl FnOnce(&mut Vec<u8>)) -> Out {
        Out::frame(OpCode::Binary, encode)
    }

    fn frame(op: OpCode, encode: impl FnOnce(&mut Vec<u8>)) -> Out {
        let mut buf = vec![0u8; HEADER_ROOM];
        encode(&mut buf);
        let len = buf.len() - HEADER_ROOM;
        let header = websocket::header_len(len);
        let mut head = Vec::with_capacity(header);
        websocket::write_header(&mut head, op, len);
        let start = HEADER_ROOM - header;
        buf[start..HEADER_ROOM].copy_from_slice(&head);
        let frame = Bytes::from(buf).slice(start..);
        // A WebSocket header is at most 10 bytes.
        let header = u8::try_from(header).unwrap_or(u8::MAX);
        Out::Data { frame, header }
    }

    /// Bytes this item occupies in a queue.
    pub fn len(&self) -> usize {
        match self {
            Out::Data { frame, .. } => frame.len(),
            Out::Control(b) => b.len(),
        }
    }

    /// Whether the item carries no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a writer flushes in one write.
#[derive(Debug)]
pub enum Batch {
    /// A single queued frame, written without copying.
    One(Bytes),
    /// Several frames joined into one buffer.
    Many(Vec<u8>),
}

/// The frames waiting for a connection's writer.
#[derive(Debug, Default)]
pub struct Queue {
    items: VecDeque<Out>,
    /// Bytes in `items`, bounded by `client.queue_max_size` (checked by the caller).
    bytes: usize,
}

impl Queue {
    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends an item.
    pub fn push(&mut self, out: Out) {
        self.bytes += out.len();
        self.items.push_back(out);
    }

    /// Drops everything queued, capacity included: only a closing connection clears its queue,
    /// and one cut for being slow may have grown it to `client.queue_max_size` worth of items.
    pub fn clear(&mut self) {
        self.items = VecDeque::new();
        self.bytes = 0;
    }

    /// Takes everything queued as one write. Consecutive data frames become a single frame with
    /// newline-joined payloads (what SDKs expect from a batching server).
    pub fn take_batch(&mut self, transport: Transport, protobuf: bool) -> Option<Batch> {
        match transport {
            Transport::WebSocket { .. } | Transport::UniWebSocket { join: true } => {
                self.take_ws_batch()
            }
            Transport::UniWebSocket { join: false } => {
                // One message per push: the queued frames are written back to back.
                if self.items.len() <= 1 {
                    return self.take_ws_batch();
                }
                let mut buf = Vec::with_capacity(self.bytes);
                for out in self.items.drain(..) {
                    match out {
                        Out::Data { frame, .. } | Out::Control(frame) => {
                            buf.extend_from_slice(&frame);
                        }
                    }
                }
                self.bytes = 0;
                Some(Batch::Many(buf))
            }
            _ => self.take_stream_batch(transport, protobuf),
        }
    }

    /// A streaming response's batch: the queued messages framed for the transport in one chunk
    /// (control items, the final chunk, are written as they are).
    fn take_stream_batch(&mut self, transport: Transport, protobuf: bool) -> Option<Batch> {
        if self.items.is_empty() {
            return None;
        }
        let mut body = Vec::with_capacity(self.bytes + 8 * self.items.len());
        let mut buf = Vec::with_capacity(body.capacity() + 16);
        for out in self.items.drain(..) {
            match out {
                Out::Data { frame, header } => stream::append_message(
                    transport,
                    protobuf,
                    &frame[usize::from(header)..],
                    &mut body,
                ),
                Out::Control(b) => {
                    stream::append_chunk(&body, &mut buf);
                    body.clear();
                    buf.extend_from_slice(&b);
                }
            }
        }
        stream::append_chunk(&body, &mut buf);
        self.bytes = 0;
        Some(Batch::Many(buf))
    }

    fn take_ws_batch(&mut self) -> Option<Batch> {
        if self.items.len() <= 1 {
            let out = self.items.pop_front()?;
            self.bytes = 0;
            return Some(Batch::One(match out {
                Out::Data { frame, .. } => frame,
                Out::Control(b) => b,
            }));
        }
        let mut buf = Vec::with_capacity(self.bytes + 16);
        let mut run: Vec<(Bytes, u8)> = Vec::new();
        for out in self.items.drain(..) {
            match out {
                // A compressed message (RSV1) cannot share a frame: it goes as it is.
                Out::Data { frame, header } if frame.first().is_none_or(|b| b & 0x40 == 0) => {
                    run.push((frame, header));
                }
                Out::Data { frame: b, .. } | Out::Control(b) => {
                    flush_run(&mut run, &mut buf);
                    buf.extend_from_slice(&b);
                }
            }
        }
        flush_run(&mut run, &mut buf);
        self.bytes = 0;
        Some(Batch::Many(buf))
    }
}

/// Writes a run of consecutive data frames as one frame (or as is, when it is one).
fn flush_run(run: &mut Vec<(Bytes, u8)>, buf: &mut Vec<u8>) {
    match run.len() {
        0 => {}
        1 => buf.extend_from_slice(&run[0].0),
        _ => {
            // A connection speaks one protocol, so a run is all text or all binary.
            let text = run[0].0.first().is_some_and(|b| b & 0x0f == OpCode::Text as u8);
            let (op, seps) = if text { (OpCode::Text, run.len() - 1) } else { (OpCode::Binary, 0) };
            let len: usize =
                run.iter().map(|(f, h)| f.len() - usize::from(*h)).sum::<usize>() + seps;
            websocket::write_header(buf, op, len);
            for (i, (f, h)) in run.iter().enumerate() {
                if i > 0 && text {
                    buf.push(b'\n');
                }
                buf.extend_from_slice(&f[usize::from(*h)..]);
            }
        }
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(payload: &str) -> Out {
        Out::json(|b| b.extend_from_slice(payload.as_bytes()))
    }

    const WS: Transport = Transport::WebSocket { native_ping: false };

    #[test]
    fn json_out_builds_a_complete_text_frame() {
        let Out::Data { frame, header } = data("{\"a\":1}") else { panic!() };
        assert_eq!(header, 2);
        assert_eq!(&frame[..], b"\x81\x07{\"a\":1}");
        let big = "x".repeat(300);
        let Out::Data { frame, header } = data(&big) else { panic!() };
        assert_eq!(header, 4);
        assert_eq!(frame.len(), 304);
    }

    #[test]
    fn batch_joins_data_frames_with_newlines_and_keeps_control_frames_apart() {
        let mut q = Queue::default();
        for p in ["{\"a\":1}", "{}", "{\"b\":2}"] {
            q.push(data(p));
        }
        q.push(Out::Control(websocket::close_frame(3001, "shutdown")));
        let Some(Batch::Many(buf)) = q.take_batch(WS, false) else { panic!() };
        let joined = b"{\"a\":1}\n{}\n{\"b\":2}";
        let mut expect = vec![0x81, joined.len() as u8];
        expect.extend_from_slice(joined);
        expect.extend_from_slice(&websocket::close_frame(3001, "shutdown"));
        assert_eq!(buf, expect);
        assert!(q.take_batch(WS, false).is_none());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn single_item_is_written_without_copy() {
        let mut q = Queue::default();
        let o = data("{}");
        let Out::Data { frame, .. } = o.clone() else { panic!() };
        q.push(o);
        let Some(Batch::One(b)) = q.take_batch(WS, false) else { panic!() };
        assert_eq!(b.as_ptr(), frame.as_ptr(), "same allocation");
    }
}
