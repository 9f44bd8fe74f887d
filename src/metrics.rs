//! Prometheus metrics (CONTRACT section 8), one registry per [`App`](crate::App): no
//! process-wide globals, so several hubs can live in one test process. The hub's own
//! metrics are prefixed `synchub_`; the process metrics read from `/proc/self` at each
//! scrape keep the conventional unprefixed `process_*` names, so stock dashboards work.

use std::time::Duration;

use axum::http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event_type: String,
}

pub struct Metrics {
    registry: Registry,
    /// Unprefixed: the `process_*` family.
    process: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram>,
    pub rate_limited: Counter,
    pub open_sockets: Gauge,
    pub joined_channels: Gauge,
    pub events_published: Family<EventLabels, Counter>,
    pub events_delivered: Counter,
    /// Of `events_delivered`: written by feeds straight to idle sockets (realtime/lane.rs).
    pub events_delivered_by_feeds: Counter,
    /// Reads of the event log by feeds (a write made through this hub needs none).
    pub event_log_reads: Counter,
    pub event_delivery_lag: Histogram,
    pub slow_consumer_drops: Counter,
    pub snapshot_build_seconds: Histogram,
    pub snapshot_bytes: Counter,
    pub snapshot_files: Counter,
    pub snapshot_reused: Counter,
    /// The wake-up listener lost its LISTEN connection and reconnects.
    pub listen_reconnects: Counter,
    /// Write events sent to other hubs with their announcement (realtime/wakeups.rs).
    pub event_frames_shipped: Counter,
    pub history: HistoryMetrics,
}

/// What the file-history task did (src/history.rs).
#[derive(Clone, Debug, Default)]
pub struct HistoryMetrics {
    /// Versions retention removed (their rows stay, without bytes).
    pub versions_removed: Counter,
    /// Versions stored as deltas.
    pub versions_compacted: Counter,
    /// Stored bytes given back by compaction and retention.
    pub bytes_freed: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("synchub");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let rate_limited = Counter::default();
        let open_sockets = Gauge::default();
        let joined_channels = Gauge::default();
        let events_published = Family::<EventLabels, Counter>::default();
        let events_delivered = Counter::default();
        let events_delivered_by_feeds = Counter::default();
        let event_log_reads = Counter::default();
        let event_delivery_lag = latency_histogram();
        let slow_consumer_drops = Counter::default();
        let snapshot_build_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let snapshot_bytes = Counter::default();
        let snapshot_files = Counter::default();
        let snapshot_reused = Counter::default();
        let listen_reconnects = Counter::default();
        let history = HistoryMetrics::default();
        registry.register(
            "history_versions_removed",
            "File versions removed by history retention",
            history.versions_removed.clone(),
        );
        registry.register(
            "history_versions_compacted",
            "File versions stored as deltas by the history task",
            history.versions_compacted.clone(),
        );
        registry.register(
            "history_bytes_freed",
            "Stored bytes of file history freed by compaction and retention",
            history.bytes_freed.clone(),
        );
        registry.register("http_requests", "HTTP requests by route and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_latency.clone());
        registry.register(
            "rate_limited",
            "Writes refused by the write rate limit (HTTP and socket)",
            rate_limited.clone(),
        );
        registry.register("open_sockets", "Open WebSocket connections", open_sockets.clone());
        registry.register("joined_channels", "Joined project channels over all sockets", joined_channels.clone());
        registry.register(
            "events_published",
            "Events this hub published to its subscribers (once per event, however many sockets), by type",
            events_published.clone(),
        );
        registry.register("events_delivered", "Event frames sent to sockets", events_delivered.clone());
        registry.register(
            "events_delivered_by_feeds",
            "Of the event frames sent to sockets, those a feed wrote straight to an idle socket (one send \
             of bytes framed once) rather than through the socket's queue and task",
            events_delivered_by_feeds.clone(),
        );
        registry.register(
            "event_log_reads",
            "Reads of the event log by this hub's feeds (the event of a write made through this hub comes with \
             the write's answer and needs none)",
            event_log_reads.clone(),
        );
        registry.register(
            "event_delivery_lag_seconds",
            "Commit to frame-sent lag of delivered events",
            event_delivery_lag.clone(),
        );
        registry.register(
            "slow_consumer_drops",
            "Sockets closed with 4008 (slow consumer)",
            slow_consumer_drops.clone(),
        );
        registry.register("snapshot_build_seconds", "Snapshot build + store time", snapshot_build_seconds.clone());
        registry.register("snapshot_bytes", "Bytes of snapshots built", snapshot_bytes.clone());
        registry.register("snapshot_files", "Files in snapshots built", snapshot_files.clone());
        registry.register(
            "snapshot_reused",
            "Snapshot requests answered by an existing snapshot",
            snapshot_reused.clone(),
        );
        registry.register(
            "listen_reconnects",
            "Times the wake-up listener lost its LISTEN connection and reconnected",
            listen_reconnects.clone(),
        );
        let event_frames_shipped = Counter::default();
        registry.register(
            "event_frames_shipped",
            "Write events this hub sent to the other hubs with its announcement (so that their subscribers \
             need no read of the log)",
            event_frames_shipped.clone(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            process,
            http_requests,
            http_latency,
            rate_limited,
            open_sockets,
            joined_channels,
            events_published,
            events_delivered,
            events_delivered_by_feeds,
            event_log_reads,
            event_delivery_lag,
            slow_consumer_drops,
            snapshot_build_seconds,
            snapshot_bytes,
            snapshot_files,
            snapshot_reused,
            listen_reconnects,
            event_frames_shipped,
            history,
        }
    }
}

/// The media types `/metrics` answers in: the Prometheus text format 0.0.4 by default,
/// OpenMetrics when the `Accept` header asks for it.
pub const MEDIA_TYPES: &[&str] = &[PROMETHEUS_TEXT, OPENMETRICS_TEXT];
const PROMETHEUS_TEXT: &str = "text/plain";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text";

impl Metrics {
    /// Reports the database pool (size, idle, waiting) at each scrape.
    pub fn register_pool(&mut self, pool: deadpool_postgres::Pool) {
        self.registry.register_collector(Box::new(PoolCollector(pool)));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }

    /// The exposition the `Accept` header asks for, with its `Content-Type`.
    pub fn render_for(&self, accept: Option<&str>) -> (&'static str, String) {
        if accept.is_some_and(|accept| accept.contains(OPENMETRICS_TEXT)) {
            ("application/openmetrics-text; version=1.0.0; charset=utf-8", self.render())
        } else {
            ("text/plain; version=0.0.4; charset=utf-8", to_prometheus_text(&self.render()))
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels { method: method.to_string(), route: route.to_string(), status })
            .inc();
        self.http_latency
            .get_or_create(&RouteLabels { method: method.to_string(), route: route.to_string() })
            .observe(elapsed.as_secs_f64());
    }
}

/// The `method` label: a standard method, or `other` (any client may send any token as a
/// method, and each would otherwise become a series).
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] =
        [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
    KNOWN.iter().find(|known| *known == method).map_or("other", Method::as_str)
}

/// Writes one metric computed at scrape time.
fn encode_one(encoder: &mut DescriptorEncoder, name: &str, help: &str, metric: impl EncodeMetric) -> std::fmt::Result {
    let sample = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(sample)
}

/// The database pool as deadpool reports it, read at each scrape.
struct PoolCollector(deadpool_postgres::Pool);

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolCollector")
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let status = self.0.status();
        let gauge = |n: usize| ConstGauge::new(n as i64);
        encode_one(&mut encoder, "db_pool_max_size", "Connections the pool may open", gauge(status.max_size))?;
        encode_one(&mut encoder, "db_pool_size", "Connections the pool holds open", gauge(status.size))?;
        encode_one(&mut encoder, "db_pool_idle", "Open connections not in use", gauge(status.available))?;
        encode_one(&mut encoder, "db_pool_waiting", "Requests waiting for a connection", gauge(status.waiting))
    }
}

/// CPU, memory and file descriptors of this process, from `/proc/self` (Linux; elsewhere
/// nothing is reported).
#[derive(Debug)]
struct ProcessCollector;

/// Linux reports CPU times in /proc in USER_HZ units, fixed at 100 on every architecture
/// the kernel exposes to user space.
const USER_HZ: f64 = 100.0;

#[derive(Debug, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    start_time_seconds: f64,
    virtual_memory_bytes: u64,
}

/// Parses `/proc/self/stat` (fields after the parenthesised command name, which may hold
/// spaces) and the boot time from `/proc/stat`.
fn parse_stat(stat: &str, boot_time: u64) -> Option<ProcessStats> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Field numbers of proc(5) minus 3: the first field after the name is field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / USER_HZ,
        virtual_memory_bytes: field(23)?,
    })
}

/// A `Key:   value kB` line of `/proc/self/status`, in bytes.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    let kib = line[key.len()..].trim_start_matches(':').split_whitespace().next()?.parse::<u64>().ok()?;
    Some(kib * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let boot_time = read("/proc/stat")
            .and_then(|stat| stat.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse::<u64>().ok()));
        if let Some(stats) = read("/proc/self/stat").zip(boot_time).and_then(|(stat, boot)| parse_stat(&stat, boot)) {
            let cpu = ConstCounter::new(stats.cpu_seconds);
            encode_one(&mut encoder, "process_cpu_seconds", "User and system CPU time spent, in seconds", cpu)?;
            let start = ConstGauge::new(stats.start_time_seconds);
            encode_one(
                &mut encoder,
                "process_start_time_seconds",
                "Start time since the Unix epoch, in seconds",
                start,
            )?;
            let virtual_memory = ConstGauge::new(stats.virtual_memory_bytes as i64);
            encode_one(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size in bytes", virtual_memory)?;
        }
        if let Some(rss) = read("/proc/self/status").and_then(|status| status_kib(&status, "VmRSS")) {
            encode_one(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                ConstGauge::new(rss as i64),
            )?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle being read is one of the entries.
            let open = entries.count().saturating_sub(1);
            encode_one(&mut encoder, "process_open_fds", "Open file descriptors", ConstGauge::new(open as i64))?;
        }
        if let Some(max) = read("/proc/self/limits").as_deref().and_then(max_open_files) {
            encode_one(&mut encoder, "process_max_fds", "Limit of open file descriptors", ConstGauge::new(max as i64))?;
        }
        Ok(())
    }
}

/// OpenMetrics text → Prometheus text 0.0.4. The samples are the same; what differs is the
/// metadata: a counter family is named after its `_total` samples, there are no `# UNIT`
/// lines, no `# EOF`, and `unknown` is `untyped`.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = ["# HELP ", "# TYPE "].into_iter().find_map(|tag| Some((tag, line.strip_prefix(tag)?)));
        match metadata {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                let tail = if tag == "# TYPE " && tail == "unknown" { "untyped" } else { tail };
                out.push_str(&format!("{tag}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_come_from_a_fixed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        assert_eq!(method_label(&Method::from_bytes(b"XMETHOD").unwrap()), "other");
        assert_eq!(method_label(&Method::CONNECT), "other");
    }

    #[test]
    fn proc_files_are_read_field_by_field() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (my (hub) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 150 0 0 20 0 9 0 1000 \
                    123456789 2048 18446744073709551615";
        let parsed = parse_stat(stat, 1_700_000_000).unwrap();
        assert_eq!(
            parsed,
            ProcessStats { cpu_seconds: 4.0, start_time_seconds: 1_700_000_010.0, virtual_memory_bytes: 123_456_789 }
        );
        assert_eq!(parse_stat("garbage", 0), None);
        assert_eq!(status_kib("Name:\tsynchub\nVmRSS:\t   10240 kB\n", "VmRSS"), Some(10_485_760));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(max_open_files(limits), Some(20_000));
    }

    #[test]
    fn prometheus_text_names_counter_families_after_their_samples() {
        let metrics = Metrics::default();
        metrics.rate_limited.inc();
        metrics.open_sockets.set(2);
        let (content_type, text) = metrics.render_for(Some("text/plain"));
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(text.contains("# HELP synchub_rate_limited_total "), "{text}");
        assert!(text.contains("# TYPE synchub_rate_limited_total counter\nsynchub_rate_limited_total 1\n"), "{text}");
        assert!(text.contains("# TYPE synchub_open_sockets gauge\nsynchub_open_sockets 2\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        let (content_type, text) = metrics.render_for(Some("application/openmetrics-text; version=1.0.0"));
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
