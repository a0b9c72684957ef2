//! Commands in flight: the one way a connection's command waits and resumes.
//!
//! Anything a command waits for (another shard's answer, several of them, the home shard's
//! acknowledgement of this shard's interest, a JWKS key fetch, a backend proxy call) makes it a
//! [`Flight`]: its connection, how many answers it waits for, and what resumes it (a closure
//! holding the command's state). The answers arrive on this shard (the mesh hands them over by
//! the flight's token) and the flight resumes inline, on the shard, with no task awaiting it.
//! While a flight `blocks` its connection, that connection's reader takes no next command, so
//! commands of one connection still run in order.
//!
//! Owns: the table of flights, generic over what resumes them (`client::Resume`). Must not:
//! run anything itself, or keep a flight whose answers are all in.

use slab::Slab;

use crate::client::conn::ConnKey;
use crate::shard::msg::Answer;

/// A command waiting for answers.
#[derive(Debug)]
pub struct Flight<R> {
    /// The connection it runs for (`None`: a shard's own upkeep, e.g. a position check).
    pub conn: Option<ConnKey>,
    /// The connection's reader waits for it before taking the next command.
    pub blocks: bool,
    /// What resumes it.
    pub resume: R,
    /// The answers, in the order they were asked for (`None` until in).
    pub answers: Vec<Option<Answer>>,
    missing: usize,
}

/// Flights by token: a slab slot in the low 32 bits, a generation in the high 32 (so a late
/// answer never reaches a newer flight in the same slot).
#[derive(Debug)]
pub struct Flights<R> {
    slots: Slab<(u32, Flight<R>)>,
    next_generation: u32,
}

impl<R> Default for Flights<R> {
    fn default() -> Self {
        Flights { slots: Slab::new(), next_generation: 0 }
    }
}

impl<R> Flights<R> {
    /// Starts a flight waiting for `answers` answers (0: for one [`Flights::land`]).
    pub fn open(&mut self, conn: Option<ConnKey>, blocks: bool, answers: usize, resume: R) -> u64 {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let flight = Flight {
            conn,
            blocks,
            resume,
            answers: (0..answers).map(|_| None).collect(),
            missing: answers,
        };
        let slot = self.slots.insert((generation, flight)) as u64;
        (u64::from(generation) << 32) | slot
    }

    fn slot(&self, token: u64) -> Option<usize> {
        let slot = usize::try_from(token & u64::from(u32::MAX)).ok()?;
        let generation = u32::try_from(token >> 32).ok()?;
        self.slots.get(slot).filter(|(g, _)| *g == generation).map(|_| slot)
    }

    /// Answer `index` of a flight arrived; the flight, once every answer is in.
    pub fn answer(&mut self, token: u64, index: u16, answer: Answer) -> Option<Flight<R>> {
        let slot = self.slot(token)?;
        let (_, flight) = self.slots.get_mut(slot)?;
        let entry = flight.answers.get_mut(usize::from(index))?;
        if entry.replace(answer).is_none() {
            flight.missing = flight.missing.saturating_sub(1);
        }
        if flight.missing > 0 {
            return None;
        }
        Some(self.slots.remove(slot).1)
    }

    /// The flight waited for something other than answers (an acknowledgement, a key fetch)
    /// and it came: the flight, to resume.
    pub fn land(&mut self, token: u64) -> Option<Flight<R>> {
        let slot = self.slot(token)?;
        Some(self.slots.remove(slot).1)
    }

    /// Flights in the air.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none is in the air.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flight_lands_once_every_answer_is_in_and_late_answers_are_ignored() {
        let mut flights: Flights<&str> = Flights::default();
        let t = flights.open(None, true, 2, "connect");
        assert!(flights.answer(t, 1, Answer::Done).is_none());
        assert!(flights.answer(t, 1, Answer::Done).is_none(), "a repeat does not count twice");
        let landed = flights.answer(t, 0, Answer::Failed).expect("both answers in");
        assert_eq!(landed.resume, "connect");
        assert!(matches!(landed.answers.as_slice(), [Some(Answer::Failed), Some(Answer::Done)]));
        assert!(flights.answer(t, 0, Answer::Done).is_none(), "gone after landing");
        let again = flights.open(None, false, 0, "retry");
        assert_ne!(again, t, "a reused slot gets a new generation");
        assert!(flights.land(t).is_none());
        assert_eq!(flights.land(again).map(|f| f.resume), Some("retry"));
        assert!(flights.is_empty());
    }
}
