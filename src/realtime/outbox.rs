//! A socket's outbound queue, bounded in bytes. Producers (feeds, the socket's reader)
//! never wait: when the queue is over its cap the consumer is too slow, the outbox is
//! marked overflowed and the socket is closed with 4008 (the client resumes with `since`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use uuid::Uuid;

use super::channel_map::ChannelMap;
use super::lane::{Lane, Sent, Wire};
use super::machine::Position;
use crate::metrics::Metrics;

/// One event, serialized once for every subscriber.
#[derive(Debug)]
pub struct EventFrame {
    pub seq: i64,
    pub event_type: String,
    pub text: Utf8Bytes,
    /// When the write was committed (microseconds since the epoch), for the lag metric.
    pub committed_at_us: i64,
    /// The same `file:update` as a delta (CONTRACT section 12), built once by the feed for
    /// every socket that saw its base.
    pub delta: Option<DeltaFrame>,
}

/// What delivering an event frame to a socket moves, whoever writes it (the socket's writer,
/// or a feed through the socket's lane).
#[derive(Clone)]
pub struct DeliveryMeters {
    pub delivered: Counter,
    /// From the commit to the frame's write.
    pub lag: Histogram,
}

impl DeliveryMeters {
    pub fn of(metrics: &Metrics) -> Self {
        DeliveryMeters { delivered: metrics.events_delivered.clone(), lag: metrics.event_delivery_lag.clone() }
    }

    /// `frame` was written to one socket just now.
    pub fn one(&self, frame: &EventFrame) {
        self.delivered.inc();
        self.lags_of([frame]);
    }

    /// The lags of `frames`, written to one socket just now (counted by the caller): the
    /// clock is read once for all of them.
    pub fn lags_of<'f>(&self, frames: impl IntoIterator<Item = &'f EventFrame>) {
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
        for frame in frames {
            self.lag.observe((now_us - frame.committed_at_us).max(0) as f64 / 1e6);
        }
    }
}

/// An event frame carrying a delta against the version delivered at `base_seq`.
#[derive(Debug)]
pub struct DeltaFrame {
    pub base_seq: i64,
    pub text: Utf8Bytes,
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

/// A feed's handle on one subscriber: its lane and its outbox side by side, so that
/// events its lane takes whole never touch the outbox (a cache miss less per socket and
/// event at 14,000 sockets a hub: docs/BENCHMARKS.md, 2026-12-01).
pub struct Recipient {
    lane: Option<Arc<Lane>>,
    outbox: Arc<Outbox>,
}

impl Recipient {
    /// Delivers consecutive events of `project`'s feed: through the lane those the writer
    /// would send next anyway (each `Wire` carries its frame's bytes, built once for every
    /// socket), the rest queued. Returns how many went through the lane.
    pub fn deliver(&self, project: Uuid, wires: &[Wire]) -> usize {
        let sent = self.lane.as_ref().map_or(Sent::NONE, |lane| lane.send(project, wires));
        if sent.started {
            self.outbox.nudge();
        }
        for wire in &wires[sent.frames..] {
            self.outbox.push(Out::Event { project, frame: wire.frame.clone() });
        }
        sent.frames
    }
}

pub struct Outbox {
    cap_bytes: usize,
    state: Mutex<State>,
    /// The one consumer (the socket's writer). Not a `Notify`: that took its waiter list's
    /// lock on every push and every wait, twice per delivered event (issue 16).
    writer: AtomicWaker,
    /// The socket's lane (none without a TCP connection of ours, as in unit tests).
    lane: Option<Arc<Lane>>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Out>,
    bytes: usize,
    overflowed: bool,
    /// The writer is to wake with nothing queued (to send what the lane owes).
    nudged: bool,
}

/// The outbox overflowed: the socket is to be closed with 4008.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflowed;

impl Outbox {
    pub fn new(cap_bytes: usize, lane: Option<Arc<Lane>>) -> Arc<Self> {
        Arc::new(Outbox { cap_bytes, state: Mutex::new(State::default()), writer: AtomicWaker::new(), lane })
    }

    /// A feed's handle on this outbox and its lane (see [`Recipient`]).
    pub fn recipient(self: &Arc<Self>) -> Recipient {
        Recipient { lane: self.lane.clone(), outbox: self.clone() }
    }

    /// Closes the lane (the writer ends: nothing more may go to the socket behind its back).
    pub fn close_lane(&self) {
        if let Some(lane) = &self.lane {
            lane.close();
        }
    }

    /// Wakes the writer with nothing queued: its flush sends what the lane owes.
    fn nudge(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).nudged = true;
        self.writer.wake();
    }

    /// The writer is about to wait: when nothing is queued, the lane opens with the
    /// channels' positions (moved out of `positions`; [`Outbox::unpark`] returns them).
    pub fn park(&self, positions: &mut ChannelMap<Position>) -> bool {
        let Some(lane) = &self.lane else { return false };
        // Under the queue's lock: a push after this look closes the lane again.
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.queue.is_empty() && !state.overflowed && !state.nudged && lane.open(positions)
    }

    /// The writer woke after a [`Outbox::park`] that returned true: the lane closes and
    /// the positions come back, moved on by what it sent (returns how many event frames).
    pub fn unpark(&self, positions: &mut ChannelMap<Position>) -> u32 {
        self.lane.as_ref().map_or(0, |lane| lane.take_back(positions))
    }

    /// Queues an item; false when the outbox overflowed (the item is dropped and the
    /// socket will be closed with 4008).
    pub fn push(&self, item: Out) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.overflowed {
            return false;
        }
        // Nothing sent through the lane may overtake what is queued.
        self.close_lane();
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
            self.writer.wake();
            return false;
        }
        state.bytes += cost;
        let was_empty = state.queue.is_empty();
        state.queue.push_back(item);
        drop(state);
        // Only the first item of a batch wakes the writer: it takes the whole queue when it
        // runs, so later pushes before that need no wake-up of their own.
        if was_empty {
            self.writer.wake();
        }
        true
    }

    /// Waits for items and hands all of them over in `batch`, which must be empty: the
    /// queue and `batch` swap buffers, so the writer's buffer becomes the queue's (no
    /// allocation per batch, and no second buffer kept per socket).
    pub async fn drain_into(&self, batch: &mut VecDeque<Out>) -> Result<(), Overflowed> {
        std::future::poll_fn(|cx| {
            // Registered before the queue is looked at: a push after the look wakes this
            // waker (a push before it is seen).
            self.writer.register(cx.waker());
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.overflowed {
                return Poll::Ready(Err(Overflowed));
            }
            if state.queue.is_empty() {
                if std::mem::take(&mut state.nudged) {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            state.nudged = false;
            state.bytes = 0;
            debug_assert!(batch.is_empty());
            std::mem::swap(&mut state.queue, batch);
            Poll::Ready(Ok(()))
        })
        .await
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
                delta: None,
            }),
        }
    }

    #[tokio::test]
    async fn overflow_is_sticky_and_drops_the_queue() {
        let outbox = Outbox::new(100, None);
        assert!(outbox.push(event(60)));
        assert!(!outbox.push(event(60)));
        assert!(!outbox.push(Out::Text("late".into())));
        assert_eq!(outbox.drain_into(&mut VecDeque::new()).await, Err(Overflowed));
    }

    #[tokio::test]
    async fn a_single_large_event_fits_an_empty_outbox() {
        let outbox = Outbox::new(10, None);
        assert!(outbox.push(event(50)));
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain_into(&mut batch).await, Ok(()));
        assert_eq!(batch.len(), 1);
        // Draining frees the budget.
        assert!(outbox.push(event(5)));
    }

    #[tokio::test]
    async fn one_wake_up_takes_every_item_queued_before_it() {
        let outbox = Outbox::new(1_000, None);
        for _ in 0..3 {
            assert!(outbox.push(event(10)));
        }
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain_into(&mut batch).await, Ok(()));
        assert_eq!(batch.len(), 3);
        // Pushed after a drain: the writer is woken again.
        assert!(outbox.push(event(10)));
        batch.clear();
        let drained = tokio::time::timeout(std::time::Duration::from_secs(5), outbox.drain_into(&mut batch)).await;
        assert_eq!(drained.ok(), Some(Ok(())));
        assert_eq!(batch.len(), 1);
    }
}
