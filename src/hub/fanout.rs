//! Fan-out: one channel event to this shard's subscribers, encoded once per encoding and queued
//! as the same shared frame on every connection (each writer then flushes its whole queue in
//! one write).
//!
//! Owns: the encode-once caches of one delivery. It calls down only: into the hub's index, the
//! connection queues, `hub::encode`/`hub::delta` and the protocol encoders. A connection whose
//! queue refuses the frame is reported back, not closed here: closing takes subscriptions out
//! of the hub, which the caller does after the loop.
//!
//! Must not: send to other shards, decide recovery (the caller handles a gap first), or copy a
//! frame per subscriber.

use crate::broker::Event;
use crate::client::conn::{ConnKey, Conns, Refused};
use crate::client::queue::Out;
use crate::hub::delta::DeltaFrames;
use crate::hub::encode::event_out;
use crate::hub::filter::TagsFilter;
use crate::hub::Hub;
use crate::metrics::{FrameType, ShardMetrics};
use crate::transport::Encoding;

/// Delivers `event` of `channel` to the live local subscribers that take it (publications to
/// all whose tags filter passes it, each distinct filter evaluated once; join/leave to those
/// who asked), each queue bounded by `queue_max` bytes. Connections that refused it are
/// appended to `refused`. Returns whether anyone was a recipient.
pub fn deliver(
    hub: &mut Hub,
    conns: &mut Conns,
    metrics: &mut ShardMetrics,
    channel: &str,
    event: &Event,
    queue_max: usize,
    refused: &mut Vec<(ConnKey, Refused)>,
) -> bool {
    // Each distinct filter's verdict on this publication (no allocation without filters).
    let mut verdicts: Vec<bool> = Vec::new();
    if let (Event::Pub(p), Some(f)) = (event, hub.filtered_subscribers(channel)) {
        let verdict = |s: &Option<(std::sync::Arc<TagsFilter>, u32)>| {
            s.as_ref().is_some_and(|(f, _)| f.matches(&p.tags))
        };
        verdicts = f.filters.iter().map(verdict).collect();
        let dropped = f.keys.iter().filter(|(_, slot)| !verdicts[*slot as usize]).count();
        metrics.tags_filter_dropped += dropped as u64;
    }
    if recipients(hub, channel, event).is_empty() && !verdicts.contains(&true) {
        return false;
    }
    let base = match event {
        Event::Pub(p) => hub.next_delta_base(channel, &p.data),
        Event::Join(_) | Event::Leave(_) => None,
    };
    let filtered = hub.filtered_subscribers(channel).map_or(&[][..], |f| f.keys.as_slice());
    let passing = filtered
        .iter()
        .filter(|(_, slot)| verdicts.get(*slot as usize).copied().unwrap_or(false))
        .map(|(k, _)| k);
    let slices = recipients(hub, channel, event).iter().chain(passing);
    if let (Event::Pub(p), Some(base)) = (event, base) {
        let mut frames = DeltaFrames::new(channel, p, base);
        for &key in slices {
            let delta = conns
                .get_mut(key)
                .and_then(|c| c.session_mut())
                .and_then(|s| s.delta_state(channel, true));
            let count = (&mut *metrics, Some(FrameType::PushPublication));
            let sent = conns.enqueue_as(key, queue_max, count, |enc| frames.frame(enc, delta));
            note(key, sent, refused);
        }
        return true;
    }
    // Encoded at most once per encoding, on first need (`None` inside: JSON cannot carry
    // binary data, those subscribers are refused).
    let mut cache: [Option<Option<Out>>; Encoding::COUNT] = Default::default();
    let frame = Some(FrameType::of_event(event));
    for &key in slices {
        let sent = conns.enqueue_as(key, queue_max, (&mut *metrics, frame), |encoding| {
            cache[encoding as usize]
                .get_or_insert_with(|| event_out(channel, event, encoding))
                .clone()
        });
        note(key, sent, refused);
    }
    true
}

/// Who takes `event`: publications go to all live subscribers, join/leave to those who asked.
fn recipients<'h>(hub: &'h Hub, channel: &str, event: &Event) -> &'h [ConnKey] {
    match event {
        Event::Pub(_) => hub.subscribers(channel),
        Event::Join(_) | Event::Leave(_) => hub.join_leave_subscribers(channel),
    }
}

fn note(key: ConnKey, sent: Result<(), Refused>, refused: &mut Vec<(ConnKey, Refused)>) {
    match sent {
        Ok(()) | Err(Refused::Closed) => {}
        Err(why) => refused.push((key, why)),
    }
}
