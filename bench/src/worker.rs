//! A client process of the `sockets_100k` scenario (`synchub-bench --client-worker`): one
//! process may hold at most ~20,000 descriptors here, so 100,000 sockets need several. It
//! opens its share of joined sockets to one hub from its own loopback source addresses and
//! reports on stdout; the parent announces each write's send time on stdin.
//!
//! stdin: `t WALL_US` (the next event's write is sent now); `r SEQ` (the parent stopped
//! waiting for SEQ: report what arrived so far); closing stdin ends the worker.
//! stdout: `ready N SECS` once every socket joined; per event, once every socket has it,
//! `done SEQ P50_US P99_US MAX_US` (send → arrival over this worker's sockets); after
//! `r SEQ`, `partial SEQ COUNT P50_US P99_US MAX_US` over the COUNT sockets that had it.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness;
use crate::scenarios::fanout::event_seq;
use crate::stats::Latencies;

pub struct Args {
    pub hub: SocketAddr,
    pub project: uuid::Uuid,
    pub sockets: usize,
    /// Source addresses 127.0.{net}.2 … 127.0.{net}.9.
    pub net: u8,
    pub token: String,
}

fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let Args { hub, project, sockets, net, token } = args;
    let token = &token;
    let opened: Vec<anyhow::Result<harness::Ws>> = futures_util::stream::iter(0..sockets)
        .map(|i| async move {
            let source = Ipv4Addr::new(127, 0, net, 2 + (i % harness::SOURCE_ADDRESSES) as u8);
            let mut last = None;
            for attempt in 0..5u64 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
                }
                match harness::connect_joined(hub, token, Some(source), project).await {
                    Ok(ws) => return Ok(ws),
                    Err(err) => last = Some(err),
                }
            }
            Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")).context(format!("socket {i}")))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let opened: Vec<harness::Ws> = opened.into_iter().collect::<anyhow::Result<_>>()?;
    let announced = Arc::new(AtomicI64::new(0));
    // Per seq: send → arrival latencies of this worker's sockets so far.
    let arrivals: Arc<Mutex<HashMap<usize, Latencies>>> = Arc::new(Mutex::new(HashMap::new()));
    for mut ws in opened {
        let (announced, arrivals) = (announced.clone(), arrivals.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                let now = wall_us();
                let Some(seq) = event_seq(text.as_str()) else { continue };
                let sent = announced.load(Ordering::Relaxed);
                let done = {
                    let mut arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                    let seen = arrivals.entry(seq).or_default();
                    seen.record_us((now - sent).max(1) as u64);
                    (seen.count() as usize == sockets).then(|| format!("done {seq} {}", figures(seen)))
                };
                if let Some(line) = done {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
        });
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {sockets} {:.1}", started.elapsed().as_secs_f64())?;
        out.flush()?;
    }
    // stdin on a plain thread (the bench's tokio has no io-std); its end ends the worker.
    let reader = std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if let Some(us) = line.strip_prefix("t ").and_then(|t| t.trim().parse().ok()) {
                announced.store(us, Ordering::Relaxed);
            } else if let Some(seq) = line.strip_prefix("r ").and_then(|t| t.trim().parse::<usize>().ok()) {
                let line = {
                    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                    match arrivals.get(&seq) {
                        Some(seen) => format!("partial {seq} {} {}", seen.count(), figures(seen)),
                        None => format!("partial {seq} 0 0 0 0"),
                    }
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    });
    tokio::task::spawn_blocking(move || reader.join()).await?.map_err(|_| anyhow::anyhow!("stdin reader panicked"))
}

/// "P50_US P99_US MAX_US" of one event's arrivals.
fn figures(seen: &Latencies) -> String {
    format!("{} {} {}", seen.ms(0.5) * 1e3, seen.ms(0.99) * 1e3, seen.max_ms() * 1e3)
}
