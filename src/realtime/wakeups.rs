//! Who wakes the feeds. The log is the truth; these only say "look now".
//!
//! - This hub's own commits wake its feeds in-process at once ([`Wakeups::committed`]) and
//!   are announced to other hubs with a small batched `NOTIFY` sent *after* the commit
//!   (never inside the write transaction: NOTIFY serializes commits database-wide).
//! - A dedicated LISTEN connection (outside the pool) receives other hubs' announcements;
//!   it reconnects with backoff and then wakes every feed, since notifications may have
//!   been missed while it was away.
//! - A heads check compares every active project's `last_seq` with what its feed delivered,
//!   every [`HEADS_INTERVAL`]: it catches writes made by calling the SQL functions directly
//!   and announcements that never came (a hub that died right after its commit).
//!
//! Every announcement starts with the announcing hub's random id (`<hub id>;<entries>`):
//! a hub's LISTEN connection also receives its own NOTIFYs, and acting on them would wake
//! a feed a second time for a commit it has already been woken for (one wasted log read
//! per write).
//!
//! A write's own event (read back by its statement, see `Broker::offer`) travels with the
//! announcement when its frame is small ([`MAX_SHIPPED_FRAME`]): one NOTIFY on
//! [`FRAMES_CHANNEL`] per frame, in the same transaction and before the announcement. Other
//! hubs offer it to their feed (delivered without reading the log when it is the next seq
//! they owe) and do not wake that feed for the announcement's entry that follows. The
//! entry is still there for hubs that do not listen on the frames channel (an older hub
//! during a rolling deploy): to them it is the plain wake-up it always was.
//!
//! A write reads its event back when this hub has subscribers of the project or another
//! hub said it has (a `w:<project>` entry, [`super::interest`]): a hub woken by another
//! hub's announcement for a project it has subscribers of says so, at most every
//! [`interest::RENEW`], and from then on gets that project's small events with the
//! announcements. Hubs that do not know the entry ignore it, as they ignore any entry that
//! is not a project id or one of the prefixes below.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use synchub_protocol::Backoff;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::broker::Broker;
use super::interest::{self, Deadlines, Renewals};
use super::outbox::EventFrame;
use super::presence::{self, Presence};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::tasks::Tasks;

pub const CHANNEL: &str = "synchub_events";
/// Event frames shipped with announcements: `<hub id>;<project>;<seq>;<created µs>;<event
/// type>;<frame text>`.
pub const FRAMES_CHANNEL: &str = "synchub_event_frames";
/// The largest frame text shipped in a NOTIFY (payloads must stay below 8000 bytes); larger
/// events are read from the log by the other hubs.
pub const MAX_SHIPPED_FRAME: usize = 6000;
pub const HEADS_INTERVAL: Duration = Duration::from_millis(500);
const QUEUE: usize = 10_000;

/// An announcement to other hubs.
#[derive(Debug, Clone)]
enum Announce {
    Committed(Uuid),
    /// A commit whose event frame is shipped to the other hubs.
    Event(Uuid, Arc<EventFrame>),
    MembersChanged(Uuid),
    SessionRevoked(Uuid),
    /// This hub has subscribers of the project and is woken for it by other hubs: they
    /// should ship its events ([`super::interest`]).
    Watching(Uuid),
}

/// The sending side, held by the app.
#[derive(Clone)]
pub struct Wakeups {
    broker: Arc<Broker>,
    presence: Arc<Presence>,
    announce: mpsc::Sender<Announce>,
    /// Projects other hubs have subscribers of, until their interest lapses.
    watched_elsewhere: Arc<Mutex<Deadlines>>,
    tasks: Tasks,
}

/// Which of a write's own event its statement reads back ([`Wakeups::own_event_wanted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnEvent {
    /// No hub has subscribers of the project: none.
    Skip,
    /// This hub has: its feed takes the event whatever its size.
    Any,
    /// Only other hubs have: only an event whose payload is at most [`MAX_SHIPPED_FRAME`]
    /// bytes (a larger one would not be shipped; they read it from the log).
    Shippable,
}

/// This hub process's id in its announcements (random per start).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct HubId(Uuid);

impl Wakeups {
    /// Starts the announcer, the listener, the heads check and retention in `tasks`;
    /// they end when `tasks` stops (after the drain, so writes still in flight during a
    /// shutdown are announced to other hubs).
    pub fn start(
        broker: Arc<Broker>,
        presence: Arc<Presence>,
        db: Db,
        database_url: String,
        retention: Duration,
        metrics: &Metrics,
        tasks: &Tasks,
    ) -> Self {
        let (announce, announcements) = mpsc::channel(QUEUE);
        let hub = HubId(Uuid::new_v4());
        let watched_elsewhere = Arc::new(Mutex::new(Deadlines::default()));
        tasks.spawn(prune(db.clone(), retention, tasks.stop_token()));
        let shipped = metrics.event_frames_shipped.clone();
        tasks.spawn(announcer(db.clone(), hub, announcements, shipped, tasks.stop_token()));
        let listening = Listening {
            broker: broker.clone(),
            presence: presence.clone(),
            hub,
            announce: announce.clone(),
            watched_elsewhere: watched_elsewhere.clone(),
            reconnects: metrics.listen_reconnects.clone(),
        };
        tasks.spawn(listener(listening, database_url, tasks.clone()));
        tasks.spawn(heads_check(broker.clone(), db, tasks.stop_token()));
        Wakeups { broker, presence, announce, watched_elsewhere, tasks: tasks.clone() }
    }

    /// Which own event a write to `project` should read back: any when this hub has
    /// subscribers of it, one small enough to ship when only other hubs have.
    pub fn own_event_wanted(&self, project: Uuid) -> OwnEvent {
        if self.broker.has_feed(project) {
            OwnEvent::Any
        } else if self.watched_elsewhere.lock().unwrap_or_else(|p| p.into_inner()).holds(project, Instant::now()) {
            OwnEvent::Shippable
        } else {
            OwnEvent::Skip
        }
    }

    /// A write to `project` committed on this hub; `own_event` is its event when the write
    /// read it back (the local feed then needs no read of the log).
    pub fn committed(&self, project: Uuid, own_event: Option<Arc<EventFrame>>) {
        let announce = match own_event {
            Some(frame) => {
                self.broker.offer(project, frame.clone());
                if frame.text.len() <= MAX_SHIPPED_FRAME {
                    Announce::Event(project, frame)
                } else {
                    Announce::Committed(project)
                }
            }
            None => {
                self.broker.wake(project);
                Announce::Committed(project)
            }
        };
        // A full queue only delays other hubs until their heads check.
        let _ = self.announce.try_send(announce);
    }

    /// A session was revoked on this hub: close its sockets here and everywhere.
    pub fn session_revoked(&self, session: Uuid) {
        self.broker.revoke(session);
        let _ = self.announce.try_send(Announce::SessionRevoked(session));
    }

    /// Members of `project` changed on this hub.
    pub fn members_changed(&self, project: Uuid) {
        let (broker, presence) = (self.broker.clone(), self.presence.clone());
        self.tasks.spawn(async move {
            if let Err(err) = recheck_readers(&broker, &presence, project).await {
                tracing::warn!(project_id = %project, error = %err, "re-checking subscribers failed");
            }
        });
        let _ = self.announce.try_send(Announce::MembersChanged(project));
    }
}

/// Members of `project` changed: sockets that may no longer read it stop receiving its
/// events and leave its presence.
async fn recheck_readers(broker: &Broker, presence: &Presence, project: Uuid) -> Result<(), crate::error::ApiError> {
    let dropped = broker.members_changed(project).await?;
    presence.lost_access(project, &dropped);
    Ok(())
}

/// Sends announcements in batches: one NOTIFY carries every project committed since the
/// previous one (ids only), after one NOTIFY per shipped event frame, all in one
/// transaction. When stopped, it still sends what is queued.
async fn announcer(
    db: Db,
    hub: HubId,
    mut rx: mpsc::Receiver<Announce>,
    shipped: prometheus_client::metrics::counter::Counter,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item { Some(item) => item, None => return },
            // Closing ends `recv` once the queue is empty.
            _ = stop.cancelled(), if !rx.is_closed() => {
                rx.close();
                continue;
            }
        };
        let mut items = vec![first];
        while items.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        let (channels, payloads): (Vec<&str>, Vec<String>) = batch(hub, items).into_iter().unzip();
        let frames = channels.iter().filter(|c| **c == FRAMES_CHANNEL).count() as u64;
        let sent = async {
            let client = db.pool().get().await.map_err(|e| e.to_string())?;
            // In array order (a scan of unnest, no sort). Without waiting for the commit
            // record to reach the disk: listeners are signalled only after that (one fsync
            // on every other hub's write → event path), and an announcement lost in a
            // crash costs nothing (the heads check catches up). Prepared once per
            // connection: a statement given as text costs a round trip to prepare it first.
            let statement = client
                .prepare_cached(
                    "SELECT set_config('synchronous_commit', 'off', true), count(pg_notify(c, p)) \
                     FROM unnest($1::text[], $2::text[]) AS n(c, p)",
                )
                .await
                .map_err(|e| e.to_string())?;
            client.execute(&statement, &[&channels, &payloads]).await.map_err(|e| e.to_string())
        };
        match sent.await {
            Ok(_) => {
                shipped.inc_by(frames);
            }
            Err(err) => {
                tracing::debug!(error = %err, "announcing commits failed; other hubs catch up by their heads check")
            }
        };
    }
}

/// Announcements sent in one transaction: at most this many (an announcement of this many
/// entries stays far below the NOTIFY payload limit of 8000 bytes; each shipped frame is a
/// NOTIFY of its own, at most [`MAX_SHIPPED_FRAME`]).
const MAX_BATCH: usize = 64;

/// The NOTIFYs (channel, payload) for `items`, in the order they are sent: the shipped
/// frames, then one announcement of every entry (each once). A project with a commit in
/// `items` whose frame is not shipped gets none of its frames shipped in this batch: a hub
/// that receives frames of a project skips the wake-up of that project's entry.
fn batch(hub: HubId, items: Vec<Announce>) -> Vec<(&'static str, String)> {
    let unshipped: Vec<Uuid> =
        items.iter().filter_map(|item| if let Announce::Committed(p) = item { Some(*p) } else { None }).collect();
    let mut notifications = Vec::new();
    let mut entries: Vec<String> = Vec::new();
    for item in items {
        let entry = match item {
            Announce::Committed(p) => p.to_string(),
            Announce::Event(p, frame) => {
                if !unshipped.contains(&p) {
                    notifications.push((FRAMES_CHANNEL, shipped_frame(hub, p, &frame)));
                }
                p.to_string()
            }
            Announce::MembersChanged(p) => format!("m:{p}"),
            Announce::SessionRevoked(s) => format!("r:{s}"),
            Announce::Watching(p) => format!("w:{p}"),
        };
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    notifications.push((CHANNEL, format!("{};{}", hub.0, entries.join(","))));
    notifications
}

/// The payload of a shipped frame.
fn shipped_frame(hub: HubId, project: Uuid, frame: &EventFrame) -> String {
    format!("{};{project};{};{};{};{}", hub.0, frame.seq, frame.committed_at_us, frame.event_type, frame.text.as_str())
}

/// A shipped frame's sender, project and frame; None when it is malformed or came from
/// `own` (this hub offered it already).
fn received_frame(payload: &str, own: HubId) -> Option<(Uuid, Uuid, Arc<EventFrame>)> {
    let mut parts = payload.splitn(6, ';');
    let sender = Uuid::parse_str(parts.next()?).ok()?;
    let project = Uuid::parse_str(parts.next()?).ok()?;
    let seq = parts.next()?.parse().ok()?;
    let committed_at_us = parts.next()?.parse().ok()?;
    let event_type = parts.next()?.to_owned();
    let text = parts.next()?;
    if sender == own.0 {
        return None;
    }
    let frame = EventFrame { seq, event_type, text: text.to_owned().into(), committed_at_us, delta: None };
    Some((sender, project, Arc::new(frame)))
}

/// Splits an announcement into its sender (None when it has no sender id) and its entries;
/// None when it came from `own` (this hub already acted on it). Payloads without a sender
/// id are treated as foreign.
fn foreign_entries(payload: &str, own: HubId) -> Option<(Option<Uuid>, &str)> {
    match payload.split_once(';') {
        Some((sender, entries)) => {
            let sender = Uuid::parse_str(sender).ok();
            (sender != Some(own.0)).then_some((sender, entries))
        }
        None => Some((None, payload)),
    }
}

/// What the listener acts on and with.
struct Listening {
    broker: Arc<Broker>,
    presence: Arc<Presence>,
    hub: HubId,
    /// For `w:` entries: this hub's interest in projects other hubs write to.
    announce: mpsc::Sender<Announce>,
    watched_elsewhere: Arc<Mutex<Deadlines>>,
    reconnects: prometheus_client::metrics::counter::Counter,
}

impl Listening {
    /// Another hub woke this one for `project` (a shipped frame or an announcement): when
    /// this hub has subscribers of it (`subscribed`, as the offer or wake-up found), say so
    /// now and then, so that the writers ship its events.
    fn woken_by_another_hub(&self, renewals: &mut Renewals, project: Uuid, subscribed: bool) {
        if subscribed && renewals.due(project, Instant::now()) {
            // A full queue costs a log read per event until the next renewal.
            let _ = self.announce.try_send(Announce::Watching(project));
        }
    }

    /// Another hub has subscribers of `project`.
    fn watched_elsewhere(&self, project: Uuid) {
        let now = Instant::now();
        self.watched_elsewhere.lock().unwrap_or_else(|p| p.into_inner()).set(project, now + interest::LEASE, now);
    }
}

/// The LISTEN connection: reconnects with backoff, wakes everything after reconnecting.
/// It listens for presence announcements too (handed to [`Presence`]).
async fn listener(listening: Listening, database_url: String, tasks: Tasks) {
    let Listening { broker, presence, hub, .. } = &listening;
    let (broker, hub) = (broker.clone(), *hub);
    let mut renewals = Renewals::default();
    // The first retry after 100–200 ms, then doubling up to 2.5–5 s.
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if tasks.is_stopping() {
            return;
        }
        match crate::db::connect(&database_url).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let (presence, presence_pump) = (presence.clone(), presence.clone());
                let pump = tasks.spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if n.channel() == presence::CHANNEL {
                                    presence.receive(n.payload());
                                } else if tx.send((n.channel() == FRAMES_CHANNEL, n.payload().to_string())).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                let listen = format!("LISTEN {CHANNEL}; LISTEN {FRAMES_CHANNEL}; LISTEN {}", presence::CHANNEL);
                if client.batch_execute(&listen).await.is_ok() {
                    backoff.reset();
                    broker.wake_all();
                    presence_pump.listening();
                    // Projects whose frame a hub shipped ahead of its next announcement (which
                    // then needs no wake-up for them).
                    let mut shipped: Vec<(Uuid, Uuid)> = Vec::new();
                    loop {
                        let (is_frame, payload) = tokio::select! {
                            payload = rx.recv() => match payload { Some(p) => p, None => break },
                            _ = tasks.stopping() => { pump.abort(); return; }
                        };
                        if is_frame {
                            if let Some((sender, project, frame)) = received_frame(&payload, hub) {
                                let subscribed = broker.offer(project, frame);
                                listening.woken_by_another_hub(&mut renewals, project, subscribed);
                                // Bounded: forgetting costs one needless wake-up at most.
                                if shipped.len() >= 4 * MAX_BATCH {
                                    shipped.clear();
                                }
                                shipped.push((sender, project));
                            }
                            continue;
                        }
                        let Some((sender, entries)) = foreign_entries(&payload, hub) else { continue };
                        // The sender's shipped frames belong to this announcement.
                        let mut offered = Vec::new();
                        shipped.retain(|&(from, project)| {
                            let theirs = Some(from) == sender;
                            if theirs {
                                offered.push(project);
                            }
                            !theirs
                        });
                        for entry in entries.split(',') {
                            if let Some(project) = entry.strip_prefix("m:").and_then(|p| Uuid::parse_str(p).ok()) {
                                let (broker, presence) = (broker.clone(), presence_pump.clone());
                                tasks.spawn(async move {
                                    let _ = recheck_readers(&broker, &presence, project).await;
                                });
                            } else if let Some(session) = entry.strip_prefix("r:").and_then(|s| Uuid::parse_str(s).ok())
                            {
                                broker.revoke(session);
                            } else if let Some(project) = entry.strip_prefix("w:").and_then(|p| Uuid::parse_str(p).ok())
                            {
                                listening.watched_elsewhere(project);
                            } else if let Ok(project) = Uuid::parse_str(entry)
                                && !offered.contains(&project)
                            {
                                let subscribed = broker.wake(project);
                                listening.woken_by_another_hub(&mut renewals, project, subscribed);
                            }
                        }
                    }
                }
                pump.abort();
                listening.reconnects.inc();
                tracing::warn!("wake-up listener lost its connection; reconnecting");
            }
            Err(err) => tracing::warn!(error = format!("{err:#}"), "wake-up listener cannot connect"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = tasks.stopping() => return,
        }
    }
}

/// Closes sockets of sessions that were revoked or ended, whether or not the
/// revocation's announcement reached this hub.
async fn check_sessions(broker: &Broker, db: &Db) {
    let sessions = broker.live_sessions();
    if sessions.is_empty() {
        return;
    }
    let inactive = async {
        let client = db.pool().get().await.map_err(|e| e.to_string())?;
        let rows = client
            .query("SELECT session_id FROM synchub.inactive_sessions($1)", &[&sessions])
            .await
            .map_err(|e| e.to_string())?;
        rows.iter().map(|row| row.try_get::<_, Uuid>(0)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
    };
    match inactive.await {
        Ok(sessions) => {
            for session in sessions {
                broker.revoke(session);
            }
        }
        Err(err) => tracing::debug!(error = %err, "session check failed"),
    }
}

/// Retention: every minute, events older than `retention` leave the log. Several hubs
/// may run this at once; deleting twice is harmless.
async fn prune(db: Db, retention: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let keep = format!("{} seconds", retention.as_secs());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let pruned = async {
            let client = db.pool().get().await.map_err(|e| e.to_string())?;
            let row = client
                .query_one("SELECT synchub.prune_events($1::text::interval)", &[&keep])
                .await
                .map_err(|e| e.to_string())?;
            row.try_get::<_, i64>(0).map_err(|e| e.to_string())
        };
        match pruned.await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "pruned events past retention"),
            Err(err) => tracing::warn!(error = %err, "pruning events failed"),
        }
    }
}

/// Every HEADS_INTERVAL: one query for all active projects; wake the feeds that are behind.
async fn heads_check(broker: Arc<Broker>, db: Db, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEADS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        check_sessions(&broker, &db).await;
        let active = broker.active();
        if active.is_empty() {
            continue;
        }
        let projects: Vec<Uuid> = active.iter().map(|(p, _)| *p).collect();
        let heads = async {
            let client = db.pool().get().await.map_err(|e| e.to_string())?;
            let rows = client
                .query("SELECT project_id, last_seq FROM synchub.project_heads($1)", &[&projects])
                .await
                .map_err(|e| e.to_string())?;
            rows.iter()
                .map(|row| Ok::<(Uuid, i64), tokio_postgres::Error>((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        };
        match heads.await {
            Ok(heads) => {
                for (project, head) in heads {
                    if active.iter().any(|(p, delivered)| *p == project && head > *delivered) {
                        broker.wake(project);
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "heads check failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: i64, text: &str) -> Arc<EventFrame> {
        Arc::new(EventFrame {
            seq,
            event_type: "file:update".into(),
            text: text.to_owned().into(),
            committed_at_us: 1_700_000_000_000_000 + seq,
            delta: None,
        })
    }

    #[test]
    fn shipped_frames_go_before_their_announcement_and_read_back_whole() {
        let (hub, other) = (HubId(Uuid::new_v4()), HubId(Uuid::new_v4()));
        let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
        let text = r#"{"type":"event","payload":{"content":"a;b,c"}}"#;
        let sent = batch(
            hub,
            vec![Announce::Event(p, frame(7, text)), Announce::Committed(q), Announce::Event(p, frame(8, "x"))],
        );
        let channels: Vec<&str> = sent.iter().map(|(c, _)| *c).collect();
        assert_eq!(channels, [FRAMES_CHANNEL, FRAMES_CHANNEL, CHANNEL]);
        assert_eq!(sent[2].1, format!("{};{p},{q}", hub.0));
        let (sender, project, got) = received_frame(&sent[0].1, other).unwrap();
        assert_eq!((sender, project, got.seq, got.committed_at_us), (hub.0, p, 7, 1_700_000_000_000_007));
        assert_eq!((got.event_type.as_str(), got.text.as_str()), ("file:update", text));
        // A hub does not take back its own frames.
        assert!(received_frame(&sent[0].1, hub).is_none());
        assert!(received_frame("garbage;1;2", other).is_none());
    }

    #[test]
    fn a_project_with_an_unshipped_commit_ships_no_frame_in_that_batch() {
        // Receivers skip the wake-up of a project whose frames they got: a commit of it
        // without a frame (too large to ship) must not hide behind a shipped one.
        let hub = HubId(Uuid::new_v4());
        let p = Uuid::new_v4();
        let sent = batch(hub, vec![Announce::Event(p, frame(1, "x")), Announce::Committed(p)]);
        assert_eq!(sent, [(CHANNEL, format!("{};{p}", hub.0))]);
    }

    #[test]
    fn own_announcements_are_ignored() {
        let own = HubId(Uuid::new_v4());
        let other = Uuid::new_v4();
        let project = Uuid::new_v4();
        assert_eq!(foreign_entries(&format!("{};{project}", own.0), own), None);
        let from_other = format!("{other};{project},m:{project}");
        assert_eq!(foreign_entries(&from_other, own), Some((Some(other), format!("{project},m:{project}").as_str())));
        assert_eq!(foreign_entries(&project.to_string(), own), Some((None, project.to_string().as_str())));
    }
}
