//! `peng3dnet master`: the command line of the master server (the `peng3dnet-master`
//! crate does the work). Settings come from the defaults, then `--config FILE`, then
//! the flags; SIGHUP rereads the file and applies what can change while running.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use peng3dnet::proxy::Cidr;
use peng3dnet_master::settings::{Database, FileSettings, Settings};

use super::config_file::LogFormat;
use super::output::Out;
use super::{error, parse_cidr, parse_seconds, Exit};

pub(crate) const MASTER_AFTER: &str = "\
Examples:
  peng3dnet master                                   0.0.0.0:8090, sqlite:peng3dnet-master.db
  peng3dnet master --listen 127.0.0.1:8090 --refresh 30 --drop-after 300
  peng3dnet master --db postgres://master@db.example/peng3dnet   several masters, one database
  peng3dnet master --config master.toml --log-format json

Servers announce with POST /announce {\"port\": 7000, \"tags\": [\"eu\"]} from the address to
list; the master pings it back and lists it only when the pong comes, then pings every
listed server each --refresh seconds: down after --down-after failed pings, dropped after
--drop-after seconds without a pong. The list: GET /servers (JSON), /servers.txt (one
host:port a line), / (a web page); /metrics for Prometheus. See docs/master.md.
Prints `master on http://ADDR/` on stdout once listening. Ctrl-C or SIGTERM: graceful
shutdown (announces under way are answered); SIGHUP rereads --config.";

/// `master` arguments. Every setting can also come from `--config FILE`; flags override it.
#[derive(Debug, Clone, Args, Default)]
pub struct MasterServerArgs {
    /// Settings from a TOML file: keys named as the long flags (listen, db, refresh,
    /// drop-after, trusted...). Flags override it; SIGHUP rereads it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP address to listen on [default: 0.0.0.0:8090].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Storage: sqlite:PATH or postgres://USER@HOST/DB [default: sqlite:peng3dnet-master.db].
    #[arg(long, value_name = "URL", value_parser = parse_db)]
    pub db: Option<Database>,
    /// Seconds between two pings of each listed server; announcers re-announce as often
    /// [default: 60].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub refresh: Option<Duration>,
    /// Seconds without a pong after which a server is dropped [default: 600].
    #[arg(long = "drop-after", value_name = "SECS", value_parser = parse_seconds)]
    pub drop_after: Option<Duration>,
    /// Failed pings in a row after which a server is shown down [default: 2].
    #[arg(long = "down-after", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub down_after: Option<u32>,
    /// Seconds each ping may take [default: 5].
    #[arg(long = "ping-timeout", value_name = "SECS", value_parser = parse_seconds)]
    pub ping_timeout: Option<Duration>,
    /// Least seconds between two pings of one address, announces included [default: 5].
    #[arg(long = "ping-spacing", value_name = "SECS", value_parser = parse_seconds)]
    pub ping_spacing: Option<Duration>,
    /// An announcer allowed to name another host (repeatable): ADDR or ADDR/PREFIX.
    #[arg(long = "trusted", value_name = "CIDR", value_parser = parse_cidr)]
    pub trusted: Vec<Cidr>,
    /// Expect a PROXY protocol header (HAProxy send-proxy-v2) on every connection, from
    /// --proxy-trusted balancers only.
    #[arg(long = "proxy-protocol")]
    pub proxy_protocol: bool,
    /// A balancer allowed to send PROXY headers (repeatable).
    #[arg(long = "proxy-trusted", value_name = "CIDR", value_parser = parse_cidr)]
    pub proxy_trusted: Vec<Cidr>,
    /// Announces per minute from one source, after the burst, plus one per --refresh for
    /// each server it lists [default: 12].
    #[arg(long = "announce-rate", value_name = "PER_MINUTE")]
    pub announce_rate: Option<f64>,
    /// Announces one source may make at once, plus one per server it lists [default: 10].
    #[arg(long = "announce-burst", value_name = "N")]
    pub announce_burst: Option<u32>,
    /// Most servers listed [default: 100000].
    #[arg(long = "max-servers", value_name = "N")]
    pub max_servers: Option<usize>,
    /// Most servers one (untrusted) source may list [default: 64].
    #[arg(long = "max-per-source", value_name = "N")]
    pub max_per_source: Option<usize>,
    /// This master's name in logs and the database [default: HOSTNAME-PID].
    #[arg(long = "master-id", value_name = "NAME")]
    pub master_id: Option<String>,
    /// Log line format on stderr [default: text].
    #[arg(long = "log-format", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Debug logging (RUST_LOG overrides).
    #[arg(short, long)]
    pub verbose: bool,
}

fn parse_db(s: &str) -> Result<Database, String> {
    s.parse()
}

/// The settings: defaults, then the file, then the flags; and the log format.
fn gather(args: &MasterServerArgs) -> Result<(Settings, LogFormat), String> {
    let mut settings = Settings::default();
    let mut log_format = LogFormat::Text;
    if let Some(path) = &args.config {
        let file = FileSettings::read(path).map_err(|e| e.to_string())?;
        file.apply(&mut settings)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(f) = &file.log_format {
            log_format = match f.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(format!(
                        "{}: log-format = {other:?}: expected text or json",
                        path.display()
                    ))
                }
            };
        }
    }
    let a = args;
    if let Some(v) = &a.listen {
        settings.listen = v.clone();
    }
    if let Some(v) = &a.db {
        settings.db = v.clone();
    }
    if let Some(v) = a.refresh {
        settings.refresh = v;
    }
    if let Some(v) = a.drop_after {
        settings.drop_after = v;
    }
    if let Some(v) = a.down_after {
        settings.down_after = v;
    }
    if let Some(v) = a.ping_timeout {
        settings.ping_timeout = v;
    }
    if let Some(v) = a.ping_spacing {
        settings.ping_spacing = v;
    }
    if !a.trusted.is_empty() {
        settings.trusted = a.trusted.clone();
    }
    if a.proxy_protocol {
        settings.proxy_protocol = true;
    }
    if !a.proxy_trusted.is_empty() {
        settings.proxy_trusted = a.proxy_trusted.clone();
    }
    if let Some(v) = a.announce_rate {
        settings.announce_rate = v;
    }
    if let Some(v) = a.announce_burst {
        settings.announce_burst = v;
    }
    if let Some(v) = a.max_servers {
        settings.max_servers = v;
    }
    if let Some(v) = a.max_per_source {
        settings.max_per_source = v;
    }
    if let Some(v) = &a.master_id {
        settings.master_id = v.clone();
    }
    if let Some(v) = a.log_format {
        log_format = v;
    }
    settings.check().map_err(|e| e.to_string())?;
    Ok((settings, log_format))
}

pub(crate) async fn run(args: MasterServerArgs) -> Exit {
    let (settings, log_format) = match gather(&args) {
        Ok(s) => s,
        Err(message) => {
            error(message);
            return Exit::Usage;
        }
    };
    super::serve::init_logging_as(if args.verbose { "debug" } else { "info" }, log_format);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut interrupts = super::Interrupts::install();
    let running = match peng3dnet_master::start(settings).await {
        Ok(r) => r,
        Err(e) => {
            error(&e);
            return match e {
                peng3dnet_master::StartError::Settings(_) => Exit::Usage,
                _ => Exit::System,
            };
        }
    };
    if Out
        .line(&format!("master on http://{}/", running.local_addr()))
        .is_err()
    {
        running.shutdown().await;
        return Exit::System;
    }
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
                match gather(&args) {
                    Ok((new, _)) => match running.master().reload(new) {
                        Ok(kept) if kept.is_empty() => tracing::info!("settings reloaded"),
                        Ok(kept) => tracing::warn!(
                            unchanged = %kept.join(", "),
                            "settings reloaded; these take effect at the next start only"
                        ),
                        Err(e) => tracing::error!(error = %e, "reload refused; settings unchanged"),
                    },
                    Err(e) => tracing::error!(error = %e, "reload refused; settings unchanged"),
                }
            }
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Exit::Ok
}
