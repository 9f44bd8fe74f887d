//! The application object, built once from configuration and shared by every handler as
//! [`AppState`]. No globals.

use std::ops::Deref;
use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::{Authenticator, Principal, tokens::HubKeys, users::UserVerifier};
use crate::config::Config;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::origins::AllowedOrigins;
use crate::realtime::{Broker, wakeups::Wakeups};
use crate::snapshots::storage::Storage;

pub use crate::server::serve;

pub struct App {
    pub config: Config,
    pub db: Db,
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    pub openapi: Arc<Value>,
    pub broker: Arc<Broker>,
    pub wakeups: Wakeups,
    /// Snapshot storage; None when neither S3 nor a storage dir is configured.
    pub storage: Option<Arc<Storage>>,
    /// One snapshot build at a time per project.
    pub snapshot_locks: crate::snapshots::service::BuildLocks,
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

impl AppState {
    /// Called after a write to `project` committed: local feeds read it now, other hubs
    /// are told after the commit.
    pub fn committed(&self, project: Uuid) {
        self.wakeups.committed(project);
    }

    /// Called after members of `project` changed: subscribers who lost access are dropped.
    pub fn members_changed(&self, project: Uuid) {
        self.wakeups.members_changed(project);
    }

    /// A session was revoked: its sockets close with 4010 on every hub.
    pub fn session_revoked(&self, session: Uuid) {
        self.wakeups.session_revoked(session);
    }

    /// Verifies a bearer token; container tokens must also belong to a live session
    /// (not revoked, within its max lifetime). Returns the principal and the token's exp.
    pub async fn authenticate(&self, token: &str) -> Result<(Principal, i64), ApiError> {
        let (principal, exp) = self.auth.verify_with_expiry(token).await?;
        if let Principal::Container { session_id, project_id } = &principal {
            let client = self.db.pool().get().await?;
            let active: bool = client
                .query_one("SELECT synchub.session_active($1, $2)", &[session_id, project_id])
                .await?
                .try_get(0)
                .map_err(ApiError::internal)?;
            if !active {
                return Err(ApiError::Unauthenticated("the session was revoked or has ended".into()));
            }
        }
        Ok((principal, exp))
    }
}

/// Process-wide setup that must happen once: the rustls crypto provider used by the
/// HTTP client (JWKS fetches).
pub fn init_process() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl App {
    /// Migrates the database, connects the pool and assembles the router.
    pub async fn build(config: Config) -> anyhow::Result<(AppState, axum::Router)> {
        init_process();
        let origins = AllowedOrigins::parse(&config.allowed_origins)?;
        if origins.allows_any() {
            tracing::warn!(
                "SYNCHUB_ALLOWED_ORIGINS is *: any web page may call the API and open sockets (with a token)"
            );
        }
        let database_url = config.database_url.clone().context("DATABASE_URL is required")?;
        db::migrate(&database_url, &config.limits).await.context("migrating the database")?;
        let db = Db::connect(&database_url, config.db_pool_size, &config.db_role)?;
        let users = UserVerifier::new(
            config.jwt_secret.as_deref(),
            config.jwks_url.as_deref(),
            &config.jwt_algorithms,
            config.jwt_issuer.clone(),
            config.jwt_audience.clone(),
        )?;
        if config.jwt_secret.is_none() && config.jwks_url.is_none() {
            tracing::warn!("neither SYNCHUB_JWT_SECRET nor SYNCHUB_JWKS_URL is set: no user token will be accepted");
        }
        let auth = Authenticator { users, hub: HubKeys::new(config.signing_key.as_deref()) };
        let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
        let storage =
            Storage::from_config(&config, &public_url).await.context("configuring snapshot storage")?.map(Arc::new);
        let (routes, openapi) = crate::router::api();
        let mut metrics = Metrics::default();
        metrics.register_pool(db.pool().clone());
        let limiter =
            RateLimiter::new(config.limits.write_rate, config.limits.write_burst, metrics.rate_limited.clone());
        let broker = Broker::new(db.clone(), metrics.events_published.clone());
        let retention = std::time::Duration::from_secs(config.event_retention_secs);
        let wakeups =
            Wakeups::start(broker.clone(), db.clone(), database_url, retention, metrics.listen_reconnects.clone());
        let state = AppState(Arc::new(App {
            config,
            db,
            auth,
            limiter,
            metrics,
            openapi: Arc::new(openapi),
            broker,
            wakeups,
            storage,
            snapshot_locks: Default::default(),
            public_url,
            origins,
        }));
        let router = crate::router::build(routes, state.clone());
        Ok((state, router))
    }
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
