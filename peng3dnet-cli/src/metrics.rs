//! `serve --metrics`: the server's metrics in the Prometheus (OpenMetrics) text format,
//! kept by `prometheus-client` and fed by the library's [`ServerObserver`] hook.
//!
//! Names follow Prometheus' conventions: base units (seconds, bytes), `_total` on
//! counters, a `peng3dnet_` prefix.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peng3dnet::observe::ServerObserver;
use peng3dnet::server::Closed;
use peng3dnet::{CloseReason, ConnType};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http;

/// Label of the connection metrics: the connection type (`ping`, `classic`, a custom
/// type's name, or `none` for a connection that has not chosen one).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The connection type.
    pub r#type: String,
}

/// Labels of closes: the closeconn reason (`socketclose` without one, `other` for a reason
/// outside the protocol's) and who closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// The reason.
    pub reason: String,
    /// `server`, `peer`, or `socket` (the connection ended without a closeconn).
    pub by: String,
}

/// Label of refusals: the reason sent to the peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// Label of the build info.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    /// The version.
    pub version: String,
}

/// The server's metrics. Cheap to clone (every metric is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    open: Family<TypeLabel, Gauge>,
    accepted: Family<TypeLabel, Counter>,
    /// Shortcuts into the families for the common types (no label lookup per event).
    open_none: Gauge,
    open_ping: Gauge,
    accepted_ping: Counter,
    pings: Counter,
    closes: Family<CloseLabels, Counter>,
    refusals: Family<ReasonLabel, Counter>,
    received: Counter,
    sent: Counter,
    tls_failures: Counter,
    handling: Histogram,
    reload_success: Gauge,
    reload_time: Gauge<f64, AtomicU64>,
}

fn label(conntype: &str) -> TypeLabel {
    TypeLabel {
        r#type: conntype.to_owned(),
    }
}

impl Metrics {
    /// Registers every metric (the build info with this program's version).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let open = Family::<TypeLabel, Gauge>::default();
        registry.register(
            "peng3dnet_connections_open",
            "Connections open now, by connection type (none: not chosen yet)",
            open.clone(),
        );
        let accepted = Family::<TypeLabel, Counter>::default();
        registry.register(
            "peng3dnet_connections_accepted",
            "Connections accepted, by the connection type they chose (none: closed before choosing)",
            accepted.clone(),
        );
        let pings = Counter::default();
        registry.register("peng3dnet_pings", "Pings answered", pings.clone());
        let closes = Family::<CloseLabels, Counter>::default();
        registry.register(
            "peng3dnet_closes",
            "Connections closed, by closeconn reason (other: not one of the protocol) and by who closed (server, peer, socket)",
            closes.clone(),
        );
        let refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "peng3dnet_refusals",
            "Connections the server refused or closed for a limit or a protocol violation, by reason",
            refusals.clone(),
        );
        let received = Counter::default();
        registry.register_with_unit(
            "peng3dnet_received",
            "Bytes of frames received (after TLS)",
            Unit::Bytes,
            received.clone(),
        );
        let sent = Counter::default();
        registry.register_with_unit(
            "peng3dnet_sent",
            "Bytes of frames sent (before TLS)",
            Unit::Bytes,
            sent.clone(),
        );
        let tls_failures = Counter::default();
        registry.register(
            "peng3dnet_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_failures.clone(),
        );
        // 1 µs to about 0.26 s, four times per bucket.
        let handling = Histogram::new(exponential_buckets(1e-6, 4.0, 10));
        registry.register_with_unit(
            "peng3dnet_ping_handling",
            "Time from a ping's arrival to its pong being encoded",
            Unit::Seconds,
            handling.clone(),
        );
        let reload_success = Gauge::default();
        registry.register(
            "peng3dnet_config_last_reload_successful",
            "Whether the last reload (SIGHUP) of the data, configuration and TLS files succeeded",
            reload_success.clone(),
        );
        let reload_time = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "peng3dnet_config_last_reload_success_timestamp",
            "Unix time of the last successful load of the settings (start or SIGHUP)",
            Unit::Seconds,
            reload_time.clone(),
        );
        // A gauge of 1 with the version as a label (the `_info` convention), not an
        // OpenMetrics info metric: Prometheus' text format (promtool) has no info type.
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("peng3dnet_build_info", "The program's version", build);
        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let open_none = open.get_or_create(&label("none")).clone();
        let open_ping = open.get_or_create(&label("ping")).clone();
        let accepted_ping = accepted.get_or_create(&label("ping")).clone();
        let metrics = Metrics {
            open_none,
            open_ping,
            accepted_ping,
            registry: Arc::new(registry),
            open,
            accepted,
            pings,
            closes,
            refusals,
            received,
            sent,
            tls_failures,
            handling,
            reload_success,
            reload_time,
        };
        metrics.reloaded(true);
        metrics
    }

    /// Records a load of the settings: its success, and the time when successful.
    pub fn reloaded(&self, success: bool) {
        self.reload_success.set(i64::from(success));
        if success {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.reload_time.set(now.as_secs_f64());
        }
    }

    /// The exposition (OpenMetrics text).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn open_gauge(&self, conntype: &ConnType) -> Gauge {
        match conntype {
            ConnType::Ping => self.open_ping.clone(),
            other => self.open.get_or_create(&label(other.as_str())).clone(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl ServerObserver for Metrics {
    fn accepted(&self) {
        self.open_none.inc();
    }

    fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn tls_handshake_failed(&self) {
        self.tls_failures.inc();
        // Accepted, but it never became a connection.
        self.open_none.dec();
        self.accepted.get_or_create(&label("none")).inc();
    }

    fn established(&self, conntype: &ConnType) {
        self.open_none.dec();
        self.open_gauge(conntype).inc();
        match conntype {
            ConnType::Ping => self.accepted_ping.inc(),
            other => self.accepted.get_or_create(&label(other.as_str())).inc(),
        };
    }

    fn closed(&self, conntype: Option<&ConnType>, closed: &Closed) {
        match conntype {
            Some(conntype) => {
                self.open_gauge(conntype).dec();
            }
            None => {
                self.open_none.dec();
                self.accepted.get_or_create(&label("none")).inc();
            }
        }
        // Bounded labels only: a reason outside the protocol's (which a peer may choose
        // freely, of any length and with any bytes) is counted as `other`.
        let (by, reason) = match closed {
            Closed::ByUs(reason) => ("server", reason.metric_label()),
            Closed::ByPeer(reason) => (
                "peer",
                reason.as_ref().map_or("none", CloseReason::metric_label),
            ),
            Closed::SocketClosed => ("socket", CloseReason::SocketClose.metric_label()),
        };
        if let Closed::ByUs(r) = closed {
            if !matches!(r, CloseReason::PingComplete | CloseReason::ServerShutdown) {
                self.refused(r.metric_label());
            }
        }
        self.closes
            .get_or_create(&CloseLabels {
                reason: reason.to_owned(),
                by: by.to_owned(),
            })
            .inc();
    }

    fn ping_answered(&self, handling: Duration) {
        self.pings.inc();
        self.handling.observe(handling.as_secs_f64());
    }

    fn bytes_read(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    fn bytes_written(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }
}

/// Serves `GET /metrics` (and a short index at `/`) on `listener` until `stop`.
pub(crate) async fn serve(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    http::serve(listener, stop, move |request, _peer: SocketAddr| {
        let metrics = metrics.clone();
        async move {
            match request.uri().path() {
                "/metrics" => http::exposition(&request, metrics.encode()),
                "/" => http::text(
                    hyper::StatusCode::OK,
                    "peng3dnet serve: metrics at /metrics\n",
                ),
                _ => http::text(hyper::StatusCode::NOT_FOUND, "not found; try /metrics\n"),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.accepted();
        metrics.established(&ConnType::Ping);
        metrics.ping_answered(Duration::from_micros(30));
        metrics.bytes_read(40);
        metrics.bytes_written(80);
        metrics.closed(
            Some(&ConnType::Ping),
            &Closed::ByUs(CloseReason::PingComplete),
        );
        metrics.accepted();
        metrics.closed(None, &Closed::ByUs(CloseReason::Timeout));
        metrics.refused("serverfull");
        let text = metrics.encode();
        for line in [
            "peng3dnet_pings_total 1",
            "peng3dnet_received_bytes_total 40",
            "peng3dnet_sent_bytes_total 80",
            "peng3dnet_connections_accepted_total{type=\"ping\"} 1",
            "peng3dnet_connections_accepted_total{type=\"none\"} 1",
            "peng3dnet_connections_open{type=\"ping\"} 0",
            "peng3dnet_connections_open{type=\"none\"} 0",
            "peng3dnet_closes_total{reason=\"pingcomplete\",by=\"server\"} 1",
            "peng3dnet_refusals_total{reason=\"timeout\"} 1",
            "peng3dnet_refusals_total{reason=\"serverfull\"} 1",
            "peng3dnet_ping_handling_seconds_count 1",
            "peng3dnet_config_last_reload_successful 1",
            "peng3dnet_tls_handshake_failures_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(text.contains("peng3dnet_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_peers_own_reason_is_counted_as_other_whatever_it_holds() {
        let metrics = Metrics::new();
        for reason in ["x\"} 1\npeng3dnet_pings_total 9", "a", "b"] {
            metrics.accepted();
            metrics.established(&ConnType::Ping);
            metrics.closed(
                Some(&ConnType::Ping),
                &Closed::ByPeer(Some(CloseReason::from(reason))),
            );
        }
        let text = metrics.encode();
        assert!(
            text.lines()
                .any(|l| l == "peng3dnet_closes_total{reason=\"other\",by=\"peer\"} 3"),
            "{text}"
        );
        assert!(!text.contains("pings_total 9"), "{text}");
    }
}
