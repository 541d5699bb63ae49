//! `peng3dnet exporter`: the blackbox_exporter pattern for peng3dnet. Prometheus scrapes
//! `GET /probe?target=HOST:PORT`; the exporter pings the target once and answers with
//! the result as metrics. A failed probe is `probe_success 0` with the reason, never an
//! HTTP error; every probe ends within its timeout, which is at most `--max-timeout`. A
//! target outside `--allow` is refused with 403 and never connected to.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use peng3dnet::config::Config;
use peng3dnet::ping::{ping_addrs, ping_server, PingError, PingOptions, PingReply};
use peng3dnet::proxy::Cidr;
use peng3dnet::target::{Family as AddrFamily, Target};
use peng3dnet::text::{self, Shown};
use peng3dnet::tls::ClientTls;
use peng3dnet::CloseReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::exporter_config::Modules;
use crate::http::{self, query_param};
use crate::output::Out;
use crate::probe_data::{escape_label, MAX_LABEL_CHARS};
use crate::serve::init_logging_as;
use crate::{error, parse_seconds, Exit, ExporterArgs};
use arc_swap::ArcSwap;

pub(crate) const EXPORTER_AFTER: &str = "\
Examples:
  peng3dnet exporter --listen 127.0.0.1:9588
  curl 'http://127.0.0.1:9588/probe?target=game.example.org:8080'
  curl 'http://127.0.0.1:9588/probe?target=game.example.org:8443&tls=1&timeout=2'
  curl 'http://127.0.0.1:9588/probe?target=game.example.org:8080&debug=true'
  peng3dnet exporter --allow 10.0.0.0/8 --allow '*.example.org' --max-timeout 10
  peng3dnet exporter --config exporter.toml  modules, picked by module=NAME
  peng3dnet exporter --check-config exporter.toml  validate it, list its modules

GET /probe?target=HOST:PORT pings the target once. Parameters: module=NAME (a module of
--config; default: \"default\"), tls=1 (verify against the system's roots) or
tls=insecure (no verification), timeout=SECONDS (both over the module's), debug=true
(the probe's log and the metrics it would answer, as text). The timeout is cut to
--max-timeout (30 s) and to Prometheus' X-Prometheus-Scrape-Timeout-Seconds header minus
0.5 s, but to no less than half of it; a header that is not a positive number is refused
(400). Metrics: probe_success, probe_duration_seconds,
probe_peng3dnet_phase_duration_seconds{phase}, probe_peng3dnet_data_KEY for the server's
numeric fields (KEY in snake_case, made unique with _2, _3...), probe_peng3dnet_data_info
for its string fields, and probe_peng3dnet_failure_info{kind,reason} when the probe fails
(a foreign service's banner shown by its first 8 bytes only). A reply larger than 64 KiB
fails the probe. With --allow, a target outside every rule gets HTTP 403 (the scrape
fails: up is 0) and is never connected to. GET /metrics has the exporter's own metrics
and process_*. SIGHUP rereads --config; a broken file changes nothing and the log says
why. Prints `listening on ADDR` once bound. See docs/operations.md for a prometheus.yml
and the modules file.";

/// Subtracted from Prometheus' scrape timeout, as blackbox_exporter does, so the answer
/// arrives before the scrape gives up.
const SCRAPE_OFFSET: Duration = Duration::from_millis(500);
/// Largest frame (and inflated body) a probe accepts from its target: a real server's
/// pong is a few KB. Set as the probes' `max_pong_bytes` and frame limits, so that the
/// exporter's bound does not follow the library's defaults (once 8 MiB, which let each
/// hostile target cost a probe that much).
const MAX_REPLY_BYTES: usize = 64 << 10;
/// Most msgpack values a probe's reply may hold (each costs about 40 bytes decoded): far
/// more than the fields a scrape shows ([`MAX_FIELDS`] of each kind).
const MAX_REPLY_ITEMS: usize = 4096;
/// How many bytes of a foreign service's greeting (an SSH or HTTP banner) a failure
/// reason shows: enough to name the protocol (`SSH-2.0-`, `HTTP/1.1`), not its software.
const FOREIGN_PREFIX: usize = 8;

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
    waiting: Gauge,
    reload_success: Gauge,
    reload_time: Gauge<f64, AtomicU64>,
}

impl Own {
    fn new(max: u64) -> Own {
        let mut registry = Registry::default();
        let probes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "peng3dnet_exporter_probes",
            "Probes asked for, by result (success, failure; forbidden: refused by --allow, \
             never run)",
            probes.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "peng3dnet_exporter_probes_in_flight",
            "Probes running now (holding one of the --max-concurrent slots)",
            in_flight.clone(),
        );
        let waiting = Gauge::default();
        registry.register(
            "peng3dnet_exporter_probes_waiting",
            "Probes waiting for a free slot (all --max-concurrent are running)",
            waiting.clone(),
        );
        let reload_success = Gauge::default();
        reload_success.set(1);
        registry.register(
            "peng3dnet_exporter_config_last_reload_successful",
            "Whether the last load of --config (start or SIGHUP) succeeded",
            reload_success.clone(),
        );
        let reload_time = Gauge::<f64, AtomicU64>::default();
        reload_time.set(unix_now());
        registry.register_with_unit(
            "peng3dnet_exporter_config_last_reload_success_timestamp",
            "Unix time of the last successful load of --config (start or SIGHUP)",
            Unit::Seconds,
            reload_time.clone(),
        );
        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
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
            waiting,
            reload_success,
            reload_time,
        }
    }

    /// Records a load of `--config`: its success, and the time when successful.
    fn reloaded(&self, success: bool) {
        self.reload_success.set(i64::from(success));
        if success {
            self.reload_time.set(unix_now());
        }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Keeps a gauge (`peng3dnet_exporter_probes_in_flight`, `_waiting`) counting a probe
/// until it leaves that state, however it does: hyper drops a probe whose scraper went
/// away, and a `dec()` after the probe's `await`s would then never run.
struct InFlight(Gauge);

impl InFlight {
    fn start(gauge: &Gauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A `--allow` rule: a network, or a host name and perhaps its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `10.0.0.0/8`, `::1`.
    Network(Cidr),
    /// `game.example.org`: that name only (lower case, without a final dot).
    Name(String),
    /// `*.example.org`: every name ending in `.example.org` (kept with its dot), not
    /// `example.org` itself.
    Subdomains(String),
}

/// A host name as rules compare it: lower case, without a final dot.
fn normal_name(host: &str) -> String {
    let host = host.trim();
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Whether `name` (normalised) is a host name: dot-separated labels of 1 to 63 letters,
/// digits, `-` or `_`, 253 characters at most.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_rule(s: &str) -> Result<Rule, String> {
    let trimmed = s.trim();
    if trimmed.contains('/') || trimmed.parse::<IpAddr>().is_ok() {
        return trimmed.parse::<Cidr>().map(Rule::Network).map_err(|_| {
            format!(
                "'{}' is not a network: use ADDR or ADDR/PREFIX, e.g. 10.0.0.0/8 or ::1",
                text::escape(s)
            )
        });
    }
    let name = normal_name(trimmed);
    if let Some(parent) = name.strip_prefix("*.") {
        if is_host_name(parent) {
            return Ok(Rule::Subdomains(format!(".{parent}")));
        }
    } else if is_host_name(&name) {
        return Ok(Rule::Name(name));
    }
    Err(format!(
        "'{}' is not a rule: give a network (10.0.0.0/8, ::1), a host name \
         (game.example.org) or its subdomains (*.example.org)",
        text::escape(s)
    ))
}

/// Checks an `--allow` rule for clap (the exporter parses the rules again when it starts).
pub(crate) fn check_allow(s: &str) -> Result<String, String> {
    parse_rule(s).map(|_| s.to_owned())
}

/// The targets `--allow` lets the exporter probe.
#[derive(Debug, Default)]
struct AllowList {
    networks: Vec<Cidr>,
    names: Vec<Rule>,
}

/// What the allow-list says of a target's host before anything is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Probe it as given.
    Allowed,
    /// Refuse it: an address outside every network, or a name no rule can admit.
    Forbidden,
    /// A name no name rule matches: resolve it and try only its addresses inside an
    /// allowed network.
    ByAddress,
}

impl AllowList {
    /// The list of `rules` (`None` for none: every target allowed).
    fn new(rules: &[String]) -> Result<Option<AllowList>, String> {
        if rules.is_empty() {
            return Ok(None);
        }
        let mut list = AllowList::default();
        for rule in rules {
            match parse_rule(rule)? {
                Rule::Network(net) => list.networks.push(net),
                other => list.names.push(other),
            }
        }
        Ok(Some(list))
    }

    fn decide(&self, host: &str) -> Decision {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return if self.admits(ip) {
                Decision::Allowed
            } else {
                Decision::Forbidden
            };
        }
        let name = normal_name(host);
        let named = self.names.iter().any(|rule| match rule {
            Rule::Name(n) => *n == name,
            Rule::Subdomains(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
            Rule::Network(_) => false,
        });
        if named {
            Decision::Allowed
        } else if self.networks.is_empty() {
            Decision::Forbidden
        } else {
            Decision::ByAddress
        }
    }

    /// Whether `ip` is in an allowed network (an IPv4-mapped IPv6 address counts as its
    /// IPv4 address, the one a connection to it reaches).
    fn admits(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(ip))
    }
}

struct State {
    slots: Semaphore,
    max: usize,
    default_timeout: Duration,
    max_timeout: Duration,
    allow: Option<AllowList>,
    /// The probes' configuration: the library's, with replies bounded.
    config: Config,
    own: Own,
    /// The probe modules (`--config`, swapped whole by a reload).
    modules: ArcSwap<Modules>,
}

/// The configuration of every probe: the library's defaults, with the reply a target
/// may send bounded to what a real server's pong needs.
fn probe_config() -> Config {
    let mut config = Config::default();
    config.limits.frame.max_frame_length = MAX_REPLY_BYTES;
    config.limits.frame.max_inflated_size = MAX_REPLY_BYTES;
    config.limits.max_items = MAX_REPLY_ITEMS;
    config
}

/// A probe's parameters, from the query, the module and the headers.
#[derive(Debug)]
struct Probe {
    target: String,
    tls: Option<ClientTls>,
    timeout: Duration,
    /// `debug=true`: answer with the probe's log instead of its metrics.
    debug: bool,
    /// How the parameters were chosen, the first lines of the probe's log.
    log: Vec<String>,
}

/// The header in which Prometheus sends its scrape timeout.
const SCRAPE_TIMEOUT_HEADER: &str = "X-Prometheus-Scrape-Timeout-Seconds";

/// The time a probe may take within Prometheus' scrape timeout `scrape`: `scrape` minus
/// [`SCRAPE_OFFSET`] as blackbox_exporter, but never less than half of it. A scrape
/// timeout under 1 s would leave the probe less than half (0.1 s of 0.6 s), and at
/// 0.5 s or less nothing, where blackbox_exporter then takes the module's timeout and
/// answers after the scrape gave up.
fn within_scrape(scrape: Duration) -> Duration {
    scrape.saturating_sub(SCRAPE_OFFSET).max(scrape / 2)
}

/// Reads the probe's parameters; an error is a mistake in the scrape configuration (400).
/// The timeout is `timeout=`, else the module's, else `--timeout`; cut to `max_timeout`
/// and to what the scrape's own timeout leaves ([`within_scrape`]).
fn parameters<B>(
    request: &Request<B>,
    modules: &Modules,
    default_timeout: Duration,
    max_timeout: Duration,
) -> Result<Probe, String> {
    let query = request.uri().query();
    let target = query_param(query, "target")?
        .filter(|t| !t.trim().is_empty())
        .ok_or("the target parameter is missing (/probe?target=HOST:PORT)")?;
    let module_name = query_param(query, "module")?.unwrap_or_else(|| "default".to_owned());
    let module = modules.get(&module_name)?;
    let mut log = vec![format!(
        "module {}: {}",
        text::escape(&module_name),
        module.shown
    )];
    let debug = match query_param(query, "debug")?.as_deref() {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(format!(
                "debug='{}': use debug=true for the probe's log",
                text::escape(other)
            ))
        }
    };
    let tls = match query_param(query, "tls")?.as_deref() {
        None => module.tls.clone(),
        Some("" | "0" | "false" | "no") => None,
        Some("1" | "true" | "yes") => {
            Some(ClientTls::with_system_roots().map_err(|e| format!("TLS: {e}"))?)
        }
        Some("insecure") => Some(ClientTls::dangerous_no_verification()),
        Some(other) => {
            return Err(format!(
                "tls='{}': use tls=1 (verify) or tls=insecure (no verification)",
                text::escape(other)
            ))
        }
    };
    let (mut timeout, from) = match query_param(query, "timeout")? {
        Some(t) => (
            parse_seconds(&t).map_err(|e| format!("timeout: {e}"))?,
            "timeout=",
        ),
        None => match module.timeout {
            Some(t) => (t, "the module's timeout"),
            None => (default_timeout, "--timeout"),
        },
    };
    let mut how = format!("{}s from {from}", timeout.as_secs_f64());
    if timeout > max_timeout {
        timeout = max_timeout;
        how.push_str(&format!(
            ", cut to --max-timeout {}s",
            max_timeout.as_secs_f64()
        ));
    }
    if let Some(header) = request.headers().get(SCRAPE_TIMEOUT_HEADER) {
        let scrape = header
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                format!(
                    "the {SCRAPE_TIMEOUT_HEADER} header '{}' is not a positive number of seconds",
                    text::escape(&String::from_utf8_lossy(header.as_bytes()))
                )
            })?;
        let allowed = within_scrape(scrape);
        if allowed < timeout {
            timeout = allowed;
            how.push_str(&format!(
                ", cut to {}s by the scrape's timeout of {}s",
                allowed.as_secs_f64(),
                scrape.as_secs_f64()
            ));
        }
    }
    log.push(format!("timeout {how}"));
    Ok(Probe {
        target,
        tls,
        timeout,
        debug,
        log,
    })
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
            crate::probe_data::register(&mut registry, &reply.server_data());
        }
        Err((kind, reason)) => {
            let info = Family::<Labels, Gauge>::default();
            info.get_or_create(&vec![
                ("kind".to_owned(), (*kind).to_owned()),
                ("reason".to_owned(), escape_label(reason)),
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

/// A probe's failure: its kind (as in `peng3dnet ping --json`) and reason.
type Failure = (&'static str, String);

/// What a probe answers: its metrics, or the refusal of a target outside `--allow`.
#[derive(Debug)]
enum Answer {
    /// The probe ran: its metrics (`probe_success` 1 or 0).
    Metrics(String),
    /// The target is outside `--allow`: not probed, the reason for the 403.
    Forbidden(String),
}

/// The reason of a refused target, for the 403 and the log.
fn forbidden_text(target: &str) -> String {
    format!(
        "target '{}' is outside the exporter's --allow rules; it was not probed",
        Shown(target)
    )
}

/// Why a ping failed, in the words of `peng3dnet ping`, with what the target chose to
/// send cut short: a foreign service's banner to its first [`FOREIGN_PREFIX`] bytes (the
/// exporter is no port scanner for whoever can reach it; the library's close reasons
/// come cut to [`text::SHOWN_CHARS`] characters already), the whole escaped
/// ([`text::escape`]) and cut to [`MAX_LABEL_CHARS`], for the label and the log alike.
fn failure(e: &PingError, timeout: Duration) -> Failure {
    if let PingError::Protocol(CloseReason::PacketTooLarge) = e {
        return (
            "protocol",
            format!(
                "the server's reply is larger than a probe accepts ({} KiB, {MAX_REPLY_ITEMS} \
                 values; a real server's pong is a few KB)",
                MAX_REPLY_BYTES >> 10
            ),
        );
    }
    let (kind, reason) = crate::ping::describe(e, timeout);
    let reason = in_exporter_terms(&reason);
    let reason = if matches!(e, PingError::NotPeng3dnet(_)) {
        cut_quoted(&reason, FOREIGN_PREFIX)
    } else {
        reason
    };
    let reason = text::escape(&reason);
    let reason = match reason.char_indices().nth(MAX_LABEL_CHARS - 3) {
        Some((at, _)) if reason.chars().count() > MAX_LABEL_CHARS => {
            format!("{}...", &reason[..at])
        }
        _ => reason.into_owned(),
    };
    (kind, reason)
}

/// The advice of `peng3dnet ping` and the library (`--tls`, `--ca`, `--cert`...) in the
/// exporter's own terms: the probe parameters (`tls=1`) and the module settings of
/// `--config` (`tls-ca-file`...). Longest phrases first, each also as a bare flag.
fn in_exporter_terms(reason: &str) -> String {
    const TERMS: [(&str, &str); 9] = [
        (
            "the server requires TLS: add --tls",
            "the server requires TLS: probe it with tls=1 (or a module with tls = true)",
        ),
        ("drop --tls", "probe it without tls="),
        ("(try --tls)", "(probe it with tls=1)"),
        (
            "(the CLI: --cert and --key)",
            "(a module's tls-cert-file and tls-key-file)",
        ),
        ("use --server-name", "set a module's tls-server-name"),
        ("with --ca", "as a module's tls-ca-file"),
        ("to --ca", "to a module's tls-ca-file"),
        ("--server-name", "a module's tls-server-name"),
        ("--tls", "tls=1"),
    ];
    let mut out = reason.to_owned();
    for (cli, ours) in TERMS {
        out = out.replace(cli, ours);
    }
    out
}

/// `reason` with the text between its first and last `'` (the library quotes a foreign
/// greeting there, printable ASCII as is and other bytes as `\xNN`) cut to `bytes` bytes
/// of the greeting, an escape kept whole.
fn cut_quoted(reason: &str, bytes: usize) -> String {
    let (Some(open), Some(close)) = (reason.find('\''), reason.rfind('\'')) else {
        return reason.to_owned();
    };
    if close <= open {
        return reason.to_owned();
    }
    let quoted = &reason[open + 1..close];
    let mut end = 0;
    for _ in 0..bytes {
        let rest = &quoted[end..];
        let Some(c) = rest.chars().next() else { break };
        let is_escape = rest.len() >= 4
            && rest.starts_with("\\x")
            && rest.as_bytes()[2..4].iter().all(u8::is_ascii_hexdigit);
        end += if is_escape { 4 } else { c.len_utf8() };
    }
    let more = if end < quoted.len() { "..." } else { "" };
    format!(
        "{}'{}{more}'{}",
        &reason[..open],
        &quoted[..end],
        &reason[close + 1..]
    )
}

/// What a probe found: its metrics (or refusal) and its log, for `debug=true`.
#[derive(Debug)]
struct Probed {
    answer: Answer,
    log: Vec<String>,
}

/// Runs one probe within its timeout.
async fn probe(state: &State, probe: Probe) -> Probed {
    let Probe {
        target: given,
        tls,
        timeout,
        mut log,
        ..
    } = probe;
    let started = Instant::now();
    let deadline = started + timeout;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let target = Target::parse(&given, state.config.client_port);
    let decision = match (&state.allow, &target) {
        (Some(allow), Ok(target)) => allow.decide(&target.host),
        // A target that does not parse is never connected to: its error is the answer.
        _ => Decision::Allowed,
    };
    log.push(format!(
        "target '{}'{}",
        Shown(&given),
        match (&state.allow, decision) {
            (None, _) => "",
            (Some(_), Decision::Allowed) => ": allowed by --allow",
            (Some(_), Decision::ByAddress) => ": a name no --allow rule names; only its addresses in an allowed network are tried",
            (Some(_), Decision::Forbidden) => ": outside --allow",
        }
    ));
    let result = match target {
        _ if decision == Decision::Forbidden => {
            return Probed {
                answer: forbidden(state, &given),
                log,
            }
        }
        Err(bad) => Err(failure(&PingError::from(bad), timeout)),
        Ok(target) => {
            // A free slot at once, or a wait that the gauges show as waiting, not running.
            let permit = match state.slots.try_acquire() {
                Ok(permit) => Ok(permit),
                Err(_) => {
                    let _waiting = InFlight::start(&state.own.waiting);
                    log.push(format!(
                        "waiting for a free probe slot ({} probes running, --max-concurrent)",
                        state.max
                    ));
                    match tokio::time::timeout_at(deadline, state.slots.acquire()).await {
                        Ok(Ok(permit)) => Ok(permit),
                        Ok(Err(_)) => Err(("other", "the exporter is stopping".to_owned())),
                        Err(_) => Err((
                            "timeout",
                            format!(
                                "timed out waiting for a free probe slot (timeout {}s; {} \
                                 probes were running, --max-concurrent)",
                                timeout.as_secs_f64(),
                                state.max
                            ),
                        )),
                    }
                }
            };
            match permit {
                Err(failed) => Err(failed),
                Ok(_permit) => {
                    let _in_flight = InFlight::start(&state.own.in_flight);
                    let waited = started.elapsed();
                    let left = deadline.saturating_duration_since(Instant::now());
                    // After a wait the reason says so: the ping had only what was left.
                    let after_wait = |reason: String| {
                        if waited >= Duration::from_millis(1) {
                            format!(
                                "{reason}, after waiting {:.3}s for a free probe slot \
                                 (--max-concurrent {})",
                                waited.as_secs_f64(),
                                state.max
                            )
                        } else {
                            reason
                        }
                    };
                    log.push(format!(
                        "pinging {target} within {:.3} ms{}",
                        ms(left),
                        match &tls {
                            Some(_) => " over TLS",
                            None => "",
                        }
                    ));
                    let ping = ping_allowed(state, target, decision, tls, deadline);
                    // The ping's own timeout bounds it; this bounds everything else too.
                    match tokio::time::timeout_at(deadline, ping).await {
                        Ok(Some(Ok(reply))) => Ok(reply),
                        Ok(Some(Err(e))) => {
                            let (kind, reason) = failure(&e, left);
                            Err((kind, after_wait(reason)))
                        }
                        Ok(None) => {
                            log.push("none of its addresses is in an allowed network".into());
                            return Probed {
                                answer: forbidden(state, &given),
                                log,
                            };
                        }
                        Err(_) => Err((
                            "timeout",
                            after_wait(format!("timed out (timeout {}s)", left.as_secs_f64())),
                        )),
                    }
                }
            }
        }
    };
    let label = if result.is_ok() { "success" } else { "failure" };
    state
        .own
        .probes
        .get_or_create(&ResultLabel {
            result: label.to_owned(),
        })
        .inc();
    let shown = Shown(&given);
    match &result {
        Err((kind, reason)) => {
            tracing::info!(target = %shown, kind, "probe failed: {reason}");
            log.push(format!(
                "probe failed after {:.3} ms: kind {kind}: {reason}",
                ms(started.elapsed())
            ));
        }
        Ok(reply) => {
            tracing::debug!(target = %shown, "probe succeeded");
            let t = &reply.timings;
            log.push(format!(
                "probe succeeded after {:.3} ms: resolve {:.3} ms, connect {:.3} ms, tls {:.3} ms, hello {:.3} ms, ping {:.3} ms",
                ms(started.elapsed()),
                ms(t.resolve),
                ms(t.connect),
                ms(t.tls),
                ms(t.hello),
                ms(t.ping)
            ));
        }
    }
    Probed {
        answer: Answer::Metrics(probe_metrics(&result, started.elapsed())),
        log,
    }
}

/// The options of a probe's ping, with the reply it accepts bounded.
fn probe_options(state: &State, tls: Option<ClientTls>, deadline: Instant) -> PingOptions {
    PingOptions {
        config: state.config.clone(),
        timeout: deadline.saturating_duration_since(Instant::now()),
        tls,
        // The exporter's own bound, whatever the library's default.
        max_pong_bytes: MAX_REPLY_BYTES,
        ..PingOptions::default()
    }
}

/// Pings `target` as `decision` allows; `None` when none of its addresses is allowed
/// (nothing was connected to).
async fn ping_allowed(
    state: &State,
    target: Target,
    decision: Decision,
    tls: Option<ClientTls>,
    deadline: Instant,
) -> Option<Result<PingReply, PingError>> {
    let mut options = probe_options(state, tls, deadline);
    let allow = match (&state.allow, decision) {
        (Some(allow), Decision::ByAddress) => allow,
        _ => return Some(ping_server(&target, &options).await),
    };
    // Resolved once, here: the addresses checked are the addresses tried.
    let resolving = Instant::now();
    let addrs = match target.resolve(AddrFamily::Any).await {
        Ok(addrs) => addrs,
        Err(source) => {
            return Some(Err(PingError::Resolve {
                target: target.to_string(),
                source,
            }))
        }
    };
    let resolve = resolving.elapsed();
    let allowed: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|addr| allow.admits(addr.ip()))
        .collect();
    if allowed.is_empty() {
        tracing::debug!(target = %target, ?addrs, "no address of the target is allowed");
        return None;
    }
    options.timeout = deadline.saturating_duration_since(Instant::now());
    let result = ping_addrs(&allowed, &target.host, &options).await;
    Some(result.map(|mut reply| {
        reply.timings.resolve = resolve;
        reply
    }))
}

/// A target refused by `--allow`: counted and logged, never probed.
fn forbidden(state: &State, target: &str) -> Answer {
    state
        .own
        .probes
        .get_or_create(&ResultLabel {
            result: "forbidden".to_owned(),
        })
        .inc();
    tracing::info!(
        target = %Shown(target),
        "probe refused: the target is outside --allow"
    );
    Answer::Forbidden(forbidden_text(target))
}

async fn handle(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/probe" => {
            let modules = state.modules.load();
            match parameters(&request, &modules, state.default_timeout, state.max_timeout) {
                Ok(p) => {
                    let debug = p.debug;
                    let Probed { answer, log } = probe(&state, p).await;
                    match answer {
                        _ if debug => http::text(StatusCode::OK, debug_text(&log, &answer)),
                        Answer::Metrics(body) => http::exposition(&request, body),
                        Answer::Forbidden(reason) => {
                            http::text(StatusCode::FORBIDDEN, format!("{reason}\n"))
                        }
                    }
                }
                Err(message) => {
                    // A mistake in the scrape configuration: the scraper sees it as a 400,
                    // whoever runs the exporter in the log.
                    tracing::warn!("bad probe request: {message}");
                    http::text(StatusCode::BAD_REQUEST, format!("{message}\n"))
                }
            }
        }
        "/metrics" => http::exposition(&request, state.own.encode()),
        "/" => http::text(
            StatusCode::OK,
            "peng3dnet exporter: /probe?target=HOST:PORT[&module=NAME][&tls=1][&timeout=SECONDS][&debug=true], /metrics\n",
        ),
        _ => http::text(StatusCode::NOT_FOUND, "not found; try /probe or /metrics\n"),
    }
}

/// The answer of `debug=true`, as blackbox_exporter's: the probe's log, then the metrics
/// it would have answered (Prometheus' text format), as plain text.
fn debug_text(log: &[String], answer: &Answer) -> String {
    let mut out = String::from("Logs for the probe:\n");
    for line in log {
        out.push_str(&text::escape(line));
        out.push('\n');
    }
    match answer {
        Answer::Metrics(body) => {
            out.push_str("\nMetrics that would have been returned:\n");
            out.push_str(&http::to_text_format(body));
        }
        Answer::Forbidden(reason) => {
            out.push_str(&format!(
                "\nHTTP 403 that would have been returned: {reason}\n"
            ));
        }
    }
    out
}

/// Where `--listen` (or `serve --bind`, `--metrics`) points: its addresses, or why it
/// names none (a usage error, exit status 3, unlike a failure to listen there).
pub(crate) async fn listen_addrs(flag: &str, addr: &str) -> Result<Vec<SocketAddr>, String> {
    match tokio::net::lookup_host(addr).await {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(format!("{flag} '{}': the name has no address", Shown(addr)))
            } else {
                Ok(addrs)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(format!(
            "{flag} '{}' is not an address: use HOST:PORT, [v6]:PORT or a port",
            Shown(addr)
        )),
        Err(e) => Err(format!(
            "{flag} '{}': cannot resolve the name: {e}",
            Shown(addr)
        )),
    }
}

/// Reads `--config`, if any: the modules, or why the file is refused (one line).
fn load_modules(path: Option<&std::path::Path>) -> Result<Modules, String> {
    match path {
        Some(path) => Modules::load(path),
        None => Ok(Modules::builtin()),
    }
}

/// `peng3dnet exporter`.
pub(crate) async fn run(args: ExporterArgs) -> Exit {
    if let Some(path) = &args.check_config {
        return match Modules::load(path) {
            Ok(modules) => {
                let lines: Vec<String> = modules
                    .names()
                    .into_iter()
                    .filter_map(|name| {
                        let module = modules.get(name).ok()?;
                        Some(format!("module {name}: {}", module.shown))
                    })
                    .collect();
                match Out.line(&lines.join("\n")) {
                    Ok(()) => Exit::Ok,
                    Err(_) => Exit::System,
                }
            }
            Err(message) => {
                error(message);
                Exit::Usage
            }
        };
    }
    init_logging_as(if args.verbose { "debug" } else { "info" }, args.log_format);
    if args.timeout > args.max_timeout {
        tracing::warn!(
            "--timeout {}s is longer than --max-timeout {}s: probes without timeout= get {}s",
            args.timeout.as_secs_f64(),
            args.max_timeout.as_secs_f64(),
            args.max_timeout.as_secs_f64()
        );
    }
    let allow = match AllowList::new(&args.allow) {
        Ok(allow) => allow,
        Err(message) => {
            error(format!("--allow: {message}"));
            return Exit::Usage;
        }
    };
    let modules = match load_modules(args.config.as_deref()) {
        Ok(modules) => modules,
        Err(message) => {
            error(message);
            return Exit::Usage;
        }
    };
    let addrs = match listen_addrs("--listen", &args.listen).await {
        Ok(addrs) => addrs,
        Err(message) => {
            error(message);
            return Exit::Usage;
        }
    };
    // Installed before `listening on` is printed: from then on SIGHUP rereads --config
    // (as `serve` does) instead of killing the exporter.
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP ({e}); reloading is off");
            None
        }
    };
    let mut interrupts = crate::Interrupts::install();
    let listener = match tokio::net::TcpListener::bind(addrs.as_slice()).await {
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
        default_timeout: args.timeout.min(args.max_timeout),
        max_timeout: args.max_timeout,
        allow,
        config: probe_config(),
        own: Own::new(args.max_concurrent),
        modules: ArcSwap::from_pointee(modules),
    });
    if Out.line(&format!("listening on {addr}")).is_err() {
        return Exit::System;
    }
    tracing::info!(%addr, modules = %state.modules.load().names().join(","), "exporter serving /probe and /metrics");
    let stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, stop.clone(), {
        let state = state.clone();
        move |request, _peer: SocketAddr| handle(state.clone(), request)
    }));
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    if signal.recv().await.is_none() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            _ = interrupts.wait() => break,
            _ = hup => {
                let read = reread(args.config.clone());
                tokio::select! {
                    _ = interrupts.wait() => break,
                    read = read => reload(&state, read),
                }
            }
        }
    }
    tracing::info!("shutting down");
    stop.cancel();
    let _ = server.await;
    Exit::Ok
}

/// What SIGHUP reread: the file and its modules; `None` without `--config`.
type Reread = Option<(std::path::PathBuf, Result<Modules, String>)>;

/// Rereads `--config` off the loop ([`crate::serve::off_loop`]: a FIFO or a hung
/// filesystem cannot hold up SIGTERM or the probes).
async fn reread(config: Option<std::path::PathBuf>) -> Reread {
    let path = config?;
    let read = {
        let path = path.clone();
        crate::serve::off_loop(move || Modules::load(&path)).await
    };
    Some((path, read))
}

/// SIGHUP, once [`reread`] is done: swaps the modules in whole; a broken file changes
/// nothing and the log says why, on one line. Probes running keep the module they began
/// with.
fn reload(state: &State, reread: Reread) {
    let Some((path, read)) = reread else {
        tracing::info!("SIGHUP: no --config to reread; nothing changes");
        return;
    };
    match read {
        Ok(modules) => {
            let names = modules.names().join(", ");
            state.modules.store(Arc::new(modules));
            state.own.reloaded(true);
            tracing::info!("reloaded {}: modules {names}", path.display());
        }
        Err(message) => {
            state.own.reloaded(false);
            tracing::error!(
                "reload failed, keeping the running modules: {}",
                one_line(&message)
            );
        }
    }
}

/// `message` on one log line: line breaks (a library's multi-line error) become `; `.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_safe() {
        assert_eq!(escape_label("a\"b\\c\nd\x07"), "a\\\"b\\\\c\\nd ");
    }

    #[test]
    fn the_scrape_timeout_header_caps_the_timeout() {
        let request = Request::builder()
            .uri("/probe?target=x:1&timeout=10")
            .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
            .body(())
            .unwrap();
        let p = parameters(
            &request,
            &Modules::builtin(),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(p.timeout, Duration::from_millis(1500));
        let request = Request::builder()
            .uri("/probe?target=x:1&timeout=0.3")
            .body(())
            .unwrap();
        assert_eq!(
            parameters(
                &request,
                &Modules::builtin(),
                Duration::from_secs(5),
                Duration::from_secs(30)
            )
            .unwrap()
            .timeout,
            Duration::from_millis(300)
        );
        let request = Request::builder().uri("/probe").body(()).unwrap();
        assert!(parameters(
            &request,
            &Modules::builtin(),
            Duration::from_secs(5),
            Duration::from_secs(30)
        )
        .is_err());
        let request = Request::builder()
            .uri("/probe?target=x:1&tls=maybe")
            .body(())
            .unwrap();
        assert!(parameters(
            &request,
            &Modules::builtin(),
            Duration::from_secs(5),
            Duration::from_secs(30)
        )
        .is_err());
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

    /// A state for the probe tests, with `allow` as `--allow`.
    fn state(allow: &[&str], max: usize) -> State {
        let rules: Vec<String> = allow.iter().map(|r| r.to_string()).collect();
        State {
            slots: Semaphore::new(max),
            max,
            default_timeout: Duration::from_secs(5),
            max_timeout: Duration::from_secs(30),
            allow: AllowList::new(&rules).unwrap(),
            config: probe_config(),
            own: Own::new(max as u64),
            modules: ArcSwap::from_pointee(Modules::builtin()),
        }
    }

    /// Finding 2: `timeout=` up to a year held a probe slot that long.
    #[test]
    fn a_scrape_cannot_ask_for_more_than_the_maximum_timeout() {
        let year = Request::builder()
            .uri("/probe?target=x:1&timeout=31536000")
            .body(())
            .unwrap();
        let max = Duration::from_secs(30);
        assert_eq!(
            parameters(&year, &Modules::builtin(), Duration::from_secs(5), max)
                .unwrap()
                .timeout,
            max
        );
        // The scrape's own timeout still cuts below the maximum.
        let scraped = Request::builder()
            .uri("/probe?target=x:1&timeout=31536000")
            .header("X-Prometheus-Scrape-Timeout-Seconds", "10")
            .body(())
            .unwrap();
        assert_eq!(
            parameters(&scraped, &Modules::builtin(), Duration::from_secs(5), max)
                .unwrap()
                .timeout,
            Duration::from_millis(9500)
        );
    }

    /// Finding 2: a probe dropped mid-way (its scraper left) stayed in the in-flight gauge.
    #[tokio::test]
    async fn a_dropped_probe_leaves_the_in_flight_gauge() {
        // A silent port: accepts, never writes.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = silent.local_addr().unwrap().to_string();
        let state = Arc::new(state(&[], 4));
        let running = tokio::spawn({
            let state = state.clone();
            async move {
                let p = Probe {
                    target,
                    tls: None,
                    timeout: Duration::from_secs(30),
                    debug: false,
                    log: Vec::new(),
                };
                probe(&state, p).await
            }
        });
        let (_held, _) = tokio::time::timeout(Duration::from_secs(10), silent.accept())
            .await
            .expect("the probe connects")
            .unwrap();
        assert_eq!(state.own.in_flight.get(), 1);
        running.abort();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.own.in_flight.get() != 0 {
            assert!(Instant::now() < deadline, "the gauge stayed up");
            tokio::task::yield_now().await;
        }
    }

    /// Finding 9: the rules, and what they let through.
    #[test]
    fn allow_rules_admit_networks_names_and_subdomains_only() {
        assert_eq!(
            parse_rule("10.0.0.0/8"),
            Ok(Rule::Network("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            parse_rule("Game.Example.ORG."),
            Ok(Rule::Name("game.example.org".into()))
        );
        assert_eq!(
            parse_rule("*.example.org"),
            Ok(Rule::Subdomains(".example.org".into()))
        );
        for bad in [
            "",
            "*",
            "a.*.org",
            "10.0.0.0/33",
            "x/8",
            "a b",
            "a..b",
            "*.",
        ] {
            let e = parse_rule(bad).unwrap_err();
            assert!(e.contains("is not a"), "{bad}: {e}");
        }
        assert!(parse_rule("bad\nrule")
            .unwrap_err()
            .contains("bad\\x0arule"));

        let rules = ["127.0.0.0/8", "::1", "*.example.org", "game.example.net"];
        let allow = AllowList::new(&rules.map(String::from)).unwrap().unwrap();
        assert_eq!(allow.decide("127.0.0.9"), Decision::Allowed);
        assert_eq!(allow.decide("::1"), Decision::Allowed);
        // A mapped address reaches its IPv4 host: it counts as that.
        assert_eq!(allow.decide("::ffff:127.0.0.1"), Decision::Allowed);
        assert_eq!(allow.decide("::ffff:10.0.0.1"), Decision::Forbidden);
        assert_eq!(allow.decide("10.0.0.1"), Decision::Forbidden);
        assert_eq!(allow.decide("169.254.169.254"), Decision::Forbidden);
        assert_eq!(allow.decide("a.b.EXAMPLE.org."), Decision::Allowed);
        assert_eq!(allow.decide("game.example.net"), Decision::Allowed);
        // Not the parent, not a look-alike: resolved and checked by address instead.
        assert_eq!(allow.decide("example.org"), Decision::ByAddress);
        assert_eq!(allow.decide("evilexample.org"), Decision::ByAddress);
        assert_eq!(allow.decide("x.game.example.net"), Decision::ByAddress);

        let names_only = AllowList::new(&["*.example.org".to_owned()])
            .unwrap()
            .unwrap();
        assert_eq!(names_only.decide("localhost"), Decision::Forbidden);
        assert_eq!(names_only.decide("127.0.0.1"), Decision::Forbidden);
        assert!(AllowList::new(&[]).unwrap().is_none());
    }

    /// Finding 9: a refused target is answered without a connection; a name is checked by
    /// the addresses it resolves to.
    #[tokio::test]
    async fn a_refused_target_is_never_connected_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = state(&["192.0.2.0/24", "*.example.org"], 4);
        for target in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let p = Probe {
                target: target.clone(),
                tls: None,
                timeout: Duration::from_secs(5),
                debug: false,
                log: Vec::new(),
            };
            match probe(&state, p).await.answer {
                Answer::Forbidden(reason) => {
                    assert!(
                        reason.contains("outside the exporter's --allow"),
                        "{reason}"
                    )
                }
                other => panic!("{target}: {other:?}"),
            }
        }
        // Nothing reached the listener (a connect would be queued by now).
        let accepted = tokio::time::timeout(Duration::from_millis(1), listener.accept()).await;
        assert!(
            accepted.is_err(),
            "the exporter connected to a refused target"
        );
        assert!(state.own.encode().contains("result=\"forbidden\"} 2"));
    }

    /// Finding 9: a foreign service's banner is cut to its first bytes.
    #[test]
    fn a_foreign_banner_is_cut_to_a_short_escaped_prefix() {
        let timeout = Duration::from_secs(1);
        let ssh = PingError::NotPeng3dnet(
            "it sent 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3', an SSH banner".into(),
        );
        let (kind, reason) = failure(&ssh, timeout);
        assert_eq!(kind, "not_peng3dnet");
        assert_eq!(
            reason,
            "not a peng3dnet server: it sent 'SSH-2.0-...', an SSH banner"
        );
        let binary = PingError::NotPeng3dnet(
            "its first bytes '\\x7fELF\\x02\\x01\\x01\\x00\\x00' cannot start a peng3dnet frame"
                .into(),
        );
        assert_eq!(
            failure(&binary, timeout).1,
            "not a peng3dnet server: its first bytes '\\x7fELF\\x02\\x01\\x01\\x00...' cannot \
             start a peng3dnet frame"
        );
        let short = "it sent 'HTTP/1.1', an HTTP response";
        assert_eq!(cut_quoted(short, FOREIGN_PREFIX), short);
        assert_eq!(cut_quoted("no quotes at all", 2), "no quotes at all");
        assert_eq!(cut_quoted("it's", 2), "it's");
        // Whatever else a target made the reason say: escaped, and as long as a label.
        let long = PingError::NotPeng3dnet(format!("a\nb\x1b[2J{}", "x".repeat(500)));
        let (_, reason) = failure(&long, timeout);
        assert!(
            reason.starts_with("not a peng3dnet server: a\\x0ab\\x1b[2J"),
            "{reason}"
        );
        assert_eq!(reason.chars().count(), MAX_LABEL_CHARS, "{reason}");
        assert!(reason.ends_with("x..."), "{reason}");
    }

    /// Finding 11: a probe accepts a pong that fits a real server, not the library's 8 MiB.
    #[test]
    fn a_probe_bounds_the_reply_it_accepts() {
        let options = probe_options(&state(&[], 1), None, Instant::now());
        assert_eq!(options.max_pong_bytes, MAX_REPLY_BYTES);
        let frame = options.frame_limits();
        assert_eq!(frame.max_frame_length, MAX_REPLY_BYTES);
        assert_eq!(frame.max_inflated_size, MAX_REPLY_BYTES);
        assert_eq!(options.config.limits.max_items, MAX_REPLY_ITEMS);
        let (kind, reason) = failure(
            &PingError::Protocol(CloseReason::PacketTooLarge),
            Duration::from_secs(1),
        );
        assert_eq!(kind, "protocol");
        assert!(
            reason.contains("larger than a probe accepts (64 KiB"),
            "{reason}"
        );
    }

    /// The reasons gave the CLI's advice ("add --tls") where the exporter's parameter is
    /// `tls=1` and its modules' settings `tls-ca-file`...
    #[test]
    fn failure_reasons_speak_the_exporters_terms() {
        let timeout = Duration::from_secs(2);
        let hello = PingError::Timeout {
            phase: peng3dnet::error::Phase::WaitingForHello,
            after: timeout,
            target: None,
        };
        for (e, kind, words) in [
            (
                PingError::TlsRequired,
                "tls_required",
                "probe it with tls=1",
            ),
            (hello, "timeout", "(probe it with tls=1)"),
        ] {
            let (k, reason) = failure(&e, timeout);
            assert_eq!(k, kind);
            assert!(reason.contains(words), "{reason}");
            assert!(!reason.contains("--"), "{reason}");
        }
        // The library's TLS sentences, as `peng3dnet ping` shows them.
        for (cli, ours) in [
            (
                "server certificate rejected: it is not signed by a trusted CA; give the CA that signed it with --ca, or the server's own certificate if it is self-signed",
                "as a module's tls-ca-file",
            ),
            (
                "TLS handshake failed: the server requires a client certificate; give one (the CLI: --cert and --key)",
                "(a module's tls-cert-file and tls-key-file)",
            ),
            (
                "server certificate rejected: it is not valid for x, only for y; connect by one of those names, or use --server-name",
                "set a module's tls-server-name",
            ),
            (
                "the server does not use TLS (its answer is not a TLS record): drop --tls",
                "probe it without tls=",
            ),
        ] {
            let reason = in_exporter_terms(cli);
            assert!(reason.contains(ours), "{reason}");
            assert!(!reason.contains("--"), "{reason}");
        }
    }

    /// Under 1 s the scrape-timeout header leaves half, not nothing; a garbage header is
    /// refused, not ignored.
    #[test]
    fn the_scrape_timeout_header_leaves_the_documented_time() {
        let ms = Duration::from_millis;
        assert_eq!(within_scrape(ms(10_000)), ms(9_500));
        assert_eq!(within_scrape(ms(1_000)), ms(500));
        assert_eq!(within_scrape(ms(800)), ms(400));
        assert_eq!(within_scrape(ms(400)), ms(200));
        for garbage in ["soon", "-1", "0", "NaN", "inf", ""] {
            let request = Request::builder()
                .uri("/probe?target=x:1")
                .header(SCRAPE_TIMEOUT_HEADER, garbage)
                .body(())
                .unwrap();
            let e = parameters(&request, &Modules::builtin(), ms(5000), ms(30_000)).unwrap_err();
            assert!(
                e.contains("is not a positive number of seconds"),
                "{garbage}: {e}"
            );
        }
    }

    /// Probes waiting behind --max-concurrent counted as running, and their reasons
    /// varied; now they are `waiting`, and a wait that uses the timeout up says so.
    #[tokio::test]
    async fn probes_waiting_for_a_slot_are_waiting_not_running() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = silent.local_addr().unwrap().to_string();
        let state = Arc::new(state(&[], 1));
        let running = tokio::spawn({
            let state = state.clone();
            let target = target.clone();
            async move {
                let p = Probe {
                    target,
                    tls: None,
                    timeout: Duration::from_secs(30),
                    debug: false,
                    log: Vec::new(),
                };
                probe(&state, p).await
            }
        });
        let (_held, _) = tokio::time::timeout(Duration::from_secs(10), silent.accept())
            .await
            .expect("the first probe connects")
            .unwrap();
        let waiting = tokio::spawn({
            let state = state.clone();
            async move {
                let p = Probe {
                    target,
                    tls: None,
                    timeout: Duration::from_millis(300),
                    debug: false,
                    log: Vec::new(),
                };
                probe(&state, p).await
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.own.waiting.get() != 1 {
            assert!(Instant::now() < deadline, "the second probe never waited");
            tokio::task::yield_now().await;
        }
        assert_eq!(
            state.own.in_flight.get(),
            1,
            "only the probe with the slot runs"
        );
        let Probed { answer, log } = waiting.await.unwrap();
        let Answer::Metrics(text) = answer else {
            panic!("{answer:?}")
        };
        assert!(
            text.contains("kind=\"timeout\",reason=\"timed out waiting for a free probe slot (timeout 0.3s; 1 probes were running, --max-concurrent)\""),
            "{text}"
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with("waiting for a free probe slot")),
            "{log:?}"
        );
        assert_eq!(state.own.waiting.get(), 0);
        running.abort();
    }
}
