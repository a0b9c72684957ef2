//! Surveys: questions one node asks every other node over the control channel, answered on the
//! asking node's own channel (Centrifugo's `SurveyRequest`/`SurveyResponse`). API `channels`
//! uses one to count subscribers cluster-wide.
//!
//! Owns (shard 0 only): the surveys this node has open and the questions from other nodes
//! waiting for the control task (answering needs every shard's counts, which takes awaiting).
//! Must not: wait for a node that stopped announcing itself; an open survey ends at its
//! deadline with the answers it has.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::broker::control::{self, Received, SurveyRequest, SurveyResponse};
use crate::broker::ReplyTo;
use crate::shard::msg::{Answer, ShardMsg};
use crate::shard::Shard;

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

/// Shard 0's survey state.
#[derive(Debug, Default)]
pub struct Surveys {
    next_id: u64,
    open: HashMap<u64, Open>,
    /// Questions from other nodes, for the control task: (asking node, question).
    pub inbox: VecDeque<(String, SurveyRequest)>,
    /// The control task, asleep.
    pub waker: Option<Waker>,
}

impl Surveys {
    /// The earliest deadline of an open survey.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|o| o.deadline).min()
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl Shard {
    /// A control message from another node (shard 0): announcements go to the registry,
    /// operations on connections to every shard, survey questions to the control task and
    /// answers to the open survey.
    pub(super) fn control_message(&mut self, data: &[u8]) {
        let now = Instant::now();
        match self.nodes.receive(data, &crate::node::get().uid, now) {
            Some(Received::Op(op)) => self.conns_everywhere(&op),
            Some(Received::Survey { from, request }) => {
                self.surveys.inbox.push_back((from, request));
                self.surveys.wake();
            }
            Some(Received::Answer { from, response }) => {
                let id = response.id;
                let Some(open) = self.surveys.open.get_mut(&id) else { return };
                if open.waiting.remove(&from) {
                    open.answers.push((from, response));
                }
                if open.waiting.is_empty() {
                    self.finish_survey(id);
                }
            }
            None => {}
        }
    }

    /// Starts a survey of every other node alive (shard 0). `Some` when there is nobody to ask.
    pub(super) fn start_survey(
        &mut self,
        op: String,
        data: bytes::Bytes,
        to_node: Option<String>,
        to: ReplyTo,
    ) -> Option<Answer> {
        let now = Instant::now();
        let mut waiting: HashSet<String> =
            self.nodes.alive(now).into_iter().map(|n| n.uid).collect();
        if let Some(node) = &to_node {
            // A node this one has not heard from: nobody to forward to.
            if !waiting.contains(node) {
                return Some(Answer::Failed);
            }
            waiting = HashSet::from([node.clone()]);
        }
        if waiting.is_empty() || !self.external_broker() {
            return Some(Answer::Survey(Vec::new()));
        }
        self.surveys.next_id += 1;
        let id = self.surveys.next_id;
        let uid = &crate::node::get().uid;
        let request = control::survey_request(uid, SurveyRequest { id, op, data });
        match (&to_node, self.broker()) {
            (Some(node), Some(b)) => b.publish_to_node(node, &request),
            (None, Some(b)) => b.publish_control(&request),
            (_, None) => {}
        }
        let deadline = now + SURVEY_TIMEOUT;
        self.surveys.open.insert(id, Open { to, waiting, answers: Vec::new(), deadline });
        // The control task sleeps until the earliest deadline; this one may be earlier.
        self.surveys.wake();
        None
    }

    fn finish_survey(&mut self, id: u64) {
        if let Some(open) = self.surveys.open.remove(&id) {
            if !open.waiting.is_empty() {
                tracing::warn!(
                    missing = open.waiting.len(),
                    "survey timed out; answering with the nodes that replied"
                );
            }
            let to = open.to;
            let msg =
                ShardMsg::Answer { req: to.req, answer: Box::new(Answer::Survey(open.answers)) };
            self.send(to.lane, to.origin, msg);
        }
    }

    /// Ends the surveys whose deadline passed.
    pub fn expire_surveys(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .surveys
            .open
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.finish_survey(id);
        }
    }

    /// Sends this node's answer to a survey to the asking node.
    pub fn answer_survey(&mut self, to_node: &str, response: SurveyResponse) {
        let data = control::survey_response(&crate::node::get().uid, response);
        if let Some(b) = self.broker() {
            b.publish_to_node(to_node, &data);
        }
    }
}
