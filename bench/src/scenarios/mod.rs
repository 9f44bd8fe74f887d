//! The table of scenarios. Each one is independent: it starts its own hub process (fresh
//! RSS and CPU counters) on the run's shared PostgreSQL, makes its own project, measures
//! its baseline in the same run where it has one, and returns a [`Report`].
//!
//! To add a scenario: write `pub fn run(ctx: &Ctx) -> Pending<'_>` in a new module (take
//! sample sizes from `ctx.quick`: quick mode is a CI smoke check and the whole quick run
//! must stay under 2 minutes), and add a line to [`ALL`].

use std::future::Future;
use std::pin::Pin;

use crate::harness::Ctx;
use crate::report::Report;

pub mod fanout;
pub mod idle_socket_rss;
pub mod write_event_latency;

pub type Pending<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Report>> + 'a>>;

pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    pub run: for<'a> fn(&'a Ctx) -> Pending<'a>,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "write_event_latency",
        summary: "HTTP PUT sent → matching file:update on a subscribed socket, 100 writes/s; baseline: pgbench commit of the same SQL function",
        run: write_event_latency::run,
    },
    Scenario {
        name: "fanout_1000",
        summary: "one project, 1,000 joined sockets (quick: 100), 1 KiB events at 20/s: commit → last socket, events/s, hub CPU per 1,000 events",
        run: fanout::run,
    },
    Scenario {
        name: "idle_socket_rss",
        summary: "hub VmRSS with 0 vs 10,000 idle joined sockets (quick: 1,000): KiB per socket",
        run: idle_socket_rss::run,
    },
];
