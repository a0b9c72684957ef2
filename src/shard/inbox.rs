//! An inbox from an executor's own tasks (the broker links) to their shard: the tasks push what
//! they read, one drain task hands it to the shard in order, so a link task never borrows the
//! shard.
//!
//! Owns: the queued items and the drain task's waker; closing it tells the tasks that feed it
//! to stop (shutdown). Must not: run anything itself.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Items for a shard, in the order they were pushed.
#[derive(Debug)]
pub struct Inbox<T> {
    items: RefCell<VecDeque<T>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Inbox { items: RefCell::default(), waker: RefCell::default(), closed: Cell::new(false) }
    }
}

impl<T> Inbox<T> {
    /// Queues an item and wakes the drain task.
    pub fn push(&self, item: T) {
        self.items.borrow_mut().push_back(item);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The shard is shutting down: the tasks that feed this inbox stop.
    pub fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Whether [`Inbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Hands everything queued to `handle`, batch by batch, until the inbox is closed.
    pub async fn drain(&self, mut handle: impl FnMut(Vec<T>)) {
        loop {
            let batch = poll_fn(|cx| {
                let mut items = self.items.borrow_mut();
                if !items.is_empty() {
                    return Poll::Ready(Some(items.drain(..).collect::<Vec<T>>()));
                }
                if self.closed.get() {
                    return Poll::Ready(None);
                }
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            match batch {
                Some(batch) => handle(batch),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_until_the_inbox_closes() {
        let inbox = Inbox::default();
        inbox.push(1);
        inbox.push(2);
        inbox.close();
        inbox.push(3);
        let mut seen = Vec::new();
        futures_lite::future::block_on(inbox.drain(|batch| seen.extend(batch)));
        assert_eq!(seen, vec![1, 2, 3], "what was queued before the drain saw the close");
        assert!(inbox.is_closed());
    }
}
