//! The `peng3dnet` command-line tool: argument definitions and dispatch. The binary
//! (`src/main.rs`) only parses and runs; each command lives in its own module and calls
//! the `peng3dnet` library for everything that is not presentation.
//!
//! Exit status (as fping's):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every target answered (at least one reply each); `serve` stopped by a signal |
//! | 1 | some target did not answer (refused, timed out, not a peng3dnet server...) |
//! | 2 | a target's name did not resolve (for the chosen address family) |
//! | 3 | bad arguments: usage errors (clap's, which would be 2), a malformed target or `--data`, a `--data-file` that cannot be read or parsed |
//! | 4 | a system error: cannot listen (`serve`/`demo` bind failure, port in use), cannot start the runtime, cannot write to stdout |
//!
//! When several apply, the highest wins.

// The argument structs' doc comments are clap's --help text, written for a terminal
// ("[v6]:port"), not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

use peng3dnet::tls::{ClientTls, TlsError};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use peng3dnet::target::Family;
use peng3dnet::Value;

mod batched;
pub mod config_file;
mod demo;
mod exporter;
mod exporter_config;
mod http;
mod master;
pub mod master_args;
pub mod metrics;
pub mod output;
mod ping;
mod probe_data;
mod process_metrics;
pub mod serve;
mod status;
mod targets;
mod watch;

/// Exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: every target answered.
    Ok = 0,
    /// 1: some target did not answer.
    NoAnswer = 1,
    /// 2: a name did not resolve.
    Unresolved = 2,
    /// 3: bad arguments.
    Usage = 3,
    /// 4: system error.
    System = 4,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

const JSON_HELP: &str = "\
JSON output (--json), schema version 1: one object per line on stdout, each with
\"schema_version\": 1 and a \"type\":
  reply    target, addr, seq, time_ms, connect_ms, total_ms, server_ms
  error    target, addr, seq, kind, message
  summary  target, addr, transmitted, received, errors, loss_percent, time_ms,
           rtt_ms: null or {min, avg, max, mdev, p50, p90, p99}
  status   target, addr, time_ms, data
time_ms of a reply is the round trip of the ping message in ms; connect_ms is TCP
connect plus the server's hello; total_ms the whole ping; server_ms the server's own
processing time or null. kind is one of resolve, refused, connect, timeout,
not_peng3dnet, protocol_mismatch, closed, protocol, io, tls, tls_required (the server
requires TLS), tls_not_used (TLS to a server without it), tls_certificate (the server's
certificate is refused), tls_client_certificate (the server refused ours, or wanted
one), other. loss_percent and the summary's time_ms are integers as ping prints them;
percentiles are nearest-rank.
Server data: msgpack binary strings become lowercase hex strings, non-string map keys
are stringified, non-finite floats become null.";

const EXIT_HELP: &str = "\
Exit status: 0 every target answered, 1 some target did not answer, 2 a name did not
resolve, 3 bad arguments, 4 system error (for example cannot listen).";

const PING_AFTER: &str = "\
Examples:
  peng3dnet ping localhost                  ping localhost:8080 every second until Ctrl-C
  peng3dnet ping -c 3 -i 0.2 example.org:9000
  peng3dnet ping -c 10 --session [::1]:8080 one connection for all ten pings
  peng3dnet ping -w 5 -q hostA hostB        both targets for 5 s, summaries only
  peng3dnet ping -c 1 --json --data who=me --data n=3 localhost
  peng3dnet ping -c 1 -W 2 -q -f hosts.txt   targets from a file ('-f -': stdin)
  peng3dnet ping -c 1 -a -f hosts.txt       only the targets that answered (-u: did not)
  peng3dnet ping -C 5 -i 0.2 hostA hostB    each ping's time per target, fping -C style
  peng3dnet ping -c 1 -q --master http://master.example.org:8090   every listed server

Each reply prints `reply from ADDR: seq=N time=T ms`; T is the round trip of the ping
message (connecting is not included). At the end, or on Ctrl-C, each target gets a
summary in ping's words:
  --- TARGET ping statistics ---
  3 packets transmitted, 3 received, 0% packet loss, time 402ms
  rtt min/avg/max/mdev = 0.101/0.120/0.150/0.020 ms
Failed pings other than timeouts are counted as `+N errors`.

With several targets each reply line starts with `TARGET : `, as fping's, and all the
summaries come together at the end, in the order given. With -c and -w together pings go
on until COUNT replies came or the deadline, and the status is 1 unless COUNT replies came
(iputils' rule). SIGQUIT (Ctrl-\\) prints each target's statistics so far on stderr and
goes on. At most --concurrency pings run at once (default: from the open-files limit,
raised to its hard limit first), never two of one target.";

const STATUS_AFTER: &str = "\
Examples:
  peng3dnet status localhost                the data of the server at localhost:8080
  peng3dnet status --json example.org:9000
  peng3dnet status -f servers.txt --sort name   several servers: one table
  peng3dnet status --master http://master.example.org:8090 --tag eu --free
                                            the servers a master lists, pinged from here

Prints the target, the address that answered, the latency (round trip of the ping) and
the server's data, one key per line, nested maps indented. Several servers (or -f) make
one table sorted by latency (--sort), with name, motd, clients/max, version, latency and
state; --json prints one record per server.
With --master URL (filters: --tag, --name, --free, --up) the servers are those a master
server lists, each pinged from this machine: the latency is yours, not the master's. A
master that cannot be read, or lists none, gives status 1 (a bad URL 3).";

const SERVE_AFTER: &str = "\
Examples:
  peng3dnet serve                                       0.0.0.0:8080, no static data
  peng3dnet serve --bind 127.0.0.1:9000 --data name=lobby --data 'motd=\"hi\"'
  peng3dnet serve --data-file server.toml --data maxplayers=16 -v
  peng3dnet serve --announce http://master.example.org:8090 --announce-tag eu
                                                        listed on a master until stopped

Every pong carries, besides the static data, the dynamic fields clients (connected
clients), uptime (seconds since start, float) and pings (pings answered, this one
included: the first pong says 1) and client_addr (the address the server sees the
client at, ip:port); static data with the same key overrides them. --data overrides
--data-file.
Prints `listening on ADDR` on stdout once bound (one line per --bind), then
`metrics on http://ADDR/metrics` with --metrics. Ctrl-C or SIGTERM shuts down
gracefully: every client is closed with `servershutdown`, exit status 0. SIGHUP rereads
--config, --data-file and the TLS files and applies them without dropping a connection;
a broken file changes nothing and the log says why.
A bind failure (address in use...) exits with status 4.

  peng3dnet serve --config serve.toml                  settings from a TOML file
  peng3dnet serve --check-config serve.toml            validate it, print the effective settings
  peng3dnet serve --metrics 127.0.0.1:9587 --log-format json
See docs/operations.md (prometheus.yml, systemd unit, health checks).

Behind load balancers (HAProxy with send-proxy-v2, see docs/deploy.md):
  peng3dnet serve --proxy-protocol --proxy-trusted 10.0.0.5 --proxy-trusted 10.0.0.6
Connections must then come from a trusted balancer and start with a PROXY protocol
header (v1 or v2); logs, pongs and client_addr name the client it relays.";

const DEMO_AFTER: &str = "\
Example:
  peng3dnet demo            start a server on 127.0.0.1 (a free port), show its status,
                            ping it 5 times 0.2 s apart, print the summary, shut down";

/// The peng3dnet protocol's command-line tool: ping and run pingable servers.
#[derive(Debug, Parser)]
#[command(name = "peng3dnet", version, about, propagate_version = true)]
#[command(
    after_help = "Examples:\n  peng3dnet demo\n  peng3dnet serve --bind 127.0.0.1:8080 --data name=test\n  \
                  peng3dnet ping -c 3 localhost\n  peng3dnet status localhost\n  \
                  peng3dnet watch localhost\n  peng3dnet exporter --listen 127.0.0.1:9588\n\n\
                  Exit status: 0 ok, 1 some target did not answer, 2 a name did not resolve, \
                  3 bad arguments, 4 system error."
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once per process: the size of the largest variant (serve's many settings) costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ping one or more servers, like iputils ping (several targets concurrently, like
    /// fping).
    #[command(after_help = PING_AFTER, after_long_help = format!("{PING_AFTER}\n\n{JSON_HELP}\n\n{EXIT_HELP}"))]
    Ping(PingArgs),
    /// Ping a server once and show its data, like `mcstatus status`.
    #[command(after_help = STATUS_AFTER, after_long_help = format!("{STATUS_AFTER}\n\n{JSON_HELP}\n\n{EXIT_HELP}"))]
    Status(StatusArgs),
    /// Run a pingable server.
    #[command(after_help = SERVE_AFTER)]
    Serve(ServeArgs),
    /// Start a local server, ping it a few times, and stop it (a quick start).
    #[command(after_help = DEMO_AFTER)]
    Demo(DemoArgs),
    /// A live view in the terminal: latency graphs, or a server browser sorted by latency.
    #[command(after_help = watch::WATCH_AFTER)]
    Watch(watch::WatchArgs),
    /// A Prometheus exporter that probes peng3dnet servers (as blackbox_exporter does):
    /// GET /probe?target=HOST:PORT.
    #[command(after_help = exporter::EXPORTER_AFTER)]
    Exporter(ExporterArgs),
    /// A master server: servers announce themselves (verified by a ping back), clients
    /// get the list over HTTP (JSON, text, a web page).
    #[command(after_help = master::MASTER_AFTER)]
    Master(master::MasterServerArgs),
}

/// Options shared by `ping` and `status`.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Use IPv4 addresses only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use IPv6 addresses only.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Time to wait for each ping's pong (connecting included), in seconds.
    #[arg(short = 'W', long = "timeout", value_name = "SECONDS", default_value = "5", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub timeout: Duration,
    /// Add KEY=VALUE to the ping data (repeatable); VALUE is parsed as JSON if it parses,
    /// else taken as a string.
    #[arg(long = "data", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub data: Vec<(String, Value)>,
    /// Newline-delimited JSON on stdout (see --help for the fields).
    #[arg(long)]
    pub json: bool,
    /// More detail: phase timings per reply; for `ping`, percentiles in the summary too.
    #[arg(short, long)]
    pub verbose: bool,
    /// TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Connect from this local address (iputils' `ping -I`, fping's `-S`): for hosts with
    /// several addresses. An IPv4 source implies -4, an IPv6 one -6.
    #[arg(long = "source", value_name = "ADDR", value_parser = parse_source)]
    pub source: Option<std::net::IpAddr>,
    /// Largest reply accepted from a server, in bytes: a real pong is a few KB, and a
    /// hostile server could otherwise make every target cost 8 MiB. Raise it for large
    /// --data, which servers echo back.
    #[arg(long = "max-pong-bytes", value_name = "BYTES", default_value_t = peng3dnet::ping::DEFAULT_MAX_PONG_BYTES)]
    pub max_pong_bytes: usize,
}

/// The TLS options of the commands that connect (`ping`, `status`, `watch`).
#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// Connect with TLS, verifying the server against the system's root certificates
    /// (or --ca) and its name.
    #[arg(long)]
    pub tls: bool,
    /// Verify the server against the CA certificates in this PEM file (implies --tls); a
    /// certificate of the file that is exactly the server's (a self-signed one) is pinned.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// TLS without verifying the server's certificate or name, for self-signed test
    /// servers only (implies --tls). Encrypted, but open to a man in the middle.
    #[arg(long)]
    pub insecure: bool,
    /// Client certificate (PEM) for servers that require one (needs --ca and --key).
    #[arg(long, value_name = "FILE", requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS set-up asked for, if any.
    pub fn client_tls(&self) -> Result<Option<ClientTls>, TlsError> {
        if self.insecure {
            return Ok(Some(ClientTls::dangerous_no_verification()));
        }
        match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => {
                ClientTls::with_ca_file_and_client_cert(ca, cert, key).map(Some)
            }
            (Some(ca), _, _) => ClientTls::with_ca_file(ca).map(Some),
            _ if self.tls => ClientTls::with_system_roots().map(Some),
            _ => Ok(None),
        }
    }
}

/// Parses `--source`: an IP address (no port; the system picks one).
pub fn parse_source(s: &str) -> Result<std::net::IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address (e.g. 192.0.2.10 or 2001:db8::10)"))
}

impl ClientArgs {
    /// The TLS set-up asked for, if any.
    pub fn tls(&self) -> Result<Option<ClientTls>, TlsError> {
        self.tls.client_tls()
    }

    /// The address family chosen.
    pub fn family(&self) -> Family {
        if self.ipv4 {
            Family::V4
        } else if self.ipv6 {
            Family::V6
        } else if let Some(source) = self.source {
            if source.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            }
        } else {
            Family::Any
        }
    }

    /// The ping data as a map.
    pub fn data_map(&self) -> Value {
        Value::Map(
            self.data
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), v.clone()))
                .collect(),
        )
    }
}

/// Options of a list of targets, shared by `ping` and `status`.
#[derive(Debug, Args, Clone)]
pub struct ListArgs {
    /// Read targets from FILE ('-': stdin), one a line; blank lines and '#' comments are
    /// skipped. Targets on the command line come first.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Targets pinged at once (default: from the open-files limit, which is raised to its
    /// hard limit first).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: Option<u64>,
    /// New connections per second at most, over all targets (default: no cap).
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Targets from a master server's list.
    #[command(flatten)]
    pub master: master_args::MasterArgs,
}

impl ListArgs {
    /// The targets of the command line, then of the file; a line for the user on error.
    pub fn gather(&self, given: &[String]) -> Result<Vec<String>, String> {
        let mut targets = given.to_vec();
        if let Some(path) = &self.file {
            targets.extend(targets::read_target_file(path)?);
            if targets.is_empty() {
                return Err(format!("no targets: {} has none", path.display()));
            }
        }
        if targets.is_empty() {
            return Err("no targets: give TARGET... or -f FILE".into());
        }
        Ok(targets)
    }
}

/// Parses a positive rate per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive number per second")),
    }
}

/// `ping` arguments.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// Servers: host, host:port or [v6]:port (default port 8080).
    #[arg(value_name = "TARGET", required_unless_present_any = ["file", "master"])]
    pub targets: Vec<String>,
    /// Targets from a file, concurrency and rate.
    #[command(flatten)]
    pub list: ListArgs,
    /// Print only the targets that answered, one a line, at the end (as fping -a).
    #[arg(short = 'a', long = "alive", conflicts_with_all = ["unreachable", "json"])]
    pub alive: bool,
    /// Print only the targets that did not answer, one a line, at the end (as fping -u).
    #[arg(short = 'u', long = "unreachable", conflicts_with = "json")]
    pub unreachable: bool,
    /// Ping each target N times and print, at the end, one line per target with each
    /// ping's time in ms ('-' for a lost one), as fping -C.
    #[arg(short = 'C', long = "vcount", value_name = "N", conflicts_with_all = ["count", "json"], value_parser = clap::value_parser!(u64).range(1..), allow_negative_numbers = true)]
    pub vcount: Option<u64>,
    /// Stop after COUNT pings per target.
    #[arg(short = 'c', long = "count", value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..), allow_negative_numbers = true)]
    pub count: Option<u64>,
    /// Seconds between pings of a target (fractions allowed, e.g. 0.2).
    #[arg(short = 'i', long = "interval", value_name = "SECONDS", default_value = "1", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub interval: Duration,
    /// Stop after SECONDS in all, whatever the count.
    #[arg(short = 'w', long = "deadline", value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub deadline: Option<Duration>,
    /// Quiet: no reply or per-ping error lines (or records), only the `PING` header and the
    /// summaries.
    #[arg(short, long)]
    pub quiet: bool,
    /// Send all of a target's pings over one connection instead of one connection per
    /// ping. Each such connection holds a file descriptor for the whole run, so at most
    /// --concurrency targets keep one; the others of a longer list connect for each ping.
    #[arg(long)]
    pub session: bool,
    /// Options shared with `status`.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Servers: host, host:port or [v6]:port (default port 8080). Several (or --master)
    /// make a table.
    #[arg(value_name = "TARGET", required_unless_present_any = ["file", "master"])]
    pub targets: Vec<String>,
    /// Targets from a file, concurrency and rate.
    #[command(flatten)]
    pub list: ListArgs,
    /// Sort the table of several servers by this column (default latency; servers that
    /// did not answer last).
    #[arg(long, value_name = "FIELD", value_enum, default_value = "latency")]
    pub sort: SortField,
    /// Attempts per server (as mcstatus' tries): a server that fails is tried again.
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub tries: u32,
    /// Options shared with `ping`.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Columns of the `status` table to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortField {
    /// Round trip, fastest first.
    Latency,
    /// The target as given.
    Server,
    /// The server's `name`.
    Name,
    /// Connected clients, most first.
    Clients,
    /// The server's `version`.
    Version,
    /// Answered first, then by the kind of failure.
    State,
}

/// `serve` arguments. Every setting can also come from `--config FILE`; flags override it.
#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// Settings from a TOML file: keys named as the long flags (bind, metrics,
    /// max-connections...), static data as a [data] table. Flags override it.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    pub config: Option<PathBuf>,
    /// Validate this settings file, print the effective settings (the file and the other
    /// flags) and exit: 0 if valid, 3 if not.
    #[arg(long = "check-config", value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Address to listen on (repeatable): HOST:PORT, [v6]:PORT, or a bare PORT (all
    /// IPv4 interfaces, as 0.0.0.0:PORT) [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR", value_parser = parse_bind)]
    pub bind: Vec<String>,
    /// Serve metrics (Prometheus text format) at http://ADDR/metrics (a bare PORT: all IPv4
    /// interfaces).
    #[arg(long, value_name = "ADDR", value_parser = parse_bind)]
    pub metrics: Option<String>,
    /// Static data KEY=VALUE for every pong (repeatable); VALUE is parsed as JSON if it
    /// parses, else taken as a string.
    #[arg(long = "data", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub data: Vec<(String, Value)>,
    /// Static data from a file: a JSON object (.json) or a TOML table (.toml). Reread on
    /// SIGHUP.
    #[arg(long = "data-file", value_name = "FILE")]
    pub data_file: Option<PathBuf>,
    /// Do not echo the ping back under `oldmsg`.
    #[arg(long = "no-writeback")]
    pub no_writeback: bool,
    /// Serve over TLS with this certificate chain (PEM); needs --tls-key. Reread on SIGHUP.
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by the CA in this PEM file.
    #[arg(long = "tls-client-ca", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Most connections at once; more are refused with `serverfull` [default: 16384].
    #[arg(long = "max-connections", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest frame a peer may send, in bytes [default: 8388608].
    #[arg(long = "max-frame-length", value_name = "BYTES")]
    pub max_frame_length: Option<usize>,
    /// Largest body a compressed frame may inflate to, in bytes [default: 8388608].
    #[arg(long = "max-inflated-size", value_name = "BYTES")]
    pub max_inflated_size: Option<usize>,
    /// Deepest msgpack nesting accepted [default: 64].
    #[arg(long = "max-depth", value_name = "N")]
    pub max_depth: Option<usize>,
    /// Most msgpack values one body may hold [default: 262144].
    #[arg(long = "max-items", value_name = "N")]
    pub max_items: Option<usize>,
    /// Most bytes queued for one peer before it is closed as too slow [default: 4194304].
    #[arg(long = "max-queued-bytes", value_name = "BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Largest ping echoed back whole under `oldmsg`, in bytes [default: 65536].
    #[arg(long = "max-echo-bytes", value_name = "BYTES")]
    pub max_echo_bytes: Option<usize>,
    /// Seconds from connect until the handshake (or first ping) is done [default: 10].
    #[arg(long = "handshake-timeout", value_name = "SECONDS", value_parser = parse_seconds)]
    pub handshake_timeout: Option<Duration>,
    /// Seconds an established classic or custom connection may stay silent [default: 300].
    #[arg(long = "idle-timeout", value_name = "SECONDS", value_parser = parse_seconds)]
    pub idle_timeout: Option<Duration>,
    /// Seconds a write may wait for a peer that does not read [default: 10].
    #[arg(long = "write-timeout", value_name = "SECONDS", value_parser = parse_seconds)]
    pub write_timeout: Option<Duration>,
    /// Seconds a closing connection waits for the peer to read its closeconn [default: 2].
    #[arg(long = "close-linger", value_name = "SECONDS", value_parser = parse_seconds)]
    pub close_linger: Option<Duration>,
    /// Largest frame before the connection type is set and the handshake done, in bytes
    /// [default: 4096].
    #[arg(long = "handshake-frame-length", value_name = "BYTES")]
    pub handshake_frame_length: Option<usize>,
    /// Largest frame on a ping connection, in bytes [default: 81920].
    #[arg(long = "ping-frame-length", value_name = "BYTES")]
    pub ping_frame_length: Option<usize>,
    /// Seconds a frame that started arriving has to complete [default: 30].
    #[arg(long = "frame-timeout", value_name = "SECONDS", value_parser = parse_seconds)]
    pub frame_timeout: Option<Duration>,
    /// Bytes all connections together may hold in large partial frames and inflate
    /// buffers [default: 268435456].
    #[arg(long = "frame-budget", value_name = "BYTES")]
    pub frame_budget: Option<usize>,
    /// Most connections one source (an IPv4 address, an IPv6 /64) may hold at once; 0: no
    /// cap, for servers behind a proxy without the PROXY protocol and for load tests
    /// [default: 64].
    #[arg(long = "max-connections-per-addr", value_name = "N")]
    pub max_connections_per_addr: Option<usize>,
    /// Leading bits of an IPv6 address that make one source for
    /// --max-connections-per-addr (128: each address apart) [default: 64].
    #[arg(long = "per-addr-ipv6-prefix", value_name = "BITS", value_parser = clap::value_parser!(u8).range(0..=128))]
    pub per_addr_ipv6_prefix: Option<u8>,
    /// Seconds an established ping connection may stay silent [default: 60].
    #[arg(long = "ping-idle-timeout", value_name = "SECONDS", value_parser = parse_seconds)]
    pub ping_idle_timeout: Option<Duration>,
    /// Log line format on stderr [default: text].
    #[arg(long = "log-format", value_name = "FORMAT")]
    pub log_format: Option<config_file::LogFormat>,
    /// Debug logging (RUST_LOG overrides).
    #[arg(short, long)]
    pub verbose: bool,
    /// Serve behind load balancers that speak the PROXY protocol (HAProxy's
    /// send-proxy-v2 or send-proxy): every connection must come from a --proxy-trusted
    /// source and start with a v1 or v2 header naming the client; any other is refused.
    #[arg(long = "proxy-protocol")]
    pub proxy_protocol: bool,
    /// A load balancer's address or network, ADDR or ADDR/PREFIX (repeatable; used with
    /// --proxy-protocol, from the flags or the settings file).
    #[arg(long = "proxy-trusted", value_name = "CIDR", value_parser = parse_cidr)]
    pub proxy_trusted: Vec<peng3dnet::proxy::Cidr>,
    /// Listing on a master server.
    #[command(flatten)]
    pub announce: master_args::AnnounceArgs,
}

/// `exporter` arguments.
#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Address to serve /probe and /metrics on: HOST:PORT, [v6]:PORT, or a bare PORT (all
    /// IPv4 interfaces, as serve's --bind).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9588", value_parser = parse_bind)]
    pub listen: String,
    /// Probe modules from a TOML file, picked by a scrape's module=NAME (as
    /// blackbox_exporter's); reread on SIGHUP.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    pub config: Option<PathBuf>,
    /// Validate this modules file (its TLS files too), print its modules and exit: 0 if
    /// valid, 3 if not (blackbox_exporter's --config.check).
    #[arg(long = "check-config", value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Most probes running at once; more wait for a free slot within their timeout.
    #[arg(long = "max-concurrent", value_name = "N", default_value = "32", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_concurrent: u64,
    /// Probe timeout when the scrape sets none (seconds).
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Longest probe timeout a scrape may ask for (seconds); a longer timeout= is cut to
    /// it, so probes of silent targets cannot hold the probe slots for long.
    #[arg(long = "max-timeout", value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub max_timeout: Duration,
    /// Probe only these targets (repeatable): a network or address (10.0.0.0/8, ::1), a
    /// host name (game.example.org) or its subdomains (*.example.org). A name no name rule
    /// matches is resolved and only its addresses in an allowed network are tried. Others
    /// get HTTP 403 and are never connected to. Without --allow, any target.
    #[arg(long = "allow", value_name = "RULE", value_parser = exporter::check_allow)]
    pub allow: Vec<String>,
    /// Log line format on stderr.
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "text")]
    pub log_format: config_file::LogFormat,
    /// Debug logging (RUST_LOG overrides).
    #[arg(short, long)]
    pub verbose: bool,
}

/// Parses `--proxy-trusted`: `10.0.0.5`, `10.0.0.0/8`, `::1`.
pub fn parse_cidr(s: &str) -> Result<peng3dnet::proxy::Cidr, String> {
    s.parse()
        .map_err(|e: peng3dnet::proxy::BadCidr| e.to_string())
}

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of pings.
    #[arg(short = 'c', long = "count", default_value = "5", value_parser = clap::value_parser!(u64).range(1..), allow_negative_numbers = true)]
    pub count: u64,
    /// Seconds between pings.
    #[arg(short = 'i', long = "interval", value_name = "SECONDS", default_value = "0.2", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub interval: Duration,
    /// Newline-delimited JSON output, as `ping --json`.
    #[arg(long)]
    pub json: bool,
}

/// Parses a non-negative number of seconds (fractions allowed).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?} must be a positive number of seconds"));
    }
    if secs > MAX_SECONDS as f64 {
        return Err(format!(
            "{s:?} is too large: at most {MAX_SECONDS} seconds (one year)"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too large"))
}

/// Longest duration any option accepts: one year. Deadlines are computed as
/// `now + duration`, which must not overflow the clock.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// Parses `serve --bind`: a bare port means every IPv4 interface (`8080` is
/// `0.0.0.0:8080`); anything else is kept for the resolver, with a port out of range
/// answered in plain words.
pub fn parse_bind(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("expected HOST:PORT, [v6]:PORT or a port".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u16>() {
            Ok(port) => Ok(format!("0.0.0.0:{port}")),
            Err(_) => Err(format!(
                "port {s} is out of range: ports are 0 to 65535 (0 picks a free one)"
            )),
        };
    }
    if let Some((_, port)) = s.rsplit_once(':') {
        if !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_err()
        {
            return Err(format!(
                "port {port} is out of range: ports are 0 to 65535 (0 picks a free one)"
            ));
        }
    }
    Ok(s.to_owned())
}

/// Parses `KEY=VALUE`: VALUE as JSON if it parses, else as a string.
pub fn parse_key_value(s: &str) -> Result<(String, Value), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    let value = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(json) => from_json(&json),
        Err(_) => Value::from(value),
    };
    Ok((key.to_owned(), value))
}

/// Converts JSON to a msgpack value (integers stay integers).
pub fn from_json(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        J::Object(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), from_json(v)))
                .collect(),
        ),
    }
}

/// Converts TOML to a msgpack value (datetimes become strings).
pub fn from_toml(t: &toml::Value) -> Value {
    use toml::Value as T;
    match t {
        T::String(s) => Value::from(s.as_str()),
        T::Integer(i) => Value::from(*i),
        T::Float(f) => Value::F64(*f),
        T::Boolean(b) => Value::Boolean(*b),
        T::Datetime(d) => Value::from(d.to_string()),
        T::Array(items) => Value::Array(items.iter().map(from_toml).collect()),
        T::Table(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), from_toml(v)))
                .collect(),
        ),
    }
}

/// Parses the arguments; on a usage error prints clap's message and exits with status 3
/// (help and version exit 0).
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            };
            // `-V` of a subcommand: the program's name, not clap's `peng3dnet-ping`.
            let printed = if e.kind() == clap::error::ErrorKind::DisplayVersion {
                output::Out.line(&format!("peng3dnet {}", env!("CARGO_PKG_VERSION")))
            } else {
                e.print()
            };
            // Help that cannot be written (`--help > /dev/full`) is a system error.
            if let Err(e) = printed {
                output::write_error(&e);
                std::process::exit(i32::from(Exit::System.code()));
            }
            std::process::exit(i32::from(code));
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Ping(args) => on_worker(ping::run_ping(args)).await,
        Command::Status(args) => ping::run_status(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Exporter(args) => exporter::run(args).await,
        Command::Master(args) => master::run(args).await,
    }
}

/// Runs a command on one of the runtime's worker threads instead of the thread that called
/// `block_on`. The targets' tasks then hand it their results through the workers' own
/// queues; the `block_on` thread sleeps outside the runtime and had to be woken for
/// each result (1.1 context switches per target of a 10,000-target `ping -c 1`,
/// BENCHMARKS.md, "Many targets at once").
async fn on_worker(command: impl std::future::Future<Output = Exit> + Send + 'static) -> Exit {
    match tokio::spawn(command).await {
        Ok(exit) => exit,
        // A panic is the command's own: let it end the program as it would have.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Exit::System,
    }
}

/// Prints one error line on stderr, prefixed with the program name.
pub fn error(message: impl std::fmt::Display) {
    // Messages may quote a peer (a close reason): no terminal controls reach stderr.
    eprintln!("peng3dnet: {}", output::escape_text(&message.to_string()));
}

/// Ctrl-C (SIGINT) and, on Unix, SIGTERM, caught from the moment of [`Interrupts::install`].
///
/// Install before announcing anything a supervisor or test may react to (a server's
/// `listening on` line): a signal that arrives before the handlers exist kills the process
/// at once, without a graceful shutdown, and its clients see a reset instead of
/// closeconn `servershutdown`.
pub struct Interrupts {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    /// Installs the handlers now (must run inside the tokio runtime). A handler that cannot
    /// be installed never fires.
    pub fn install() -> Interrupts {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Interrupts {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Interrupts {}
    }

    /// Waits for the next signal. Never returns if no handler could be installed.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
                if let Some(signal) = signal {
                    if signal.recv().await.is_some() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            }
            tokio::select! {
                _ = next(self.term.as_mut()) => {}
                _ = next(self.int.as_mut()) => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM, with handlers installed when this is
/// first polled; see [`Interrupts`] to install them earlier. Never returns if the handlers
/// cannot be installed.
pub async fn interrupted() {
    Interrupts::install().wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_value_parses_json_or_string() {
        assert_eq!(
            parse_key_value("n=3").unwrap(),
            ("n".into(), Value::from(3))
        );
        assert_eq!(
            parse_key_value("s=hello world").unwrap(),
            ("s".into(), Value::from("hello world"))
        );
        assert_eq!(
            parse_key_value("q=\"7\"").unwrap(),
            ("q".into(), Value::from("7"))
        );
        assert_eq!(parse_key_value("t=true").unwrap().1, Value::Boolean(true));
        assert_eq!(
            parse_key_value("m={\"a\":[1,2.5]}").unwrap().1,
            Value::Map(vec![(
                Value::from("a"),
                Value::Array(vec![Value::from(1), Value::F64(2.5)])
            )])
        );
        assert_eq!(parse_key_value("e=").unwrap().1, Value::from(""));
        assert_eq!(parse_key_value("k=a=b").unwrap().1, Value::from("a=b"));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn seconds_accept_fractions_only_positive() {
        assert_eq!(parse_seconds("0.2").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_seconds("5").unwrap(), Duration::from_secs(5));
        for bad in ["0", "-1", "x", "inf", "NaN", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_converts() {
        let t: toml::Value = toml::from_str("name = \"x\"\n[sub]\nn = 1\n").unwrap();
        assert_eq!(
            from_toml(&t),
            Value::Map(vec![
                (Value::from("name"), Value::from("x")),
                (
                    Value::from("sub"),
                    Value::Map(vec![(Value::from("n"), Value::from(1))])
                ),
            ])
        );
    }
}

#[cfg(test)]
mod kind_docs {
    /// `--help` lists every kind the library reports: the words are made in the library
    /// ([`peng3dnet::ErrorKind`]) and documented here.
    #[test]
    fn the_json_help_lists_every_error_kind() {
        for kind in peng3dnet::ErrorKind::ALL {
            assert!(
                super::JSON_HELP.contains(kind.as_str()),
                "{kind} is not in the JSON help"
            );
        }
    }
}
