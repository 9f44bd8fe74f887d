//! The HTTP/1 server under the router: the accept loop with its connection cap, the
//! connection timeouts of CONTRACT section 7, graceful shutdown, and the contract's JSON
//! shape for the answers hyper would otherwise write itself (400, 414, 431 with empty bodies).
//!
//! Why not hyper's own `header_read_timeout`: hyper 1.x arms it whenever a connection waits
//! for a request head (`proto::h1::Conn::poll_read_head`), and after each response it
//! immediately starts waiting for the next one (`State::idle` sets `notify_read` for that
//! timer), so an idle keep-alive connection would be cut after the header timeout too. The
//! contract wants headers within 10 s but keep-alive for 60 s, so [`GuardedIo`] keeps both
//! deadlines itself, told by [`ConnService`] whether a request is being served.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::app::AppState;
use crate::config::HttpLimits;
use crate::error::ApiError;
use crate::realtime::lane::Lane;

/// Request line plus headers. Larger heads are answered 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longer URIs are answered 414 (a path is at most 1 KiB, 3 KiB percent-encoded).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Connections beyond the cap being answered 503 at once; more are closed at accept.
const TURN_AWAY_AT_ONCE: usize = 64;
/// How long an answer written on a closing connection waits for the client to finish
/// sending, so closing does not reset the connection before the client has read it.
const LINGER: Duration = Duration::from_secs(1);
/// In-flight requests and closing sockets get this long after the shutdown signal…
const DRAIN_LIMIT: Duration = Duration::from_secs(8);
/// …and the background tasks stop by this long after it, within the contract's 10 s
/// (what is left is for the runtime's own shutdown).
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(9_000);

/// Serves until `shutdown` resolves: then stops accepting, closes sockets with 1012
/// (clients resume on another hub with `since`), closes idle connections, drains
/// in-flight requests (for at most [`DRAIN_LIMIT`]), and then stops the app's background
/// tasks (by [`SHUTDOWN_LIMIT`]). The background tasks outlive the drain so that writes
/// finishing during it are still announced to the other hubs.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let limits = state.config.http.clone();
    let max_connections = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let turn_away = Arc::new(Semaphore::new(TURN_AWAY_AT_ONCE));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).max_header_size(MAX_HEAD_BYTES);
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let abandon = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small frames must not wait for delayed ACKs (Nagle): realtime latency is the product.
        let _ = tcp.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let connection = Connection {
                    io: TokioIo::new(GuardedIo::new(tcp, slot, &limits)),
                    router: router.clone(),
                    builder: builder.clone(),
                };
                connections.spawn(connection.run(closing.clone(), abandon.clone()));
            }
            Err(_) => match turn_away.clone().try_acquire_owned() {
                Ok(permit) => {
                    connections.spawn(answer_full(tcp, permit));
                }
                Err(_) => drop(tcp),
            },
        }
    }
    let signalled = Instant::now();
    drop(listener);
    tracing::info!("shutting down: closing sockets with 1012 and draining requests");
    state.broker.shutdown.cancel();
    closing.cancel();
    connections.close();
    // Every connection holds a slot until it closes, a WebSocket's too (its task is
    // axum's, not ours): all slots back means every socket has closed.
    let drained = async {
        connections.wait().await;
        let _all = slots.acquire_many(max_connections).await;
    };
    if tokio::time::timeout_at(signalled + DRAIN_LIMIT, drained).await.is_err() {
        let open = max_connections as usize - slots.available_permits();
        tracing::warn!(open, "connections still open after the drain limit: closing them");
        abandon.cancel();
        connections.wait().await;
    }
    let left = (signalled + SHUTDOWN_LIMIT).saturating_duration_since(Instant::now());
    state.tasks.stop(left).await;
    tracing::info!(took_ms = signalled.elapsed().as_millis() as u64, "shut down");
    Ok(())
}

/// Failing accepts: a reset before accept is the client's business; anything else (out of
/// file descriptors) gets a pause, so the loop does not spin while nothing can be accepted.
async fn accept_failed(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Beyond the connection cap: 503 in the contract's shape, then close.
async fn answer_full(mut tcp: TcpStream, _permit: OwnedSemaphorePermit) {
    let answer = raw_answer(&ApiError::Unavailable("connection cap reached".into()));
    let _ = tokio::time::timeout(LINGER, async {
        tcp.write_all(&answer).await?;
        tcp.shutdown().await?;
        // Reading what the client still sends lets the close be a FIN rather than a reset.
        let mut sink = [0u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// A complete HTTP/1.1 answer carrying `err` as the contract's JSON, for the places that
/// answer below the router (where its layers, `nosniff` included, do not run).
fn raw_answer(err: &ApiError) -> Vec<u8> {
    let body = json!({ "error": err.body() }).to_string();
    let status = err.status();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

struct Connection {
    io: TokioIo<GuardedIo>,
    router: axum::Router,
    builder: hyper::server::conn::http1::Builder,
}

impl Connection {
    async fn run(self, closing: CancellationToken, abandon: CancellationToken) {
        let inner = self.io.inner();
        let service = ConnService { router: self.router, phase: inner.phase().clone(), lane: inner.lane.clone() };
        // With upgrades, the future ends when a WebSocket takes the connection over.
        let connection = self.builder.serve_connection(self.io, service).with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                // Idle connections close now; a request in flight is answered first.
                () = closing.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = abandon.cancelled() => return,
            }
        }
    }
}

/// What a connection is doing, shared by its IO (which keeps the deadlines) and its service
/// (which sees the requests).
#[derive(Default)]
struct Phase {
    state: AtomicU8,
    /// hyper's read may already be pending when the response ends: it is woken to start
    /// the idle deadline.
    reader: AtomicWaker,
}

impl Phase {
    /// Waiting for a request head (a new connection starts here).
    const WAITING: u8 = 0;
    /// A request is being served.
    const BUSY: u8 = 1;
    /// Its response has ended; waiting starts with the next read.
    const DONE: u8 = 2;
    /// A WebSocket owns the connection: no HTTP timeout applies any more.
    const UPGRADED: u8 = 3;

    fn get(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn set(&self, phase: u8) {
        self.state.store(phase, Ordering::Release);
    }

    fn exchange_done(&self) {
        if self.state.compare_exchange(Self::BUSY, Self::DONE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.reader.wake();
        }
    }
}

/// The hyper service of one connection: marks the phase, then hands the request to the router
/// (with the connection's lane, when it asks for an upgrade).
struct ConnService {
    router: axum::Router,
    phase: Arc<Phase>,
    lane: Arc<Lane>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<ExchangeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.phase.set(Phase::BUSY);
        if request.headers().contains_key(header::UPGRADE) {
            request.extensions_mut().insert(self.lane.clone());
        }
        let router = self.router.clone();
        let phase = self.phase.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                phase.set(Phase::UPGRADED);
            }
            Ok(response.map(|body| ExchangeBody { body, phase }))
        })
    }
}

/// A response body that marks the exchange finished when hyper is done with it.
struct ExchangeBody {
    body: Body,
    phase: Arc<Phase>,
}

impl http_body::Body for ExchangeBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ExchangeBody {
    fn drop(&mut self) {
        self.phase.exchange_done();
    }
}

/// What the connection waits for while no request is being served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// A new connection's first byte (the header deadline runs from accept).
    FirstRequest,
    /// A keep-alive connection's next request (the idle deadline).
    Idle,
    /// The rest of a head whose first bytes arrived (the header deadline).
    Head,
    /// Nothing: a request is being served, or the connection was upgraded.
    Nothing,
}

/// The connection's TCP stream, holding its slot under the cap for as long as it is open
/// (a WebSocket's too), with the header and idle deadlines, and rewriting hyper's own
/// error answers into the contract's JSON.
struct GuardedIo {
    tcp: TcpStream,
    /// What the connection is doing; released once the connection is a WebSocket's (it
    /// never changes back): reads and writes then go straight to the socket, without the
    /// phase's `Arc` (a cache miss on every delivered event at 10,000 sockets, and memory per
    /// idle socket). Issue 16.
    phase: Option<Arc<Phase>>,
    waiting: Waiting,
    /// The header/idle timer; released once the connection is a WebSocket's.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The header and idle timeouts in seconds (not `Duration`s: 24 bytes less per socket).
    header_timeout_secs: u32,
    idle_timeout_secs: u32,
    /// An answer of ours written in place of hyper's; the connection closes after it.
    /// Boxed: rare, and a WebSocket's connection would carry its room for nothing.
    answer: Option<Box<Answer>>,
    /// Where feeds write events straight to the socket once it is a WebSocket's
    /// (src/realtime/lane.rs): every other write of an upgraded connection closes it first.
    lane: Arc<Lane>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        // Before the socket closes (its fields drop after this): the lane may hold a feed's
        // write to it.
        self.lane.detach();
    }
}

struct Answer {
    bytes: Vec<u8>,
    written: usize,
    /// The client's remaining bytes are read (and dropped) until this, before closing.
    linger_until: Option<Instant>,
}

impl GuardedIo {
    fn new(tcp: TcpStream, slot: OwnedSemaphorePermit, limits: &HttpLimits) -> Self {
        let lane = Arc::new(Lane::default());
        lane.attach(tcp.as_raw_fd());
        GuardedIo {
            lane,
            tcp,
            phase: Some(Arc::default()),
            waiting: Waiting::FirstRequest,
            deadline: Some(Box::pin(tokio::time::sleep(limits.header_timeout()))),
            header_timeout_secs: u32::try_from(limits.header_timeout().as_secs()).unwrap_or(u32::MAX),
            idle_timeout_secs: u32::try_from(limits.idle_timeout().as_secs()).unwrap_or(u32::MAX),
            answer: None,
            _slot: slot,
        }
    }

    fn wait_for(&mut self, waiting: Waiting, within: Duration) {
        self.waiting = waiting;
        self.timer().reset(Instant::now() + within);
    }

    fn timer(&mut self) -> Pin<&mut Sleep> {
        let timeout = self.header_timeout();
        self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout))).as_mut()
    }

    /// Whether the connection is a WebSocket's; the first time it is seen to be, the HTTP
    /// timer is released.
    fn is_upgraded(&mut self) -> bool {
        match &self.phase {
            None => true,
            Some(phase) if phase.get() == Phase::UPGRADED => {
                self.phase = None;
                self.deadline = None;
                true
            }
            Some(_) => false,
        }
    }

    /// The connection's phase, until it is a WebSocket's.
    fn phase(&self) -> &Arc<Phase> {
        self.phase.as_ref().expect("the phase is released only when the connection is upgraded")
    }

    fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.into())
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.into())
    }

    /// Before any write: once the connection is a WebSocket's, the lane closes and what it
    /// owes is written first (src/realtime/lane.rs). Ready with whether it is upgraded.
    fn poll_lane_first(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.is_upgraded() {
            return Poll::Ready(Ok(false));
        }
        ready!(self.lane.poll_owed(cx, &mut self.tcp))?;
        Poll::Ready(Ok(true))
    }

    fn answer_with(&mut self, err: &ApiError) {
        self.answer = Some(Box::new(Answer { bytes: raw_answer(err), written: 0, linger_until: None }));
    }

    /// Writes what is left of our answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(answer) = self.answer.as_mut() else { return Poll::Ready(Ok(())) };
        while answer.written < answer.bytes.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &answer.bytes[answer.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            answer.written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// After our answer and a write shutdown: read until the client closes or the linger
    /// time is over, so the close does not reset the connection under the answer.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(answer) = self.answer.as_mut() else { return Poll::Ready(()) };
        let until = *answer.linger_until.get_or_insert_with(|| Instant::now() + LINGER);
        if self.timer().deadline() != until {
            self.timer().reset(until);
        }
        let mut sink = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut self.tcp).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return self.timer().poll(cx),
            }
        }
    }

    /// A write of hyper's own answer to a request it could not parse (no request reached
    /// the service): the same status in the contract's shape replaces it.
    fn replace_hyper_answer(&mut self, bytes: &[u8]) {
        if self.answer.is_some() || !matches!(self.phase().get(), Phase::WAITING | Phase::DONE) {
            return;
        }
        let replacement = match hyper_error_status(bytes) {
            Some(StatusCode::URI_TOO_LONG) => ApiError::UriTooLong,
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) => ApiError::HeadersTooLarge,
            Some(_) => ApiError::InvalidRequest("malformed HTTP request".into()),
            None => return,
        };
        self.answer_with(&replacement);
    }
}

/// The status of a head hyper writes by itself on a parse error (`Server::on_error`: 400,
/// 414 or 431, no content type). Every answer of the router carries a content type.
fn hyper_error_status(bytes: &[u8]) -> Option<StatusCode> {
    let rest = bytes.strip_prefix(b"HTTP/1.1 ").or_else(|| bytes.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => StatusCode::BAD_REQUEST,
        b"414 " => StatusCode::URI_TOO_LONG,
        b"431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let has_content_type =
        bytes[..head_end].split(|&b| b == b'\n').any(|line| line.to_ascii_lowercase().starts_with(b"content-type:"));
    (!has_content_type).then_some(status)
}

impl AsyncRead for GuardedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.is_upgraded() {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        match this.phase().get() {
            Phase::BUSY => {
                this.waiting = Waiting::Nothing;
                this.phase().reader.register(cx.waker());
                return Pin::new(&mut this.tcp).poll_read(cx, buf);
            }
            // Upgraded since is_upgraded looked: released on the next call.
            Phase::UPGRADED => return Pin::new(&mut this.tcp).poll_read(cx, buf),
            Phase::DONE => {
                this.phase().set(Phase::WAITING);
                this.wait_for(Waiting::Idle, this.idle_timeout());
            }
            _ if this.waiting == Waiting::Nothing => this.wait_for(Waiting::Head, this.header_timeout()),
            _ => {}
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    match this.waiting {
                        Waiting::Idle => this.wait_for(Waiting::Head, this.header_timeout()),
                        Waiting::FirstRequest => this.waiting = Waiting::Head,
                        _ => {}
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                ready!(this.timer().poll(cx));
                if this.waiting == Waiting::Head {
                    // Best effort: the client may learn why, then the connection closes.
                    this.answer_with(&ApiError::RequestTimeout);
                    let _ = this.poll_answer(cx);
                }
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no complete request in time")))
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if ready!(this.poll_lane_first(cx))? {
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        this.replace_hyper_answer(buf);
        if this.answer.is_some() {
            ready!(this.poll_answer(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if ready!(this.poll_lane_first(cx))? {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        }
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.replace_hyper_answer(first);
        }
        if this.answer.is_some() {
            ready!(this.poll_answer(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_lane_first(cx))?;
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_lane_first(cx))?;
        ready!(self.poll_answer(cx))?;
        ready!(Pin::new(&mut self.tcp).poll_shutdown(cx))?;
        ready!(self.poll_linger(cx));
        Poll::Ready(Ok(()))
    }
}

/// Request-level limits, as a router layer (so metrics and logs see these answers): a URI
/// longer than [`MAX_URI_BYTES`] is 414; a body not received within the body timeout is
/// 408, and reading it stops there (its buffered part is released with the handler's work).
pub async fn request_limits(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let uri = request.uri();
    let uri_len =
        uri.path_and_query().map_or(0, |pq| pq.as_str().len()) + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::UriTooLong.into_response();
    }
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + state.config.http.body_timeout();
    let request = request.map(|body| Body::new(DeadlineBody { body, deadline, timer: None, expired: expired.clone() }));
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    let mut response = ApiError::RequestTimeout.into_response();
    // The rest of the body may still come: this connection cannot carry another request.
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    body: Body,
    deadline: Instant,
    /// Armed only when the body has to wait.
    timer: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.expired.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(axum::Error::new(ApiError::RequestTimeout))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        this.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(axum::Error::new(ApiError::RequestTimeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_hyper_own_error_heads() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_error_status(hyper), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        assert_eq!(hyper_error_status(b"HTTP/1.1 400 Bad Request\r\n\r\n"), Some(StatusCode::BAD_REQUEST));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(hyper_error_status(ours), None);
        assert_eq!(hyper_error_status(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(hyper_error_status(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"), None);
        assert_eq!(hyper_error_status(b"{\"error\":1}"), None);
    }

    #[test]
    fn raw_answers_are_complete_json_responses() {
        let answer = String::from_utf8(raw_answer(&ApiError::UriTooLong)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
    }
}
