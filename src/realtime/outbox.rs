//! A socket's outbound queue, bounded in bytes. Producers (feeds, the socket's reader)
//! never wait: when the queue is over its cap the consumer is too slow, the outbox is
//! marked overflowed and the socket is closed with 4008 (the client resumes with `since`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use uuid::Uuid;

/// One event, serialized once for every subscriber.
#[derive(Debug)]
pub struct EventFrame {
    pub seq: i64,
    pub event_type: String,
    pub text: Utf8Bytes,
    /// When the write was committed (microseconds since the epoch), for the lag metric.
    pub committed_at_us: i64,
}

#[derive(Debug)]
pub enum Out {
    /// An event of a project channel.
    Event { project: Uuid, frame: Arc<EventFrame> },
    /// A reply or notice, already serialized.
    Text(String),
    /// A presence frame, serialized once for every socket of its channel. Counted against
    /// the cap like events: a socket that does not read them is a slow consumer.
    Presence(Utf8Bytes),
    /// Start delivering `project` from `next_seq` (after a join was authorized; `head`
    /// is the project's last_seq then, `reader` the user to re-check on member changes).
    Join { project: Uuid, next_seq: i64, head: i64, reply: String, reader: Option<String> },
    /// Stop delivering `project` (leave, or the reader lost access: `notice` tells it).
    Leave { project: Uuid, notice: Option<String> },
    /// Close the socket with this code.
    Close(u16, &'static str),
    /// The hub is shutting down (the socket machine picks the close code).
    Shutdown,
}

impl Out {
    fn cost(&self) -> usize {
        match self {
            Out::Event { frame, .. } => frame.text.len(),
            Out::Presence(text) => text.len(),
            Out::Text(text) | Out::Join { reply: text, .. } => text.len(),
            Out::Leave { notice, .. } => notice.as_ref().map_or(0, String::len),
            Out::Close(..) | Out::Shutdown => 0,
        }
    }
}

pub struct Outbox {
    cap_bytes: usize,
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Out>,
    bytes: usize,
    overflowed: bool,
}

/// What the writer gets: a batch of items, or the overflow verdict.
pub enum Drained {
    Items(Vec<Out>),
    Overflowed,
}

impl Outbox {
    pub fn new(cap_bytes: usize) -> Arc<Self> {
        Arc::new(Outbox { cap_bytes, state: Mutex::new(State::default()), notify: Notify::new() })
    }

    /// Queues an item; false when the outbox overflowed (the item is dropped and the
    /// socket will be closed with 4008).
    pub fn push(&self, item: Out) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.overflowed {
            return false;
        }
        let cost = item.cost();
        // Control items always fit; only events can overflow a slow consumer.
        if matches!(item, Out::Event { .. } | Out::Presence(_))
            && state.bytes + cost > self.cap_bytes
            && !state.queue.is_empty()
        {
            state.overflowed = true;
            state.queue.clear();
            state.bytes = 0;
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.bytes += cost;
        state.queue.push_back(item);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Waits for items and takes all of them.
    pub async fn drain(&self) -> Drained {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.overflowed {
                    return Drained::Overflowed;
                }
                if !state.queue.is_empty() {
                    state.bytes = 0;
                    return Drained::Items(state.queue.drain(..).collect());
                }
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(len: usize) -> Out {
        Out::Event {
            project: Uuid::nil(),
            frame: Arc::new(EventFrame {
                seq: 1,
                event_type: "file:update".into(),
                text: "x".repeat(len).into(),
                committed_at_us: 0,
            }),
        }
    }

    #[tokio::test]
    async fn overflow_is_sticky_and_drops_the_queue() {
        let outbox = Outbox::new(100);
        assert!(outbox.push(event(60)));
        assert!(!outbox.push(event(60)));
        assert!(!outbox.push(Out::Text("late".into())));
        assert!(matches!(outbox.drain().await, Drained::Overflowed));
    }

    #[tokio::test]
    async fn a_single_large_event_fits_an_empty_outbox() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(event(50)));
        match outbox.drain().await {
            Drained::Items(items) => assert_eq!(items.len(), 1),
            Drained::Overflowed => panic!("overflowed"),
        }
        // Draining frees the budget.
        assert!(outbox.push(event(5)));
    }
}
