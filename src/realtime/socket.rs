//! One WebSocket session. The reader authenticates, authorizes joins and runs writes;
//! everything the client receives goes through the socket's [`Outbox`] to one writer,
//! which drives the socket's [`Machine`]: it owns each channel's position (`next_seq`),
//! duplicates are skipped, gaps are filled from the log, so per channel the client sees
//! seq n, n+1, n+2, … The writer is generic over the sink and the [`Log`], and tested
//! in-module without a socket.
//!
//! Reader and writer are one unit: they run in one task ([`halves::first_of`], which polls
//! each only when its own waker fired), so whatever ends either (an error, a close, a write
//! past its deadline, a panic) ends both, and the socket's slot and gauges are guards
//! released when that task's future is dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use uuid::Uuid;

use super::Broker;
use super::broker::{SocketSlot, Subscription};
use super::channel_map::ChannelMap;
use super::halves::{self, First};
use super::lane::Lane;
use super::machine::{self, Action, Input, LogUnavailable, Machine};
use super::outbox::EventFrame;
use super::outbox::{DeliveryMeters, Out, Outbox, Overflowed};
use super::presence::{self, Here};
use super::protocol::{self, ClientFrame, Ref, WriteResult, close};
use crate::app::AppState;
use crate::auth::Principal;
use crate::auth::policy::{self, Actor, Need, Scope};
use crate::error::ApiError;
use crate::files;
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use synchub_protocol::{DeleteFileQuery, PatchFileRequest, PutFileRequest};

/// A text frame that makes the reader panic once a test called
/// [`super::Broker::inject_reader_faults`] (never otherwise).
const READER_FAULT_FRAME: &str = "synchub:test:reader-panic";
/// A browser must authenticate within this long after the upgrade.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Outbound bytes buffered before a write to the TCP socket (a batch is flushed at its end
/// anyway). The buffer only grows while frames are queued, so idle sockets do not pay it.
const WRITE_BUFFER: usize = 64 * 1024;
/// tungstenite's read buffer, allocated (and zero-filled on every read) per socket for its
/// whole life: most client frames (joins, pings, acks, presence) fit; a larger one is read in
/// several reads of this size into a buffer grown for it, so a 2 MiB upsert costs ~5,500
/// reads (a few ms), which editor tabs rarely send now that edits travel as deltas. Issue 16:
/// at 10,000 and 18,000 idle joined sockets, 2 KiB gave 9.54 KiB of RSS per socket, 512 B
/// 8.04 KiB, 384 B 7.92 KiB (docs/BENCHMARKS.md); 4 KiB before the perf work.
const READ_BUFFER: usize = 384;
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
    lane: Option<Extension<Arc<Lane>>>,
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
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        // Boxed before the socket's future is made: passed by value, the WebSocket would be
        // stored in that future once per async fn it passes through (issue 16: memory per
        // idle socket).
        .on_upgrade(move |socket| run(state, Box::new(Mutex::new(socket)), pre_auth, lane.map(|Extension(lane)| lane)))
}

/// The socket, shared by its reader and its writer. Both are polled by the socket's one
/// task ([`halves::first_of`]), so the lock is never contended and nothing waits on it. It
/// replaces `split()`, whose `BiLock` swapped its state and registered the task's waker
/// on every poll, and kept the socket in an `Arc` of its own (issue 16: CPU per delivered
/// event, memory per idle socket).
type Shared = Mutex<WebSocket>;

/// The reader's and the writer's handle on the [`Shared`] socket.
#[derive(Clone, Copy)]
struct Half<'s>(&'s Shared);

impl Half<'_> {
    fn socket(&self) -> MutexGuard<'_, WebSocket> {
        // A panic while the socket was locked ends the whole session anyway.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl futures_util::Sink<Message> for Half<'_> {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket().poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
        self.socket().start_send_unpin(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket().poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket().poll_close_unpin(cx)
    }
}

impl futures_util::Stream for Half<'_> {
    type Item = Result<Message, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.socket().poll_next_unpin(cx)
    }
}

type Sink<'s> = Half<'s>;
type Stream<'s> = Half<'s>;

async fn run(state: AppState, socket: Box<Shared>, pre_auth: Option<(Principal, i64)>, lane: Option<Arc<Lane>>) {
    let started = Instant::now();
    let mut report = Report::default();
    serve_socket(state, socket, pre_auth, lane, &mut report).await;
    // The one log line per socket, however it ended.
    report.log(started.elapsed());
}

async fn serve_socket(
    state: AppState,
    socket: Box<Shared>,
    pre_auth: Option<(Principal, i64)>,
    lane: Option<Arc<Lane>>,
    report: &mut Report,
) {
    let (sink, mut stream) = (Half(&socket), Half(&socket));
    let sink = Conn { sink, deadline: Duration::from_millis(state.config.limits.socket_write_timeout_ms) };
    report.principal = "unauthenticated";
    let ((principal, expires_at), by_frame) = match pre_auth {
        Some(verified) => (verified, false),
        None => match Box::pin(first_frame_auth(&state, &mut stream)).await {
            Ok(verified) => (verified, true),
            Err((code, reason)) => {
                report.ending = Ending::Hub(code);
                return close_early(sink, stream, code, reason).await;
            }
        },
    };
    report.principal = match &principal {
        Principal::User { .. } => "user",
        Principal::Service => "service",
        Principal::Container { session_id, project_id } => {
            report.session_id = Some(*session_id);
            report.joined(*project_id);
            "container"
        }
    };
    let Some(slot) = state.broker.claim_socket(&principal.rate_key(), state.config.limits.max_sockets_per_user) else {
        report.ending = Ending::Hub(close::POLICY);
        return close_early(sink, stream, close::POLICY, "too many sockets for this user").await;
    };
    let open = OpenSocket { _slot: slot, _gauge: Counted::new(&state.metrics.open_sockets) };
    let outbox = Outbox::new(state.config.limits.socket_queue_bytes, lane);
    // The first-frame auth is answered like every accepted auth frame (contract 4).
    if by_frame {
        outbox.push(Out::Text(protocol::authed(expires_at)));
    }
    let (progress, _session_socket) = match &principal {
        Principal::Container { session_id, project_id } => {
            let registered = state.broker.register_session_socket(*session_id, outbox.clone());
            Box::pin(seen(&state, *project_id, *session_id, None, 1)).await;
            let progress =
                Progress { project: *project_id, session: *session_id, pending: None, flushed_at: Instant::now() };
            (Some(progress), Some(registered))
        }
        _ => (None, None),
    };
    let mut session = Session {
        state: state.clone(),
        principal,
        expires_at,
        outbox,
        heard: Heard::new(),
        progress,
        joins: TokenBucket::new(f64::from(JOINS_PER_SECOND), f64::from(JOINS_PER_SECOND)),
        client_id: presence::new_client_id(),
        here: ChannelMap::default(),
        // No burst beyond the rate: at most 10 accepted in any second.
        presence_updates: TokenBucket::new(f64::from(presence::UPDATES_PER_SECOND), 1.0),
        frames_received: 0,
        peer_ended: None,
    };
    // A panic while handling a frame must not leave half a socket behind: it ends the
    // whole socket (both halves are inside this future), never just its reader.
    let panicked = AssertUnwindSafe(session.serve(&mut stream, sink, report)).catch_unwind().await.is_err();
    if panicked {
        tracing::error!("a socket's session panicked; the socket was closed");
        report.ending = Ending::Panicked;
    } else if let Some(peer) = session.peer_ended {
        // The hub's close frame was only the reply.
        report.ending = peer;
    }
    report.frames_received = session.frames_received;
    drop(open);
    if let Some(progress) = &session.progress {
        Box::pin(seen(&state, progress.project, progress.session, progress.pending, -1)).await;
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
struct Conn<S> {
    sink: S,
    deadline: Duration,
}

impl<S: futures_util::Sink<Message> + Unpin> Conn<S> {
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

async fn within<E>(limit: Duration, write: impl Future<Output = Result<(), E>>) -> Result<(), WriteError> {
    let mut write = std::pin::pin!(write);
    // Most writes complete at once: only one that has to wait reads the clock and arms a
    // timer (a `timeout` per frame did both for every delivered event; issue 16). The
    // deadline runs from here, as before.
    let at_once = std::future::poll_fn(|cx| {
        Poll::Ready(match write.as_mut().poll(cx) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        })
    })
    .await;
    let finished = match at_once {
        Some(result) => Ok(result),
        None => tokio::time::timeout(limit, write).await,
    };
    match finished {
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
async fn close_early(mut sink: Conn<Sink<'_>>, mut stream: Stream<'_>, code: u16, reason: &'static str) {
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
async fn first_frame_auth(state: &AppState, stream: &mut Stream<'_>) -> Result<(Principal, i64), (u16, &'static str)> {
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
    /// When the peer was last heard from (the writer closes it after IDLE_LIMIT of silence).
    heard: Arc<Heard>,
    /// Container sockets: the agent's reported progress, written at most every
    /// PROGRESS_EVERY (and as a liveness heartbeat at least every HEARTBEAT_EVERY).
    progress: Option<Progress>,
    /// JOINS_PER_SECOND, as a bucket of that many tokens refilled at that rate.
    joins: TokenBucket,
    /// This socket's presence id (the same on every channel).
    client_id: String,
    /// The channels this socket joined, and its presence on each once it sent `presence`
    /// (dropping it leaves, everywhere).
    here: ChannelMap<Option<Here>>,
    /// presence::UPDATES_PER_SECOND.
    presence_updates: TokenBucket,
    frames_received: u64,
    /// Set when the peer ended the socket (its close frame's code, if any).
    peer_ended: Option<Ending>,
}

/// The next tick of `interval`; never without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

struct Progress {
    project: Uuid,
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
async fn seen(state: &AppState, project: Uuid, session: Uuid, applied: Option<i64>, sockets_delta: i32) -> bool {
    let result = async {
        let client = state.db.pool().get().await?;
        let row = client
            .query_one("SELECT synchub.session_report($1, $2, $3, $4)", &[&project, &session, &applied, &sockets_delta])
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
    async fn serve(&mut self, stream: &mut Stream<'_>, sink: Conn<Sink<'_>>, report: &mut Report) {
        let log = BrokerLog { broker: self.state.broker.clone(), outbox: self.outbox.clone() };
        let meters = Meters::of(&self.state.metrics);
        let writer = write_loop(sink, log, self.outbox.clone(), self.heard.clone(), meters, report);
        let mut writer = std::pin::pin!(writer);
        let outbox = self.outbox.clone();
        let reader = std::pin::pin!(self.read_loop(stream));
        // Each half is polled only when its own waker fired: a delivered event does not
        // poll the reader (see halves.rs).
        if halves::first_of(reader, writer.as_mut()).await == First::Reader {
            // The writer sends what is queued, ending with a close frame (the first Close
            // queued wins), unless the peer does not take it.
            outbox.push(Out::Close(close::NORMAL, ""));
            let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
        }
    }

    async fn read_loop(&mut self, stream: &mut Stream<'_>) {
        // Only container sockets report progress; the others keep no timer for it (an
        // interval is a boxed timer entry: memory per idle socket).
        let mut progress_tick = self.progress.is_some().then(|| tokio::time::interval(PROGRESS_EVERY));
        loop {
            let until_expiry = Duration::from_secs((self.expires_at - now_secs()).max(0) as u64);
            tokio::select! {
                _ = tick(&mut progress_tick) => Box::pin(self.flush_progress(false)).await,
                message = stream.next() => match message {
                    None | Some(Err(_)) => {
                        self.peer_ended = Some(Ending::Peer(None));
                        return;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        self.peer_ended = Some(Ending::Peer(frame.map(|frame| frame.code)));
                        return;
                    }
                    Some(Ok(Message::Text(text))) => {
                        self.heard.mark();
                        self.frames_received += 1;
                        if self.state.broker.reader_faults_injected() && text.as_str() == READER_FAULT_FRAME {
                            panic!("reader failure injected by a test");
                        }
                        // Boxed: a write's future (a few KiB) would otherwise be part of every
                        // socket's task, idle or not (issue 16: memory per idle socket).
                        if !Box::pin(self.handle(text.as_str())).await {
                            return;
                        }
                        // Handling may take long (a bulk write): silence counts from here.
                        self.heard.mark();
                    }
                    Some(Ok(Message::Binary(_))) => {
                        self.heard.mark();
                        self.frames_received += 1;
                        let err = ApiError::InvalidRequest("frames are JSON text".into());
                        self.outbox.push(Out::Text(protocol::error(&None, None, &err)));
                    }
                    Some(Ok(_)) => self.heard.mark(), // ping/pong: the peer is alive
                },
                _ = tokio::time::sleep(until_expiry) => {
                    self.outbox.push(Out::Close(close::TOKEN_EXPIRED, "token expired"));
                    return;
                }
                _ = self.state.broker.shutdown.cancelled() => {
                    // The machine closes with 1012 (CONTRACT section 8).
                    self.outbox.push(Out::Shutdown);
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
                    self.here.remove(&project);
                    self.outbox.push(Out::Leave { project, notice: None });
                }
            }
            ClientFrame::Presence { reference, channel, meta } => self.set_presence(reference, &channel, meta),
            ClientFrame::Applied { channel, seq } => self.applied(&channel, seq.into()).await,
            ClientFrame::Upsert {
                reference,
                channel,
                path,
                content,
                base_version,
                delta,
                file_type,
                expected_version,
                op_id,
            } => {
                let result = match (self.writer(&channel), content, base_version, delta) {
                    (Err(err), ..) => Err(err),
                    (Ok(actor), Some(content), None, None) => {
                        let body = PutFileRequest { content, file_type, expected_version, op_id };
                        files::upsert_file(&self.state, &actor, &path, body).await
                    }
                    // A delta against base_version (CONTRACT 12): base_version is the
                    // expected version, and the file keeps its type.
                    (Ok(actor), None, Some(base_version), Some(delta))
                        if expected_version.is_none() && file_type.is_none() =>
                    {
                        let body = PatchFileRequest { base_version, delta, op_id };
                        files::patch_file(&self.state, &actor, &path, body).await
                    }
                    _ => Err(ApiError::InvalidRequest(
                        "an upsert carries either content, or base_version and delta (without expected_version \
                         or file_type)"
                            .into(),
                    )),
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
        if !self.joins.take() {
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
        // Presence may follow (a rejoin leaves and starts over); the machine refuses joins
        // past MAX_CHANNELS, so presence stops there too.
        self.here.remove(&project);
        if self.here.len() < machine::MAX_CHANNELS {
            self.here.insert(project, None);
        }
    }

    /// A `presence` frame: this socket's new `meta` on a channel it joined, within the size
    /// and rate limits (else an `error` frame; nothing else changes). The first one on a
    /// channel makes the socket a member: it gets the channel's `presence_state`, then diffs.
    fn set_presence(&mut self, reference: Option<Ref>, channel: &str, meta: serde_json::Value) {
        let project = protocol::parse_channel(channel).filter(|project| self.here.contains_key(project));
        let checked = match project {
            None => Err(ApiError::InvalidRequest("join the channel before sending presence".into())),
            Some(_) => presence::check_meta(&meta),
        };
        let refused = match checked {
            Err(err) => Some(protocol::error(&reference, Some(channel), &err)),
            Ok(()) if !self.presence_updates.take() => {
                let message =
                    format!("at most {} presence updates per second per socket", presence::UPDATES_PER_SECOND);
                Some(protocol::rate_limited(&reference, channel, message))
            }
            Ok(()) => None,
        };
        if let Some(text) = refused {
            self.outbox.push(Out::Text(text));
            return;
        }
        let Some(project) = project else { return };
        if let Some(Some(here)) = self.here.get(&project) {
            return here.set_meta(meta);
        }
        let identity = presence::identity(&self.principal);
        match self.state.presence.join(project, &self.client_id, identity, meta, self.outbox.clone()) {
            Ok(here) => {
                self.here.insert(project, Some(here));
            }
            Err(err) => {
                self.outbox.push(Out::Text(protocol::error(&reference, Some(channel), &err)));
            }
        }
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
        let (project, session, applied) = (progress.project, progress.session, progress.pending.take());
        progress.flushed_at = Instant::now();
        if !seen(&self.state, project, session, applied, 0).await
            && let (Principal::Container { project_id, .. }, Some(seq)) = (&self.principal, applied)
        {
            let err = ApiError::InvalidRequest(format!("applied seq {seq} is above the project's last seq"));
            let channel = protocol::channel_name(*project_id);
            self.outbox.push(Out::Text(protocol::error(&None, Some(&channel), &err)));
        }
    }
}

/// Where a socket's channels come from: live events (a subscription to a project's feed)
/// and the events log (gap fills). The writer is generic over it so that its unit tests
/// run without a database.
pub(crate) trait Log {
    /// Live events flow while this is held.
    type Subscription: Send;
    fn subscribe(&self, project: Uuid, head: i64, reader: Option<String>) -> Self::Subscription;
    /// Up to [`machine::FILL_PAGE`] events after `after`.
    fn read(&self, project: Uuid, after: i64) -> impl Future<Output = Result<Vec<Arc<EventFrame>>, ApiError>> + Send;
    /// The oldest seq still in the log.
    fn oldest_seq(&self, project: Uuid) -> impl Future<Output = Result<i64, ApiError>> + Send;
}

/// The broker's feeds (which push into this socket's outbox) and the database's log.
struct BrokerLog {
    broker: Arc<Broker>,
    outbox: Arc<Outbox>,
}

impl Log for BrokerLog {
    type Subscription = Subscription;

    fn subscribe(&self, project: Uuid, head: i64, reader: Option<String>) -> Subscription {
        self.broker.subscribe(project, head, self.outbox.clone(), reader)
    }

    fn read(&self, project: Uuid, after: i64) -> impl Future<Output = Result<Vec<Arc<EventFrame>>, ApiError>> + Send {
        self.broker.read_events(project, after, machine::FILL_PAGE as i64)
    }

    fn oldest_seq(&self, project: Uuid) -> impl Future<Output = Result<i64, ApiError>> + Send {
        self.broker.oldest_seq(project)
    }
}

/// The metrics a socket's writer moves.
#[derive(Clone)]
struct Meters {
    joined_channels: Gauge,
    delivered: DeliveryMeters,
    slow_consumer_drops: Counter,
}

impl Meters {
    fn of(metrics: &Metrics) -> Self {
        Meters {
            joined_channels: metrics.joined_channels.clone(),
            delivered: DeliveryMeters::of(metrics),
            slow_consumer_drops: metrics.slow_consumer_drops.clone(),
        }
    }
}

/// When the peer was last heard from: the reader marks it, the writer's machine decides
/// when silence means the peer is gone. Kept as an offset from the socket's start in an
/// atomic, not behind a lock: the writer reads it on every wake-up.
pub(crate) struct Heard {
    start: tokio::time::Instant,
    nanos_since_start: std::sync::atomic::AtomicU64,
}

impl Heard {
    fn new() -> Arc<Self> {
        Arc::new(Heard { start: tokio::time::Instant::now(), nanos_since_start: Default::default() })
    }

    fn mark(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos_since_start.store(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_nanos(self.nanos_since_start.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The socket's single writer: drains the outbox into the [`Machine`] and carries out its
/// actions; sends pings and closes idle peers when the machine's deadline passes. Returns
/// when the socket is done: a close frame was sent, the connection failed, or a write
/// missed its deadline (counted as a slow consumer, like an overflowing outbox).
async fn write_loop<S, L>(
    mut conn: Conn<S>,
    log: L,
    outbox: Arc<Outbox>,
    heard: Arc<Heard>,
    meters: Meters,
    report: &mut Report,
) where
    S: futures_util::Sink<Message> + Unpin,
    L: Log,
{
    let mut writer = Writer {
        machine: Machine::new(tokio::time::Instant::now()),
        log,
        outbox,
        heard,
        channels: ChannelMap::default(),
        meters,
        report,
        pending: VecDeque::new(),
    };
    match writer.run(&mut conn).await {
        Ok(()) | Err(WriteError::Gone) => {}
        Err(WriteError::TimedOut) => {
            writer.meters.slow_consumer_drops.inc();
            writer.report.ending = Ending::WriteTimedOut;
            let _ = conn.close(close::SLOW_CONSUMER, machine::SLOW_CONSUMER_REASON, LAST_CLOSE_ATTEMPT).await;
            // Not even a close frame got through: dropping the socket ends the connection.
            return;
        }
    }
    let _ = within(LAST_CLOSE_ATTEMPT, conn.sink.close()).await;
}

struct Writer<'r, L: Log> {
    machine: Machine,
    log: L,
    outbox: Arc<Outbox>,
    heard: Arc<Heard>,
    /// What each joined channel holds: its feed subscription and a unit of the gauge.
    channels: ChannelMap<(L::Subscription, Counted)>,
    meters: Meters,
    report: &'r mut Report,
    /// The machine's actions still to carry out: one reused buffer (see [`Writer::step`]).
    pending: VecDeque<Action>,
}

impl<L: Log> Drop for Writer<'_, L> {
    fn drop(&mut self) {
        // Dropped while parked (a panic, or the close grace ran out): no feed may write to
        // the socket any more.
        self.outbox.close_lane();
    }
}

impl<L: Log> Writer<'_, L> {
    /// Ok when a close frame was sent (or could not be).
    async fn run<S: futures_util::Sink<Message> + Unpin>(&mut self, conn: &mut Conn<S>) -> Result<(), WriteError> {
        // One timer for the socket's life, moved only when its deadline changes (a new one
        // per wake-up cost a timer-wheel insert and removal for every delivered event).
        let timer = tokio::time::sleep_until(self.machine.deadline(self.heard.last()));
        let mut timer = std::pin::pin!(timer);
        // Swapped with the outbox's queue on every wake-up: a delivered event allocates
        // nothing, and an idle socket holds one queue's buffer, not two.
        let mut batch: VecDeque<Out> = VecDeque::new();
        loop {
            let deadline = self.machine.deadline(self.heard.last());
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            batch.clear();
            // While the writer waits with nothing queued, feeds write its next events
            // themselves (lane.rs); it takes the positions back when it wakes.
            let parked = self.outbox.park(self.machine.positions());
            let ticked = tokio::select! {
                drained = self.outbox.drain_into(&mut batch) => match drained {
                    Ok(()) => None,
                    Err(Overflowed) => Some(Input::Overflowed),
                },
                () = &mut timer => Some(Input::Tick { now: tokio::time::Instant::now(), heard: self.heard.last() }),
            };
            if parked {
                self.report.frames_sent += u64::from(self.outbox.unpark(self.machine.positions()));
            }
            // Everything in one batch is fed (buffered) and written with one flush: one
            // write(2) for a burst instead of one per frame.
            if let Some(input) = ticked {
                if self.step(conn, input).await? {
                    return Ok(());
                }
            } else {
                for item in batch.drain(..) {
                    if self.step(conn, Input::from(item)).await? {
                        return Ok(());
                    }
                }
            }
            conn.flush().await?;
        }
    }

    /// Carries out what the machine makes of `input`, answering its log reads at once.
    /// True when the socket was closed.
    async fn step<S: futures_util::Sink<Message> + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        input: Input,
    ) -> Result<bool, WriteError> {
        // `pending` is the writer's reused queue: empty between steps.
        let mut pending = std::mem::take(&mut self.pending);
        self.machine.on_into(input, &mut pending);
        let result = self.carry_out(conn, &mut pending).await;
        pending.clear();
        self.pending = pending;
        result
    }

    /// Carries out `pending` in order; an answer's actions go before the rest.
    async fn carry_out<S: futures_util::Sink<Message> + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        pending: &mut VecDeque<Action>,
    ) -> Result<bool, WriteError> {
        while let Some(action) = pending.pop_front() {
            let answer = match action {
                Action::Send(text) => {
                    conn.text(text).await?;
                    self.report.frames_sent += 1;
                    None
                }
                Action::SendShared(text) => {
                    conn.text(text).await?;
                    self.report.frames_sent += 1;
                    None
                }
                Action::SendEvent { frame, text, .. } => {
                    conn.text(text).await?;
                    self.report.frames_sent += 1;
                    self.meters.delivered.one(&frame);
                    None
                }
                Action::Ping => {
                    conn.send(Message::Ping(Default::default())).await?;
                    None
                }
                Action::Subscribe { project, head, reader } => {
                    let subscription = self.log.subscribe(project, head, reader);
                    let gauge = Counted::new(&self.meters.joined_channels);
                    self.channels.insert(project, (subscription, gauge));
                    self.report.joined(project);
                    None
                }
                Action::Unsubscribe { project } => {
                    self.channels.remove(&project);
                    None
                }
                Action::Fill(fill) => {
                    // What is already queued goes out before waiting for the database.
                    conn.flush().await?;
                    // Boxed, like the other database calls: kept out of the socket's task.
                    let frames = Box::pin(self.log.read(fill.project, fill.after)).await.map_err(|err| {
                        tracing::warn!(project_id = %fill.project, error = %err, "filling a gap failed");
                        LogUnavailable
                    });
                    Some(Input::Filled { fill, frames })
                }
                Action::FindOldest(fill) => {
                    let oldest = Box::pin(self.log.oldest_seq(fill.project)).await.unwrap_or(fill.after + 1);
                    Some(Input::Oldest { fill, oldest })
                }
                Action::Close { code, reason } => {
                    if code == close::SLOW_CONSUMER {
                        self.meters.slow_consumer_drops.inc();
                    }
                    self.report.ending = Ending::Hub(code);
                    let _ = conn.send(close_message(code, reason)).await;
                    return Ok(true);
                }
            };
            if let Some(answer) = answer {
                // The answer's actions come before whatever was still pending.
                for action in self.machine.on(answer).into_iter().rev() {
                    pending.push_front(action);
                }
            }
        }
        Ok(false)
    }
}

/// How a socket ended, for its close log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The hub sent a close frame with this code.
    Hub(u16),
    /// The peer sent a close frame (with this code) or the connection ended.
    Peer(Option<u16>),
    /// A write missed its deadline (4008 attempted).
    WriteTimedOut,
    /// The session panicked.
    Panicked,
    #[default]
    Unknown,
}

/// What one socket's close log line says. Never tokens or contents.
#[derive(Debug, Default)]
struct Report {
    ending: Ending,
    principal: &'static str,
    session_id: Option<Uuid>,
    /// Projects joined during the socket's life (at most MAX_CHANNELS of them are listed).
    projects: Vec<Uuid>,
    frames_sent: u64,
    frames_received: u64,
}

impl Report {
    fn joined(&mut self, project: Uuid) {
        if !self.projects.contains(&project) && self.projects.len() < machine::MAX_CHANNELS {
            self.projects.push(project);
        }
    }

    /// The one log line per socket close (CONTRACT section 8).
    fn log(&self, duration: Duration) {
        let (close_code, closed_by) = match self.ending {
            Ending::Hub(code) => (Some(code), "hub"),
            Ending::Peer(code) => (code, "peer"),
            Ending::WriteTimedOut => (Some(close::SLOW_CONSUMER), "write_deadline"),
            Ending::Panicked => (None, "panic"),
            Ending::Unknown => (None, "unknown"),
        };
        let project_ids = self.projects.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
        tracing::info!(
            target: "synchub::socket",
            duration_ms = duration.as_millis() as u64,
            close_code,
            closed_by,
            principal = self.principal,
            project_ids,
            session_id = self.session_id.map(tracing::field::display),
            frames_sent = self.frames_sent,
            frames_received = self.frames_received,
            "socket closed"
        );
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    //! The writer without a socket or a database: a recording sink, a log in memory, and
    //! tokio's paused clock for pings, idle peers and the write deadline.

    use super::*;
    use std::collections::HashMap;

    /// A sink that records what is written, or (stalled) never takes anything.
    #[derive(Clone, Default)]
    struct Recorder {
        written: Arc<std::sync::Mutex<Vec<Message>>>,
        stalled: bool,
    }

    impl Recorder {
        fn written(&self) -> Vec<Message> {
            self.written.lock().unwrap().clone()
        }

        fn ready(&self) -> Poll<Result<(), std::convert::Infallible>> {
            if self.stalled { Poll::Pending } else { Poll::Ready(Ok(())) }
        }
    }

    impl futures_util::Sink<Message> for Recorder {
        type Error = std::convert::Infallible;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.ready()
        }

        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.written.lock().unwrap().push(item);
            Ok(())
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.ready()
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.ready()
        }
    }

    /// Projects' logs in memory; subscriptions are not needed (tests push live events).
    #[derive(Default)]
    struct MemoryLog(HashMap<Uuid, Vec<Arc<EventFrame>>>);

    impl Log for MemoryLog {
        type Subscription = ();

        fn subscribe(&self, _: Uuid, _: i64, _: Option<String>) {}

        fn read(
            &self,
            project: Uuid,
            after: i64,
        ) -> impl Future<Output = Result<Vec<Arc<EventFrame>>, ApiError>> + Send {
            let events = self.0.get(&project).into_iter().flatten();
            let page = events.filter(|f| f.seq > after).take(machine::FILL_PAGE).cloned().collect();
            async move { Ok(page) }
        }

        fn oldest_seq(&self, project: Uuid) -> impl Future<Output = Result<i64, ApiError>> + Send {
            let oldest = self.0.get(&project).and_then(|events| events.first()).map_or(1, |f| f.seq);
            async move { Ok(oldest) }
        }
    }

    fn event(project: Uuid, seq: i64) -> Arc<EventFrame> {
        Arc::new(EventFrame {
            seq,
            event_type: "file:update".into(),
            text: protocol::event_frame(project, seq, "file:update", "{}").into(),
            committed_at_us: 0,
            delta: None,
        })
    }

    const DEADLINE: Duration = Duration::from_secs(10);

    struct Harness {
        sink: Recorder,
        outbox: Arc<Outbox>,
        heard: Arc<Heard>,
        meters: Meters,
        _metrics: Metrics,
    }

    impl Harness {
        fn new(sink: Recorder) -> Self {
            let metrics = Metrics::default();
            let meters = Meters::of(&metrics);
            Harness { sink, outbox: Outbox::new(1 << 20, None), heard: Heard::new(), meters, _metrics: metrics }
        }

        /// Runs the writer until it ends; returns its report.
        async fn run(&self, log: MemoryLog) -> Report {
            let mut report = Report::default();
            let conn = Conn { sink: self.sink.clone(), deadline: DEADLINE };
            let meters = self.meters.clone();
            write_loop(conn, log, self.outbox.clone(), self.heard.clone(), meters, &mut report).await;
            report
        }
    }

    fn closed(code: u16, reason: &'static str) -> Message {
        close_message(code, reason)
    }

    #[tokio::test(start_paused = true)]
    async fn pings_every_20_s_and_closes_a_silent_peer_after_60_s() {
        let harness = Harness::new(Recorder::default());
        let started = tokio::time::Instant::now();
        let report = harness.run(MemoryLog::default()).await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        let ping = Message::Ping(Default::default());
        assert_eq!(harness.sink.written(), [ping.clone(), ping, closed(close::GOING_AWAY, "idle")]);
        assert_eq!(report.ending, Ending::Hub(close::GOING_AWAY));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_heard_from_is_not_idle() {
        let harness = Harness::new(Recorder::default());
        let started = tokio::time::Instant::now();
        let heard = harness.heard.clone();
        let (report, ()) = tokio::join!(harness.run(MemoryLog::default()), async move {
            tokio::time::sleep(Duration::from_secs(50)).await;
            heard.mark();
        });
        assert_eq!(started.elapsed(), Duration::from_secs(110));
        let written = harness.sink.written();
        assert_eq!(written.iter().filter(|m| matches!(m, Message::Ping(_))).count(), 5, "{written:?}");
        assert_eq!(report.ending, Ending::Hub(close::GOING_AWAY));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_with_1012_after_what_is_queued() {
        let harness = Harness::new(Recorder::default());
        harness.outbox.push(Out::Text("before".into()));
        harness.outbox.push(Out::Shutdown);
        harness.outbox.push(Out::Text("after".into()));
        let report = harness.run(MemoryLog::default()).await;
        let expected = [Message::Text("before".into()), closed(close::RESTART, "hub restarting: reconnect with since")];
        assert_eq!(harness.sink.written(), expected);
        assert_eq!(report.ending, Ending::Hub(1012));
        assert_eq!(report.frames_sent, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_join_is_filled_from_the_log_and_live_gaps_too() {
        let harness = Harness::new(Recorder::default());
        let project = Uuid::new_v4();
        let log = MemoryLog(HashMap::from([(project, (1..=5).map(|seq| event(project, seq)).collect())]));
        let reply = protocol::joined(&None, project, 3);
        harness.outbox.push(Out::Join { project, next_seq: 1, head: 3, reply: reply.clone(), reader: None });
        harness.outbox.push(Out::Event { project, frame: event(project, 2) });
        harness.outbox.push(Out::Event { project, frame: event(project, 5) });
        harness.outbox.push(Out::Close(close::NORMAL, ""));
        let report = harness.run(log).await;
        let text = |seq| Message::Text(event(project, seq).text.clone());
        // The join's fill reads to the end of the log: the live 2 and 5 are duplicates.
        let expected = [Message::Text(reply.into()), text(1), text(2), text(3), text(4), text(5), closed(1000, "")];
        assert_eq!(harness.sink.written(), expected);
        assert_eq!(harness.meters.delivered.delivered.get(), 5);
        assert_eq!(harness.meters.joined_channels.get(), 0, "the channel's gauge is given back");
        assert_eq!((report.frames_sent, report.projects), (6, vec![project]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_past_the_deadline_ends_the_socket_as_a_slow_consumer() {
        let harness = Harness::new(Recorder { stalled: true, ..Recorder::default() });
        harness.outbox.push(Out::Text("never taken".into()));
        let started = tokio::time::Instant::now();
        let report = harness.run(MemoryLog::default()).await;
        assert_eq!(started.elapsed(), DEADLINE + LAST_CLOSE_ATTEMPT);
        assert_eq!(report.ending, Ending::WriteTimedOut);
        assert_eq!(harness.meters.slow_consumer_drops.get(), 1);
    }

    #[test]
    fn a_socket_close_is_one_info_line_of_target_synchub_socket() {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        let (session, project) = (Uuid::new_v4(), Uuid::new_v4());
        let report = Report {
            ending: Ending::Hub(close::RESTART),
            principal: "container",
            session_id: Some(session),
            projects: vec![project],
            frames_sent: 3,
            frames_received: 2,
        };
        tracing::subscriber::with_default(subscriber, || report.log(Duration::from_millis(1500)));
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let [line] = &lines[..] else { panic!("not one line: {text}") };
        assert_eq!((&line["level"], &line["target"]), (&"INFO".into(), &"synchub::socket".into()));
        let fields = &line["fields"];
        assert_eq!(fields["close_code"], 1012);
        assert_eq!(fields["closed_by"], "hub");
        assert_eq!(fields["duration_ms"], 1500);
        assert_eq!(fields["session_id"], session.to_string());
        assert_eq!(fields["project_ids"], project.to_string());
        assert_eq!((&fields["frames_sent"], &fields["frames_received"]), (&3.into(), &2.into()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_overflowing_outbox_closes_with_4008() {
        let harness = Harness::new(Recorder::default());
        let outbox = Outbox::new(10, None);
        let project = Uuid::new_v4();
        outbox.push(Out::Event { project, frame: event(project, 1) });
        outbox.push(Out::Event { project, frame: event(project, 2) });
        let harness = Harness { outbox, ..harness };
        let report = harness.run(MemoryLog::default()).await;
        assert_eq!(harness.sink.written(), [closed(close::SLOW_CONSUMER, machine::SLOW_CONSUMER_REASON)]);
        assert_eq!(report.ending, Ending::Hub(close::SLOW_CONSUMER));
        assert_eq!(harness.meters.slow_consumer_drops.get(), 1);
    }
}
