//! The SQL functions: one definition of each, in `migrations/functions/<concern>.sql`,
//! applied again on every migrate (Flyway's repeatable migrations; refinery has none).
//!
//! Refinery ignores these files (their names are not `V<n>__*.sql`); they are embedded here,
//! and build.rs re-embeds them when one changes. [`apply`] runs after the numbered
//! migrations, under the same advisory lock, in one transaction: every file
//! (`CREATE OR REPLACE`: function oids stay, so what running hubs prepared stays valid), then
//! the functions no file defines any more are dropped, then the privileges are set from
//! the definitions. A definition whose return type or parameter names changed cannot be
//! replaced in place: then the transaction is rolled back and run again dropping every
//! synchub function first.

use anyhow::Context;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// The function files in the order they are applied: SQL-language bodies are checked when
/// they are created, so a file comes after the files of the functions its SQL bodies call.
pub const FILES: &[(&str, &str)] = &[
    ("common.sql", include_str!("../../migrations/functions/common.sql")),
    ("auth.sql", include_str!("../../migrations/functions/auth.sql")),
    ("projects.sql", include_str!("../../migrations/functions/projects.sql")),
    ("blobs.sql", include_str!("../../migrations/functions/blobs.sql")),
    ("files.sql", include_str!("../../migrations/functions/files.sql")),
    ("github.sql", include_str!("../../migrations/functions/github.sql")),
    ("events.sql", include_str!("../../migrations/functions/events.sql")),
    ("realtime.sql", include_str!("../../migrations/functions/realtime.sql")),
    ("sessions.sql", include_str!("../../migrations/functions/sessions.sql")),
    ("snapshots.sql", include_str!("../../migrations/functions/snapshots.sql")),
    ("editor_state.sql", include_str!("../../migrations/functions/editor_state.sql")),
];

/// Drops every function of the schema (the way back from a definition that cannot be
/// replaced in place). Nothing depends on them: no view, default or trigger calls one.
const DROP_ALL: &str = "
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOR v_fn IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'synchub'::regnamespace LOOP
        EXECUTE format('DROP FUNCTION %s', v_fn);
    END LOOP;
END $$";

/// Runs after the files, in their transaction. A function whose catalog row this
/// transaction did not write is defined by no file (anymore): it is dropped. Then the
/// grants follow the definitions: nothing is executable by PUBLIC; SECURITY DEFINER
/// functions (the entry points) are executable by synchub_runtime, and one that does not
/// pin its search_path fails the migration.
const FINISH: &str = "
DO $$
DECLARE
    v_fn regprocedure;
    v_written boolean;
    v_definer boolean;
    v_config text[];
BEGIN
    FOR v_fn, v_written, v_definer, v_config IN
        SELECT p.oid::regprocedure, p.xmin = pg_current_xact_id()::xid, p.prosecdef, p.proconfig
        FROM pg_proc p WHERE p.pronamespace = 'synchub'::regnamespace
    LOOP
        IF NOT v_written THEN
            EXECUTE format('DROP FUNCTION %s', v_fn);
            CONTINUE;
        END IF;
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, synchub_runtime', v_fn);
        IF v_definer THEN
            IF NOT coalesce(v_config @> ARRAY['search_path=pg_catalog, pg_temp'], false) THEN
                RAISE EXCEPTION '% is SECURITY DEFINER without SET search_path = pg_catalog, pg_temp', v_fn;
            END IF;
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO synchub_runtime', v_fn);
        END IF;
    END LOOP;
END $$";

/// Applies every function file, drops what they no longer define and sets the grants, in
/// one transaction. The caller holds the migration lock.
pub async fn apply(client: &mut Client) -> anyhow::Result<()> {
    match apply_once(client, false).await {
        Err(err)
            if err.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.code())
                == Some(&SqlState::INVALID_FUNCTION_DEFINITION) =>
        {
            tracing::info!(error = %err, "a function changed its result or parameter names: recreating all");
            apply_once(client, true).await
        }
        other => other,
    }
}

async fn apply_once(client: &mut Client, drop_all: bool) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    if drop_all {
        tx.batch_execute(DROP_ALL).await?;
    }
    for (name, sql) in FILES {
        tx.batch_execute(sql).await.with_context(|| format!("applying migrations/functions/{name}"))?;
    }
    tx.batch_execute(FINISH).await.context("dropping stale functions and granting")?;
    tx.commit().await?;
    Ok(())
}
