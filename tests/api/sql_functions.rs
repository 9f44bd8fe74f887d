//! The SQL functions called directly (as the hub's runtime role): versions, hashes,
//! conflicts, tombstones, bulk atomicity, move, op_id replay, role and quota refusal.

use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::TestApp;

async fn project(db: &Client, owner: &str) -> Uuid {
    let id = Uuid::new_v4();
    db.query_one("SELECT synchub.create_project($1, 'p', $2, '{}')", &[&id, &owner]).await.unwrap();
    id
}

async fn upsert(
    db: &Client,
    p: Uuid,
    path: &str,
    content: &str,
    expected: Option<i32>,
    actor: &str,
    op: Option<Uuid>,
) -> Result<(i32, String, i64), String> {
    db.query_one(
        "SELECT version, content_hash, seq FROM synchub.upsert_project_file($1, $2, $3, NULL, $4, $5, $6)",
        &[&p, &path, &content, &expected, &actor, &op],
    )
    .await
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .map_err(|e| e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_default())
}

fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

async fn current(db: &Client, p: Uuid) -> Vec<(String, String, i32)> {
    db.query("SELECT file_path, content, version FROM synchub.list_current_files($1)", &[&p])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Rows read by scans of synchub's tables plus entries read from their indexes while `sql`
/// runs (in a transaction rolled back after), and `sql`'s first column as i64 if it has one.
async fn rows_read(
    db: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> (i64, Option<i64>) {
    // The per-transaction counters include earlier transactions' counts not yet flushed
    // to the cumulative statistics (PostgreSQL 15): flushed when this session goes idle.
    db.batch_execute("SELECT pg_stat_force_next_flush()").await.unwrap();
    db.batch_execute("BEGIN").await.unwrap();
    let row = db.query_one(sql, params).await.unwrap();
    let value = row.try_get::<_, i64>(0).ok();
    let read: i64 = db
        .query_one(
            "SELECT sum(pg_stat_get_xact_tuples_returned(c.oid))::bigint FROM pg_class c
             WHERE c.relnamespace = 'synchub'::regnamespace AND c.relkind IN ('r', 'i')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.batch_execute("ROLLBACK").await.unwrap();
    (read, value)
}

#[tokio::test]
async fn versions_hashes_conflicts_and_history() {
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = project(&db, "alice").await;

    let (v1, h1, s1) = upsert(&db, p, "src/a.ts", "one", Some(0), "alice", None).await.unwrap();
    assert_eq!((v1, h1.as_str(), s1), (1, sha256("one").as_str(), 1));
    let (v2, _, s2) = upsert(&db, p, "src/a.ts", "two", Some(1), "alice", None).await.unwrap();
    assert_eq!((v2, s2), (2, 2));
    // Stale expected_version and "must not exist" both conflict.
    assert_eq!(upsert(&db, p, "src/a.ts", "x", Some(1), "alice", None).await.unwrap_err(), "SH409");
    assert_eq!(upsert(&db, p, "src/a.ts", "x", Some(0), "alice", None).await.unwrap_err(), "SH409");
    // Unconditional write.
    let (v3, _, s3) = upsert(&db, p, "src/a.ts", "three", None, "alice", None).await.unwrap();
    assert_eq!((v3, s3), (3, 3));
    // Same content again changes nothing (no version, no seq).
    assert_eq!(upsert(&db, p, "src/a.ts", "three", None, "alice", None).await.unwrap(), (3, sha256("three"), 3));

    // Every version is kept, chained by parent_version_id, one current.
    let owner = app.sql().await;
    owner.batch_execute("RESET ROLE").await.unwrap();
    let rows = owner
        .query(
            "SELECT version, content, is_current_version, parent_version_id IS NOT NULL, created_by, last_modified_by
             FROM synchub.project_files WHERE project_id = $1 ORDER BY version",
            &[&p],
        )
        .await
        .unwrap();
    let history: Vec<(i32, Option<String>, bool, bool)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        history,
        vec![
            (1, Some("one".into()), false, false),
            (2, Some("two".into()), false, true),
            (3, Some("three".into()), true, true)
        ]
    );

    // The conflict carries the contract's details.
    let err = db
        .query_one("SELECT * FROM synchub.upsert_project_file($1, 'src/a.ts', 'x', NULL, 1, 'alice', NULL)", &[&p])
        .await
        .unwrap_err();
    let detail: Value = serde_json::from_str(err.as_db_error().unwrap().detail().unwrap()).unwrap();
    assert_eq!(detail["path"], "src/a.ts");
    assert_eq!(detail["expected_version"], 1);
    assert_eq!(detail["current_version"], 3);
    assert_eq!(detail["current_hash"], sha256("three"));
}

#[tokio::test]
async fn tombstone_then_recreate() {
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = project(&db, "alice").await;
    upsert(&db, p, "a.md", "hi", None, "alice", None).await.unwrap();
    let row = db
        .query_one("SELECT version, seq FROM synchub.delete_project_file($1, 'a.md', 1, 'alice', NULL)", &[&p])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (2, 2));
    assert!(current(&db, p).await.is_empty());
    // Deleting again: not found.
    let err = db
        .query_one("SELECT * FROM synchub.delete_project_file($1, 'a.md', NULL, 'alice', NULL)", &[&p])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SH404");
    // Re-create with "must not exist": versions continue after the tombstone.
    let (v, _, seq) = upsert(&db, p, "a.md", "again", Some(0), "alice", None).await.unwrap();
    assert_eq!((v, seq), (3, 3));
    assert_eq!(current(&db, p).await, vec![("a.md".to_string(), "again".to_string(), 3)]);
}

#[tokio::test]
async fn bulk_is_all_or_nothing_and_lists_every_conflict() {
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = project(&db, "alice").await;
    upsert(&db, p, "a", "1", None, "alice", None).await.unwrap();
    upsert(&db, p, "b", "1", None, "alice", None).await.unwrap();

    let files = json!([{"path": "a", "content": "2", "expected_version": 7}, {"path": "c", "content": "new"},
                       {"path": "b", "content": "2", "expected_version": 9}]);
    let err = db
        .query_one("SELECT * FROM synchub.bulk_upsert_project_files($1, $2, '[]', 'alice', NULL)", &[&p, &files])
        .await
        .unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "SH409");
    let detail: Value = serde_json::from_str(db_err.detail().unwrap()).unwrap();
    assert_eq!(detail["conflicts"].as_array().unwrap().len(), 2);
    // Nothing was written, not even the valid entry.
    assert_eq!(current(&db, p).await.len(), 2);
    let last_seq: i64 =
        db.query_one("SELECT (synchub.get_project($1, 'alice') ->> 'last_seq')::bigint", &[&p]).await.unwrap().get(0);
    assert_eq!(last_seq, 2);

    // A bad path anywhere refuses the whole change.
    let files = json!([{"path": "ok.txt", "content": "x"}, {"path": "../evil", "content": "x"}]);
    let err = db
        .query_one("SELECT * FROM synchub.bulk_upsert_project_files($1, $2, '[]', 'alice', NULL)", &[&p, &files])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SHP00");
    assert_eq!(current(&db, p).await.len(), 2);

    // A valid bulk: one seq for all of it.
    let files = json!([{"path": "a", "content": "2", "expected_version": 1}, {"path": "c", "content": "new"}]);
    let deletes = json!([{"path": "b"}]);
    let row = db
        .query_one(
            "SELECT seq, result FROM synchub.bulk_upsert_project_files($1, $2, $3, 'alice', NULL)",
            &[&p, &files, &deletes],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    let result: Value = row.get(1);
    assert_eq!(result["files"].as_array().unwrap().len(), 2);
    assert_eq!(result["deleted"], json!([{"path": "b", "version": 2}]));
    let events: i64 = db.query_one("SELECT count(*) FROM synchub.read_events($1, 0, 100)", &[&p]).await.unwrap().get(0);
    assert_eq!(events, 3);
}

#[tokio::test]
async fn move_is_one_change() {
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = project(&db, "alice").await;
    upsert(&db, p, "old/name.ts", "body", None, "alice", None).await.unwrap();
    upsert(&db, p, "taken.ts", "x", None, "alice", None).await.unwrap();
    let err = db
        .query_one("SELECT * FROM synchub.move_project_file($1, 'old/name.ts', 'taken.ts', NULL, 'alice', NULL)", &[&p])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SHA09");
    let row = db
        .query_one(
            "SELECT seq, version FROM synchub.move_project_file($1, 'old/name.ts', 'new/name.ts', 1, 'alice', NULL)",
            &[&p],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (3, 1));
    let paths: Vec<String> = current(&db, p).await.into_iter().map(|f| f.0).collect();
    assert_eq!(paths, vec!["new/name.ts", "taken.ts"]);
    let event = db.query_one("SELECT event, payload FROM synchub.read_events($1, 2, 10)", &[&p]).await.unwrap();
    assert_eq!(event.get::<_, String>(0), "bulk:apply");
    let payload: Value = event.get(1);
    assert_eq!(payload["files"][0]["file_path"], "new/name.ts");
    assert_eq!(payload["deletes"][0]["file_path"], "old/name.ts");
}

#[tokio::test]
async fn op_id_replay_returns_first_result_and_publishes_nothing() {
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = project(&db, "alice").await;
    let op = Uuid::new_v4();
    let first = upsert(&db, p, "a", "v1", Some(0), "alice", Some(op)).await.unwrap();
    // The retry carries the same op_id: same answer, even though expected_version 0 would now conflict.
    let again = upsert(&db, p, "a", "v1", Some(0), "alice", Some(op)).await.unwrap();
    assert_eq!(first, again);
    let events: i64 = db.query_one("SELECT count(*) FROM synchub.read_events($1, 0, 100)", &[&p]).await.unwrap().get(0);
    assert_eq!(events, 1);
}

#[tokio::test]
async fn roles_are_checked_in_the_database() {
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = project(&db, "alice").await;
    db.query_one("SELECT synchub.set_member($1, 'alice', 'vera', 'viewer')", &[&p]).await.unwrap();
    db.query_one("SELECT synchub.set_member($1, 'alice', 'ed', 'editor')", &[&p]).await.unwrap();
    // Outsider: not found. Viewer: forbidden. Editor: allowed.
    assert_eq!(upsert(&db, p, "a", "x", None, "mallory", None).await.unwrap_err(), "SH404");
    assert_eq!(upsert(&db, p, "a", "x", None, "vera", None).await.unwrap_err(), "SH403");
    upsert(&db, p, "a", "x", None, "ed", None).await.unwrap();
    // Only owners manage members; the last owner cannot leave.
    let err = db.query_one("SELECT synchub.set_member($1, 'ed', 'x', 'viewer')", &[&p]).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SH403");
    let err = db.query("SELECT synchub.remove_member($1, 'alice', 'alice')", &[&p]).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SH400");
    // The runtime role cannot touch tables directly.
    let err = db.query("SELECT * FROM synchub.project_files", &[]).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501");
}

#[tokio::test]
async fn quotas_are_refused_whole() {
    let app = TestApp::spawn().await;
    let owner = app.sql().await;
    owner.batch_execute("RESET ROLE; UPDATE synchub.limits SET max_files_per_project = 3, max_bytes_per_user = 100, max_projects_per_user = 2").await.unwrap();
    let db = app.sql().await;
    let p = project(&db, "alice").await;
    let files = json!([{"path": "a", "content": "1"}, {"path": "b", "content": "1"}, {"path": "c", "content": "1"}, {"path": "d", "content": "1"}]);
    let err = db
        .query_one("SELECT * FROM synchub.bulk_upsert_project_files($1, $2, '[]', 'alice', NULL)", &[&p, &files])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SHQ03");
    assert!(current(&db, p).await.is_empty());
    // Bytes: 60 + 60 > 100 across two projects of the same owner.
    let q = project(&db, "alice").await;
    upsert(&db, p, "big", &"x".repeat(60), None, "alice", None).await.unwrap();
    assert_eq!(upsert(&db, q, "big", &"x".repeat(60), None, "alice", None).await.unwrap_err(), "SHQ03");
    // History counts (CONTRACT 14): a smaller version fits, but the 60 bytes of the one it
    // replaced stay stored until the history task compacts or trims them.
    upsert(&db, p, "big", "small", None, "alice", None).await.unwrap();
    assert_eq!(upsert(&db, q, "big", &"x".repeat(60), None, "alice", None).await.unwrap_err(), "SHQ03");
    // Projects per user.
    let err = db
        .query_one("SELECT synchub.create_project(gen_random_uuid(), 'third', 'alice', '{}')", &[])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SHQ03");
}

#[tokio::test]
async fn definer_functions_pin_search_path_and_are_not_public() {
    // Least privilege (issue #2): every SECURITY DEFINER function pins its search_path and
    // only the roles it was granted to may execute it.
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let rows = db
        .query(
            "SELECT p.oid::regprocedure::text, coalesce(p.proconfig, '{}'),
                    has_function_privilege('public', p.oid, 'EXECUTE')
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'synchub' AND p.prosecdef",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 20, "only {} SECURITY DEFINER functions", rows.len());
    for row in &rows {
        let (name, config, public): (String, Vec<String>, bool) = (row.get(0), row.get(1), row.get(2));
        assert!(config.iter().any(|c| c == "search_path=pg_catalog, pg_temp"), "{name}: {config:?}");
        assert!(!public, "{name} is executable by PUBLIC");
    }
}

/// apply_change is every write's path: planner settings on it (enable_seqscan = off and
/// enable_bitmapscan = off, meant for archive imports) made ordinary single-file writes about
/// 4× slower in fanout_1000's burst (docs/BENCHMARKS.md). Only the archive import sets them,
/// for its own call.
#[tokio::test]
async fn the_write_path_carries_no_planner_settings() {
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    for function in ["synchub.apply_change", "synchub.upsert_project_file"] {
        let configs: Vec<Vec<String>> = db
            .query(
                "SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE oid::regprocedure::text LIKE $1 || '(%'",
                &[&function],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!configs.is_empty(), "{function} not found");
        for config in configs {
            assert!(config.iter().all(|c| !c.starts_with("enable_")), "{function}: {config:?}");
        }
    }
}

#[tokio::test]
async fn read_events_keeps_one_plan_and_follows_the_statistics() {
    // Issue 16: read_events is on every event's path; it plans once per connection
    // (the default re-planned it on every call). A plan made against an empty log must not
    // outlive the log's growth: after ANALYZE the same connection still reads the events.
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let config: Vec<String> = db
        .query_one(
            "SELECT coalesce(proconfig, '{}') FROM pg_proc
             WHERE oid = 'synchub.read_events(uuid, bigint, integer)'::regprocedure",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(config.iter().any(|c| c == "plan_cache_mode=force_generic_plan"), "{config:?}");
    let p = project(&db, "alice").await;
    let read = "SELECT count(*) FROM synchub.read_events($1, 0, 1000)";
    assert_eq!(db.query_one(read, &[&p]).await.unwrap().get::<_, i64>(0), 0);
    for i in 0..300 {
        upsert(&db, p, &format!("f/{i}.txt"), "x", None, "alice", None).await.unwrap();
    }
    // ANALYZE as the tables' owner (the session user), then back to the runtime role.
    db.batch_execute("RESET ROLE; ANALYZE synchub.events; ANALYZE synchub.project_files; SET ROLE synchub_runtime")
        .await
        .unwrap();
    assert_eq!(db.query_one(read, &[&p]).await.unwrap().get::<_, i64>(0), 300);
    let payload: serde_json::Value =
        db.query_one("SELECT payload FROM synchub.read_events($1, 299, 1)", &[&p]).await.unwrap().get(0);
    assert_eq!(payload["file_path"], "f/299.txt");
}

#[tokio::test]
async fn a_write_reads_a_few_index_entries_however_many_files_the_project_has() {
    // Issue 16 (write → event latency): on a new hub, before autovacuum's first ANALYZE of
    // project_files (up to a minute, longer on a busy one), the folder probes of every write
    // were planned as a scan of all of the project's rows: a write took 4 ms at 0 files and
    // 18 ms at 2,400 (release, `synchub dev`), then dropped to 2 ms after the ANALYZE. The
    // probes must read a few index entries whatever the statistics say. A fresh test
    // database has no statistics, as a new hub.
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = project(&db, "alice").await;
    // Single writes first, as on a new hub: the session's cached plans for the probes are
    // made while the table is nearly empty. Then one bulk below the size at which
    // apply_change analyzes the table itself.
    for i in 0..10 {
        upsert(&db, p, &format!("src/f{i:04}.txt"), "x", None, "alice", None).await.unwrap();
    }
    let files: Vec<Value> = (10..999).map(|i| json!({"path": format!("src/f{i:04}.txt"), "content": "x"})).collect();
    db.query_one("SELECT * FROM synchub.bulk_upsert_project_files($1, $2, '[]', 'alice', NULL)", &[&p, &json!(files)])
        .await
        .unwrap();
    let analyzed: Option<i64> = db
        .query_one(
            "SELECT (extract(epoch FROM coalesce(last_analyze, last_autoanalyze)))::bigint
             FROM pg_stat_user_tables WHERE relid = 'synchub.project_files'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(analyzed, None, "the table was analyzed: the test no longer sees the planner without statistics");
    // New files, a new version, a delete and a move: each in a transaction rolled back.
    let writes = [
        (
            "upsert src/new.txt",
            "SELECT 1 FROM synchub.upsert_project_file($1, 'src/new.txt', 'y', NULL, NULL, 'alice', NULL)",
        ),
        (
            "upsert src/f0500.txt",
            "SELECT 1 FROM synchub.upsert_project_file($1, 'src/f0500.txt', 'y', NULL, NULL, 'alice', NULL)",
        ),
        (
            "upsert docs/new.txt",
            "SELECT 1 FROM synchub.upsert_project_file($1, 'docs/new.txt', 'y', NULL, NULL, 'alice', NULL)",
        ),
        ("delete src/f0501.txt", "SELECT 1 FROM synchub.delete_project_file($1, 'src/f0501.txt', NULL, 'alice', NULL)"),
        (
            "move src/f0502.txt",
            "SELECT 1 FROM synchub.move_project_file($1, 'src/f0502.txt', 'moved/f.txt', NULL, 'alice', NULL)",
        ),
        (
            "upsert with an op_id",
            "SELECT 1 FROM synchub.upsert_project_file($1, 'src/op.txt', 'y', NULL, NULL, 'alice', gen_random_uuid())",
        ),
        (
            "bulk of two upserts and a delete",
            "SELECT 1 FROM synchub.bulk_upsert_project_files($1,
                 '[{\"path\": \"b/1.txt\", \"content\": \"y\"}, {\"path\": \"src/f0503.txt\", \"content\": \"y\"}]',
                 '[{\"path\": \"src/f0504.txt\"}]', 'alice', NULL)",
        ),
    ];
    for (write, sql) in writes {
        let (read, _) = rows_read(&db, sql, &[&p]).await;
        assert!(read < 50, "{write} read {read} rows or index entries (1,000 files in the project)");
    }
    // A large change (an archive import's size) stays linear too: 1,500 new files and 500
    // new versions in one bulk, without any planner settings.
    let files: Vec<Value> = (500..2500).map(|i| json!({"path": format!("src/f{i:04}.txt"), "content": "z"})).collect();
    let (read, _) = rows_read(
        &db,
        "SELECT 0::bigint FROM synchub.bulk_upsert_project_files($1, $2, '[]', 'alice', NULL)",
        &[&p, &json!(files)],
    )
    .await;
    assert!(read < 40 * 2000, "a bulk of 2,000 entries read {read} rows or index entries");
}

#[tokio::test]
async fn reading_new_events_reads_a_few_rows_however_many_files_the_project_has() {
    // The event read is on every event's path (the feed reads each committed write back),
    // and it keeps one generic plan per connection. Made while the tables were (nearly)
    // empty, as on a new hub before autovacuum's first ANALYZE, that plan must still read
    // only the new events and their rows, not the project's files: it read 3,024 rows or
    // index entries for 3 events (every version of the project per event), 6 now.
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = project(&db, "alice").await;
    let read = "SELECT count(*) FROM synchub.read_events($1, $2, 1000)";
    for i in 0..6 {
        upsert(&db, p, &format!("early{i}.txt"), "x", None, "alice", None).await.unwrap();
        db.query_one(read, &[&p, &(i as i64)]).await.unwrap();
        db.query_one("SELECT count(*) FROM synchub.write_event($1, $2)", &[&p, &(i as i64 + 1)]).await.unwrap();
        db.query_one("SELECT synchub.join_channel($1, 'alice')", &[&p]).await.unwrap();
        db.query_one("SELECT synchub.events_for($1, 'alice', 0, 10)", &[&p]).await.unwrap();
        db.query_one("SELECT synchub.get_file($1, 'alice', 'early0.txt')", &[&p]).await.unwrap();
    }
    let files: Vec<Value> = (0..999).map(|i| json!({"path": format!("src/f{i:04}.txt"), "content": "x"})).collect();
    db.query_one("SELECT * FROM synchub.bulk_upsert_project_files($1, $2, '[]', 'alice', NULL)", &[&p, &json!(files)])
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..3 {
        last = upsert(&db, p, &format!("zz/late{i}.txt"), "y", None, "alice", None).await.unwrap().2;
    }
    let (rows, got) = rows_read(&db, read, &[&p, &(last - 3)]).await;
    assert_eq!(got, Some(3));
    assert!(rows < 50, "reading 3 new events read {rows} rows or index entries (1,009 files in the project)");
    // A write's read of its own event, and the other reads of a join, a resume and a file:
    // as few (2, 4, 11, 3 and 1 when written).
    let since = last - 3;
    let reads: [(&str, &str, &[&(dyn tokio_postgres::types::ToSql + Sync)]); 5] = [
        ("write_event", "SELECT count(*) FROM synchub.write_event($1, $2)", &[&p, &last]),
        ("join_channel", "SELECT 0::bigint FROM synchub.join_channel($1, 'alice')", &[&p]),
        ("events_for", "SELECT 0::bigint FROM synchub.events_for($1, 'alice', $2, 10)", &[&p, &since]),
        ("get_file", "SELECT 0::bigint FROM synchub.get_file($1, 'alice', 'zz/late1.txt')", &[&p]),
        ("oldest_seq", "SELECT synchub.oldest_seq($1)", &[&p]),
    ];
    for (name, sql, params) in reads {
        let (rows, _) = rows_read(&db, sql, params).await;
        println!("{name}: {rows} rows or index entries");
        assert!(rows < 50, "{name} read {rows} rows or index entries (1,009 files in the project)");
    }
}
