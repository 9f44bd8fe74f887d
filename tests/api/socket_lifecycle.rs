//! A socket's lifetime is one unit: whatever ends it (a dead reader, a peer that stops
//! reading, a close) frees its per-user slot and its gauges. Also the socket's input
//! limits: joins per second, `applied` above the project's head, integer ranges.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, Ws, app_with_storage, channel};

/// Waits (bounded) until the metric reads `want`.
async fn wait_for_metric(app: &TestApp, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let value = app.metric(name).await;
        if value == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {value}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a socket does next: a text frame, a close, or nothing in `within`.
#[derive(Debug)]
enum Next {
    Frame(Value),
    Closed,
    Silent,
}

async fn next(ws: &mut Ws, within: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.stream.next()).await {
            Err(_) => return Next::Silent,
            Ok(Some(Ok(Message::Text(text)))) => return Next::Frame(serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(Message::Close(_)))) => return Next::Closed,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return Next::Closed,
        }
    }
}

/// True when the socket answers a ping with a pong (false: the hub closed it).
async fn answers_ping(ws: &mut Ws) -> bool {
    ws.send(json!({"type": "ping", "ref": "alive?"})).await;
    loop {
        match next(ws, Duration::from_secs(5)).await {
            Next::Frame(frame) if frame["type"] == "pong" => return true,
            Next::Frame(_) => continue,
            Next::Closed => return false,
            Next::Silent => panic!("the socket neither answers nor closes (a zombie)"),
        }
    }
}

/// The user can again open `limit` working sockets, and no more.
async fn sockets_up_to_the_limit_work(app: &TestApp, token: &str, limit: usize) {
    let mut open = Vec::new();
    for _ in 0..limit {
        let mut ws = app.ws(token).await;
        assert!(answers_ping(&mut ws).await, "a socket within the limit was refused");
        open.push(ws);
    }
    let mut extra = app.ws(token).await;
    assert!(!answers_ping(&mut extra).await, "a socket over the limit was accepted");
}

fn limited(c: &mut synchub::Config) {
    c.limits.max_sockets_per_user = 3;
    c.limits.write_rate = 100_000.0;
    c.limits.write_burst = 100_000.0;
}

#[tokio::test]
async fn a_reader_that_fails_takes_the_whole_socket_with_it() {
    let app = TestApp::spawn_with(limited).await;
    app.state.broker.inject_reader_faults();
    let p = app.create_project("alice", "zombies").await;
    app.write("alice", &p, "a.ts", "x").await;
    let token = app.user_token("alice");
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = app.ws(&token).await;
        ws.join(&p, None).await;
        sockets.push(ws);
    }
    wait_for_metric(&app, "synchub_open_sockets", 3.0, Duration::from_secs(5)).await;
    wait_for_metric(&app, "synchub_joined_channels", 3.0, Duration::from_secs(5)).await;
    for ws in &mut sockets {
        ws.stream.send(Message::Text("synchub:test:reader-panic".into())).await.unwrap();
    }
    // The hub ends each socket entirely: the client sees it closed, and a write made now
    // reaches nobody.
    app.write("alice", &p, "b.ts", "y").await;
    for ws in &mut sockets {
        match next(ws, Duration::from_secs(5)).await {
            Next::Closed => {}
            other => panic!("a socket whose reader failed is still there: {other:?}"),
        }
    }
    wait_for_metric(&app, "synchub_open_sockets", 0.0, Duration::from_secs(5)).await;
    wait_for_metric(&app, "synchub_joined_channels", 0.0, Duration::from_secs(5)).await;
    sockets_up_to_the_limit_work(&app, &token, 3).await;
}

#[tokio::test]
async fn reusing_an_op_id_for_another_write_kind_leaves_no_zombie_socket() {
    let app = TestApp::spawn_with(limited).await;
    let p = app.create_project("alice", "op ids").await;
    app.write("alice", &p, "other.ts", "x").await;
    let token = app.user_token("alice");
    let op_id = uuid::Uuid::new_v4();
    let mut ws = app.ws(&token).await;
    ws.join(&p, None).await;
    ws.send(json!({"type": "upsert", "ref": "u", "channel": channel(&p), "path": "a.ts", "content": "1",
                   "op_id": op_id}))
        .await;
    let mut acked = false;
    while !acked {
        let frame = ws.recv().await;
        acked = frame["type"] == "ack";
        if acked {
            assert_eq!(frame["ok"], true, "{frame}");
        }
    }
    ws.send(json!({"type": "delete", "ref": "d", "channel": channel(&p), "path": "other.ts", "op_id": op_id})).await;
    // Either the write is refused and the socket lives on, or the socket is gone entirely;
    // never a socket that still receives but no longer answers.
    let alive = loop {
        match next(&mut ws, Duration::from_secs(5)).await {
            Next::Frame(frame) if frame["type"] == "ack" => {
                assert_eq!(frame["ok"], false, "{frame}");
                break answers_ping(&mut ws).await;
            }
            Next::Frame(_) => continue,
            Next::Closed => break false,
            Next::Silent => panic!("the delete got no answer and the socket was not closed"),
        }
    };
    if !alive {
        wait_for_metric(&app, "synchub_open_sockets", 0.0, Duration::from_secs(5)).await;
    }
    drop(ws);
    wait_for_metric(&app, "synchub_open_sockets", 0.0, Duration::from_secs(5)).await;
    wait_for_metric(&app, "synchub_joined_channels", 0.0, Duration::from_secs(5)).await;
    sockets_up_to_the_limit_work(&app, &token, 3).await;
}

/// A client that upgrades and joins, then never reads again (like a stopped process):
/// a tiny receive buffer so the hub's writes back up quickly.
async fn stalled_client(app: &TestApp, token: &str, project: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let mut request = format!("ws://{}/v1/realtime", app.addr).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (stream, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    let mut ws = Ws { stream };
    ws.join(project, None).await;
    ws
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_cut_off_at_the_write_deadline() {
    let deadline = Duration::from_millis(1000);
    let app = TestApp::spawn_with(|c| {
        limited(c);
        c.limits.max_sockets_per_user = 1;
        // Far more than what is written: only the write deadline can end this socket.
        c.limits.socket_queue_bytes = 256 * 1024 * 1024;
        c.limits.socket_write_timeout_ms = deadline.as_millis() as u64;
    })
    .await;
    let p = app.create_project("alice", "stalled").await;
    let token = app.user_token("alice");
    let stalled = stalled_client(&app, &token, &p).await;
    // 1,000 events of 10 KiB, far more than the socket buffers hold, written by calling the
    // SQL function directly from 4 connections (5,000 smaller ones took over a minute on a
    // loaded 2-core machine).
    let started = Instant::now();
    let writers = (0..4).map(|w| {
        let (app, p) = (&app, p.clone());
        async move {
            let db = app.sql().await;
            let write = db
                .prepare(
                    "SELECT synchub.upsert_project_file($1::text::uuid, $2, repeat('x', 10240), NULL, NULL, 'alice', NULL)",
                )
                .await
                .unwrap();
            for i in 0..250 {
                db.execute(&write, &[&p, &format!("w{w}/f{i}.txt")]).await.unwrap();
            }
        }
    });
    futures_util::future::join_all(writers).await;
    println!("1,000 writes took {:?}", started.elapsed());
    let written = Instant::now();
    // The slot is free again once the hub gave up on the stalled socket.
    let limit = deadline + Duration::from_secs(10);
    let mut fresh = loop {
        let mut ws = app.ws(&token).await;
        if answers_ping(&mut ws).await {
            break ws;
        }
        assert!(written.elapsed() < limit, "the stalled socket still holds its slot after {:?}", written.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("stalled socket released {:?} after the write", written.elapsed());
    assert_eq!(app.metric("synchub_slow_consumer_drops_total").await, 1.0);
    wait_for_metric(&app, "synchub_open_sockets", 1.0, Duration::from_secs(2)).await;
    wait_for_metric(&app, "synchub_joined_channels", 0.0, Duration::from_secs(2)).await;
    // The fresh socket resumes with since and gets everything.
    assert_eq!(fresh.join(&p, Some(990)).await, 1000);
    assert_eq!(fresh.events(10).await.last().unwrap()["seq"], 1000);
    drop(stalled);
}

#[tokio::test]
async fn joins_are_limited_to_20_per_second_per_socket() {
    let app = TestApp::spawn().await;
    let p = app.create_project("alice", "joins").await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    for i in 0..40 {
        ws.send(json!({"type": "join", "ref": i, "channel": channel(&p), "since": null})).await;
    }
    let (mut joined, mut limited) = (0, 0);
    for _ in 0..40 {
        let frame = ws.recv().await;
        match frame["type"].as_str() {
            Some("joined") => joined += 1,
            Some("error") => {
                assert_eq!(frame["error"]["code"], "rate_limited", "{frame}");
                assert_eq!(frame["channel"], channel(&p), "{frame}");
                assert!(frame["ref"].is_number(), "{frame}");
                limited += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(joined >= 20, "only {joined} joins were accepted");
    assert!(limited > 0, "all 40 joins were accepted");
    // The budget comes back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ws.join(&p, None).await;
}

#[tokio::test]
async fn applied_above_the_projects_last_seq_is_refused_and_not_recorded() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "applied").await;
    app.write("alice", &p, "a.txt", "1").await;
    let (_, session) = app.post(&format!("/v1/projects/{p}/sessions"), &app.service_token(), json!({})).await;
    let path = format!("/v1/sessions/{}", session["session_id"].as_str().unwrap());
    let mut agent = app.ws(session["token"].as_str().unwrap()).await;
    agent.join(&p, Some(1)).await;
    agent.send(json!({"type": "applied", "channel": channel(&p), "seq": 999_999})).await;
    let refused = agent.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_request", "{refused}");
    assert_eq!(refused["channel"], channel(&p), "{refused}");
    let (_, status) = app.get(&path, &app.service_token()).await;
    assert_eq!((status["applied_seq"].as_i64(), status["project_last_seq"].as_i64()), (Some(0), Some(1)), "{status}");
    // A true report is still recorded.
    agent.send(json!({"type": "applied", "channel": channel(&p), "seq": 1})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, status) = app.get(&path, &app.service_token()).await;
        if status["applied_seq"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "progress not recorded: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.assert_quiet(Duration::from_millis(400)).await;
}

/// Integers a socket frame may not carry: above 2^53−1, negative, fractional, strings.
fn bad_integers() -> Vec<Value> {
    vec![
        json!(9_223_372_036_854_775_807_i64),
        json!(9_007_199_254_740_992_i64),
        json!(1e30),
        json!(-1),
        json!(1.5),
        json!("5"),
    ]
}

#[tokio::test]
async fn socket_integers_must_be_between_0_and_2_pow_53_minus_1() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "integers").await;
    app.write("alice", &p, "a.ts", "1").await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    for bad in bad_integers() {
        ws.send(json!({"type": "join", "ref": "j", "channel": channel(&p), "since": bad})).await;
        let frame = ws.recv().await;
        assert_eq!(frame["type"], "error", "since={bad}: {frame}");
        assert_eq!(frame["ref"], "j", "since={bad}: {frame}");
        assert_eq!(frame["error"]["code"], "invalid_request", "since={bad}: {frame}");
        let message = frame["error"]["message"].as_str().unwrap();
        assert!(message.contains("since"), "since={bad}: {frame}");

        ws.send(json!({"type": "upsert", "ref": "w", "channel": channel(&p), "path": "a.ts", "content": "2",
                       "expected_version": bad}))
            .await;
        let ack = ws.recv().await;
        assert_eq!((&ack["type"], &ack["ref"], &ack["ok"]), (&json!("ack"), &json!("w"), &json!(false)), "{ack}");
        assert_eq!(ack["error"]["code"], "invalid_request", "expected_version={bad}: {ack}");
        assert!(ack["error"]["message"].as_str().unwrap().contains("expected_version"), "{ack}");

        ws.send(json!({"type": "delete", "ref": "d", "channel": channel(&p), "path": "a.ts", "expected_version": bad}))
            .await;
        let ack = ws.recv().await;
        assert_eq!((&ack["type"], &ack["ok"]), (&json!("ack"), &json!(false)), "{ack}");
        assert_eq!(ack["error"]["code"], "invalid_request", "expected_version={bad}: {ack}");
    }
    // The largest allowed since is accepted (there is just nothing after it).
    assert_eq!(ws.join(&p, Some(9_007_199_254_740_991)).await, 1);
    ws.assert_quiet(Duration::from_millis(300)).await;
    // Nothing was written by the refused writes.
    let (_, file) = app.get(&format!("/v1/projects/{p}/files/a.ts"), &app.user_token("alice")).await;
    assert_eq!((file["content"].as_str(), file["version"].as_i64()), (Some("1"), Some(1)), "{file}");

    let (_, session) = app.post(&format!("/v1/projects/{p}/sessions"), &app.service_token(), json!({})).await;
    let mut agent = app.ws(session["token"].as_str().unwrap()).await;
    for bad in bad_integers() {
        agent.send(json!({"type": "applied", "channel": channel(&p), "seq": bad})).await;
        let frame = agent.recv().await;
        assert_eq!(frame["type"], "error", "seq={bad}: {frame}");
        assert_eq!(frame["error"]["code"], "invalid_request", "seq={bad}: {frame}");
        assert!(frame["error"]["message"].as_str().unwrap().contains("seq"), "seq={bad}: {frame}");
    }
}

/// CONTRACT section 8: on shutdown the hub closes sockets with 1012 (clients resume
/// elsewhere), after what was already queued for them.
#[tokio::test]
async fn shutdown_closes_sockets_with_1012() {
    let mut app = TestApp::spawn().await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    ws.send(json!({"type": "ping", "ref": "before"})).await;
    let pong = ws.recv().await;
    assert_eq!((&pong["type"], &pong["ref"]), (&json!("pong"), &json!("before")));
    let server = app.start_shutdown();
    assert_eq!(ws.close_code(Duration::from_secs(5)).await, Some(1012));
    drop(ws);
    tokio::time::timeout(Duration::from_secs(15), server).await.expect("serve returns").unwrap().unwrap();
}
