//! The `synchub` binary: `serve`, `migrate`, `dev`, `token`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use synchub::auth::{tokens::HubKeys, users::UserVerifier};
use synchub::config::Config;
use synchub::dev::{self, DevKeys};
use synchub::{App, app, server};

#[derive(Parser)]
#[command(name = "synchub", version, about = "Realtime file-sync hub for browser code editors and preview containers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (migrates the database first).
    Serve(Box<Config>),
    /// Apply database migrations and exit.
    Migrate(Box<Config>),
    /// The embedded default: private PostgreSQL, local storage, generated keys.
    Dev {
        /// Where everything is kept (database, keys, snapshots).
        #[arg(long, env = "SYNCHUB_DATA_DIR", default_value = ".synchub")]
        data_dir: PathBuf,
        #[command(flatten)]
        config: Box<Config>,
    },
    /// Print a token on stdout.
    Token {
        #[command(subcommand)]
        kind: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A user token signed with the JWT secret (dev and operators).
    User {
        #[arg(long)]
        sub: String,
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
        /// Use the keys of the dev hub started with this `--data-dir` (default: SYNCHUB_JWT_SECRET, else ./.synchub).
        #[arg(long, env = "SYNCHUB_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// A service (orchestrator) token signed with the hub's signing key.
    Service {
        #[arg(long, default_value_t = 30 * 86_400)]
        ttl: i64,
        /// Use the keys of the dev hub started with this `--data-dir` (default: SYNCHUB_SIGNING_KEY, else ./.synchub).
        #[arg(long, env = "SYNCHUB_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// After `serve` returns, what still runs (a blocking snapshot step, a socket that did not
/// close) gets this long: dropping a runtime would wait for blocking tasks without limit,
/// and the contract wants the process gone within 10 s of SIGTERM.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(cli));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            init_logging(&config.log_format);
            serve(*config).await
        }
        Command::Migrate(config) => {
            init_logging(&config.log_format);
            let url = config.database_url.as_deref().context("DATABASE_URL is required")?;
            synchub::db::migrate(url, &config.limits).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Dev { data_dir, config } => {
            init_logging(&config.log_format);
            run_dev(data_dir, *config).await
        }
        Command::Token { kind } => {
            println!("{}", mint(kind)?);
            Ok(())
        }
    }
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    config.public_url.get_or_insert(format!("http://{}", listener.local_addr()?));
    let (state, router) = App::build(config).await?;
    tracing::info!(addr = %listener.local_addr()?, "synchub serving");
    server::serve(state, listener, router, app::shutdown_signal()).await
}

async fn run_dev(data_dir: PathBuf, mut config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&data_dir)?;
    let data_dir = data_dir.canonicalize()?;
    let keys = DevKeys::load_or_create(&data_dir)?;
    config.jwt_secret.get_or_insert(keys.jwt_secret.clone());
    config.signing_key.get_or_insert(keys.signing_key.clone());
    if config.allowed_origins.is_empty() {
        config.allowed_origins = dev::DEFAULT_ORIGINS.iter().map(|o| o.to_string()).collect();
    }
    if config.storage_dir.is_none() && config.s3_bucket.is_none() {
        config.storage_dir = Some(data_dir.join("objects"));
    }
    let database = match &config.database_url {
        Some(_) => None,
        None => {
            let (server, url) = dev::start_database(&data_dir).await?;
            if server.relocated() {
                println!(
                    "The postgres user cannot reach {}: the PostgreSQL cluster lives in {} (private to that user).",
                    data_dir.display(),
                    server.cluster_dir().display()
                );
            }
            config.database_url = Some(url);
            Some(server)
        }
    };
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    config.public_url.get_or_insert(format!("http://{addr}"));
    let users =
        UserVerifier::new(Some(&keys.jwt_secret), None, &[], config.jwt_issuer.clone(), config.jwt_audience.clone())?;
    let user_token = users.mint("dev-user", 86_400)?;
    let service_token = HubKeys::new(Some(&keys.signing_key)).service_token(30 * 86_400)?;
    let (state, router) = App::build(config).await?;
    let router = router.merge(synchub::demo::router());
    let base = format!("http://{addr}");
    let postgres = database
        .as_ref()
        .map(|server| format!("  PostgreSQL: {} (port {})\n", server.cluster_dir().display(), server.port))
        .unwrap_or_default();
    println!(
        "synchub dev is ready in {:.1} s\n\n  Editor:     {base}/#token={user_token}\n  API:        {base}/v1\n  Realtime:   ws://{addr}/v1/realtime\n  OpenAPI:    {base}/openapi.json\n  Data dir:   {}\n{postgres}\n  User token (sub=dev-user, 24 h):\n    {user_token}\n  Service token (30 days):\n    {service_token}\n\n  More tokens: synchub token user --sub alice --data-dir {}\n",
        started.elapsed().as_secs_f64(),
        data_dir.display(),
        data_dir.display(),
    );
    let result = server::serve(state, listener, router, app::shutdown_signal()).await;
    if let Some(server) = database {
        tokio::task::spawn_blocking(move || server.stop()).await?;
    }
    result
}

fn mint(kind: TokenCommand) -> anyhow::Result<String> {
    app::init_process();
    let dev_keys = |dir: &Option<PathBuf>| -> anyhow::Result<Option<DevKeys>> {
        let dir = dir.clone().unwrap_or_else(|| PathBuf::from(".synchub"));
        DevKeys::load(&dir)
    };
    match kind {
        TokenCommand::User { sub, ttl, data_dir } => {
            let secret = match (&data_dir, std::env::var("SYNCHUB_JWT_SECRET")) {
                (None, Ok(secret)) => secret,
                _ => {
                    dev_keys(&data_dir)?
                        .context("no SYNCHUB_JWT_SECRET and no dev keys (run `synchub dev` first or pass --data-dir)")?
                        .jwt_secret
                }
            };
            let issuer = std::env::var("SYNCHUB_JWT_ISSUER").ok();
            let audience = std::env::var("SYNCHUB_JWT_AUDIENCE").ok();
            UserVerifier::new(Some(&secret), None, &[], issuer, audience)?.mint(&sub, ttl)
        }
        TokenCommand::Service { ttl, data_dir } => {
            let key = match (&data_dir, std::env::var("SYNCHUB_SIGNING_KEY")) {
                (None, Ok(key)) => key,
                _ => {
                    dev_keys(&data_dir)?
                        .context("no SYNCHUB_SIGNING_KEY and no dev keys (run `synchub dev` first or pass --data-dir)")?
                        .signing_key
                }
            };
            Ok(HubKeys::new(Some(&key)).service_token(ttl)?)
        }
    }
}
