//! `demo`: an embedded server on loopback, pinged a few times, then shut down.

use std::time::Duration;

use peng3dnet::target::Family;
use peng3dnet::value::map;

use super::output::Out;
use super::ping::{run_targets, status, Settings};
use super::serve::{init_logging, Pingable};
use super::{error, DemoArgs, Exit};

/// `peng3dnet demo`.
pub(crate) async fn run(args: DemoArgs) -> Exit {
    init_logging("warn");
    let data = map([
        ("name", "peng3dnet demo".into()),
        ("motd", "Hello from the peng3dnet demo server!".into()),
    ]);
    let pingable = match Pingable::start(data, true, "127.0.0.1:0", None, None).await {
        Ok(p) => p,
        Err(e) => {
            error(format!("cannot start the demo server: {e}"));
            return Exit::System;
        }
    };
    let addr = pingable.server().local_addr();
    let target = addr.to_string();
    let settings = Settings {
        count: Some(args.count),
        interval: args.interval,
        timeout: Duration::from_secs(5),
        deadline: None,
        quiet: false,
        session: false,
        json: args.json,
        verbose: false,
        data: map([]),
        family: Family::Any,
        tls: None,
        list: Default::default(),
        source: None,
        max_pong_bytes: peng3dnet::ping::DEFAULT_MAX_PONG_BYTES,
    };
    let mut exit = Exit::Ok;
    if !args.json {
        let text = format!("demo server listening on {addr}\n\n$ peng3dnet status {addr}\n");
        if Out.print(&text).is_err() {
            exit = Exit::System;
        }
    }
    if exit == Exit::Ok {
        exit = exit.max(status(&target, &settings).await);
    }
    if exit == Exit::Ok && !args.json {
        let text = format!(
            "\n$ peng3dnet ping -c {} -i {} {addr}\n",
            args.count,
            args.interval.as_secs_f64()
        );
        if Out.print(&text).is_err() {
            exit = Exit::System;
        }
    }
    if exit == Exit::Ok {
        exit = match super::ping::parse_targets(vec![target]) {
            Some(targets) => exit.max(run_targets(targets, settings).await),
            None => Exit::Usage,
        };
    }
    pingable.shutdown().await;
    exit
}
