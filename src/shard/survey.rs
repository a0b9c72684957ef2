//! Surveys: questions one node asks every other node over the control channel, answered on the
//! asking node's own channel (Centrifugo's `SurveyRequest`/`SurveyResponse`). API `channels`
//! uses one to count subscribers cluster-wide.
//!
//! Owns (shard 0 only): the surveys this node has open and the questions from other nodes
//! waiting for the control task (answering needs every shard's counts, which takes awaiting).
//! Must not: wait for a node that stopped announcing itself; an open survey ends at its
//! deadline with the answers it has. Sending is the caller's (`shard::control`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::broker::control::{SurveyRequest, SurveyResponse};
use crate::broker::ReplyTo;

/// How long a survey waits for the slowest node.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(3);

/// One open survey of this node.
#[derive(Debug)]
struct Open {
    to: ReplyTo,
    waiting: HashSet<String>,
    answers: Vec<(String, SurveyResponse)>,
    deadline: Instant,
}

/// A survey that ended: where its answer goes and what it got.
#[derive(Debug)]
pub struct Finished {
    /// The parked request that asked.
    pub to: ReplyTo,
    /// (node id, answer) of the nodes that replied.
    pub answers: Vec<(String, SurveyResponse)>,
    /// Nodes that did not reply in time.
    pub missing: usize,
}

/// Shard 0's survey state.
#[derive(Debug, Default)]
pub struct Surveys {
    next_id: u64,
    open: HashMap<u64, Open>,
    /// Questions from other nodes, for the control task: (asking node, question).
    inbox: VecDeque<(String, SurveyRequest)>,
    /// The control task, asleep.
    waker: Option<Waker>,
}

impl Surveys {
    /// Opens a survey of the nodes in `waiting`; returns its id. The control task is woken:
    /// it sleeps until the earliest deadline, and this one may be earlier.
    pub fn open(&mut self, to: ReplyTo, waiting: HashSet<String>, now: Instant) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let deadline = now + SURVEY_TIMEOUT;
        self.open.insert(id, Open { to, waiting, answers: Vec::new(), deadline });
        self.wake();
        id
    }

    /// A node answered survey `response.id`; the survey, once every node has.
    pub fn answered(&mut self, from: String, response: SurveyResponse) -> Option<Finished> {
        let id = response.id;
        let open = self.open.get_mut(&id)?;
        if open.waiting.remove(&from) {
            open.answers.push((from, response));
        }
        if !open.waiting.is_empty() {
            return None;
        }
        self.finish(id)
    }

    /// The surveys whose deadline passed, ended with the answers they have.
    pub fn expired(&mut self, now: Instant) -> Vec<Finished> {
        let due: Vec<u64> =
            self.open.iter().filter(|(_, o)| o.deadline <= now).map(|(id, _)| *id).collect();
        due.into_iter().filter_map(|id| self.finish(id)).collect()
    }

    fn finish(&mut self, id: u64) -> Option<Finished> {
        let open = self.open.remove(&id)?;
        Some(Finished { to: open.to, answers: open.answers, missing: open.waiting.len() })
    }

    /// The earliest deadline of an open survey.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|o| o.deadline).min()
    }

    /// Queues another node's question for the control task.
    pub fn ask(&mut self, from: String, request: SurveyRequest) {
        self.inbox.push_back((from, request));
        self.wake();
    }

    /// The next question from another node.
    pub fn question(&mut self) -> Option<(String, SurveyRequest)> {
        self.inbox.pop_front()
    }

    /// Resolves when a question waits; the control task sleeps on it.
    pub fn poll_question(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.inbox.is_empty() {
            self.waker = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}
