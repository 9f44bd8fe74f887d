//! Prometheus metrics (CONTRACT section 8), one registry per [`App`](crate::App): no
//! process-wide globals, so several hubs can live in one test process.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram>,
    pub rate_limited: Counter,
    pub open_sockets: Gauge,
    pub joined_channels: Gauge,
    pub events_published: Family<EventLabels, Counter>,
    pub events_delivered: Counter,
    pub event_delivery_lag: Histogram,
    pub slow_consumer_drops: Counter,
    pub snapshot_build_seconds: Histogram,
    pub snapshot_bytes: Counter,
    pub snapshot_files: Counter,
    pub snapshot_reused: Counter,
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
        let event_delivery_lag = latency_histogram();
        let slow_consumer_drops = Counter::default();
        let snapshot_build_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let snapshot_bytes = Counter::default();
        let snapshot_files = Counter::default();
        let snapshot_reused = Counter::default();
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
        Metrics {
            registry,
            http_requests,
            http_latency,
            rate_limited,
            open_sockets,
            joined_channels,
            events_published,
            events_delivered,
            event_delivery_lag,
            slow_consumer_drops,
            snapshot_build_seconds,
            snapshot_bytes,
            snapshot_files,
            snapshot_reused,
        }
    }
}

/// The media types `/metrics` answers in: the Prometheus text format 0.0.4 by default,
/// OpenMetrics when the `Accept` header asks for it.
pub const MEDIA_TYPES: &[&str] = &[PROMETHEUS_TEXT, OPENMETRICS_TEXT];
const PROMETHEUS_TEXT: &str = "text/plain";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text";

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
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
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] =
        [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
    KNOWN.iter().find(|known| *known == method).map_or("other", Method::as_str)
}

/// Middleware: counts every request by its route template (never the raw path, which
/// would carry ids and file names), method and status. Every label comes from a fixed
/// set, so no request can add a series.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    metrics.observe_request(method, &route, response.status().as_u16(), started.elapsed());
    response
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
