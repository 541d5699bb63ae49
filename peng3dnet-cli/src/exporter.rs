//! `peng3dnet exporter`: the blackbox_exporter pattern for peng3dnet. Prometheus scrapes
//! `GET /probe?target=HOST:PORT`; the exporter pings the target once and answers with
//! the result as metrics. A failed probe is `probe_success 0` with the reason, never an
//! HTTP error; every probe ends within its timeout.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use peng3dnet::ping::{ping_server, PingOptions, PingReply};
use peng3dnet::tls::ClientTls;
use peng3dnet::Value;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::{self, query_param};
use crate::output::Out;
use crate::serve::init_logging_as;
use crate::{error, parse_seconds, Exit, ExporterArgs};

pub(crate) const EXPORTER_AFTER: &str = "\
Examples:
  peng3dnet exporter --listen 127.0.0.1:9588
  curl 'http://127.0.0.1:9588/probe?target=game.example.org:8080'
  curl 'http://127.0.0.1:9588/probe?target=game.example.org:8443&tls=1&timeout=2'

GET /probe?target=HOST:PORT pings the target once. Parameters: tls=1 (verify against the
system's roots) or tls=insecure (no verification); timeout=SECONDS. The timeout is also
capped by Prometheus' X-Prometheus-Scrape-Timeout-Seconds header minus 0.5 s. Metrics:
probe_success, probe_duration_seconds, probe_peng3dnet_phase_duration_seconds{phase},
probe_peng3dnet_data_KEY for the server's numeric fields, probe_peng3dnet_data_info for
its string fields, and probe_peng3dnet_failure_info{kind,reason} when the probe fails.
GET /metrics has the exporter's own metrics. Prints `listening on ADDR` once bound.
See docs/operations.md for a prometheus.yml.";

/// Largest number of server fields turned into metrics (each kind), so that a hostile
/// target cannot make a scrape huge.
const MAX_FIELDS: usize = 64;
/// Longest string field value kept as a label value (in characters).
const MAX_LABEL_CHARS: usize = 200;
/// Subtracted from Prometheus' scrape timeout, as blackbox_exporter does, so the answer
/// arrives before the scrape gives up.
const SCRAPE_OFFSET: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// The exporter's own metrics.
#[derive(Clone)]
struct Own {
    registry: Arc<Registry>,
    probes: Family<ResultLabel, Counter>,
    in_flight: Gauge,
}

impl Own {
    fn new(max: u64) -> Own {
        let mut registry = Registry::default();
        let probes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "peng3dnet_exporter_probes",
            "Probes run, by result (success, failure)",
            probes.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "peng3dnet_exporter_probes_in_flight",
            "Probes running now",
            in_flight.clone(),
        );
        let limit = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        limit.set(i64::try_from(max).unwrap_or(i64::MAX));
        registry.register(
            "peng3dnet_exporter_max_concurrent_probes",
            "Most probes running at once (--max-concurrent)",
            limit,
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "peng3dnet_exporter_build_info",
            "The program's version",
            build,
        );
        Own {
            registry: Arc::new(registry),
            probes,
            in_flight,
        }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

struct State {
    slots: Semaphore,
    max: usize,
    default_timeout: Duration,
    own: Own,
}

/// A probe's parameters, from the query and the headers.
#[derive(Debug)]
struct Probe {
    target: String,
    tls: Option<ClientTls>,
    timeout: Duration,
}

/// Reads the probe's parameters; an error is a mistake in the scrape configuration (400).
fn parameters<B>(request: &Request<B>, default_timeout: Duration) -> Result<Probe, String> {
    let query = request.uri().query();
    let target = query_param(query, "target")
        .filter(|t| !t.trim().is_empty())
        .ok_or("the target parameter is missing (/probe?target=HOST:PORT)")?;
    let tls = match query_param(query, "tls").as_deref() {
        None | Some("" | "0" | "false" | "no") => None,
        Some("1" | "true" | "yes") => {
            Some(ClientTls::with_system_roots().map_err(|e| format!("TLS: {e}"))?)
        }
        Some("insecure") => Some(ClientTls::dangerous_no_verification()),
        Some(other) => {
            return Err(format!(
                "tls={other:?}: use tls=1 (verify) or tls=insecure (no verification)"
            ))
        }
    };
    let mut timeout = match query_param(query, "timeout") {
        Some(t) => parse_seconds(&t).map_err(|e| format!("timeout: {e}"))?,
        None => default_timeout,
    };
    let scrape = request
        .headers()
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    if let Some(scrape) = scrape {
        let allowed = scrape
            .checked_sub(SCRAPE_OFFSET)
            .filter(|d| !d.is_zero())
            .unwrap_or(scrape / 2);
        timeout = timeout.min(allowed);
    }
    Ok(Probe {
        target,
        tls,
        timeout,
    })
}

/// Escapes a label value for the text formats (the encoder writes it as given).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().take(MAX_LABEL_CHARS) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Keys of `serve`'s built-in data that describe the prober, not the server: the address
/// it pinged from changes with every probe, and as a label it would make a new series per
/// scrape.
const PER_PROBE_KEYS: [&str; 1] = ["client_addr"];

/// A metric or label name from a server's key: `[a-zA-Z0-9_]`, others become `_`.
fn sanitize(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) || out.starts_with("__") {
        out.insert(0, 'k');
    }
    out
}

type Labels = Vec<(String, String)>;

/// The metrics of one probe.
fn probe_metrics(result: &Result<PingReply, (&'static str, String)>, duration: Duration) -> String {
    let mut registry = Registry::default();
    let success = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    success.set(i64::from(result.is_ok()));
    registry.register("probe_success", "Whether the probe succeeded", success);
    let total = Gauge::<f64, AtomicU64>::default();
    total.set(duration.as_secs_f64());
    registry.register_with_unit(
        "probe_duration",
        "How long the probe took",
        Unit::Seconds,
        total,
    );
    match result {
        Ok(reply) => {
            let phases = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            let t = &reply.timings;
            for (phase, d) in [
                ("resolve", t.resolve),
                ("connect", t.connect),
                ("tls", t.tls),
                ("hello", t.hello),
                ("ping", t.ping),
            ] {
                phases
                    .get_or_create(&vec![("phase".to_owned(), phase.to_owned())])
                    .set(d.as_secs_f64());
            }
            registry.register_with_unit(
                "probe_peng3dnet_phase_duration",
                "Duration of each phase of the ping (resolve, connect, tls, hello, ping)",
                Unit::Seconds,
                phases,
            );
            if let Some(server) = t.server {
                let g = Gauge::<f64, AtomicU64>::default();
                g.set(server.as_secs_f64());
                registry.register_with_unit(
                    "probe_peng3dnet_server_processing",
                    "The server's own time between the ping and the pong, as it reports it",
                    Unit::Seconds,
                    g,
                );
            }
            let mut strings: Labels = Vec::new();
            let mut numbers: Vec<String> = Vec::new();
            if let Value::Map(entries) = reply.server_data() {
                for (key, value) in &entries {
                    let Some(key) = key.as_str() else { continue };
                    if PER_PROBE_KEYS.contains(&key) {
                        continue;
                    }
                    let name = sanitize(key);
                    let number = match value {
                        Value::Integer(i) => i.as_f64(),
                        Value::F32(f) => Some(f64::from(*f)),
                        Value::F64(f) => Some(*f),
                        Value::Boolean(b) => Some(f64::from(u8::from(*b))),
                        _ => None,
                    };
                    if let Some(n) = number {
                        if numbers.len() < MAX_FIELDS && !numbers.contains(&name) {
                            let g = Gauge::<f64, AtomicU64>::default();
                            g.set(n);
                            registry.register(
                                format!("probe_peng3dnet_data_{name}"),
                                format!("The server's field {}", escape(key)),
                                g,
                            );
                            numbers.push(name);
                        }
                    } else if let Some(s) = value.as_str() {
                        if strings.len() < MAX_FIELDS && !strings.iter().any(|(k, _)| *k == name) {
                            strings.push((name, escape(s)));
                        }
                    }
                }
            }
            let info = Family::<Labels, Gauge>::default();
            info.get_or_create(&strings).set(1);
            registry.register(
                "probe_peng3dnet_data_info",
                "The server's string fields, as labels",
                info,
            );
        }
        Err((kind, reason)) => {
            let info = Family::<Labels, Gauge>::default();
            info.get_or_create(&vec![
                ("kind".to_owned(), (*kind).to_owned()),
                ("reason".to_owned(), escape(reason)),
            ])
            .set(1);
            registry.register(
                "probe_peng3dnet_failure_info",
                "Why the probe failed (kind as in `peng3dnet ping --json`)",
                info,
            );
        }
    }
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Runs one probe within its timeout.
async fn probe(state: &State, probe: Probe) -> String {
    let started = Instant::now();
    let deadline = started + probe.timeout;
    state.own.in_flight.inc();
    let result = match tokio::time::timeout_at(deadline, state.slots.acquire()).await {
        Err(_) => Err((
            "timeout",
            format!(
                "no free probe slot within the timeout ({} probes at once)",
                state.max
            ),
        )),
        Ok(Err(_)) => Err(("other", "the exporter is stopping".to_owned())),
        Ok(Ok(_permit)) => {
            let options = PingOptions {
                timeout: deadline.saturating_duration_since(Instant::now()),
                tls: probe.tls,
                ..PingOptions::default()
            };
            // The ping's own timeout bounds it; this bounds everything else too.
            match tokio::time::timeout_at(deadline, ping_server(&probe.target, &options)).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(crate::ping::describe(&e, probe.timeout)),
                Err(_) => Err((
                    "timeout",
                    format!("timed out (timeout {}s)", probe.timeout.as_secs_f64()),
                )),
            }
        }
    };
    state.own.in_flight.dec();
    let label = if result.is_ok() { "success" } else { "failure" };
    state
        .own
        .probes
        .get_or_create(&ResultLabel {
            result: label.to_owned(),
        })
        .inc();
    if let Err((kind, reason)) = &result {
        tracing::info!(target = %probe.target, kind, "probe failed: {reason}");
    } else {
        tracing::debug!(target = %probe.target, "probe succeeded");
    }
    probe_metrics(&result, started.elapsed())
}

async fn handle(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/probe" => match parameters(&request, state.default_timeout) {
            Ok(p) => {
                let body = probe(&state, p).await;
                http::exposition(&request, body)
            }
            Err(message) => http::text(StatusCode::BAD_REQUEST, format!("{message}\n")),
        },
        "/metrics" => http::exposition(&request, state.own.encode()),
        "/" => http::text(
            StatusCode::OK,
            "peng3dnet exporter: /probe?target=HOST:PORT[&tls=1][&timeout=SECONDS], /metrics\n",
        ),
        _ => http::text(StatusCode::NOT_FOUND, "not found; try /probe or /metrics\n"),
    }
}

/// `peng3dnet exporter`.
pub(crate) async fn run(args: ExporterArgs) -> Exit {
    init_logging_as(if args.verbose { "debug" } else { "info" }, args.log_format);
    let listener = match tokio::net::TcpListener::bind(args.listen.as_str()).await {
        Ok(listener) => listener,
        Err(e) => {
            error(format!("cannot listen on {}: {e}", args.listen));
            return Exit::System;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            error(format!("cannot listen on {}: {e}", args.listen));
            return Exit::System;
        }
    };
    let max = usize::try_from(args.max_concurrent).unwrap_or(usize::MAX);
    let state = Arc::new(State {
        slots: Semaphore::new(max),
        max,
        default_timeout: args.timeout,
        own: Own::new(args.max_concurrent),
    });
    if Out.line(&format!("listening on {addr}")).is_err() {
        return Exit::System;
    }
    tracing::info!(%addr, "exporter serving /probe and /metrics");
    let stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        stop.clone(),
        move |request, _peer: SocketAddr| handle(state.clone(), request),
    ));
    crate::interrupted().await;
    stop.cancel();
    let _ = server.await;
    Exit::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_safe() {
        assert_eq!(sanitize("max-players"), "max_players");
        assert_eq!(sanitize("1st"), "k1st");
        assert_eq!(sanitize("__x"), "k__x");
        assert_eq!(sanitize(""), "k");
        assert_eq!(escape("a\"b\\c\nd\x07"), "a\\\"b\\\\c\\nd ");
    }

    #[test]
    fn the_scrape_timeout_header_caps_the_timeout() {
        let request = Request::builder()
            .uri("/probe?target=x:1&timeout=10")
            .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
            .body(())
            .unwrap();
        let p = parameters(&request, Duration::from_secs(5)).unwrap();
        assert_eq!(p.timeout, Duration::from_millis(1500));
        let request = Request::builder()
            .uri("/probe?target=x:1&timeout=0.3")
            .body(())
            .unwrap();
        assert_eq!(
            parameters(&request, Duration::from_secs(5))
                .unwrap()
                .timeout,
            Duration::from_millis(300)
        );
        let request = Request::builder().uri("/probe").body(()).unwrap();
        assert!(parameters(&request, Duration::from_secs(5)).is_err());
        let request = Request::builder()
            .uri("/probe?target=x:1&tls=maybe")
            .body(())
            .unwrap();
        assert!(parameters(&request, Duration::from_secs(5)).is_err());
    }

    #[test]
    fn a_failed_probe_names_its_reason() {
        let text = probe_metrics(
            &Err(("refused", "cannot connect to \"x\"".into())),
            Duration::from_millis(3),
        );
        assert!(text.contains("probe_success 0\n"), "{text}");
        assert!(
            text.contains(
                "probe_peng3dnet_failure_info{kind=\"refused\",reason=\"cannot connect to \\\"x\\\"\"} 1"
            ),
            "{text}"
        );
    }
}
