//! The SQL tree and what migrating makes of it: each function has one definition, in the
//! file of its concern; migrating again (or twice at once) changes nothing; functions no
//! file defines are dropped; grants follow the definitions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio_postgres::{Client, NoTls};

use crate::helpers::{cluster, fresh_database};

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");

fn sql_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sql_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "sql") {
            found.push(path);
        }
    }
}

/// The functions a SQL text defines: (name as written, whether `OR REPLACE`), in order.
/// Comments are left out; the words are matched case-insensitively.
fn defined_functions(sql: &str) -> Vec<(String, bool)> {
    let code: String = sql.lines().map(|line| line.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let words: Vec<&str> = code.split(|c: char| c.is_whitespace() || c == '(').filter(|w| !w.is_empty()).collect();
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if !word.eq_ignore_ascii_case("create") {
            continue;
        }
        let rest = &words[i + 1..];
        let (or_replace, rest) = match rest {
            [or, replace, rest @ ..] if or.eq_ignore_ascii_case("or") && replace.eq_ignore_ascii_case("replace") => {
                (true, rest)
            }
            _ => (false, rest),
        };
        if let [function, name, ..] = rest
            && function.eq_ignore_ascii_case("function")
        {
            found.push((name.to_ascii_lowercase(), or_replace));
        }
    }
    found
}

#[test]
fn every_function_is_defined_once_in_the_file_of_its_concern() {
    let mut files = Vec::new();
    sql_files(Path::new(MIGRATIONS), &mut files);
    let functions_dir = Path::new(MIGRATIONS).join("functions");
    let mut definitions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let sql = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(MIGRATIONS).unwrap().display().to_string();
        for (name, or_replace) in defined_functions(&sql) {
            assert!(
                file.starts_with(&functions_dir),
                "{shown} defines {name}: functions live in migrations/functions/"
            );
            assert!(or_replace, "{shown}: {name} must be CREATE OR REPLACE (the file is applied on every migrate)");
            definitions.entry(name).or_default().push(shown.clone());
        }
    }
    assert!(definitions.len() >= 40, "only {} functions found: is the parser still right?", definitions.len());
    let twice: Vec<_> = definitions.iter().filter(|(_, places)| places.len() > 1).collect();
    assert!(twice.is_empty(), "functions defined more than once: {twice:?}");

    // Every file of the folder is applied, and nothing else is.
    let mut on_disk: Vec<String> = files
        .iter()
        .filter(|f| f.parent() == Some(functions_dir.as_path()))
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut applied: Vec<String> = synchub::db::functions::FILES.iter().map(|(name, _)| name.to_string()).collect();
    on_disk.sort();
    applied.sort();
    assert_eq!(on_disk, applied, "migrations/functions/ and db::functions::FILES differ");
}

#[test]
fn the_parser_finds_definitions_and_skips_comments() {
    let sql = "-- CREATE FUNCTION synchub.in_a_comment()\ncreate or replace function synchub.a(x int)\n\
               CREATE FUNCTION synchub.b (y int) -- CREATE OR REPLACE FUNCTION synchub.c(\n\
               SELECT 'create'; DROP FUNCTION synchub.d(int);";
    assert_eq!(defined_functions(sql), [("synchub.a".to_string(), true), ("synchub.b".to_string(), false)]);
}

async fn migrate(url: &str) -> anyhow::Result<()> {
    synchub::db::migrate(url, &synchub::config::Limits::default()).await
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A database with nothing in it (not cloned from the migrated template).
async fn empty_database() -> String {
    let cluster = cluster();
    let admin = connect(&cluster.pg.url("postgres")).await;
    let name = format!("e_{}", uuid::Uuid::new_v4().simple());
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    cluster.pg.url(&name)
}

/// Every synchub function as the catalog holds it: oid, definition, owner rights, grants.
async fn functions_in(db: &Client) -> Vec<String> {
    db.query(
        "SELECT format('%s oid=%s def=%s definer=%s config=%s acl=%s', p.oid::regprocedure, p.oid,
                       md5(pg_get_functiondef(p.oid)), p.prosecdef, p.proconfig, p.proacl)
         FROM pg_proc p WHERE p.pronamespace = 'synchub'::regnamespace ORDER BY p.oid::regprocedure::text",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// The rule the migration enforces: nothing is executable by PUBLIC; exactly the SECURITY
/// DEFINER functions are executable by the runtime role, each with a pinned search_path.
async fn assert_grants_follow_definitions(db: &Client) {
    let rows = db
        .query(
            "SELECT p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig, '{}'),
                    has_function_privilege('public', p.oid, 'EXECUTE'),
                    has_function_privilege('synchub_runtime', p.oid, 'EXECUTE')
             FROM pg_proc p WHERE p.pronamespace = 'synchub'::regnamespace",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 40, "only {} functions", rows.len());
    let mut entry_points = 0;
    for row in &rows {
        let (name, definer, config, public, runtime): (String, bool, Vec<String>, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert!(!public, "{name} is executable by PUBLIC");
        assert_eq!(runtime, definer, "{name}: runtime may execute it = {runtime}, SECURITY DEFINER = {definer}");
        if definer {
            entry_points += 1;
            assert!(config.iter().any(|c| c == "search_path=pg_catalog, pg_temp"), "{name}: {config:?}");
        }
    }
    assert!(entry_points >= 30, "only {entry_points} entry points");
}

#[tokio::test]
async fn migrating_again_or_twice_at_once_changes_nothing() {
    let url = fresh_database().await;
    let db = connect(&url).await;
    let before = functions_in(&db).await;
    assert_grants_follow_definitions(&db).await;

    migrate(&url).await.unwrap();
    let (a, b) = tokio::join!(migrate(&url), migrate(&url));
    a.unwrap();
    b.unwrap();
    // Same oids too: functions are replaced in place, so what running hubs prepared stays valid.
    assert_eq!(functions_in(&db).await, before);
    assert_grants_follow_definitions(&db).await;
}

#[tokio::test]
async fn two_hubs_migrating_an_empty_database_at_once_both_succeed() {
    let url = empty_database().await;
    let (a, b) = tokio::join!(migrate(&url), migrate(&url));
    a.unwrap();
    b.unwrap();
    let db = connect(&url).await;
    let (applied, distinct): (i64, i64) = db
        .query_one("SELECT count(*), count(DISTINCT version) FROM refinery_schema_history", &[])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert!(
        applied >= 1 && applied == distinct,
        "each migration is applied once ({applied} rows, {distinct} versions)"
    );
    assert_grants_follow_definitions(&db).await;
    let template = connect(&fresh_database().await).await;
    let mut migrated_once = functions_in(&template).await;
    let mut here = functions_in(&db).await;
    // Oids differ between databases; the rest must not.
    let without_oid = |s: &mut Vec<String>| {
        for line in s.iter_mut() {
            *line = line.split(' ').filter(|w| !w.starts_with("oid=")).collect::<Vec<_>>().join(" ");
        }
    };
    without_oid(&mut migrated_once);
    without_oid(&mut here);
    assert_eq!(here, migrated_once);
}

#[tokio::test]
async fn a_function_no_file_defines_is_dropped() {
    let url = fresh_database().await;
    let db = connect(&url).await;
    let before = functions_in(&db).await;
    // What an older hub version could have left: a function since removed, executable by
    // anyone.
    db.batch_execute(
        "CREATE FUNCTION synchub.removed_long_ago(p integer) RETURNS integer LANGUAGE sql
             SECURITY DEFINER AS 'SELECT p';
         GRANT EXECUTE ON FUNCTION synchub.removed_long_ago(integer) TO PUBLIC;",
    )
    .await
    .unwrap();

    migrate(&url).await.unwrap();

    assert_eq!(functions_in(&db).await, before, "the others are untouched, oids included");
}

#[tokio::test]
async fn a_function_whose_result_or_parameter_names_changed_is_recreated() {
    let url = fresh_database().await;
    let db = connect(&url).await;
    let expected = functions_in(&db).await.len();
    // Same identity (name and argument types) as today's oldest_seq, but another result
    // type and parameter name: CREATE OR REPLACE cannot turn it into today's.
    db.batch_execute(
        "DROP FUNCTION synchub.oldest_seq(uuid);
         CREATE FUNCTION synchub.oldest_seq(p_other uuid) RETURNS integer LANGUAGE sql AS 'SELECT 1';
         GRANT EXECUTE ON FUNCTION synchub.oldest_seq(uuid) TO PUBLIC;",
    )
    .await
    .unwrap();

    migrate(&url).await.unwrap();

    assert_eq!(functions_in(&db).await.len(), expected);
    let result: String = db
        .query_one("SELECT pg_get_function_result('synchub.oldest_seq(uuid)'::regprocedure)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(result, "bigint");
    assert_grants_follow_definitions(&db).await;
}

/// Tables that are not distributed by project, and why (docs/SCALING.md says how each is
/// placed on Citus).
const NOT_PROJECT_DATA: &[(&str, &str)] = &[
    ("limits", "one row of settings every function reads: a reference table (a copy on every node)"),
    ("user_usage", "bytes per user over all their projects: distributed by user_id in a co-location group of its own"),
    ("blobs", "content-addressed bytes any project's versions may reference: a reference table (a copy on every node)"),
];

/// Tables placed as Citus reference tables: distributed tables may hold foreign keys to them.
const REFERENCE_TABLES: &[&str] = &["limits", "blobs"];

/// Entry points that do not take a project first, and why (each runs as a multi-shard
/// query on Citus, on the coordinator).
const NOT_PROJECT_FIRST: &[(&str, &str)] = &[
    ("list_projects", "a user's projects, across all projects"),
    ("project_heads", "the heads check: last_seq of many projects in one query"),
    ("prune_events", "retention: old events of every project"),
    ("get_session", "GET /v1/sessions/{id} names the session alone"),
    ("revoke_session", "DELETE /v1/sessions/{id} names the session alone"),
    ("inactive_sessions", "the periodic check of the sessions with open sockets, across projects"),
    ("register_blob", "blobs are content-addressed and shared by all projects (a reference table)"),
    ("blob_gc_claim", "blob garbage collection: unreferenced blobs of every project"),
    ("blob_gc_forget", "blob garbage collection: deletes the claimed blob rows"),
];

/// The name of a table's distribution column: `id` for projects, else project_id.
fn distribution_column(table: &str) -> &'static str {
    if table == "projects" { "id" } else { "project_id" }
}

#[tokio::test]
async fn tables_and_entry_points_can_be_distributed_by_project() {
    // Citus (docs/SCALING.md): a distributed table's primary key and unique constraints
    // must contain its distribution column, foreign keys between distributed tables must
    // go through it, and a function is delegated to the node holding the project by one
    // of its arguments.
    let db = connect(&fresh_database().await).await;
    let tables: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_class c
             WHERE c.relnamespace = 'synchub'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut broken = Vec::new();
    for table in &tables {
        if NOT_PROJECT_DATA.iter().any(|(t, _)| t == table) {
            continue;
        }
        let column = distribution_column(table);
        // Primary key and every unique index (constraints and partial unique indexes alike).
        let uniques = db
            .query(
                "SELECT i.indexrelid::regclass::text,
                        coalesce((SELECT array_agg(a.attname::text) FROM pg_attribute a
                                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)), '{}')
                 FROM pg_index i WHERE i.indrelid = ('synchub.' || $1)::regclass AND i.indisunique",
                &[table],
            )
            .await
            .unwrap();
        let primary: bool = db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = ('synchub.' || $1)::regclass AND indisprimary)",
                &[table],
            )
            .await
            .unwrap()
            .get(0);
        if !primary {
            broken.push(format!("{table} has no primary key"));
        }
        for row in &uniques {
            let (index, columns): (String, Vec<String>) = (row.get(0), row.get(1));
            if !columns.iter().any(|c| c == column) {
                broken.push(format!("{table}: unique index {index} ({columns:?}) lacks {column}"));
            }
        }
        // Foreign keys to other tables must pair this table's distribution column with theirs.
        let foreign = db
            .query(
                "SELECT con.conname::text, con.confrelid::regclass::text,
                        (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(con.conkey) WITH ORDINALITY k(num, n)
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num),
                        (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(con.confkey) WITH ORDINALITY k(num, n)
                         JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num)
                 FROM pg_constraint con
                 WHERE con.conrelid = ('synchub.' || $1)::regclass AND con.contype = 'f'",
                &[table],
            )
            .await
            .unwrap();
        for row in &foreign {
            let (name, target, from, to): (String, String, Vec<String>, Vec<String>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let target = target.trim_start_matches("synchub.");
            if REFERENCE_TABLES.contains(&target) {
                continue;
            }
            let paired = from.iter().zip(&to).any(|(f, t)| f == column && t == distribution_column(target));
            if !paired {
                broken.push(format!(
                    "{table}: foreign key {name} {from:?} -> {target} {to:?} does not go through {column}"
                ));
            }
        }
    }

    let entry_points = db
        .query(
            "SELECT p.proname::text, p.oid::regprocedure::text,
                    coalesce(p.proargnames[1], ''), coalesce(p.proargtypes[0]::regtype::text, '')
             FROM pg_proc p WHERE p.pronamespace = 'synchub'::regnamespace AND p.prosecdef ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert!(entry_points.len() >= 30, "only {} entry points", entry_points.len());
    for row in &entry_points {
        let (name, signature, first, first_type): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if NOT_PROJECT_FIRST.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if first_type != "uuid" || !matches!(first.as_str(), "p_project" | "project_uuid") {
            broken.push(format!("{signature} does not take the project first (p_project uuid or project_uuid uuid)"));
        }
    }
    assert!(broken.is_empty(), "not distributable by project:\n{}", broken.join("\n"));

    // The allow-lists name only what exists, so they cannot go stale.
    for (table, _) in NOT_PROJECT_DATA {
        assert!(tables.iter().any(|t| t == table), "NOT_PROJECT_DATA names {table}, which does not exist");
    }
    for (function, _) in NOT_PROJECT_FIRST {
        let exists = entry_points.iter().any(|row| row.get::<_, String>(0) == *function);
        assert!(exists, "NOT_PROJECT_FIRST names {function}, which is not an entry point");
    }
}
