//! The live loop: hydrate, connect, join with `since`, apply events in `seq` order, report
//! progress, refresh the token in place, and start over (reconnect with backoff + jitter,
//! or rehydrate) whenever the connection or the sequence breaks. It ends only on
//! revocation (4010, or a token the hub no longer refreshes) or when asked to stop.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;

use crate::applier::{Admission, ApplyError, Outcome};
use crate::blobs::{self, BlobFetcher};
use crate::health::SharedStatus;
use crate::hub::{HubClient, HubError, refresh_delay, token_expiry};
use crate::hydrate::{HydrateError, hydrate};
use crate::protocol::{Change, ClientFrame, EventFrame, ServerFrame, UpdatedFile, channel_name, wire_seq};
use crate::reconnect::Reconnect;
use crate::tree::{ProjectTree, is_sha256_hex};
use synchub_protocol::{Event, FileDeltaPayload, FileUpdatePayload, close, delta};

use crate::Applier;

/// The largest frame accepted from the hub: a maximal bulk (32 MiB of content) plus
/// JSON escaping headroom.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// The agent pings this often, and gives up on a hub silent for [`SILENCE_LIMIT`].
const PING_EVERY: Duration = Duration::from_secs(20);
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A replayed backlog is applied in batches of at most this many events or this much
/// content, so that holding it stays bounded.
const MAX_BATCH_EVENTS: usize = 10_000;
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Why the session loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The session was revoked or has ended: the agent must stop (non-zero exit).
    Revoked,
    /// Asked to stop (signal, or the dev server exited).
    Shutdown,
}

/// Why one connection ended.
#[derive(Debug)]
enum Ended {
    Revoked,
    Shutdown,
    /// Rehydrate, then reconnect at once.
    Resync,
    /// The hub is restarting (1012): reconnect at once, with `since`. Behind a load
    /// balancer the new connection reaches another hub; the stopping one accepts none.
    Restart,
    /// The hub refused the token: refresh it, or stop if it cannot be refreshed.
    Unauthorized,
    /// Lost or refused: reconnect after a backoff.
    Lost(String),
}

pub struct Session {
    hub: HubClient,
    tree: ProjectTree,
    applier: Applier,
    status: SharedStatus,
    channel: String,
    /// The session's `SNAPSHOT_URL`, used for the first hydration only.
    snapshot_url: Option<String>,
    reconnect: Reconnect,
    /// The hub's `host:port`, probed while backing off.
    probe_target: Option<(String, u16)>,
    /// News from the token refresher.
    refreshes: watch::Receiver<Refresh>,
    /// The backlog this connection's join replays, while it is being received.
    backlog: Option<Backlog>,
    /// Binary files' bytes, fetched before the change that needs them is applied.
    blobs: BlobFetcher,
}

/// The events a join replays (`since` < the `joined` cursor), held so that a run of them
/// is applied as one batch: a file edited 100 times while cut off is written once.
struct Backlog {
    /// The `joined` cursor: the last event of the backlog.
    until: i64,
    /// The seq of the first held event.
    first_seq: i64,
    held: Vec<Change>,
    held_bytes: usize,
}

impl Backlog {
    fn next_seq(&self) -> i64 {
        self.first_seq + self.held.len() as i64
    }
}

/// What the token refresher last did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// The n-th fresh token is in the hub client: send it on the socket.
    Fresh(u64),
    /// The hub refused to refresh: the session is revoked or over.
    Refused,
}

/// Refreshes the token before it expires, connected or not (an expired token cannot be
/// refreshed, so an agent cut off for longer than the token's life must not wait for a
/// socket to do it).
async fn refresh_tokens(hub: HubClient, news: watch::Sender<Refresh>) {
    let mut generation = 0;
    let mut delay = refresh_delay(token_expiry(&hub.token()));
    loop {
        tokio::time::sleep(delay).await;
        match hub.refresh().await {
            Ok(token) => {
                generation += 1;
                tracing::info!("token refreshed");
                delay = refresh_delay(token_expiry(&token));
                if news.send(Refresh::Fresh(generation)).is_err() {
                    return;
                }
            }
            Err(HubError::Unauthorized) => {
                let _ = news.send(Refresh::Refused);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "token refresh failed; retrying");
                delay = Duration::from_secs(2);
            }
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Session {
    /// `reconnect` paces the attempts after a lost connection (see [`Reconnect`]).
    pub fn new(
        hub: HubClient,
        tree: ProjectTree,
        snapshot_url: Option<String>,
        status: SharedStatus,
        reconnect: Reconnect,
    ) -> Self {
        let channel = channel_name(hub.project_id());
        let probe_target = hub.probe_target();
        let (_, refreshes) = watch::channel(Refresh::Fresh(0));
        let blobs = BlobFetcher::new(hub.clone(), tree.root_path());
        Self {
            blobs,
            hub,
            tree,
            applier: Applier::new(0),
            status,
            channel,
            snapshot_url,
            reconnect,
            probe_target,
            refreshes,
            backlog: None,
        }
    }

    /// Runs until revoked or stopped; `hydrated` fires after the first hydration.
    pub async fn run(mut self, mut hydrated: Option<oneshot::Sender<()>>, mut shutdown: watch::Receiver<bool>) -> Exit {
        let (news, refreshes) = watch::channel(Refresh::Fresh(0));
        self.refreshes = refreshes;
        let _refresher = AbortOnDrop(tokio::spawn(refresh_tokens(self.hub.clone(), news).in_current_span()));
        let mut need_hydrate = true;
        loop {
            if *shutdown.borrow() {
                return Exit::Shutdown;
            }
            if self.refused() {
                tracing::error!("the hub no longer refreshes the token; stopping");
                return Exit::Revoked;
            }
            if need_hydrate {
                let url = self.snapshot_url.take();
                match hydrate(&self.hub, url.as_deref(), &mut self.tree).await {
                    Ok(done) => {
                        need_hydrate = false;
                        self.applier.rebase(done.cursor);
                        self.status.update(|s| {
                            s.hydrated = true;
                            s.applied = done.cursor;
                            s.cursor = s.cursor.max(done.cursor);
                        });
                        if let Some(tx) = hydrated.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(HydrateError::Hub(HubError::Unauthorized)) => {
                        if self.session_over().await {
                            return Exit::Revoked;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "hydration failed; retrying");
                        if self.pause(&mut shutdown).await {
                            return Exit::Shutdown;
                        }
                    }
                }
                continue;
            }
            let ended = self.follow(&mut shutdown).await;
            self.status.update(|s| s.connected = false);
            match ended {
                Ended::Revoked => {
                    tracing::error!("the session was revoked; stopping");
                    return Exit::Revoked;
                }
                Ended::Shutdown => return Exit::Shutdown,
                Ended::Resync => need_hydrate = true,
                Ended::Restart => {
                    tracing::info!(applied = self.applier.applied_seq(), "the hub is restarting; reconnecting now");
                }
                Ended::Unauthorized => {
                    if self.session_over().await {
                        return Exit::Revoked;
                    }
                    if self.pause(&mut shutdown).await {
                        return Exit::Shutdown;
                    }
                }
                Ended::Lost(reason) => {
                    tracing::warn!(reason, applied = self.applier.applied_seq(), "disconnected; reconnecting");
                    if self.pause(&mut shutdown).await {
                        return Exit::Shutdown;
                    }
                }
            }
        }
    }

    /// Waits one backoff step, cut short when a probe finds the hub alive; true when asked
    /// to stop meanwhile.
    async fn pause(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        self.reconnect.pause(self.probe_target.as_ref(), shutdown).await
    }

    fn refused(&self) -> bool {
        *self.refreshes.borrow() == Refresh::Refused
    }

    /// After a 401: a refresh that is itself refused means revoked or past the session's
    /// max lifetime.
    async fn session_over(&mut self) -> bool {
        match self.hub.refresh().await {
            Ok(_) => false,
            Err(HubError::Unauthorized) => true,
            Err(error) => {
                tracing::warn!(%error, "token refresh failed");
                false
            }
        }
    }

    /// One connection: connect, join with `since`, apply until something ends it.
    async fn follow(&mut self, shutdown: &mut watch::Receiver<bool>) -> Ended {
        let mut request = match self.hub.realtime_url().into_client_request() {
            Ok(request) => request,
            Err(error) => return Ended::Lost(error.to_string()),
        };
        let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {}", self.hub.token().0)) else {
            return Ended::Unauthorized;
        };
        request.headers_mut().insert("authorization", bearer);
        let config =
            WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES)).max_frame_size(Some(MAX_FRAME_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let socket = tokio::select! {
            result = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match result {
                Err(_) => return Ended::Lost("connect timed out".into()),
                Ok(Err(tungstenite::Error::Http(response))) if response.status() == 401 => return Ended::Unauthorized,
                Ok(Err(error)) => {
                    // No HTTP answer at all: whatever a probe found was not a hub.
                    if !matches!(error, tungstenite::Error::Http(_)) {
                        self.reconnect.attempt_missed_the_hub();
                    }
                    return Ended::Lost(error.to_string());
                }
                Ok(Ok((socket, _))) => socket,
            },
            _ = shutdown.changed() => return Ended::Shutdown,
        };
        let (mut sink, mut stream) = socket.split();
        let join = ClientFrame::Join {
            reference: Some("1".into()),
            channel: self.channel.clone(),
            since: Some(wire_seq(self.applier.since())),
        };
        if let Err(error) = sink.send(Message::text(join.to_text())).await {
            return Ended::Lost(error.to_string());
        }
        // Presence (CONTRACT section 12): editors see the preview attached (listed with
        // kind "container" from the token). One frame per connection: never rate limited.
        let presence = ClientFrame::Presence {
            reference: Some("presence".into()),
            channel: self.channel.clone(),
            meta: serde_json::json!({"agent": "synchub-agent"}),
        };
        if let Err(error) = sink.send(Message::text(presence.to_text())).await {
            return Ended::Lost(error.to_string());
        }
        // The hub knows nothing of this connection's progress yet.
        self.applier.resend_applied();
        // Events held by an earlier connection were not applied: the join replays them.
        self.backlog = None;

        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut last_heard = Instant::now();
        let mut pings = 0u64;
        loop {
            let applied_at = self.applier.applied_deadline(Instant::now()).map(tokio::time::Instant::from_std);
            let ended = tokio::select! {
                _ = shutdown.changed() => Some(Ended::Shutdown),
                message = stream.next() => {
                    last_heard = Instant::now();
                    match message {
                        None => Some(Ended::Lost("connection closed".into())),
                        Some(Err(error)) => Some(Ended::Lost(error.to_string())),
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                        Some(Ok(Message::Close(frame))) => Some(closed(frame.map(|f| f.code))),
                        Some(Ok(_)) => None, // ping/pong (tungstenite answers pings itself)
                    }
                }
                _ = sleep_until(applied_at) => None,
                _ = ping.tick() => {
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        Some(Ended::Lost("the hub went silent".into()))
                    } else {
                        pings += 1;
                        let frame = ClientFrame::Ping { reference: Some(format!("p{pings}").into()) };
                        sink.send(Message::text(frame.to_text())).await.err().map(|e| Ended::Lost(e.to_string()))
                    }
                }
                changed = self.refreshes.changed() => {
                    // Copied out first: the watch guard must not live across the send below.
                    let refresh = changed.ok().map(|()| *self.refreshes.borrow_and_update());
                    match refresh {
                        None | Some(Refresh::Refused) => Some(Ended::Revoked),
                        Some(Refresh::Fresh(_)) => {
                            let frame = ClientFrame::Auth { token: self.hub.token() };
                            sink.send(Message::text(frame.to_text())).await.err().map(|e| Ended::Lost(e.to_string()))
                        }
                    }
                }
            };
            if let Some(ended) = ended {
                // Progress is kept on disk, but no `applied` frame goes out: after the
                // hub's Close, tungstenite refuses to send one, and that error would turn
                // a 1012 into a lost connection (and a backoff). The next connection
                // reports progress anyway (`resend_applied`).
                self.save_progress(self.applier.applied_seq());
                if !matches!(ended, Ended::Lost(_)) {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(None))).await;
                }
                return ended;
            }
            // Report progress whenever a frame is due, whatever woke the loop.
            if let Some(seq) = self.applier.applied_frame_due(Instant::now()) {
                self.save_progress(seq);
                let frame = ClientFrame::Applied { channel: self.channel.clone(), seq: wire_seq(seq) };
                if let Err(error) = sink.send(Message::text(frame.to_text())).await {
                    return Ended::Lost(error.to_string());
                }
            }
        }
    }

    /// Records on disk that the tree holds every change up to `seq`, so that a restarted
    /// agent resumes from there.
    fn save_progress(&mut self, seq: i64) {
        if let Err(error) = tokio::task::block_in_place(|| self.tree.save_state(seq)) {
            tracing::warn!(%error, "saving the agent state failed");
        }
    }

    /// Handles one text frame from the hub; `Some` ends the connection. A `file:update`
    /// carrying a delta becomes a full update first (see [`Self::resolve_delta`]).
    async fn on_text(&mut self, text: &str) -> Option<Ended> {
        let mut frame = match ServerFrame::parse(text) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, "ignoring an unreadable frame");
                return None;
            }
        };
        if let ServerFrame::Event(event) = &mut frame
            && event.channel == self.channel
            && let Err(ended) = self.resolve_delta(event).await
        {
            return Some(ended);
        }
        self.on_frame(frame).await
    }

    /// Turns a delta event (CONTRACT section 12) into the full `file:update` it stands for:
    /// the delta applied to the file in the tree, checked against `base_hash` and
    /// `content_hash`; when that fails (the file changed locally, or its base never reached
    /// the tree) the file is read over HTTP. When even that fails the connection ends, and
    /// the rejoin replays the log, whose events carry contents.
    async fn resolve_delta(&mut self, event: &mut EventFrame) -> Result<(), Ended> {
        if event.payload.get("delta").is_none() {
            return Ok(()); // the common case, without parsing the payload twice
        }
        let Ok(Some(Event::FileDelta(update))) = Event::parse(&event.event, &event.payload) else {
            return Ok(()); // not a delta (or malformed: applying it says so)
        };
        let applied = tokio::task::block_in_place(|| apply_to_tree(&self.tree, &update));
        let file = match applied {
            Some(content) => UpdatedFile {
                file_path: update.file_path.clone(),
                file_type: update.file_type.clone(),
                content,
                content_hash: update.content_hash.clone(),
                version: update.version,
                blob: None,
            },
            None => {
                tracing::info!(seq = event.seq, path = %update.file_path, "a delta's base is not in the tree; reading the file");
                let read = self.hub.read_file(&update.file_path).await.map_err(|error| {
                    Ended::Lost(format!("reading {} after a delta did not apply: {error}", update.file_path))
                })?;
                // The file may have become binary since (then the read names its blob).
                UpdatedFile {
                    file_path: update.file_path.clone(),
                    file_type: read.file_type,
                    content: read.content.unwrap_or_default(),
                    content_hash: read.content_hash,
                    version: read.version,
                    blob: read.blob,
                }
            }
        };
        let full = FileUpdatePayload { file, timestamp: update.timestamp, actor: update.actor, op_id: update.op_id };
        event.payload = serde_json::to_value(full).map_err(|error| Ended::Lost(error.to_string()))?;
        Ok(())
    }

    async fn on_frame(&mut self, frame: ServerFrame) -> Option<Ended> {
        match frame {
            ServerFrame::Joined { cursor, .. } => {
                tracing::info!(cursor, since = self.applier.since(), "joined");
                self.reconnect.joined();
                let since = self.applier.since();
                self.backlog = (cursor > since).then(|| Backlog {
                    until: cursor,
                    first_seq: since + 1,
                    held: Vec::new(),
                    held_bytes: 0,
                });
                self.status.update(|s| {
                    s.connected = true;
                    s.cursor = s.cursor.max(cursor);
                });
                None
            }
            ServerFrame::Event(event) if event.channel == self.channel => self.on_event(&event).await,
            ServerFrame::ResyncRequired { oldest_seq, .. } => {
                tracing::warn!(oldest_seq, since = self.applier.since(), "history trimmed; rehydrating");
                Some(Ended::Resync)
            }
            ServerFrame::Error(error) => {
                let code = error.error.code;
                Some(Ended::Lost(format!("the hub refused the join: {code}")))
            }
            _ => None,
        }
    }

    async fn on_event(&mut self, event: &EventFrame) -> Option<Ended> {
        self.status.update(|s| s.cursor = s.cursor.max(event.seq));
        if self.backlog.as_ref().is_some_and(|backlog| event.seq <= backlog.until) {
            return self.hold(event).await;
        }
        if self.applier.admit(event.seq) != Admission::Next {
            // A duplicate or a gap: nothing to fetch, the applier says which.
            let outcome = self.applier.handle_event(&mut self.tree, event);
            return self.settle(event, outcome);
        }
        let change = match Change::of(event) {
            Ok(change) => change,
            Err(source) => {
                let error = ApplyError::Malformed { seq: event.seq, event: event.event.clone(), source };
                return self.settle(event, Err(error));
            }
        };
        let fetched = match self.fetch_blobs(std::slice::from_ref(&change)).await {
            Ok(fetched) => fetched,
            Err(ended) => return Some(ended),
        };
        let outcome = tokio::task::block_in_place(|| self.applier.handle(&mut self.tree, event.seq, &change));
        if fetched {
            self.blobs.clear();
        }
        self.settle(event, outcome.map_err(ApplyError::from))
    }

    /// Fetches the blobs `changes` need that the tree does not already hold (CONTRACT
    /// section 13), before they are applied: `applied_seq` only moves once the bytes are
    /// written. `Ok(true)` when something was fetched (the caller empties the cache after
    /// applying). A transient failure (retried in [`BlobFetcher::ensure`] first) ends the
    /// connection, so the join replays the change later; a blob that cannot be had at all
    /// means rehydrating from a snapshot, which carries binary files' bytes.
    async fn fetch_blobs(&mut self, changes: &[Change]) -> Result<bool, Ended> {
        let wanted: Vec<_> = tokio::task::block_in_place(|| {
            blobs::needed(changes)
                .into_iter()
                // A malformed address is the tree's to refuse, like a bad path.
                .filter(|(path, blob)| {
                    is_sha256_hex(&blob.sha256) && !self.tree.has_content(path, blob.size.get(), &blob.sha256)
                })
                .map(|(_, blob)| blob.clone())
                .collect()
        });
        for blob in &wanted {
            if let Err(error) = self.blobs.ensure(blob).await {
                self.blobs.clear();
                if error.is_unauthorized() {
                    return Err(Ended::Unauthorized);
                }
                if error.is_transient() {
                    tracing::warn!(%error, "a binary file could not be fetched; reconnecting");
                    return Err(Ended::Lost(error.to_string()));
                }
                tracing::error!(%error, "a binary file cannot be fetched; rehydrating");
                return Err(Ended::Resync);
            }
        }
        Ok(!wanted.is_empty())
    }

    /// Holds one backlog event; applies the held run when the backlog is complete or the
    /// run reaches its bounds.
    async fn hold(&mut self, event: &EventFrame) -> Option<Ended> {
        let backlog = self.backlog.as_mut()?;
        let expected = backlog.next_seq();
        if event.seq < expected {
            return None; // a duplicate
        }
        if event.seq > expected {
            tracing::warn!(expected, got = event.seq, "gap in the event sequence; rehydrating");
            return Some(Ended::Resync);
        }
        let change = match Change::of(event) {
            Ok(change) => change,
            Err(source) => {
                let error = ApplyError::Malformed { seq: event.seq, event: event.event.clone(), source };
                tracing::warn!(%error, "rehydrating");
                return Some(Ended::Resync);
            }
        };
        // Binary files count by their size: their blobs are fetched into the cache for the batch.
        let file_bytes = |f: &UpdatedFile| f.content.len() + f.blob.as_ref().map_or(0, |b| b.size.get() as usize);
        backlog.held_bytes += match &change {
            Change::Update(file) => file_bytes(file),
            Change::Bulk(bulk) => bulk.files.iter().map(file_bytes).sum(),
            _ => 0,
        };
        if matches!(change, Change::ProjectDeleted(_)) {
            tracing::warn!(seq = event.seq, "the project was deleted");
        }
        backlog.held.push(change);
        let complete = event.seq == backlog.until;
        if complete || backlog.held.len() >= MAX_BATCH_EVENTS || backlog.held_bytes >= MAX_BATCH_BYTES {
            let first_seq = backlog.first_seq;
            let held = std::mem::take(&mut backlog.held);
            backlog.first_seq += held.len() as i64;
            backlog.held_bytes = 0;
            if complete {
                self.backlog = None;
            }
            let fetched = match self.fetch_blobs(&held).await {
                Ok(fetched) => fetched,
                Err(ended) => return Some(ended),
            };
            let outcome = tokio::task::block_in_place(|| self.applier.handle_batch(&mut self.tree, first_seq, &held));
            if fetched {
                self.blobs.clear();
            }
            tracing::debug!(first_seq, events = held.len(), "applied a backlog batch");
            return self.settle(event, outcome.map_err(ApplyError::from));
        }
        None
    }

    /// Logs and reports what applying `event` (or a batch ending with it) did.
    fn settle(&mut self, event: &EventFrame, outcome: Result<Outcome, ApplyError>) -> Option<Ended> {
        match outcome {
            Ok(Outcome::Applied(report)) => {
                for refused in &report.refused {
                    tracing::warn!(seq = event.seq, event_type = %event.event, path = refused.path(), error = %refused, "path refused");
                }
                let lag = event.payload["timestamp"].as_str().and_then(lag_ms);
                let applied = self.applier.applied_seq();
                self.status.update(|s| {
                    s.applied = applied;
                    if lag.is_some() {
                        s.last_lag_ms = lag;
                    }
                });
                tracing::debug!(seq = event.seq, event_type = %event.event, written = report.written.len(), deleted = report.deleted.len(), "applied");
                None
            }
            Ok(Outcome::Duplicate) => None,
            Ok(Outcome::ProjectDeleted) => {
                tracing::warn!(seq = event.seq, "the project was deleted");
                self.status.update(|s| s.applied = event.seq);
                None
            }
            Ok(Outcome::Gap { expected, got }) => {
                tracing::warn!(expected, got, "gap in the event sequence; rehydrating");
                Some(Ended::Resync)
            }
            Err(error @ ApplyError::Malformed { .. }) => {
                tracing::warn!(%error, "rehydrating");
                Some(Ended::Resync)
            }
            Err(ApplyError::Tree(error)) => {
                tracing::error!(%error, seq = event.seq, "the tree could not be changed; rehydrating");
                Some(Ended::Resync)
            }
        }
    }
}

/// The content a delta event gives when applied to the owned file in the tree, if that
/// file is the event's base and the result has the event's hash.
fn apply_to_tree(tree: &ProjectTree, update: &FileDeltaPayload) -> Option<String> {
    let base = String::from_utf8(tree.read_owned(&update.file_path, MAX_FRAME_BYTES as u64)?).ok()?;
    if delta::content_hash(base.as_bytes()) != update.base_hash {
        return None;
    }
    delta::apply_verified(&base, &update.delta, &update.content_hash)
}

fn closed(code: Option<CloseCode>) -> Ended {
    match code.map(u16::from) {
        Some(close::SESSION_REVOKED) => Ended::Revoked,
        Some(close::UNAUTHENTICATED | close::TOKEN_EXPIRED) => Ended::Unauthorized,
        Some(close::RESTART) => Ended::Restart,
        Some(code) => Ended::Lost(format!("closed by the hub ({code})")),
        None => Ended::Lost("closed by the hub".into()),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Milliseconds from a commit timestamp (`2026-11-22T10:00:00.000Z`) to now; clocks of
/// the hub and the container may differ, so a negative lag reads as 0.
fn lag_ms(timestamp: &str) -> Option<u64> {
    let committed = parse_utc_millis(timestamp)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(now.saturating_sub(committed).max(0) as u64)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` → Unix milliseconds.
fn parse_utc_millis(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    let millis: i64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_applies_to_the_tree_only_to_its_base_and_only_when_it_checks_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = ProjectTree::open(dir.path(), crate::tree::TreeOptions::default()).unwrap();
        let base: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let target = base.replacen("line 100", "line one hundred", 1);
        tree.write_file("a.txt", base.as_bytes()).unwrap();
        let update = FileDeltaPayload {
            file_path: "a.txt".into(),
            file_type: "text".into(),
            version: 2,
            content_hash: delta::content_hash(target.as_bytes()),
            base_version: 1,
            base_hash: delta::content_hash(base.as_bytes()),
            delta: delta::encode(&base, &target),
            timestamp: String::new(),
            actor: String::new(),
            op_id: None,
        };
        assert_eq!(apply_to_tree(&tree, &update), Some(target.clone()));
        // A corrupted delta, a wrong result hash, a file that is not there or not the base.
        let corrupted = FileDeltaPayload {
            delta: delta::encode(&base, "something else entirely").replace('A', "B"),
            ..update.clone()
        };
        assert_eq!(apply_to_tree(&tree, &corrupted), None);
        let wrong_hash = FileDeltaPayload { content_hash: delta::content_hash(b"x"), ..update.clone() };
        assert_eq!(apply_to_tree(&tree, &wrong_hash), None);
        assert_eq!(apply_to_tree(&tree, &FileDeltaPayload { file_path: "b.txt".into(), ..update.clone() }), None);
        tree.write_file("a.txt", b"changed").unwrap();
        assert_eq!(apply_to_tree(&tree, &update), None);
    }

    #[test]
    fn parses_hub_timestamps() {
        assert_eq!(parse_utc_millis("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_utc_millis("2026-11-22T10:00:00.123Z"), Some(1_795_341_600_123));
        assert_eq!(parse_utc_millis("2000-03-01T00:00:01Z"), Some(951_868_801_000));
        assert_eq!(parse_utc_millis("garbage"), None);
        assert_eq!(lag_ms("2999-01-01T00:00:00.000Z"), Some(0));
    }

    /// CI once saw a 1012 read as a lost connection: the Close arrived while an `applied`
    /// frame was due, and sending it after the Close failed. Here every connection is
    /// closed with 1012 at once, while the first `applied` frame is due.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_close_with_progress_due_ends_as_a_restart() {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        const CONNECTIONS: usize = 20;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = tokio::spawn(async move {
            for _ in 0..CONNECTIONS {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let restart = CloseFrame { code: CloseCode::from(close::RESTART), reason: "".into() };
                socket.close(Some(restart)).await.unwrap();
                while let Some(Ok(_)) = socket.next().await {}
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let tree = ProjectTree::open(dir.path(), crate::tree::TreeOptions::default()).unwrap();
        let base = format!("http://{addr}").parse().unwrap();
        let hub_client = HubClient::new(base, "p".into(), crate::protocol::Token("t".into())).unwrap();
        let reconnect = Reconnect::new(Duration::from_millis(10), Duration::from_millis(10));
        let mut session = Session::new(hub_client, tree, None, SharedStatus::default(), reconnect);
        let (_refresher, refreshes) = watch::channel(Refresh::Fresh(0));
        session.refreshes = refreshes;
        let (_stop, mut shutdown) = watch::channel(false);
        for connection in 0..CONNECTIONS {
            let ended = session.follow(&mut shutdown).await;
            assert!(matches!(ended, Ended::Restart), "connection {connection} ended as {ended:?}");
        }
        hub.await.unwrap();
    }

    #[test]
    fn close_codes_map_to_endings() {
        assert!(matches!(closed(Some(CloseCode::from(4010))), Ended::Revoked));
        assert!(matches!(closed(Some(CloseCode::from(4009))), Ended::Unauthorized));
        assert!(matches!(closed(Some(CloseCode::from(4008))), Ended::Lost(_)));
        // A hub shutting down: reconnect now, not after a backoff.
        assert!(matches!(closed(Some(CloseCode::from(1012))), Ended::Restart));
        assert!(matches!(closed(Some(CloseCode::from(1001))), Ended::Lost(_)));
        assert!(matches!(closed(None), Ended::Lost(_)));
    }
}
