//! The database: migrations (refinery, embedded), the pool (deadpool-postgres), and the
//! one way handlers call SQL functions.

use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use synchub_pg_tls::{PgConnect, RustlsStream};
use tokio_postgres::row::RowIndex;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, Connection, Row, Socket};

use crate::auth::Principal;
use crate::config::Limits;
use crate::error::ApiError;

pub mod functions;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the advisory lock that serializes migrations of concurrently starting hubs.
const MIGRATION_LOCK: i64 = 0x5359_4e43_4855_4201;

/// Opens one connection outside the pool (migrations, LISTEN) with the `DATABASE_URL`'s
/// TLS settings (`sslmode`, `sslrootcert`: see the synchub-pg-tls crate).
pub async fn connect(database_url: &str) -> anyhow::Result<(Client, Connection<Socket, RustlsStream<Socket>>)> {
    Ok(PgConnect::from_url(database_url)?.connect().await?)
}

/// Applies pending migrations and then every SQL function file (idempotent; see
/// [`functions`]), then writes the configured limits where the SQL functions read them.
pub async fn migrate(database_url: &str, limits: &Limits) -> anyhow::Result<()> {
    let (mut client, connection) = connect(database_url).await?;
    let connection = tokio::spawn(connection);
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let migrated = migrate_locked(&mut client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    migrated?;
    client
        .execute(
            "UPDATE synchub.limits SET max_file_bytes = $1, max_files_per_project = $2,
                 max_projects_per_user = $3, max_bytes_per_user = $4, max_bulk_entries = $5,
                 max_editor_state_bytes = $6, max_blob_bytes = $7",
            &[
                &(limits.max_file_bytes as i32),
                &(limits.max_files_per_project as i32),
                &(limits.max_projects_per_user as i32),
                &(limits.max_bytes_per_user as i64),
                &(limits.max_bulk_entries as i32),
                &(limits.max_editor_state_bytes as i32),
                &(limits.max_blob_bytes as i64),
            ],
        )
        .await?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

/// The numbered migrations (tables, roles, grants), then the functions of every concern.
async fn migrate_locked(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let report = embedded::migrations::runner().run_async(client).await.map_err(|err| {
        let before_baseline =
            matches!(err.kind(), refinery::error::Kind::DivergentVersion(..) | refinery::error::Kind::MissingVersion(..));
        let err = anyhow::Error::from(err);
        if before_baseline {
            // V1..V13 were squashed into V1__baseline before any release.
            err.context("this database was migrated by a synchub from before the squashed baseline: recreate it (for `synchub dev`, remove its data dir)")
        } else {
            err
        }
    })?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    functions::apply(client).await
}

/// The connection pool. Connections act as `role` (least privilege) when one is given.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    pub fn connect(database_url: &str, pool_size: usize, role: &str) -> anyhow::Result<Self> {
        let target = PgConnect::from_url(database_url)?;
        let manager = Manager::from_config(
            target.config().clone(),
            target.tls(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let mut builder = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)));
        if !role.is_empty() {
            let statement = format!("SET ROLE \"{}\"", role.replace('"', "\"\""));
            builder = builder.post_create(Hook::async_fn(move |client, _| {
                let statement = statement.clone();
                Box::pin(async move { client.batch_execute(&statement).await.map_err(HookError::Backend) })
            }));
        }
        Ok(Db { pool: builder.build()? })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs a statement returning one JSON value (the shape of most synchub functions).
    /// Orchestrator calls run in a transaction marked `synchub.service`, which the SQL
    /// role check treats as owner of every project.
    pub async fn json(
        &self,
        principal: &Principal,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Value, ApiError> {
        let rows = self.query(principal, sql, params).await?;
        let row = rows.into_iter().next().ok_or_else(|| ApiError::internal("function returned no row"))?;
        Ok(row.column::<Option<Value>>(0)?.unwrap_or(Value::Null))
    }

    /// [`Db::json`], read into the protocol crate's type of that answer: the type is the one
    /// definition of the shape (an answer that does not fit it is a hub bug: 500).
    pub async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        principal: &Principal,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<T, ApiError> {
        let value = self.json(principal, sql, params).await?;
        serde_path_to_error::deserialize(value)
            .map_err(|err| ApiError::internal(format!("{sql}: answer does not fit its type: {err}")))
    }

    /// Runs a statement and returns its rows, with the same service marking as [`Db::json`].
    pub async fn query(
        &self,
        principal: &Principal,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, ApiError> {
        let mut client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        if matches!(principal, Principal::Service) {
            let tx = begin(&mut client, principal).await?;
            let rows = tx.query(&statement, params).await?;
            tx.commit().await?;
            Ok(rows)
        } else {
            Ok(client.query(&statement, params).await?)
        }
    }

    /// Whether the database answers and carries this binary's migrations (a newer hub of
    /// a rolling deploy may have applied more). The history table is the connecting
    /// role's, so the check leaves the runtime role for its one read-only transaction.
    pub async fn readiness(&self) -> Readiness {
        let Ok(mut client) = self.pool.get().await else { return Readiness::Unreachable };
        let check = async {
            let tx = client.build_transaction().read_only(true).start().await?;
            tx.batch_execute("SET LOCAL ROLE NONE").await?;
            let row = tx.query_one("SELECT max(version)::int8 FROM refinery_schema_history", &[]).await?;
            let applied: Option<i64> = row.try_get(0)?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(applied)
        };
        match check.await {
            Ok(applied) if applied >= latest_migration() => Readiness::Migrated,
            Ok(_) => Readiness::Behind,
            // Answered with an error (no history table): reachable, not migrated.
            Err(err) if err.as_db_error().is_some() => Readiness::Behind,
            Err(_) => Readiness::Unreachable,
        }
    }
}

/// Begins a transaction on a pooled connection, marked as the service's when `principal` is
/// (the SQL role check then treats it as owner of every project; see [`Db::json`]). For
/// writes that take several statements (archive imports).
pub async fn begin<'c>(
    client: &'c mut deadpool_postgres::Client,
    principal: &Principal,
) -> Result<deadpool_postgres::Transaction<'c>, ApiError> {
    let tx = client.transaction().await?;
    if matches!(principal, Principal::Service) {
        tx.batch_execute("SET LOCAL synchub.service = 'on'").await?;
    }
    Ok(tx)
}

/// What readiness found in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Unreachable,
    /// Reachable, but this binary's migrations are not all applied.
    Behind,
    Migrated,
}

/// The version of this binary's newest embedded migration.
fn latest_migration() -> Option<i64> {
    embedded::migrations::runner().get_migrations().iter().map(|migration| i64::from(migration.version())).max()
}

/// Reads SQL results without panicking: every column of a row the hub reads goes through
/// [`RowExt::column`], so a missing column, an unexpected type or a NULL where a value is
/// required is an internal error (500), never a panic that drops the connection.
pub trait RowExt {
    fn column<'a, T: FromSql<'a>>(&'a self, index: impl RowIndex + std::fmt::Display) -> Result<T, ApiError>;
}

impl RowExt for Row {
    fn column<'a, T: FromSql<'a>>(&'a self, index: impl RowIndex + std::fmt::Display) -> Result<T, ApiError> {
        // The error names the column; 5xx bodies never show it.
        self.try_get(index).map_err(ApiError::internal)
    }
}
