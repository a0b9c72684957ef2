//! A channel's stream as the memory broker keeps it: position (offset, epoch) and history ring,
//! plus the history vocabulary every broker speaks (policy, query, position, errors).
//!
//! Owns: one stream's state; plain data with `now` passed in, tested without a clock. Must not:
//! deliver anything or know about connections or shards.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::protocol::Publication;

/// Length of a generated epoch (Centrifugo uses 8 ASCII letters).
const EPOCH_LEN: usize = 8;

/// History settings of one publish, resolved by the publisher's shard from namespace options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Most publications kept (`history_size`); 0 = no history.
    pub size: usize,
    /// How long publications are kept after the last publish (`history_ttl`).
    pub ttl: Duration,
    /// How long the stream's position (epoch, offset) outlives its last publish or read
    /// (`history_meta_ttl`); ZERO = forever.
    pub meta_ttl: Duration,
}

impl HistoryPolicy {
    /// Whether this publish goes into a stream (assigns an offset).
    pub fn enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// Position of a stream: the offset of its newest publication and its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// Top offset (0 before the first publication of an epoch).
    pub offset: u64,
    /// Stream identity; a new epoch invalidates saved offsets.
    pub epoch: String,
}

/// What a history read asks for (spec §6.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Most publications to return; `None` = every retained one. `Some(0)` returns only the
    /// position.
    pub limit: Option<usize>,
    /// Only publications after (or, reversed, before) this offset of this epoch.
    pub since: Option<Position>,
    /// Newest first.
    pub reverse: bool,
}

/// Why a history read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// `since.epoch` names another stream (error 112).
    #[error("unrecoverable position")]
    UnrecoverablePosition,
    /// The broker keeps no history (NATS; error 108).
    #[error("not available")]
    NotAvailable,
}

/// A channel's stream: position plus the retained publications, oldest first.
#[derive(Debug)]
pub struct Stream {
    position: Position,
    entries: VecDeque<Entry>,
    /// When the retained publications expire (`history_ttl` after the last publish), in ms.
    expire_at_ms: u64,
    /// When the position itself is forgotten (`history_meta_ttl` after the last publish or
    /// read), in ms; `u64::MAX` = never.
    meta_expire_at_ms: u64,
    /// `history_meta_ttl` of the last touch, in ms (0 = forever).
    meta_ttl_ms: u64,
}

#[derive(Debug)]
struct Entry {
    publication: Arc<Publication>,
}

/// A fresh random epoch of ASCII letters.
pub fn new_epoch() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..EPOCH_LEN).map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())])).collect()
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            position: Position { offset: 0, epoch: new_epoch() },
            entries: VecDeque::new(),
            expire_at_ms: 0,
            meta_expire_at_ms: u64::MAX,
            meta_ttl_ms: 0,
        }
    }
}

impl Stream {
    /// Current position.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Whether the position has outlived `history_meta_ttl`: the stream is then gone, and the
    /// next use starts a new epoch (saved positions become unrecoverable, as upstream).
    pub fn meta_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.meta_expire_at_ms
    }

    /// Starts a new epoch when the meta expired, then extends the meta's life from `now`.
    pub fn touch(&mut self, policy: HistoryPolicy, now_ms: u64) {
        if self.meta_expired(now_ms) {
            *self = Stream::default();
        }
        self.meta_ttl_ms = u64::try_from(policy.meta_ttl.as_millis()).unwrap_or(u64::MAX);
        self.keep_alive(now_ms);
    }

    /// Extends the meta's life from `now` by the last known `history_meta_ttl`.
    pub fn keep_alive(&mut self, now_ms: u64) {
        self.meta_expire_at_ms = match self.meta_ttl_ms {
            0 => u64::MAX,
            ttl => now_ms.saturating_add(ttl),
        };
    }

    /// Appends a publication: assigns the next offset, stores it, trims by size and age.
    /// Returns the stored publication (with its offset) to be delivered.
    pub fn append(
        &mut self,
        mut publication: Publication,
        policy: HistoryPolicy,
        now_ms: u64,
    ) -> Arc<Publication> {
        self.touch(policy, now_ms);
        self.expire(now_ms);
        self.position.offset += 1;
        publication.offset = self.position.offset;
        let publication = Arc::new(publication);
        self.entries.push_back(Entry { publication: Arc::clone(&publication) });
        while self.entries.len() > policy.size {
            self.entries.pop_front();
        }
        let ttl_ms = u64::try_from(policy.ttl.as_millis()).unwrap_or(u64::MAX);
        self.expire_at_ms = now_ms.saturating_add(ttl_ms);
        publication
    }

    /// Drops retained publications once `history_ttl` has passed since the last publish; the
    /// position (offset and epoch) survives, as in Centrifugo.
    pub fn expire(&mut self, now_ms: u64) {
        if now_ms >= self.expire_at_ms {
            self.entries.clear();
        }
    }

    /// Retained publications, oldest first.
    pub fn publications(&self) -> impl Iterator<Item = &Arc<Publication>> {
        self.entries.iter().map(|e| &e.publication)
    }

    /// Reads retained publications per `query` (spec §6.2); the position to report alongside is
    /// [`Stream::position`], the stream top, never the page position.
    pub fn read(
        &mut self,
        query: &HistoryQuery,
        now_ms: u64,
    ) -> Result<Vec<Arc<Publication>>, HistoryError> {
        self.expire(now_ms);
        if let Some(since) = &query.since {
            if !since.epoch.is_empty() && since.epoch != self.position.epoch {
                return Err(HistoryError::UnrecoverablePosition);
            }
        }
        let limit = query.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let all = self.entries.iter().map(|e| &e.publication);
        let picked: Vec<Arc<Publication>> = match (&query.since, query.reverse) {
            (None, false) => all.take(limit).cloned().collect(),
            (None, true) => all.rev().take(limit).cloned().collect(),
            (Some(since), false) => {
                all.filter(|p| p.offset > since.offset).take(limit).cloned().collect()
            }
            (Some(since), true) => {
                all.rev().filter(|p| p.offset < since.offset).take(limit).cloned().collect()
            }
        };
        Ok(picked)
    }

    /// Drops every retained publication; the position stays (API `history_remove`).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawJson;

    fn publication(n: u32) -> Publication {
        Publication {
            data: RawJson::from_value_str(&format!("{{\"n\":{n}}}")).unwrap(),
            ..Publication::default()
        }
    }

    #[test]
    fn offsets_grow_and_ring_keeps_newest() {
        let policy = HistoryPolicy { size: 3, ttl: Duration::from_secs(60), ..Default::default() };
        let mut s = Stream::default();
        let epoch = s.position().epoch.clone();
        assert_eq!(epoch.len(), EPOCH_LEN);
        for n in 1..=5 {
            let p = s.append(publication(n), policy, 1_000);
            assert_eq!(p.offset, u64::from(n));
        }
        assert_eq!(s.position(), &Position { offset: 5, epoch });
        let kept: Vec<u64> = s.publications().map(|p| p.offset).collect();
        assert_eq!(kept, vec![3, 4, 5]);
    }

    #[test]
    fn ttl_expires_publications_but_keeps_position() {
        let policy = HistoryPolicy { size: 10, ttl: Duration::from_secs(1), ..Default::default() };
        let mut s = Stream::default();
        s.append(publication(1), policy, 0);
        s.expire(999);
        assert_eq!(s.publications().count(), 1);
        s.expire(1_000);
        assert_eq!(s.publications().count(), 0);
        assert_eq!(s.position().offset, 1);
        assert_eq!(s.append(publication(2), policy, 2_000).offset, 2);
    }

    fn offsets(r: Result<Vec<Arc<Publication>>, HistoryError>) -> Vec<u64> {
        r.unwrap().iter().map(|p| p.offset).collect()
    }

    #[test]
    fn history_queries_follow_the_spec_table() {
        let policy = HistoryPolicy { size: 10, ttl: Duration::from_secs(60), ..Default::default() };
        let mut s = Stream::default();
        for n in 1..=5 {
            s.append(publication(n), policy, 0);
        }
        let epoch = s.position().epoch.clone();
        let q = |limit: Option<usize>, since: Option<u64>, reverse: bool| HistoryQuery {
            limit,
            since: since.map(|offset| Position { offset, epoch: epoch.clone() }),
            reverse,
        };
        assert!(offsets(s.read(&q(Some(0), None, false), 1)).is_empty());
        assert_eq!(offsets(s.read(&q(None, None, false), 1)), vec![1, 2, 3, 4, 5]);
        assert_eq!(offsets(s.read(&q(Some(2), None, false), 1)), vec![1, 2]);
        assert_eq!(offsets(s.read(&q(Some(2), None, true), 1)), vec![5, 4]);
        assert_eq!(offsets(s.read(&q(Some(10), Some(3), false), 1)), vec![4, 5]);
        assert_eq!(offsets(s.read(&q(Some(10), Some(3), true), 1)), vec![2, 1]);
        let other = HistoryQuery {
            limit: Some(10),
            since: Some(Position { offset: 1, epoch: "other".into() }),
            reverse: false,
        };
        assert_eq!(s.read(&other, 1), Err(HistoryError::UnrecoverablePosition));
        s.clear();
        assert!(offsets(s.read(&q(None, None, false), 1)).is_empty());
        assert_eq!(s.position().offset, 5, "history_remove keeps the position");
    }

    #[test]
    fn meta_ttl_forgets_the_position_and_starts_a_new_epoch() {
        let policy = HistoryPolicy {
            size: 10,
            ttl: Duration::from_secs(1),
            meta_ttl: Duration::from_secs(5),
        };
        let mut s = Stream::default();
        s.append(publication(1), policy, 0);
        let epoch = s.position().epoch.clone();
        s.touch(policy, 4_000);
        assert!(!s.meta_expired(8_999), "a read at 4 s extends the meta to 9 s");
        assert!(s.meta_expired(9_000));
        let p = s.append(publication(2), policy, 9_000);
        assert_eq!(p.offset, 1, "a new stream starts again at 1");
        assert_ne!(s.position().epoch, epoch);
    }

    #[test]
    fn epochs_differ_between_streams() {
        assert_ne!(Stream::default().position().epoch, Stream::default().position().epoch);
    }
}
