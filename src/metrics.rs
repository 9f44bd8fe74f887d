//! Prometheus metrics (CONTRACT section 8), one registry per [`App`](crate::App): no
//! process-wide globals, so several hubs can live in one test process.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::app::AppState;

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

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
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

/// Middleware: counts every request by its route template (never the raw path, which
/// would carry ids and file names) and status.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    state.metrics.observe_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}
