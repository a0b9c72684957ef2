//! The command connection's protocol state and the RESP encoding every connection uses.
//!
//! A [`Link`] holds encoded commands not yet written and, in order, what to do with each reply
//! ([`Then`]). Redis answers in order, so the reply to the oldest outstanding command is always
//! the next frame: no ids, no lookups, and a reply nobody waits for means the connection is out
//! of step.
//!
//! Owns: encoding (`encode_command`, `encode_setup`) and the pipeline bookkeeping.
//!
//! Must not: touch a socket (`io` writes `out` and reads replies), or queue on a link that is
//! down: the command fails at once, so a publish is never accepted and then lost.

use std::collections::VecDeque;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redis_protocol::resp2::types::BorrowedFrame;

use super::address::Address;
use super::reply::Parse;
use crate::broker::ReplyTo;

/// What to do with the reply to one command.
#[derive(Debug)]
pub enum Then {
    /// Nothing (presence upkeep, join/leave, node announcements).
    Ignore,
    /// Turn the reply into an answer for a parked request.
    Answer(ReplyTo, Parse),
}

/// Appends one command as a RESP array of bulk strings.
pub fn encode_command(out: &mut BytesMut, args: &[&[u8]]) {
    let parts: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    // Encoding into a growable buffer only fails on a size overflow, impossible here.
    let _ = redis_protocol::resp2::encode::extend_encode_borrowed(
        out,
        &BorrowedFrame::Array(&parts),
        false,
    );
}

/// Appends the commands that open a connection as `auth` asks (AUTH, SELECT, CLIENT SETNAME);
/// returns how many replies they produce.
pub fn encode_setup(out: &mut BytesMut, auth: &Address, client_name: &str) -> usize {
    let mut n = 0;
    if !auth.password.is_empty() {
        if auth.user.is_empty() {
            encode_command(out, &[b"AUTH", auth.password.as_bytes()]);
        } else {
            encode_command(out, &[b"AUTH", auth.user.as_bytes(), auth.password.as_bytes()]);
        }
        n += 1;
    }
    if auth.db != 0 {
        encode_command(out, &[b"SELECT", auth.db.to_string().as_bytes()]);
        n += 1;
    }
    if !client_name.is_empty() {
        encode_command(out, &[b"CLIENT", b"SETNAME", client_name.as_bytes()]);
        n += 1;
    }
    n
}

/// A command connection's protocol state.
#[derive(Debug, Default)]
pub struct Link {
    /// Encoded commands not yet written.
    pub out: BytesMut,
    /// One entry per command sent or queued, oldest first.
    pub waiting: VecDeque<Then>,
    /// Connected and handshaken.
    pub up: bool,
    /// The writer task waiting for commands.
    pub waker: Option<Waker>,
    /// Since when the oldest outstanding command has waited without any reply coming (`None`
    /// when nothing is outstanding): a link silent for `io_timeout` with work pending is broken.
    pub stalled_since: Option<Instant>,
}

impl Link {
    /// Queues a command; `Err` gives `then` back when the link is down.
    pub fn push(&mut self, args: &[&[u8]], then: Then) -> Result<(), Then> {
        if !self.up {
            return Err(then);
        }
        encode_command(&mut self.out, args);
        if self.waiting.is_empty() {
            self.stalled_since = Some(Instant::now());
        }
        self.waiting.push_back(then);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// The reply to the oldest outstanding command.
    pub fn pop(&mut self) -> Option<Then> {
        let then = self.waiting.pop_front()?;
        // Any reply shows the server is alive: the clock restarts for the next command.
        self.stalled_since = (!self.waiting.is_empty()).then(Instant::now);
        Some(then)
    }

    /// Whether commands have waited `limit` without a single reply.
    pub fn stalled(&self, limit: Duration) -> bool {
        self.stalled_since.is_some_and(|t| t.elapsed() >= limit)
    }

    /// The link broke: everything outstanding fails.
    pub fn down(&mut self) -> Vec<Then> {
        self.stalled_since = None;
        self.up = false;
        self.out.clear();
        self.waiting.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_authenticates_selects_and_names_only_when_asked() {
        let d = crate::config::Redis::default();
        let mut out = BytesMut::new();
        let bare = Address::parse("h:1", &d).unwrap();
        assert_eq!(encode_setup(&mut out, &bare, ""), 0);
        assert!(out.is_empty());
        let full = Address::parse("redis://bob:pw@h:1/3", &d).unwrap();
        assert_eq!(encode_setup(&mut out, &full, "rotor"), 3);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("*3\r\n$4\r\nAUTH\r\n$3\r\nbob\r\n$2\r\npw\r\n"), "{text}");
        assert!(text.contains("SELECT\r\n$1\r\n3\r\n") && text.ends_with("$5\r\nrotor\r\n"));
    }

    #[test]
    fn links_refuse_commands_while_down() {
        let mut link = Link::default();
        assert!(link.push(&[b"PING"], Then::Ignore).is_err());
        link.up = true;
        assert!(link.push(&[b"PING"], Then::Ignore).is_ok());
        assert_eq!(&link.out[..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(link.down().len(), 1);
        assert!(link.out.is_empty() && !link.up);
    }

    #[test]
    fn a_link_is_stalled_only_when_its_oldest_command_waited_the_whole_limit() {
        let mut link = Link { up: true, ..Link::default() };
        assert!(!link.stalled(Duration::ZERO), "nothing outstanding");
        link.push(&[b"PING"], Then::Ignore).unwrap();
        link.push(&[b"PING"], Then::Ignore).unwrap();
        assert!(link.stalled(Duration::ZERO));
        assert!(!link.stalled(Duration::from_secs(60)), "just sent");
        link.pop();
        assert!(link.stalled_since.is_some(), "one still outstanding");
        link.pop();
        assert!(!link.stalled(Duration::ZERO), "all answered");
    }
}
