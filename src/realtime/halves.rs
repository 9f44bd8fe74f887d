//! A socket's reader and writer run in one task (so whatever ends one ends both), but each
//! is polled only when its own waker fired. With `tokio::select!` every wake-up polled both:
//! a delivered event woke the task through the outbox, and the reader was polled as well
//! (the WebSocket's lock, tungstenite's read path, the read loop's timers), for nothing.
//! Issue 16: CPU per delivered event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

const READER: u8 = 1;
const WRITER: u8 = 2;

/// Which half finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum First {
    Reader,
    Writer,
}

/// Polls `reader` and `writer` until one of them completes; each is polled on the first
/// poll and afterwards only after its own waker was woken.
pub async fn first_of<R, W>(reader: Pin<&mut R>, writer: Pin<&mut W>) -> First
where
    R: Future<Output = ()>,
    W: Future<Output = ()>,
{
    let woken = Arc::new(Woken { halves: AtomicU8::new(READER | WRITER), task: AtomicWaker::new() });
    let reader_waker = Waker::from(Arc::new(ReaderWoken(woken.clone())));
    let writer_waker = Waker::from(woken.clone());
    FirstOf { reader, writer, woken, reader_waker, writer_waker }.await
}

/// The halves woken since the task's last poll, and the task to wake.
struct Woken {
    halves: AtomicU8,
    task: AtomicWaker,
}

impl Woken {
    fn wake_half(&self, half: u8) {
        self.halves.fetch_or(half, Ordering::AcqRel);
        self.task.wake();
    }
}

/// The writer's waker.
impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_half(WRITER);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_half(WRITER);
    }
}

/// The reader's waker (a second type: a waker knows only its own `Arc`).
struct ReaderWoken(Arc<Woken>);

impl Wake for ReaderWoken {
    fn wake(self: Arc<Self>) {
        self.0.wake_half(READER);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake_half(READER);
    }
}

struct FirstOf<'a, R, W> {
    reader: Pin<&'a mut R>,
    writer: Pin<&'a mut W>,
    woken: Arc<Woken>,
    reader_waker: Waker,
    writer_waker: Waker,
}

impl<R: Future<Output = ()>, W: Future<Output = ()>> Future for FirstOf<'_, R, W> {
    type Output = First;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<First> {
        let this = &mut *self;
        // Registered before the flags are taken: a wake after the swap wakes this task again.
        this.woken.task.register(cx.waker());
        let halves = this.woken.halves.swap(0, Ordering::AcqRel);
        if halves & READER != 0 && this.reader.as_mut().poll(&mut Context::from_waker(&this.reader_waker)).is_ready() {
            return Poll::Ready(First::Reader);
        }
        if halves & WRITER != 0 && this.writer.as_mut().poll(&mut Context::from_waker(&this.writer_waker)).is_ready() {
            return Poll::Ready(First::Writer);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Counts its polls; pending until its notify fires, then ready.
    async fn counted(polls: &AtomicUsize, ready: &tokio::sync::Notify) {
        let mut notified = std::pin::pin!(ready.notified());
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            notified.as_mut().poll(cx)
        })
        .await
    }

    #[tokio::test]
    async fn a_half_is_polled_only_when_its_own_waker_fired() {
        let (reader_polls, writer_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (reader_ready, writer_ready) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
        // The writer wakes 100 times (another future's wake-ups, as the outbox's) before
        // it is ready: the reader is polled only once, at the start.
        let writer = async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            counted(&writer_polls, &writer_ready).await;
        };
        let reader = counted(&reader_polls, &reader_ready);
        let (mut reader, mut writer) = (std::pin::pin!(reader), std::pin::pin!(writer));
        let both = first_of(reader.as_mut(), writer.as_mut());
        let notify = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer_ready.notify_one();
        };
        let (first, ()) = tokio::join!(both, notify);
        assert_eq!(first, First::Writer);
        assert_eq!(reader_polls.load(Ordering::SeqCst), 1, "the reader was polled without being woken");
        assert_eq!(writer_polls.load(Ordering::SeqCst), 2, "once pending, once after its notify");
    }

    #[tokio::test]
    async fn the_reader_finishing_first_is_reported() {
        let (reader_polls, writer_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (reader_ready, writer_ready) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
        let reader = counted(&reader_polls, &reader_ready);
        let writer = counted(&writer_polls, &writer_ready);
        let (mut reader, mut writer) = (std::pin::pin!(reader), std::pin::pin!(writer));
        let both = first_of(reader.as_mut(), writer.as_mut());
        let notify = async {
            tokio::task::yield_now().await;
            reader_ready.notify_one();
        };
        let (first, ()) = tokio::join!(both, notify);
        assert_eq!(first, First::Reader);
        assert_eq!(writer_polls.load(Ordering::SeqCst), 1);
    }
}
