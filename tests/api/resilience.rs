//! Breaking things on purpose: the hub killed with SIGKILL mid-stream, PostgreSQL
//! restarted under load, history trimmed under a client.

use std::time::Duration;

use serde_json::json;
use synchub::embedded_pg::{Durability, EmbeddedPostgres};

use crate::helpers::{TestApp, Ws, channel, fresh_database, test_config, user_token};
use crate::hub_process::HubProcess;

/// Writes `count` files through `base`; returns the seqs of the acknowledged writes.
async fn write_stream(http: &reqwest::Client, base: &str, project: &str, from: usize, count: usize) -> Vec<i64> {
    let token = user_token("alice");
    let mut acked = Vec::new();
    for i in from..from + count {
        let response = http
            .put(format!("{base}/v1/projects/{project}/files/f{i}.txt"))
            .bearer_auth(&token)
            .json(&json!({"content": i.to_string()}))
            .send()
            .await;
        if let Ok(response) = response
            && response.status().is_success()
        {
            let body: serde_json::Value = response.json().await.unwrap();
            acked.push(body["seq"].as_i64().unwrap());
        }
    }
    acked
}

/// Joins with `since = 0` and reads until `last`; asserts seq 1..=last, contiguous.
async fn assert_log_complete(addr: std::net::SocketAddr, project: &str, last: i64) {
    let mut ws = Ws::connect(addr, Some(&user_token("alice")), None, "").await.unwrap();
    ws.join(project, Some(0)).await;
    let events = ws.events(last as usize).await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
}

#[tokio::test]
async fn sigkill_of_the_hub_mid_stream_loses_no_acknowledged_write() {
    let database_url = fresh_database().await;
    let http = reqwest::Client::new();
    let hub = HubProcess::start(&database_url).await;
    let base = format!("http://{}", hub.addr);
    let (_, project) = {
        let r = http
            .post(format!("{base}/v1/projects"))
            .bearer_auth(user_token("alice"))
            .json(&json!({"name": "kill"}))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    let project = project["id"].as_str().unwrap().to_string();
    // Kill the hub while a writer is mid-stream.
    let writer = {
        let (http, base, project) = (http.clone(), base.clone(), project.clone());
        tokio::spawn(async move { write_stream(&http, &base, &project, 0, 400).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(hub); // SIGKILL
    let mut acked = writer.await.unwrap();
    assert!(!acked.is_empty() && acked.len() < 400, "the kill landed mid-stream ({} acked)", acked.len());
    let hub = HubProcess::start(&database_url).await;
    acked.extend(write_stream(&http, &format!("http://{}", hub.addr), &project, 1000, 20).await);
    let last = *acked.iter().max().unwrap();
    // Every acknowledged write is in the log, and the log has no gap.
    assert_log_complete(hub.addr, &project, last).await;
}

#[tokio::test]
async fn postgres_restarted_under_load_the_hub_recovers_without_restart() {
    let root = std::env::temp_dir().join(format!(
        "synchub-test-{}-restart-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let pg = tokio::task::spawn_blocking({
        let root = root.clone();
        move || EmbeddedPostgres::start(&root, Durability::Throwaway).unwrap()
    })
    .await
    .unwrap();
    let mut config = test_config(pg.url("postgres"));
    config.limits.write_rate = 100_000.0;
    config.limits.write_burst = 100_000.0;
    let app = TestApp::spawn_on(config).await;
    let project = app.create_project("alice", "restart").await;
    let mut subscriber = app.ws(&app.user_token("alice")).await;
    subscriber.join(&project, Some(0)).await;

    let writer = {
        let (http, base, project) = (app.http.clone(), app.base.clone(), project.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for round in 0..40 {
                acked.extend(write_stream(&http, &base, &project, round * 10, 10).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        std::thread::sleep(Duration::from_millis(300));
        pg.restart(Durability::Throwaway).unwrap();
        pg
    })
    .await
    .unwrap();
    let acked = writer.await.unwrap();
    assert!(acked.len() > 100, "writes resumed after the restart ({} acked)", acked.len());
    let last = *acked.iter().max().unwrap();
    // The subscriber resumes with since (its socket may have been closed while the
    // database was away) and ends with every event, contiguous.
    let mut received = 0i64;
    while received < last {
        match subscriber.next(Duration::from_secs(10)).await {
            Ok(frame) if frame["type"] == "event" => {
                assert_eq!(frame["seq"].as_i64().unwrap(), received + 1);
                received += 1;
            }
            Ok(_) => {}
            Err(_) => {
                subscriber = app.ws(&app.user_token("alice")).await;
                subscriber.join(&project, Some(received)).await;
            }
        }
    }
    drop(app);
    tokio::task::spawn_blocking(move || pg.stop()).await.unwrap();
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn trimmed_history_answers_resync_required() {
    let app = TestApp::spawn().await;
    let p = app.create_project("alice", "trim").await;
    for i in 0..5 {
        app.write("alice", &p, &format!("f{i}"), "x").await;
    }
    let owner = app.sql().await;
    owner.batch_execute("RESET ROLE").await.unwrap();
    owner
        .execute("UPDATE synchub.events SET created_at = now() - interval '2 days' WHERE seq <= 3", &[])
        .await
        .unwrap();
    let pruned: i64 = owner.query_one("SELECT synchub.prune_events('1 day')", &[]).await.unwrap().get(0);
    assert_eq!(pruned, 3);
    let mut ws = app.ws(&app.user_token("alice")).await;
    ws.send(json!({"type": "join", "ref": "1", "channel": channel(&p), "since": 1})).await;
    let frame = ws.recv().await;
    assert_eq!(frame, json!({"type": "resync_required", "channel": channel(&p), "oldest_seq": 4}));
    // Resuming from the edge of retention still works.
    assert_eq!(ws.join(&p, Some(3)).await, 5);
    assert_eq!(crate::helpers::seqs(&ws.events(2).await), vec![4, 5]);
}
