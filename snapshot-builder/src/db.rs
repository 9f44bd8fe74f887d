//! The database side of a snapshot (feature `db`): the project's files and cursor from one
//! read-only REPEATABLE READ transaction, so hydrating from the archive and then joining
//! with `since = cursor` neither misses nor repeats a change. The hub and the CLI both
//! build through [`ProjectRead`], so their archives for one cursor are byte-identical.
//!
//! The files are read in two passes of that transaction: first their metadata (path, size,
//! sha256, version, file type; no content), from which the manifest is known up front, so
//! the builder can write it at its sorted place among the files; then their contents, in
//! path order, streamed from PostgreSQL into the synchronous [`build`](crate::build) (on a
//! blocking thread) through a bounded channel: memory stays bounded whatever the project's
//! size. The builder checks each content against its metadata.

use std::fmt;
use std::future::Future;
use std::io::{Seek, Write};
use std::pin::Pin;

use futures_util::{StreamExt, pin_mut};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, IsolationLevel, Transaction};
use uuid::Uuid;

use crate::{BuildError, BuildStats, FileContent, Manifest, ManifestFile, SnapshotMeta};

/// The metadata of the current files, in byte order of path. Size and sha256 are computed
/// here from the content (its UTF-8 bytes, as the content pass sends them), not taken from
/// stored columns, so the two passes describe the same bytes; only the small results
/// cross the wire.
/// Binary files (a blob instead of content) are described by their blob, whose bytes the
/// builder checks as it checks text.
const METADATA_QUERY: &str = "SELECT f.file_path, f.file_type, f.version, \
       CASE WHEN f.blob_sha256 IS NULL THEN octet_length(b.bytes) ELSE f.size END, \
       coalesce(f.blob_sha256, encode(sha256(b.bytes), 'hex')), f.blob_sha256 IS NOT NULL \
FROM synchub.list_current_files($1) f CROSS JOIN LATERAL (SELECT convert_to(f.content, 'UTF8') AS bytes) b \
ORDER BY f.file_path COLLATE \"C\"";

/// The contents of the current files, in byte order of path (`list_current_files` sorts).
const CONTENT_QUERY: &str = "SELECT file_path, content, blob_sha256 FROM synchub.list_current_files($1)";

/// Reads a blob's bytes (binary files) for the builder: the hub fetches them from its
/// storage. At most one fetched binary waits in the row channel at a time, so memory
/// stays bounded by about two blobs.
pub type BlobFetch =
    std::sync::Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> + Send + Sync>;

/// Rows in flight between the database reader and the builder thread.
const ROWS_IN_FLIGHT: usize = 32;

/// A snapshot's id follows from its project and cursor (one cursor is one state of the
/// files), so the same files and cursor give the same manifest and byte-identical archives.
pub fn snapshot_id(project: Uuid, cursor: i64) -> Uuid {
    let digest = Sha256::digest(format!("synchub-snapshot:{project}:{cursor}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Why building from the database failed.
#[derive(Debug)]
pub enum DbBuildError {
    /// Preparing or running the listing, or committing, failed.
    Db(tokio_postgres::Error),
    /// The row stream failed midway.
    Rows(tokio_postgres::Error),
    /// The builder refused the files or could not write.
    Build(BuildError),
    /// The builder thread panicked or was cancelled.
    Builder(tokio::task::JoinError),
}

impl fmt::Display for DbBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbBuildError::Db(err) => write!(f, "database: {err}"),
            DbBuildError::Rows(err) => write!(f, "reading files: {err}"),
            DbBuildError::Build(err) => write!(f, "building snapshot: {err}"),
            DbBuildError::Builder(err) => write!(f, "snapshot builder thread: {err}"),
        }
    }
}

impl std::error::Error for DbBuildError {}

/// One consistent read of a project: its cursor and latest snapshot record now, its files
/// when [`ProjectRead::build`] streams them, all from the same transaction.
pub struct ProjectRead<'c> {
    tx: Transaction<'c>,
    project: Uuid,
    cursor: i64,
    latest: Option<Value>,
}

impl<'c> ProjectRead<'c> {
    /// Opens the transaction and reads the cursor (`last_seq`) and the latest snapshot
    /// record (`synchub.latest_snapshot`). `Ok(None)` when the project does not exist.
    pub async fn begin(client: &'c mut Client, project: Uuid) -> Result<Option<Self>, tokio_postgres::Error> {
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let head = tx.query_opt("SELECT last_seq FROM synchub.project_heads(ARRAY[$1]::uuid[])", &[&project]).await?;
        let Some(head) = head else { return Ok(None) };
        let cursor: i64 = head.try_get(0)?;
        let latest: Option<Value> =
            tx.query_one("SELECT synchub.latest_snapshot($1)", &[&project]).await?.try_get(0)?;
        Ok(Some(ProjectRead { tx, project, cursor, latest }))
    }

    /// The project's `last_seq` in this read.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// The latest recorded snapshot (`synchub.latest_snapshot`), if any.
    pub fn latest(&self) -> Option<&Value> {
        self.latest.as_ref()
    }

    /// The snapshot's identity at this cursor. `created_at` is `now`, unless a snapshot of
    /// this very cursor was recorded before: then it is that one's, so a rebuild (a lost
    /// object, or the CLI) gives the same archive byte for byte.
    pub fn meta(&self, now: String) -> SnapshotMeta {
        let recorded = self
            .latest
            .as_ref()
            .filter(|row| row["cursor"].as_i64() == Some(self.cursor))
            .and_then(|row| row["created_at"].as_str());
        SnapshotMeta {
            project_id: self.project.to_string(),
            snapshot_id: snapshot_id(self.project, self.cursor).to_string(),
            cursor: self.cursor,
            created_at: recorded.map_or(now, str::to_owned),
        }
    }

    /// Reads the current files' metadata, then streams their contents into
    /// [`build`](crate::build) on a blocking thread, then ends the transaction.
    pub async fn build<W>(self, meta: SnapshotMeta, writer: W) -> Result<(Manifest, BuildStats), DbBuildError>
    where
        W: Write + Seek + Send + 'static,
    {
        self.build_with_blobs(meta, writer, None).await
    }

    /// [`ProjectRead::build`], reading binary files' bytes through `blobs` (without it, a
    /// project with binary files cannot be built).
    pub async fn build_with_blobs<W>(
        self,
        meta: SnapshotMeta,
        writer: W,
        blobs: Option<BlobFetch>,
    ) -> Result<(Manifest, BuildStats), DbBuildError>
    where
        W: Write + Seek + Send + 'static,
    {
        let ProjectRead { tx, project, .. } = self;
        let files = list_metadata(&tx, project).await?;
        let (tx_rows, mut rx_rows) = tokio::sync::mpsc::channel::<Result<FileContent, String>>(ROWS_IN_FLIGHT);
        let builder = tokio::task::spawn_blocking(move || {
            let rows = std::iter::from_fn(move || rx_rows.blocking_recv());
            crate::build(meta, files, rows, writer)
        });
        let streamed = stream_rows(&tx, project, &tx_rows, blobs.as_ref()).await;
        drop(tx_rows);
        let built = builder.await.map_err(DbBuildError::Builder)?;
        let committed = tx.commit().await.map_err(DbBuildError::Db);
        // The first failure is the cause: a failed read also fails the builder (`Source`).
        streamed?;
        committed?;
        built.map_err(DbBuildError::Build)
    }
}

/// The manifest entries of the current files (first pass: no content crosses the wire).
async fn list_metadata(tx: &Transaction<'_>, project: Uuid) -> Result<Vec<ManifestFile>, DbBuildError> {
    let rows = tx.query(METADATA_QUERY, &[&project]).await.map_err(DbBuildError::Db)?;
    rows.iter()
        .map(|row| {
            Ok(ManifestFile {
                path: row.try_get(0)?,
                file_type: row.try_get(1)?,
                version: i64::from(row.try_get::<_, i32>(2)?),
                size: u64::try_from(row.try_get::<_, i32>(3)?).unwrap_or_default(),
                sha256: row.try_get(4)?,
                binary: row.try_get(5)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(DbBuildError::Db)
}

/// Sends every current file's content to the builder (second pass); stops early when the
/// builder has given up.
async fn stream_rows(
    tx: &Transaction<'_>,
    project: Uuid,
    rows_out: &tokio::sync::mpsc::Sender<Result<FileContent, String>>,
    blobs: Option<&BlobFetch>,
) -> Result<(), DbBuildError> {
    let statement = tx.prepare(CONTENT_QUERY).await.map_err(DbBuildError::Db)?;
    let rows = tx.query_raw(&statement, [&project]).await.map_err(DbBuildError::Db)?;
    pin_mut!(rows);
    while let Some(row) = rows.next().await {
        let row = match row.and_then(|row| {
            Ok((
                row.try_get::<_, String>(0)?,
                row.try_get::<_, Option<String>>(1)?,
                row.try_get::<_, Option<String>>(2)?,
            ))
        }) {
            Ok(row) => row,
            Err(err) => {
                let _ = rows_out.send(Err(err.to_string())).await;
                return Err(DbBuildError::Rows(err));
            }
        };
        let file = match row {
            (path, _, Some(sha256)) => fetch_blob(path, sha256, rows_out, blobs).await,
            (path, content, None) => Ok(FileContent { path, content: content.unwrap_or_default().into_bytes() }),
        };
        if rows_out.send(file).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// A binary file's bytes, fetched once the builder has taken every earlier row but one
/// (so fetched blobs never pile up in the channel).
async fn fetch_blob(
    path: String,
    sha256: String,
    rows_out: &tokio::sync::mpsc::Sender<Result<FileContent, String>>,
    blobs: Option<&BlobFetch>,
) -> Result<FileContent, String> {
    let Some(blobs) = blobs else {
        return Err(format!(
            "{path} is a binary file whose bytes are in blob storage: build the snapshot through the hub"
        ));
    };
    // Bounded: the builder takes a row or drops the channel (then the send fails).
    while rows_out.capacity() + 1 < ROWS_IN_FLIGHT && !rows_out.is_closed() {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let content = blobs(sha256).await.map_err(|err| format!("reading the bytes of {path}: {err}"))?;
    Ok(FileContent { path, content })
}
