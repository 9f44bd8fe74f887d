//! Integration tests: real PostgreSQL, real sockets. One binary, so the cluster is shared
//! and each test still gets its own database and hub.

mod helpers;
mod hub_process;

mod archive;
mod auth;
mod binary;
mod browser;
mod concurrency;
mod db_tls;
mod deltas;
mod dev_cli;
mod embedded_pg;
mod hardening_sql;
mod headers;
mod history;
mod http_api;
mod http_server;
mod observability;
mod ops_surface;
mod paths;
mod policy;
mod presence;
mod props;
mod realtime;
mod resilience;
mod schema;
mod sessions;
mod shutdown;
mod snapshot_cli;
mod socket_lifecycle;
mod sql_functions;
mod storage;
mod token_matrix;
