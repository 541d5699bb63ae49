//! Master servers in the CLI: `--master URL` and its filters for `ping`, `status` and
//! `watch` (the list is fetched, then every server is pinged from here, through the
//! commands' usual output), and `serve --announce URL` (the settings; `serve` starts the
//! announcers).

// The argument structs' doc comments are clap's --help text, with URLs as a user types
// them, not rustdoc links.
#![allow(rustdoc::bare_urls)]

use std::time::Duration;

use clap::Args;
use peng3dnet::master::{self, AnnounceOptions, Announcer, FetchOptions, MasterError, Query};
use peng3dnet::target::Target;

use crate::{error, Exit};

/// `--master URL` and the filters of its list, for `ping`, `status` and `watch`.
#[derive(Debug, Args, Clone, Default)]
pub struct MasterArgs {
    /// Ping the servers a master server lists (http:// or https://, e.g.
    /// http://master.example.org:8090): its list is fetched, then every server is pinged
    /// from this machine, so the latencies are yours. Adds to the other targets.
    #[arg(long = "master", value_name = "URL")]
    pub master: Option<String>,
    /// With --master: only servers with this tag (repeatable: all must match).
    #[arg(long = "tag", value_name = "TAG", requires = "master")]
    pub tags: Vec<String>,
    /// With --master: only servers whose name contains TEXT (case-insensitive).
    #[arg(long = "name", value_name = "TEXT", requires = "master")]
    pub name: Option<String>,
    /// With --master: only servers with a free slot (clients below their maximum).
    #[arg(long = "free", requires = "master")]
    pub free: bool,
    /// With --master: only servers the master saw up (not marked down).
    #[arg(long = "up", requires = "master")]
    pub up: bool,
}

impl MasterArgs {
    /// The master's query these filters make.
    pub fn query(&self) -> Query {
        Query {
            tags: self.tags.clone(),
            name: self.name.clone(),
            free: self.free,
            up: self.up,
            ..Query::default()
        }
    }

    /// Whether any filter is set.
    fn filtered(&self) -> bool {
        !self.tags.is_empty() || self.name.is_some() || self.free || self.up
    }
}

/// The exit status for a master that could not be read: 3 for a URL or filter that can
/// never work, 1 (as a target that did not answer) for the rest.
fn exit_for(e: &MasterError) -> Exit {
    if e.is_permanent() {
        Exit::Usage
    } else {
        Exit::NoAnswer
    }
}

/// With `--master`, appends the addresses the master lists to `targets` (printing what
/// went wrong and returning the exit status when the list cannot be had or is empty).
/// An address the master lists that is not a `host:port` is skipped with a warning: one
/// bad entry does not cost the others.
pub(crate) async fn add_listed(targets: &mut Vec<String>, args: &MasterArgs) -> Result<(), Exit> {
    let Some(url) = &args.master else {
        return Ok(());
    };
    let fetched = tokio::select! {
        fetched = listed_addresses(url, args) => fetched,
        _ = crate::interrupted() => return Err(Exit::NoAnswer),
    };
    let (listed, bad) = match fetched {
        Ok(listed) => listed,
        Err(e) => {
            error(&e);
            return Err(exit_for(&e));
        }
    };
    for e in bad {
        error(format!("the master listed a bad address, skipped: {e}"));
    }
    let added = listed.len();
    targets.extend(listed);
    if added == 0 {
        error(format!(
            "the master at {url} lists no servers{}",
            if args.filtered() {
                " matching the filters"
            } else {
                ""
            }
        ));
        return Err(Exit::NoAnswer);
    }
    Ok(())
}

/// The addresses the master at `url` lists under the filters of `args`, and the errors
/// of those that are not `host:port`.
async fn listed_addresses(
    url: &str,
    args: &MasterArgs,
) -> Result<(Vec<String>, Vec<String>), MasterError> {
    let options = FetchOptions {
        timeout: Duration::from_secs(10),
        ..FetchOptions::default()
    };
    let listed = master::fetch_with(url, &args.query(), &options).await?;
    let mut good = Vec::with_capacity(listed.len());
    let mut bad = Vec::new();
    for server in listed {
        match Target::parse_default(&server.address) {
            Ok(_) => good.push(server.address),
            Err(e) => bad.push(e.to_string()),
        }
    }
    Ok((good, bad))
}

/// `watch --master`: reads the master's list again every `every` and sends its addresses
/// (a failed read is skipped: the servers already shown stay). Ends when `out` closes.
pub(crate) async fn refresh_listing(
    args: MasterArgs,
    every: Duration,
    out: tokio::sync::mpsc::Sender<Vec<String>>,
) {
    let Some(url) = args.master.clone() else {
        return;
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Ok((listed, _)) = listed_addresses(&url, &args).await {
            if out.send(listed).await.is_err() {
                return;
            }
        }
    }
}

/// `serve --announce URL` and its companions (also keys of `serve --config`).
#[derive(Debug, Args, Clone, Default)]
pub struct AnnounceArgs {
    /// List this server on the master server at URL (http:// or https://): announce at
    /// start, again as often as the master asks, and leave it at shutdown. The master
    /// pings the address the announce comes from before listing it.
    #[arg(long = "announce", value_name = "URL", value_parser = parse_master_url)]
    pub announce: Option<String>,
    /// With --announce: a tag to be listed with (repeatable; at most 16, each 1 to 32 of
    /// A-Z a-z 0-9 _ . -).
    #[arg(long = "announce-tag", value_name = "TAG", value_parser = parse_tag)]
    pub announce_tags: Vec<String>,
    /// With --announce: the host to list instead of the address the announce comes from
    /// (masters honour it only from announcers they trust).
    #[arg(long = "announce-host", value_name = "HOST")]
    pub announce_host: Option<String>,
}

/// `serve`: one announcer per bound server when the settings name a master (errors are
/// the announcers' to log and retry; the settings were checked at start).
pub(crate) fn start_announcers(
    settings: &crate::config_file::Settings,
    servers: &[peng3dnet::Server],
) -> Vec<Announcer> {
    let Some(url) = &settings.announce else {
        return Vec::new();
    };
    let options = AnnounceOptions {
        tags: settings.announce_tags.clone(),
        host: settings.announce_host.clone(),
        ..AnnounceOptions::default()
    };
    servers
        .iter()
        .filter_map(|server| {
            tracing::info!(master = %url, addr = %server.local_addr(), "announcing to the master");
            match server.announce_with(url, options.clone()) {
                Ok(announcer) => Some(announcer),
                Err(e) => {
                    tracing::error!(master = %url, "cannot announce: {e}");
                    None
                }
            }
        })
        .collect()
}

/// `serve` at shutdown: every announcer unlists its server (at once, each within a few
/// seconds).
pub(crate) async fn stop_announcers(announcers: Vec<Announcer>) {
    futures_util::future::join_all(announcers.into_iter().map(Announcer::stop)).await;
}

/// Parses a master's URL (checked, not contacted).
pub fn parse_master_url(s: &str) -> Result<String, String> {
    master::check_url(s)
        .map(|()| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// Parses an announce tag.
pub fn parse_tag(s: &str) -> Result<String, String> {
    check_tags(std::slice::from_ref(&s.to_owned()))?;
    Ok(s.to_owned())
}

/// Checks tags as a master would (their number and form).
pub fn check_tags(tags: &[String]) -> Result<(), String> {
    master::Announcement {
        port: 1,
        host: None,
        tags: tags.to_vec(),
    }
    .check()
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_make_the_query() {
        let args = MasterArgs {
            master: Some("http://m".into()),
            tags: vec!["eu".into(), "pvp".into()],
            name: Some("lob by".into()),
            free: true,
            up: true,
        };
        assert_eq!(
            args.query().to_query_string(),
            "tag=eu&tag=pvp&name=lob%20by&free=1&up=1"
        );
        assert!(args.filtered());
        assert!(!MasterArgs::default().filtered());
    }

    #[test]
    fn announce_settings_are_checked() {
        assert!(parse_master_url("http://127.0.0.1:8090").is_ok());
        assert!(parse_master_url("127.0.0.1:8090")
            .unwrap_err()
            .contains("no scheme"));
        assert!(parse_tag("eu-west.1").is_ok());
        assert!(parse_tag("two words").is_err());
        assert!(parse_tag("").is_err());
        let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        assert!(check_tags(&many).unwrap_err().contains("at most 16"));
    }
}
