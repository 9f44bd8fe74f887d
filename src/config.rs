//! Configuration: every flag has an environment equivalent (CONTRACT section 1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Settings shared by `serve` and `dev`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL connection string.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Listen address.
    #[arg(long, env = "SYNCHUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The URL agents and browsers reach the hub at (default: from the listen address).
    #[arg(long, env = "SYNCHUB_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// HS256 secret that verifies user tokens.
    #[arg(long, env = "SYNCHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWKS URL for asymmetric user tokens (RS256/ES256/EdDSA).
    #[arg(long, env = "SYNCHUB_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Required `iss` of user tokens, when set.
    #[arg(long, env = "SYNCHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of user tokens, when set.
    #[arg(long, env = "SYNCHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Algorithms accepted from the JWKS (pinned here, never taken from the token header).
    #[arg(long, env = "SYNCHUB_JWT_ALGORITHMS", value_delimiter = ',', default_value = "RS256,ES256,EdDSA")]
    pub jwt_algorithms: Vec<String>,
    /// The hub's own secret for service and container tokens.
    #[arg(long, env = "SYNCHUB_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// S3-compatible endpoint for snapshots.
    #[arg(long, env = "SYNCHUB_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The S3 endpoint presigned snapshot URLs point at, when agents reach the store at
    /// another address than the hub does (e.g. `http://minio:9000` inside a compose
    /// network, `https://s3.example.com` outside it). Default: `SYNCHUB_S3_ENDPOINT`.
    #[arg(long, env = "SYNCHUB_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,
    #[arg(long, env = "SYNCHUB_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "SYNCHUB_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "SYNCHUB_S3_PATH_STYLE", default_value_t = false)]
    pub s3_path_style: bool,
    /// S3 credentials (required with a bucket).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
    /// Blobs (binary files' bytes) no file version references are deleted after this many
    /// seconds (CONTRACT section 13).
    #[arg(long, env = "SYNCHUB_BLOB_GC_GRACE_SECS", default_value_t = 86_400)]
    pub blob_gc_grace_secs: u64,
    /// How often each hub looks for such blobs (seconds; 0: never).
    #[arg(long, env = "SYNCHUB_BLOB_GC_INTERVAL_SECS", default_value_t = 600)]
    pub blob_gc_interval_secs: u64,
    /// Local-disk snapshot storage instead of S3.
    #[arg(long, env = "SYNCHUB_STORAGE_DIR")]
    pub storage_dir: Option<PathBuf>,
    /// Browser origins allowed to open sockets (comma-separated).
    #[arg(long, env = "SYNCHUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// `text` or `json`.
    #[arg(long, env = "SYNCHUB_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// PostgreSQL role the hub's connections act as (`SET ROLE`) after migrating; empty to
    /// stay the connecting role.
    #[arg(long, env = "SYNCHUB_DB_ROLE", default_value = "synchub_runtime")]
    pub db_role: String,
    /// How long events stay in the log (seconds). Older ones are pruned; a client resuming
    /// from before that gets resync_required / 410 history_trimmed.
    #[arg(long, env = "SYNCHUB_EVENT_RETENTION_SECS", default_value_t = 7 * 86_400)]
    pub event_retention_secs: u64,
    /// Connections in the pool.
    #[arg(long, env = "SYNCHUB_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub http: HttpLimits,
    #[command(flatten)]
    pub history: HistoryConfig,
    #[command(flatten)]
    pub presence: PresenceTiming,
}

/// File history (CONTRACT section 14): retention and compact storage of older versions,
/// done by a background task of every hub (src/history.rs).
#[derive(Debug, Clone, Args)]
pub struct HistoryConfig {
    /// Every version is kept this long (seconds); then at most one per hour until
    /// `history_hourly_secs`, then one per day. `0` keeps every version forever.
    #[arg(long, env = "SYNCHUB_HISTORY_KEEP_ALL_SECS", default_value_t = 86_400)]
    pub keep_all_secs: u64,
    /// Age (seconds) until which one version per hour is kept; older: one per day.
    #[arg(long, env = "SYNCHUB_HISTORY_HOURLY_SECS", default_value_t = 30 * 86_400)]
    pub hourly_secs: u64,
    /// Store superseded versions as Fossil deltas against the next kept version.
    #[arg(long, env = "SYNCHUB_HISTORY_COMPACTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub compaction: bool,
    /// A full copy every this many versions of a file (at most this many - 1 deltas are
    /// applied to read any version).
    #[arg(long, env = "SYNCHUB_HISTORY_CHECKPOINT_EVERY", default_value_t = 50)]
    pub checkpoint_every: u32,
    /// How often the history task looks for work (milliseconds).
    #[arg(long, env = "SYNCHUB_HISTORY_INTERVAL_MS", default_value_t = 10_000)]
    pub interval_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep_all_secs: 86_400,
            hourly_secs: 30 * 86_400,
            compaction: true,
            checkpoint_every: 50,
            interval_ms: 10_000,
        }
    }
}

/// CONTRACT section 7 defaults; all configurable.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    #[arg(long, env = "SYNCHUB_MAX_FILE_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_file_bytes: usize,
    /// The largest binary file uploaded through `POST …/blobs` (CONTRACT section 13).
    #[arg(long, env = "SYNCHUB_MAX_BLOB_BYTES", default_value_t = 50 * 1024 * 1024)]
    pub max_blob_bytes: u64,
    #[arg(long, env = "SYNCHUB_MAX_FILES_PER_PROJECT", default_value_t = 10_000)]
    pub max_files_per_project: u32,
    #[arg(long, env = "SYNCHUB_MAX_PROJECTS_PER_USER", default_value_t = 50)]
    pub max_projects_per_user: u32,
    #[arg(long, env = "SYNCHUB_MAX_BYTES_PER_USER", default_value_t = 200 * 1024 * 1024)]
    pub max_bytes_per_user: u64,
    #[arg(long, env = "SYNCHUB_MAX_BULK_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_bulk_bytes: usize,
    #[arg(long, env = "SYNCHUB_MAX_BULK_ENTRIES", default_value_t = 2_000)]
    pub max_bulk_entries: u32,
    /// Largest archive body `POST /v1/projects/{id}/archive` accepts (CONTRACT section 13).
    #[arg(long, env = "SYNCHUB_MAX_ARCHIVE_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_archive_bytes: u64,
    #[arg(long, env = "SYNCHUB_MAX_EDITOR_STATE_BYTES", default_value_t = 256 * 1024)]
    pub max_editor_state_bytes: usize,
    /// Open WebSocket connections per user (or per service/container token).
    #[arg(long, env = "SYNCHUB_MAX_SOCKETS_PER_USER", default_value_t = 32)]
    pub max_sockets_per_user: usize,
    /// Bytes queued for one socket before it is closed as a slow consumer (4008).
    #[arg(long, env = "SYNCHUB_SOCKET_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub socket_queue_bytes: usize,
    /// A write to a socket that cannot complete within this many milliseconds ends the
    /// socket (4008, or the TCP connection when not even a close frame gets through).
    #[arg(long, env = "SYNCHUB_SOCKET_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub socket_write_timeout_ms: u64,
    /// Sustained writes per user per second.
    #[arg(long, env = "SYNCHUB_WRITE_RATE", default_value_t = 50.0)]
    pub write_rate: f64,
    /// Write burst per user.
    #[arg(long, env = "SYNCHUB_WRITE_BURST", default_value_t = 200.0)]
    pub write_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 2 * 1024 * 1024,
            max_blob_bytes: 50 * 1024 * 1024,
            max_files_per_project: 10_000,
            max_projects_per_user: 50,
            max_bytes_per_user: 200 * 1024 * 1024,
            max_bulk_bytes: 32 * 1024 * 1024,
            max_bulk_entries: 2_000,
            max_archive_bytes: 100 * 1024 * 1024,
            max_editor_state_bytes: 256 * 1024,
            max_sockets_per_user: 32,
            socket_queue_bytes: 8 * 1024 * 1024,
            socket_write_timeout_ms: 10_000,
            write_rate: 50.0,
            write_burst: 200.0,
        }
    }
}

/// Presence between hubs (CONTRACT section 12): each hub lists its members this often, and
/// a member of another hub that no list named for `ttl` leaves (a hub killed with -9). The
/// ttl stays below the 60 s ping timeout, so a dead socket leaves everywhere within it.
#[derive(Debug, Clone, Args)]
pub struct PresenceTiming {
    #[arg(long, env = "SYNCHUB_PRESENCE_HEARTBEAT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(50..))]
    pub presence_heartbeat_ms: u64,
    #[arg(long, env = "SYNCHUB_PRESENCE_TTL_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub presence_ttl_ms: u64,
}

impl Default for PresenceTiming {
    fn default() -> Self {
        PresenceTiming { presence_heartbeat_ms: 5_000, presence_ttl_ms: 20_000 }
    }
}

impl PresenceTiming {
    /// The ttl is kept above two heartbeats, so one lost heartbeat expires nobody.
    pub fn timing(&self) -> crate::realtime::presence::Timing {
        let heartbeat = std::time::Duration::from_millis(self.presence_heartbeat_ms);
        let ttl = std::time::Duration::from_millis(self.presence_ttl_ms).max(heartbeat * 2 + heartbeat / 2);
        crate::realtime::presence::Timing { heartbeat, ttl }
    }
}

/// HTTP connection limits (CONTRACT section 7): no client can hold a connection, a request
/// or memory indefinitely.
#[derive(Debug, Clone, Args)]
pub struct HttpLimits {
    /// Seconds a client has to send a request's headers: from accepting the connection, or
    /// from the first byte of a later request on it.
    #[arg(long, env = "SYNCHUB_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body, from the end of its headers (else 408).
    #[arg(long, env = "SYNCHUB_BODY_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: u64,
    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(long, env = "SYNCHUB_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Open connections (WebSockets included); beyond this new connections are answered 503.
    #[arg(long, env = "SYNCHUB_MAX_CONNECTIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { header_timeout_secs: 10, body_timeout_secs: 60, idle_timeout_secs: 60, max_connections: 20_000 }
    }
}

impl HttpLimits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

impl Config {
    /// A configuration with defaults and no keys: the starting point of tests and `dev`.
    pub fn for_database(database_url: String) -> Self {
        Config {
            database_url: Some(database_url),
            listen: "127.0.0.1:0".parse().expect("static address"),
            public_url: None,
            jwt_secret: None,
            jwks_url: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            signing_key: None,
            s3_endpoint: None,
            s3_public_endpoint: None,
            s3_bucket: None,
            s3_region: "us-east-1".into(),
            s3_path_style: true,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_session_token: None,
            blob_gc_grace_secs: 86_400,
            blob_gc_interval_secs: 600,
            storage_dir: None,
            allowed_origins: Vec::new(),
            log_format: "text".into(),
            db_role: "synchub_runtime".into(),
            db_pool_size: 16,
            event_retention_secs: 7 * 86_400,
            limits: Limits::default(),
            http: HttpLimits::default(),
            history: HistoryConfig::default(),
            presence: PresenceTiming::default(),
        }
    }
}
