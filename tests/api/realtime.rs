//! Realtime over real sockets: order, gap-freedom, resume with `since`, the join seam,
//! several hubs, direct SQL writes, slow consumers, and socket auth.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, Ws, channel, seqs, test_config};
use synchub::files::write_statement;
use synchub::realtime::wakeups::{MAX_SHIPPED_FRAME, OwnEvent};

fn fast_writes(c: &mut synchub::Config) {
    c.limits.write_rate = 100_000.0;
    c.limits.write_burst = 100_000.0;
}

/// Two hub processes on one database, both with [`fast_writes`].
async fn two_hubs_with_fast_writes() -> (TestApp, TestApp) {
    let first = TestApp::spawn_with(fast_writes).await;
    let mut config = test_config(first.database_url.clone());
    fast_writes(&mut config);
    let second = TestApp::spawn_on(config).await;
    (first, second)
}

#[tokio::test]
async fn two_subscribers_get_200_rapid_writes_in_order() {
    let app = TestApp::spawn_with(fast_writes).await;
    let p = app.create_project("alice", "rt").await;
    let token = app.user_token("alice");
    let mut a = app.ws(&token).await;
    let mut b = app.ws(&token).await;
    assert_eq!(a.join(&p, None).await, 0);
    assert_eq!(b.join(&p, Some(0)).await, 0);
    // 200 writes from 8 concurrent writers.
    let writers = (0..8).map(|w| {
        let (app, p) = (&app, p.clone());
        async move {
            for i in 0..25 {
                app.write("alice", &p, &format!("w{w}/f{i}.ts"), &format!("{w}-{i}")).await;
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let expected: Vec<i64> = (1..=200).collect();
    for ws in [&mut a, &mut b] {
        let events = ws.events(200).await;
        assert_eq!(seqs(&events), expected);
        assert!(events.iter().all(|e| e["event"] == "file:update" && e["channel"] == channel(&p)));
        ws.assert_quiet(Duration::from_millis(300)).await;
    }
    // Published counts events (once each); delivered counts frames sent to sockets.
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("synchub_events_published_total{event_type=\"file:update\"} 200\n"), "{metrics}");
    assert!(metrics.contains("synchub_events_delivered_total 400\n"), "{metrics}");
}

/// Events go from the feed straight to an idle socket (src/realtime/lane.rs), and nothing
/// else the socket sends cuts into them: replies to the client's pings (queued for the
/// socket's writer) and tungstenite's own pongs to its WebSocket pings (written from the read
/// path) go out between whole frames, and every event arrives in order, as a delta when the
/// socket saw its base.
#[tokio::test]
async fn events_go_straight_to_idle_sockets_and_replies_never_cut_into_them() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    const N: usize = 200;
    let app = TestApp::spawn_with(fast_writes).await;
    let p = app.create_project("alice", "lane").await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    assert_eq!(ws.join(&p, None).await, 0);
    let writes = async {
        for i in 0..N {
            // Seven files, each growing: most events after the first seven carry a delta.
            app.write("alice", &p, &format!("f{}.txt", i % 7), &"x".repeat(1 + i * 40)).await;
        }
    };
    let (mut sink, mut stream) = ws.stream.split();
    let chatter = async {
        for i in 0..N {
            sink.send(Message::Text(json!({"type": "ping", "ref": i.to_string()}).to_string().into())).await.unwrap();
            sink.send(Message::Ping(vec![i as u8].into())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let read = async {
        let (mut seqs, mut deltas, mut pongs, mut ws_pongs) = (Vec::new(), 0, 0, 0);
        while seqs.len() < N || pongs < N || ws_pongs < N {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("frames stopped");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    match frame["type"].as_str() {
                        Some("event") => {
                            seqs.push(frame["seq"].as_i64().unwrap());
                            deltas += usize::from(frame["payload"].get("delta").is_some());
                        }
                        Some("pong") => pongs += 1,
                        _ => panic!("unexpected frame {frame}"),
                    }
                }
                Some(Ok(Message::Pong(_))) => ws_pongs += 1,
                other => panic!("the stream broke: {other:?}"),
            }
        }
        (seqs, deltas)
    };
    let ((), (), (seqs, deltas)) = tokio::join!(writes, chatter, read);
    assert_eq!(seqs, (1..=N as i64).collect::<Vec<_>>());
    assert!(deltas > 0, "no event came as a delta");
    let by_feeds = app.metric("synchub_events_delivered_by_feeds_total").await;
    assert!(by_feeds > 0.0, "no event went straight to the socket");
    assert_eq!(app.metric("synchub_events_delivered_total").await, N as f64);
}

#[tokio::test]
async fn join_since_delivers_exactly_the_missed_events_then_live() {
    let app = TestApp::spawn_with(fast_writes).await;
    let p = app.create_project("alice", "since").await;
    for i in 0..20 {
        app.write("alice", &p, &format!("f{i}"), "x").await;
    }
    let mut ws = app.ws(&app.user_token("alice")).await;
    assert_eq!(ws.join(&p, Some(7)).await, 20);
    assert_eq!(seqs(&ws.events(13).await), (8..=20).collect::<Vec<_>>());
    ws.assert_quiet(Duration::from_millis(300)).await;
    app.write("alice", &p, "live", "y").await;
    let live = ws.events(1).await;
    assert_eq!(live[0]["seq"], 21);
    assert_eq!(live[0]["payload"]["file_path"], "live");
    assert_eq!(live[0]["payload"]["content"], "y");
    assert_eq!(live[0]["payload"]["version"], 1);
    assert_eq!(live[0]["payload"]["actor"], "alice");
    // since = null: live only.
    let mut late = app.ws(&app.user_token("alice")).await;
    assert_eq!(late.join(&p, None).await, 21);
    late.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn live_frames_equal_the_frames_the_log_gives_later() {
    // A subscriber gets each write's frame live; a socket catching up later reads the same
    // events from the log. They must be the same bytes.
    let app = TestApp::spawn_with(fast_writes).await;
    let p = app.create_project("alice", "same frames").await;
    let mut live = app.ws(&app.user_token("alice")).await;
    assert_eq!(live.join(&p, None).await, 0);
    app.write("alice", &p, "a.ts", "one").await;
    app.write("alice", &p, "a.ts", "two \u{e9}\"\n").await;
    let (status, body) = app.delete(&format!("/v1/projects/{p}/files/a.ts"), &app.user_token("alice")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let frames = live.events(3).await;
    assert_eq!(seqs(&frames), [1, 2, 3]);
    assert_eq!(frames[2]["event"], "file:delete");

    let mut later = app.ws(&app.user_token("alice")).await;
    assert_eq!(later.join(&p, Some(0)).await, 3);
    assert_eq!(later.events(3).await, frames);
}

/// A write made through the hub reads its own event back in its statement and hands it to
/// the feed (`synchub.write_event`, `Broker::offer`): its subscribers get it with no read of
/// the log after the commit. Every kind of write: text and binary upserts, a delete, a bulk,
/// a move, a socket upsert, and an op_id replay (its earlier event is not sent again).
#[tokio::test]
async fn a_write_through_this_hub_reaches_its_subscribers_without_a_read_of_the_log() {
    let blobs = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(|c| {
        fast_writes(c);
        c.storage_dir = Some(blobs.path().to_path_buf());
    })
    .await;
    let p = app.create_project("alice", "own events").await;
    let token = app.user_token("alice");
    let mut ws = app.ws(&token).await;
    ws.join(&p, None).await;
    // The join's own read of the log (and anything else of the start) is over once the
    // first event has arrived.
    app.write("alice", &p, "first.txt", "0").await;
    assert_eq!(seqs(&ws.events(1).await), [1]);
    let reads_before = app.metric("synchub_event_log_reads_total").await;

    let files = format!("/v1/projects/{p}/files");
    for i in 0..10 {
        app.write("alice", &p, &format!("f{i}.txt"), &i.to_string()).await;
    }
    let op = json!({"content": "once", "op_id": "6f1c1c0e-8a52-4b8e-9a53-0c7f4a3f2b11"});
    for _ in 0..2 {
        let (status, body) = app.put(&format!("{files}/op.txt"), &token, op.clone()).await;
        assert_eq!((status, body["seq"].as_i64()), (StatusCode::OK, Some(12)), "{body}");
    }
    let binary = app
        .http
        .put(format!("{}{files}/logo.bin", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 159, 146, 150])
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), StatusCode::OK);
    let (status, body) = app.delete(&format!("{files}/f0.txt"), &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bulk = json!({"upserts": [{"path": "b.txt", "content": "b"}], "deletes": [{"path": "f1.txt"}]});
    let (status, body) = app.post(&format!("/v1/projects/{p}/files:bulk"), &token, bulk).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        app.post(&format!("/v1/projects/{p}/files:move"), &token, json!({"from": "b.txt", "to": "c.txt"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let frames = ws.events(15).await;
    assert_eq!(seqs(&frames), (2..=16).collect::<Vec<_>>());
    let kinds: Vec<&str> = frames[11..].iter().map(|f| f["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["file:update", "file:delete", "bulk:apply", "bulk:apply"]);
    assert_eq!(frames[10]["payload"]["content"], "once");
    assert!(frames[11]["payload"]["blob"]["sha256"].is_string(), "{}", frames[11]);
    ws.send(json!({"type": "upsert", "ref": "s", "channel": channel(&p), "path": "s.txt", "content": "s"})).await;
    let mut frames = [ws.recv().await, ws.recv().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
    assert_eq!((frames[0]["type"].as_str(), frames[1]["seq"].as_i64()), (Some("ack"), Some(17)), "{frames:?}");
    // The op_id replay's event (seq 12) was not sent again.
    ws.assert_quiet(Duration::from_millis(300)).await;
    // The heads check (every 500 ms) may catch a write between its commit and its hand-over
    // and read the log once; one read per write would be 16.
    let reads = app.metric("synchub_event_log_reads_total").await - reads_before;
    assert!(reads <= 2.0, "{reads} reads of the log for 16 writes made through this hub");
}

/// An offered event is delivered directly only when it is the next seq the feed owes: a
/// write made in SQL directly (no hand-over; the heads check would find it within 500 ms)
/// followed at once by a write through the hub makes the feed read the log, once, and every
/// socket gets both in order. (Were the later event handed on over the gap, each socket
/// would fill the gap with its own read of the log: sockets never skip a seq.)
#[tokio::test]
async fn an_offered_event_after_a_gap_is_delivered_after_one_read_of_the_log() {
    let app = TestApp::spawn_with(fast_writes).await;
    let p = app.create_project("alice", "gap").await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = app.ws(&app.user_token("alice")).await;
        ws.join(&p, None).await;
        sockets.push(ws);
    }
    app.write("alice", &p, "first.txt", "0").await;
    for ws in &mut sockets {
        assert_eq!(seqs(&ws.events(1).await), [1]);
    }
    let reads_before = app.metric("synchub_event_log_reads_total").await;
    let db = app.sql().await;
    let rounds = 5i64;
    for round in 0..rounds {
        db.query_one(
            "SELECT * FROM synchub.upsert_project_file($1::text::uuid, 'direct.sql', $2, NULL, NULL, 'alice', NULL)",
            &[&p, &format!("direct {round}")],
        )
        .await
        .unwrap();
        app.write("alice", &p, "hub.txt", &round.to_string()).await;
        for ws in &mut sockets {
            let frames = ws.events(2).await;
            let first = 2 * round + 2;
            assert_eq!(seqs(&frames), [first, first + 1], "round {round}");
            assert_eq!(frames[0]["payload"]["file_path"], "direct.sql");
            assert_eq!(frames[1]["payload"]["file_path"], "hub.txt");
        }
    }
    // One read per round by the feed (the heads check may add one); one per socket per
    // round would be 15.
    let reads = app.metric("synchub_event_log_reads_total").await - reads_before;
    assert!(reads <= (rounds + 1) as f64, "{reads} reads of the log for {rounds} gaps and 3 sockets");
}

#[tokio::test]
async fn the_join_seam_loses_and_repeats_nothing_over_1000_trials() {
    let app = TestApp::spawn_with(fast_writes).await;
    let p = app.create_project("alice", "seam").await;
    let stop = tokio_util::sync::CancellationToken::new();
    // A background writer keeps commits landing while joins happen.
    let background = {
        let (stop, app_base, token, p) = (stop.clone(), app.base.clone(), app.user_token("alice"), p.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let url = format!("{app_base}/v1/projects/{p}/files/bg.txt");
                let _ = http.put(url).bearer_auth(&token).json(&json!({"content": i.to_string()})).send().await;
                i += 1;
            }
        })
    };
    // Joins are limited to 20 per second per socket: the trials take turns on 25 sockets.
    let mut sockets = Vec::new();
    for _ in 0..25 {
        sockets.push(app.ws(&app.user_token("alice")).await);
    }
    let mut last = 0i64;
    for trial in 0..1000 {
        let ws = &mut sockets[trial % 25];
        ws.send(json!({"type": "join", "ref": trial, "channel": channel(&p), "since": last})).await;
        // Frames the previous subscription sent before the leave took effect come first.
        loop {
            let frame = ws.recv().await;
            if frame["type"] == "joined" {
                break;
            }
            assert_eq!(frame["type"], "event", "trial {trial}: {frame}");
        }
        let written = app.write("alice", &p, "seam.txt", &trial.to_string()).await;
        let target = written["seq"].as_i64().unwrap();
        while last < target {
            let frame = ws.recv().await;
            assert_eq!(frame["type"], "event", "trial {trial}: {frame}");
            let seq = frame["seq"].as_i64().unwrap();
            assert_eq!(seq, last + 1, "trial {trial}: gap or repeat");
            last = seq;
        }
        ws.send(json!({"type": "leave", "channel": channel(&p)})).await;
    }
    stop.cancel();
    background.await.unwrap();
}

#[tokio::test]
async fn a_second_hub_on_the_same_database_delivers_writes_made_through_the_first() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(test_config(first.database_url.clone())).await;
    let p = first.create_project("alice", "two hubs").await;
    let mut ws = second.ws(&second.user_token("alice")).await;
    ws.join(&p, None).await;
    first.write("alice", &p, "a.ts", "from the first hub").await;
    let event = ws.events(1).await;
    assert_eq!(event[0]["payload"]["content"], "from the first hub");
    // And the other way round.
    let mut ws1 = first.ws(&first.user_token("alice")).await;
    ws1.join(&p, None).await;
    second.write("alice", &p, "b.ts", "from the second hub").await;
    assert_eq!(ws1.events(1).await[0]["seq"], 2);
}

/// A write's own event travels to the other hubs with its announcement when its frame is
/// small (`wakeups::FRAMES_CHANNEL`): their subscribers get it with no read of the log.
/// A larger one is read from the log as before; both arrive whole and in order. (Here the
/// writing hub has a subscriber of the project itself, as an editor's own socket usually is,
/// so it ships from the first write; the next test covers a writing hub with none.)
#[tokio::test]
async fn another_hub_gets_a_small_write_event_with_the_announcement_and_reads_only_large_ones() {
    let (first, second) = two_hubs_with_fast_writes().await;
    let p = first.create_project("alice", "shipped").await;
    let mut ws = second.ws(&second.user_token("alice")).await;
    ws.join(&p, None).await;
    let mut writer = first.ws(&first.user_token("alice")).await;
    writer.join(&p, None).await;
    first.write("alice", &p, "first.txt", "0").await;
    assert_eq!(seqs(&ws.events(1).await), [1]);
    let reads_before = second.metric("synchub_event_log_reads_total").await;
    for i in 0..10 {
        first.write("alice", &p, "small.txt", &format!("edit {i}; a, b")).await;
    }
    let frames = ws.events(10).await;
    assert_eq!(seqs(&frames), (2..=11).collect::<Vec<_>>());
    assert_eq!(frames[9]["payload"]["content"], "edit 9; a, b");
    ws.assert_quiet(Duration::from_millis(300)).await;
    let reads = second.metric("synchub_event_log_reads_total").await - reads_before;
    assert!(reads <= 2.0, "the second hub read the log {reads} times for 10 small writes made on the first");

    let large = "y".repeat(20_000);
    first.write("alice", &p, "large.txt", &large).await;
    first.write("alice", &p, "small.txt", "after").await;
    let frames = ws.events(2).await;
    assert_eq!(seqs(&frames), [12, 13]);
    assert_eq!(frames[0]["payload"]["content"], large.as_str());
    assert_eq!(frames[1]["payload"]["content"], "after");
    let reads = second.metric("synchub_event_log_reads_total").await - reads_before;
    assert!(reads >= 1.0, "the large event was not read from the log");
}

/// A hub with subscribers of a project that only other hubs write to says so (a `w:` entry,
/// `realtime::interest`): from then on the writing hub reads each write's event back and
/// ships it with the announcement, although it has no subscriber of the project itself, and
/// the subscribers' hub stops reading the log for them.
#[tokio::test]
async fn a_hub_that_only_others_write_to_gets_the_events_shipped_after_saying_it_subscribes() {
    let (writer, reader) = two_hubs_with_fast_writes().await;
    let p = writer.create_project("alice", "watched elsewhere").await;
    let mut ws = reader.ws(&reader.user_token("alice")).await;
    ws.join(&p, None).await;
    // The first events are read from the log; the reader's interest reaches the writer
    // after the first announcement (its own NOTIFY, so: within a few writes).
    let mut seq = 0;
    while writer.metric("synchub_event_frames_shipped_total").await == 0.0 {
        assert!(seq < 50, "after {seq} writes the writing hub still ships no event to the reader's hub");
        seq += 1;
        writer.write("alice", &p, "warm.txt", &format!("warm {seq}")).await;
        assert_eq!(seqs(&ws.events(1).await), [seq]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reads_before = reader.metric("synchub_event_log_reads_total").await;
    let shipped_before = writer.metric("synchub_event_frames_shipped_total").await;
    for i in 0..10 {
        writer.write("alice", &p, "small.txt", &format!("edit {i}")).await;
    }
    let frames = ws.events(10).await;
    assert_eq!(seqs(&frames), (seq + 1..=seq + 10).collect::<Vec<_>>());
    assert_eq!(frames[9]["payload"]["content"], "edit 9");
    ws.assert_quiet(Duration::from_millis(300)).await;
    let reads = reader.metric("synchub_event_log_reads_total").await - reads_before;
    assert!(reads <= 2.0, "the reader's hub read the log {reads} times for 10 small writes made on the writer's");
    let shipped = writer.metric("synchub_event_frames_shipped_total").await - shipped_before;
    assert_eq!(shipped, 10.0, "the writer's hub shipped {shipped} of 10 events");
}

/// A write that only other hubs subscribe to reads its event back only when the event is
/// small enough to ship (`files::write_statement` with `OwnEvent::Shippable`): a large one
/// (a big file, a bulk import) is not read back just to be dropped, since the other hubs read
/// it from the log. A hub's own subscribers take any size.
#[tokio::test]
async fn a_write_reads_back_for_other_hubs_only_an_event_small_enough_to_ship() {
    let app = TestApp::spawn().await;
    let p = app.create_project("alice", "read back").await;
    let project: uuid::Uuid = p.parse().unwrap();
    let db = app.sql().await;
    let call = "synchub.upsert_project_file($1, $2, $3, NULL, NULL, 'alice', NULL)";
    let large = "z".repeat(MAX_SHIPPED_FRAME + 1);
    for (wanted, content, read_back) in [
        (OwnEvent::Shippable, "small", true),
        (OwnEvent::Shippable, large.as_str(), false),
        (OwnEvent::Any, large.as_str(), true),
        (OwnEvent::Skip, "small", false),
    ] {
        let statement = write_statement(call, wanted);
        let row = db.query_one(&statement, &[&project, &"f.txt", &content]).await.unwrap();
        assert!(row.get::<_, i64>("seq") > 0);
        let event = row.columns().iter().any(|c| c.name() == "event").then(|| row.get::<_, Option<String>>("event"));
        assert_eq!(event.flatten().is_some(), read_back, "{wanted:?} with {} bytes: {statement}", content.len());
    }
}

#[tokio::test]
async fn a_write_made_by_calling_the_sql_function_directly_reaches_subscribers() {
    let app = TestApp::spawn().await;
    let p = app.create_project("alice", "direct").await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    ws.join(&p, None).await;
    let db = app.sql().await;
    let started = Instant::now();
    db.query_one(
        "SELECT * FROM synchub.upsert_project_file($1::text::uuid, 'direct.sql', 'select 1', NULL, NULL, 'alice', NULL)",
        &[&p],
    )
    .await
    .unwrap();
    let event = ws.events(1).await;
    let elapsed = started.elapsed();
    assert_eq!(event[0]["payload"]["file_path"], "direct.sql");
    // The heads check runs every 500 ms: the event comes from it, not from a retry much later
    // (a generous bound for a loaded machine; not a performance figure).
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn a_slow_consumer_is_dropped_with_4008_while_a_fast_one_keeps_up() {
    let app = TestApp::spawn_with(|c| {
        fast_writes(c);
        c.limits.socket_queue_bytes = 256 * 1024;
        // The queue cap is under test here: the write deadline (which ends a blocked socket
        // without a close frame when not even that gets through) must not come first.
        c.limits.socket_write_timeout_ms = 120_000;
    })
    .await;
    let p = app.create_project("alice", "slow").await;
    let token = app.user_token("alice");
    let mut slow = app.ws(&token).await;
    slow.join(&p, None).await;
    let mut fast = app.ws(&token).await;
    fast.join(&p, None).await;
    // "Keeps up" is structural: the fast socket gets every event, in order, before the next
    // write, while the slow one fills its queue. Its latency is the bench's business (fanout).
    for i in 0..300 {
        // Each version shares nothing with the previous one of its path (a letter apart), so
        // every event carries its 64 KiB of content, never a small delta (CONTRACT 12).
        let content = char::from(b'a' + (i % 26) as u8).to_string().repeat(64 * 1024);
        app.write("alice", &p, &format!("big{}", i % 10), &format!("{i}{content}")).await;
        let event = fast.events(1).await;
        assert_eq!(event[0]["seq"], i + 1);
    }
    // The slow socket never read; it now finds the 4008 close after what was buffered.
    assert_eq!(slow.close_code(Duration::from_secs(20)).await, Some(4008));
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("synchub_slow_consumer_drops_total 1"), "{metrics}");
}

#[tokio::test]
async fn socket_auth_origin_and_channel_authorization() {
    let app = TestApp::spawn_with(|c| c.allowed_origins = vec!["https://editor.test".into()]).await;
    let p = app.create_project("alice", "auth").await;
    let alice = app.user_token("alice");

    // Foreign origin: refused at the upgrade.
    let refused = Ws::connect(app.addr, Some(&alice), Some("https://evil.test"), "").await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    // Allowed origin, first-frame auth (browsers).
    let mut browser = Ws::connect(app.addr, None, Some("https://editor.test"), "").await.unwrap();
    browser.send(json!({"type": "auth", "token": alice})).await;
    assert_eq!(browser.recv().await["type"], "authed");
    browser.join(&p, None).await;

    // A token in the query string is never read: the socket is unauthenticated.
    let mut query = Ws::connect(app.addr, None, None, &format!("?token={alice}&access_token={alice}")).await.unwrap();
    query.send(json!({"type": "join", "ref": "1", "channel": channel(&p), "since": null})).await;
    assert_eq!(query.close_code(Duration::from_secs(5)).await, Some(4001));
    // A bad auth frame followed at once by more frames still gets its close code (not a
    // connection reset because frames were left unread).
    for _ in 0..5 {
        let mut eager = Ws::connect(app.addr, None, None, "").await.unwrap();
        eager.send(json!({"type": "auth", "token": "garbage"})).await;
        // The next frames arrive once the hub has read the auth frame and refused it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        eager.send(json!({"type": "join", "ref": "1", "channel": channel(&p), "since": null})).await;
        eager.send(json!({"type": "ping", "ref": "2"})).await;
        assert_eq!(eager.close_code(Duration::from_secs(5)).await, Some(4001));
    }
    // A bad header token is refused before the upgrade.
    match Ws::connect(app.addr, Some("garbage"), None, "").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }

    // An outsider cannot join and learns nothing (same answer as a project that does not exist).
    let mut bob = app.ws(&app.user_token("bob")).await;
    bob.send(json!({"type": "join", "ref": "x", "channel": channel(&p), "since": 0})).await;
    let refusal = bob.recv().await;
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["error"]["code"], "not_found");
    bob.send(json!({"type": "join", "ref": "y", "channel": channel(&uuid::Uuid::new_v4().to_string()), "since": 0}))
        .await;
    assert_eq!(bob.recv().await["error"], refusal["error"]);
    // ping → pong
    bob.send(json!({"type": "ping", "ref": "p1"})).await;
    assert_eq!(bob.recv().await, json!({"type": "pong", "ref": "p1"}));

    // A viewer may join; once removed, the events stop.
    app.put(&format!("/v1/projects/{p}/members/bob"), &alice, json!({"role": "viewer"})).await;
    bob.join(&p, None).await;
    app.write("alice", &p, "seen.txt", "1").await;
    assert_eq!(bob.events(1).await[0]["payload"]["file_path"], "seen.txt");
    app.delete(&format!("/v1/projects/{p}/members/bob"), &alice).await;
    let notice = bob.recv().await;
    assert_eq!((notice["type"].as_str(), notice["error"]["code"].as_str()), (Some("error"), Some("not_found")));
    app.write("alice", &p, "unseen.txt", "2").await;
    bob.assert_quiet(Duration::from_millis(700)).await;
}

#[tokio::test]
async fn token_expiry_closes_with_4009_unless_refreshed_in_place() {
    let app = TestApp::spawn().await;
    let short = |secs: i64| {
        synchub::auth::users::UserVerifier::new(Some(crate::helpers::JWT_SECRET), None, &[], None, None)
            .unwrap()
            .mint("alice", secs)
            .unwrap()
    };
    let mut expiring = app.ws(&short(2)).await;
    let mut refreshed = app.ws(&short(2)).await;
    refreshed.send(json!({"type": "auth", "token": short(3600)})).await;
    assert_eq!(refreshed.recv().await["type"], "authed");
    assert_eq!(expiring.close_code(Duration::from_secs(6)).await, Some(4009));
    refreshed.send(json!({"type": "ping", "ref": "still here"})).await;
    assert_eq!(refreshed.recv().await["type"], "pong");
    // Another user's token cannot take over a socket.
    refreshed.send(json!({"type": "auth", "token": app.user_token("mallory")})).await;
    assert_eq!(refreshed.close_code(Duration::from_secs(5)).await, Some(4003));
}

#[tokio::test]
async fn writes_over_the_socket_are_acked_and_published() {
    let app = TestApp::spawn().await;
    let p = app.create_project("alice", "socket writes").await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    ws.join(&p, None).await;
    ws.send(json!({"type": "upsert", "ref": "7", "channel": channel(&p), "path": "a.ts", "content": "x", "expected_version": 0}))
        .await;
    let mut frames = [ws.recv().await, ws.recv().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
    assert_eq!(frames[0]["type"], "ack");
    assert_eq!((frames[0]["ref"].as_str(), frames[0]["ok"].as_bool()), (Some("7"), Some(true)));
    assert_eq!((frames[0]["seq"].as_i64(), frames[0]["version"].as_i64()), (Some(1), Some(1)));
    assert_eq!(frames[1]["event"], "file:update");
    // A conflict is a failed ack with the contract's error object; nothing is published.
    ws.send(json!({"type": "upsert", "ref": "8", "channel": channel(&p), "path": "a.ts", "content": "y", "expected_version": 0}))
        .await;
    let ack = ws.recv().await;
    assert_eq!((ack["ok"].as_bool(), ack["error"]["code"].as_str()), (Some(false), Some("version_conflict")));
    ws.send(json!({"type": "bulk", "ref": "9", "channel": channel(&p), "upserts": [{"path": "b.ts", "content": "b"}], "deletes": [{"path": "a.ts"}]}))
        .await;
    let mut frames = [ws.recv().await, ws.recv().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
    assert_eq!(frames[0]["seq"], 2);
    assert_eq!(frames[1]["event"], "bulk:apply");
    assert_eq!(frames[1]["payload"]["deletes"][0]["file_path"], "a.ts");
    ws.send(json!({"type": "delete", "ref": "10", "channel": channel(&p), "path": "b.ts"})).await;
    let mut frames = [ws.recv().await, ws.recv().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
    assert_eq!(frames[1]["event"], "file:delete");
    // Garbage frames get an error and the socket stays open.
    ws.send(json!({"type": "nonsense"})).await;
    assert_eq!(ws.recv().await["error"]["code"], "invalid_request");
    let (status, _) = app.get(&format!("/v1/projects/{p}/files"), &app.user_token("alice")).await;
    assert_eq!(status, StatusCode::OK);
}

/// The hub reads client frames through a small read buffer (a few hundred bytes per socket,
/// for idle memory): frames thousands of times larger arrive in many reads and must come out
/// whole: an upsert just under the 2 MiB file limit and a bulk of 8 files of 256 KiB.
#[tokio::test]
async fn frames_far_larger_than_the_read_buffer_arrive_whole() {
    let app = TestApp::spawn().await;
    let p = app.create_project("alice", "big frames").await;
    let token = app.user_token("alice");
    let mut ws = app.ws(&token).await;
    ws.join(&p, None).await;
    let big: String = (0..2 * 1024 * 1024 - 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    ws.send(json!({"type": "upsert", "ref": "1", "channel": channel(&p), "path": "big.txt", "content": big})).await;
    let mut frames = [ws.recv().await, ws.recv().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
    assert_eq!(frames[0]["ok"], true, "{}", frames[0]);
    assert_eq!(frames[1]["payload"]["content"].as_str().map(str::len), Some(big.len()));
    let upserts: Vec<Value> = (0..8)
        .map(|i| json!({"path": format!("part{i}.txt"), "content": big[i * 1000..i * 1000 + 256 * 1024]}))
        .collect();
    ws.send(json!({"type": "bulk", "ref": "2", "channel": channel(&p), "upserts": upserts})).await;
    let mut frames = [ws.recv().await, ws.recv().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
    assert_eq!(frames[0]["ok"], true, "{}", frames[0]);
    assert_eq!(frames[1]["payload"]["files"].as_array().map(Vec::len), Some(8));
    let (status, file) = app.get(&format!("/v1/projects/{p}/files/big.txt"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(file["content"].as_str(), Some(big.as_str()));
    let (_, part) = app.get(&format!("/v1/projects/{p}/files/part7.txt"), &token).await;
    assert_eq!(part["content"].as_str(), Some(&big[7000..7000 + 256 * 1024]));
}

#[tokio::test]
async fn socket_writes_share_the_rate_limit_and_its_metric() {
    let app = TestApp::spawn_with(|c| {
        c.limits.write_rate = 0.01;
        c.limits.write_burst = 2.0;
    })
    .await;
    let p = app.create_project("alice", "limited").await; // takes one token
    let mut ws = app.ws(&app.user_token("alice")).await;
    ws.send(json!({"type": "upsert", "ref": "1", "channel": channel(&p), "path": "a.ts", "content": "x"})).await;
    assert_eq!(ws.recv().await["ok"], true);
    ws.send(json!({"type": "upsert", "ref": "2", "channel": channel(&p), "path": "b.ts", "content": "x"})).await;
    let refused = ws.recv().await;
    assert_eq!((refused["ok"].as_bool(), refused["error"]["code"].as_str()), (Some(false), Some("rate_limited")));
    let (status, _) =
        app.put(&format!("/v1/projects/{p}/files/c.ts"), &app.user_token("alice"), json!({"content": "x"})).await;
    assert_eq!(status.as_u16(), 429);
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("synchub_rate_limited_total 2\n"), "{metrics}");
}
