//! One feed per project that has subscribers on this hub. A woken feed reads the events
//! after the last seq it delivered from the log and hands each frame, serialized once, to
//! every subscriber's outbox. Feeds end when their last subscriber leaves.

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
use super::outbox::{EventFrame, Out, Outbox};
use super::protocol;
use crate::db::Db;
use crate::error::ApiError;
use crate::metrics::EventLabels;
use crate::tasks::Tasks;

/// Events read from the log per query.
const PAGE: i64 = 500;
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
}

struct FeedState {
    last_seq: i64,
    subscribers: HashMap<u64, Subscriber>,
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
            feed.state.lock().unwrap_or_else(|p| p.into_inner()).subscribers.remove(&self.id);
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
    pub fn new(db: Db, published: Family<EventLabels, Counter>, tasks: Tasks) -> Arc<Self> {
        Arc::new(Broker {
            db,
            feeds: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            sockets: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            published,
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
                state: Mutex::new(FeedState { last_seq: head, subscribers: HashMap::new() }),
                wake: Notify::new(),
            });
            self.tasks.spawn(pump(self.clone(), feed.clone()));
            feed
        });
        feed.state.lock().unwrap_or_else(|p| p.into_inner()).subscribers.insert(id, Subscriber { outbox, reader });
        feed.wake.notify_one();
        Subscription { broker: self.clone(), project, id }
    }

    /// Something was committed to `project`: its feed (if any) reads the log now.
    pub fn wake(&self, project: Uuid) {
        if let Some(feed) = self.feeds.lock().unwrap_or_else(|p| p.into_inner()).get(&project) {
            feed.wake.notify_one();
        }
    }

    /// Wakes every feed (after the wake-up listener reconnected: notifications may be lost).
    pub fn wake_all(&self) {
        for feed in self.feeds.lock().unwrap_or_else(|p| p.into_inner()).values() {
            feed.wake.notify_one();
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
            state.subscribers.values().filter_map(|s| s.reader.clone()).collect()
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
        state.subscribers.retain(|_, subscriber| match &subscriber.reader {
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
        let client = self.db.pool().get().await?;
        let statement = client
            .prepare_cached(
                "SELECT seq, event, payload::text, (extract(epoch FROM created_at) * 1000000)::bigint
                 FROM synchub.read_events($1, $2, $3)",
            )
            .await?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = client.query(&statement, &[&project, &after, &limit]).await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0)?;
                let event_type: String = row.try_get(1)?;
                let payload: String = row.try_get(2)?;
                Ok(Arc::new(EventFrame {
                    seq,
                    text: protocol::event_frame(project, seq, &event_type, &payload).into(),
                    event_type,
                    committed_at_us: row.try_get(3)?,
                    delta: None,
                }))
            })
            .collect()
    }

    /// The oldest seq still in the log (for gap fills that hit retention).
    pub async fn oldest_seq(&self, project: Uuid) -> Result<i64, ApiError> {
        let client = self.db.pool().get().await?;
        Ok(client.query_one("SELECT synchub.oldest_seq($1)", &[&project]).await?.try_get(0)?)
    }
}

/// A feed's task: on each wake-up, deliver everything after `last_seq`; exit when the
/// last subscriber has left.
async fn pump(broker: Arc<Broker>, feed: Arc<Feed>) {
    // Retries after 50–100 ms, doubling up to 1–2 s.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    // Only this task reads and writes it: deltas are built outside the feed's lock.
    let mut recent = RecentFiles::new(RECENT_FILES_BYTES, broker.recent_budget.clone());
    loop {
        tokio::select! {
            _ = feed.wake.notified() => {}
            _ = tokio::time::sleep(FEED_FALLBACK_POLL) => {}
            _ = broker.shutdown.cancelled() => return,
        }
        {
            let mut feeds = broker.feeds.lock().unwrap_or_else(|p| p.into_inner());
            if feed.state.lock().unwrap_or_else(|p| p.into_inner()).subscribers.is_empty() {
                feeds.remove(&feed.project);
                return;
            }
        }
        loop {
            let after = feed.state.lock().unwrap_or_else(|p| p.into_inner()).last_seq;
            match broker.read_events(feed.project, after, PAGE).await {
                Ok(frames) => {
                    backoff.reset();
                    let full_page = frames.len() as i64 == PAGE;
                    // Frames read once, continuing what this feed delivered: each gets its
                    // delta (if any) here, once for every subscriber.
                    let frames: Vec<_> = frames
                        .into_iter()
                        .filter(|frame| frame.seq > after)
                        .map(|frame| recent.on_event(feed.project, frame))
                        .collect();
                    let mut state = feed.state.lock().unwrap_or_else(|p| p.into_inner());
                    for frame in frames {
                        // Another pass may have delivered it already.
                        if frame.seq <= state.last_seq {
                            continue;
                        }
                        for subscriber in state.subscribers.values() {
                            subscriber.outbox.push(Out::Event { project: feed.project, frame: frame.clone() });
                        }
                        broker.published.get_or_create(&EventLabels { event_type: frame.event_type.clone() }).inc();
                        state.last_seq = frame.seq;
                    }
                    if !full_page {
                        break;
                    }
                }
                Err(err) => {
                    // The database is away: retry with backoff; the log keeps everything.
                    tracing::warn!(project_id = %feed.project, error = %err, "reading events failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    feed.wake.notify_one();
                    break;
                }
            }
        }
    }
}
