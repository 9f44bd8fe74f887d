//! One WebSocket session. The reader (this task) authenticates, authorizes joins and runs
//! writes; everything the client receives goes through the socket's [`Outbox`] to one
//! writer task, which owns each channel's position (`next_seq`): duplicates are skipped,
//! gaps are filled from the log, so per channel the client sees seq n, n+1, n+2, …

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::broker::{EventFrame, Subscription};
use super::outbox::{Drained, Out, Outbox};
use super::protocol::{self, ClientFrame, Ref, close};
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::parse_json;
use crate::files;

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

pub async fn upgrade(State(state): State<AppState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    // Browsers always send Origin; clients without one (agents, servers) are not browsers.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !state.origins.allows(origin.as_bytes())
    {
        return ApiError::Forbidden("origin not allowed".into()).into_response();
    }
    let pre_auth = match crate::auth::bearer_header(&headers) {
        Some(token) => match state.authenticate(token).await {
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
    let ((principal, expires_at), by_frame) = match pre_auth {
        Some(verified) => (verified, false),
        None => match first_frame_auth(&state, &mut stream).await {
            Ok(verified) => (verified, true),
            Err((code, reason)) => return close_early(sink, stream, code, reason).await,
        },
    };
    let Some(_slot) = state.broker.claim_socket(&principal.rate_key(), state.config.limits.max_sockets_per_user) else {
        return close_early(sink, stream, close::POLICY, "too many sockets for this user").await;
    };
    state.metrics.open_sockets.inc();
    let outbox = Outbox::new(state.config.limits.socket_queue_bytes);
    if by_frame {
        outbox.push(Out::Text(protocol::authed(expires_at)));
    }
    let closed = CancellationToken::new();
    let writer = tokio::spawn(write_loop(state.clone(), sink, outbox.clone(), closed.clone()));
    let (progress, _session_socket) = match &principal {
        Principal::Container { session_id, .. } => {
            let registered = state.broker.register_session_socket(*session_id, outbox.clone());
            seen(&state, *session_id, None, 1).await;
            (Some(Progress { session: *session_id, pending: None, flushed_at: Instant::now() }), Some(registered))
        }
        _ => (None, None),
    };
    let mut session = Session { state: state.clone(), principal, expires_at, outbox: outbox.clone(), progress };
    session.read_loop(&mut stream, &closed).await;
    if let Some(progress) = &session.progress {
        seen(&state, progress.session, progress.pending, -1).await;
    }
    // Let the writer send what is queued, ending with a close frame (the first Close
    // queued wins), then stop it if the peer does not take it.
    outbox.push(Out::Close(close::NORMAL, ""));
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
        closed.cancel();
        let _ = writer.await;
    }
    state.metrics.open_sockets.dec();
}

/// How long a refused socket waits for the client's close reply.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Closes a socket that never got going (failed auth, too many sockets). The client may
/// already have sent more frames (auth, join, ping back to back): dropping the connection
/// with those unread makes the kernel answer with a reset, and the client sees 1006
/// instead of our close code. So read (and discard) until the client's close reply, the
/// end of the stream, or `CLOSE_DRAIN`.
async fn close_early(mut sink: Sink, mut stream: Stream, code: u16, reason: &'static str) {
    if sink.send(close_message(code, reason)).await.is_err() {
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
    let Ok(ClientFrame::Auth { token }) = parse_json::<ClientFrame>(text.as_bytes()) else {
        return Err((close::UNAUTHENTICATED, "authenticate first"));
    };
    match state.authenticate(&token).await {
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
}

struct Progress {
    session: Uuid,
    pending: Option<i64>,
    flushed_at: Instant,
}

const PROGRESS_EVERY: Duration = Duration::from_millis(250);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

/// Records a container session's progress and liveness (`sockets_delta` +1/-1 on
/// connect/disconnect). Failures only delay what `GET /v1/sessions/{id}` shows.
async fn seen(state: &AppState, session: Uuid, applied: Option<i64>, sockets_delta: i32) {
    let result = async {
        let client = state.db.pool().get().await?;
        client.execute("SELECT synchub.session_seen($1, $2, $3)", &[&session, &applied, &sockets_delta]).await?;
        Ok::<(), ApiError>(())
    };
    if let Err(err) = result.await {
        tracing::debug!(session_id = %session, error = %err, "recording session progress failed");
    }
}

impl Session {
    async fn read_loop(&mut self, stream: &mut Stream, closed: &CancellationToken) {
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
                        if !self.handle(text.as_bytes()).await {
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
                _ = closed.cancelled() => return,
            }
        }
    }

    /// Handles one client frame; false ends the session.
    async fn handle(&mut self, bytes: &[u8]) -> bool {
        let frame = match parse_json::<ClientFrame>(bytes) {
            Ok(frame) => frame,
            Err(err) => {
                self.outbox.push(Out::Text(protocol::error(&None, None, &err)));
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
                let expected_version = expected_version.map(i64::from);
                let body = files::PutFile { content, file_type, expected_version, op_id };
                let result = match self.channel_project(&channel) {
                    Ok(project) => files::upsert_file(&self.state, &self.principal, project, &path, body).await,
                    Err(err) => Err(err),
                };
                self.ack(reference, result);
            }
            ClientFrame::Delete { reference, channel, path, expected_version, op_id } => {
                let query = files::DeleteQuery { expected_version: expected_version.map(i64::from), op_id };
                let result = match self.channel_project(&channel) {
                    Ok(project) => files::delete_file(&self.state, &self.principal, project, &path, query).await,
                    Err(err) => Err(err),
                };
                self.ack(reference, result);
            }
            ClientFrame::Bulk { reference, channel, upserts, deletes, op_id } => {
                let body = protocol::bulk_body(upserts, deletes, op_id);
                let result = match self.channel_project(&channel) {
                    Ok(project) => files::bulk_write(&self.state, &self.principal, project, body).await,
                    Err(err) => Err(err),
                };
                self.ack(reference, result);
            }
        }
        true
    }

    fn channel_project(&self, channel: &str) -> Result<Uuid, ApiError> {
        protocol::parse_channel(channel).ok_or_else(|| ApiError::InvalidRequest("unknown channel".into()))
    }

    fn ack(&self, reference: Option<Ref>, result: Result<Value, ApiError>) {
        let text = match result {
            Ok(value) => protocol::ack_ok(&reference, &value),
            Err(err) => protocol::ack_error(&reference, &err),
        };
        self.outbox.push(Out::Text(text));
    }

    /// A fresh token on an open socket: same user (or same session) only.
    async fn reauthenticate(&mut self, token: &str) -> bool {
        match self.state.authenticate(token).await {
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
        let refuse = |err: ApiError| Out::Text(protocol::error(&reference, Some(channel), &err));
        let Some(project) = protocol::parse_channel(channel) else {
            // An unknown channel is a project that does not exist.
            self.outbox.push(refuse(ApiError::NotFound("project not found".into())));
            return;
        };
        if since.is_some_and(|s| s < 0) {
            self.outbox.push(refuse(ApiError::InvalidRequest("since must be a non-negative seq".into())));
            return;
        }
        let (as_principal, actor) = match files::reader(&self.principal, project) {
            Ok(reader) => reader,
            Err(err) => {
                self.outbox.push(refuse(err));
                return;
            }
        };
        let info =
            match self.state.db.json(&as_principal, "SELECT synchub.join_channel($1, $2)", &[&project, &actor]).await {
                Ok(info) => info,
                Err(err) => {
                    self.outbox.push(refuse(err));
                    return;
                }
            };
        let head = info["last_seq"].as_i64().unwrap_or(0);
        let oldest = info["oldest_seq"].as_i64().unwrap_or(1);
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

    /// Writes pending progress (or a heartbeat when `HEARTBEAT_EVERY` passed).
    async fn flush_progress(&mut self, force: bool) {
        let Some(progress) = &mut self.progress else { return };
        let due = progress.pending.is_some() || progress.flushed_at.elapsed() >= HEARTBEAT_EVERY;
        if !(due || force) {
            return;
        }
        let (session, applied) = (progress.session, progress.pending.take());
        progress.flushed_at = Instant::now();
        seen(&self.state, session, applied, 0).await;
    }
}

struct Channel {
    next_seq: i64,
    _subscription: Subscription,
}

/// The socket's single writer: drains the outbox, keeps every channel contiguous, pings.
async fn write_loop(state: AppState, mut sink: Sink, outbox: Arc<Outbox>, closed: CancellationToken) {
    let mut writer = Writer { state, channels: HashMap::new(), outbox: outbox.clone() };
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let result: Result<(), ()> = async {
        loop {
            tokio::select! {
                drained = outbox.drain() => match drained {
                    Drained::Overflowed => {
                        writer.state.metrics.slow_consumer_drops.inc();
                        let _ = sink.send(close_message(close::SLOW_CONSUMER, "slow consumer: reconnect with since")).await;
                        return Err(());
                    }
                    Drained::Items(items) => {
                        // Everything in one batch is fed (buffered) and written with one
                        // flush: one write(2) for a burst instead of one per frame.
                        for item in items {
                            if !writer.handle(&mut sink, item).await? {
                                return Ok(());
                            }
                        }
                        sink.flush().await.map_err(|_| ())?;
                    }
                },
                _ = ping.tick() => sink.send(Message::Ping(Default::default())).await.map_err(|_| ())?,
                _ = closed.cancelled() => return Ok(()),
            }
        }
    }
    .await;
    let _ = result;
    let joined = writer.channels.len() as i64;
    writer.state.metrics.joined_channels.dec_by(joined);
    closed.cancel();
    let _ = sink.close().await;
}

struct Writer {
    state: AppState,
    channels: HashMap<Uuid, Channel>,
    outbox: Arc<Outbox>,
}

impl Writer {
    /// Ok(false) when the socket is to close.
    async fn handle(&mut self, sink: &mut Sink, item: Out) -> Result<bool, ()> {
        match item {
            Out::Text(text) => sink.feed(Message::Text(text.into())).await.map_err(|_| ())?,
            Out::Close(code, reason) => {
                let _ = sink.send(close_message(code, reason)).await;
                return Ok(false);
            }
            Out::Leave { project, notice } => {
                if self.channels.remove(&project).is_some() {
                    self.state.metrics.joined_channels.dec();
                }
                if let Some(notice) = notice {
                    sink.feed(Message::Text(notice.into())).await.map_err(|_| ())?;
                }
            }
            Out::Join { project, next_seq, head, reply, reader } => {
                if !self.channels.contains_key(&project) && self.channels.len() >= MAX_CHANNELS {
                    let err = ApiError::InvalidRequest(format!("at most {MAX_CHANNELS} channels per socket"));
                    let text = protocol::error(&None, Some(&protocol::channel_name(project)), &err);
                    sink.feed(Message::Text(text.into())).await.map_err(|_| ())?;
                    return Ok(true);
                }
                // Subscribe first, then read the log: nothing committed in between is missed,
                // and what arrives twice is skipped by seq.
                let subscription = self.state.broker.subscribe(project, head, self.outbox.clone(), reader);
                if self.channels.insert(project, Channel { next_seq, _subscription: subscription }).is_none() {
                    self.state.metrics.joined_channels.inc();
                }
                sink.feed(Message::Text(reply.into())).await.map_err(|_| ())?;
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
    async fn fill(&mut self, sink: &mut Sink, project: Uuid, until: Option<i64>) -> Result<(), ()> {
        loop {
            let Some(channel) = self.channels.get(&project) else { return Ok(()) };
            let next = channel.next_seq;
            if until.is_some_and(|until| next > until) {
                return Ok(());
            }
            // What is already queued goes out before waiting for the database.
            sink.flush().await.map_err(|_| ())?;
            let frames = match self.state.broker.read_events(project, next - 1, FILL_PAGE).await {
                Ok(frames) => frames,
                Err(err) => {
                    // The database is away: the socket cannot stay contiguous; the client
                    // resumes with since after reconnecting.
                    tracing::warn!(project_id = %project, error = %err, "filling a gap failed");
                    let _ = sink
                        .send(close_message(close::GOING_AWAY, "temporarily unavailable: reconnect with since"))
                        .await;
                    return Err(());
                }
            };
            if frames.first().is_none_or(|f| f.seq != next) {
                if frames.is_empty() && until.is_none() {
                    return Ok(()); // caught up
                }
                let oldest = self.state.broker.oldest_seq(project).await.unwrap_or(next);
                if oldest > next {
                    self.channels.remove(&project);
                    self.state.metrics.joined_channels.dec();
                    let text = protocol::resync_required(project, oldest);
                    return sink.feed(Message::Text(text.into())).await.map_err(|_| ());
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

    async fn send_event(&mut self, sink: &mut Sink, project: Uuid, frame: &EventFrame) -> Result<(), ()> {
        let Some(channel) = self.channels.get_mut(&project) else { return Ok(()) };
        if frame.seq != channel.next_seq {
            return Ok(());
        }
        channel.next_seq = frame.seq + 1;
        sink.feed(Message::Text(frame.text.clone())).await.map_err(|_| ())?;
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
