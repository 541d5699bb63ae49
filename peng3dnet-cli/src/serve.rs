//! `serve`: a pingable server with static data and the built-in dynamic fields.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use peng3dnet::proxy::ProxyPolicy;
use peng3dnet::server::{Server, ServerError};
use peng3dnet::tls::ServerTls;
use peng3dnet::value::map;
use peng3dnet::{MapWriter, PingRequest};
use peng3dnet::{PingResponder, Value};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::config_file::{self, LogFormat, Settings};
use super::metrics::Metrics;
use super::output::Out;
use super::{error, from_json, from_toml, Exit, ServeArgs};

/// The dynamic ping data every server of the CLI reports: `clients` (connections open),
/// `uptime` (seconds since `started`), `pings` (pings answered, this one included) and
/// `client_addr` (`ip:port` the server sees the pinging client at: behind a load balancer
/// that speaks the PROXY protocol, the client's own, not the balancer's).
///
/// ```
/// use peng3dnet::value::get;
/// use peng3dnet_cli::serve::builtin_dynamic_data;
/// use peng3dnet::{PingMessage, PingRequest, Stats};
///
/// let dynamic = builtin_dynamic_data(std::time::Instant::now());
/// let stats = Stats::default();
/// let ping = PingMessage::from_value(&peng3dnet::value::map([]));
/// let peer = "192.0.2.7:51234".parse().unwrap();
/// let data = dynamic(&PingRequest::new(&ping, peng3dnet::ClientId(1), peer, &stats));
/// assert_eq!(get(&data, "client_addr").and_then(|v| v.as_str()), Some("192.0.2.7:51234"));
/// ```
pub fn builtin_dynamic_data(
    started: Instant,
) -> impl Fn(&PingRequest<'_>) -> Value + Send + Sync + 'static {
    move |request| {
        let uptime = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        map([
            (
                "clients",
                request.stats.connected.load(Ordering::Relaxed).into(),
            ),
            ("uptime", Value::F64(uptime)),
            ("pings", request.stats.pings.load(Ordering::Relaxed).into()),
            ("client_addr", Value::from(request.peer_addr.to_string())),
        ])
    }
}

/// [`builtin_dynamic_data`] written straight into the pong
/// ([`PingResponder::with_dynamic_entries`]): the same entries, byte for byte, without a
/// map and an address string built per ping. What `serve` uses.
///
/// ```
/// use peng3dnet::value::{self, get};
/// use peng3dnet::{PingMessage, PingRequest, PingResponder, Stats};
/// use peng3dnet_cli::serve::builtin_dynamic_entries;
///
/// let responder = PingResponder::new().with_dynamic_entries(builtin_dynamic_entries(std::time::Instant::now()));
/// let stats = Stats::default();
/// let ping = PingMessage::from_value(&peng3dnet::value::map([]));
/// let peer = "192.0.2.7:51234".parse().unwrap();
/// let request = PingRequest::new(&ping, peng3dnet::ClientId(1), peer, &stats);
/// let timing = peng3dnet::pong::ServerTiming::at(std::time::SystemTime::now());
/// let pong = value::decode(&responder.encode_pong(&request, 1000, timing), 64).unwrap();
/// assert_eq!(get(&pong, "client_addr").and_then(|v| v.as_str()), Some("192.0.2.7:51234"));
/// ```
pub fn builtin_dynamic_entries(
    started: Instant,
) -> impl Fn(&PingRequest<'_>, &mut MapWriter<'_>) + Send + Sync + 'static {
    move |request, out| {
        let uptime = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        out.uint("clients", request.stats.connected.load(Ordering::Relaxed));
        out.f64("uptime", uptime);
        out.uint("pings", request.stats.pings.load(Ordering::Relaxed));
        out.socket_addr("client_addr", request.peer_addr);
    }
}

/// A running pingable server whose pongs carry the [`builtin_dynamic_data`].
pub(crate) struct Pingable {
    server: Server,
}

impl Pingable {
    /// Binds and starts serving.
    pub(crate) async fn start(
        static_data: Value,
        writeback: bool,
        bind: &str,
        tls: Option<ServerTls>,
        proxy: Option<ProxyPolicy>,
    ) -> Result<Pingable, ServerError> {
        let responder = PingResponder::new()
            .with_writeback(writeback)
            .with_static_data(static_data)
            .with_dynamic_entries(builtin_dynamic_entries(Instant::now()));
        let builder = Server::builder().pingable(responder);
        let builder = match tls {
            Some(tls) => builder.tls(tls),
            None => builder,
        };
        let builder = match proxy {
            Some(policy) => builder.proxy_protocol(policy),
            None => builder,
        };
        Ok(Pingable {
            server: builder.bind(bind).await?,
        })
    }

    /// The server.
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// Graceful shutdown: every client gets closeconn `servershutdown`.
    pub(crate) async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Sets up logging to stderr: `default` level unless RUST_LOG says otherwise.
pub fn init_logging(default: &str) {
    init_logging_as(default, LogFormat::Text);
}

/// Sets up logging to stderr in `format`: `default` level unless RUST_LOG says otherwise.
pub fn init_logging_as(default: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(log_colours(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Whether text log lines are coloured: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn log_colours(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Reads static data from a `.json` or `.toml` file; the top level must be a map.
pub(crate) fn read_data_file(path: &Path) -> Result<Value, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let value = match ext.as_deref() {
        Some("json") => {
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{shown}: invalid JSON: {e}"))?;
            from_json(&json)
        }
        Some("toml") => {
            let toml: toml::Value = toml::from_str(&text).map_err(|e| {
                // One line: the file, the line and the message, no quoted source.
                format!("invalid TOML: {}", config_file::located(path, &text, &e))
            })?;
            from_toml(&toml)
        }
        _ => {
            return Err(format!(
                "{shown}: unknown data file type (use .json or .toml)"
            ))
        }
    };
    if !value.is_map() {
        return Err(format!("{shown}: the top level must be an object/table"));
    }
    Ok(value)
}

/// `peng3dnet serve`.
pub(crate) async fn run(args: ServeArgs) -> Exit {
    let settings = match config_file::settings(&args) {
        Ok(settings) => settings,
        Err(message) => {
            error(message);
            return Exit::Usage;
        }
    };
    // Everything a start needs, read now: a bad file is an error before binding.
    let (data, tls) = match settings
        .load_data()
        .and_then(|d| Ok((d, settings.load_tls()?)))
    {
        Ok(loaded) => loaded,
        Err(message) => {
            error(message);
            return Exit::Usage;
        }
    };
    if args.check_config.is_some() {
        return match Out.line(settings.to_toml().trim_end()) {
            Ok(()) => Exit::Ok,
            Err(_) => Exit::System,
        };
    }
    // An address that names nothing is a bad argument (3), not a failure to listen (4).
    let flags = settings
        .bind
        .iter()
        .map(|b| ("--bind", b))
        .chain(settings.metrics.iter().map(|m| ("--metrics", m)));
    for (flag, addr) in flags {
        if let Err(message) = crate::exporter::listen_addrs(flag, addr).await {
            error(message);
            return Exit::Usage;
        }
    }
    init_logging_as(
        if settings.verbose { "debug" } else { "info" },
        settings.log_format,
    );
    // Installed before anything is printed: from `listening on` on, SIGHUP reloads
    // instead of killing.
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP ({e}); reloading is off");
            None
        }
    };
    // SIGINT and SIGTERM too, before `listening on` is printed: a signal right after it
    // stops us gracefully.
    let mut interrupts = super::Interrupts::install();
    let metrics = settings.metrics.as_ref().map(|_| Metrics::new());
    let responder = PingResponder::new()
        .with_writeback(!settings.no_writeback)
        .with_static_data(data)
        .with_dynamic_entries(builtin_dynamic_entries(Instant::now()));
    let mut config = peng3dnet::Config::default();
    config.limits = settings.limits();
    let proxy = settings
        .proxy_protocol
        .then(|| ProxyPolicy::trusting(settings.proxy_trusted.iter().map(|c| c.0)));
    if let Some(policy) = &proxy {
        tracing::info!(
            "PROXY protocol on: every connection must come from {policy} and start with a header"
        );
    }
    let mut servers = Vec::new();
    for bind in &settings.bind {
        let mut builder = Server::builder()
            .config(config.clone())
            .pingable(responder.clone());
        if let Some(tls) = &tls {
            builder = builder.tls(tls.clone());
        }
        if let Some(metrics) = &metrics {
            builder = builder.observer(Arc::new(metrics.clone()));
        }
        if let Some(policy) = &proxy {
            builder = builder.proxy_protocol(policy.clone());
        }
        match builder.bind(bind.as_str()).await {
            Ok(server) => servers.push(server),
            Err(e) => {
                match e {
                    ServerError::Bind(e) => error(format!("serve {bind}: {e}")),
                    e => error(format!("cannot start the server: {e}")),
                }
                for server in servers {
                    server.shutdown().await;
                }
                return Exit::System;
            }
        }
    }
    let stop = CancellationToken::new();
    let mut metrics_task = None;
    if let (Some(addr), Some(metrics)) = (&settings.metrics, &metrics) {
        let listener = match tokio::net::TcpListener::bind(addr.as_str()).await {
            Ok(listener) => listener,
            Err(e) => {
                error(format!("cannot listen on {addr} (metrics): {e}"));
                for server in servers {
                    server.shutdown().await;
                }
                return Exit::System;
            }
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        metrics_task = Some((
            local,
            tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
                stop.clone(),
            )),
        ));
    }
    let mut lines: Vec<String> = servers
        .iter()
        .map(|s| format!("listening on {}", s.local_addr()))
        .collect();
    if let Some((addr, _)) = &metrics_task {
        lines.push(format!("metrics on http://{addr}/metrics"));
    }
    if lines.iter().any(|line| Out.line(line).is_err()) {
        for server in servers {
            server.shutdown().await;
        }
        return Exit::System;
    }
    for server in &servers {
        tracing::info!(addr = %server.local_addr(), writeback = !settings.no_writeback, "serving pings");
    }
    let announcers = crate::master_args::start_announcers(&settings, &servers);
    let mut running = settings;
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
                tracing::info!("SIGHUP: reloading");
                let loaded = tokio::select! {
                    _ = interrupts.wait() => break,
                    loaded = load_off_loop(&args) => loaded,
                };
                let ok = reload(loaded, &mut running, &responder, tls.as_ref());
                if let Some(metrics) = &metrics {
                    metrics.reloaded(ok);
                }
            }
        }
    }
    tracing::info!("shutting down");
    // Unlisted first, while the servers still answer: the master never sees them down.
    crate::master_args::stop_announcers(announcers).await;
    for server in servers {
        server.shutdown().await;
    }
    stop.cancel();
    if let Some((_, task)) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Exit::Ok
}

/// The longest a reload may take to read its files (settings, data, TLS). A FIFO or a
/// hung network filesystem never answers; the reload then fails and the server goes on.
const RELOAD_READ_LIMIT: Duration = Duration::from_secs(5);

/// What a reload read: the settings, the static data and the TLS files.
struct Loaded {
    settings: Settings,
    data: Value,
    tls: Option<ServerTls>,
}

/// Reads everything a reload needs (blocking file reads).
fn load(args: &ServeArgs) -> Result<Loaded, String> {
    let settings = config_file::settings(args)?;
    let data = settings.load_data()?;
    let tls = settings.load_tls()?;
    Ok(Loaded {
        settings,
        data,
        tls,
    })
}

/// [`load`] on a thread of its own, within [`RELOAD_READ_LIMIT`] ([`off_loop`]).
async fn load_off_loop(args: &ServeArgs) -> Result<Loaded, String> {
    let args = args.clone();
    off_loop(move || load(&args)).await
}

/// Runs a reload's file reads `read` on a thread of its own, within
/// [`RELOAD_READ_LIMIT`]: never on the loop that also waits for SIGTERM. A plain thread,
/// not tokio's blocking pool, whose threads the runtime waits for when it shuts down: a
/// read that never returns is left behind and ends with the process.
pub(crate) async fn off_loop<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let _ = tx.send(read());
        })
        .map_err(|e| format!("cannot start a thread to read the files: {e}"))?;
    match tokio::time::timeout(RELOAD_READ_LIMIT, rx).await {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(_)) => Err("reading the files failed (the reading thread stopped)".into()),
        Err(_) => Err(format!(
            "reading the files took longer than {} s (is one a FIFO, or on a hung filesystem?)",
            RELOAD_READ_LIMIT.as_secs()
        )),
    }
}

/// SIGHUP, once [`load_off_loop`] has read the files: applies what can change while
/// running (the static data, the TLS certificate, key and client CA). On any error,
/// nothing changes and the log says why. Returns whether it succeeded.
fn reload(
    loaded: Result<Loaded, String>,
    running: &mut Settings,
    responder: &PingResponder,
    tls: Option<&ServerTls>,
) -> bool {
    let Loaded {
        settings: new,
        data,
        tls: new_tls,
    } = match loaded {
        Ok(loaded) => loaded,
        Err(message) => {
            tracing::error!(
                "reload failed, keeping the running settings: {}",
                crate::exporter::one_line(&message)
            );
            return false;
        }
    };
    let fixed = running.fixed_differences(&new);
    responder.set_static_data(data);
    if let (Some(tls), Some(new_tls)) = (tls, &new_tls) {
        tls.replace(new_tls);
    }
    // Said once the data is in place: whoever reads the log sees a reload done.
    if !fixed.is_empty() {
        tracing::warn!(
            "reload: these settings changed but cannot change while running (restart to apply them): {}",
            fixed.join(", ")
        );
    }
    // What runs now: the new data and TLS files, the old fixed settings.
    let mut applied = new;
    applied.keep_fixed_of(running);
    *running = applied;
    tracing::info!(
        tls = tls.is_some() && new_tls.is_some(),
        "reloaded: static data{}",
        if tls.is_some() && new_tls.is_some() {
            ", TLS certificate and key"
        } else {
            ""
        }
    );
    true
}
