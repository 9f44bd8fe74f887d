//! Presence (CONTRACT section 12): who has a project open, on every hub of the database.
//! Ephemeral by design: nothing here touches the events log, the files tables or `seq`.
//!
//! - A socket becomes a member of a channel it joined with its first `presence` frame there
//!   (opt-in: sockets that never send one, e.g. large fan-outs, cost presence nothing and
//!   receive no presence frames), and stays one until it leaves, rejoins, closes or dies;
//!   later `presence` frames replace its `meta`. `user` and `kind` come from the socket's
//!   token (user tokens: `user`; container tokens: `container`, user = the session id);
//!   service-token sockets may opt in to receive presence but are not listed. The agent and
//!   `@synchub/client` send their first `presence` right after joining.
//! - One [`Table`] per hub holds every member of every channel, local and remote, and what
//!   this hub's sockets were last told. Every [`FLUSH_EVERY`] the changes since are sent as
//!   one `presence_diff` per channel (serialized once for all of its local sockets), so a
//!   client that updates as fast as it may still causes at most 10 diffs per second.
//! - Across hubs, without a table: each hub announces its local members' joins, `meta`
//!   changes and leaves with `pg_notify` on [`CHANNEL`] (from a pool connection, never in a
//!   write transaction), and every `heartbeat` a list of its live members (ids and
//!   revisions). A remote member expires when no heartbeat listed it for `ttl`, so the
//!   members of a hub killed with -9 leave everywhere within `ttl`. A hub whose LISTEN
//!   (re)connects says `hello`, and every hub answers with its full state; a heartbeat that
//!   lists a member unknown here (a lost notification) asks that hub for its state too.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use synchub_protocol::{MemberKind, PresenceDiff, PresenceMember, PresenceState, ServerFrame, channel_name};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::outbox::{Out, Outbox};
use crate::auth::Principal;
use crate::db::Db;
use crate::error::ApiError;
use crate::tasks::Tasks;

/// The NOTIFY channel hubs announce presence on.
pub const CHANNEL: &str = "synchub_presence";
/// How often changes are sent to sockets and announced to other hubs.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A `presence` frame's `meta`, serialized (CONTRACT section 12).
pub const MAX_META_BYTES: usize = 1024;
/// `presence` frames per second per socket (CONTRACT section 12), with no burst beyond it.
pub const UPDATES_PER_SECOND: u32 = 10;
/// Members of one channel (local and remote), and local sockets receiving its presence:
/// each member's `presence_state` lists them all, so a join costs O(members).
pub const MAX_MEMBERS_PER_CHANNEL: usize = 2_000;
/// Members of all channels together that one hub keeps track of.
pub const MAX_MEMBERS: usize = 200_000;
/// NOTIFY payloads are capped at 8000 bytes by PostgreSQL; stay well below.
const MAX_PAYLOAD: usize = 7000;
/// Announcement payloads waiting for a connection; beyond it they are dropped (the next
/// heartbeat makes other hubs ask for the state again).
const ANNOUNCE_QUEUE: usize = 1024;

/// Heartbeat and expiry of remote members.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub ttl: Duration,
}

/// A hub's presence: the member table, this hub's subscribed sockets, the announcer.
pub struct Presence {
    hub: Uuid,
    timing: Timing,
    inner: Mutex<Inner>,
    announce: mpsc::Sender<String>,
}

struct Inner {
    table: Table,
    /// Local sockets receiving each channel's presence, by client id.
    subscribers: HashMap<Uuid, HashMap<String, Arc<Outbox>>>,
    next_heartbeat: Instant,
    /// Another hub asked for this hub's full state (a `hello`).
    asked: bool,
    /// When this hub last asked others for their state (at most once per heartbeat).
    asked_at: Option<Instant>,
}

/// A socket's membership of one channel; dropping it leaves (everywhere).
pub struct Here {
    presence: Arc<Presence>,
    project: Uuid,
    client_id: String,
}

impl Drop for Here {
    fn drop(&mut self) {
        let mut inner = self.presence.lock();
        if let Some(subscribers) = inner.subscribers.get_mut(&self.project) {
            subscribers.remove(&self.client_id);
            if subscribers.is_empty() {
                inner.subscribers.remove(&self.project);
            }
        }
        inner.table.leave_local(self.project, &self.client_id);
    }
}

impl Here {
    /// Replaces this socket's `meta` (the caller checked its size and rate).
    pub fn set_meta(&self, meta: serde_json::Value) {
        self.presence.lock().table.update_local(self.project, &self.client_id, meta);
    }
}

/// Who a socket is on presence, from its token (never from the client).
pub fn identity(principal: &Principal) -> Option<(String, MemberKind)> {
    match principal {
        Principal::User { sub } => Some((sub.clone(), MemberKind::User)),
        Principal::Container { session_id, .. } => Some((session_id.to_string(), MemberKind::Container)),
        Principal::Service => None,
    }
}

/// A fresh client id for a socket (random; unique across hubs in practice).
pub fn new_client_id() -> String {
    let id = Uuid::new_v4().simple().to_string();
    id[..16].to_string()
}

/// Checks a `presence` frame's `meta` against the size limit.
pub fn check_meta(meta: &serde_json::Value) -> Result<(), ApiError> {
    let bytes = meta.to_string().len();
    if bytes > MAX_META_BYTES {
        let details = serde_json::Map::from_iter([("max_bytes".to_owned(), MAX_META_BYTES.into())]);
        return Err(ApiError::PayloadTooLarge {
            message: format!("presence meta is {bytes} bytes serialized; at most {MAX_META_BYTES}"),
            details,
        });
    }
    Ok(())
}

impl Presence {
    /// Starts the flusher (diffs, heartbeats, expiry) and the announcer in `tasks`.
    pub fn start(db: Db, timing: Timing, tasks: &Tasks) -> Arc<Self> {
        let (announce, announcements) = mpsc::channel(ANNOUNCE_QUEUE);
        let hub = Uuid::new_v4();
        let presence = Arc::new(Presence {
            hub,
            timing,
            inner: Mutex::new(Inner {
                table: Table::new(hub),
                subscribers: HashMap::new(),
                next_heartbeat: Instant::now(),
                asked: false,
                asked_at: None,
            }),
            announce,
        });
        tasks.spawn(announcer(db, announcements, tasks.stop_token()));
        tasks.spawn(flusher(presence.clone(), tasks.stop_token()));
        presence
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A socket opts in on `project` (its first `presence` frame): it receives the
    /// channel's `presence_state` now (queued after its `joined`) and diffs from then on;
    /// with an identity it is listed too. Refused when the channel is full.
    pub fn join(
        self: &Arc<Self>,
        project: Uuid,
        client_id: &str,
        identity: Option<(String, MemberKind)>,
        meta: serde_json::Value,
        outbox: Arc<Outbox>,
    ) -> Result<Here, ApiError> {
        let mut inner = self.lock();
        let full = || ApiError::QuotaExceeded {
            message: format!("presence is full: at most {MAX_MEMBERS_PER_CHANNEL} members per channel"),
            details: serde_json::Map::new(),
        };
        if inner.subscribers.get(&project).is_some_and(|s| s.len() >= MAX_MEMBERS_PER_CHANNEL) {
            return Err(full());
        }
        if let Some((user, kind)) = identity {
            let member = PresenceMember { client_id: client_id.to_owned(), user, kind, meta };
            if !inner.table.join_local(project, member) {
                return Err(full());
            }
        }
        let state = ServerFrame::PresenceState(PresenceState {
            channel: channel_name(project),
            members: inner.table.members(project),
            client_id: Some(client_id.to_owned()),
        });
        // Under the lock: no diff of this channel can be queued before the state.
        outbox.push(Out::Presence(state.to_text().into()));
        inner.subscribers.entry(project).or_default().insert(client_id.to_owned(), outbox);
        Ok(Here { presence: self.clone(), project, client_id: client_id.to_owned() })
    }

    /// These sockets lost access to `project` (a member removed): they stop receiving its
    /// presence and leave it, everywhere.
    pub fn lost_access(&self, project: Uuid, outboxes: &[Arc<Outbox>]) {
        if outboxes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let Some(subscribers) = inner.subscribers.get_mut(&project) else { return };
        let gone: Vec<String> = subscribers
            .iter()
            .filter(|(_, outbox)| outboxes.iter().any(|lost| Arc::ptr_eq(lost, outbox)))
            .map(|(id, _)| id.clone())
            .collect();
        subscribers.retain(|id, _| !gone.contains(id));
        if subscribers.is_empty() {
            inner.subscribers.remove(&project);
        }
        for id in gone {
            inner.table.leave_local(project, &id);
        }
    }

    /// An announcement from another hub (the payload of a NOTIFY on [`CHANNEL`]).
    pub fn receive(&self, payload: &str) {
        let Some((sender, body)) = payload.split_once(';') else { return };
        let Ok(sender) = Uuid::parse_str(sender) else { return };
        if sender == self.hub {
            return;
        }
        let Ok(messages) = serde_json::from_str::<Vec<Wire>>(body) else {
            tracing::debug!("ignoring an unreadable presence announcement");
            return;
        };
        let now = Instant::now();
        let mut inner = self.lock();
        let mut ask = false;
        for message in messages {
            match message {
                Wire::Up { ch, m, rev } => inner.table.remote_upsert(ch, sender, m, rev, now + self.timing.ttl),
                Wire::Leave { ch, id } => inner.table.remote_leave(ch, sender, &id),
                Wire::Alive { ch, ids } => ask |= inner.table.refresh(ch, sender, &ids, now + self.timing.ttl),
                Wire::Hello { to } => inner.asked |= to.is_none_or(|to| to == self.hub),
            }
        }
        // A member this hub does not know (a notification it missed): ask its hub, at
        // most once per heartbeat.
        if ask && inner.asked_at.is_none_or(|at| now >= at + self.timing.heartbeat) {
            inner.asked_at = Some(now);
            drop(inner);
            self.send(vec![Wire::Hello { to: Some(sender) }]);
        }
    }

    /// The LISTEN connection (re)connected: announcements may have been missed, so every
    /// other hub is asked for its full state.
    pub fn listening(&self) {
        self.lock().asked_at = Some(Instant::now());
        self.send(vec![Wire::Hello { to: None }]);
    }

    /// One flush: expire, send diffs to local sockets, announce local changes (and the
    /// heartbeat when due).
    fn flush(&self, now: Instant) {
        let mut announce = Vec::new();
        {
            let mut inner = self.lock();
            inner.table.expire(now);
            for diff in inner.table.flush() {
                let Some(subscribers) = inner.subscribers.get(&diff.project) else { continue };
                let text: Utf8Bytes = ServerFrame::PresenceDiff(diff.frame).to_text().into();
                for outbox in subscribers.values() {
                    outbox.push(Out::Presence(text.clone()));
                }
            }
            announce.extend(inner.table.take_outgoing());
            if std::mem::take(&mut inner.asked) {
                announce.extend(inner.table.local_state());
            }
            if now >= inner.next_heartbeat {
                inner.next_heartbeat = now + self.timing.heartbeat;
                announce.extend(inner.table.heartbeat());
            }
        }
        self.send(announce);
    }

    /// Packs `messages` into NOTIFY payloads and queues them for the announcer.
    fn send(&self, messages: Vec<Wire>) {
        for payload in pack(self.hub, messages) {
            if self.announce.try_send(payload).is_err() {
                tracing::debug!("presence announcements are backed up; dropping one");
            }
        }
    }
}

/// The flush loop, every [`FLUSH_EVERY`].
async fn flusher(presence: Arc<Presence>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => presence.flush(Instant::now()),
            _ = stop.cancelled() => return,
        }
    }
}

/// Sends queued payloads with `pg_notify` from a pool connection (autocommit, outside any
/// write transaction, so it never holds up commits).
async fn announcer(db: Db, mut payloads: mpsc::Receiver<String>, stop: CancellationToken) {
    loop {
        let payload = tokio::select! {
            payload = payloads.recv() => match payload { Some(p) => p, None => return },
            _ = stop.cancelled() => return,
        };
        let sent = async {
            let client = db.pool().get().await.map_err(|e| e.to_string())?;
            // Prepared once per connection (as text: a round trip to prepare it each time).
            let statement = client.prepare_cached("SELECT pg_notify($1, $2)").await.map_err(|e| e.to_string())?;
            client.execute(&statement, &[&CHANNEL, &payload]).await.map_err(|e| e.to_string())
        };
        if let Err(err) = sent.await {
            tracing::debug!(error = %err, "announcing presence failed; other hubs catch up by heartbeats");
        }
    }
}

/// One message between hubs (short names: they travel in 8000-byte NOTIFY payloads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Wire {
    /// A member of the sending hub joined or changed its meta (`rev` counts its changes).
    Up {
        ch: Uuid,
        m: PresenceMember,
        rev: u64,
    },
    Leave {
        ch: Uuid,
        id: String,
    },
    /// The sending hub's live members of `ch`, with their revisions.
    Alive {
        ch: Uuid,
        ids: Vec<(String, u64)>,
    },
    /// Asks hub `to` (every hub when absent) to announce its full state.
    Hello {
        to: Option<Uuid>,
    },
}

/// `<hub>;[message,...]` payloads, each under [`MAX_PAYLOAD`] bytes. A heartbeat's id list
/// that does not fit one payload is split.
fn pack(hub: Uuid, messages: Vec<Wire>) -> Vec<String> {
    let prefix = format!("{hub};[");
    let mut payloads = Vec::new();
    let mut current = prefix.clone();
    let mut push = |text: String, current: &mut String| {
        if prefix.len() + text.len() + 2 > MAX_PAYLOAD {
            // Only a member with an absurdly long user id gets here; heartbeats still
            // carry its id, so other hubs ask again rather than loop on it.
            tracing::debug!(bytes = text.len(), "a presence announcement is too large for NOTIFY; dropped");
            return;
        }
        if current.len() > prefix.len() && current.len() + text.len() + 2 > MAX_PAYLOAD {
            current.push(']');
            payloads.push(std::mem::replace(current, prefix.clone()));
        }
        if current.len() > prefix.len() {
            current.push(',');
        }
        current.push_str(&text);
    };
    for message in messages {
        match message {
            Wire::Alive { ch, ids }
                if ids.len() > 1 && serialize(&Wire::Alive { ch, ids: ids.clone() }).len() > 2000 =>
            {
                // About 40 bytes per id: 40 ids per part.
                for part in ids.chunks(40) {
                    push(serialize(&Wire::Alive { ch, ids: part.to_vec() }), &mut current);
                }
            }
            message => push(serialize(&message), &mut current),
        }
    }
    if current.len() > prefix.len() {
        current.push(']');
        payloads.push(current);
    }
    payloads
}

fn serialize(message: &Wire) -> String {
    serde_json::to_string(message).expect("presence messages always serialize")
}

/// A diff of one channel, ready to send.
#[derive(Debug, PartialEq)]
struct ChannelDiff {
    project: Uuid,
    frame: PresenceDiff,
}

/// Every member this hub knows of, by channel, and what its sockets were told. Pure: no
/// I/O, no clock (expiry instants are given).
struct Table {
    hub: Uuid,
    channels: HashMap<Uuid, Channel>,
    /// Members of all channels.
    total: usize,
    /// Local changes not yet announced: the member's state, or None for a leave.
    outgoing: HashMap<(Uuid, String), Option<(PresenceMember, u64)>>,
}

#[derive(Default)]
struct Channel {
    members: HashMap<String, Entry>,
    /// What local sockets were last told (sent in `leaves` when the member goes).
    told: HashMap<String, PresenceMember>,
    /// Members changed since the last flush.
    dirty: BTreeSet<String>,
}

struct Entry {
    hub: Uuid,
    member: PresenceMember,
    rev: u64,
    /// Remote members expire unless a heartbeat lists them again; local ones never.
    expires: Option<Instant>,
}

impl Table {
    fn new(hub: Uuid) -> Self {
        Table { hub, channels: HashMap::new(), total: 0, outgoing: HashMap::new() }
    }

    fn members(&self, project: Uuid) -> Vec<PresenceMember> {
        let mut members: Vec<PresenceMember> = self
            .channels
            .get(&project)
            .map(|c| c.members.values().map(|e| e.member.clone()).collect())
            .unwrap_or_default();
        members.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        members
    }

    /// Inserts or replaces a member; false when a limit refuses a new one.
    fn put(&mut self, project: Uuid, entry: Entry) -> bool {
        let channel = self.channels.entry(project).or_default();
        let id = entry.member.client_id.clone();
        if !channel.members.contains_key(&id) {
            if channel.members.len() >= MAX_MEMBERS_PER_CHANNEL || self.total >= MAX_MEMBERS {
                return false;
            }
            self.total += 1;
        }
        channel.dirty.insert(id.clone());
        channel.members.insert(id, entry);
        true
    }

    fn remove(&mut self, project: Uuid, id: &str) -> Option<Entry> {
        let channel = self.channels.get_mut(&project)?;
        let entry = channel.members.remove(id)?;
        self.total -= 1;
        channel.dirty.insert(id.to_owned());
        Some(entry)
    }

    /// False when a limit refuses the member.
    fn join_local(&mut self, project: Uuid, member: PresenceMember) -> bool {
        let key = (project, member.client_id.clone());
        let entry = Entry { hub: self.hub, member: member.clone(), rev: 0, expires: None };
        let taken = self.put(project, entry);
        if taken {
            self.outgoing.insert(key, Some((member, 0)));
        }
        taken
    }

    fn update_local(&mut self, project: Uuid, id: &str, meta: serde_json::Value) {
        let Some(channel) = self.channels.get_mut(&project) else { return };
        let Some(entry) = channel.members.get_mut(id) else { return };
        entry.member.meta = meta;
        entry.rev += 1;
        channel.dirty.insert(id.to_owned());
        self.outgoing.insert((project, id.to_owned()), Some((entry.member.clone(), entry.rev)));
    }

    fn leave_local(&mut self, project: Uuid, id: &str) {
        if self.remove(project, id).is_some() {
            self.outgoing.insert((project, id.to_owned()), None);
        }
    }

    fn remote_upsert(&mut self, project: Uuid, hub: Uuid, member: PresenceMember, rev: u64, expires: Instant) {
        let current = self.channels.get_mut(&project).and_then(|c| c.members.get_mut(&member.client_id));
        match current {
            // Local members are never replaced from outside; an older revision is stale.
            Some(entry) if entry.hub != hub || entry.rev > rev => {}
            Some(entry) if entry.rev == rev && entry.member == member => entry.expires = Some(expires),
            _ => {
                self.put(project, Entry { hub, member, rev, expires: Some(expires) });
            }
        }
    }

    fn remote_leave(&mut self, project: Uuid, hub: Uuid, id: &str) {
        let owned = self.channels.get(&project).and_then(|c| c.members.get(id)).is_some_and(|e| e.hub == hub);
        if owned {
            self.remove(project, id);
        }
    }

    /// A heartbeat of `hub` listed `ids` on `project`: they live on. True when one of them
    /// is unknown here or newer than what is known (an announcement was missed).
    fn refresh(&mut self, project: Uuid, hub: Uuid, ids: &[(String, u64)], expires: Instant) -> bool {
        let mut missed = false;
        let channel = self.channels.get_mut(&project);
        let Some(channel) = channel else { return !ids.is_empty() };
        for (id, rev) in ids {
            match channel.members.get_mut(id) {
                Some(entry) if entry.hub == hub => {
                    entry.expires = Some(expires);
                    missed |= entry.rev < *rev;
                }
                Some(_) => {}
                None => missed = true,
            }
        }
        missed
    }

    /// Remote members whose hub has not listed them for the ttl leave.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<(Uuid, String)> = self
            .channels
            .iter()
            .flat_map(|(project, channel)| {
                channel
                    .members
                    .iter()
                    .filter(|(_, e)| e.expires.is_some_and(|at| at <= now))
                    .map(|(id, _)| (*project, id.clone()))
            })
            .collect();
        for (project, id) in expired {
            self.remove(project, &id);
        }
    }

    /// The changes since the last flush, one diff per channel; channels nobody is in
    /// any more are forgotten.
    fn flush(&mut self) -> Vec<ChannelDiff> {
        let mut diffs = Vec::new();
        for (project, channel) in &mut self.channels {
            if channel.dirty.is_empty() {
                continue;
            }
            let mut frame = PresenceDiff { channel: channel_name(*project), joins: Vec::new(), leaves: Vec::new() };
            for id in std::mem::take(&mut channel.dirty) {
                match channel.members.get(&id) {
                    Some(entry) => {
                        if channel.told.get(&id) != Some(&entry.member) {
                            channel.told.insert(id, entry.member.clone());
                            frame.joins.push(entry.member.clone());
                        }
                    }
                    None => frame.leaves.extend(channel.told.remove(&id)),
                }
            }
            if !frame.joins.is_empty() || !frame.leaves.is_empty() {
                diffs.push(ChannelDiff { project: *project, frame });
            }
        }
        self.channels.retain(|_, channel| !channel.members.is_empty() || !channel.told.is_empty());
        diffs
    }

    /// Local changes to announce since the last call (latest state per member).
    fn take_outgoing(&mut self) -> Vec<Wire> {
        let mut outgoing: Vec<_> = self.outgoing.drain().collect();
        outgoing.sort_by(|a, b| a.0.cmp(&b.0));
        outgoing
            .into_iter()
            .map(|((ch, id), state)| match state {
                Some((m, rev)) => Wire::Up { ch, m, rev },
                None => Wire::Leave { ch, id },
            })
            .collect()
    }

    /// Every local member in full (the answer to a `hello`).
    fn local_state(&self) -> Vec<Wire> {
        let mut state = Vec::new();
        for (ch, channel) in &self.channels {
            for entry in channel.members.values().filter(|e| e.hub == self.hub) {
                state.push(Wire::Up { ch: *ch, m: entry.member.clone(), rev: entry.rev });
            }
        }
        state
    }

    /// The heartbeat: every local member's id and revision, by channel.
    fn heartbeat(&self) -> Vec<Wire> {
        let mut beats = Vec::new();
        for (ch, channel) in &self.channels {
            let ids: Vec<(String, u64)> =
                channel.members.iter().filter(|(_, e)| e.hub == self.hub).map(|(id, e)| (id.clone(), e.rev)).collect();
            if !ids.is_empty() {
                beats.push(Wire::Alive { ch: *ch, ids });
            }
        }
        beats
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn member(id: &str, user: &str) -> PresenceMember {
        PresenceMember {
            client_id: id.into(),
            user: user.into(),
            kind: MemberKind::User,
            meta: serde_json::Value::Null,
        }
    }

    fn ids(members: &[PresenceMember]) -> Vec<&str> {
        members.iter().map(|m| m.client_id.as_str()).collect()
    }

    #[test]
    fn joins_updates_and_leaves_become_one_diff_per_flush() {
        let mut table = Table::new(Uuid::new_v4());
        let project = Uuid::new_v4();
        table.join_local(project, member("a", "alice"));
        table.join_local(project, member("b", "bob"));
        table.update_local(project, "a", json!({"file": "x.ts"}));
        let [diff] = &table.flush()[..] else { panic!() };
        let mut joins = diff.frame.joins.clone();
        joins.sort_by(|x, y| x.client_id.cmp(&y.client_id));
        assert_eq!(ids(&joins), ["a", "b"]);
        assert_eq!(joins[0].meta, json!({"file": "x.ts"}), "only the latest meta is sent");
        assert!(table.flush().is_empty(), "nothing changed since");
        table.update_local(project, "a", json!(1));
        table.update_local(project, "a", json!(2));
        table.leave_local(project, "b");
        let [diff] = &table.flush()[..] else { panic!() };
        assert_eq!((ids(&diff.frame.joins), ids(&diff.frame.leaves)), (vec!["a"], vec!["b"]));
        assert_eq!(diff.frame.joins[0].meta, json!(2));
        assert_eq!(ids(&table.members(project)), ["a"]);
    }

    #[test]
    fn a_member_that_comes_and_goes_between_flushes_is_never_sent() {
        let mut table = Table::new(Uuid::new_v4());
        let project = Uuid::new_v4();
        table.join_local(project, member("a", "alice"));
        table.leave_local(project, "a");
        assert!(table.flush().is_empty());
        assert!(table.channels.is_empty(), "an empty channel is forgotten");
        assert_eq!(table.total, 0);
    }

    #[test]
    fn remote_members_expire_unless_a_heartbeat_lists_them() {
        let (here, there) = (Uuid::new_v4(), Uuid::new_v4());
        let mut table = Table::new(here);
        let project = Uuid::new_v4();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        table.remote_upsert(project, there, member("r1", "rita"), 0, at(1000));
        table.remote_upsert(project, there, member("r2", "rob"), 0, at(1000));
        table.flush();
        assert!(!table.refresh(project, there, &[("r1".into(), 0)], at(1500)));
        table.expire(at(1000));
        let [diff] = &table.flush()[..] else { panic!() };
        assert_eq!(ids(&diff.frame.leaves), ["r2"]);
        assert_eq!(ids(&table.members(project)), ["r1"]);
        table.expire(at(1500));
        let [diff] = &table.flush()[..] else { panic!() };
        assert_eq!(ids(&diff.frame.leaves), ["r1"]);
        assert_eq!(table.total, 0);
    }

    #[test]
    fn a_heartbeat_naming_an_unknown_or_newer_member_reports_a_miss() {
        let (here, there) = (Uuid::new_v4(), Uuid::new_v4());
        let mut table = Table::new(here);
        let project = Uuid::new_v4();
        let later = Instant::now() + Duration::from_secs(5);
        assert!(table.refresh(project, there, &[("r1".into(), 0)], later));
        table.remote_upsert(project, there, member("r1", "rita"), 3, later);
        assert!(!table.refresh(project, there, &[("r1".into(), 3)], later));
        assert!(table.refresh(project, there, &[("r1".into(), 4)], later));
        // An older revision arriving late changes nothing.
        table.flush();
        let mut stale = member("r1", "rita");
        stale.meta = json!("old");
        table.remote_upsert(project, there, stale, 2, later);
        assert!(table.flush().is_empty());
    }

    #[test]
    fn another_hub_cannot_replace_or_remove_a_member_it_does_not_own() {
        let (here, there) = (Uuid::new_v4(), Uuid::new_v4());
        let mut table = Table::new(here);
        let project = Uuid::new_v4();
        table.join_local(project, member("a", "alice"));
        let mut spoof = member("a", "mallory");
        spoof.kind = MemberKind::Container;
        table.remote_upsert(project, there, spoof, 99, Instant::now());
        table.remote_leave(project, there, "a");
        table.expire(Instant::now() + Duration::from_secs(3600));
        assert_eq!(table.members(project), [member("a", "alice")]);
    }

    #[test]
    fn local_changes_are_announced_once_as_their_latest_state() {
        let mut table = Table::new(Uuid::new_v4());
        let project = Uuid::new_v4();
        table.join_local(project, member("a", "alice"));
        table.update_local(project, "a", json!(1));
        table.join_local(project, member("b", "bob"));
        table.leave_local(project, "b");
        let mut out = table.take_outgoing();
        out.sort_by_key(serialize);
        let mut updated = member("a", "alice");
        updated.meta = json!(1);
        assert_eq!(out, [Wire::Leave { ch: project, id: "b".into() }, Wire::Up { ch: project, m: updated, rev: 1 }]);
        assert!(table.take_outgoing().is_empty());
        assert_eq!(table.heartbeat(), [Wire::Alive { ch: project, ids: vec![("a".into(), 1)] }]);
    }

    #[test]
    fn channels_are_bounded() {
        let mut table = Table::new(Uuid::new_v4());
        let project = Uuid::new_v4();
        for i in 0..MAX_MEMBERS_PER_CHANNEL + 5 {
            assert_eq!(table.join_local(project, member(&format!("m{i}"), "u")), i < MAX_MEMBERS_PER_CHANNEL);
        }
        assert_eq!(table.members(project).len(), MAX_MEMBERS_PER_CHANNEL);
        assert_eq!(table.total, MAX_MEMBERS_PER_CHANNEL);
        table.update_local(project, &format!("m{}", MAX_MEMBERS_PER_CHANNEL + 1), json!(1));
        assert_eq!(table.members(project).len(), MAX_MEMBERS_PER_CHANNEL, "an unlisted socket's update adds nothing");
    }

    #[test]
    fn payloads_stay_under_the_notify_limit_and_read_back() {
        let hub = Uuid::new_v4();
        let project = Uuid::new_v4();
        let mut messages: Vec<Wire> = (0..30)
            .map(|i| {
                let mut m = member(&format!("{i:016}"), "someone");
                m.meta = json!("x".repeat(1000));
                Wire::Up { ch: project, m, rev: i }
            })
            .collect();
        messages.push(Wire::Alive { ch: project, ids: (0..1000).map(|i| (format!("{i:016}"), i)).collect() });
        let payloads = pack(hub, messages.clone());
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        let mut alive = Vec::new();
        for payload in &payloads {
            assert!(payload.len() < MAX_PAYLOAD + 100, "{}", payload.len());
            let (sender, body) = payload.split_once(';').unwrap();
            assert_eq!(sender, hub.to_string());
            for message in serde_json::from_str::<Vec<Wire>>(body).unwrap() {
                match message {
                    Wire::Alive { ids, .. } => alive.extend(ids),
                    other => back.push(other),
                }
            }
        }
        assert_eq!(back, messages[..30]);
        assert_eq!(alive.len(), 1000);
    }
}
