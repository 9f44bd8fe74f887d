//! File history (CONTRACT section 14): the versions endpoints, restore, compaction,
//! retention (two hubs), and the quota that counts history.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use synchub::config::HistoryConfig;

use crate::helpers::{TestApp, assert_error, channel, test_config};

/// A hub whose own history task stays idle (one pass at start, then an hour's sleep), so
/// a test runs the passes itself.
async fn quiet_hub() -> TestApp {
    TestApp::spawn_with(|c| c.history.interval_ms = 3_600_000).await
}

/// The database as its owner (no runtime role): to age versions and look at storage.
async fn admin(app: &TestApp) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Runs history passes until one finds nothing to do (bounded).
async fn settle(app: &TestApp, config: &HistoryConfig) {
    for _ in 0..50 {
        let (outcome, more) = synchub::history::pass(&app.state.db, config, &app.state.metrics.history).await.unwrap();
        if !more && outcome == Default::default() {
            return;
        }
    }
    panic!("history work did not settle");
}

fn files_url(project: &str, path: &str) -> String {
    format!("/v1/projects/{project}/files/{path}")
}

/// Deterministic text of about `size` bytes: numbered lines.
fn text(size: usize, seed: u64) -> String {
    let mut out = String::with_capacity(size + 64);
    let mut i = seed;
    while out.len() < size {
        out.push_str(&format!("line {i}: const value_{i} = {};\n", i.wrapping_mul(2_654_435_761) % 1_000_003));
        i += 1;
    }
    out
}

async fn usage(admin: &tokio_postgres::Client, user: &str) -> i64 {
    admin.query_one("SELECT stored_bytes FROM synchub.user_usage WHERE user_id = $1", &[&user]).await.unwrap().get(0)
}

#[tokio::test]
async fn versions_are_listed_read_and_restored_as_a_normal_update() {
    let app = quiet_hub().await;
    let project = app.create_project("alice", "p").await;
    let token = app.user_token("alice");
    for content in ["one", "two", "three"] {
        app.write("alice", &project, "src/a.ts", content).await;
    }
    let (status, _) = app.delete(&files_url(&project, "src/a.ts"), &token).await;
    assert_eq!(status, StatusCode::OK);

    let (status, list) = app.get(&format!("{}/versions", files_url(&project, "src/a.ts")), &token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let versions: Vec<i64> =
        list["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, [4, 3, 2, 1], "newest first");
    assert_eq!(list["next"], Value::Null);
    assert_eq!(list["versions"][0]["deleted"], true);
    assert_eq!(list["versions"][1]["deleted"], false);
    assert_eq!(list["versions"][1]["binary"], false);
    assert_eq!(list["versions"][1]["size"], 5);
    assert_eq!(list["versions"][1]["actor"], "alice");
    assert!(list["versions"][1]["created_at"].is_string());
    // Paging.
    let (_, page) = app.get(&format!("{}/versions?limit=2", files_url(&project, "src/a.ts")), &token).await;
    assert_eq!(page["versions"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], 3);
    let (_, rest) = app.get(&format!("{}/versions?before=3&limit=2", files_url(&project, "src/a.ts")), &token).await;
    let rest: Vec<i64> = rest["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(rest, [2, 1]);

    let (status, old) = app.get(&format!("{}?version=2", files_url(&project, "src/a.ts")), &token).await;
    assert_eq!(status, StatusCode::OK, "{old}");
    assert_eq!(old["content"], "two");
    assert_eq!(old["version"], 2);
    assert_eq!(old["path"], "src/a.ts");

    // Restoring a deleted file brings it back as a new version, one file:update.
    let (status, restored) = app
        .post(&format!("/v1/projects/{project}/files:restore"), &token, json!({"path": "src/a.ts", "version": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["version"], 5);
    let (_, current) = app.get(&files_url(&project, "src/a.ts"), &token).await;
    assert_eq!(current["content"], "two");
    let seq = restored["seq"].as_i64().unwrap();
    let (_, events) = app.get(&format!("/v1/projects/{project}/events?since={}", seq - 1), &token).await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
    assert_eq!(events["events"][0]["event"], "file:update");
    assert_eq!(events["events"][0]["payload"]["content"], "two");
    assert_eq!(events["events"][0]["payload"]["version"], 5);
}

#[tokio::test]
async fn history_endpoints_refuse_bad_input_and_keep_roles() {
    let app = quiet_hub().await;
    let project = app.create_project("alice", "p").await;
    let token = app.user_token("alice");
    app.write("alice", &project, "a.txt", "a1").await;
    app.write("alice", &project, "a.txt", "a2").await;
    app.write("alice", &project, "b.txt", "b1").await;
    let (status, _) = app.delete(&files_url(&project, "b.txt"), &token).await;
    assert_eq!(status, StatusCode::OK);
    let restore = format!("/v1/projects/{project}/files:restore");

    // Unknown version, a version only another path has, a deletion: 404.
    assert_error(&app.get(&format!("{}?version=9", files_url(&project, "a.txt")), &token).await, 404, "not_found");
    assert_error(&app.get(&format!("{}?version=2", files_url(&project, "b.txt")), &token).await, 404, "not_found");
    assert_error(&app.post(&restore, &token, json!({"path": "b.txt", "version": 3})).await, 404, "not_found");
    assert_error(&app.get(&format!("{}/versions", files_url(&project, "nope.txt")), &token).await, 404, "not_found");
    // A deletion cannot be restored as content.
    assert_error(&app.post(&restore, &token, json!({"path": "b.txt", "version": 2})).await, 400, "invalid_request");
    // Bad numbers: 400.
    for query in ["version=x", "version=-1", "version=1.5", "version=9007199254740992"] {
        assert_error(
            &app.get(&format!("{}?{query}", files_url(&project, "a.txt")), &token).await,
            400,
            "invalid_request",
        );
    }
    for query in ["before=x", "limit=-1"] {
        let answer = app.get(&format!("{}/versions?{query}", files_url(&project, "a.txt")), &token).await;
        assert_error(&answer, 400, "invalid_request");
    }
    for body in [
        json!({"path": "a.txt", "version": "1"}),
        json!({"path": "a.txt", "version": -1}),
        json!({"path": "a.txt"}),
        json!({"path": "a.txt", "version": 1, "expected_version": 1.5}),
    ] {
        assert_error(&app.post(&restore, &token, body).await, 400, "invalid_request");
    }
    assert_error(&app.post(&restore, &token, json!({"path": "../a", "version": 1})).await, 400, "invalid_path");

    // Roles: a viewer reads history but cannot restore; a stranger sees nothing.
    let (status, _) = app.put(&format!("/v1/projects/{project}/members/vera"), &token, json!({"role": "viewer"})).await;
    assert!(status.is_success());
    let vera = app.user_token("vera");
    let (status, _) = app.get(&format!("{}/versions", files_url(&project, "a.txt")), &vera).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get(&format!("{}?version=1", files_url(&project, "a.txt")), &vera).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&app.post(&restore, &vera, json!({"path": "a.txt", "version": 1})).await, 403, "forbidden");
    let mallory = app.user_token("mallory");
    assert_error(&app.get(&format!("{}/versions", files_url(&project, "a.txt")), &mallory).await, 404, "not_found");
    assert_error(&app.get(&format!("{}?version=1", files_url(&project, "a.txt")), &mallory).await, 404, "not_found");
    assert_error(&app.post(&restore, &mallory, json!({"path": "a.txt", "version": 1})).await, 404, "not_found");
    let service = app.service_token();
    let (status, _) = app.get(&format!("{}/versions", files_url(&project, "a.txt")), &service).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&app.post(&restore, &service, json!({"path": "a.txt", "version": 1})).await, 403, "forbidden");

    // op_id: a retry answers the first result and writes nothing; reuse for other arguments 409.
    let op = uuid::Uuid::new_v4();
    let first = app.post(&restore, &token, json!({"path": "a.txt", "version": 1, "op_id": op})).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let again = app.post(&restore, &token, json!({"path": "a.txt", "version": 1, "op_id": op})).await;
    assert_eq!(again, first);
    assert_error(
        &app.post(&restore, &token, json!({"path": "a.txt", "version": 2, "op_id": op})).await,
        409,
        "op_id_reused",
    );
    let (_, list) = app.get(&format!("{}/versions", files_url(&project, "a.txt")), &token).await;
    assert_eq!(list["versions"][0]["version"], 3, "one restore, one version");
}

#[tokio::test]
async fn a_restore_racing_a_write_on_the_same_expected_version_lets_exactly_one_win() {
    let app = quiet_hub().await;
    let project = app.create_project("alice", "p").await;
    let token = app.user_token("alice");
    app.write("alice", &project, "a.txt", "first").await;
    app.write("alice", &project, "a.txt", "second").await;
    for round in 0..5 {
        let current = 2 + 2 * round;
        let url = files_url(&project, "a.txt");
        let write = app.put(&url, &token, json!({"content": format!("edit {round}"), "expected_version": current}));
        let restore_url = format!("/v1/projects/{project}/files:restore");
        let restore =
            app.post(&restore_url, &token, json!({"path": "a.txt", "version": 1, "expected_version": current}));
        let (written, restored) = tokio::join!(write, restore);
        let wins = [&written, &restored].iter().filter(|a| a.0 == StatusCode::OK).count();
        assert_eq!(wins, 1, "{written:?} {restored:?}");
        let loser = if written.0 == StatusCode::OK { &restored } else { &written };
        assert_error(loser, 409, "version_conflict");
        assert_eq!(loser.1["error"]["current_version"], current + 1);
        // Bring the file to an even version count for the next round.
        let (_, file) = app.get(&url, &token).await;
        assert_eq!(file["version"], current + 1);
        app.write("alice", &project, "a.txt", &format!("filler {round}")).await;
    }
}

/// Writes `count` versions of a file (small edits, with now and then a rewrite) and
/// answers their texts, version 1 first.
async fn write_versions(app: &TestApp, project: &str, path: &str, count: usize) -> Vec<String> {
    let mut texts = Vec::new();
    let mut current = text(12_000, 1);
    for i in 0..count {
        if i % 37 == 36 {
            current = text(9_000, i as u64 * 1000);
        } else {
            let at = (i * 7919) % current.len();
            let at = (0..=at).rev().find(|&p| current.is_char_boundary(p)).unwrap_or(0);
            current.insert_str(at, &format!("{}", i % 10));
        }
        app.write("alice", project, path, &current).await;
        texts.push(current.clone());
    }
    texts
}

#[tokio::test]
async fn compaction_keeps_every_version_identical_and_event_replay_full() {
    let app = quiet_hub().await;
    let project = app.create_project("alice", "p").await;
    let token = app.user_token("alice");
    let config = HistoryConfig { checkpoint_every: 10, ..app.state.config.history.clone() };
    let texts = write_versions(&app, &project, "src/big.ts", 120).await;
    let db = admin(&app).await;
    let before = usage(&db, "alice").await;
    settle(&app, &config).await;
    let after = usage(&db, "alice").await;
    let stored: i64 =
        db.query_one("SELECT sum(stored_bytes)::bigint FROM synchub.project_files", &[]).await.unwrap().get(0);
    assert_eq!(after, stored, "the quota counts exactly what is stored");
    assert!(after * 4 < before, "compaction freed most bytes: {before} -> {after}");
    let deltas: i64 =
        db.query_one("SELECT count(*) FROM synchub.project_files WHERE delta IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(deltas >= 100, "{deltas} versions are deltas");
    let longest: i64 = db
        .query_one(
            "WITH RECURSIVE chain(id, hops) AS (
                 SELECT id, 0 FROM synchub.project_files WHERE content IS NOT NULL
                 UNION ALL
                 SELECT f.id, c.hops + 1 FROM synchub.project_files f JOIN chain c ON f.delta_base_id = c.id)
             SELECT max(hops)::bigint FROM chain",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(longest < 10, "no version is more than checkpoint_every - 1 deltas away: {longest}");

    // Every version reads back identical, over HTTP (Rust rebuild) …
    for (i, expected) in texts.iter().enumerate() {
        let (status, file) = app.get(&format!("{}?version={}", files_url(&project, "src/big.ts"), i + 1), &token).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert_eq!(file["content"].as_str().unwrap(), expected, "version {}", i + 1);
    }
    // … and in the event log (SQL rebuild): a client resuming from seq 0 gets full content.
    let (status, page) = app.get(&format!("/v1/projects/{project}/events?since=0&limit=1000"), &token).await;
    assert_eq!(status, StatusCode::OK);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), texts.len());
    for (event, expected) in events.iter().zip(&texts) {
        assert_eq!(event["payload"]["content"].as_str().unwrap(), expected, "seq {}", event["seq"]);
    }
    // A restore of a compacted version.
    let (status, restored) = app
        .post(&format!("/v1/projects/{project}/files:restore"), &token, json!({"path": "src/big.ts", "version": 3}))
        .await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    let (_, current) = app.get(&files_url(&project, "src/big.ts"), &token).await;
    assert_eq!(current["content"].as_str().unwrap(), texts[2]);
    // More writes and passes keep everything readable.
    settle(&app, &config).await;
    let (_, file) = app.get(&format!("{}?version=60", files_url(&project, "src/big.ts")), &token).await;
    assert_eq!(file["content"].as_str().unwrap(), texts[59]);
}

#[tokio::test]
async fn snapshots_and_github_changes_are_unaffected_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_path_buf();
    let app = TestApp::spawn_with(move |c| {
        c.storage_dir = Some(storage);
        c.history.interval_ms = 3_600_000;
    })
    .await;
    let token = app.user_token("alice");
    let (status, created) = app
        .post(
            "/v1/projects",
            &token,
            json!({"name": "gh", "source": {"kind": "github", "repo": "o/r", "ref": "main", "base_commit": "abc1234"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let project = created["id"].as_str().unwrap().to_string();
    let (status, base) = app
        .put(
            &format!("/v1/projects/{project}/base"),
            &token,
            json!({"commit": "abc1234", "files": [{"path": "src/big.ts", "content": text(5_000, 7)}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{base}");
    let texts = write_versions(&app, &project, "src/big.ts", 30).await;
    settle(&app, &app.state.config.history.clone()).await;
    let (status, changes) = app.get(&format!("/v1/projects/{project}/changes"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(changes["changes"], json!([{"path": "src/big.ts", "status": "modified"}]));
    let (status, snapshot) =
        app.post(&format!("/v1/projects/{project}/snapshots"), &app.service_token(), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{snapshot}");
    assert_eq!(snapshot["file_count"], 1);
    let (_, file) = app.get(&files_url(&project, "src/big.ts"), &token).await;
    assert_eq!(file["content"].as_str().unwrap(), texts.last().unwrap());
    let zip = app.http.get(snapshot["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    let tree = tempfile::tempdir().unwrap();
    let limits = snapshot_builder::ReadLimits::default();
    snapshot_builder::extract(std::io::Cursor::new(zip.to_vec()), tree.path(), &limits).unwrap();
    let content = std::fs::read_to_string(tree.path().join("src/big.ts")).unwrap();
    assert_eq!(&content, texts.last().unwrap());
}

#[tokio::test]
async fn retention_under_two_hubs_trims_each_version_once_and_spares_protected_ones() {
    let first = TestApp::spawn_with(|c| c.history.interval_ms = 3_600_000).await;
    let project = first.create_project("alice", "p").await;
    let token = first.user_token("alice");
    for i in 1..=30 {
        first.write("alice", &project, "a.txt", &format!("version {i}")).await;
    }
    let db = admin(&first).await;
    // Versions 1-20 were written two days ago, ten per hour (in two clock hours); 21-30 now.
    db.execute(
        "UPDATE synchub.project_files
         SET created_at = date_trunc('hour', now() - interval '2 days') + (version - 1) * interval '6 minutes'
         WHERE version <= 20",
        &[],
    )
    .await
    .unwrap();
    // A snapshot whose cursor saw version 5 as current protects it.
    db.execute(
        "INSERT INTO synchub.snapshots (id, project_id, cursor, storage_key, sha256, bytes, file_count)
         SELECT gen_random_uuid(), project_id, seq, 'k', 's', 0, 1 FROM synchub.project_files WHERE version = 5",
        &[],
    )
    .await
    .unwrap();
    let before = usage(&db, "alice").await;
    // Two hubs on one database, both running the task often.
    let mut config = test_config(first.database_url.clone());
    config.history.interval_ms = 20;
    let second = TestApp::spawn_on(config.clone()).await;
    let third = TestApp::spawn_on(config).await;
    let trimmed = || async {
        db.query_one("SELECT count(*) FROM synchub.project_files WHERE trimmed_at IS NOT NULL", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // Kept of 1-20: the newest of each clock hour (10 and 20) and the protected 5.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while trimmed().await < 17 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give both a few more passes: nothing more may go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(trimmed().await, 17);
    let removed =
        second.state.metrics.history.versions_removed.get() + third.state.metrics.history.versions_removed.get();
    assert_eq!(removed, 17, "each version removed once, over both hubs");
    let kept: Vec<i32> = db
        .query(
            "SELECT version FROM synchub.project_files WHERE trimmed_at IS NULL AND version <= 20 ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, [5, 10, 20]);
    let freed = second.state.metrics.history.bytes_freed.get() + third.state.metrics.history.bytes_freed.get();
    assert_eq!(usage(&db, "alice").await, before - freed as i64);
    // A trimmed version answers 410; the listing leaves it out.
    let answer = second.get(&format!("{}?version=3", files_url(&project, "a.txt")), &token).await;
    assert_error(&answer, 410, "history_trimmed");
    assert_error(
        &second
            .post(&format!("/v1/projects/{project}/files:restore"), &token, json!({"path": "a.txt", "version": 3}))
            .await,
        410,
        "history_trimmed",
    );
    let (_, file) = second.get(&format!("{}?version=5", files_url(&project, "a.txt")), &token).await;
    assert_eq!(file["content"], "version 5");
    let (_, list) = second.get(&format!("{}/versions?limit=1000", files_url(&project, "a.txt")), &token).await;
    assert_eq!(list["versions"].as_array().unwrap().len(), 13);
    let metrics = second.http.get(format!("{}/metrics", second.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("synchub_history_versions_removed_total"), "{metrics}");
}

#[tokio::test]
async fn saving_often_cannot_grow_storage_past_the_quota_until_compaction_frees_it() {
    let app = TestApp::spawn_with(|c| {
        c.history.interval_ms = 3_600_000;
        c.limits.max_bytes_per_user = 100_000;
    })
    .await;
    let project = app.create_project("alice", "p").await;
    let token = app.user_token("alice");
    let mut content = text(20_000, 3);
    let mut saved = 0;
    let mut refused = None;
    for i in 0..20 {
        content.push(char::from(b'a' + (i % 26) as u8));
        let answer = app.put(&files_url(&project, "big.ts"), &token, json!({"content": content})).await;
        if answer.0 == StatusCode::OK {
            saved += 1;
        } else {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("the quota stops the saves");
    assert_error(&refused, 403, "quota_exceeded");
    assert!((4..6).contains(&saved), "{saved} saves of 20 KB fit in 100 KB");
    let db = admin(&app).await;
    assert!(usage(&db, "alice").await <= 100_000);
    settle(&app, &app.state.config.history.clone()).await;
    assert!(usage(&db, "alice").await < 30_000, "compaction gave the bytes back");
    let answer = app.put(&files_url(&project, "big.ts"), &token, json!({"content": content})).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

/// Retention trims versions after a day while the event log keeps a week: a client resuming
/// from before a trimmed version must not be replayed its event with `content: null` (the
/// payload has no content left to give). The log's tail moves past the newest trimmed
/// version's event instead, so such a resume gets 410 history_trimmed / resync_required,
/// and every event still in the log replays with its full content.
#[tokio::test]
async fn a_trimmed_version_is_never_replayed_without_its_content() {
    let app = quiet_hub().await;
    let project = app.create_project("alice", "p").await;
    let token = app.user_token("alice");
    for i in 1..=12 {
        app.write("alice", &project, "a.txt", &format!("version {i}")).await;
    }
    app.write("alice", &project, "b.txt", "other file").await;
    let db = admin(&app).await;
    // Versions 1-8 of a.txt were saved two days ago, in one clock hour; their events too.
    for sql in [
        "UPDATE synchub.project_files SET created_at = date_trunc('hour', now() - interval '2 days')
             + version * interval '1 minute' WHERE file_path = 'a.txt' AND version <= 8",
        "UPDATE synchub.events SET created_at = date_trunc('hour', now() - interval '2 days')
             + seq * interval '1 minute' WHERE seq <= 8",
    ] {
        db.execute(sql, &[]).await.unwrap();
    }
    settle(&app, &app.state.config.history.clone()).await;
    let trimmed: Vec<i64> = db
        .query("SELECT seq FROM synchub.project_files WHERE trimmed_at IS NOT NULL ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(trimmed, (1..=7).collect::<Vec<i64>>(), "the newest of the hour (8) is kept");

    // Resuming from before the newest trimmed version: 410, never a content-less event.
    let answer = app.get(&format!("/v1/projects/{project}/events?since=0"), &token).await;
    assert_error(&answer, 410, "history_trimmed");
    assert_eq!(answer.1["error"]["oldest_seq"], 8, "{}", answer.1);
    // From the tail on, every event replays in full.
    let (status, page) = app.get(&format!("/v1/projects/{project}/events?since=7"), &token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 6, "{page}");
    for event in events {
        assert!(event["payload"]["content"].is_string(), "seq {} has no content: {event}", event["seq"]);
    }
    // A socket joining from seq 0 is told to resync.
    let mut ws = app.ws(&token).await;
    ws.send(json!({"type": "join", "ref": "1", "channel": channel(&project), "since": 0})).await;
    let frame = ws.recv().await;
    assert_eq!(frame, json!({"type": "resync_required", "channel": channel(&project), "oldest_seq": 8}));
}
