//! Integration tests: real PostgreSQL, real sockets. One binary, so the cluster is shared
//! and each test still gets its own database and hub.

mod helpers;

mod auth;
mod concurrency;
mod http_api;
mod http_server;
mod paths;
mod realtime;
mod resilience;
mod sessions;
mod snapshot_cli;
mod sql_functions;
mod storage;
