//! Fan-out: one project, many joined sockets, 1 KiB writes. Two phases per server:
//! - paced: a steady write rate; per event, when it was created (hub: the event row's
//!   `created_at`, just before commit; Node: when the server built the frame) and when
//!   the first and the last socket got it; the server's CPU time per 1,000 frames;
//! - burst: writes back to back (one closed-loop writer): delivered frames per second
//!   while every socket has to keep up, the fan-out capacity.
//!
//! Baseline, same run, same client code and sockets: a minimal Node.js `ws` broadcast
//! server ([`crate::node_ws`]).
//!
//! The two-hub variant (`fanout_1000_2hubs`) runs two hub processes on the same database,
//! writes through hub A and joins half the sockets on A, half on B; it compares with the
//! Node and one-hub figures fanout_1000 published earlier in the same run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::Pending;
use crate::floor;
use crate::harness::{self, Ctx, Hub, Side, clock};
use crate::node_ws::{self, BroadcastServer};
use crate::perf_window;
use crate::procfs;
use crate::report::{Goal, Report, Row, Unit, Value as V};
use crate::stats::{self, Latencies};

/// File content per write; the frame adds ~300 bytes of envelope and metadata.
const CONTENT_BYTES: usize = 1024;
const WARMUP: u64 = 10;
/// Concurrent closed-loop writers in the burst phase.
const BURST_WRITERS: u64 = 4;

pub fn run_1000(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, "fanout_1000", if ctx.quick { 100 } else { 1_000 }, Subject::Hubs(1)))
}

pub fn run_1000_two_hubs(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, "fanout_1000_2hubs", if ctx.quick { 100 } else { 1_000 }, Subject::Hubs(2)))
}

/// fanout_1000's load on the floor server ([`crate::floor`]) instead of the hub.
pub fn run_floor(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, "fanout_floor", if ctx.quick { 100 } else { 1_000 }, Subject::Floor))
}

pub fn run_10000(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, "fanout_10000", if ctx.quick { 1_000 } else { 10_000 }, Subject::Hubs(1)))
}

/// What a fan-out run measures against the Node baseline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// This many hub processes on one database.
    Hubs(usize),
    /// The floor server: one send(2) per socket and nothing else.
    Floor,
}

/// Per seq: how many sockets got it, and when the first and the last did (clock ns).
struct Arrivals {
    count: AtomicU32,
    first: AtomicU64,
    last: AtomicU64,
}

struct Plan {
    sockets: usize,
    rate: f64,
    events: u64,
    burst: u64,
}

/// What one server (hub or Node) did.
struct Numbers {
    created_to_last: Latencies,
    write_to_last: Latencies,
    write_to_first: Latencies,
    spread: Latencies,
    paced_per_sec: f64,
    paced_window: f64,
    burst_per_sec: f64,
    burst_secs: f64,
    /// Server CPU over the burst (until every socket had every burst frame) per 1,000 frames.
    burst_cpu_per_1000_ms: f64,
    cpu: procfs::Cpu,
    cpu_per_1000_ms: f64,
    own_cpu: procfs::Cpu,
    delivered: u64,
    connect_secs: f64,
}

enum Target<'a> {
    /// Writes go to the first hub; sockets are spread over all of them.
    Hub { hubs: &'a [Hub], project: Uuid },
    /// Node's server or the floor: `POST /broadcast`.
    Broadcast { server: &'a BroadcastServer, project: Uuid },
}

impl Target<'_> {
    /// Where the sockets join, round robin.
    fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Target::Hub { hubs, .. } => hubs.iter().map(|h| h.addr).collect(),
            Target::Broadcast { server, .. } => vec![server.addr],
        }
    }

    fn project(&self) -> Uuid {
        match self {
            Target::Hub { project, .. } | Target::Broadcast { project, .. } => *project,
        }
    }

    /// The server CPU time (summed over the hubs).
    fn cpu(&self) -> anyhow::Result<procfs::Cpu> {
        match self {
            Target::Hub { hubs, .. } => hubs.iter().map(|hub| hub.cpu()).sum(),
            Target::Broadcast { server, .. } => server.cpu(),
        }
    }

    /// A request writing event `i` (1 KiB content).
    fn request(&self, ctx: &Ctx, i: u64) -> anyhow::Result<reqwest::Request> {
        let mut content = format!("{i:08} ");
        content.push_str(&"x".repeat(CONTENT_BYTES - content.len()));
        Ok(match self {
            Target::Hub { hubs, project } => ctx
                .http
                .put(hubs[0].url(&format!("/v1/projects/{project}/files/fanout-{}.txt", i % BURST_WRITERS)))
                .bearer_auth(&ctx.token)
                .json(&harness::put_body(&content))
                .build()?,
            Target::Broadcast { server, .. } => {
                ctx.http.post(server.url("/broadcast")).json(&json!({ "content": content })).build()?
            }
        })
    }
}

/// One write: (clock ns just before sending, seq, created µs since the epoch if the
/// server said).
type Written = (u64, i64, Option<i64>);

async fn send(client: reqwest::Client, request: reqwest::Request, i: u64) -> anyhow::Result<Written> {
    let sent = clock().now_ns();
    let response = client.execute(request).await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("write {i} answered {status}: {body}");
    }
    let seq = body["seq"].as_i64().with_context(|| format!("write {i}: no seq in {body}"))?;
    Ok((sent, seq, body["created_us"].as_i64()))
}

/// The figures the rows are made of; fanout_1000 publishes its own for the two-hub variant.
#[derive(Clone, Copy)]
struct Figures {
    burst_per_sec: f64,
    created_to_last_p50: f64,
    created_to_last_p99: f64,
    write_to_last_p50: f64,
    paced_per_sec: f64,
    cpu_per_1000_ms: f64,
}

const FIGURES: [&str; 6] = [
    "burst_per_sec",
    "created_to_last_p50",
    "created_to_last_p99",
    "write_to_last_p50",
    "paced_per_sec",
    "cpu_per_1000_ms",
];

impl Figures {
    fn values(&self) -> [f64; 6] {
        [
            self.burst_per_sec,
            self.created_to_last_p50,
            self.created_to_last_p99,
            self.write_to_last_p50,
            self.paced_per_sec,
            self.cpu_per_1000_ms,
        ]
    }

    fn publish(&self, ctx: &Ctx, prefix: &str) {
        for (key, value) in FIGURES.iter().zip(self.values()) {
            ctx.publish(format!("{prefix}/{key}"), value);
        }
    }

    fn published(ctx: &Ctx, prefix: &str) -> Option<Self> {
        let get = |key: &str| ctx.published(&format!("{prefix}/{key}"));
        Some(Figures {
            burst_per_sec: get(FIGURES[0])?,
            created_to_last_p50: get(FIGURES[1])?,
            created_to_last_p99: get(FIGURES[2])?,
            write_to_last_p50: get(FIGURES[3])?,
            paced_per_sec: get(FIGURES[4])?,
            cpu_per_1000_ms: get(FIGURES[5])?,
        })
    }
}

/// One block's figures (either side).
struct BlockFigures {
    numbers: Numbers,
}

async fn measure(ctx: &Ctx, name: &'static str, sockets: usize, subject: Subject) -> anyhow::Result<Report> {
    let hubs = match subject {
        Subject::Hubs(n) => n,
        Subject::Floor => 0,
    };
    let pairs = ctx.pairs();
    let big = sockets >= 5_000;
    let plan = Plan {
        sockets,
        // 20 events/s at 1,000 sockets (20,000 frames/s); fewer at 10,000 (40,000 frames/s).
        rate: if big { 4.0 } else { 20.0 },
        // Per block (pairs × this per side).
        events: match (ctx.quick, big) {
            (true, _) => 15,
            (false, false) => 80,
            (false, true) => 20,
        },
        burst: match (ctx.quick, big) {
            (true, _) => 15,
            (false, false) => 60,
            (false, true) => 12,
        },
    };
    let mut report = Report::new(
        name,
        if subject == Subject::Floor { "issue 16" } else { "#3" },
        if subject == Subject::Floor {
            "fanout_1000's load and client code, served by the floor instead of the hub: a Rust server \
             (bench/src/floor.rs, one thread like Node's) that answers `join` with `joined` and, on `POST \
             /broadcast`, builds and frames one event of the hub's shape once and writes those bytes to every \
             joined socket with one non-blocking send(2) each, and does nothing else per socket (no task, timer, \
             queue or read after the join). What it costs per delivery is what the kernel and one send(2) cost on \
             this machine: the least any server pays here, the hub included. In alternating blocks with the Node \
             `ws` baseline, as fanout_1000."
        } else if hubs == 1 {
            "One project with many joined WebSockets; one client writes 1 KiB files (the hub: HTTP PUT of a few \
             paths with new content each time; Node: POST /broadcast) at a steady pace, then back to back (burst); \
             every socket receives every `file:update` frame. The burst uses 4 concurrent closed-loop writers (the \
             hub: one file each). The same client code measures the hub and the Node `ws` baseline in alternating \
             blocks (hub, Node, hub, Node, …), each block a paced phase and a burst."
        } else {
            "fanout_1000 with two hub processes on the same database: the writes go to hub A, half the sockets are \
             joined on A and half on B (B learns of each write through PostgreSQL); the Node `ws` baseline in \
             alternating blocks as in fanout_1000 (and fanout_1000's one-hub figures, for the change)."
        },
    );
    report.param("sockets", plan.sockets);
    let who = if subject == Subject::Floor { "floor" } else { "hub" };
    if hubs > 0 {
        report.param(
            "hubs",
            if hubs == 1 { "1".to_string() } else { format!("{hubs} (writes on A; sockets split evenly)") },
        );
    }
    report.param(&format!("pairs of blocks ({who}, Node)"), pairs);
    report.param("paced events per block", plan.events);
    report.param("pace", format!("{} writes/s", plan.rate));
    report.param("burst events per block", plan.burst);
    report.param("warm-up events per side (not counted)", WARMUP);
    report.param("content", format!("{CONTENT_BYTES} bytes"));
    report.param("client source addresses", format!("127.0.0.2–127.0.0.{}", 1 + harness::SOURCE_ADDRESSES));
    let limit = procfs::nofile_limit();
    let needed = plan.sockets as u64 + 512;
    if let Some(limit) = limit
        && limit < needed
    {
        bail!("RLIMIT_NOFILE is {limit}, {needed} needed: run through scripts/bench (it raises it)");
    }
    // Both sides' sockets stay open across blocks when the bench's descriptors allow it;
    // otherwise each block opens its side's sockets afresh (and warms them up).
    let persistent = limit.is_none_or(|l| l >= 2 * plan.sockets as u64 + 1_024);
    report.param("sockets kept open across blocks", persistent);

    // The hub(s) or the floor, and the Node server, all up for the whole interleaved run.
    let mut started = Vec::new();
    for k in 0..hubs {
        let label = if k == 0 { name.to_string() } else { format!("{name}-{k}") };
        match ctx.start_hub(&label).await {
            Ok(hub) => started.push(hub),
            Err(err) => {
                for hub in started {
                    hub.stop().await;
                }
                return Err(err);
            }
        }
    }
    let floor_project = Uuid::new_v4();
    let floor = match subject {
        Subject::Floor => Some(floor::start(floor_project).await.context("starting the floor server")),
        Subject::Hubs(_) => None,
    };
    let node_project = Uuid::new_v4();
    let node = node_ws::start(ctx, node_project).await.context("starting the Node ws baseline");
    let result = async {
        let node = node.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let subject_target = match &floor {
            Some(floor) => Target::Broadcast {
                server: floor.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?,
                project: floor_project,
            },
            None => {
                let project = ctx.create_project(&started[0], &format!("bench {name}")).await?;
                Target::Hub { hubs: &started, project }
            }
        };
        let node_target = Target::Broadcast { server: node, project: node_project };
        let capacity = (WARMUP * (pairs as u64 + 1) + (plan.events + plan.burst) * pairs as u64) as usize + 64;
        let mut fleets: [Option<Fleet>; 2] = [None, None];
        let mut written = [0u64; 2];
        ctx.interleave(pairs, async |side, _pair| {
            let (k, target) = match side {
                Side::Subject => (0, &subject_target),
                Side::Baseline => (1, &node_target),
            };
            if fleets[k].is_none() {
                let fleet = Fleet::open(ctx, target, plan.sockets, capacity).await?;
                written[k] = fleet.warm(ctx, target, written[k], plan.rate).await?;
                fleets[k] = Some(fleet);
            }
            let fleet = fleets[k].as_ref().context("fleet")?;
            let numbers = fleet.block(ctx, target, written[k], &plan).await?;
            written[k] += plan.events + plan.burst;
            if !persistent {
                fleets[k] = None;
            }
            Ok(BlockFigures { numbers })
        })
        .await
    }
    .await;
    let mut log = Vec::new();
    for hub in started {
        log.extend(hub.log_lines());
        hub.stop().await;
    }
    if let Some(Ok(floor)) = floor {
        floor.stop().await;
    }
    let node_version = match node {
        Ok(node) => {
            let version = node.version.clone();
            node.stop().await;
            version
        }
        Err(_) => String::new(),
    };
    let measured = result?;
    if !log.is_empty() {
        report.notes.push(format!("the hubs logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = format!(
        "a minimal {node_version} broadcast server on `ws` {} (installed with `npm i ws` at run time; \
         source in bench/src/node_ws.rs): answers `join` with `joined`, and on `POST /broadcast` builds one \
         frame of the hub's shape (same envelope and payload fields, sha256 of the content) and `send`s it to \
         every joined socket. No database, no auth, no per-socket ordering or gap filling. Same client code, \
         sockets, sizes and pace, in blocks alternating with the {who}'s.",
        node_ws::ws_version(ctx)
    );

    let fig = |f: fn(&Numbers) -> f64| move |b: &BlockFigures| f(&b.numbers);
    // The goals are the hub's: the floor's rows are the reference they are judged beside.
    let goal = |row: Row, goal: Goal| if hubs > 0 { row.goal(goal) } else { row };
    report.rows.push(goal(
        measured.row("burst: delivered events/s", Unit::PerSec, fig(|x| x.burst_per_sec)),
        Goal::RatioAtLeast(2.0),
    ));
    report.rows.push(measured.row("paced: commit → last socket p50", Unit::Ms, fig(|x| x.created_to_last.ms(0.5))));
    let p99 = measured.row("paced: commit → last socket p99", Unit::Ms, fig(|x| x.created_to_last.ms(0.99)));
    report.rows.push(if name.starts_with("fanout_1000") { goal(p99, Goal::AtMost(50.0)) } else { p99 });
    report.rows.push(measured.row("paced: write → last socket p50", Unit::Ms, fig(|x| x.write_to_last.ms(0.5))));
    report.rows.push(measured.row("paced: delivered events/s", Unit::PerSec, fig(|x| x.paced_per_sec)));
    let cpu_metric =
        format!("paced: server CPU ms per 1,000 delivered events{}", if hubs > 1 { " (both hubs)" } else { "" });
    report.rows.push(goal(measured.row(cpu_metric, Unit::Count, fig(|x| x.cpu_per_1000_ms)), Goal::RatioAtMost(0.5)));
    // The split says what a server can still save: each paced delivery is one send(2) on
    // both sides, and on loopback its system time includes the receiving socket's TCP work.
    let per_1000 = |cpu: Duration, x: &Numbers| cpu.as_secs_f64() * 1000.0 / (x.delivered.max(1) as f64 / 1000.0);
    report.rows.push(measured.row(
        "paced: server user CPU ms per 1,000 delivered events",
        Unit::Count,
        move |b: &BlockFigures| per_1000(b.numbers.cpu.user, &b.numbers),
    ));
    report.rows.push(measured.row(
        "paced: server system CPU ms per 1,000 delivered events",
        Unit::Count,
        move |b: &BlockFigures| per_1000(b.numbers.cpu.system, &b.numbers),
    ));
    let pair_median = |f: &dyn Fn(&BlockFigures) -> f64, side: Side| {
        let values: Vec<f64> =
            measured.pairs.iter().map(|p| f(if side == Side::Subject { &p.subject } else { &p.baseline })).collect();
        (stats::median(&values) * 100.0).round() / 100.0
    };
    report.rows.push(Row::compared(
        format!(
            "paced: the {who}'s system CPU alone vs Node's whole CPU, ms per 1,000 (the ratio a {who} with no user \
             time would reach)"
        ),
        V::count(pair_median(&|b| b.numbers.cpu_per_1000_ms, Side::Baseline)),
        V::count(pair_median(&|b| per_1000(b.numbers.cpu.system, &b.numbers), Side::Subject)),
    ));
    report.rows.push(measured.row(
        "burst: server CPU ms per 1,000 delivered events",
        Unit::Count,
        fig(|x| x.burst_cpu_per_1000_ms),
    ));

    let median = |f: fn(&Numbers) -> f64| {
        stats::median(&measured.pairs.iter().map(|p| f(&p.subject.numbers)).collect::<Vec<_>>())
    };
    let h = Figures {
        burst_per_sec: median(|x| x.burst_per_sec),
        created_to_last_p50: median(|x| x.created_to_last.ms(0.5)),
        created_to_last_p99: median(|x| x.created_to_last.ms(0.99)),
        write_to_last_p50: median(|x| x.write_to_last.ms(0.5)),
        paced_per_sec: median(|x| x.paced_per_sec),
        cpu_per_1000_ms: median(|x| x.cpu_per_1000_ms),
    };
    if hubs == 1 && name == "fanout_1000" {
        h.publish(ctx, &format!("{name}/hub"));
    }
    if hubs > 1 {
        match Figures::published(ctx, "fanout_1000/hub") {
            Some(one) => {
                report.rows.push(Row::compared(
                    "burst: delivered events/s, 2 hubs vs 1 hub (fanout_1000 medians)",
                    V::per_sec(one.burst_per_sec),
                    V::per_sec(h.burst_per_sec),
                ));
                report.rows.push(Row::compared(
                    "paced: commit → last socket p99, 2 hubs vs 1 hub (fanout_1000 medians)",
                    V::ms(one.created_to_last_p99),
                    V::ms(h.created_to_last_p99),
                ));
                report.rows.push(Row::compared(
                    "paced: CPU ms per 1,000 delivered events, 2 hubs vs 1 hub (fanout_1000 medians)",
                    V::count((one.cpu_per_1000_ms * 100.0).round() / 100.0),
                    V::count((h.cpu_per_1000_ms * 100.0).round() / 100.0),
                ));
            }
            None => report.notes.push("fanout_1000 did not run before this: no one-hub comparison".into()),
        }
    }
    report.notes.push(measured.note("paced: server CPU ms per 1,000 delivered events", fig(|x| x.cpu_per_1000_ms)));
    report.notes.push(measured.note("burst: delivered events/s", fig(|x| x.burst_per_sec)));
    if subject == Subject::Floor {
        match Figures::published(ctx, "fanout_1000/hub") {
            Some(hub) => report.rows.push(Row::compared(
                "paced: server CPU ms per 1,000 delivered events, fanout_1000's hub vs the floor (medians of two \
                 runs a few minutes apart: what the hub spends above the least any server pays here)",
                V::count(pair_median(&|b| b.numbers.cpu_per_1000_ms, Side::Subject)),
                V::count((hub.cpu_per_1000_ms * 100.0).round() / 100.0),
            )),
            None => report.notes.push("fanout_1000 did not run before this: no hub-vs-floor comparison".into()),
        }
    }
    for (who, side) in [(who, Side::Subject), ("Node", Side::Baseline)] {
        let merged = |f: fn(&Numbers) -> &Latencies| measured.merged(side, |b| f(&b.numbers));
        report.notes.push(format!(
            "{who}, all blocks: commit → last socket {}; write → first socket {}; write → last socket {}; first → \
             last socket, same event: {}",
            merged(|x| &x.created_to_last).summary(),
            merged(|x| &x.write_to_first).summary(),
            merged(|x| &x.write_to_last).summary(),
            merged(|x| &x.spread).summary()
        ));
        let last = measured.pairs.last().map(|p| if side == Side::Subject { &p.subject } else { &p.baseline });
        if let Some(x) = last.map(|b| &b.numbers) {
            report.notes.push(format!(
                "{who}, last block: paced {} frames in {:.1} s (offered {:.0}/s); burst of {} events × {} sockets \
                 delivered in {:.2} s; server CPU while paced {:.2} s = {:.0}% of one core (user {:.2} s, system \
                 {:.2} s; on loopback the sender's system time includes the receiver's TCP work); bench client CPU \
                 {:.2} s; {} sockets opened and joined in {:.1} s",
                x.delivered,
                x.paced_window,
                plan.sockets as f64 * plan.rate,
                plan.burst,
                plan.sockets,
                x.burst_secs,
                x.cpu.total().as_secs_f64(),
                x.cpu.total().as_secs_f64() / x.paced_window * 100.0,
                x.cpu.user.as_secs_f64(),
                x.cpu.system.as_secs_f64(),
                x.own_cpu.total().as_secs_f64(),
                plan.sockets,
                x.connect_secs,
            ));
        }
    }
    report.notes.push(
        "commit → last socket: for the hub from `synchub.events.created_at` (`clock_timestamp()` at the event insert, \
         just before commit), for Node from when it built the frame; both on this machine's clock"
            .into(),
    );
    Ok(report)
}

/// One side's joined sockets and what they received, by seq.
struct Fleet {
    arrivals: Arc<Vec<Arrivals>>,
    frames: Arc<AtomicU64>,
    readers: tokio::task::JoinSet<()>,
    sockets: usize,
    capacity: usize,
    connect_secs: f64,
}

impl Fleet {
    async fn open(ctx: &Ctx, target: &Target<'_>, sockets: usize, capacity: usize) -> anyhow::Result<Fleet> {
        let connect_started = Instant::now();
        let addrs = target.addrs();
        let mut sockets_open = Vec::with_capacity(sockets);
        for (k, addr) in addrs.iter().enumerate() {
            let n = sockets / addrs.len() + usize::from(k < sockets % addrs.len());
            sockets_open.extend(ctx.open_joined_at(*addr, target.project(), n, 32).await?);
        }
        let connect_secs = connect_started.elapsed().as_secs_f64();
        let arrivals: Arc<Vec<Arrivals>> = Arc::new(
            (0..capacity)
                .map(|_| Arrivals {
                    count: AtomicU32::new(0),
                    first: AtomicU64::new(u64::MAX),
                    last: AtomicU64::new(0),
                })
                .collect(),
        );
        let frames = Arc::new(AtomicU64::new(0));
        let mut readers = tokio::task::JoinSet::new();
        for mut ws in sockets_open {
            let (arrivals, frames) = (arrivals.clone(), frames.clone());
            readers.spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else { continue };
                    let now = clock().now_ns();
                    let Some(seq) = event_seq(text.as_str()) else { continue };
                    frames.fetch_add(1, Ordering::Relaxed);
                    if let Some(slot) = arrivals.get(seq) {
                        slot.count.fetch_add(1, Ordering::Relaxed);
                        slot.first.fetch_min(now, Ordering::Relaxed);
                        slot.last.fetch_max(now, Ordering::Relaxed);
                    }
                }
            });
        }
        Ok(Fleet { arrivals, frames, readers, sockets, capacity, connect_secs })
    }

    fn all_arrived(&self, seqs: &[usize]) -> bool {
        seqs.iter().all(|&s| self.arrivals[s].count.load(Ordering::Relaxed) as usize >= self.sockets)
    }

    /// Warm-up writes from index `from`: everything delivered everywhere before counting
    /// starts. Returns the next write index.
    async fn warm(&self, ctx: &Ctx, target: &Target<'_>, from: u64, rate: f64) -> anyhow::Result<u64> {
        let warm = write_paced(ctx, target, from, WARMUP, rate).await?;
        let warm_seqs = seqs_of(&warm, self.capacity)?;
        wait_for(|| self.all_arrived(&warm_seqs), Duration::from_secs(30)).await?;
        Ok(from + WARMUP)
    }

    /// One block: `plan.events` paced writes, then `plan.burst` back to back, from write
    /// index `from`.
    async fn block(&self, ctx: &Ctx, target: &Target<'_>, from: u64, plan: &Plan) -> anyhow::Result<Numbers> {
        let sockets = self.sockets;
        // Paced.
        let cpu_before = target.cpu()?;
        let own_cpu_before = procfs::self_cpu_time()?;
        let frames_before = self.frames.load(Ordering::Relaxed);
        let profiled = perf_window::open()?;
        let written = write_paced(ctx, target, from, plan.events, plan.rate).await?;
        let seqs = seqs_of(&written, self.capacity)?;
        wait_for(|| self.all_arrived(&seqs), Duration::from_secs(60)).await?;
        drop(profiled);
        let cpu = target.cpu()?.since(cpu_before);
        let own_cpu = procfs::self_cpu_time()?.since(own_cpu_before);
        let delivered = self.frames.load(Ordering::Relaxed) - frames_before;

        let created: std::collections::HashMap<i64, i64> = match target {
            Target::Hub { project, .. } => {
                let list: Vec<i64> = written.iter().map(|w| w.1).collect();
                harness::event_times(ctx, *project, &list).await?
            }
            Target::Broadcast { .. } => written.iter().filter_map(|w| Some((w.1, w.2?))).collect(),
        };
        let mut numbers = Numbers {
            created_to_last: Latencies::default(),
            write_to_last: Latencies::default(),
            write_to_first: Latencies::default(),
            spread: Latencies::default(),
            paced_per_sec: 0.0,
            paced_window: 0.0,
            burst_per_sec: 0.0,
            burst_secs: 0.0,
            burst_cpu_per_1000_ms: 0.0,
            cpu,
            cpu_per_1000_ms: 0.0,
            own_cpu,
            delivered,
            connect_secs: self.connect_secs,
        };
        let first_sent = written.iter().map(|w| w.0).min().unwrap_or(0);
        let mut last_arrival = 0;
        for (sent, seq, _) in &written {
            let slot = &self.arrivals[*seq as usize];
            let (first, last) = (slot.first.load(Ordering::Relaxed), slot.last.load(Ordering::Relaxed));
            last_arrival = last_arrival.max(last);
            numbers.write_to_last.record_ns(last.saturating_sub(*sent));
            numbers.write_to_first.record_ns(first.saturating_sub(*sent));
            numbers.spread.record_ns(last.saturating_sub(first));
            if let Some(created_us) = created.get(seq) {
                let created_ns = clock().wall_us_to_ns(*created_us);
                numbers.created_to_last.record_ns((last as i64 - created_ns).max(0) as u64);
            }
        }
        numbers.paced_window = last_arrival.saturating_sub(first_sent) as f64 / 1e9;
        numbers.paced_per_sec = delivered as f64 / numbers.paced_window;
        numbers.cpu_per_1000_ms = cpu.total().as_secs_f64() * 1000.0 / (delivered as f64 / 1000.0);

        // Burst: BURST_WRITERS closed-loop writers (each its own file), as fast as the
        // server answers, so one writer's commit latency does not cap the event rate.
        let burst_from = from + plan.events;
        let mut requests: Vec<Vec<(u64, reqwest::Request)>> = (0..BURST_WRITERS).map(|_| Vec::new()).collect();
        for i in burst_from..burst_from + plan.burst {
            requests[(i % BURST_WRITERS) as usize].push((i, target.request(ctx, i)?));
        }
        let burst_cpu_before = target.cpu()?;
        let burst_frames_before = self.frames.load(Ordering::Relaxed);
        let mut writers = tokio::task::JoinSet::new();
        for queue in requests {
            let client = ctx.http.clone();
            writers.spawn(async move {
                let mut written = Vec::with_capacity(queue.len());
                for (i, request) in queue {
                    written.push(send(client.clone(), request, i).await?);
                }
                Ok::<_, anyhow::Error>(written)
            });
        }
        let mut burst = Vec::with_capacity(plan.burst as usize);
        while let Some(result) = writers.join_next().await {
            burst.extend(result??);
        }
        let burst_seqs = seqs_of(&burst, self.capacity)?;
        wait_for(|| self.all_arrived(&burst_seqs), Duration::from_secs(120)).await?;
        let burst_cpu = target.cpu()?.since(burst_cpu_before);
        let burst_delivered = self.frames.load(Ordering::Relaxed) - burst_frames_before;
        let burst_first = burst.iter().map(|w| w.0).min().unwrap_or(0);
        let burst_last = burst_seqs.iter().map(|&s| self.arrivals[s].last.load(Ordering::Relaxed)).max().unwrap_or(0);
        numbers.burst_secs = burst_last.saturating_sub(burst_first) as f64 / 1e9;
        numbers.burst_per_sec = (plan.burst as f64 * sockets as f64) / numbers.burst_secs;
        numbers.burst_cpu_per_1000_ms =
            burst_cpu.total().as_secs_f64() * 1000.0 / (burst_delivered.max(1) as f64 / 1000.0);
        Ok(numbers)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.readers.abort_all();
    }
}

fn seqs_of(written: &[Written], capacity: usize) -> anyhow::Result<Vec<usize>> {
    let seqs: Vec<usize> = written.iter().map(|w| w.1 as usize).collect();
    if let Some(&bad) = seqs.iter().find(|&&s| s >= capacity) {
        bail!("unexpected seq {bad} (project not fresh?)");
    }
    Ok(seqs)
}

/// The seq of an event frame, without parsing the whole 1 KiB JSON: both servers write
/// `{"type":"event","channel":"…","seq":N,…`.
pub(crate) fn event_seq(text: &str) -> Option<usize> {
    if !text.starts_with(r#"{"type":"event""#) {
        return None;
    }
    let rest = &text[text.find(r#""seq":"#)? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Writes events `from..from+count` at `rate`/s (not waiting for answers before the next).
async fn write_paced(ctx: &Ctx, target: &Target<'_>, from: u64, count: u64, rate: f64) -> anyhow::Result<Vec<Written>> {
    let mut puts = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    for k in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
        let i = from + k;
        puts.spawn(send(ctx.http.clone(), target.request(ctx, i)?, i));
    }
    let mut written = Vec::with_capacity(count as usize);
    while let Some(result) = puts.join_next().await {
        written.push(result??);
    }
    Ok(written)
}

async fn wait_for(mut done: impl FnMut() -> bool, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("not every socket received every event within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
