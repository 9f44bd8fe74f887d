//! The application object, built once from configuration and shared by every handler as
//! [`AppState`]. No globals.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRef;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::auth::Authenticator;
use crate::auth::policy::Actor;
use crate::config::Config;
use crate::db::Db;
use crate::error::ApiError;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::origins::AllowedOrigins;
use crate::realtime::outbox::EventFrame;
use crate::realtime::{broker::Broker, presence::Presence, wakeups::Wakeups};
use crate::snapshots::{locks::BuildLocks, storage::Storage};
use crate::tasks::Tasks;

pub struct App {
    pub config: Config,
    pub db: Db,
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    pub openapi: Arc<Value>,
    pub broker: Arc<Broker>,
    pub wakeups: Wakeups,
    /// Who has each channel open, on every hub (CONTRACT section 12).
    pub presence: Arc<Presence>,
    /// Every long-lived background task; `serve` stops them and waits, with a deadline.
    pub tasks: Tasks,
    /// Snapshot storage; None when neither S3 nor a storage dir is configured.
    pub storage: Option<Arc<Storage>>,
    /// One snapshot build at a time per project.
    pub snapshot_locks: BuildLocks,
    /// Where agents and browsers reach this hub (for URLs the hub hands out).
    pub public_url: String,
    /// Browser origins allowed to call the API and open sockets (CORS and the upgrade).
    pub origins: AllowedOrigins,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// Handlers that need only the snapshot storage take only it.
impl FromRef<AppState> for Option<Arc<Storage>> {
    fn from_ref(state: &AppState) -> Self {
        state.storage.clone()
    }
}

impl AppState {
    /// Called after a write to `project` committed: local feeds read it now, other hubs
    /// are told after the commit.
    pub fn committed(&self, project: Uuid) {
        self.wakeups.committed(project, None);
    }

    /// [`AppState::committed`] for a write whose statement also read back its event: local
    /// feeds are handed `own_event` instead of reading the log (when it is the next seq
    /// they owe).
    pub fn committed_write(&self, project: Uuid, own_event: Option<Arc<EventFrame>>) {
        self.wakeups.committed(project, own_event);
    }

    /// Called after members of `project` changed: subscribers who lost access are dropped.
    pub fn members_changed(&self, project: Uuid) {
        self.wakeups.members_changed(project);
    }

    /// A session was revoked: its sockets close with 4010 on every hub.
    pub fn session_revoked(&self, session: Uuid) {
        self.wakeups.session_revoked(session);
    }

    /// A write by `actor` through one SQL function answering JSON: it costs one token of
    /// the caller's write bucket (429 when empty), then runs as the actor.
    pub async fn write_as<T: DeserializeOwned>(
        &self,
        actor: &Actor,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<T, ApiError> {
        self.limiter.check(&actor.rate_key(), 1.0)?;
        self.db.typed(actor.db(), sql, params).await
    }
}

/// Process-wide setup that must happen once: the rustls crypto provider used by the
/// HTTP client (JWKS fetches).
pub fn init_process() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
