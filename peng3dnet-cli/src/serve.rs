//! `serve`: a pingable server with static data and the built-in dynamic fields.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use peng3dnet::proxy::ProxyPolicy;
use peng3dnet::server::{Server, ServerError};
use peng3dnet::tls::{ClientCertPolicy, ServerTls};
use peng3dnet::value::{map, update};
use peng3dnet::PingRequest;
use peng3dnet::{PingResponder, Value};

use super::output::Out;
use super::{error, from_json, from_toml, Exit, Interrupts, ServeArgs};

/// The dynamic ping data every server of the CLI reports: `clients` (connections open),
/// `uptime` (seconds since `started`), `pings` (pings answered, this one included) and
/// `client_addr` (`ip:port` the server sees the pinging client at: behind a load balancer
/// that speaks the PROXY protocol, the client's own, not the balancer's).
///
/// ```
/// use peng3dnet::value::get;
/// use peng3dnet_cli::serve::builtin_dynamic_data;
/// use peng3dnet::{PingRequest, Stats};
///
/// let dynamic = builtin_dynamic_data(std::time::Instant::now());
/// let stats = Stats::default();
/// let data = dynamic(&PingRequest {
///     message: &peng3dnet::value::map([]),
///     client_id: peng3dnet::ClientId(1),
///     peer_addr: "192.0.2.7:51234".parse().unwrap(),
///     stats: &stats,
/// });
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
            .with_dynamic(builtin_dynamic_data(Instant::now()));
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
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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
            let toml: toml::Value =
                toml::from_str(&text).map_err(|e| format!("{shown}: invalid TOML: {e}"))?;
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
    init_logging(if args.verbose { "debug" } else { "info" });
    let mut data = map([]);
    if let Some(path) = &args.data_file {
        match read_data_file(path) {
            Ok(file) => data = file,
            Err(message) => {
                error(message);
                return Exit::Usage;
            }
        }
    }
    let extra = Value::Map(
        args.data
            .iter()
            .map(|(k, v)| (Value::from(k.as_str()), v.clone()))
            .collect(),
    );
    update(&mut data, &extra);

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let clients = match &args.tls_client_ca {
                Some(ca) => ClientCertPolicy::Required(ca.clone()),
                None => ClientCertPolicy::None,
            };
            match ServerTls::from_pem_files(cert, key, clients) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    error(format!("cannot serve over TLS: {e}"));
                    return Exit::Usage;
                }
            }
        }
        _ => None,
    };
    // Before the `listening on` line: a SIGTERM right after it must shut down gracefully.
    let mut interrupts = Interrupts::install();
    let proxy = args
        .proxy_protocol
        .then(|| ProxyPolicy::trusting(args.proxy_trusted.iter().copied()));
    let pingable = match Pingable::start(data, !args.no_writeback, &args.bind, tls, proxy).await {
        Ok(p) => p,
        Err(ServerError::Bind(e)) => {
            error(format!("cannot listen on {}: {e}", args.bind));
            return Exit::System;
        }
        Err(e) => {
            error(format!("cannot start the server: {e}"));
            return Exit::System;
        }
    };
    let addr = pingable.server().local_addr();
    if Out.line(&format!("listening on {addr}")).is_err() {
        pingable.shutdown().await;
        return Exit::System;
    }
    tracing::info!(%addr, writeback = !args.no_writeback, "serving pings");
    if args.proxy_protocol {
        let trusted = ProxyPolicy::trusting(args.proxy_trusted.iter().copied());
        tracing::info!(
            "PROXY protocol on: every connection must come from {trusted} and start with a header"
        );
    }
    interrupts.wait().await;
    tracing::info!("shutting down");
    pingable.shutdown().await;
    tracing::info!("stopped");
    Exit::Ok
}
