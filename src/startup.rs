//! Startup: the one place the application and its router are assembled from
//! configuration. [`crate::app`] only defines the state handlers share; this module is the
//! only one that knows both the state and the route table.

use std::sync::Arc;

use anyhow::Context;

use crate::app::{App, AppState, init_process};
use crate::auth::{Authenticator, tokens::HubKeys, users::UserVerifier};
use crate::config::Config;
use crate::db::{self, Db};
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::origins::AllowedOrigins;
use crate::realtime::{broker::Broker, presence::Presence, wakeups::Wakeups};
use crate::snapshots::storage::Storage;
use crate::tasks::Tasks;

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
        let auth =
            Authenticator { users, hub: HubKeys::new(config.signing_key.as_deref()), sessions: db.pool().clone() };
        let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
        let storage =
            Storage::from_config(&config, &public_url).await.context("configuring snapshot storage")?.map(Arc::new);
        let (routes, openapi) = crate::router::api();
        let mut metrics = Metrics::default();
        metrics.register_pool(db.pool().clone());
        let limiter =
            RateLimiter::new(config.limits.write_rate, config.limits.write_burst, metrics.rate_limited.clone());
        let tasks = Tasks::new();
        let broker = Broker::new(db.clone(), &metrics, tasks.clone());
        let retention = std::time::Duration::from_secs(config.event_retention_secs);
        let presence = Presence::start(db.clone(), config.presence.timing(), &tasks);
        let wakeups =
            Wakeups::start(broker.clone(), presence.clone(), db.clone(), database_url, retention, &metrics, &tasks);
        if let Some(storage) = &storage
            && config.blob_gc_interval_secs > 0
        {
            tasks.spawn(crate::blobs::collect_periodically(
                db.clone(),
                storage.clone(),
                std::time::Duration::from_secs(config.blob_gc_grace_secs),
                std::time::Duration::from_secs(config.blob_gc_interval_secs),
                tasks.stop_token(),
            ));
        }
        // File history: compaction and retention, on every hub (one file at a time each).
        tasks.spawn(crate::history::run(
            db.clone(),
            config.history.clone(),
            metrics.history.clone(),
            tasks.stop_token(),
        ));
        let state = AppState(Arc::new(App {
            config,
            db,
            auth,
            limiter,
            metrics,
            openapi: Arc::new(openapi),
            broker,
            wakeups,
            presence,
            tasks,
            storage,
            snapshot_locks: Default::default(),
            public_url,
            origins,
        }));
        let router = crate::router::build(routes, state.clone());
        Ok((state, router))
    }
}
