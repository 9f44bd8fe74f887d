//! `synchub dev`: the embedded default (CONTRACT section 9). Everything lives under one
//! data directory: a private PostgreSQL cluster, generated keys, local snapshot storage.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::embedded_pg::{Durability, EmbeddedPostgres, write_private};

/// Browser origins the dev hub allows unless `SYNCHUB_ALLOWED_ORIGINS` says otherwise: any
/// local dev server, whatever its port.
pub const DEFAULT_ORIGINS: [&str; 2] = ["http://localhost:*", "http://127.0.0.1:*"];

/// The dev hub's secrets, generated once and kept in `DIR/keys.json` (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevKeys {
    pub jwt_secret: String,
    pub signing_key: String,
}

impl DevKeys {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("keys.json")
    }

    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read(Self::path(data_dir)) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).context("reading keys.json")?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(keys) = Self::load(data_dir)? {
            return Ok(keys);
        }
        let random = || {
            let bytes: [u8; 32] = rand::random();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let keys = DevKeys { jwt_secret: random(), signing_key: random() };
        std::fs::create_dir_all(data_dir)?;
        write_private(&Self::path(data_dir), &serde_json::to_string_pretty(&keys)?)?;
        Ok(keys)
    }
}

/// Starts (or reuses) the private cluster under `DIR/pg` and makes sure the `synchub`
/// database exists. Returns the server (stopped when dropped by the caller) and its URL.
pub async fn start_database(data_dir: &Path) -> anyhow::Result<(EmbeddedPostgres, String)> {
    let pg_dir = data_dir.join("pg");
    let server = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&pg_dir, Durability::Full)).await??;
    let (client, connection) = tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = 'synchub'", &[]).await?.is_some();
    if !exists {
        client.batch_execute("CREATE DATABASE synchub").await?;
    }
    let url = server.url("synchub");
    Ok((server, url))
}
