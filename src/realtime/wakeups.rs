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

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use synchub_protocol::Backoff;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::broker::Broker;
use super::outbox::EventFrame;
use super::presence::{self, Presence};
use crate::db::Db;
use crate::tasks::Tasks;

pub const CHANNEL: &str = "synchub_events";
pub const HEADS_INTERVAL: Duration = Duration::from_millis(500);
/// NOTIFY payloads are capped at 8000 bytes by PostgreSQL; stay well below.
const MAX_PAYLOAD: usize = 7000;
const QUEUE: usize = 10_000;

/// An announcement to other hubs.
#[derive(Debug, Clone, Copy)]
enum Announce {
    Committed(Uuid),
    MembersChanged(Uuid),
    SessionRevoked(Uuid),
}

/// The sending side, held by the app.
#[derive(Clone)]
pub struct Wakeups {
    broker: Arc<Broker>,
    presence: Arc<Presence>,
    announce: mpsc::Sender<Announce>,
    tasks: Tasks,
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
        reconnects: prometheus_client::metrics::counter::Counter,
        tasks: &Tasks,
    ) -> Self {
        let (announce, announcements) = mpsc::channel(QUEUE);
        let hub = HubId(Uuid::new_v4());
        tasks.spawn(prune(db.clone(), retention, tasks.stop_token()));
        tasks.spawn(announcer(db.clone(), hub, announcements, tasks.stop_token()));
        tasks.spawn(listener(broker.clone(), presence.clone(), hub, database_url, reconnects, tasks.clone()));
        tasks.spawn(heads_check(broker.clone(), db, tasks.stop_token()));
        Wakeups { broker, presence, announce, tasks: tasks.clone() }
    }

    /// A write to `project` committed on this hub; `own_event` is its event when the write
    /// read it back (the local feed then needs no read of the log).
    pub fn committed(&self, project: Uuid, own_event: Option<Arc<EventFrame>>) {
        match own_event {
            Some(frame) => self.broker.offer(project, frame),
            None => self.broker.wake(project),
        }
        // A full queue only delays other hubs until their heads check.
        let _ = self.announce.try_send(Announce::Committed(project));
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
/// previous one (ids only, never content). When stopped, it still sends what is queued.
async fn announcer(db: Db, hub: HubId, mut rx: mpsc::Receiver<Announce>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item { Some(item) => item, None => return },
            // Closing ends `recv` once the queue is empty.
            _ = stop.cancelled(), if !rx.is_closed() => {
                rx.close();
                continue;
            }
        };
        let mut entries = String::new();
        add_entry(&mut entries, first);
        while entries.len() < MAX_PAYLOAD {
            match rx.try_recv() {
                Ok(item) => add_entry(&mut entries, item),
                Err(_) => break,
            }
        }
        let payload = format!("{};{entries}", hub.0);
        let sent = async {
            let client = db.pool().get().await.map_err(|e| e.to_string())?;
            // Without waiting for its commit record to reach the disk: listeners are signalled
            // only after that (one fsync on every other hub's write → event path), and an
            // announcement lost in a crash costs nothing (the heads check catches up).
            client
                .execute(
                    "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)",
                    &[&CHANNEL, &payload],
                )
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(err) = sent.await {
            tracing::debug!(error = %err, "announcing commits failed; other hubs catch up by their heads check");
        }
    }
}

fn add_entry(payload: &mut String, item: Announce) {
    let entry = match item {
        Announce::Committed(p) => p.to_string(),
        Announce::MembersChanged(p) => format!("m:{p}"),
        Announce::SessionRevoked(s) => format!("r:{s}"),
    };
    if !payload.split(',').any(|e| e == entry) {
        if !payload.is_empty() {
            payload.push(',');
        }
        payload.push_str(&entry);
    }
}

/// Splits an announcement into its sender and its entries; None when it came from `own`
/// (this hub already acted on it). Payloads without a sender id are treated as foreign.
fn foreign_entries(payload: &str, own: HubId) -> Option<&str> {
    match payload.split_once(';') {
        Some((sender, entries)) => (Uuid::parse_str(sender).ok() != Some(own.0)).then_some(entries),
        None => Some(payload),
    }
}

/// The LISTEN connection: reconnects with backoff, wakes everything after reconnecting.
/// It listens for presence announcements too (handed to [`Presence`]).
async fn listener(
    broker: Arc<Broker>,
    presence: Arc<Presence>,
    hub: HubId,
    database_url: String,
    reconnects: prometheus_client::metrics::counter::Counter,
    tasks: Tasks,
) {
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
                                } else if tx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                let listen = format!("LISTEN {CHANNEL}; LISTEN {}", presence::CHANNEL);
                if client.batch_execute(&listen).await.is_ok() {
                    backoff.reset();
                    broker.wake_all();
                    presence_pump.listening();
                    loop {
                        let payload = tokio::select! {
                            payload = rx.recv() => match payload { Some(p) => p, None => break },
                            _ = tasks.stopping() => { pump.abort(); return; }
                        };
                        let Some(entries) = foreign_entries(&payload, hub) else { continue };
                        for entry in entries.split(',') {
                            if let Some(project) = entry.strip_prefix("m:").and_then(|p| Uuid::parse_str(p).ok()) {
                                let (broker, presence) = (broker.clone(), presence_pump.clone());
                                tasks.spawn(async move {
                                    let _ = recheck_readers(&broker, &presence, project).await;
                                });
                            } else if let Some(session) = entry.strip_prefix("r:").and_then(|s| Uuid::parse_str(s).ok())
                            {
                                broker.revoke(session);
                            } else if let Ok(project) = Uuid::parse_str(entry) {
                                broker.wake(project);
                            }
                        }
                    }
                }
                pump.abort();
                reconnects.inc();
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

    #[test]
    fn own_announcements_are_ignored() {
        let own = HubId(Uuid::new_v4());
        let other = Uuid::new_v4();
        let project = Uuid::new_v4();
        assert_eq!(foreign_entries(&format!("{};{project}", own.0), own), None);
        let from_other = format!("{other};{project},m:{project}");
        assert_eq!(foreign_entries(&from_other, own), Some(format!("{project},m:{project}").as_str()));
        assert_eq!(foreign_entries(&project.to_string(), own), Some(project.to_string().as_str()));
    }
}
