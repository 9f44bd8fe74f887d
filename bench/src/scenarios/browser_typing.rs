//! Issue #12, "Measure": typing in a browser tab → the other tab's `change` event, through
//! the hub. The browser side is `clients/typescript/bench/typing.mjs` (Debian Chromium via
//! playwright-core, two pages in separate browser contexts running @synchub/client, so the
//! second page hears the first only through the hub); this scenario starts the hub, the
//! Node driver as a child process (JSON lines over its stdin/stdout), and the baseline.
//!
//! Baseline, same run, interleaved block by block (browser, Rust, browser, Rust, …): the same
//! path from a Rust client: the same typing schedule, the same coalescing as the client (one
//! write in flight per path, the newest text pending, sent `debounce` after the last
//! keystroke and at most `max delay` after the first unsent one), HTTP PUTs of the same body
//! (`content`, `expected_version`, `op_id`), and a WebSocket subscriber on the same hub.
//! The ratio is the browser's added cost (page timers, IndexedDB, fetch/CORS, the
//! browser's socket and the client's event handling).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use synchub_protocol::{Event, PutFileRequest, PutFileResponse, SafeU64, ServerFrame};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::Pending;
use crate::harness::{self, Ctx, Hub, clock};
use crate::report::{Report, Row, Value as V};
use crate::stats::Latencies;

const NAME: &str = "browser_typing";
/// Keystrokes per second (about 120 words per minute).
const RATE: f64 = 10.0;
/// The client's default timing (docs/CLIENT.md; clients/typescript/src/index.ts).
const DEFAULT_DEBOUNCE: Coalescing = Coalescing { debounce_ms: 400, max_delay_ms: 3_000 };
const NO_DEBOUNCE: Coalescing = Coalescing { debounce_ms: 0, max_delay_ms: 0 };

#[derive(Clone, Copy)]
struct Coalescing {
    debounce_ms: u64,
    max_delay_ms: u64,
}

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

/// Why the browser side cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium} (apt-get install chromium, or set CHROMIUM)"));
    }
    if std::process::Command::new("node").arg("--version").output().map_or(true, |o| !o.status.success()) {
        return Some("no `node` on PATH".into());
    }
    let modules = client_dir().join("node_modules");
    for package in ["playwright-core", "esbuild"] {
        if !modules.join(package).exists() {
            return Some(format!("{} missing (run `npm ci` in clients/typescript)", modules.join(package).display()));
        }
    }
    None
}

struct Plan {
    pairs: usize,
    keys: usize,
    warmup_keys: usize,
    bytes_seconds: f64,
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let plan = if ctx.quick {
        Plan { pairs: 1, keys: 20, warmup_keys: 10, bytes_seconds: 3.0 }
    } else {
        Plan { pairs: 3, keys: 200, warmup_keys: 30, bytes_seconds: 60.0 }
    };
    let mut report = Report::new(
        NAME,
        "issue #12",
        "Keystroke in one Chromium tab (`project.write` of the text so far, one more character per keystroke) → \
         the `change` event in another tab (own browser context: no shared storage or BroadcastChannel, so through \
         the hub), both on @synchub/client; with the client's default debounce and with none. Plus bytes on the wire \
         per minute of typing, and the bundle size.",
    );
    if let Some(why) = missing_prerequisite() {
        if !ctx.quick {
            bail!("cannot run the browser side: {why}");
        }
        eprintln!("synchub-bench: {NAME}: skipped: {why}");
        report.notes.push(format!("skipped: {why}"));
        return Ok(report);
    }
    report.param("typing rate", format!("{RATE} keystrokes/s (fixed schedule)"));
    report.param("keystrokes per block", plan.keys);
    report.param("pairs of blocks (browser, Rust) per timing", plan.pairs);
    report.param("warm-up keystrokes per side and timing (not counted)", plan.warmup_keys);
    report.param("bytes phase", format!("{} s of typing per side", plan.bytes_seconds));

    let page_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let hub = ctx.start_hub_with(NAME, &[("SYNCHUB_ALLOWED_ORIGINS", format!("http://127.0.0.1:{page_port}"))]).await?;
    let project = ctx.create_project(&hub, "bench browser_typing").await?;
    let result = measure_with(ctx, &hub, project, page_port, &plan, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    Ok(report)
}

async fn measure_with(
    ctx: &Ctx,
    hub: &Hub,
    project: Uuid,
    page_port: u16,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut browser = Browser::start(ctx, hub, project, page_port).await?;
    let ready = browser.ready.clone();
    report.param(
        "browser",
        format!("Chromium {} (headless, playwright-core), Node {}", ready["chromium"], ready["node"]),
    );
    let mut block = 0;
    let mut next_path = || {
        block += 1;
        format!("typing/{block}.txt")
    };

    for (label, timing, coalescing) in
        [("default debounce", "default", DEFAULT_DEBOUNCE), ("no debounce", "none", NO_DEBOUNCE)]
    {
        // Warm-up: pages, JIT, connections, the hub's caches.
        browser.typing(&next_path(), plan.warmup_keys, timing).await?;
        rust_typing(ctx, hub, project, &next_path(), plan.warmup_keys, coalescing).await?;

        let (mut browser_all, mut rust_all) = (Typing::default(), Typing::default());
        let mut pair_ratios = Vec::new();
        for _ in 0..plan.pairs {
            let b = browser.typing(&next_path(), plan.keys, timing).await?;
            let r = rust_typing(ctx, hub, project, &next_path(), plan.keys, coalescing).await?;
            pair_ratios.push((b.keystroke.ms(0.5) / r.keystroke.ms(0.5), b.keystroke.ms(0.99) / r.keystroke.ms(0.99)));
            browser_all.merge(&b);
            rust_all.merge(&r);
        }
        for q in [0.5, 0.99] {
            let p = if q == 0.5 { "p50" } else { "p99" };
            report.rows.push(Row::compared(
                format!("keystroke → other tab's change {p}, {label} (baseline: Rust client)"),
                V::ms(rust_all.keystroke.ms(q)),
                V::ms(browser_all.keystroke.ms(q)),
            ));
        }
        let p50s: Vec<f64> = pair_ratios.iter().map(|r| r.0).collect();
        let p99s: Vec<f64> = pair_ratios.iter().map(|r| r.1).collect();
        report.rows.push(Row::alone(
            format!("keystroke → change, {label}: median of per-pair p50 ratios"),
            V::count(median(&p50s)),
            "(ratio browser / Rust)",
        ));
        report.rows.push(Row::alone(
            format!("keystroke → change, {label}: median of per-pair p99 ratios"),
            V::count(median(&p99s)),
            "(ratio browser / Rust)",
        ));
        for q in [0.5, 0.99] {
            let p = if q == 0.5 { "p50" } else { "p99" };
            report.rows.push(Row::compared(
                format!("PUT started → other tab's change {p}, {label} (baseline: Rust client)"),
                V::ms(rust_all.write.ms(q)),
                V::ms(browser_all.write.ms(q)),
            ));
        }
        report.notes.push(format!(
            "{label}: per-pair ratios browser/Rust (p50, p99): {}",
            pair_ratios.iter().map(|(a, b)| format!("({a:.2}, {b:.2})")).collect::<Vec<_>>().join(", ")
        ));
        report.notes.push(format!(
            "{label}: browser keystroke → change {}; writes {} for {} keystrokes",
            browser_all.keystroke.summary(),
            browser_all.writes,
            browser_all.keystroke.count()
        ));
        report.notes.push(format!(
            "{label}: Rust keystroke → change {}; writes {} for {} keystrokes",
            rust_all.keystroke.summary(),
            rust_all.writes,
            rust_all.keystroke.count()
        ));
        report.notes.push(format!(
            "{label}: PUT started → change: browser {}; Rust {}",
            browser_all.write.summary(),
            rust_all.write.summary()
        ));
    }

    // Bytes on the wire, the client with its default timing against one PUT per keystroke.
    let client = browser.bytes(&next_path(), plan.bytes_seconds, "client").await?;
    let naive = browser.bytes(&next_path(), plan.bytes_seconds, "naive").await?;
    let per_minute = 60.0 / plan.bytes_seconds;
    let total = |b: &Value| {
        ["http_up", "http_down", "ws_up", "ws_down"].iter().map(|k| b[*k].as_f64().unwrap_or(0.0)).sum::<f64>()
    };
    report.rows.push(Row::compared(
        "bytes on the wire per minute of typing, default debounce (baseline: one PUT per keystroke)",
        V::kib(total(&naive) * per_minute / 1024.0),
        V::kib(total(&client) * per_minute / 1024.0),
    ));
    report.rows.push(Row::compared(
        "writes per minute of typing, default debounce (baseline: one PUT per keystroke)",
        V::count(naive["writes"].as_f64().unwrap_or(0.0) * per_minute),
        V::count(client["writes"].as_f64().unwrap_or(0.0) * per_minute),
    ));
    for (who, b) in [("client", &client), ("one PUT per keystroke", &naive)] {
        report.notes.push(format!(
            "bytes, {who}: {} keystrokes in {} s; HTTP {} B up / {} B down, socket {} B up / {} B down; requests {}",
            b["keys"], b["seconds"], b["http_up"], b["http_down"], b["ws_up"], b["ws_down"], b["requests"]
        ));
    }
    report.notes.push(
        "bytes are counted by a TCP proxy (Node, in typing.mjs) between the typing page and the hub: every byte of \
         TCP payload both ways (HTTP requests and responses with headers, CORS preflights, WebSocket frames with \
         their headers), from the first keystroke until the last write is answered and its event echoed; TCP/IP \
         headers are not counted. The naive baseline is `fetch` PUT `{\"content\"}` per keystroke from the same page \
         (no socket). The latency blocks do not go through the proxy."
            .to_string(),
    );

    let bundle = &ready["bundle"];
    let kib = |k: &str| V::kib(bundle[k].as_f64().unwrap_or(0.0) / 1024.0);
    report.rows.push(Row::alone("bundle dist/index.js, minified", kib("min"), "(no baseline)"));
    report.rows.push(Row::alone("bundle dist/index.js, minified + gzip -9", kib("min_gzip"), "(no baseline)"));
    report.rows.push(Row::alone("bundle dist/index.js, as built (not minified)", kib("raw"), "(no baseline)"));

    report.baseline = "A Rust client in the bench process on the same hub, in blocks alternating with the browser's \
        (browser, Rust, browser, Rust, …; a warm-up block of each first): the same keystroke schedule and texts, \
        the client's coalescing re-implemented (newest text pending, one PUT in flight per path, sent `debounce` \
        after the last keystroke and at most `max delay` after the first unsent one; 400 ms / 3 s by default, 0 / 0 \
        for \"no debounce\"), PUT `{content, expected_version, op_id}` over reqwest (keep-alive, TCP_NODELAY), and a \
        tokio-tungstenite WebSocket joined to the project receiving the `file:update` events. Latency of a keystroke: \
        until the first event (browser: `change` with origin remote) whose content includes it; each side on one \
        clock (the browser's pages: performance.timeOrigin + now(); the bench: its monotonic clock)."
        .to_string();
    browser.quit().await;
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[derive(Default)]
struct Typing {
    /// Keystroke → first event containing it.
    keystroke: Latencies,
    /// PUT started → its event.
    write: Latencies,
    writes: u64,
}

impl Typing {
    fn merge(&mut self, other: &Typing) {
        self.keystroke.merge(&other.keystroke);
        self.write.merge(&other.write);
        self.writes += other.writes;
    }

    fn from_ms(keystroke_ms: &[f64], write_ms: &[f64]) -> Typing {
        let mut typing = Typing { writes: write_ms.len() as u64, ..Typing::default() };
        for ms in keystroke_ms {
            typing.keystroke.record_us((ms * 1000.0) as u64);
        }
        for ms in write_ms {
            typing.write.record_us((ms * 1000.0) as u64);
        }
        typing
    }
}

/// The text after `n` keystrokes (the same as typing.mjs types).
fn text_of(n: usize) -> String {
    "the quick brown fox jumps over the lazy dog; ".chars().cycle().take(n).collect()
}

/// The Node driver (clients/typescript/bench/typing.mjs) and its browser.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    ready: Value,
}

impl Browser {
    async fn start(ctx: &Ctx, hub: &Hub, project: Uuid, page_port: u16) -> anyhow::Result<Browser> {
        let config = json!({ "hub": hub.url(""), "token": ctx.token, "project": project, "pagePort": page_port });
        let mut child = Command::new("node")
            .arg("bench/typing.mjs")
            .arg(config.to_string())
            .current_dir(client_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node bench/typing.mjs")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut browser = Browser { child, stdin, lines, ready: Value::Null };
        browser.ready = browser.answer(Duration::from_secs(60)).await.context("the browser driver did not start")?;
        Ok(browser)
    }

    async fn answer(&mut self, within: Duration) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .context("no answer from the browser driver in time")??
            .context("the browser driver exited")?;
        let value: Value = serde_json::from_str(&line).with_context(|| format!("browser driver said {line:?}"))?;
        if let Some(error) = value.get("error") {
            bail!("browser driver: {}", error.as_str().unwrap_or_default());
        }
        Ok(value)
    }

    async fn command(&mut self, command: Value, within: Duration) -> anyhow::Result<Value> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        self.answer(within).await
    }

    async fn typing(&mut self, path: &str, keys: usize, debounce: &str) -> anyhow::Result<Typing> {
        let command = json!({ "cmd": "typing", "path": path, "keys": keys, "rate": RATE, "debounce": debounce });
        let answer = self.command(command, Duration::from_secs_f64(keys as f64 / RATE + 90.0)).await?;
        let list = |k: &str| -> Vec<f64> {
            answer[k].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
        };
        let keystroke = list("keystroke_ms");
        if keystroke.len() != keys {
            bail!("browser block {path}: {} keystroke latencies for {keys} keystrokes", keystroke.len());
        }
        Ok(Typing::from_ms(&keystroke, &list("write_ms")))
    }

    async fn bytes(&mut self, path: &str, seconds: f64, mode: &str) -> anyhow::Result<Value> {
        let command = json!({ "cmd": "bytes", "path": path, "seconds": seconds, "rate": RATE, "mode": mode });
        self.command(command, Duration::from_secs_f64(seconds + 90.0)).await
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// The baseline block: `keys` keystrokes typed by a Rust client with the client's coalescing.
async fn rust_typing(
    ctx: &Ctx,
    hub: &Hub,
    project: Uuid,
    path: &str,
    keys: usize,
    coalescing: Coalescing,
) -> anyhow::Result<Typing> {
    // (arrival ns, content length) of the path's events on the subscriber.
    let arrivals: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let ws = harness::connect_joined(hub.addr, &ctx.token, None, project).await?;
    let reader = {
        let (arrivals, path) = (arrivals.clone(), path.to_string());
        tokio::spawn(async move {
            let mut ws = ws;
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                let now = clock().now_ns();
                let Ok(ServerFrame::Event(frame)) = ServerFrame::parse(text.as_str()) else { continue };
                let Ok(Some(Event::FileUpdate(update))) = frame.event() else { continue };
                if update.file.file_path == path {
                    let length = update.file.content.chars().count();
                    arrivals.lock().unwrap_or_else(|p| p.into_inner()).push((now, length));
                }
            }
        })
    };

    let text = text_of(keys);
    let url = hub.url(&format!("/v1/projects/{project}/files/{path}"));
    let interval = Duration::from_secs_f64(1.0 / RATE);
    let debounce = Duration::from_millis(coalescing.debounce_ms);
    let max_delay = Duration::from_millis(coalescing.max_delay_ms);
    let start = Instant::now() + Duration::from_millis(50);
    let mut stamps: Vec<u64> = Vec::with_capacity(keys);
    let mut puts: Vec<(u64, usize)> = Vec::new();
    let mut typed = 0usize; // keystrokes so far = length of the local text
    let mut pending: Option<(usize, Instant, Instant)> = None; // (length, first unsent keystroke, due)
    let mut version: i64 = 0;
    let mut inflight: Option<std::pin::Pin<Box<dyn Future<Output = anyhow::Result<i64>> + Send>>> = None;
    loop {
        if typed == keys && pending.is_none() && inflight.is_none() {
            break;
        }
        let next_key = start + interval * typed as u32;
        let due = pending.filter(|_| inflight.is_none()).map(|(_, _, due)| due);
        tokio::select! {
            () = tokio::time::sleep_until(next_key), if typed < keys => {
                typed += 1;
                stamps.push(clock().now_ns());
                let now = Instant::now();
                let first = pending.map_or(now, |(_, first, _)| first);
                pending = Some((typed, first, (now + debounce).min(first + max_delay)));
            }
            () = tokio::time::sleep_until(due.unwrap_or(next_key)), if due.is_some() => {
                let Some((length, _, _)) = pending.take() else { continue };
                let body = PutFileRequest {
                    content: text[..length].to_owned(),
                    file_type: None,
                    expected_version: Some(SafeU64::try_from(version)?),
                    op_id: Some(Uuid::new_v4()),
                };
                let request = ctx.http.put(&url).bearer_auth(&ctx.token).json(&body).build()?;
                let http = ctx.http.clone();
                puts.push((clock().now_ns(), length));
                inflight = Some(Box::pin(async move {
                    let response = http.execute(request).await?;
                    let status = response.status();
                    if !status.is_success() {
                        bail!("PUT answered {status}: {}", response.text().await.unwrap_or_default());
                    }
                    Ok(response.json::<PutFileResponse>().await?.version)
                }));
            }
            answered = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                version = answered?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let arrivals = loop {
        let list = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if list.iter().any(|&(_, length)| length >= keys) {
            break list;
        }
        if Instant::now() > deadline {
            reader.abort();
            bail!("Rust block {path}: the last write's event did not arrive within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    reader.abort();
    let arrived = |length: usize| arrivals.iter().filter(|&&(_, l)| l >= length).map(|&(t, _)| t).min();
    let mut keystroke_ms = Vec::with_capacity(keys);
    for (i, sent) in stamps.iter().enumerate() {
        let at = arrived(i + 1).context("a keystroke's event never arrived")?;
        keystroke_ms.push(at.saturating_sub(*sent) as f64 / 1e6);
    }
    let write_ms: Vec<f64> = puts
        .iter()
        .filter_map(|&(sent, length)| arrived(length).map(|at| at.saturating_sub(sent) as f64 / 1e6))
        .collect();
    Ok(Typing::from_ms(&keystroke_ms, &write_ms))
}
