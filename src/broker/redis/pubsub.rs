//! The PUB/SUB connection's protocol state: the channels this shard is home for and that have
//! subscribers somewhere on the node, and what must wait until Redis confirms a subscription.
//!
//! Interest acknowledgements and positioned subscribe calls are held per channel until its
//! SUBSCRIBE is confirmed: a position read before that could miss a publication made in
//! between, and the subscriber would never learn of it.
//!
//! Owns: which channels are wanted, SUBSCRIBE/UNSUBSCRIBE encoding, and the held work.
//!
//! Must not: touch a socket (`io` writes `out`), deliver anything (the home shard emits what
//! PUB/SUB brings), or drop a held acknowledgement when the link breaks: it goes out once the
//! resubscription is confirmed.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Waker;

use bytes::BytesMut;

use super::link::encode_command;
use super::settings::Settings;
use crate::broker::ReplyTo;
use crate::broker::SubscribeCall;
use crate::shard::id::ShardId;

/// One channel in the PUB/SUB link.
#[derive(Debug, Default)]
pub struct SubEntry {
    /// The channel has interest; a SUBSCRIBE was (or will be) sent.
    pub wanted: bool,
    /// SUBSCRIBE commands sent and not yet confirmed.
    pub inflight: u32,
    /// Interest acknowledgements to send once confirmed: (shard, generation).
    pub acks: Vec<(ShardId, u64)>,
    /// Subscribe calls to serve once confirmed.
    pub deferred: Vec<(ReplyTo, SubscribeCall)>,
}

impl SubEntry {
    /// Redis delivers this channel's messages to us.
    pub fn active(&self) -> bool {
        self.wanted && self.inflight == 0
    }
}

/// A PUB/SUB connection's protocol state.
#[derive(Debug, Default)]
pub struct PubSub {
    /// Encoded SUBSCRIBE/UNSUBSCRIBE commands not yet written.
    pub out: BytesMut,
    /// Connected and handshaken.
    pub up: bool,
    /// The writer task waiting for commands.
    pub waker: Option<Waker>,
    /// Channels (plain names) wanted or with unconfirmed commands.
    pub channels: HashMap<Arc<str>, SubEntry>,
}

impl PubSub {
    fn send(&mut self, verb: &[u8], name: &str) {
        encode_command(&mut self.out, &[verb, name.as_bytes()]);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The channel gained interest: subscribe unless already wanted. Returns whether Redis
    /// already delivers it (acks and calls can proceed at once).
    pub fn want(&mut self, settings: &Settings, channel: &Arc<str>) -> bool {
        let up = self.up;
        let e = self.channels.entry(Arc::clone(channel)).or_default();
        if e.wanted {
            return e.active() && up;
        }
        e.wanted = true;
        if up {
            e.inflight += 1;
            let name = settings.keys.client_channel(channel);
            self.send(settings.verb(b"SUBSCRIBE", b"SSUBSCRIBE"), &name);
        }
        false
    }

    /// The channel lost its last interest: returns the subscribe calls it still held (their
    /// connections are gone; they are answered as failed).
    pub fn unwant(&mut self, settings: &Settings, channel: &str) -> Vec<(ReplyTo, SubscribeCall)> {
        let Some(e) = self.channels.get_mut(channel) else { return Vec::new() };
        e.wanted = false;
        let held = std::mem::take(&mut e.deferred);
        // An entry with SUBSCRIBEs in flight stays, so their confirmations are not mistaken
        // for confirmations of a later SUBSCRIBE.
        if e.inflight == 0 {
            self.channels.remove(channel);
        }
        if self.up {
            let name = settings.keys.client_channel(channel);
            self.send(settings.verb(b"UNSUBSCRIBE", b"SUNSUBSCRIBE"), &name);
        }
        held
    }

    /// Redis confirmed a SUBSCRIBE: returns the held work when the channel became active.
    pub fn confirmed(&mut self, channel: &str) -> Option<SubEntry> {
        let e = self.channels.get_mut(channel)?;
        e.inflight = e.inflight.saturating_sub(1);
        if !e.wanted {
            if e.inflight == 0 {
                self.channels.remove(channel);
            }
            return None;
        }
        if e.inflight > 0 {
            return None;
        }
        Some(SubEntry {
            wanted: true,
            inflight: 0,
            acks: std::mem::take(&mut e.acks),
            deferred: std::mem::take(&mut e.deferred),
        })
    }

    /// The connection is (again) up: subscribe every wanted channel plus `extra` (control).
    pub fn resubscribe(&mut self, settings: &Settings, extra: &[String]) {
        self.up = true;
        self.channels.retain(|_, e| e.wanted);
        let mut names: Vec<String> = Vec::new();
        for (channel, e) in &mut self.channels {
            e.inflight = 1;
            names.push(settings.keys.client_channel(channel));
        }
        if !extra.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(extra.iter().map(String::as_bytes));
            encode_command(&mut self.out, &args);
        }
        if settings.sharded {
            // One SSUBSCRIBE per channel: a command may only name channels of one slot.
            for name in &names {
                encode_command(&mut self.out, &[b"SSUBSCRIBE", name.as_bytes()]);
            }
        } else {
            for chunk in names.chunks(512) {
                let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                args.extend(chunk.iter().map(String::as_bytes));
                encode_command(&mut self.out, &args);
            }
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The connection broke: held subscribe calls are returned to be failed (positioned
    /// subscribers retry). Held acknowledgements stay, and so do wanted channels: they are
    /// subscribed again on reconnect and the acknowledgements go out once Redis confirms, so a
    /// subscribe reply still promises every publication after it.
    pub fn down(&mut self) -> Vec<(ReplyTo, SubscribeCall)> {
        self.up = false;
        self.out.clear();
        let mut calls = Vec::new();
        for e in self.channels.values_mut() {
            e.inflight = 0;
            calls.append(&mut e.deferred);
        }
        self.channels.retain(|_, e| e.wanted);
        calls
    }
}
