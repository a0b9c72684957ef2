//! The read-only channel commands of a connection: `history`, `presence`, `presence_stats`
//! (spec §2.11, §5.4, §6.2, §7.1).
//!
//! Owns: permission checks and the shaping of requests and replies. The data lives on the
//! channel's home shard and is asked for with one call; this module must not keep any of it.

use std::sync::Arc;

use crate::broker::stream::{HistoryError, HistoryPolicy, HistoryQuery, Position};
use crate::broker::Reply;
use crate::channel::{self, Subject};
use crate::client::conn::ConnKey;
use crate::client::recovery::owned;
use crate::client::{rules, Clients, Resume, Step};
use crate::protocol::{
    codes, HistoryRequest, HistoryResult, PresenceResult, PresenceStatsResult, ReplyBody,
};
use crate::shard::msg::{Answer, Call};

/// Counts of a presence answer: distinct clients and distinct users (anonymous is user "").
pub fn presence_stats(entries: &[Arc<crate::protocol::ClientInfo>]) -> PresenceStatsResult {
    let mut users: Vec<&str> = entries.iter().map(|i| i.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    PresenceStatsResult {
        num_clients: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        num_users: u32::try_from(users.len()).unwrap_or(u32::MAX),
    }
}

/// Presence entries as the reply lists them, ordered by client id for stable output.
pub fn presence_map(
    entries: &[Arc<crate::protocol::ClientInfo>],
) -> Vec<(String, crate::protocol::ClientInfo)> {
    let mut out: Vec<(String, crate::protocol::ClientInfo)> =
        entries.iter().map(|i| (i.client.clone(), (**i).clone())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

impl Clients<'_> {
    /// Resolves `channel` and runs `check` for this connection; `Err` carries the step to
    /// return (a reply was queued or the connection is closing).
    fn channel_query(
        &mut self,
        key: ConnKey,
        id: u32,
        channel: &str,
        check: fn(&channel::Resolved<'_>, &Subject<'_>, bool) -> Result<(), channel::ChannelError>,
    ) -> Result<HistoryPolicy, Step> {
        if channel.is_empty() {
            return Err(self.bad_request(key));
        }
        let insecure = self.env.cfg.client.insecure;
        let namespaces = Arc::clone(&self.env.namespaces);
        let Some(session) = self.conns.get(key).and_then(|c| c.session()) else {
            return Err(Step::Stop);
        };
        let subscribed = session.has_sub(channel);
        let user = Arc::clone(&session.user);
        let checked = namespaces.resolve(channel).and_then(|r| {
            channel::check_name(&r)?;
            check(&r, &Subject { user: &user, insecure }, subscribed)?;
            Ok(rules::history_policy(r.options, false))
        });
        checked.map_err(|e| {
            self.reply_error(key, id, rules::channel_error(e));
            Step::Next
        })
    }

    /// `history`: permission, the client-side limit cap, then a read on the home shard.
    pub(super) fn client_history(&mut self, key: ConnKey, id: u32, req: HistoryRequest) -> Step {
        let policy = match self.channel_query(key, id, &req.channel, channel::check_history) {
            Ok(p) => p,
            Err(step) => return step,
        };
        if req.reverse && req.since.as_ref().is_some_and(|s| s.offset == 0) {
            self.reply_error(key, id, codes::ERROR_BAD_REQUEST);
            return Step::Next;
        }
        let max = self.env.cfg.client.history_max_publication_limit;
        let limit = match usize::try_from(req.limit) {
            Ok(n) if max == 0 || n <= max => Some(n),
            // Negative or above the cap: the cap (spec §5.4).
            _ if max > 0 => Some(max),
            _ => None,
        };
        let query = HistoryQuery {
            limit,
            since: req.since.map(|s| Position { offset: s.offset, epoch: s.epoch }),
            reverse: req.reverse,
        };
        let channel: Arc<str> = Arc::from(req.channel.as_str());
        let call = Call::ReadHistory { channel: Arc::clone(&channel), policy, query };
        let resume: Resume = Box::new(move |c: &mut Clients<'_>, answers| {
            c.finish_history(key, id, answers.into_iter().next().flatten());
            Step::Next
        });
        self.ask_home(key, &channel, call, resume)
    }

    fn finish_history(&mut self, key: ConnKey, id: u32, answer: Option<Answer>) {
        let body = match answer {
            Some(Answer::Channel(Reply::History(Ok((pubs, top))))) => {
                ReplyBody::History(HistoryResult {
                    publications: owned(&pubs),
                    epoch: top.epoch,
                    offset: top.offset,
                })
            }
            Some(Answer::Channel(Reply::History(Err(HistoryError::NotAvailable)))) => {
                ReplyBody::Error(codes::ERROR_NOT_AVAILABLE)
            }
            Some(Answer::Channel(Reply::History(Err(_)))) => {
                ReplyBody::Error(codes::ERROR_UNRECOVERABLE_POSITION)
            }
            _ => ReplyBody::Error(codes::ERROR_INTERNAL),
        };
        self.reply(key, id, &body);
    }

    /// `presence` / `presence_stats`.
    pub(super) fn client_presence(
        &mut self,
        key: ConnKey,
        id: u32,
        channel: &str,
        stats: bool,
    ) -> Step {
        if let Err(step) = self.channel_query(key, id, channel, channel::check_presence) {
            return step;
        }
        let ch: Arc<str> = Arc::from(channel);
        let resume: Resume = Box::new(move |c: &mut Clients<'_>, answers| {
            c.finish_presence(key, id, stats, answers.into_iter().next().flatten());
            Step::Next
        });
        self.ask_home(key, channel, Call::ReadPresence { channel: ch }, resume)
    }

    fn finish_presence(&mut self, key: ConnKey, id: u32, stats: bool, answer: Option<Answer>) {
        let body = match answer {
            Some(Answer::Channel(Reply::Presence(entries))) if stats => {
                ReplyBody::PresenceStats(presence_stats(&entries))
            }
            Some(Answer::Channel(Reply::Presence(entries))) => {
                ReplyBody::Presence(PresenceResult { presence: presence_map(&entries) })
            }
            _ => ReplyBody::Error(codes::ERROR_INTERNAL),
        };
        self.reply(key, id, &body);
    }
}
