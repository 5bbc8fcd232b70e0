//! Prometheus metrics at `GET /metrics` on the public listener.
//!
//! Counters and histograms live in one process-wide registry, updated where the work happens
//! (record ingest, merges, trigger firings). Sessions by state and connected agents are read
//! at scrape time from the store and the hub, so they are exact rather than tracked by hand.
//! Only aggregate numbers are exposed: no ids, names or secrets.

use crate::sessions::live::Hub;
use crate::store::{SessionStatus, Store};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FiringLabel {
    pub kind: String,
    pub outcome: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    sessions: Family<StateLabel, Gauge>,
    connected_agents: Gauge,
    pub records_ingested: Counter,
    pub record_batches: Counter,
    /// Batch received → acked (durable), seconds.
    pub ack_latency: Histogram,
    pub heartbeats: Counter,
    /// Rows per group commit of the record pipeline.
    pub commit_rows: Histogram,
    /// Duration of one group commit, seconds.
    pub commit_seconds: Histogram,
    pub merges: Family<OutcomeLabel, Counter>,
    pub trigger_firings: Family<FiringLabel, Counter>,
    /// Attach viewers ended with RESOURCE_EXHAUSTED for not reading.
    pub viewers_cut_off: Counter,
    /// Wake-ups sent to and received from other replicas (PostgreSQL NOTIFY).
    pub cluster_wakeups_sent: Counter,
    pub cluster_wakeups_received: Counter,
    /// Privileged actions whose audit event could not be written.
    pub audit_write_failures: Counter,
    /// Snapshot builds this replica ran, by outcome (`active`, `failed`).
    pub snapshot_builds: Family<OutcomeLabel, Counter>,
    /// Calls through the connector broker, by status (`ok`, `error`, `denied`,
    /// `pending_approval`).
    pub connector_calls: Family<OutcomeLabel, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("kortix");
        let sessions = Family::<StateLabel, Gauge>::default();
        let connected_agents = Gauge::default();
        let records_ingested = Counter::default();
        let record_batches = Counter::default();
        // 100 µs .. ~3.3 s.
        let ack_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let heartbeats = Counter::default();
        // 1 .. 32768 rows.
        let commit_rows = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let merges = Family::<OutcomeLabel, Counter>::default();
        let trigger_firings = Family::<FiringLabel, Counter>::default();
        let viewers_cut_off = Counter::default();
        let cluster_wakeups_sent = Counter::default();
        let cluster_wakeups_received = Counter::default();
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Privileged actions whose audit event could not be written",
            audit_write_failures.clone(),
        );
        let snapshot_builds = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "snapshot_builds",
            "Snapshot builds run by this replica, by outcome",
            snapshot_builds.clone(),
        );
        let connector_calls = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "connector_calls",
            "Calls through the connector broker, by status",
            connector_calls.clone(),
        );
        registry.register("sessions", "Sessions by state", sessions.clone());
        registry.register(
            "connected_agents",
            "Agent streams connected to this replica",
            connected_agents.clone(),
        );
        registry.register(
            "records_ingested",
            "Agent records stored durably",
            records_ingested.clone(),
        );
        registry.register(
            "record_batches",
            "Agent record batches acked",
            record_batches.clone(),
        );
        registry.register(
            "record_ack_latency_seconds",
            "Time from receiving a record batch to acking it durable",
            ack_latency.clone(),
        );
        registry.register(
            "heartbeats",
            "Agent heartbeats answered",
            heartbeats.clone(),
        );
        registry.register(
            "record_commit_rows",
            "Records per group commit (all sessions' batches stored in one transaction)",
            commit_rows.clone(),
        );
        registry.register(
            "record_commit_seconds",
            "Duration of one group commit of records",
            commit_seconds.clone(),
        );
        registry.register(
            "merges",
            "Change-request merge attempts by outcome",
            merges.clone(),
        );
        registry.register(
            "trigger_firings",
            "Trigger firings by kind and outcome",
            trigger_firings.clone(),
        );
        registry.register(
            "attach_viewers_cut_off",
            "Attach viewers ended for not reading their stream (RESOURCE_EXHAUSTED)",
            viewers_cut_off.clone(),
        );
        registry.register(
            "cluster_wakeups_sent",
            "Wake-ups for viewers on other replicas sent through PostgreSQL NOTIFY",
            cluster_wakeups_sent.clone(),
        );
        registry.register(
            "cluster_wakeups_received",
            "Wake-ups from other replicas received through PostgreSQL LISTEN",
            cluster_wakeups_received.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            sessions,
            connected_agents,
            records_ingested,
            record_batches,
            ack_latency,
            heartbeats,
            commit_rows,
            commit_seconds,
            merges,
            trigger_firings,
            viewers_cut_off,
            cluster_wakeups_sent,
            cluster_wakeups_received,
            audit_write_failures,
            snapshot_builds,
            connector_calls,
        }
    }

    pub fn observe_ack(&self, records: usize, latency: Duration) {
        self.records_ingested.inc_by(records as u64);
        self.record_batches.inc();
        self.ack_latency.observe(latency.as_secs_f64());
    }

    pub fn observe_commit(&self, rows: usize, took: Duration) {
        self.commit_rows.observe(rows as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub fn merge(&self, outcome: &str) {
        self.merges
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn firing(&self, kind: &str, outcome: &str) {
        self.trigger_firings
            .get_or_create(&FiringLabel {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The text exposition, after refreshing the scrape-time gauges.
    async fn render(&self, store: &Store, hub: &Hub) -> Result<String, String> {
        let counts = store
            .count_sessions_by_status()
            .await
            .map_err(|e| e.to_string())?;
        for status in SessionStatus::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            self.sessions
                .get_or_create(&StateLabel {
                    state: status.as_str().to_string(),
                })
                .set(n);
        }
        self.connected_agents.set(hub.connected_agents() as i64);
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .map_err(|_| "metrics registry poisoned".to_string())?;
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

#[derive(Clone)]
struct Scrape {
    store: Store,
    hub: Hub,
}

/// `GET /metrics`.
pub fn router(store: Store, hub: Hub) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { store, hub })
}

async fn scrape(State(s): State<Scrape>) -> Response {
    match metrics().render(&s.store, &s.hub).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "rendering metrics");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("metrics unavailable: {e}\n"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exposes_sessions_agents_records_merges_and_firings() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let m = metrics();
        m.observe_ack(3, Duration::from_millis(2));
        m.merge("merged");
        m.firing("cron", "started");
        let text = m.render(&store, &Hub::new()).await.unwrap();
        for needle in [
            "kortix_sessions{state=\"running\"} 0",
            "kortix_connected_agents 0",
            "kortix_records_ingested_total",
            "kortix_record_ack_latency_seconds_bucket",
            "kortix_merges_total{outcome=\"merged\"}",
            "kortix_trigger_firings_total{kind=\"cron\",outcome=\"started\"}",
            "kortix_attach_viewers_cut_off_total",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
