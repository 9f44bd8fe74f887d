//! One feed per project that has subscribers on this hub. A woken feed reads the events
//! after the last seq it delivered from the log and hands each frame, serialized once, to
//! every subscriber's outbox. Feeds end when their last subscriber leaves.
//!
//! A write made through this hub brings its own event back with its answer (the write
//! statement reads it in its transaction: `synchub.write_event`) and offers it to the feed
//! ([`Broker::offer`]): when it is the next seq the feed owes, it is delivered without a
//! read of the log after the commit. Anything else (a gap, another hub's write, a write
//! made in SQL directly) is read from the log, which stays the one truth for order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use synchub_protocol::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::deltas::{HUB_RECENT_FILES_BYTES, RECENT_FILES_BYTES, RecentBudget, RecentFiles};
use super::lane::Wire;
use super::outbox::{DeliveryMeters, EventFrame, Out, Outbox, Recipient};
use super::protocol;
use crate::db::Db;
use crate::error::ApiError;
use crate::metrics::{EventLabels, Metrics};
use crate::tasks::Tasks;

/// Events read from the log per query.
const PAGE: i64 = 500;
/// Offered events a feed holds before its pump takes them; past this, new offers are
/// dropped and the pump reads the log instead (a burst of local writes).
const MAX_OFFERED: usize = 64;
/// A feed with no wake-up re-reads the log this often anyway (the heads check normally
/// wakes it much sooner).
const FEED_FALLBACK_POLL: Duration = Duration::from_secs(5);

pub struct Broker {
    db: Db,
    feeds: Mutex<HashMap<Uuid, Arc<Feed>>>,
    next_id: AtomicU64,
    sockets: Mutex<HashMap<String, usize>>,
    /// Open container sockets by session, so a revocation can close them (4010).
    sessions: Mutex<HashMap<Uuid, HashMap<u64, Arc<Outbox>>>>,
    /// `events_published`: counted once per event when a feed fans it out.
    published: Family<EventLabels, Counter>,
    /// `event_log_reads`: reads of the log by feeds (offered events need none).
    log_reads: Counter,
    /// Events the feeds write to sockets themselves, through their lanes (counted in
    /// `delivered` too).
    delivered: DeliveryMeters,
    delivered_by_feeds: Counter,
    /// Fires when the hub shuts down: sockets close with 1012 and feeds end. A child of
    /// the app's stop signal, cancelled first so the background tasks outlive the drain.
    pub shutdown: CancellationToken,
    /// Where feed pumps run.
    tasks: Tasks,
    /// Test hook: sockets' readers panic on a special frame (see `inject_reader_faults`).
    reader_faults: AtomicBool,
    /// The recent file contents all feeds keep for deltas, together (bounded per hub).
    recent_budget: Arc<RecentBudget>,
}

/// A container socket registered under its session; dropping it unregisters.
pub struct SessionSocket {
    broker: Arc<Broker>,
    session: Uuid,
    id: u64,
}

impl Drop for SessionSocket {
    fn drop(&mut self) {
        let mut sessions = self.broker.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sockets) = sessions.get_mut(&self.session) {
            sockets.remove(&self.id);
            if sockets.is_empty() {
                sessions.remove(&self.session);
            }
        }
    }
}

pub struct Feed {
    project: Uuid,
    state: Mutex<FeedState>,
    wake: Notify,
    /// Events of this hub's own writes, handed over with the writes' answers, not yet taken
    /// by the pump (at most [`MAX_OFFERED`]).
    offered: Mutex<Vec<Arc<EventFrame>>>,
    /// The pump must read the log on its next pass: something was committed that was not
    /// (or could not be) offered.
    read_log: AtomicBool,
}

impl Feed {
    /// Wakes the pump to read the log.
    fn wake_for_log(&self) {
        self.read_log.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

struct FeedState {
    last_seq: i64,
    subscribers: Subscribers,
}

/// A feed's subscribers, and the list its deliveries go through: built by the first
/// delivery after a join or a leave and shared by every delivery until the next. (Taking
/// every subscriber's outbox out of the map for each delivery counted each `Arc` up and down
/// and touched each outbox: a cache miss per socket and event at 14,000 sockets a hub.)
#[derive(Default)]
struct Subscribers {
    by_id: HashMap<u64, Subscriber>,
    recipients: Option<Arc<[Recipient]>>,
}

impl Subscribers {
    fn insert(&mut self, id: u64, subscriber: Subscriber) {
        self.recipients = None;
        self.by_id.insert(id, subscriber);
    }

    fn remove(&mut self, id: u64) {
        if self.by_id.remove(&id).is_some() {
            self.recipients = None;
        }
    }

    /// Keeps the subscribers `keep` says to keep.
    fn retain(&mut self, mut keep: impl FnMut(&Subscriber) -> bool) {
        let before = self.by_id.len();
        self.by_id.retain(|_, subscriber| keep(subscriber));
        if self.by_id.len() != before {
            self.recipients = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Subscriber> {
        self.by_id.values()
    }

    /// Everyone subscribed now, for one delivery.
    fn recipients(&mut self) -> Arc<[Recipient]> {
        let by_id = &self.by_id;
        self.recipients.get_or_insert_with(|| by_id.values().map(|s| s.outbox.recipient()).collect()).clone()
    }
}

struct Subscriber {
    outbox: Arc<Outbox>,
    /// The user to re-check after member changes (None: service or container tokens,
    /// which are bound to the project by the hub itself).
    reader: Option<String>,
}

/// A registration of one socket on one project's feed; dropping it unsubscribes.
pub struct Subscription {
    broker: Arc<Broker>,
    project: Uuid,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let feeds = self.broker.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(&self.project) {
            feed.state.lock().unwrap_or_else(|p| p.into_inner()).subscribers.remove(self.id);
            feed.wake.notify_one();
        }
    }
}

/// Counts a user's open sockets; dropping it releases the slot.
pub struct SocketSlot {
    broker: Arc<Broker>,
    key: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut sockets = self.broker.sockets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = sockets.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                sockets.remove(&self.key);
            }
        }
    }
}

impl Broker {
    pub fn new(db: Db, metrics: &Metrics, tasks: Tasks) -> Arc<Self> {
        Arc::new(Broker {
            db,
            feeds: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            sockets: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            published: metrics.events_published.clone(),
            log_reads: metrics.event_log_reads.clone(),
            delivered: DeliveryMeters::of(metrics),
            delivered_by_feeds: metrics.events_delivered_by_feeds.clone(),
            shutdown: tasks.stop_token().child_token(),
            tasks,
            reader_faults: AtomicBool::new(false),
            recent_budget: RecentBudget::new(HUB_RECENT_FILES_BYTES),
        })
    }

    /// For tests only: from now on, a socket of this hub whose reader receives the text
    /// frame `synchub:test:reader-panic` panics while handling it, as a bug would.
    #[doc(hidden)]
    pub fn inject_reader_faults(&self) {
        self.reader_faults.store(true, Ordering::Relaxed);
    }

    pub(crate) fn reader_faults_injected(&self) -> bool {
        self.reader_faults.load(Ordering::Relaxed)
    }

    /// Takes one of `key`'s socket slots, or None when all `max` are in use.
    pub fn claim_socket(self: &Arc<Self>, key: &str, max: usize) -> Option<SocketSlot> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let count = sockets.entry(key.to_string()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SocketSlot { broker: self.clone(), key: key.to_string() })
    }

    /// Registers a container socket under its session.
    pub fn register_session_socket(self: &Arc<Self>, session: Uuid, outbox: Arc<Outbox>) -> SessionSocket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).entry(session).or_default().insert(id, outbox);
        SessionSocket { broker: self.clone(), session, id }
    }

    /// Closes every socket of a revoked (or ended) session with 4010.
    pub fn revoke(&self, session: Uuid) {
        if let Some(sockets) = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&session) {
            for outbox in sockets.values() {
                outbox.push(Out::Close(protocol::close::SESSION_REVOKED, "session revoked"));
            }
        }
    }

    /// Sessions with open sockets on this hub.
    pub fn live_sessions(&self) -> Vec<Uuid> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    /// Registers `outbox` for `project`'s events. Everything committed after this call is
    /// pushed to the outbox (and possibly some earlier events; the socket de-duplicates by
    /// seq). `head` is a recent last_seq, the starting point of a new feed.
    pub fn subscribe(
        self: &Arc<Self>,
        project: Uuid,
        head: i64,
        outbox: Arc<Outbox>,
        reader: Option<String>,
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let feed = feeds.entry(project).or_insert_with(|| {
            let feed = Arc::new(Feed {
                project,
                state: Mutex::new(FeedState { last_seq: head, subscribers: Subscribers::default() }),
                wake: Notify::new(),
                offered: Mutex::new(Vec::new()),
                read_log: AtomicBool::new(false),
            });
            self.tasks.spawn(pump(self.clone(), feed.clone()));
            feed
        });
        feed.state.lock().unwrap_or_else(|p| p.into_inner()).subscribers.insert(id, Subscriber { outbox, reader });
        feed.wake_for_log();
        Subscription { broker: self.clone(), project, id }
    }

    /// Something was committed to `project`: its feed (if any) reads the log now.
    /// Returns whether `project` has subscribers on this hub (a feed to wake).
    pub fn wake(&self, project: Uuid) -> bool {
        let Some(feed) = self.feed(project) else { return false };
        feed.wake_for_log();
        true
    }

    /// A write made through this hub committed `frame`, read back by its own statement:
    /// `project`'s feed delivers it without reading the log when it is the next seq the
    /// feed owes, and reads the log otherwise. Returns whether `project` has subscribers on
    /// this hub (a feed to offer to).
    pub fn offer(&self, project: Uuid, frame: Arc<EventFrame>) -> bool {
        let Some(feed) = self.feed(project) else { return false };
        {
            let mut offered = feed.offered.lock().unwrap_or_else(|p| p.into_inner());
            if offered.len() >= MAX_OFFERED {
                drop(offered);
                feed.wake_for_log();
                return true;
            }
            offered.push(frame);
        }
        feed.wake.notify_one();
        true
    }

    /// Whether `project` has subscribers on this hub (a write then asks for its event back).
    pub fn has_feed(&self, project: Uuid) -> bool {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&project)
    }

    fn feed(&self, project: Uuid) -> Option<Arc<Feed>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).get(&project).cloned()
    }

    /// Wakes every feed (after the wake-up listener reconnected: notifications may be lost).
    pub fn wake_all(&self) {
        for feed in self.feeds.lock().unwrap_or_else(|p| p.into_inner()).values() {
            feed.wake_for_log();
        }
    }

    /// Projects with local subscribers and the last seq delivered for each.
    pub fn active(&self) -> Vec<(Uuid, i64)> {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|feed| (feed.project, feed.state.lock().unwrap_or_else(|p| p.into_inner()).last_seq))
            .collect()
    }

    /// Members of `project` changed: subscribers who may no longer read it are told so and
    /// dropped from the feed. Returns their outboxes (their presence goes too).
    pub async fn members_changed(&self, project: Uuid) -> Result<Vec<Arc<Outbox>>, ApiError> {
        let Some(feed) = self.feeds.lock().unwrap_or_else(|p| p.into_inner()).get(&project).cloned() else {
            return Ok(Vec::new());
        };
        let readers: Vec<String> = {
            let state = feed.state.lock().unwrap_or_else(|p| p.into_inner());
            state.subscribers.iter().filter_map(|s| s.reader.clone()).collect()
        };
        if readers.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.db.pool().get().await?;
        let rows = client.query("SELECT user_id FROM synchub.readers_among($1, $2)", &[&project, &readers]).await?;
        let allowed: std::collections::HashSet<String> =
            rows.iter().map(|r| r.try_get(0)).collect::<Result<_, tokio_postgres::Error>>()?;
        let mut dropped = Vec::new();
        let mut state = feed.state.lock().unwrap_or_else(|p| p.into_inner());
        // Only readers that were checked are judged: one who joined since was authorized
        // by their own join.
        state.subscribers.retain(|subscriber| match &subscriber.reader {
            Some(user) if readers.contains(user) && !allowed.contains(user) => {
                let notice = protocol::error(
                    &None,
                    Some(&protocol::channel_name(project)),
                    &ApiError::NotFound("project not found".into()),
                );
                subscriber.outbox.push(Out::Leave { project, notice: Some(notice) });
                dropped.push(subscriber.outbox.clone());
                false
            }
            _ => true,
        });
        Ok(dropped)
    }

    /// Reads events after `after` (up to one page), serialized as frames.
    pub async fn read_events(&self, project: Uuid, after: i64, limit: i64) -> Result<Vec<Arc<EventFrame>>, ApiError> {
        self.log_reads.inc();
        let client = self.db.pool().get().await?;
        let statement =
            client.prepare_cached(&format!("SELECT seq, {FRAME_COLUMNS} FROM synchub.read_events($1, $2, $3)")).await?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = client.query(&statement, &[&project, &after, &limit]).await?;
        rows.iter().map(|row| event_frame(project, row.try_get("seq")?, row)).collect()
    }

    /// The oldest seq still in the log (for gap fills that hit retention).
    pub async fn oldest_seq(&self, project: Uuid) -> Result<i64, ApiError> {
        let client = self.db.pool().get().await?;
        Ok(client.query_one("SELECT synchub.oldest_seq($1)", &[&project]).await?.try_get(0)?)
    }
}

/// What the hub selects of an event row (`synchub.read_events` for the log read,
/// `synchub.write_event` for a write's own event: the same columns, from the one SQL
/// definition of events) to build its frame with [`event_frame`]: the payload as text (the
/// frame embeds it as is) and the commit time in microseconds (for the delivery-lag metric).
pub const FRAME_COLUMNS: &str =
    "event, payload::text AS payload, (extract(epoch FROM created_at) * 1000000)::bigint AS created_us";

/// The frame of event `seq` of `project` from a row holding [`FRAME_COLUMNS`].
pub fn event_frame(project: Uuid, seq: i64, row: &tokio_postgres::Row) -> Result<Arc<EventFrame>, ApiError> {
    let event_type: String = row.try_get("event")?;
    let payload: &str = row.try_get("payload")?;
    Ok(Arc::new(EventFrame {
        seq,
        text: protocol::event_frame(project, seq, &event_type, payload).into(),
        event_type,
        committed_at_us: row.try_get("created_us")?,
        delta: None,
    }))
}

/// The offered frames that continue `after` without a gap, in seq order (`None` when
/// there is a gap: the log must be read). Frames at or below `after` were delivered already.
fn continuing(after: i64, mut offered: Vec<Arc<EventFrame>>) -> Option<Vec<Arc<EventFrame>>> {
    offered.sort_by_key(|frame| frame.seq);
    offered.dedup_by_key(|frame| frame.seq);
    offered.retain(|frame| frame.seq > after);
    let contiguous = offered.iter().zip(after + 1..).all(|(frame, seq)| frame.seq == seq);
    contiguous.then_some(offered)
}

/// A feed's task: on each wake-up, deliver everything after `last_seq` (the offered events
/// when they continue it, else what the log holds); exit when the last subscriber has left.
async fn pump(broker: Arc<Broker>, feed: Arc<Feed>) {
    // Retries after 50–100 ms, doubling up to 1–2 s.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    // Only this task reads and writes it: deltas are built outside the feed's lock.
    let mut recent = RecentFiles::new(RECENT_FILES_BYTES, broker.recent_budget.clone());
    loop {
        tokio::select! {
            _ = feed.wake.notified() => {}
            _ = tokio::time::sleep(FEED_FALLBACK_POLL) => feed.read_log.store(true, Ordering::Release),
            _ = broker.shutdown.cancelled() => return,
        }
        {
            let mut feeds = broker.feeds.lock().unwrap_or_else(|p| p.into_inner());
            if feed.state.lock().unwrap_or_else(|p| p.into_inner()).subscribers.is_empty() {
                feeds.remove(&feed.project);
                return;
            }
        }
        let offered = std::mem::take(&mut *feed.offered.lock().unwrap_or_else(|p| p.into_inner()));
        // Taken before reading `last_seq`: a wake-up for the log that comes later is seen
        // on the next pass.
        let mut read_log = feed.read_log.swap(false, Ordering::AcqRel);
        if !offered.is_empty() {
            let after = feed.state.lock().unwrap_or_else(|p| p.into_inner()).last_seq;
            match continuing(after, offered) {
                Some(frames) => deliver(&broker, &feed, &mut recent, frames).await,
                None => read_log = true,
            }
        }
        while read_log {
            let after = feed.state.lock().unwrap_or_else(|p| p.into_inner()).last_seq;
            match broker.read_events(feed.project, after, PAGE).await {
                Ok(frames) => {
                    backoff.reset();
                    read_log = frames.len() as i64 == PAGE;
                    deliver(&broker, &feed, &mut recent, frames).await;
                }
                Err(err) => {
                    // The database is away: retry with backoff; the log keeps everything.
                    tracing::warn!(project_id = %feed.project, error = %err, "reading events failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    feed.wake_for_log();
                    break;
                }
            }
        }
    }
}

/// Subscribers served between two yields of a delivery: writing to a socket is a system
/// call now (its lane), and a feed with 20,000 sockets must not hold a worker thread for the
/// whole fan-out (4,096 sends take some 50 ms here). Not much fewer: each yield lets the other
/// worker take the feed's task over, and at 256 the fan-out of 100,000 sockets over 7 hubs
/// cost 20.5–22 µs per delivery and 1.38–1.52 s at p99 instead of 15.4 µs and 0.96 s
/// (docs/BENCHMARKS.md, 2026-12-01).
const DELIVERY_CHUNK: usize = 4096;

/// Hands `frames` to every subscriber of `feed`: in seq order, each after the feed's
/// `last_seq` (the log's answer to a read after it, or offered frames that [`continuing`]
/// kept). Only the pump calls this, and only it moves `last_seq`: each subscriber gets the
/// frames in seq order.
///
/// The subscribers are those of the moment it starts (taken out of the feed's lock, which
/// joins and leaves need meanwhile). One who joins during a delivery reads these frames
/// from the log (they were committed before it subscribed); one who left or lost access
/// gets nothing more, since a leave is queued in its outbox first, which closes its lane and
/// makes its machine drop the channel's later events.
async fn deliver(broker: &Broker, feed: &Feed, recent: &mut RecentFiles, frames: Vec<Arc<EventFrame>>) {
    if frames.is_empty() {
        return;
    }
    // Each frame gets its delta (if any) here, once for every subscriber, and its bytes on
    // the wire.
    let wires: Vec<Wire> = frames.into_iter().map(|frame| Wire::of(recent.on_event(feed.project, frame))).collect();
    let recipients = feed.state.lock().unwrap_or_else(|p| p.into_inner()).subscribers.recipients();
    for (i, chunk) in recipients.chunks(DELIVERY_CHUNK).enumerate() {
        if i > 0 {
            tokio::task::yield_now().await;
        }
        let mut sent = 0;
        for recipient in chunk {
            let through_lane = recipient.deliver(feed.project, &wires);
            if through_lane > 0 {
                broker.delivered.lags_of(wires[..through_lane].iter().map(|wire| &*wire.frame));
            }
            sent += through_lane as u64;
        }
        // Counted once per chunk: two shared counters less to touch per socket.
        broker.delivered.delivered.inc_by(sent);
        broker.delivered_by_feeds.inc_by(sent);
    }
    drop(recipients);
    let mut state = feed.state.lock().unwrap_or_else(|p| p.into_inner());
    for Wire { frame, .. } in &wires {
        debug_assert!(frame.seq > state.last_seq, "seq {} delivered after {}", frame.seq, state.last_seq);
        broker.published.get_or_create(&EventLabels { event_type: frame.event_type.clone() }).inc();
        state.last_seq = frame.seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(seqs: &[i64]) -> Vec<Arc<EventFrame>> {
        seqs.iter()
            .map(|&seq| {
                Arc::new(EventFrame {
                    seq,
                    event_type: String::new(),
                    text: "".into(),
                    committed_at_us: 0,
                    delta: None,
                })
            })
            .collect()
    }

    fn seqs(frames: Option<Vec<Arc<EventFrame>>>) -> Option<Vec<i64>> {
        frames.map(|frames| frames.iter().map(|frame| frame.seq).collect())
    }

    #[test]
    fn offered_events_are_delivered_only_when_they_continue_the_feed() {
        // In order, or handed over out of order by two writers: sorted.
        assert_eq!(seqs(continuing(4, frames(&[5, 6]))), Some(vec![5, 6]));
        assert_eq!(seqs(continuing(4, frames(&[6, 5]))), Some(vec![5, 6]));
        // Delivered already (read from the log first, or an op_id replay): dropped.
        assert_eq!(seqs(continuing(6, frames(&[3, 6, 7, 7]))), Some(vec![7]));
        assert_eq!(seqs(continuing(9, frames(&[8]))), Some(vec![]));
        // A gap before or inside them: the log must be read.
        assert_eq!(seqs(continuing(4, frames(&[6]))), None);
        assert_eq!(seqs(continuing(4, frames(&[5, 7]))), None);
    }

    #[test]
    fn a_delivery_goes_to_the_subscribers_of_the_moment_and_lets_go_of_those_who_left() {
        let mut subscribers = Subscribers::default();
        let (a, b, c) = (Outbox::new(1 << 10, None), Outbox::new(1 << 10, None), Outbox::new(1 << 10, None));
        subscribers.insert(1, Subscriber { outbox: a.clone(), reader: Some("u1".into()) });
        subscribers.insert(2, Subscriber { outbox: b.clone(), reader: None });
        let first = subscribers.recipients();
        assert_eq!(first.len(), 2);
        assert!(Arc::ptr_eq(&first, &subscribers.recipients()), "one list until the subscribers change");
        subscribers.remove(99);
        assert!(Arc::ptr_eq(&first, &subscribers.recipients()), "no one left: the same list");

        subscribers.insert(3, Subscriber { outbox: c.clone(), reader: None });
        assert_eq!(subscribers.recipients().len(), 3, "a join is in the next delivery");
        subscribers.remove(2);
        assert_eq!(subscribers.recipients().len(), 2, "a leave is not");
        // The list a delivery still holds keeps its outboxes; the feed's own does not.
        assert_eq!(Arc::strong_count(&b), 2);
        drop(first);
        assert_eq!(Arc::strong_count(&b), 1, "the feed let go of the one who left");

        subscribers.retain(|subscriber| subscriber.reader.is_none());
        assert_eq!(subscribers.recipients().len(), 1, "nor is one who lost access");
        assert_eq!(Arc::strong_count(&a), 1);
        assert_eq!(Arc::strong_count(&c), 3, "ours, the subscriber's, and the list's");
    }
}
