//! Graceful shutdown (CONTRACT section 8) with the real binary: on SIGTERM a hub stops
//! accepting, closes sockets with 1012, finishes in-flight requests and exits within 10 s;
//! clients resume on another hub with `since`, so a rolling restart loses nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, Ws, channel, fresh_database, user_token};
use crate::hub_process::HubProcess;

/// The contract's bound from SIGTERM to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(10);
const RESTART: u16 = 1012;

async fn create_project(hub: SocketAddr, name: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("http://{hub}/v1/projects"))
        .bearer_auth(user_token("alice"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id"].as_str().unwrap().to_string()
}

/// SIGTERM, then waits for the exit: asserts status 0 within the contract's 10 s and
/// returns how long it took.
async fn terminate_and_time(hub: &mut HubProcess) -> Duration {
    let signalled = Instant::now();
    hub.terminate();
    let status = hub.wait_exit(EXIT_LIMIT + Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("the hub was still running {took:?} after SIGTERM"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took <= EXIT_LIMIT, "the hub took {took:?} to exit after SIGTERM");
    eprintln!("hub {} exited {took:?} after SIGTERM", hub.addr);
    took
}

/// What a resuming subscriber saw.
#[derive(Default)]
struct Seen {
    seqs: Vec<i64>,
    /// Close codes of the sockets that ended (None: no close frame).
    closes: Vec<Option<u16>>,
}

/// A subscriber that follows `project` across hubs: when its socket closes it reconnects to
/// the other hub and joins with `since` = the last seq it saw. Ends once it has seen
/// `until` (set by the test when the writer is done), or after a bounded time.
async fn resuming_subscriber(hubs: [SocketAddr; 2], project: String, until: Arc<AtomicI64>) -> Seen {
    let token = user_token("alice");
    let mut seen = Seen::default();
    let mut at = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let mut ws = match Ws::connect(hubs[at], Some(&token), None, "").await {
            Ok(ws) => ws,
            Err(_) => {
                at = 1 - at;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let since = seen.seqs.last().copied().unwrap_or(0);
        ws.send(json!({"type": "join", "ref": "j", "channel": channel(&project), "since": since})).await;
        loop {
            let target = until.load(Ordering::Acquire);
            if target > 0 && seen.seqs.last().is_some_and(|last| *last >= target) {
                return seen;
            }
            if Instant::now() >= deadline {
                return seen;
            }
            let message = match tokio::time::timeout(Duration::from_millis(200), ws.stream.next()).await {
                Err(_) => continue,
                Ok(message) => message,
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    match frame["type"].as_str() {
                        Some("event") => seen.seqs.push(frame["seq"].as_i64().unwrap()),
                        Some("joined") => {}
                        _ => panic!("unexpected frame: {frame}"),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    seen.closes.push(frame.map(|f| u16::from(f.code)));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    seen.closes.push(None);
                    break;
                }
            }
        }
        at = 1 - at;
    }
    seen
}

/// Writes one file after another through whichever hub answers, until `stop`; returns the
/// seqs of the acknowledged writes and how many attempts failed (and were retried on the
/// other hub).
async fn steady_writer(
    hubs: [SocketAddr; 2],
    project: String,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicUsize>,
) -> (Vec<i64>, usize) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let token = user_token("alice");
    let mut acked = Vec::new();
    let mut failed = 0;
    let mut at = 0;
    for i in 0..5_000 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        for _attempt in 0..4 {
            let response = http
                .put(format!("http://{}/v1/projects/{project}/files/f{i}.txt", hubs[at]))
                .bearer_auth(&token)
                .json(&json!({ "content": i.to_string() }))
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    let body: Value = response.json().await.unwrap();
                    acked.push(body["seq"].as_i64().unwrap());
                    progress.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                _ => {
                    failed += 1;
                    at = 1 - at;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acked, failed)
}

#[tokio::test]
async fn rolling_restart_of_two_hubs_loses_nothing_for_a_resuming_subscriber() {
    let database_url = fresh_database().await;
    let mut a = HubProcess::start(&database_url).await;
    let mut b = HubProcess::start(&database_url).await;
    let hubs = [a.addr, b.addr];
    let project = create_project(a.addr, "rolling").await;

    let until = Arc::new(AtomicI64::new(0));
    let subscriber = tokio::spawn(resuming_subscriber(hubs, project.clone(), until.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(steady_writer(hubs, project.clone(), stop.clone(), progress.clone()));
    // Each phase lets the writer get some writes acknowledged (however loaded the machine).
    let some_writes = || {
        let progress = progress.clone();
        async move {
            let from = progress.load(Ordering::Acquire);
            for _ in 0..300 {
                if progress.load(Ordering::Acquire) >= from + 10 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the writer made no progress");
        }
    };

    some_writes().await;
    let a_took = terminate_and_time(&mut a).await;
    drop(a);
    let a = HubProcess::start_on(&database_url, hubs[0]).await;
    some_writes().await;
    let b_took = terminate_and_time(&mut b).await;
    drop(b);
    let b = HubProcess::start_on(&database_url, hubs[1]).await;
    some_writes().await;

    stop.store(true, Ordering::Release);
    let (acked, failed) = writer.await.unwrap();
    let last = *acked.iter().max().expect("some writes were acknowledged");
    until.store(last, Ordering::Release);
    let seen = subscriber.await.unwrap();
    eprintln!(
        "rolling restart: {} writes acknowledged, {failed} attempts retried on the other hub; exits after SIGTERM: {a_took:?}, {b_took:?}",
        acked.len()
    );

    // Exactly 1..=last: nothing lost across both restarts, nothing twice.
    assert_eq!(seen.seqs, (1..=last).collect::<Vec<_>>(), "closes: {:?}", seen.closes);
    let mut unique = acked.clone();
    unique.dedup();
    assert_eq!(unique.len(), acked.len(), "each acknowledged write has its own seq");
    assert!(acked.iter().all(|seq| (1..=last).contains(seq)));
    // Each hub closed the subscriber's socket with 1012 (service restart) when it stopped.
    assert_eq!(seen.closes, vec![Some(RESTART), Some(RESTART)]);
    drop((a, b));
}

/// Sends the head and the first part of a PUT, so the request is in flight.
async fn start_slow_put(hub: SocketAddr, project: &str, path: &str, body: &[u8], sent: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(hub).await.unwrap();
    let head = format!(
        "PUT /v1/projects/{project}/files/{path} HTTP/1.1\r\nhost: {hub}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        user_token("alice"),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body[..sent]).await.unwrap();
    tcp
}

#[tokio::test]
async fn a_write_in_flight_at_sigterm_completes_and_reaches_the_other_hub() {
    let database_url = fresh_database().await;
    let mut a = HubProcess::start(&database_url).await;
    let b = HubProcess::start(&database_url).await;
    let project = create_project(a.addr, "in-flight").await;
    let token = user_token("alice");
    let mut on_b = Ws::connect(b.addr, Some(&token), None, "").await.unwrap();
    on_b.join(&project, Some(0)).await;
    let mut on_a = Ws::connect(a.addr, Some(&token), None, "").await.unwrap();
    on_a.join(&project, Some(0)).await;

    let body = json!({ "content": "written while the hub was stopping" }).to_string().into_bytes();
    let mut put = start_slow_put(a.addr, &project, "in-flight.txt", &body, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    a.terminate();

    // The socket on A is closed with 1012; A accepts no new connection.
    assert_eq!(on_a.close_code(Duration::from_secs(5)).await, Some(RESTART));
    assert!(TcpStream::connect(a.addr).await.is_err(), "a stopping hub must not accept");

    // The request that was in flight finishes: acknowledged, and delivered on B.
    put.write_all(&body[10..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), put.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let ack: Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(ack["seq"], 1, "{ack}");
    let event = on_b.recv().await;
    assert_eq!((event["type"].as_str(), event["seq"].as_i64()), (Some("event"), Some(1)), "{event}");

    let status = a.wait_exit(EXIT_LIMIT).await.expect("the hub exits after SIGTERM");
    assert!(status.success(), "{status}");
    eprintln!("hub with a request in flight exited {:?} after SIGTERM", signalled.elapsed());
}

#[tokio::test]
async fn sigterm_exits_within_ten_seconds_despite_clients_that_never_read_or_finish() {
    let database_url = fresh_database().await;
    let mut hub = HubProcess::start(&database_url).await;
    let project = create_project(hub.addr, "stuck").await;
    let token = user_token("alice");
    // A socket that joins, then never reads while a few MB of events are sent to it.
    let mut stuck_socket = Ws::connect(hub.addr, Some(&token), None, "").await.unwrap();
    stuck_socket.join(&project, Some(0)).await;
    let http = reqwest::Client::new();
    let big = "x".repeat(1024 * 1024);
    for i in 0..6 {
        let response = http
            .put(format!("http://{}/v1/projects/{project}/files/big{i}.txt", hub.addr))
            .bearer_auth(&token)
            .json(&json!({ "content": big }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    // A request whose body never finishes, and a head that never finishes.
    let body = json!({ "content": "never finished" }).to_string().into_bytes();
    let _stuck_body = start_slow_put(hub.addr, &project, "stuck.txt", &body, 5).await;
    let mut stuck_head = TcpStream::connect(hub.addr).await.unwrap();
    stuck_head.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    terminate_and_time(&mut hub).await;
    drop(stuck_socket);
}

#[tokio::test]
async fn serve_returns_only_after_every_background_task_has_stopped() {
    let app = TestApp::spawn().await;
    let project = app.create_project("alice", "tasks").await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    ws.join(&project, Some(0)).await;
    app.write("alice", &project, "a.txt", "a").await;
    ws.events(1).await;
    let state = app.state.clone();
    // Listener, announcer, heads check, retention and this project's feed at least.
    assert!(state.tasks.running() >= 5, "{} background tasks", state.tasks.running());
    app.shut_down().await;
    assert_eq!(ws.close_code(Duration::from_secs(5)).await, Some(RESTART));
    assert_eq!(state.tasks.running(), 0, "serve returned with background tasks still running");
}
