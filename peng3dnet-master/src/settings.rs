//! The master's settings: defaults, a TOML file (keys named as the command line's long
//! flags), and which of them a reload (SIGHUP) may change.

use std::path::Path;
use std::time::Duration;

use peng3dnet::proxy::Cidr;
use serde::Deserialize;

/// Where the list is stored, from `--db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// `sqlite:PATH`: one file (and its `-wal`, `-shm`), created on first start.
    Sqlite(std::path::PathBuf),
    /// `postgres://...` or `postgresql://...`: a libpq-style URL, as tokio-postgres parses
    /// it (`?options=-csearch_path%3Dmaster` picks a schema).
    Postgres(String),
}

impl Database {
    /// The default: `sqlite:peng3dnet-master.db` in the working directory.
    pub fn default_sqlite() -> Database {
        Database::Sqlite("peng3dnet-master.db".into())
    }

    /// The URL without a password, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite:{}", path.display()),
            Database::Postgres(url) => match url.split_once("://") {
                Some((scheme, rest)) => match rest.rsplit_once('@') {
                    Some((auth, host)) => {
                        let user = auth.split(':').next().unwrap_or("");
                        format!("{scheme}://{user}@{host}")
                    }
                    None => url.clone(),
                },
                None => url.clone(),
            },
        }
    }
}

impl std::str::FromStr for Database {
    type Err = String;

    /// ```
    /// use peng3dnet_master::settings::Database;
    /// assert_eq!("sqlite:list.db".parse(), Ok(Database::Sqlite("list.db".into())));
    /// assert!(matches!("postgres://u@h/db".parse(), Ok(Database::Postgres(_))));
    /// assert!("mysql://h".parse::<Database>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Database, String> {
        let s = s.trim();
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err("sqlite: needs a file path, e.g. sqlite:master.db".into());
            }
            return Ok(Database::Sqlite(path.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Database::Postgres(s.to_owned()));
        }
        Err(format!(
            "{s:?} is not a database URL: use sqlite:PATH or postgres://USER@HOST/DB"
        ))
    }
}

/// All settings. [`Settings::default`] is what `peng3dnet master` alone runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// HTTP listen address.
    pub listen: String,
    /// Storage.
    pub db: Database,
    /// How often each server is pinged, and announcers re-announce (`--refresh`).
    pub refresh: Duration,
    /// A server with no pong for this long is dropped (`--drop-after`).
    pub drop_after: Duration,
    /// Consecutive failed pings after which a server is shown down.
    pub down_after: u32,
    /// Time allowed for each ping (verification and refresh).
    pub ping_timeout: Duration,
    /// Least time between two pings of one address, whoever asks (announces included):
    /// the master cannot be made to ping a host more often than this.
    pub ping_spacing: Duration,
    /// Pings of the refresh at once.
    pub concurrency: usize,
    /// Verification pings (of announces) at once; more announces wait.
    pub max_verifications: usize,
    /// Announcers whose `host` is honoured (they may list another address).
    pub trusted: Vec<Cidr>,
    /// Read a PROXY protocol header (v1/v2) on every connection; only from
    /// [`proxy_trusted`](Self::proxy_trusted) peers.
    pub proxy_protocol: bool,
    /// Balancers that may send a PROXY header.
    pub proxy_trusted: Vec<Cidr>,
    /// Announces (POST and DELETE) per minute from one source, on average, plus one per
    /// refresh interval for each server the source has listed (its re-announces).
    pub announce_rate: f64,
    /// Announces one source may make at once before the rate applies, plus one for each
    /// server it has listed.
    pub announce_burst: u32,
    /// Most servers listed in all; announces of new ones beyond are refused.
    pub max_servers: usize,
    /// Most servers one source (not trusted) may have listed.
    pub max_per_source: usize,
    /// Results kept per server.
    pub history: usize,
    /// HTTP connections at once, in all.
    pub max_connections: usize,
    /// HTTP connections at once from one source.
    pub max_connections_per_source: usize,
    /// Time a client has to send a request's headers, and its body.
    pub request_timeout: Duration,
    /// This master's name in the database and logs (several masters on PostgreSQL).
    pub master_id: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "0.0.0.0:8090".into(),
            db: Database::default_sqlite(),
            refresh: Duration::from_secs(60),
            drop_after: Duration::from_secs(600),
            down_after: 2,
            ping_timeout: Duration::from_secs(5),
            ping_spacing: Duration::from_secs(5),
            concurrency: 512,
            max_verifications: 64,
            trusted: Vec::new(),
            proxy_protocol: false,
            proxy_trusted: Vec::new(),
            announce_rate: 12.0,
            announce_burst: 10,
            max_servers: 100_000,
            max_per_source: 64,
            history: 10,
            max_connections: 1024,
            max_connections_per_source: 32,
            request_timeout: Duration::from_secs(10),
            master_id: default_master_id(),
        }
    }
}

fn default_master_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "master".into());
    format!("{host}-{}", std::process::id())
}

/// The settings file: every key optional, named as the long flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    /// `listen`.
    pub listen: Option<String>,
    /// `db`.
    pub db: Option<String>,
    /// `refresh`, seconds.
    pub refresh: Option<f64>,
    /// `drop-after`, seconds.
    pub drop_after: Option<f64>,
    /// `down-after`, pings.
    pub down_after: Option<u32>,
    /// `ping-timeout`, seconds.
    pub ping_timeout: Option<f64>,
    /// `ping-spacing`, seconds.
    pub ping_spacing: Option<f64>,
    /// `concurrency`.
    pub concurrency: Option<usize>,
    /// `max-verifications`.
    pub max_verifications: Option<usize>,
    /// `trusted`: CIDRs.
    pub trusted: Option<Vec<String>>,
    /// `proxy-protocol`.
    pub proxy_protocol: Option<bool>,
    /// `proxy-trusted`: CIDRs.
    pub proxy_trusted: Option<Vec<String>>,
    /// `announce-rate`, per minute.
    pub announce_rate: Option<f64>,
    /// `announce-burst`.
    pub announce_burst: Option<u32>,
    /// `max-servers`.
    pub max_servers: Option<usize>,
    /// `max-per-source`.
    pub max_per_source: Option<usize>,
    /// `history`.
    pub history: Option<usize>,
    /// `max-connections`.
    pub max_connections: Option<usize>,
    /// `max-connections-per-source`.
    pub max_connections_per_source: Option<usize>,
    /// `request-timeout`, seconds.
    pub request_timeout: Option<f64>,
    /// `master-id`.
    pub master_id: Option<String>,
    /// `log-format`: read by the command line, not here.
    pub log_format: Option<String>,
}

/// A settings file that cannot be used, with the reason as a sentence.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSettings(pub String);

/// Seconds as a duration, refused unless positive and at most a year.
pub fn seconds(name: &str, secs: f64) -> Result<Duration, BadSettings> {
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86_400.0 {
        return Err(BadSettings(format!(
            "{name} = {secs}: must be a positive number of seconds, at most a year"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn cidrs(name: &str, list: &[String]) -> Result<Vec<Cidr>, BadSettings> {
    list.iter()
        .map(|c| {
            c.parse::<Cidr>()
                .map_err(|e| BadSettings(format!("{name}: {e}")))
        })
        .collect()
}

impl FileSettings {
    /// Reads and parses a TOML file.
    pub fn read(path: &Path) -> Result<FileSettings, BadSettings> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BadSettings(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            BadSettings(format!(
                "{} is not a valid settings file: {}",
                path.display(),
                e.message()
            ))
        })
    }

    /// Applies the keys given over `settings`.
    pub fn apply(&self, settings: &mut Settings) -> Result<(), BadSettings> {
        if let Some(v) = &self.listen {
            settings.listen = v.clone();
        }
        if let Some(v) = &self.db {
            settings.db = v.parse().map_err(BadSettings)?;
        }
        if let Some(v) = self.refresh {
            settings.refresh = seconds("refresh", v)?;
        }
        if let Some(v) = self.drop_after {
            settings.drop_after = seconds("drop-after", v)?;
        }
        if let Some(v) = self.down_after {
            settings.down_after = v;
        }
        if let Some(v) = self.ping_timeout {
            settings.ping_timeout = seconds("ping-timeout", v)?;
        }
        if let Some(v) = self.ping_spacing {
            settings.ping_spacing = seconds("ping-spacing", v)?;
        }
        if let Some(v) = self.concurrency {
            settings.concurrency = v;
        }
        if let Some(v) = self.max_verifications {
            settings.max_verifications = v;
        }
        if let Some(v) = &self.trusted {
            settings.trusted = cidrs("trusted", v)?;
        }
        if let Some(v) = self.proxy_protocol {
            settings.proxy_protocol = v;
        }
        if let Some(v) = &self.proxy_trusted {
            settings.proxy_trusted = cidrs("proxy-trusted", v)?;
        }
        if let Some(v) = self.announce_rate {
            settings.announce_rate = v;
        }
        if let Some(v) = self.announce_burst {
            settings.announce_burst = v;
        }
        if let Some(v) = self.max_servers {
            settings.max_servers = v;
        }
        if let Some(v) = self.max_per_source {
            settings.max_per_source = v;
        }
        if let Some(v) = self.history {
            settings.history = v;
        }
        if let Some(v) = self.max_connections {
            settings.max_connections = v;
        }
        if let Some(v) = self.max_connections_per_source {
            settings.max_connections_per_source = v;
        }
        if let Some(v) = self.request_timeout {
            settings.request_timeout = seconds("request-timeout", v)?;
        }
        if let Some(v) = &self.master_id {
            settings.master_id = v.clone();
        }
        Ok(())
    }
}

impl Settings {
    /// Refuses settings under which the master cannot work, naming the setting.
    pub fn check(&self) -> Result<(), BadSettings> {
        let positive = [
            ("down-after", self.down_after as usize),
            ("concurrency", self.concurrency),
            ("max-verifications", self.max_verifications),
            ("announce-burst", self.announce_burst as usize),
            ("max-servers", self.max_servers),
            ("max-per-source", self.max_per_source),
            ("history", self.history),
            ("max-connections", self.max_connections),
            (
                "max-connections-per-source",
                self.max_connections_per_source,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(BadSettings(format!("{name} must be at least 1")));
            }
        }
        if !(self.announce_rate.is_finite() && self.announce_rate > 0.0) {
            return Err(BadSettings(format!(
                "announce-rate = {}: must be a positive number per minute",
                self.announce_rate
            )));
        }
        if self.history > 1000 {
            return Err(BadSettings("history must be at most 1000".into()));
        }
        if self.proxy_protocol && self.proxy_trusted.is_empty() {
            return Err(BadSettings(
                "proxy-protocol needs at least one proxy-trusted balancer address".into(),
            ));
        }
        if self.drop_after < self.refresh {
            return Err(BadSettings(format!(
                "drop-after ({} s) is shorter than refresh ({} s): a server would be dropped before its next ping",
                self.drop_after.as_secs_f64(),
                self.refresh.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// What a reload may not change (the listener, the database, the PROXY mode, the
    /// name): the keys that differ, to log that they wait for a restart.
    pub fn restart_only_changes(&self, new: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push("listen");
        }
        if self.db != new.db {
            changed.push("db");
        }
        if self.proxy_protocol != new.proxy_protocol {
            changed.push("proxy-protocol");
        }
        if self.master_id != new.master_id {
            changed.push("master-id");
        }
        if self.concurrency != new.concurrency {
            changed.push("concurrency");
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_refuses_unknown_keys() {
        let file: FileSettings = toml::from_str(
            "refresh = 2.5\ndrop-after = 30\ntrusted = [\"10.0.0.0/8\"]\ndb = \"sqlite:x.db\"\n",
        )
        .unwrap();
        let mut s = Settings::default();
        file.apply(&mut s).unwrap();
        assert_eq!(s.refresh, Duration::from_millis(2500));
        assert_eq!(s.db, Database::Sqlite("x.db".into()));
        assert_eq!(s.trusted.len(), 1);
        s.check().unwrap();
        assert!(toml::from_str::<FileSettings>("refrseh = 1").is_err());
    }

    #[test]
    fn checks_name_the_setting() {
        let s = Settings {
            drop_after: Duration::from_secs(1),
            ..Settings::default()
        };
        assert!(s.check().unwrap_err().to_string().contains("drop-after"));
    }

    #[test]
    fn redacts_password() {
        let db: Database = "postgres://u:secret@h:5432/db".parse().unwrap();
        assert_eq!(db.redacted(), "postgres://u@h:5432/db");
    }
}
