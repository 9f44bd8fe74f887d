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

pub mod agent;
pub mod archive;
pub mod binary;
pub mod browser_typing;
pub mod delta_payloads;
pub mod fanout;
pub mod history;
pub mod idle_socket_rss;
pub mod presence;
pub mod snapshot_build;
pub mod sockets_100k;
pub mod write_ceiling;
pub mod write_event_latency;
pub mod write_throughput;

pub type Pending<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Report>> + 'a>>;

pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    pub run: for<'a> fn(&'a Ctx) -> Pending<'a>,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "write_throughput",
        summary: "#1 writes/s through the hub (HTTP PUT, socket upsert), 1 and 8 closed-loop writers, 2 subscribers; baseline: pgbench with the same client count, interleaved",
        run: write_throughput::run,
    },
    Scenario {
        name: "write_throughput_2hubs",
        summary: "#1 with 2 hub processes on one database: writers on A, one subscriber on A and one on B",
        run: write_throughput::run_two_hubs,
    },
    Scenario {
        name: "write_ceiling",
        summary: "issue #14: writes/s and events/s of one PostgreSQL through 1, 2 and 4 hub processes (many projects, several writers per hub), with hub/PostgreSQL/machine CPU, WAL fsyncs and wait events to say where it saturates; baseline: pgbench, same clients and projects",
        run: write_ceiling::run,
    },
    Scenario {
        name: "write_event_latency",
        summary: "#2 HTTP PUT sent → matching file:update on a subscribed socket, 100 writes/s; baseline: pgbench commit of the same SQL function",
        run: write_event_latency::run,
    },
    Scenario {
        name: "write_event_latency_2hubs",
        summary: "#2 with 2 hub processes on one database: PUTs to A, the subscriber on B",
        run: write_event_latency::run_two_hubs,
    },
    Scenario {
        name: "fanout_1000",
        summary: "#3 one project, 1,000 joined sockets (quick: 100), 1 KiB events paced and in a burst; baseline: a Node ws broadcast server",
        run: fanout::run_1000,
    },
    Scenario {
        name: "fanout_1000_2hubs",
        summary: "#3 with 2 hub processes on one database: writes on A, sockets split over A and B; baseline: fanout_1000's Node figures",
        run: fanout::run_1000_two_hubs,
    },
    Scenario {
        name: "fanout_floor",
        summary: "issue 16: fanout_1000 served by the floor (a Rust server doing one send(2) per socket and nothing else) against the Node ws baseline; the least CPU per delivery any server pays here, and fanout_1000's hub against it",
        run: fanout::run_floor,
    },
    Scenario {
        name: "fanout_10000",
        summary: "#3 the same with 10,000 joined sockets (quick: 1,000)",
        run: fanout::run_10000,
    },
    Scenario {
        name: "idle_socket_rss",
        summary: "#4 hub VmRSS with 0 vs 10,000 and 50,000 idle joined sockets (--idle-sockets; quick: 1,000): KiB per socket",
        run: idle_socket_rss::run,
    },
    Scenario {
        name: "presence",
        summary: "#15 presence: member updates/s the hub sustains with 1,000 members on one channel (quick: 50), and the hub CPU presence traffic adds to a fan-out to the same sockets (ABAB blocks, median ratio)",
        run: presence::run,
    },
    Scenario {
        name: "snapshot_build",
        summary: "#5 snapshot build + store via the hub, 1,000 files / 10 MB and 10,000 files / 100 MB (quick: 200 × 5 KB); baseline: zip -r -1 of the same files, interleaved",
        run: snapshot_build::run,
    },
    Scenario {
        name: "archive",
        summary: "issue 17: project archive export (GET …/archive) and import (POST …/archive?mode=replace into a new project), 10,000 files / 100 MB (quick: 200 × 5 KB), peak hub RSS; baseline: zip -r -1 / unzip of the same tree, alternated",
        run: archive::run,
    },
    Scenario {
        name: "agent_hydrate",
        summary: "#6 sessions call → synchub-agent /readyz, 1,000 files / 10 MB and 10,000 files / 100 MB (quick: 200 × 5 KB); baseline: curl + unzip of the same snapshot",
        run: agent::run_hydrate,
    },
    Scenario {
        name: "agent_edit_latency",
        summary: "#7 HTTP PUT → file renamed into place in the agent's tree, 1,000 edits at 100/s; baseline: write → event of the same writes",
        run: agent::run_edit_latency,
    },
    Scenario {
        name: "agent_resume",
        summary: "#8 agent cut off for 10 s by a proxy while 1,000 edits (and 100 of one file) land, 5 cuts interleaved with the disk's floor: healed → reconnected (p50/p99/max), reconnect → converged, writes of the file edited 100 times",
        run: agent::run_resume,
    },
    Scenario {
        name: "binary_upload_hydrate",
        summary: "issue 17: 1,000 random-byte images / 200 MiB (quick: 40 × 20 KiB) uploaded through the blob flow and hydrated by the agent; baseline: curl --parallel PUT/GET of the same amount to/from signed storage URLs, alternated",
        run: binary::run,
    },
    Scenario {
        name: "history",
        summary: "issue 18: database bytes added by 1,000 one-character autosaves of a 100 KB file and by 1,000 unrelated rewrites, reads of old versions, write latency; baseline: compaction off (quick: 120 × 20 KB)",
        run: history::run,
    },
    Scenario {
        name: "browser_typing",
        summary: "#12 keystroke in Chromium → other tab's change via the hub (default debounce and none), bytes/min of typing, bundle size; baseline: a Rust client with the same coalescing, interleaved (quick: 1 short pair; skipped without chromium/node)",
        run: browser_typing::run,
    },
    Scenario {
        name: "delta_payloads",
        summary: "#15 a 1-character edit of a 1 MiB file: PATCH with a Fossil delta vs a full PUT (alternated blocks): request and event bytes, write → event latency",
        run: delta_payloads::run,
    },
];

/// Scenarios run only when named with `--only` (not in the default or `--quick` run): they
/// take the whole machine for minutes.
pub const ON_REQUEST: &[Scenario] = &[
    Scenario {
        name: "sockets_100k",
        summary: "issue 16: 100,000 joined sockets (hub as several processes on one database, clients in several processes from 127.0.x.y), one event reaching all; hub RSS, CPU and delivery latency per 10k sockets (env SYNCHUB_BENCH_SOCKETS_100K changes the count, SYNCHUB_BENCH_SOCKETS_100K_WAIT_MS the wait per event, after which the workers report partial counts; --quick: 2,000)",
        run: sockets_100k::run,
    },
    Scenario {
        name: "sockets_100k_floor",
        summary: "issue 16: sockets_100k served by floor servers (one send(2) per socket and nothing else) instead of hubs: the best p99 any server could reach here with these clients (same env)",
        run: sockets_100k::run_floor,
    },
];
