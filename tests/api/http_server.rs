//! The HTTP server itself, spoken to over raw TCP: its own answers are the contract's JSON
//! errors (405, 414, 431, 400, 408, 503), and the timeouts and the connection cap of
//! CONTRACT section 7 close what a client would otherwise hold open forever.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::helpers::{TestApp, Ws};

/// Upper bound of every wait in this module: nothing below may take longer.
const PATIENCE: Duration = Duration::from_secs(10);

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The contract's error shape with this status and code, sent as JSON.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        let body = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{body}");
        assert_eq!(self.header("content-type"), Some("application/json"), "{body}");
        let value = self.json();
        assert_eq!(value["error"]["code"], code, "{value}");
        assert!(value["error"]["message"].is_string(), "{value}");
    }
}

/// Reads one response (head, then a `Content-Length` body). None when the connection closes
/// (or is reset) before a whole head arrived.
async fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + PATIENCE;
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        assert!(buf.len() < 1 << 20, "response head too large");
        match timeout(deadline.saturating_duration_since(Instant::now()), stream.read(&mut chunk)).await {
            Err(_) => panic!("no response within {PATIENCE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("head is text");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').expect("header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match timeout(deadline.saturating_duration_since(Instant::now()), stream.read(&mut chunk)).await {
            Err(_) => panic!("body not complete within {PATIENCE:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => panic!("connection closed inside a body"),
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    Some(RawResponse { status, headers, body })
}

/// Sends raw bytes on a new connection and reads the one answer.
async fn exchange(app: &TestApp, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // The server may answer (and close) before reading everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    read_response(&mut stream).await.expect("an answer before the connection closed")
}

/// True when the server closes the connection within `within` (EOF or reset); bytes it
/// sends meanwhile are returned too.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match timeout(deadline.saturating_duration_since(Instant::now()), stream.read(&mut chunk)).await {
            Err(_) => return (false, received),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, received),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n";

/// Asserts whatever the server sent before closing is a JSON 408 (it may also close silently).
#[track_caller]
fn assert_silent_or_408(received: &[u8]) {
    if received.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(received);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-type: application/json"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
}

#[tokio::test]
async fn wrong_method_is_json_405() {
    let app = TestApp::spawn().await;
    let answer = exchange(&app, b"DELETE /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n").await;
    answer.assert_error(405, "method_not_allowed");
    assert!(answer.header("allow").is_some_and(|allow| allow.contains("GET")), "{:?}", answer.headers);
    let answer =
        exchange(&app, b"POST /v1/projects/x HTTP/1.1\r\nHost: hub\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    answer.assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn unknown_route_is_json_404() {
    let app = TestApp::spawn().await;
    exchange(&app, b"GET /no/such/route HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn oversized_headers_are_json_431() {
    let app = TestApp::spawn().await;
    let big = format!("GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Big: {}\r\n\r\n", "a".repeat(100 * 1024));
    let answer = exchange(&app, big.as_bytes()).await;
    answer.assert_error(431, "headers_too_large");
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));

    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = exchange(&app, format!("GET /healthz HTTP/1.1\r\nHost: hub\r\n{many}\r\n").as_bytes()).await;
    answer.assert_error(431, "headers_too_large");
}

#[tokio::test]
async fn long_uri_is_json_414() {
    let app = TestApp::spawn().await;
    let request =
        format!("GET /healthz?q={} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n", "a".repeat(16 * 1024));
    exchange(&app, request.as_bytes()).await.assert_error(414, "uri_too_long");
    // A URI longer than the whole head may be is refused as too large a head.
    let request = format!("GET /{} HTTP/1.1\r\nHost: hub\r\n\r\n", "a".repeat(200 * 1024));
    let answer = exchange(&app, request.as_bytes()).await;
    assert!(matches!(answer.status, 414 | 431), "{}", answer.status);
    assert_eq!(answer.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn malformed_requests_are_json_400() {
    let app = TestApp::spawn().await;
    let malformed: [&[u8]; 5] = [
        b"GARBAGE\r\n\r\n",
        b"GET /he llo HTTP/1.1 extra\r\nHost: hub\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /healthz HTTP/7.3\r\nHost: hub\r\n\r\n",
        b"POST /v1/projects HTTP/1.1\r\nHost: hub\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ];
    for request in malformed {
        let answer = exchange(&app, request).await;
        answer.assert_error(400, "invalid_request");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
    // The server is still fine afterwards.
    exchange(&app, b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n").await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_a_bad_one_in_json() {
    let app = TestApp::spawn().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let mut pipelined = [GET_HEALTHZ, GET_HEALTHZ].concat();
    pipelined.extend_from_slice(b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n");
    stream.write_all(&pipelined).await.unwrap();
    // The bad request ends the connection, so everything can be read to the end.
    let (closed, received) = closed_within(&mut stream, PATIENCE).await;
    assert!(closed);
    let text = String::from_utf8(received).unwrap();
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{text}");
    for answer in &answers[..2] {
        assert!(answer.starts_with("200 OK\r\n") && answer.ends_with(r#"{"status":"ok"}"#), "{text}");
    }
    assert!(answers[2].starts_with("400 Bad Request\r\ncontent-type: application/json\r\n"), "{text}");
    assert!(
        answers[2].ends_with(r#"{"error":{"code":"invalid_request","message":"malformed HTTP request"}}"#),
        "{text}"
    );
}

#[tokio::test]
async fn plain_get_of_realtime_is_json_400() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice");
    let request =
        format!("GET /v1/realtime HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    exchange(&app, request.as_bytes()).await.assert_error(400, "invalid_request");
    exchange(&app, b"GET /v1/realtime HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn slowloris_is_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with(|c| {
        c.http.header_timeout_secs = 1;
        c.http.idle_timeout_secs = 60;
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n").await.unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut closed = false;
    // One more header line every 200 ms: each arrives well within any per-read timeout.
    for i in 0..50 {
        if stream.write_all(format!("X-Trickle-{i}: v\r\n").as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        let (now_closed, bytes) = closed_within(&mut stream, Duration::from_millis(200)).await;
        received.extend(bytes);
        if now_closed {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled head was still open after {:?}", started.elapsed());
    assert_silent_or_408(&received);

    // A connection that never sends anything is closed after the header timeout too.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let (closed, received) = closed_within(&mut silent, PATIENCE).await;
    assert!(closed, "a silent connection stayed open");
    assert!(received.is_empty());
}

#[tokio::test]
async fn idle_keep_alive_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let app = TestApp::spawn_with(|c| {
        c.http.header_timeout_secs = 1;
        c.http.idle_timeout_secs = 3;
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(GET_HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut stream).await.expect("first answer").status, 200);
    // Idle for longer than the header timeout: a keep-alive connection survives that…
    sleep(Duration::from_millis(2000)).await;
    stream.write_all(GET_HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut stream).await.expect("kept alive past the header timeout").status, 200);
    // …and is closed, silently, once idle for the idle timeout.
    let (closed, received) = closed_within(&mut stream, PATIENCE).await;
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(received.is_empty(), "{:?}", String::from_utf8_lossy(&received));
}

#[tokio::test]
async fn a_stalled_or_trickled_body_is_answered_408() {
    let app = TestApp::spawn_with(|c| {
        c.http.body_timeout_secs = 1;
        c.http.header_timeout_secs = 5;
    })
    .await;
    let token = app.user_token("alice");
    let head = format!(
        "POST /v1/projects HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
    );

    // Stalled: part of the body, then nothing.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"name": "#).await.unwrap();
    let answer = read_response(&mut stream).await.expect("an answer to the stalled body");
    answer.assert_error(408, "request_timeout");
    let (closed, _) = closed_within(&mut stream, PATIENCE).await;
    assert!(closed, "the connection of an incomplete body must not be reused");

    // Trickled: a byte every 100 ms never finishes in time either (the limit is for the body,
    // not for each read).
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = Vec::new();
    let _ = timeout(PATIENCE, reader.read_to_end(&mut buf)).await.expect("closed within the patience");
    trickle.abort();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");

    // Nothing was created, and the hub still answers.
    let (status, projects) = app.get("/v1/projects", &token).await;
    assert_eq!(status, 200);
    assert_eq!(projects, json!([]));
}

#[tokio::test]
async fn connections_beyond_the_cap_are_answered_503_until_one_closes() {
    let app = TestApp::spawn_with(|c| c.http.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(GET_HEALTHZ).await.unwrap();
        assert_eq!(read_response(&mut stream).await.expect("answer within the cap").status, 200);
        held.push(stream);
    }

    let mut over = TcpStream::connect(app.addr).await.unwrap();
    let _ = over.write_all(GET_HEALTHZ).await;
    let answer = read_response(&mut over).await.expect("an answer beyond the cap, not a hang");
    answer.assert_error(503, "unavailable");
    assert_eq!(answer.header("connection"), Some("close"));
    let (closed, _) = closed_within(&mut over, PATIENCE).await;
    assert!(closed);

    drop(held.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = exchange(&app, b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n").await;
        if answer.status == 200 {
            break;
        }
        answer.assert_error(503, "unavailable");
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn websockets_outlive_the_http_timeouts() {
    let app = TestApp::spawn_with(|c| {
        c.http.header_timeout_secs = 1;
        c.http.body_timeout_secs = 1;
        c.http.idle_timeout_secs = 1;
    })
    .await;
    let project = app.create_project("alice", "p").await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    sleep(Duration::from_millis(3000)).await;
    ws.join(&project, None).await;
    app.write("alice", &project, "a.txt", "hello").await;
    let events = ws.events(1).await;
    assert_eq!(events[0]["payload"]["file_path"], "a.txt", "{}", events[0]);
}

#[tokio::test]
async fn websockets_count_towards_the_connection_cap() {
    let app = TestApp::spawn_with(|c| c.http.max_connections = 1).await;
    let ws = Ws::connect(app.addr, Some(&app.user_token("alice")), None, "").await.expect("upgrade");
    let answer = exchange(&app, GET_HEALTHZ).await;
    answer.assert_error(503, "unavailable");
    drop(ws);
    let deadline = Instant::now() + PATIENCE;
    while exchange(&app, b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n").await.status != 200 {
        assert!(Instant::now() < deadline, "the socket's slot was never freed");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_finishes_in_flight_requests() {
    let mut app = TestApp::spawn().await;
    let addr = app.addr;

    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(GET_HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut idle).await.unwrap().status, 200);
    // A request whose body is still arriving when the signal comes is answered.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    let token = app.user_token("alice");
    let body = br#"{"name": "late"}"#;
    busy.write_all(
        format!(
            "POST /v1/projects HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    busy.write_all(&body[..5]).await.unwrap();
    sleep(Duration::from_millis(200)).await;

    let server = app.start_shutdown();
    let (closed, received) = closed_within(&mut idle, PATIENCE).await;
    assert!(closed && received.is_empty(), "the idle connection was not closed");
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting after the signal");
    busy.write_all(&body[5..]).await.unwrap();
    let answer = read_response(&mut busy).await.expect("the in-flight request is answered");
    assert_eq!(answer.status, 201, "{:?}", String::from_utf8_lossy(&answer.body));
    timeout(PATIENCE, server).await.expect("serve returns after draining").unwrap().unwrap();
}
