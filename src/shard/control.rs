//! The shard's control plane (shard 0 on a node with Redis or NATS): what other nodes send over
//! the control channel (announcements, operations on connections, survey questions and
//! answers) and the surveys this node starts.
//!
//! Owns: nothing of its own; it joins the node registry, the surveys, the engine (to publish)
//! and the mesh (to answer). Must not: wait for another node inside a handler (a survey ends
//! at its deadline).

use std::collections::HashSet;

use crate::broker::control::{self, Received, SurveyResponse};
use crate::broker::ReplyTo;
use crate::metrics::BrokerMessage;
use crate::shard::msg::{Answer, ShardMsg};
use crate::shard::survey::Finished;
use crate::shard::Shard;

impl Shard {
    /// A control message from another node (shard 0): announcements go to the registry,
    /// operations on connections to every shard, survey questions to the control task and
    /// answers to the open survey.
    pub(super) fn control_message(&mut self, data: &[u8]) {
        self.metrics.broker_received(BrokerMessage::Control);
        let now = self.env.clock.now();
        match self.nodes.receive(data, &crate::node::get().uid, now) {
            Some(Received::Op(op)) => self.with_clients(|c| c.apply_everywhere(&op)),
            Some(Received::Survey { from, request }) => self.surveys.ask(from, request),
            Some(Received::Answer { from, response }) => {
                if let Some(done) = self.surveys.answered(from, response) {
                    self.survey_answered(done);
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
        to_node: Option<&str>,
        to: ReplyTo,
    ) -> Option<Answer> {
        let now = self.env.clock.now();
        let mut waiting: HashSet<String> =
            self.nodes.alive(now).into_iter().map(|n| n.uid).collect();
        if let Some(node) = to_node {
            // A node this one has not heard from: nobody to forward to.
            if !waiting.contains(node) {
                return Some(Answer::Failed);
            }
            waiting = HashSet::from([node.to_owned()]);
        }
        if waiting.is_empty() || !self.engine.connects_nodes() {
            return Some(Answer::Survey(Vec::new()));
        }
        let id = self.surveys.open(to, waiting, now);
        let uid = &crate::node::get().uid;
        let request = control::survey_request(uid, control::SurveyRequest { id, op, data });
        self.metrics.broker_sent(BrokerMessage::Control);
        match to_node {
            Some(node) => self.engine.broker().publish_to_node(node, &request),
            None => self.engine.broker().publish_control(&request),
        }
        None
    }

    fn survey_answered(&mut self, done: Finished) {
        if done.missing > 0 {
            tracing::warn!(
                missing = done.missing,
                "survey timed out; answering with the nodes that replied"
            );
        }
        let to = done.to;
        let msg = ShardMsg::Answer { req: to.req, answer: Box::new(Answer::Survey(done.answers)) };
        self.mesh.send(to.lane, to.origin, msg);
    }

    /// Ends the surveys whose deadline passed.
    pub fn expire_surveys(&mut self) {
        let now = self.env.clock.now();
        for done in self.surveys.expired(now) {
            self.survey_answered(done);
        }
        self.settle();
    }

    /// The next question from another node, for the control task (which answers it, since that
    /// needs every shard's counts).
    pub fn take_question(&mut self) -> Option<(String, control::SurveyRequest)> {
        self.surveys.question()
    }

    /// Resolves when a question waits; the control task sleeps on it.
    pub fn poll_question(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.surveys.poll_question(cx)
    }

    /// The earliest deadline of this node's open surveys.
    pub fn next_survey_deadline(&self) -> Option<std::time::Instant> {
        self.surveys.next_deadline()
    }

    /// Sends this node's answer to a survey to the asking node.
    pub fn answer_survey(&mut self, to_node: &str, response: SurveyResponse) {
        let data = control::survey_response(&crate::node::get().uid, response);
        self.metrics.broker_sent(BrokerMessage::Control);
        self.engine.broker().publish_to_node(to_node, &data);
    }
}
