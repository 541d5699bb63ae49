//! Two masters on one PostgreSQL database: both migrate at once, each lists what the
//! other was announced, the refresh is split between them, and when one dies the other
//! pings every server within one interval.
//!
//! The database comes from PENG3DNET_TEST_POSTGRES (a URL; `.ci/run` provides one). Each
//! run works in a schema of its own, dropped at the end. Without the variable the test is
//! skipped with a message, except under CI=true, where it fails.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use peng3dnet_master::clock::{now_ms, rfc3339};
use peng3dnet_master::settings::Settings;
use serde_json::json;
use support::*;

fn database() -> Option<String> {
    match std::env::var("PENG3DNET_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PENG3DNET_TEST_POSTGRES is not set (CI=true): .ci/run must provide a PostgreSQL URL"
            );
            eprintln!("skipped: set PENG3DNET_TEST_POSTGRES=postgres://USER@HOST/DB to run");
            None
        }
    }
}

/// A schema of this run's own, dropped on drop.
struct Schema {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl Schema {
    async fn new(base: &str) -> Schema {
        let (admin, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to PENG3DNET_TEST_POSTGRES: {e}"));
        tokio::spawn(connection);
        let name = format!("master_test_{}_{}", std::process::id(), now_ms());
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Schema { admin, name, url }
    }

    async fn drop_it(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}

/// Milliseconds since midnight of `2026-12-07T13:00:35.612Z`.
fn ms_of_day(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    ((n(11..13) * 60 + n(14..16)) * 60 + n(17..19)) * 1000 + n(20..23)
}

fn refresh_ok(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(r#"peng3dnet_master_pings_total{kind="refresh",result="ok"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_split_the_refresh_and_one_takes_over_when_the_other_dies() {
    let Some(base) = database() else { return };
    let schema = Schema::new(&base).await;
    let dir = TempDir::new("pg");
    let refresh = Duration::from_secs(1);
    let on_pg = |id: &str| Settings {
        db: schema.url.parse().unwrap(),
        refresh,
        drop_after: Duration::from_secs(30),
        master_id: id.into(),
        ..settings(&dir)
    };
    // Both start (and migrate) at once on the empty schema.
    let (a, b) = tokio::join!(
        peng3dnet_master::start(on_pg("a")),
        peng3dnet_master::start(on_pg("b"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.master().store().schema_version().await.unwrap(),
        peng3dnet_master::store::MIGRATIONS.last().unwrap().0
    );
    let (addr_a, addr_b) = (a.local_addr(), b.local_addr());

    // 40 servers, half announced to each master.
    let fleet = join_all((0..40u8).map(|i| async move {
        server(ip(&format!("127.0.7.{}", 10 + i)), &format!("pg-{i}")).await
    }))
    .await;
    for (i, s) in fleet.iter().enumerate() {
        let to = if i % 2 == 0 { addr_a } else { addr_b };
        let addr = s.local_addr();
        let a = announce(addr.ip(), to, json!({ "port": addr.port() })).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    // Each master lists all 40, those announced to the other too.
    for m in [addr_a, addr_b] {
        until(
            Duration::from_secs(10),
            "both masters list all 40",
            || async { (servers(m).await.len() == 40).then_some(()) },
        )
        .await;
    }

    // The refresh is split: after a few intervals each master has done a fair share.
    let (ok_a, ok_b) = until(
        Duration::from_secs(20),
        "each master refreshes about half",
        || async {
            let ok_a = refresh_ok(&get(addr_a, "/metrics").await.text());
            let ok_b = refresh_ok(&get(addr_b, "/metrics").await.text());
            (ok_a + ok_b >= 160).then_some((ok_a, ok_b))
        },
    )
    .await;
    let share = ok_a as f64 / (ok_a + ok_b) as f64;
    eprintln!("refresh pings: a {ok_a}, b {ok_b}");
    assert!((0.25..=0.75).contains(&share), "a did {ok_a}, b did {ok_b}");
    // One master per server per interval: consecutive pings of a server are most of an
    // interval apart (two masters pinging it in one interval would make a short gap).
    for s in servers(addr_b).await {
        let history = s["history"].as_array().unwrap();
        assert!(history.len() >= 3, "{s}");
        let times: Vec<i64> = history
            .iter()
            .map(|h| ms_of_day(h["at"].as_str().unwrap()))
            .collect();
        for pair in times.windows(2) {
            let gap = (pair[0] - pair[1]).rem_euclid(86_400_000);
            assert!(gap >= 600, "pinged twice within {gap} ms: {s}");
        }
    }

    // a dies without a word; b takes every server over within one interval.
    a.kill();
    let killed = rfc3339(now_ms());
    let started = std::time::Instant::now();
    until(
        refresh + Duration::from_secs(2),
        "b pings every server after a died",
        || async {
            let list = servers(addr_b).await;
            (list.len() == 40
                && list
                    .iter()
                    .all(|s| s["last_ping"].as_str().unwrap() > killed.as_str() && s["up"] == true))
            .then_some(())
        },
    )
    .await;
    eprintln!("b had pinged all 40 {:?} after a died", started.elapsed());

    b.shutdown().await;
    for s in fleet {
        s.shutdown().await;
    }
    schema.drop_it().await;
}
