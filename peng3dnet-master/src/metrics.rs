//! The master's metrics, in the Prometheus/OpenMetrics text format at `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `peng3dnet_master_announces`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnnounceLabels {
    /// `post` (list) or `delete` (unlist).
    pub method: &'static str,
    /// `accepted` or `refused`.
    pub result: &'static str,
    /// Why refused (an error kind: `not_verified`, `rate_limited`...), `ok` when accepted.
    pub reason: &'static str,
}

/// Labels of `peng3dnet_master_pings`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PingLabels {
    /// `verify` (an announce's ping-back) or `refresh`.
    pub kind: &'static str,
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Labels of `peng3dnet_master_http_connections_refused`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `max_connections`, `per_source`, `proxy_header`, `untrusted_proxy`.
    pub reason: &'static str,
}

/// Every metric of a master.
pub struct Metrics {
    registry: Registry,
    /// Servers listed (up or down), in this master's copy of the list.
    pub listed: Gauge,
    /// Servers up.
    pub up: Gauge,
    /// Announces by method, result and reason.
    pub announces: Family<AnnounceLabels, Counter>,
    /// Pings by kind and result.
    pub pings: Family<PingLabels, Counter>,
    /// How late the latest claimed refresh pings were, seconds past their due time.
    pub refresh_lag: Gauge<f64, AtomicU64>,
    /// Servers dropped for silence.
    pub dropped: Counter,
    /// HTTP connections closed at accept, by reason.
    pub refused: Family<RefusedLabels, Counter>,
    /// Database operations that failed.
    pub store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("peng3dnet_master");
        let listed = Gauge::default();
        let up = Gauge::default();
        let announces = Family::default();
        let pings = Family::default();
        let refresh_lag = Gauge::<f64, AtomicU64>::default();
        let dropped = Counter::default();
        let refused = Family::default();
        let store_errors = Counter::default();
        registry.register(
            "servers_listed",
            "Servers listed, up or down",
            listed.clone(),
        );
        registry.register(
            "servers_up",
            "Servers whose last ping was answered",
            up.clone(),
        );
        registry.register(
            "announces",
            "Announces (POST and DELETE /announce) by result and reason",
            announces.clone(),
        );
        registry.register("pings", "Pings sent, by kind and result", pings.clone());
        registry.register(
            "refresh_lag_seconds",
            "How late the last claimed refresh pings were, past their due time",
            refresh_lag.clone(),
        );
        registry.register(
            "dropped",
            "Servers dropped after --drop-after without a pong",
            dropped.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed when accepted, by reason",
            refused.clone(),
        );
        registry.register(
            "store_errors",
            "Database operations that failed",
            store_errors.clone(),
        );
        Metrics {
            registry,
            listed,
            up,
            announces,
            pings,
            refresh_lag,
            dropped,
            refused,
            store_errors,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts an announce.
    pub fn announce(&self, method: &'static str, reason: Option<&'static str>) {
        let labels = AnnounceLabels {
            method,
            result: if reason.is_some() {
                "refused"
            } else {
                "accepted"
            },
            reason: reason.unwrap_or("ok"),
        };
        self.announces.get_or_create(&labels).inc();
    }

    /// Counts a connection closed when accepted.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Counts a ping.
    pub fn ping(&self, kind: &'static str, ok: bool) {
        let labels = PingLabels {
            kind,
            result: if ok { "ok" } else { "failed" },
        };
        self.pings.get_or_create(&labels).inc();
    }
}
