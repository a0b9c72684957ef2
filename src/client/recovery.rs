//! Subscribe-time recovery (spec §6.3–6.5): deciding a subscription from its home shard's
//! answer (position, recovered publications, or the reasons it fails), announcing it, and
//! handing over the events kept meanwhile, merged by offset, so nothing is lost or doubled.
//! Also the other end of a lost delivery: positioned subscribers sent back to recovery.
//!
//! Owns: [`PendingSub`] (a subscribe waiting for its home shard) and what it settles into. Must
//! not: write a publication of a channel to a client before that client's subscribe reply.

use std::sync::Arc;

use crate::broker::stream::{HistoryQuery, Position};
use crate::broker::{Event, Reply};
use crate::client::conn::ConnKey;
use crate::client::session::SubFlags;
use crate::client::{Clients, Resume, Step};
use crate::hub::delta;
use crate::protocol::{
    codes, Publication, PushBody, ReplyBody, SubscribePush, SubscribeRequest, SubscribeResult,
};
use crate::shard::msg::{Answer, Call};

/// How a finished subscription is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubReply {
    /// Reply to the client's `subscribe` command with this id.
    Command(u32),
    /// A `subscribe` push (server-side subscription made while connected); recovered
    /// publications follow as publication pushes.
    Push,
    /// An entry of the connect reply's `subs`.
    Connect,
}

/// A subscription whose home-shard answer is in and whose outcome is decided.
#[derive(Debug)]
pub struct DoneSub {
    /// Channel.
    pub channel: Arc<str>,
    flags: SubFlags,
    /// The subscribe result.
    pub result: SubscribeResult,
    events: Vec<Event>,
    /// Offset the client is at once it has the result (0 = no stream).
    base: u64,
}

/// What `Clients::settle` decided.
#[derive(Debug)]
pub enum Settled {
    /// The subscription went away meanwhile; nothing to announce.
    Gone,
    /// The home shard's answer was lost (shutdown); the subscription is undone.
    Failed,
    /// Recovery failed and the client asked for an error instead (flag 2); undone.
    Unrecovered(SubReply),
    /// Announce `result`, then `Clients::go_live`.
    Done(Box<DoneSub>),
}

/// A subscribe reply waiting for the home shard.
#[derive(Debug)]
pub struct PendingSub {
    /// How the outcome is announced.
    pub reply: SubReply,
    /// Channel.
    pub channel: Arc<str>,
    /// Behaviour.
    pub flags: SubFlags,
    /// The client asked to recover from this position.
    pub recover: Option<Position>,
    /// Answer 112 instead of `recovered: false`.
    pub reject_unrecovered: bool,
    /// Fields known before the home shard answers (token data, expiry).
    pub result: SubscribeResult,
}

/// Where a subscription recovers from: the client's position when it asked (`recover`), the
/// start of the stream when cache mode recovers unasked (spec §6.5), else nowhere.
pub(crate) fn recover_from(flags: SubFlags, req: &SubscribeRequest) -> Option<Position> {
    if !flags.has(SubFlags::RECOVERABLE) {
        None
    } else if req.recover {
        Some(Position { offset: req.offset, epoch: req.epoch.clone() })
    } else if flags.has(SubFlags::AUTO_CACHE) {
        Some(Position::default())
    } else {
        None
    }
}

impl Clients<'_> {
    /// The history read that recovery needs: everything after `from` (stream mode, up to
    /// `client.recovery_max_publication_limit`), or the newest publication (cache mode).
    pub(crate) fn recovery_query(&self, flags: SubFlags, from: &Position) -> HistoryQuery {
        if flags.has(SubFlags::CACHE) {
            return HistoryQuery { limit: Some(1), since: None, reverse: true };
        }
        let limit = self.env.cfg.client.recovery_max_publication_limit;
        HistoryQuery {
            limit: (limit > 0).then_some(limit),
            since: Some(from.clone()),
            reverse: false,
        }
    }

    /// Decides a subscription from the home shard's answer (spec §6.4, §6.5): its result and
    /// the events kept meanwhile. Nothing is written to the client here.
    pub(crate) fn settle(
        &mut self,
        key: ConnKey,
        pending: PendingSub,
        answer: Option<Answer>,
    ) -> Settled {
        let PendingSub { reply, channel, flags, recover, reject_unrecovered, mut result } = pending;
        // `None`: the subscription was removed meanwhile (unsubscribe, disconnect), which also
        // took it out of the hub and told the home shard.
        let Some(events) = self.hub.take_buffered(&channel, key) else { return Settled::Gone };
        if !self.holds_sub(key, &channel) {
            self.abandon(&channel);
            return Settled::Gone;
        }
        let Some(Answer::Channel(Reply::Subscribed { top, read })) = answer else {
            self.drop_sub(key, &channel);
            self.abandon(&channel);
            return Settled::Failed;
        };
        let mut base = 0;
        if let Some(top) = top.filter(|_| flags.has(SubFlags::POSITIONED)) {
            result.positioned = true;
            result.recoverable = flags.has(SubFlags::RECOVERABLE);
            result.offset = top.offset;
            result.epoch.clone_from(&top.epoch);
            base = top.offset;
            if let Some(from) = recover {
                result.was_recovering = true;
                let same_epoch = from.epoch.is_empty() || from.epoch == top.epoch;
                let (recovered, publications) = match read {
                    Err(_) => (false, Vec::new()),
                    Ok(pubs) if flags.has(SubFlags::CACHE) => {
                        let at_top = from.offset == top.offset && same_epoch;
                        match pubs.first() {
                            Some(_) if at_top => (true, Vec::new()),
                            Some(_) => (true, pubs),
                            None => (at_top && from.offset > 0, Vec::new()),
                        }
                    }
                    Ok(pubs) => {
                        let complete = match (pubs.first(), pubs.last()) {
                            (Some(first), Some(last)) => {
                                first.offset == from.offset + 1 && last.offset == top.offset
                            }
                            _ => top.offset == from.offset,
                        };
                        (complete && same_epoch, pubs)
                    }
                };
                self.metrics.recovered(recovered, recovered && !publications.is_empty());
                if recovered {
                    result.recovered = true;
                    result.offset = from.offset;
                    // Completeness is judged on the whole stream; the client gets only what
                    // its tags filter passes, as it would have live.
                    let filter = self.sub_filter(key, &channel);
                    let passes =
                        |p: &&Arc<Publication>| filter.as_ref().is_none_or(|f| f.matches(&p.tags));
                    let kept: Vec<Arc<Publication>> =
                        publications.iter().filter(passes).cloned().collect();
                    result.publications = owned(&kept);
                } else if reject_unrecovered {
                    self.drop_sub(key, &channel);
                    self.abandon(&channel);
                    return Settled::Unrecovered(reply);
                }
            }
        }
        Settled::Done(Box::new(DoneSub { channel, flags, result, events, base }))
    }

    /// Makes a settled subscriber live and hands over the events it kept, merged by offset:
    /// what the reply already covered is dropped, a gap means lost state (3010).
    pub(crate) fn go_live(&mut self, key: ConnKey, done: DoneSub) {
        let DoneSub { channel, flags, events, mut base, .. } = done;
        // The announcement may have closed the connection (queue overflow): then it gives its
        // place up instead of joining.
        if !self.holds_sub(key, &channel) {
            self.abandon(&channel);
            return;
        }
        let lost = flags.has(SubFlags::POSITIONED) && self.hub.sync_position(&channel, base);
        let filter = self.sub_filter(key, &channel);
        self.hub.go_live(&channel, key, flags.has(SubFlags::PUSH_JOIN_LEAVE), filter.as_ref());
        if lost {
            self.insufficient_state_except(&channel, key);
        }
        for event in events {
            if let Event::Pub(p) = &event {
                if p.offset > 0 && base > 0 {
                    if p.offset <= base {
                        continue;
                    }
                    if p.offset > base + 1 && flags.has(SubFlags::POSITIONED) {
                        self.disconnect(key, codes::DISCONNECT_INSUFFICIENT_STATE);
                        return;
                    }
                    base = p.offset;
                }
                if filter.as_ref().is_some_and(|f| !f.matches(&p.tags)) {
                    continue;
                }
            }
            self.push_event(key, &channel, &event);
        }
    }

    /// Second half of a subscription that needed the home shard: settle it, announce it (the
    /// subscribe reply, or a `subscribe` push followed by recovered publications), then go live.
    pub(crate) fn finish_subscribe(
        &mut self,
        key: ConnKey,
        pending: PendingSub,
        answer: Option<Answer>,
    ) -> Step {
        let reply = pending.reply;
        match self.settle(key, pending, answer) {
            Settled::Gone => {}
            Settled::Failed => match reply {
                SubReply::Command(id) => self.reply_error(key, id, codes::ERROR_INTERNAL),
                SubReply::Push | SubReply::Connect => {
                    self.disconnect(key, codes::DISCONNECT_SERVER_ERROR);
                }
            },
            Settled::Unrecovered(SubReply::Command(id)) => {
                self.reply_error(key, id, codes::ERROR_UNRECOVERABLE_POSITION);
            }
            Settled::Unrecovered(_) => self.disconnect(key, codes::DISCONNECT_INSUFFICIENT_STATE),
            Settled::Done(mut done) => {
                match reply {
                    SubReply::Command(id) => {
                        let mut result = std::mem::take(&mut done.result);
                        if done.flags.has(SubFlags::DELTA) {
                            let json = !self.is_protobuf(key);
                            let pubs = std::mem::take(&mut result.publications);
                            result.publications = delta::chain(&pubs, json);
                        }
                        self.reply(key, id, &ReplyBody::Subscribe(result));
                    }
                    SubReply::Push | SubReply::Connect => {
                        let r = std::mem::take(&mut done.result);
                        let push = PushBody::Subscribe(SubscribePush {
                            recoverable: r.recoverable,
                            epoch: r.epoch,
                            offset: r.offset,
                            positioned: r.positioned,
                            data: r.data,
                        });
                        let channel = Arc::clone(&done.channel);
                        self.push(key, &channel, &push);
                        for p in r.publications {
                            self.push(key, &channel, &PushBody::Publication(p));
                        }
                    }
                }
                self.go_live(key, *done);
            }
        }
        Step::Next
    }

    /// Asks the home shard of every channel with local subscribers for its stream top; a shard
    /// found behind lost a delivery and sends its positioned subscribers to recovery. This
    /// catches a lost *last* publication, which no later publication would reveal (spec §6.3's
    /// periodic position check, once per sweep).
    pub fn check_positions(&mut self) {
        let channels: Vec<Arc<str>> = self.hub.positioned_channels().cloned().collect();
        for channel in channels {
            let call = Call::ReadPosition { channel: Arc::clone(&channel) };
            let ch = Arc::clone(&channel);
            let resume: Resume = Box::new(move |c: &mut Clients<'_>, answers| {
                let top = answers.into_iter().next().flatten();
                if let Some(Answer::Channel(Reply::Position(Some(top)))) = top {
                    if c.hub.sync_position(&ch, top) {
                        c.insufficient_state(&ch);
                    }
                }
                Step::Next
            });
            self.ask_home_detached(None, &channel, call, resume);
        }
    }

    /// A delivery to this shard was lost: every positioned subscriber of `channel` here must
    /// recover (spec §6.3: unsubscribe 2500, or disconnect 3010 for server-side ones).
    pub fn insufficient_state(&mut self, channel: &str) {
        self.insufficient_state_except(channel, ConnKey { slot: u32::MAX, generation: 0 });
    }

    /// [`Shard::insufficient_state`] for everyone but `spared` (a subscriber whose position
    /// was just read from the home shard).
    fn insufficient_state_except(&mut self, channel: &str, spared: ConnKey) {
        let keys: Vec<ConnKey> = self.hub.all_subscribers(channel);
        for key in keys.into_iter().filter(|k| *k != spared) {
            let positioned = self
                .conns
                .get(key)
                .and_then(|c| c.session())
                .and_then(|s| s.sub(channel))
                .is_some_and(|s| s.flags.has(SubFlags::POSITIONED));
            if positioned {
                self.unsubscribe_with(
                    key,
                    channel,
                    codes::UNSUBSCRIBE_INSUFFICIENT_STATE,
                    codes::DISCONNECT_INSUFFICIENT_STATE,
                );
            }
        }
    }
}

/// Publications cloned out of shared history entries for a reply.
pub fn owned(pubs: &[Arc<Publication>]) -> Vec<Publication> {
    pubs.iter().map(|p| (**p).clone()).collect()
}
