//! The orchestrator API end to end: sessions, snapshots (consistency of the cursor under
//! concurrent writes), container tokens (read-only, one project, revocable), refresh,
//! progress, and revocation closing sockets with 4010 on every hub.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, Ws, assert_error, channel, test_config};

async fn app_with_storage() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let app = TestApp::spawn_with(move |c| {
        c.storage_dir = Some(path);
        c.limits.write_rate = 100_000.0;
        c.limits.write_burst = 100_000.0;
    })
    .await;
    (app, dir)
}

/// Downloads a snapshot and reads it with the agent's reader: path → content.
async fn download(app: &TestApp, url: &str) -> (snapshot_builder::Manifest, BTreeMap<String, String>) {
    let bytes = app.http.get(url).send().await.unwrap().error_for_status().unwrap().bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("tree");
    std::fs::create_dir(&target).unwrap();
    let manifest =
        snapshot_builder::extract(Cursor::new(bytes.to_vec()), &target, &snapshot_builder::ReadLimits::default())
            .unwrap();
    let mut files = BTreeMap::new();
    for file in &manifest.files {
        files.insert(file.path.clone(), std::fs::read_to_string(target.join(&file.path)).unwrap());
    }
    (manifest, files)
}

/// Applies event frames to a path → content map.
fn replay(files: &mut BTreeMap<String, String>, events: &[Value]) {
    for event in events {
        let payload = &event["payload"];
        match event["event"].as_str().unwrap() {
            "file:update" => {
                files
                    .insert(payload["file_path"].as_str().unwrap().into(), payload["content"].as_str().unwrap().into());
            }
            "file:delete" => {
                files.remove(payload["file_path"].as_str().unwrap());
            }
            "bulk:apply" => {
                for file in payload["files"].as_array().unwrap() {
                    files.insert(file["file_path"].as_str().unwrap().into(), file["content"].as_str().unwrap().into());
                }
                for delete in payload["deletes"].as_array().unwrap() {
                    files.remove(delete["file_path"].as_str().unwrap());
                }
            }
            other => panic!("unexpected event {other}"),
        }
    }
}

async fn current_files(app: &TestApp, project: &str) -> BTreeMap<String, String> {
    let (_, list) =
        app.get(&format!("/v1/projects/{project}/files?include_content=true"), &app.user_token("alice")).await;
    list["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["content"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn a_session_gives_a_container_everything_in_one_call() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "preview").await;
    app.write("alice", &p, "index.html", "<h1>hi</h1>").await;
    app.write("alice", &p, "src/app.ts", "export {}").await;
    let service = app.service_token();
    let (status, session) = app.post(&format!("/v1/projects/{p}/sessions"), &service, json!({"ttl_seconds": 60})).await;
    assert_eq!(status.as_u16(), 201, "{session}");
    let env = &session["env"];
    assert_eq!(env["SYNCHUB_URL"], app.base);
    assert_eq!(env["PROJECT_ID"], p.as_str());
    assert_eq!(env["SESSION_ID"], session["session_id"]);
    assert_eq!(env["SNAPSHOT_URL"], session["snapshot"]["url"]);
    assert_eq!(env["REALTIME_TOKEN"], session["token"]);
    assert_eq!(session["snapshot"]["cursor"], 2);
    assert_eq!(session["snapshot"]["file_count"], 2);
    let (manifest, files) = download(&app, session["snapshot"]["url"].as_str().unwrap()).await;
    assert_eq!(manifest.cursor, 2);
    assert_eq!(manifest.project_id, p);
    assert_eq!(files, current_files(&app, &p).await);

    // Nothing changed: the same snapshot, reused.
    let (status, again) = app.post(&format!("/v1/projects/{p}/snapshots"), &service, json!({})).await;
    assert_eq!(status.as_u16(), 201);
    assert_eq!((again["reused"].as_bool(), &again["snapshot_id"]), (Some(true), &session["snapshot"]["snapshot_id"]));
    app.write("alice", &p, "src/app.ts", "export const x = 1").await;
    let (_, fresh) = app.post(&format!("/v1/projects/{p}/snapshots"), &service, json!({})).await;
    assert_eq!((fresh["reused"].as_bool(), fresh["cursor"].as_i64()), (Some(false), Some(3)));

    // The container token reads its project and the latest snapshot.
    let token = session["token"].as_str().unwrap();
    let (status, latest) = app.get(&format!("/v1/projects/{p}/snapshots/latest"), token).await;
    assert_eq!(status.as_u16(), 200, "{latest}");
    assert_eq!(latest["cursor"], 3);
    let (status, _) = app.get(&format!("/v1/projects/{p}/files/index.html"), token).await;
    assert_eq!(status.as_u16(), 200);
}

#[tokio::test]
async fn snapshot_cursor_is_consistent_with_its_files_under_concurrent_writes() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "consistency").await;
    let token = app.user_token("alice");
    let writer = {
        let (http, base, p, token) = (app.http.clone(), app.base.clone(), p.clone(), token.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let path = format!("f{}.txt", i % 17);
                let request = if i % 7 == 3 {
                    http.delete(format!("{base}/v1/projects/{p}/files/{path}")).bearer_auth(&token)
                } else if i % 11 == 5 {
                    http.post(format!("{base}/v1/projects/{p}/files:bulk")).bearer_auth(&token).json(&json!({
                        "upserts": [{"path": format!("bulk/{i}.txt"), "content": i.to_string()}],
                        "deletes": []}))
                } else {
                    http.put(format!("{base}/v1/projects/{p}/files/{path}"))
                        .bearer_auth(&token)
                        .json(&json!({"content": format!("v{i}")}))
                };
                let _ = request.send().await.unwrap();
            }
        })
    };
    let service = app.service_token();
    let mut snapshots = Vec::new();
    while !writer.is_finished() {
        let (status, snapshot) = app.post(&format!("/v1/projects/{p}/snapshots"), &service, json!({})).await;
        assert_eq!(status.as_u16(), 201, "{snapshot}");
        snapshots.push(snapshot);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    assert!(snapshots.len() >= 3, "snapshots taken mid-stream: {}", snapshots.len());
    let final_files = current_files(&app, &p).await;
    for snapshot in snapshots {
        let (manifest, mut files) = download(&app, snapshot["url"].as_str().unwrap()).await;
        assert_eq!(manifest.cursor, snapshot["cursor"].as_i64().unwrap());
        let (_, page) = app.get(&format!("/v1/projects/{p}/events?since={}&limit=1000", manifest.cursor), &token).await;
        replay(&mut files, page["events"].as_array().unwrap());
        assert_eq!(files, final_files, "snapshot at cursor {} + events after it ≠ current files", manifest.cursor);
    }
}

#[tokio::test]
async fn container_tokens_are_read_only_scoped_and_revocable() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "scoped").await;
    let other = app.create_project("alice", "other").await;
    app.write("alice", &p, "a.txt", "a").await;
    app.write("alice", &other, "secret.txt", "s").await;
    let service = app.service_token();
    let (_, session) = app.post(&format!("/v1/projects/{p}/sessions"), &service, json!({})).await;
    let token = session["token"].as_str().unwrap().to_string();
    let session_id = session["session_id"].as_str().unwrap().to_string();

    // Read-only.
    assert_error(
        &app.put(&format!("/v1/projects/{p}/files/a.txt"), &token, json!({"content": "x"})).await,
        403,
        "forbidden",
    );
    assert_error(&app.delete(&format!("/v1/projects/{p}/files/a.txt"), &token).await, 403, "forbidden");
    assert_error(&app.post(&format!("/v1/projects/{p}/snapshots"), &token, json!({})).await, 403, "forbidden");
    assert_error(&app.post(&format!("/v1/projects/{p}/sessions"), &token, json!({})).await, 403, "forbidden");
    // One project: the other one does not exist for it.
    assert_error(&app.get(&format!("/v1/projects/{other}/files/secret.txt"), &token).await, 404, "not_found");
    assert_error(&app.get(&format!("/v1/projects/{other}/snapshots/latest"), &token).await, 404, "not_found");
    let mut ws = app.ws(&token).await;
    ws.send(json!({"type": "join", "ref": "1", "channel": channel(&other), "since": 0})).await;
    assert_eq!(ws.recv().await["error"]["code"], "not_found");
    // Users cannot call the orchestrator routes.
    assert_error(
        &app.post(&format!("/v1/projects/{p}/sessions"), &app.user_token("alice"), json!({})).await,
        403,
        "forbidden",
    );

    // Refresh works until revocation.
    let (status, refreshed) = app.call(Method::POST, "/v1/tokens/refresh", Some(&token), None).await;
    assert_eq!(status.as_u16(), 200, "{refreshed}");
    let (status, minted) = app
        .post(&format!("/v1/projects/{p}/tokens"), &service, json!({"session_id": session_id, "ttl_seconds": 120}))
        .await;
    assert_eq!(status.as_u16(), 200, "{minted}");
    assert_eq!(minted["channel"], channel(&p));
    let (status, _) = app.delete(&format!("/v1/sessions/{session_id}"), &service).await;
    assert_eq!(status.as_u16(), 200);
    for t in [&token, refreshed["token"].as_str().unwrap(), minted["token"].as_str().unwrap()] {
        assert_error(&app.call(Method::POST, "/v1/tokens/refresh", Some(t), None).await, 401, "unauthenticated");
        assert_error(&app.get(&format!("/v1/projects/{p}/files/a.txt"), t).await, 401, "unauthenticated");
    }
    assert!(Ws::connect(app.addr, Some(&token), None, "").await.is_err(), "a revoked token cannot open a socket");
}

#[tokio::test]
async fn revocation_closes_sockets_with_4010_on_every_hub() {
    let (first, _dir) = app_with_storage().await;
    let mut config = test_config(first.database_url.clone());
    config.storage_dir = Some(_dir.path().to_path_buf());
    let second = TestApp::spawn_on(config).await;
    let p = first.create_project("alice", "revoke").await;
    let (_, session) = first.post(&format!("/v1/projects/{p}/sessions"), &first.service_token(), json!({})).await;
    let token = session["token"].as_str().unwrap();
    let session_id = session["session_id"].as_str().unwrap();
    let mut on_first = first.ws(token).await;
    on_first.join(&p, None).await;
    let mut on_second = second.ws(token).await;
    on_second.join(&p, None).await;
    let started = Instant::now();
    first.delete(&format!("/v1/sessions/{session_id}"), &first.service_token()).await;
    assert_eq!(on_first.close_code(Duration::from_secs(3)).await, Some(4010));
    assert_eq!(on_second.close_code(Duration::from_secs(3)).await, Some(4010));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "sockets closed after {elapsed:?}");
}

#[tokio::test]
async fn session_status_tells_whether_the_preview_caught_up() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "progress").await;
    app.write("alice", &p, "a.txt", "1").await;
    let (_, session) = app.post(&format!("/v1/projects/{p}/sessions"), &app.service_token(), json!({})).await;
    let token = session["token"].as_str().unwrap();
    let session_id = session["session_id"].as_str().unwrap();
    let path = format!("/v1/sessions/{session_id}");
    let (_, status) = app.get(&path, &app.service_token()).await;
    assert_eq!((status["connected"].as_bool(), status["applied_seq"].as_i64()), (Some(false), Some(0)));
    assert_eq!(status["project_last_seq"], 1);

    let mut agent = app.ws(token).await;
    agent.join(&p, Some(1)).await;
    app.write("alice", &p, "b.txt", "2").await;
    let event = agent.events(1).await;
    agent.send(json!({"type": "applied", "channel": channel(&p), "seq": event[0]["seq"]})).await;
    // Members of the project may ask too; outsiders get 404.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, status) = app.get(&path, &app.user_token("alice")).await;
        if status["applied_seq"] == 2 {
            assert_eq!((status["connected"].as_bool(), status["project_last_seq"].as_i64()), (Some(true), Some(2)));
            break;
        }
        assert!(Instant::now() < deadline, "progress not recorded: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_error(&app.get(&path, &app.user_token("bob")).await, 404, "not_found");
    drop(agent);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, status) = app.get(&path, &app.service_token()).await;
        if status["connected"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "still connected: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_snapshot_lost_from_storage_is_rebuilt_byte_for_byte() {
    let (app, dir) = app_with_storage().await;
    let service = app.service_token();
    let p = app.create_project("alice", "rebuild").await;
    for i in 0..20 {
        app.write("alice", &p, &format!("src/f{i:02}.ts"), &format!("export const v = {i};\n")).await;
    }
    let (_, first) = app.post(&format!("/v1/projects/{p}/snapshots"), &service, json!({})).await;
    let url = first["url"].as_str().unwrap();
    let original = app.http.get(url).send().await.unwrap().bytes().await.unwrap();

    let key = format!("project-snapshots/{p}/{}.zip", first["snapshot_id"].as_str().unwrap());
    let stored = walk(dir.path()).into_iter().find(|f| f.to_string_lossy().ends_with(&key)).expect("stored object");
    std::fs::remove_file(stored).unwrap();

    let (_, rebuilt) = app.post(&format!("/v1/projects/{p}/snapshots"), &service, json!({})).await;
    assert_eq!((rebuilt["reused"].as_bool(), &rebuilt["snapshot_id"]), (Some(false), &first["snapshot_id"]));
    assert_eq!(rebuilt["sha256"], first["sha256"]);
    let again = app.http.get(rebuilt["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert!(original == again, "the rebuilt archive differs from the original");

    // snapshots/latest does not hand out a URL to a lost object either.
    let stored = walk(dir.path()).into_iter().find(|f| f.to_string_lossy().ends_with(&key)).expect("stored object");
    std::fs::remove_file(stored).unwrap();
    let (status, latest) = app.get(&format!("/v1/projects/{p}/snapshots/latest"), &service).await;
    assert_eq!(status.as_u16(), 200, "{latest}");
    let fetched = app.http.get(latest["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(fetched.status().as_u16(), 200);
    assert!(original == fetched.bytes().await.unwrap(), "latest served a different archive");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

#[tokio::test]
async fn concurrent_snapshot_requests_for_one_project_build_once() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "busy").await;
    for i in 0..50 {
        app.write("alice", &p, &format!("src/{i}.ts"), &format!("export const n = {i}")).await;
    }
    let service = app.service_token();
    let route = format!("/v1/projects/{p}/snapshots");
    let requests = (0..8).map(|_| app.post(&route, &service, json!({})));
    let answers = futures_util::future::join_all(requests).await;
    let mut built = 0;
    for (status, answer) in &answers {
        assert_eq!(status.as_u16(), 201, "{answer}");
        assert_eq!(answer["snapshot_id"], answers[0].1["snapshot_id"], "one snapshot for one cursor");
        assert_eq!(answer["cursor"], 50);
        if answer["reused"] == false {
            built += 1;
        }
    }
    assert_eq!(built, 1, "{answers:?}");
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("synchub_snapshot_build_seconds_count 1\n"), "{metrics}");
    assert!(metrics.contains("synchub_snapshot_reused_total 7\n"), "{metrics}");
}

#[tokio::test]
async fn deleting_the_project_ends_its_sessions() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "doomed").await;
    app.write("alice", &p, "a.txt", "1").await;
    let (_, session) = app.post(&format!("/v1/projects/{p}/sessions"), &app.service_token(), json!({})).await;
    let token = session["token"].as_str().unwrap();
    let mut agent = app.ws(token).await;
    agent.join(&p, Some(1)).await;
    app.delete(&format!("/v1/projects/{p}"), &app.user_token("alice")).await;
    let deleted = agent.recv().await;
    assert_eq!(deleted["event"], "project:deleted", "{deleted}");
    assert_eq!(agent.close_code(Duration::from_secs(3)).await, Some(4010));
    let (status, _) = app.get(&format!("/v1/projects/{p}/files/a.txt"), token).await;
    assert_eq!(status.as_u16(), 401);
    // Nor does it get new tokens: they would answer 401 everywhere.
    let (status, body) = app
        .post(&format!("/v1/projects/{p}/tokens"), &app.service_token(), json!({"session_id": session["session_id"]}))
        .await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
}

#[tokio::test]
async fn a_session_without_snapshot_storage_leaves_no_session_behind() {
    let app = TestApp::spawn().await; // no storage configured
    let p = app.create_project("alice", "no storage").await;
    let (status, body) = app.post(&format!("/v1/projects/{p}/sessions"), &app.service_token(), json!({})).await;
    assert_eq!(status.as_u16(), 503, "{body}");
    // As the database owner: the runtime role may not read the sessions table itself.
    let (db, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let project = uuid::Uuid::parse_str(&p).unwrap();
    let sessions: i64 =
        db.query_one("SELECT count(*) FROM synchub.sessions WHERE project_id = $1", &[&project]).await.unwrap().get(0);
    assert_eq!(sessions, 0);
}

#[tokio::test]
async fn minted_tokens_default_to_the_sessions_lifetime() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "ttl").await;
    let service = app.service_token();
    let (_, session) = app.post(&format!("/v1/projects/{p}/sessions"), &service, json!({"ttl_seconds": 60})).await;
    let (status, minted) =
        app.post(&format!("/v1/projects/{p}/tokens"), &service, json!({"session_id": session["session_id"]})).await;
    assert_eq!(status.as_u16(), 200, "{minted}");
    let expires = chrono::DateTime::parse_from_rfc3339(minted["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((50..=61).contains(&left), "a 60 s session minted a token for {left} s");
}
