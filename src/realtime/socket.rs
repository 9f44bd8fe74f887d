//! One WebSocket session. The reader authenticates, authorizes joins and runs writes;
//! everything the client receives goes through the socket's [`Outbox`] to one writer,
//! which owns each channel's position (`next_seq`): duplicates are skipped, gaps are
//! filled from the log, so per channel the client sees seq n, n+1, n+2, …
//!
//! Reader and writer are one unit: they run in one task under one `select!`, so whatever
//! ends either (an error, a close, a write past its deadline, a panic) ends both, and the
//! socket's slot and gauges are guards released when that task's future is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use uuid::Uuid;

use super::broker::{EventFrame, SocketSlot, Subscription};
use super::outbox::{Drained, Out, Outbox};
use super::protocol::{self, ClientFrame, Ref, WriteResult, close};
use crate::app::AppState;
use crate::auth::Principal;
use crate::auth::policy::{self, Actor, Need, Scope};
use crate::error::ApiError;
use crate::files;
use crate::limits::RateLimiter;
use synchub_protocol::{DeleteFileQuery, PutFileRequest};

/// A text frame that makes the reader panic once a test called
/// [`super::Broker::inject_reader_faults`] (never otherwise).
const READER_FAULT_FRAME: &str = "synchub:test:reader-panic";
/// A browser must authenticate within this long after the upgrade.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The hub pings this often…
const PING_EVERY: Duration = Duration::from_secs(20);
/// …and drops a peer silent for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Channels one socket may join.
const MAX_CHANNELS: usize = 64;
/// Events read per gap-fill query.
const FILL_PAGE: i64 = 500;
/// Outbound bytes buffered before a write to the TCP socket (a batch is flushed at its end
/// anyway). The buffer only grows while frames are queued, so idle sockets do not pay it.
const WRITE_BUFFER: usize = 64 * 1024;
/// Joins one socket may make per second (CONTRACT section 4).
const JOINS_PER_SECOND: u32 = 20;
/// After the reader ended, the writer may take this long to send what is queued and the
/// close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A close frame after a write timed out gets this long: the peer is not reading, so it
/// rarely gets through, and the socket's resources are released right after.
const LAST_CLOSE_ATTEMPT: Duration = Duration::from_millis(100);

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A plain GET (no upgrade headers) gets the contract's JSON, not axum's text rejection.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return ApiError::InvalidRequest(rejection.body_text()).into_response(),
    };
    // Browsers always send Origin; clients without one (agents, servers) are not browsers.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !state.origins.allows(origin.as_bytes())
    {
        return ApiError::Forbidden("origin not allowed".into()).into_response();
    }
    let pre_auth = match crate::auth::bearer_header(&headers) {
        Some(token) => match state.auth.authenticate(token).await {
            Ok(verified) => Some(verified),
            Err(err) => return err.into_response(),
        },
        None => None,
    };
    let max_message = state.config.limits.max_bulk_bytes + 64 * 1024;
    // Frames are queued with `feed` and flushed once per outbox batch (see write_loop):
    // frames are written to the TCP socket when this much is buffered, or at the flush.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| run(state, socket, pre_auth))
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

async fn run(state: AppState, socket: WebSocket, pre_auth: Option<(Principal, i64)>) {
    let (sink, mut stream) = socket.split();
    let sink = Conn { sink, deadline: Duration::from_millis(state.config.limits.socket_write_timeout_ms) };
    let ((principal, expires_at), by_frame) = match pre_auth {
        Some(verified) => (verified, false),
        None => match first_frame_auth(&state, &mut stream).await {
            Ok(verified) => (verified, true),
            Err((code, reason)) => return close_early(sink, stream, code, reason).await,
        },
    };
    let Some(slot) = state.broker.claim_socket(&principal.rate_key(), state.config.limits.max_sockets_per_user) else {
        return close_early(sink, stream, close::POLICY, "too many sockets for this user").await;
    };
    let open = OpenSocket { _slot: slot, _gauge: Counted::new(&state.metrics.open_sockets) };
    let outbox = Outbox::new(state.config.limits.socket_queue_bytes);
    // The first-frame auth is answered like every accepted auth frame (contract 4).
    if by_frame {
        outbox.push(Out::Text(protocol::authed(expires_at)));
    }
    let (progress, _session_socket) = match &principal {
        Principal::Container { session_id, .. } => {
            let registered = state.broker.register_session_socket(*session_id, outbox.clone());
            seen(&state, *session_id, None, 1).await;
            (Some(Progress { session: *session_id, pending: None, flushed_at: Instant::now() }), Some(registered))
        }
        _ => (None, None),
    };
    let mut session = Session {
        state: state.clone(),
        principal,
        expires_at,
        outbox,
        progress,
        joins: RateLimiter::new(f64::from(JOINS_PER_SECOND), f64::from(JOINS_PER_SECOND), Counter::default()),
    };
    // A panic while handling a frame must not leave half a socket behind: it ends the
    // whole socket (both halves are inside this future), never just its reader.
    if AssertUnwindSafe(session.serve(&mut stream, sink)).catch_unwind().await.is_err() {
        tracing::error!("a socket's session panicked; the socket was closed");
    }
    drop(open);
    if let Some(progress) = &session.progress {
        seen(&state, progress.session, progress.pending, -1).await;
    }
}

/// What an open socket holds until it ends, however it ends.
struct OpenSocket {
    _slot: SocketSlot,
    _gauge: Counted,
}

/// One unit of a gauge, given back on drop.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why the writer stopped writing.
#[derive(Debug)]
enum WriteError {
    /// The connection failed or closed.
    Gone,
    /// A write did not complete within the deadline: the peer is not reading.
    TimedOut,
}

/// The socket's sending half; every write is bounded by the write deadline, so a peer that
/// stops reading is cut off even while the hub is blocked writing to it.
struct Conn {
    sink: Sink,
    deadline: Duration,
}

impl Conn {
    async fn feed(&mut self, message: Message) -> Result<(), WriteError> {
        within(self.deadline, self.sink.feed(message)).await
    }

    async fn text(&mut self, text: impl Into<axum::extract::ws::Utf8Bytes>) -> Result<(), WriteError> {
        self.feed(Message::Text(text.into())).await
    }

    async fn flush(&mut self) -> Result<(), WriteError> {
        within(self.deadline, self.sink.flush()).await
    }

    async fn send(&mut self, message: Message) -> Result<(), WriteError> {
        within(self.deadline, self.sink.send(message)).await
    }

    /// Sends a close frame, giving up after `limit`.
    async fn close(&mut self, code: u16, reason: &'static str, limit: Duration) -> Result<(), WriteError> {
        within(limit.min(self.deadline), self.sink.send(close_message(code, reason))).await
    }
}

async fn within(limit: Duration, write: impl Future<Output = Result<(), axum::Error>>) -> Result<(), WriteError> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteError::Gone),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// How long a refused socket waits for the client's close reply.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Closes a socket that never got going (failed auth, too many sockets). The client may
/// already have sent more frames (auth, join, ping back to back): dropping the connection
/// with those unread makes the kernel answer with a reset, and the client sees 1006
/// instead of our close code. So read (and discard) until the client's close reply, the
/// end of the stream, or `CLOSE_DRAIN`.
async fn close_early(mut sink: Conn, mut stream: Stream, code: u16, reason: &'static str) {
    if sink.close(code, reason, CLOSE_DRAIN).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// Browsers cannot set headers on a WebSocket: their first frame is `{"type":"auth",...}`.
async fn first_frame_auth(state: &AppState, stream: &mut Stream) -> Result<(Principal, i64), (u16, &'static str)> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, stream.next()).await;
    let Ok(Some(Ok(Message::Text(text)))) = first else {
        return Err((close::UNAUTHENTICATED, "authenticate first"));
    };
    let Ok(ClientFrame::Auth { token }) = protocol::parse_frame(text.as_str()) else {
        return Err((close::UNAUTHENTICATED, "authenticate first"));
    };
    match state.auth.authenticate(&token).await {
        Ok(verified) => Ok(verified),
        Err(ApiError::TokenExpired) => Err((close::TOKEN_EXPIRED, "token expired")),
        Err(_) => Err((close::UNAUTHENTICATED, "invalid token")),
    }
}

struct Session {
    state: AppState,
    principal: Principal,
    expires_at: i64,
    outbox: Arc<Outbox>,
    /// Container sockets: the agent's reported progress, written at most every
    /// PROGRESS_EVERY (and as a liveness heartbeat at least every HEARTBEAT_EVERY).
    progress: Option<Progress>,
    /// JOINS_PER_SECOND, as a bucket of that many tokens refilled at that rate.
    joins: RateLimiter,
}

struct Progress {
    session: Uuid,
    pending: Option<i64>,
    flushed_at: Instant,
}

const PROGRESS_EVERY: Duration = Duration::from_millis(250);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

/// Records a container session's progress and liveness (`sockets_delta` +1/-1 on
/// connect/disconnect). False when the database refused `applied` (above the project's
/// last seq; nothing of it was recorded). Other failures only delay what
/// `GET /v1/sessions/{id}` shows.
async fn seen(state: &AppState, session: Uuid, applied: Option<i64>, sockets_delta: i32) -> bool {
    let result = async {
        let client = state.db.pool().get().await?;
        let row = client
            .query_one("SELECT synchub.session_report($1, $2, $3)", &[&session, &applied, &sockets_delta])
            .await?;
        Ok::<Option<bool>, ApiError>(row.try_get(0)?)
    };
    match result.await {
        Ok(accepted) => accepted != Some(false),
        Err(err) => {
            tracing::debug!(session_id = %session, error = %err, "recording session progress failed");
            true
        }
    }
}

impl Session {
    /// Runs the reader and the writer until either ends; then the other ends too.
    async fn serve(&mut self, stream: &mut Stream, sink: Conn) {
        let writer = write_loop(self.state.clone(), sink, self.outbox.clone());
        let mut writer = std::pin::pin!(writer);
        let reader_ended = tokio::select! {
            () = self.read_loop(stream) => true,
            () = &mut writer => false,
        };
        if reader_ended {
            // The writer sends what is queued, ending with a close frame (the first Close
            // queued wins), unless the peer does not take it.
            self.outbox.push(Out::Close(close::NORMAL, ""));
            let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
        }
    }

    async fn read_loop(&mut self, stream: &mut Stream) {
        let mut progress_tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            let until_expiry = Duration::from_secs((self.expires_at - now_secs()).max(0) as u64);
            tokio::select! {
                _ = progress_tick.tick(), if self.progress.is_some() => self.flush_progress(false).await,
                message = tokio::time::timeout(IDLE_LIMIT, stream.next()) => match message {
                    Err(_) => {
                        self.outbox.push(Out::Close(close::GOING_AWAY, "idle"));
                        return;
                    }
                    Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
                    Ok(Some(Ok(Message::Text(text)))) => {
                        if self.state.broker.reader_faults_injected() && text.as_str() == READER_FAULT_FRAME {
                            panic!("reader failure injected by a test");
                        }
                        if !self.handle(text.as_str()).await {
                            return;
                        }
                    }
                    Ok(Some(Ok(Message::Binary(_)))) => {
                        let err = ApiError::InvalidRequest("frames are JSON text".into());
                        self.outbox.push(Out::Text(protocol::error(&None, None, &err)));
                    }
                    Ok(Some(Ok(_))) => {} // ping/pong: the peer is alive
                },
                _ = tokio::time::sleep(until_expiry) => {
                    self.outbox.push(Out::Close(close::TOKEN_EXPIRED, "token expired"));
                    return;
                }
                _ = self.state.broker.shutdown.cancelled() => {
                    self.outbox.push(Out::Close(close::GOING_AWAY, "hub shutting down"));
                    return;
                }
            }
        }
    }

    /// Handles one client frame; false ends the session.
    async fn handle(&mut self, text: &str) -> bool {
        let frame = match protocol::parse_frame(text) {
            Ok(frame) => frame,
            Err(refused) => {
                self.outbox.push(Out::Text(refused.answer()));
                return true;
            }
        };
        match frame {
            ClientFrame::Auth { token } => return self.reauthenticate(&token).await,
            ClientFrame::Ping { reference } => {
                self.outbox.push(Out::Text(protocol::pong(&reference)));
            }
            ClientFrame::Join { reference, channel, since } => {
                self.join(reference, &channel, since.map(i64::from)).await
            }
            ClientFrame::Leave { channel, .. } => {
                if let Some(project) = protocol::parse_channel(&channel) {
                    self.outbox.push(Out::Leave { project, notice: None });
                }
            }
            ClientFrame::Applied { channel, seq } => self.applied(&channel, seq.into()).await,
            ClientFrame::Upsert { reference, channel, path, content, file_type, expected_version, op_id } => {
                let body = PutFileRequest { content, file_type, expected_version, op_id };
                let result = match self.writer(&channel) {
                    Ok(actor) => files::upsert_file(&self.state, &actor, &path, body).await,
                    Err(err) => Err(err),
                };
                self.ack(reference, result.map(WriteResult::Put));
            }
            ClientFrame::Delete { reference, channel, path, expected_version, op_id } => {
                let query = DeleteFileQuery { expected_version, op_id };
                let result = match self.writer(&channel) {
                    Ok(actor) => files::delete_file(&self.state, &actor, &path, query).await,
                    Err(err) => Err(err),
                };
                self.ack(reference, result.map(WriteResult::Delete));
            }
            ClientFrame::Bulk { reference, channel, upserts, deletes, op_id } => {
                let body = protocol::bulk_body(upserts, deletes, op_id);
                let result = match self.writer(&channel) {
                    Ok(actor) => files::bulk_write(&self.state, &actor, body).await,
                    Err(err) => Err(err),
                };
                self.ack(reference, result.map(WriteResult::Bulk));
            }
        }
        true
    }

    /// This socket's caller, as the policy decides it for writing to `channel`'s project.
    fn writer(&self, channel: &str) -> Result<Actor, ApiError> {
        let project =
            protocol::parse_channel(channel).ok_or_else(|| ApiError::InvalidRequest("unknown channel".into()))?;
        policy::decide(&self.principal, Need::Write, Scope::Project(project))
    }

    fn ack(&self, reference: Option<Ref>, result: Result<WriteResult, ApiError>) {
        let text = match result {
            Ok(result) => protocol::ack_ok(&reference, result),
            Err(err) => protocol::ack_error(&reference, &err),
        };
        self.outbox.push(Out::Text(text));
    }

    /// A fresh token on an open socket: same user (or same session) only.
    async fn reauthenticate(&mut self, token: &str) -> bool {
        match self.state.auth.authenticate(token).await {
            Ok((principal, expires_at)) if principal == self.principal => {
                self.expires_at = expires_at;
                self.outbox.push(Out::Text(protocol::authed(expires_at)));
                true
            }
            Ok(_) => {
                self.outbox.push(Out::Close(close::FORBIDDEN, "a socket keeps its identity"));
                false
            }
            Err(ApiError::TokenExpired) => {
                self.outbox.push(Out::Close(close::TOKEN_EXPIRED, "token expired"));
                false
            }
            Err(_) => {
                self.outbox.push(Out::Close(close::UNAUTHENTICATED, "invalid token"));
                false
            }
        }
    }

    async fn join(&mut self, reference: Option<Ref>, channel: &str, since: Option<i64>) {
        if self.joins.check("", 1.0).is_err() {
            self.outbox.push(Out::Text(protocol::joins_rate_limited(&reference, channel, JOINS_PER_SECOND)));
            return;
        }
        let refuse = |err: ApiError| Out::Text(protocol::error(&reference, Some(channel), &err));
        let Some(project) = protocol::parse_channel(channel) else {
            // An unknown channel is a project that does not exist.
            self.outbox.push(refuse(ApiError::NotFound("project not found".into())));
            return;
        };
        let actor = match policy::decide(&self.principal, Need::Read, Scope::Project(project)) {
            Ok(actor) => actor,
            Err(err) => {
                self.outbox.push(refuse(err));
                return;
            }
        };
        let info = match self
            .state
            .db
            .json(actor.db(), "SELECT synchub.join_channel($1, $2)", &[&project, &actor.name()])
            .await
        {
            Ok(info) => info,
            Err(err) => {
                self.outbox.push(refuse(err));
                return;
            }
        };
        let head = info["last_seq"].as_i64().unwrap_or(0);
        let oldest = info["oldest_seq"].as_i64().unwrap_or(1);
        // `since` is at most 2^53 − 1 (SafeU64::MAX): `since + 1` cannot overflow.
        if let Some(since) = since
            && since + 1 < oldest
        {
            self.outbox.push(Out::Leave { project, notice: Some(protocol::resync_required(project, oldest)) });
            return;
        }
        let reader = match &self.principal {
            Principal::User { sub } => Some(sub.clone()),
            _ => None,
        };
        self.outbox.push(Out::Join {
            project,
            next_seq: since.map_or(head + 1, |s| s + 1),
            head,
            reply: protocol::joined(&reference, project, head),
            reader,
        });
    }

    /// Agents report how far their tree is; kept per session for `GET /v1/sessions/{id}`.
    async fn applied(&mut self, channel: &str, seq: i64) {
        if let (Principal::Container { project_id, .. }, Some(project)) =
            (&self.principal, protocol::parse_channel(channel))
            && *project_id == project
            && let Some(progress) = &mut self.progress
        {
            progress.pending = Some(progress.pending.map_or(seq, |p| p.max(seq)));
        }
    }

    /// Writes pending progress (or a heartbeat when `HEARTBEAT_EVERY` passed). A reported
    /// seq above the project's last seq is refused with an `error` frame, not recorded.
    async fn flush_progress(&mut self, force: bool) {
        let Some(progress) = &mut self.progress else { return };
        let due = progress.pending.is_some() || progress.flushed_at.elapsed() >= HEARTBEAT_EVERY;
        if !(due || force) {
            return;
        }
        let (session, applied) = (progress.session, progress.pending.take());
        progress.flushed_at = Instant::now();
        if !seen(&self.state, session, applied, 0).await
            && let (Principal::Container { project_id, .. }, Some(seq)) = (&self.principal, applied)
        {
            let err = ApiError::InvalidRequest(format!("applied seq {seq} is above the project's last seq"));
            let channel = protocol::channel_name(*project_id);
            self.outbox.push(Out::Text(protocol::error(&None, Some(&channel), &err)));
        }
    }
}

struct Channel {
    next_seq: i64,
    _subscription: Subscription,
    _gauge: Counted,
}

/// The socket's single writer: drains the outbox, keeps every channel contiguous, pings.
/// Returns when the socket is done: a close frame was sent, the connection failed, or a
/// write missed its deadline (counted as a slow consumer, like an overflowing outbox).
async fn write_loop(state: AppState, mut sink: Conn, outbox: Arc<Outbox>) {
    let mut writer = Writer { state, channels: HashMap::new(), outbox };
    let slow_consumer = writer.state.metrics.slow_consumer_drops.clone();
    match writer.run(&mut sink).await {
        Ok(Ended::Closed) | Err(WriteError::Gone) => {}
        Ok(Ended::Overflowed) => {
            slow_consumer.inc();
            let _ = sink.close(close::SLOW_CONSUMER, "slow consumer: reconnect with since", sink.deadline).await;
        }
        Err(WriteError::TimedOut) => {
            slow_consumer.inc();
            let _ = sink.close(close::SLOW_CONSUMER, "slow consumer: reconnect with since", LAST_CLOSE_ATTEMPT).await;
            // Not even a close frame got through: dropping the socket ends the connection.
            return;
        }
    }
    let _ = within(LAST_CLOSE_ATTEMPT, sink.sink.close()).await;
}

/// How the writer finished when no write failed.
enum Ended {
    /// A close frame was sent.
    Closed,
    /// The outbox overflowed: the peer reads too slowly.
    Overflowed,
}

struct Writer {
    state: AppState,
    channels: HashMap<Uuid, Channel>,
    outbox: Arc<Outbox>,
}

impl Writer {
    async fn run(&mut self, sink: &mut Conn) -> Result<Ended, WriteError> {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                drained = self.outbox.drain() => match drained {
                    Drained::Overflowed => return Ok(Ended::Overflowed),
                    Drained::Items(items) => {
                        // Everything in one batch is fed (buffered) and written with one
                        // flush: one write(2) for a burst instead of one per frame.
                        for item in items {
                            if !self.handle(sink, item).await? {
                                return Ok(Ended::Closed);
                            }
                        }
                        sink.flush().await?;
                    }
                },
                _ = ping.tick() => sink.send(Message::Ping(Default::default())).await?,
            }
        }
    }

    /// Ok(false) when the socket is to close.
    async fn handle(&mut self, sink: &mut Conn, item: Out) -> Result<bool, WriteError> {
        match item {
            Out::Text(text) => sink.text(text).await?,
            Out::Close(code, reason) => {
                let _ = sink.send(close_message(code, reason)).await;
                return Ok(false);
            }
            Out::Leave { project, notice } => {
                self.channels.remove(&project);
                if let Some(notice) = notice {
                    sink.text(notice).await?;
                }
            }
            Out::Join { project, next_seq, head, reply, reader } => {
                if !self.channels.contains_key(&project) && self.channels.len() >= MAX_CHANNELS {
                    let err = ApiError::InvalidRequest(format!("at most {MAX_CHANNELS} channels per socket"));
                    sink.text(protocol::error(&None, Some(&protocol::channel_name(project)), &err)).await?;
                    return Ok(true);
                }
                // Subscribe first, then read the log: nothing committed in between is missed,
                // and what arrives twice is skipped by seq.
                let subscription = self.state.broker.subscribe(project, head, self.outbox.clone(), reader);
                let gauge = Counted::new(&self.state.metrics.joined_channels);
                self.channels.insert(project, Channel { next_seq, _subscription: subscription, _gauge: gauge });
                sink.text(reply).await?;
                self.fill(sink, project, None).await?;
            }
            Out::Event { project, frame } => {
                let Some(channel) = self.channels.get(&project) else { return Ok(true) };
                if frame.seq < channel.next_seq {
                    return Ok(true);
                }
                if frame.seq > channel.next_seq {
                    self.fill(sink, project, Some(frame.seq - 1)).await?;
                }
                self.send_event(sink, project, &frame).await?;
            }
        }
        Ok(true)
    }

    /// Sends the channel's events from its next_seq up to `until` (or to the end of the
    /// log) read from the database. A hole in the log (trimmed by retention) ends the
    /// channel with resync_required.
    async fn fill(&mut self, sink: &mut Conn, project: Uuid, until: Option<i64>) -> Result<(), WriteError> {
        loop {
            let Some(channel) = self.channels.get(&project) else { return Ok(()) };
            let next = channel.next_seq;
            if until.is_some_and(|until| next > until) {
                return Ok(());
            }
            // What is already queued goes out before waiting for the database.
            sink.flush().await?;
            let frames = match self.state.broker.read_events(project, next - 1, FILL_PAGE).await {
                Ok(frames) => frames,
                Err(err) => {
                    // The database is away: the socket cannot stay contiguous; the client
                    // resumes with since after reconnecting.
                    tracing::warn!(project_id = %project, error = %err, "filling a gap failed");
                    let reason = "temporarily unavailable: reconnect with since";
                    let _ = sink.send(close_message(close::GOING_AWAY, reason)).await;
                    return Err(WriteError::Gone);
                }
            };
            if frames.first().is_none_or(|f| f.seq != next) {
                if frames.is_empty() && until.is_none() {
                    return Ok(()); // caught up
                }
                let oldest = self.state.broker.oldest_seq(project).await.unwrap_or(next);
                if oldest > next {
                    self.channels.remove(&project);
                    return sink.text(protocol::resync_required(project, oldest)).await;
                }
                // Not in the log yet; the next wake-up delivers it.
                return Ok(());
            }
            let count = frames.len() as i64;
            for frame in frames {
                if until.is_some_and(|until| frame.seq > until) {
                    return Ok(());
                }
                self.send_event(sink, project, &frame).await?;
            }
            if count < FILL_PAGE {
                return Ok(());
            }
        }
    }

    async fn send_event(&mut self, sink: &mut Conn, project: Uuid, frame: &EventFrame) -> Result<(), WriteError> {
        let Some(channel) = self.channels.get_mut(&project) else { return Ok(()) };
        if frame.seq != channel.next_seq {
            return Ok(());
        }
        channel.next_seq = frame.seq + 1;
        sink.text(frame.text.clone()).await?;
        let metrics = &self.state.metrics;
        metrics.events_delivered.inc();
        let lag_us = now_micros() - frame.committed_at_us;
        metrics.event_delivery_lag.observe(lag_us.max(0) as f64 / 1e6);
        Ok(())
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
