//! `snapshot-builder`: build a project's snapshot from the database exactly as the hub does
//! (one consistent read; the same archive, byte for byte, for a cursor the hub has already
//! snapshotted), and verify or extract snapshot archives.
//!
//! Exit status: 0 on success, 1 on any failure (an invalid archive included), 2 on usage
//! errors.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use snapshot_builder::db::ProjectRead;
use snapshot_builder::{Manifest, ReadLimits};

#[derive(Parser)]
#[command(name = "snapshot-builder", version, about = "Build, verify and extract synchub snapshots")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a project's snapshot from the database at one consistent cursor. Read-only:
    /// nothing is recorded in the database or uploaded.
    Build {
        /// PostgreSQL connection string; TLS through `sslmode`/`sslrootcert`, as for the hub.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// PostgreSQL role to act as (`SET ROLE`), as the hub does; empty to stay the
        /// connecting role.
        #[arg(long, env = "SYNCHUB_DB_ROLE", default_value = "synchub_runtime")]
        db_role: String,
        /// The project's id.
        #[arg(long)]
        project: uuid::Uuid,
        /// Where to write the archive; `-` for stdout. Default: `<snapshot_id>.zip`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an archive completely (names, manifest, sizes, hashes) and print its summary.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Verify and extract an archive into DIR (created if missing; must be empty). On
    /// failure DIR is left empty.
    Extract {
        file: PathBuf,
        dir: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// Caps for reading archives (defaults: the contract's project limits).
#[derive(Args)]
struct LimitArgs {
    #[arg(long, default_value_t = ReadLimits::default().max_entries)]
    max_entries: usize,
    #[arg(long, default_value_t = ReadLimits::default().max_total_bytes)]
    max_total_bytes: u64,
    #[arg(long, default_value_t = ReadLimits::default().max_file_bytes)]
    max_file_bytes: u64,
    #[arg(long, default_value_t = ReadLimits::default().max_ratio)]
    max_ratio: u64,
    /// The cap of entries the manifest marks binary.
    #[arg(long, default_value_t = ReadLimits::default().max_binary_file_bytes)]
    max_binary_file_bytes: u64,
}

impl LimitArgs {
    fn limits(&self) -> ReadLimits {
        ReadLimits {
            max_entries: self.max_entries,
            max_total_bytes: self.max_total_bytes,
            max_file_bytes: self.max_file_bytes,
            max_ratio: self.max_ratio,
            max_binary_file_bytes: self.max_binary_file_bytes,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build { database_url, db_role, project, out } => build(&database_url, &db_role, project, out),
        Command::Verify { file, limits } => verify(&file, &limits.limits()),
        Command::Extract { file, dir, limits } => extract(&file, &dir, &limits.limits()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("snapshot-builder: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn summary(manifest: &Manifest) -> String {
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    format!(
        "project {} snapshot {} cursor {} created_at {}: {} files, {} bytes",
        manifest.project_id,
        manifest.snapshot_id,
        manifest.cursor,
        manifest.created_at,
        manifest.files.len(),
        bytes
    )
}

fn open(file: &Path) -> anyhow::Result<File> {
    File::open(file).with_context(|| format!("opening {}", file.display()))
}

fn verify(file: &Path, limits: &ReadLimits) -> anyhow::Result<()> {
    let manifest = snapshot_builder::verify(io::BufReader::new(open(file)?), limits)
        .with_context(|| format!("{} is not a valid snapshot", file.display()))?;
    println!("ok: {}", summary(&manifest));
    Ok(())
}

fn extract(file: &Path, dir: &Path, limits: &ReadLimits) -> anyhow::Result<()> {
    let archive = io::BufReader::new(open(file)?);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifest = snapshot_builder::extract(archive, dir, limits)
        .with_context(|| format!("extracting {} into {}", file.display(), dir.display()))?;
    println!("extracted: {}", summary(&manifest));
    Ok(())
}

fn build(database_url: &str, db_role: &str, project: uuid::Uuid, out: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (archive, manifest) = runtime.block_on(build_archive(database_url, db_role, project))?;
    let mut archive = archive;
    let summary = summary(&manifest);
    match out {
        Some(path) if path.as_os_str() == "-" => {
            archive.as_file_mut().seek(SeekFrom::Start(0))?;
            let mut stdout = BufWriter::new(io::stdout().lock());
            io::copy(archive.as_file_mut(), &mut stdout).context("writing the archive to stdout")?;
            stdout.flush().context("writing the archive to stdout")?;
        }
        out => {
            let path = out.unwrap_or_else(|| PathBuf::from(format!("{}.zip", manifest.snapshot_id)));
            persist(archive, &path)?;
            eprintln!("wrote {}", path.display());
        }
    }
    eprintln!("built: {summary}");
    Ok(())
}

/// Moves the finished archive into place atomically (a temp file next to it, renamed).
fn persist(mut archive: tempfile::NamedTempFile, path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut staged = tempfile::NamedTempFile::new_in(parent).with_context(|| format!("writing {}", path.display()))?;
    archive.as_file_mut().seek(SeekFrom::Start(0))?;
    io::copy(archive.as_file_mut(), staged.as_file_mut()).with_context(|| format!("writing {}", path.display()))?;
    staged.as_file().sync_all()?;
    staged.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn build_archive(
    database_url: &str,
    db_role: &str,
    project: uuid::Uuid,
) -> anyhow::Result<(tempfile::NamedTempFile, Manifest)> {
    let target = synchub_pg_tls::PgConnect::from_url(database_url)?;
    let (mut client, connection) = target.connect().await.context("connecting to PostgreSQL")?;
    let connection = tokio::spawn(connection);
    if !db_role.is_empty() {
        client
            .batch_execute(&format!("SET ROLE \"{}\"", db_role.replace('"', "\"\"")))
            .await
            .with_context(|| format!("SET ROLE {db_role}"))?;
    }
    let archive = tempfile::NamedTempFile::new().context("creating a temporary file")?;
    let writer = archive.reopen()?;
    let manifest = {
        let read = ProjectRead::begin(&mut client, project).await.context("reading the project")?;
        let Some(read) = read else { bail!("project {project} not found") };
        // Same created_at rule as the hub: a cursor already snapshotted keeps its recorded time.
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let meta = read.meta(now);
        read.build(meta, writer).await?.0
    };
    drop(client);
    let _ = connection.await;
    Ok((archive, manifest))
}
