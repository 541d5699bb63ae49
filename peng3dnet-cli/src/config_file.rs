//! `serve --config FILE`: every `serve` setting in one TOML file, keys named as the long
//! flags (`bind`, `metrics`, `max-connections`...), static data as a `[data]` table.
//! Flags override the file; [`Settings`] is the result, which `--check-config` prints.
//!
//! Relative paths in the file are relative to the file's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use peng3dnet::config::Limits;
use peng3dnet::tls::{ClientCertPolicy, ServerTls};
use peng3dnet::value::{map, update};
use peng3dnet::Value;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::serve::read_data_file;
use crate::{from_toml, ServeArgs};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A positive number of seconds in the file (integer or float).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seconds(pub(crate) Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a positive number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                if !v.is_finite() || v <= 0.0 {
                    return Err(E::custom(format!(
                        "{v} is not a positive number of seconds"
                    )));
                }
                Duration::try_from_secs_f64(v)
                    .map(Seconds)
                    .map_err(|_| E::custom(format!("{v} seconds is too large")))
            }
        }
        d.deserialize_any(V)
    }
}

/// One address or a list of them.
#[derive(Debug, Clone)]
struct Addresses(Vec<String>);

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Addresses;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address (\"HOST:PORT\") or a list of addresses")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Addresses, E> {
                Ok(Addresses(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Addresses, A::Error> {
                let mut out = Vec::new();
                while let Some(addr) = seq.next_element::<String>()? {
                    out.push(addr);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("the list of addresses is empty"));
                }
                Ok(Addresses(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    bind: Option<Addresses>,
    metrics: Option<String>,
    data: Option<toml::Table>,
    data_file: Option<PathBuf>,
    no_writeback: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    log_format: Option<LogFormat>,
    verbose: Option<bool>,
    max_connections: Option<usize>,
    max_frame_length: Option<usize>,
    max_inflated_size: Option<usize>,
    max_depth: Option<usize>,
    max_items: Option<usize>,
    max_queued_bytes: Option<usize>,
    max_echo_bytes: Option<usize>,
    handshake_timeout: Option<Seconds>,
    idle_timeout: Option<Seconds>,
    write_timeout: Option<Seconds>,
    close_linger: Option<Seconds>,
    handshake_frame_length: Option<usize>,
    ping_frame_length: Option<usize>,
    frame_timeout: Option<Seconds>,
    frame_budget: Option<usize>,
    max_connections_per_addr: Option<usize>,
    per_addr_ipv6_prefix: Option<u8>,
    ping_idle_timeout: Option<Seconds>,
    proxy_protocol: Option<bool>,
    proxy_trusted: Option<Vec<TrustedCidr>>,
    announce: Option<String>,
    announce_tags: Option<Vec<String>>,
    announce_host: Option<String>,
}

/// The least frame and body length `serve` accepts as a limit: a client's settype or
/// ping takes a few dozen bytes, with room for its data.
const MIN_FRAME: usize = 256;

/// A balancer's address range (`--proxy-trusted`): `10.0.0.5`, `10.0.0.0/24`, `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedCidr(pub peng3dnet::proxy::Cidr);

impl<'de> Deserialize<'de> for TrustedCidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(TrustedCidr)
            .map_err(|e| de::Error::custom(format!("{e}")))
    }
}

impl Serialize for TrustedCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// The effective settings of `serve`: the file's, overridden by flags, with defaults for
/// the rest. Printed by `--check-config` in the file's own format.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Settings {
    /// Addresses to listen on.
    pub bind: Vec<String>,
    /// Address of the metrics endpoint, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Static data file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file: Option<PathBuf>,
    /// No echo of the ping under `oldmsg`.
    pub no_writeback: bool,
    /// TLS certificate chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA for client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Every connection must start with a PROXY protocol header from a trusted balancer.
    pub proxy_protocol: bool,
    /// The balancers trusted to send PROXY headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxy_trusted: Vec<TrustedCidr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Debug logging.
    pub verbose: bool,
    /// Most connections at once.
    pub max_connections: usize,
    /// Largest frame accepted, bytes.
    pub max_frame_length: usize,
    /// Largest inflated body, bytes.
    pub max_inflated_size: usize,
    /// Deepest msgpack nesting.
    pub max_depth: usize,
    /// Most msgpack values per body.
    pub max_items: usize,
    /// Most bytes queued for one peer.
    pub max_queued_bytes: usize,
    /// Largest ping echoed back, bytes.
    pub max_echo_bytes: usize,
    /// Seconds from connect to handshake done.
    pub handshake_timeout: f64,
    /// Seconds an established connection may stay silent.
    pub idle_timeout: f64,
    /// Seconds a write may wait for a peer that does not read.
    pub write_timeout: f64,
    /// Seconds a closing connection waits for the peer to read its closeconn.
    pub close_linger: f64,
    /// Largest frame before the handshake, bytes.
    pub handshake_frame_length: usize,
    /// Largest frame on a ping connection, bytes.
    pub ping_frame_length: usize,
    /// Seconds a started frame has to complete.
    pub frame_timeout: f64,
    /// Bytes all connections may hold in large partial frames and inflate buffers.
    pub frame_budget: usize,
    /// Most connections per source (0: no cap).
    pub max_connections_per_addr: usize,
    /// Leading bits of an IPv6 address that make one source for the per-address cap.
    pub per_addr_ipv6_prefix: u8,
    /// Seconds an established ping connection may stay silent.
    pub ping_idle_timeout: f64,
    /// The master server to be listed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce: Option<String>,
    /// Tags to be listed with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub announce_tags: Vec<String>,
    /// The host to be listed as (instead of the announce's source address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce_host: Option<String>,
    /// Static data from the file's `[data]` table and the `--data` flags (the data file
    /// comes first, then these over it).
    #[serde(skip)]
    pub data: Vec<(String, Value)>,
    /// The `[data]` table as written (for printing).
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub data_table: toml::Table,
}

impl Settings {
    /// The library limits these settings describe.
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        limits.max_connections = self.max_connections;
        limits.frame.max_frame_length = self.max_frame_length;
        limits.frame.max_inflated_size = self.max_inflated_size;
        limits.max_depth = self.max_depth;
        limits.max_items = self.max_items;
        limits.max_queued_bytes = self.max_queued_bytes;
        limits.max_echo_bytes = self.max_echo_bytes;
        limits.handshake_timeout = Duration::from_secs_f64(self.handshake_timeout);
        limits.idle_timeout = Duration::from_secs_f64(self.idle_timeout);
        limits.write_timeout = Duration::from_secs_f64(self.write_timeout);
        limits.close_linger = Duration::from_secs_f64(self.close_linger);
        limits.handshake_frame_length = self.handshake_frame_length;
        limits.ping_frame_length = self.ping_frame_length;
        limits.frame_timeout = Duration::from_secs_f64(self.frame_timeout);
        limits.frame_budget = self.frame_budget;
        limits.max_connections_per_addr = self.max_connections_per_addr;
        limits.per_addr_ipv6_prefix = self.per_addr_ipv6_prefix;
        limits.ping_idle_timeout = Duration::from_secs_f64(self.ping_idle_timeout);
        limits
    }

    /// Takes from `running` every setting that cannot change while the server runs (the
    /// ones [`Settings::fixed_differences`] names), keeping the rest of `self`: what a
    /// reload records as running. A field left out here was recorded as applied while it
    /// was not, so the next reload warned of nothing (the per-address cap was then not
    /// enforced); a test checks that no difference is left.
    pub fn keep_fixed_of(&mut self, running: &Settings) {
        self.bind = running.bind.clone();
        self.metrics = running.metrics.clone();
        self.no_writeback = running.no_writeback;
        self.proxy_protocol = running.proxy_protocol;
        self.proxy_trusted = running.proxy_trusted.clone();
        self.log_format = running.log_format;
        self.verbose = running.verbose;
        self.announce = running.announce.clone();
        self.announce_tags = running.announce_tags.clone();
        self.announce_host = running.announce_host.clone();
        // New certificate files apply live; only turning TLS on or off needs a restart.
        if running.tls_cert.is_some() != self.tls_cert.is_some() {
            self.tls_cert = running.tls_cert.clone();
            self.tls_key = running.tls_key.clone();
            self.tls_client_ca = running.tls_client_ca.clone();
        }
        self.keep_limits_of(running);
    }

    fn keep_limits_of(&mut self, other: &Settings) {
        self.max_connections = other.max_connections;
        self.max_frame_length = other.max_frame_length;
        self.max_inflated_size = other.max_inflated_size;
        self.max_depth = other.max_depth;
        self.max_items = other.max_items;
        self.max_queued_bytes = other.max_queued_bytes;
        self.max_echo_bytes = other.max_echo_bytes;
        self.handshake_timeout = other.handshake_timeout;
        self.idle_timeout = other.idle_timeout;
        self.write_timeout = other.write_timeout;
        self.close_linger = other.close_linger;
        self.handshake_frame_length = other.handshake_frame_length;
        self.ping_frame_length = other.ping_frame_length;
        self.frame_timeout = other.frame_timeout;
        self.frame_budget = other.frame_budget;
        self.max_connections_per_addr = other.max_connections_per_addr;
        self.per_addr_ipv6_prefix = other.per_addr_ipv6_prefix;
        self.ping_idle_timeout = other.ping_idle_timeout;
    }

    /// As TOML, in the file's format (what `--check-config` prints).
    pub fn to_toml(&self) -> String {
        let mut out = toml::to_string(self).unwrap_or_default();
        // The data table is serialized under its field name; the file calls it [data].
        out = out.replace("[data-table]", "[data]");
        let flags: Vec<_> = self.data.iter().skip(self.data_table.len()).collect();
        if !flags.is_empty() {
            out.push_str("\n# from --data flags (over the data file and [data]):\n");
            for (key, value) in flags {
                out.push_str(&format!("#   {key} = {value}\n"));
            }
        }
        out
    }

    /// Names of the settings that differ from `new` and cannot change while running.
    pub fn fixed_differences(&self, new: &Settings) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                out.push(name);
            }
        };
        check("bind", self.bind != new.bind);
        check("metrics", self.metrics != new.metrics);
        check("no-writeback", self.no_writeback != new.no_writeback);
        check(
            "proxy-protocol/proxy-trusted",
            self.proxy_protocol != new.proxy_protocol || self.proxy_trusted != new.proxy_trusted,
        );
        check(
            "tls-cert/tls-key (TLS on or off)",
            self.tls_cert.is_some() != new.tls_cert.is_some(),
        );
        check("log-format", self.log_format != new.log_format);
        check(
            "announce/announce-tags/announce-host",
            self.announce != new.announce
                || self.announce_tags != new.announce_tags
                || self.announce_host != new.announce_host,
        );
        check("verbose", self.verbose != new.verbose);
        check(
            "limits (max-*, *-timeout, close-linger)",
            self.limits() != new.limits(),
        );
        out
    }

    /// The static data: the data file, then `[data]`, then `--data`.
    pub fn load_data(&self) -> Result<Value, String> {
        let mut data = match &self.data_file {
            Some(path) => read_data_file(path)?,
            None => map([]),
        };
        let extra = Value::Map(
            self.data
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), v.clone()))
                .collect(),
        );
        update(&mut data, &extra);
        Ok(data)
    }

    /// The TLS set-up, read from the certificate and key files now.
    pub fn load_tls(&self) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let clients = match &self.tls_client_ca {
            Some(ca) => ClientCertPolicy::Required(ca.clone()),
            None => ClientCertPolicy::None,
        };
        ServerTls::from_pem_files(cert, key, clients)
            .map(Some)
            .map_err(|e| format!("cannot serve over TLS: {e}"))
    }
}

/// Where a TOML error is, on one line: `FILE:LINE: key `KEY`: message`, the message in
/// plain words (see [`plain_message`]).
pub(crate) fn located(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let shown = path.display();
    let message = plain_message(e.message());
    let Some(span) = e.span() else {
        return format!("{shown}: {message}");
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(key) => format!("{shown}:{line_no}: key `{key}`: {message}"),
        None => format!("{shown}:{line_no}: {message}"),
    }
}

/// A serde or TOML message in a user's words, on one line: `unknown field `X`, expected
/// one of ...` becomes `unknown key; did you mean `Y`?` (or the list of keys when none is
/// close), and Rust's type names (`usize`, `u8`, `f64`) become what they mean.
pub(crate) fn plain_message(message: &str) -> String {
    let message = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return match did_you_mean(key, known.iter().copied()) {
            Some(best) => format!("unknown key; did you mean `{best}`?"),
            None if known.is_empty() => "unknown key: none is allowed here".to_owned(),
            None => format!("unknown key; the keys are {}", quoted_list(&known)),
        };
    }
    let mut out = message;
    for (rust, words) in [
        ("usize", "a whole number (0 or more)"),
        ("u64", "a whole number (0 or more)"),
        ("u32", "a whole number (0 or more)"),
        ("u16", "a whole number from 0 to 65535"),
        ("u8", "a whole number from 0 to 255"),
        ("i64", "a whole number"),
        ("f64", "a number"),
        ("path string", "a path (a string)"),
    ] {
        for (before, after) in [
            (format!("expected {rust}"), format!("expected {words}")),
            (format!("expected an {rust}"), format!("expected {words}")),
        ] {
            out = out.replace(&before, &after);
        }
    }
    out
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name of `known` closest to a misspelt `key`, if one is close enough to be meant
/// (`max-conections` for `max-connections`; not `bind` for `xyz`).
pub(crate) fn did_you_mean<'a>(
    key: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|name| (strsim::jaro_winkler(key, name), name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

fn relative_to(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

/// Reads a settings file.
fn read_file(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut file: File = toml::from_str(&text).map_err(|e| located(path, &text, &e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [
        &mut file.data_file,
        &mut file.tls_cert,
        &mut file.tls_key,
        &mut file.tls_client_ca,
    ] {
        if let Some(value) = p.take() {
            *p = Some(relative_to(base, value));
        }
    }
    Ok(file)
}

/// The effective settings: `--config` (or `--check-config`) file, overridden by flags.
pub fn settings(args: &ServeArgs) -> Result<Settings, String> {
    let file = match args.check_config.as_ref().or(args.config.as_ref()) {
        Some(path) => read_file(path)?,
        None => File::default(),
    };
    let limits = Limits::default();
    let secs = |flag: Option<Duration>, file: Option<Seconds>, default: Duration| {
        flag.or(file.map(|s| s.0)).unwrap_or(default).as_secs_f64()
    };
    let mut data = Vec::new();
    let data_table = file.data.clone().unwrap_or_default();
    for (k, v) in &data_table {
        data.push((k.clone(), from_toml(v)));
    }
    data.extend(args.data.iter().cloned());
    let settings = Settings {
        bind: if args.bind.is_empty() {
            file.bind
                .map(|b| b.0)
                .unwrap_or_else(|| vec!["0.0.0.0:8080".to_owned()])
        } else {
            args.bind.clone()
        },
        metrics: args.metrics.clone().or(file.metrics),
        data_file: args.data_file.clone().or(file.data_file),
        no_writeback: args.no_writeback || file.no_writeback.unwrap_or(false),
        tls_cert: args.tls_cert.clone().or(file.tls_cert),
        tls_key: args.tls_key.clone().or(file.tls_key),
        tls_client_ca: args.tls_client_ca.clone().or(file.tls_client_ca),
        proxy_protocol: args.proxy_protocol || file.proxy_protocol.unwrap_or(false),
        proxy_trusted: if args.proxy_trusted.is_empty() {
            file.proxy_trusted.unwrap_or_default()
        } else {
            args.proxy_trusted
                .iter()
                .copied()
                .map(TrustedCidr)
                .collect()
        },
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        verbose: args.verbose || file.verbose.unwrap_or(false),
        max_connections: args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(limits.max_connections),
        max_frame_length: args
            .max_frame_length
            .or(file.max_frame_length)
            .unwrap_or(limits.frame.max_frame_length),
        max_inflated_size: args
            .max_inflated_size
            .or(file.max_inflated_size)
            .unwrap_or(limits.frame.max_inflated_size),
        max_depth: args
            .max_depth
            .or(file.max_depth)
            .unwrap_or(limits.max_depth),
        max_items: args
            .max_items
            .or(file.max_items)
            .unwrap_or(limits.max_items),
        max_queued_bytes: args
            .max_queued_bytes
            .or(file.max_queued_bytes)
            .unwrap_or(limits.max_queued_bytes),
        max_echo_bytes: args
            .max_echo_bytes
            .or(file.max_echo_bytes)
            .unwrap_or(limits.max_echo_bytes),
        handshake_timeout: secs(
            args.handshake_timeout,
            file.handshake_timeout,
            limits.handshake_timeout,
        ),
        idle_timeout: secs(args.idle_timeout, file.idle_timeout, limits.idle_timeout),
        write_timeout: secs(args.write_timeout, file.write_timeout, limits.write_timeout),
        close_linger: secs(args.close_linger, file.close_linger, limits.close_linger),
        handshake_frame_length: args
            .handshake_frame_length
            .or(file.handshake_frame_length)
            .unwrap_or(limits.handshake_frame_length),
        ping_frame_length: args
            .ping_frame_length
            .or(file.ping_frame_length)
            .unwrap_or(limits.ping_frame_length),
        frame_timeout: secs(args.frame_timeout, file.frame_timeout, limits.frame_timeout),
        frame_budget: args
            .frame_budget
            .or(file.frame_budget)
            .unwrap_or(limits.frame_budget),
        max_connections_per_addr: args
            .max_connections_per_addr
            .or(file.max_connections_per_addr)
            .unwrap_or(limits.max_connections_per_addr),
        per_addr_ipv6_prefix: args
            .per_addr_ipv6_prefix
            .or(file.per_addr_ipv6_prefix)
            .unwrap_or(limits.per_addr_ipv6_prefix),
        ping_idle_timeout: secs(
            args.ping_idle_timeout,
            file.ping_idle_timeout,
            limits.ping_idle_timeout,
        ),
        announce: args.announce.announce.clone().or(file.announce),
        announce_tags: if args.announce.announce_tags.is_empty() {
            file.announce_tags.unwrap_or_default()
        } else {
            args.announce.announce_tags.clone()
        },
        announce_host: args.announce.announce_host.clone().or(file.announce_host),
        data,
        data_table,
    };
    if let Some(url) = &settings.announce {
        crate::master_args::parse_master_url(url).map_err(|e| format!("announce: {e}"))?;
    }
    crate::master_args::check_tags(&settings.announce_tags)
        .map_err(|e| format!("announce-tags: {e}"))?;
    if settings.announce.is_none()
        && (!settings.announce_tags.is_empty() || settings.announce_host.is_some())
    {
        return Err(
            "announce-tags and announce-host are used with announce (--announce URL)".into(),
        );
    }
    if settings.per_addr_ipv6_prefix > 128 {
        return Err(format!(
            "per-addr-ipv6-prefix is {}, but an IPv6 prefix has 0 to 128 bits",
            settings.per_addr_ipv6_prefix
        ));
    }
    match (&settings.tls_cert, &settings.tls_key) {
        (Some(_), None) => return Err("tls-cert needs tls-key".into()),
        (None, Some(_)) => return Err("tls-key needs tls-cert".into()),
        (None, None) if settings.tls_client_ca.is_some() => {
            return Err("tls-client-ca needs tls-cert and tls-key".into())
        }
        _ => {}
    }
    if settings.max_connections == 0 {
        return Err("max-connections must be at least 1".into());
    }
    // Below these, no client's settype, ping or handshake fits and the server refuses
    // everyone it serves (each is far under what a real client sends, and far under the
    // defaults).
    let floors: [(&str, usize, usize, &str); 6] = [
        (
            "max-frame-length",
            settings.max_frame_length,
            MIN_FRAME,
            "frame",
        ),
        (
            "max-inflated-size",
            settings.max_inflated_size,
            MIN_FRAME,
            "body",
        ),
        (
            "handshake-frame-length",
            settings.handshake_frame_length,
            MIN_FRAME,
            "settype",
        ),
        (
            "ping-frame-length",
            settings.ping_frame_length,
            MIN_FRAME,
            "ping",
        ),
        ("max-depth", settings.max_depth, 2, "ping (a map of values)"),
        ("max-items", settings.max_items, 16, "ping"),
    ];
    for (name, value, floor, what) in floors {
        if value < floor {
            return Err(format!(
                "{name} is {value}, but must be at least {floor}: with less, no client's {what} fits"
            ));
        }
    }
    match (settings.proxy_protocol, settings.proxy_trusted.is_empty()) {
        (true, true) => {
            return Err(
                "proxy-protocol needs proxy-trusted: the balancers allowed to send \
                        PROXY headers (--proxy-trusted CIDR)"
                    .into(),
            )
        }
        (false, false) => {
            return Err("proxy-trusted is used with proxy-protocol (--proxy-protocol)".into())
        }
        _ => {}
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<File, String> {
        toml::from_str(text).map_err(|e| located(Path::new("s.toml"), text, &e))
    }

    /// Limits under which no client could be served are refused, each named.
    #[test]
    fn limits_that_refuse_every_client_are_refused() {
        for (flag, args) in [
            (
                "max-frame-length",
                ServeArgs {
                    max_frame_length: Some(0),
                    ..ServeArgs::default()
                },
            ),
            (
                "max-depth",
                ServeArgs {
                    max_depth: Some(0),
                    ..ServeArgs::default()
                },
            ),
            (
                "max-items",
                ServeArgs {
                    max_items: Some(0),
                    ..ServeArgs::default()
                },
            ),
            (
                "handshake-frame-length",
                ServeArgs {
                    handshake_frame_length: Some(0),
                    ..ServeArgs::default()
                },
            ),
        ] {
            let error = settings(&args).unwrap_err();
            assert!(
                error.starts_with(&format!("{flag} is 0, but must be at least")),
                "{error}"
            );
        }
    }

    /// A reload that changes every fixed setting at once leaves none of them applied.
    #[test]
    fn keep_fixed_of_leaves_no_fixed_difference() {
        let running = settings(&ServeArgs::default()).unwrap();
        let dir = std::env::temp_dir().join(format!("peng3dnet-fixed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serve.toml");
        std::fs::write(
            &path,
            "bind = [\"127.0.0.1:1\"]\nmetrics = \"127.0.0.1:2\"\nno-writeback = true\n\
             proxy-protocol = true\nproxy-trusted = [\"10.0.0.0/8\"]\nlog-format = \"json\"\n\
             verbose = true\nmax-connections = 7\nmax-frame-length = 70000\n\
             max-inflated-size = 70000\nmax-depth = 9\nmax-items = 99\nmax-queued-bytes = 999\n\
             max-echo-bytes = 99\nhandshake-timeout = 3\nidle-timeout = 4\nwrite-timeout = 5\n\
             close-linger = 1\nhandshake-frame-length = 999\nping-frame-length = 9999\n\
             frame-timeout = 6\nframe-budget = 99999\nmax-connections-per-addr = 3\n\
             per-addr-ipv6-prefix = 56\nping-idle-timeout = 7\n\
             announce = \"http://127.0.0.1:9\"\nannounce-tags = [\"eu\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let mut new = settings(&args).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let changed = running.fixed_differences(&new);
        assert_eq!(changed.len(), 8, "{changed:?}");
        assert_ne!(new.limits(), running.limits());
        new.keep_fixed_of(&running);
        assert_eq!(running.fixed_differences(&new), Vec::<&str>::new());
        assert_eq!(new.limits(), running.limits());
    }

    /// The read-path limits (frame sizes by state, frame deadline, memory budget,
    /// per-address cap) are settings too, from the file or flags, flags winning.
    #[test]
    fn read_path_limits_come_from_the_file_and_flags() {
        let dir = std::env::temp_dir().join(format!("peng3dnet-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serve.toml");
        std::fs::write(
            &path,
            "max-connections-per-addr = 3\nframe-timeout = 5\nframe-budget = 1000000\n\
             handshake-frame-length = 2048\nping-frame-length = 9000\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            frame_budget: Some(2_000_000),
            ..ServeArgs::default()
        };
        let limits = settings(&args).unwrap().limits();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(limits.max_connections_per_addr, 3);
        assert_eq!(limits.frame_timeout, Duration::from_secs(5));
        assert_eq!(
            limits.frame_budget, 2_000_000,
            "the flag wins over the file"
        );
        assert_eq!(limits.handshake_frame_length, 2048);
        assert_eq!(limits.ping_frame_length, 9000);
    }

    #[test]
    fn the_proxy_protocol_settings_come_from_the_file_and_are_checked() {
        let file =
            parse("proxy-protocol = true\nproxy-trusted = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(file.proxy_protocol, Some(true));
        assert_eq!(file.proxy_trusted.map(|v| v.len()), Some(2));
        let e = parse("proxy-trusted = [\"10.0.0.0/99\"]\n").unwrap_err();
        assert!(e.starts_with("s.toml:1: key `proxy-trusted`: "), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("bind = \"127.0.0.1:1\"\n\nmax-conections = 5\n").unwrap_err();
        assert!(
            e == "s.toml:3: key `max-conections`: unknown key; did you mean `max-connections`?",
            "{e}"
        );
        let e = parse("bind = \"x:1\"\nidle-timeout = -3\n").unwrap_err();
        assert!(e.starts_with("s.toml:2: key `idle-timeout`: "), "{e}");
        assert!(e.contains("positive number of seconds"), "{e}");
        let e = parse("max-connections = \"many\"\n").unwrap_err();
        assert!(e.starts_with("s.toml:1: key `max-connections`: "), "{e}");
        assert!(e.contains("expected a whole number (0 or more)"), "{e}");
        let e = parse("log-format = \"xml\"\n").unwrap_err();
        assert!(e.starts_with("s.toml:1: key `log-format`: "), "{e}");
        // No Rust type names, no line breaks; far from every key, the keys are listed.
        let e = parse("max-depth = -1\nper-addr-ipv6-prefix = 300\n").unwrap_err();
        assert!(!e.contains("usize") && !e.contains('\n'), "{e}");
        let e = parse("per-addr-ipv6-prefix = 300\n").unwrap_err();
        assert!(e.contains("a whole number from 0 to 255"), "{e}");
        let e = parse("zzzzzz = 1\n").unwrap_err();
        assert!(
            e.contains("unknown key; the keys are `bind`, `metrics`"),
            "{e}"
        );
        let e = parse("[data\nx = 1\n").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn the_file_takes_every_setting() {
        let file = parse(
            "bind = [\"127.0.0.1:1\", \"[::1]:1\"]\nmetrics = \"127.0.0.1:9\"\nidle-timeout = 1.5\n\
             write-timeout = 2\nmax-items = 7\n[data]\nname = \"x\"\n",
        )
        .unwrap();
        assert_eq!(file.bind.unwrap().0.len(), 2);
        assert_eq!(file.idle_timeout.unwrap().0, Duration::from_millis(1500));
        assert_eq!(file.write_timeout.unwrap().0, Duration::from_secs(2));
        assert_eq!(file.max_items, Some(7));
        assert_eq!(file.data.unwrap()["name"].as_str(), Some("x"));
    }
}
