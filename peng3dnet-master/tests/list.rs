//! 200 library servers on 127.0.0.x announce over HTTP; the list shows each with its
//! pong data; 20 stop: they are marked down, then dropped, while the 180 stay up.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_announce_twenty_stop_are_marked_down_then_dropped() {
    let dir = TempDir::new("list");
    let running = peng3dnet_master::start(settings(&dir)).await.unwrap();
    let master = running.local_addr();

    let ips: Vec<IpAddr> = (0..200u32)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                1 + (i / 200) as u8,
                10 + (i % 200) as u8,
            ))
        })
        .collect();
    let servers_up = join_all(
        ips.iter()
            .enumerate()
            .map(|(i, ip)| async move { server(*ip, &format!("server-{i:03}")).await }),
    )
    .await;

    // Every announce comes from the server's own address and is verified by a ping.
    let answers = join_all(servers_up.iter().enumerate().map(|(i, s)| {
        let addr = s.local_addr();
        async move {
            let tags = if i % 2 == 0 {
                json!(["even"])
            } else {
                json!(["odd"])
            };
            (
                addr,
                announce(
                    addr.ip(),
                    master,
                    json!({ "port": addr.port(), "tags": tags }),
                )
                .await,
            )
        }
    }))
    .await;
    for (i, (addr, answer)) in answers.iter().enumerate() {
        assert_eq!(answer.status, 200, "{addr}: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["listed"], true);
        assert_eq!(body["address"], addr.to_string());
        assert_eq!(body["server"]["name"], format!("server-{i:03}"));
        assert_eq!(body["reannounce_after_s"], 1);
    }

    // The list shows all 200 with their pong data.
    let list = until(Duration::from_secs(10), "200 servers listed", || async {
        let list = servers(master).await;
        (list.len() == 200).then_some(list)
    })
    .await;
    for (i, s) in servers_up.iter().enumerate() {
        let addr = s.local_addr().to_string();
        let entry = list.iter().find(|e| e["address"] == addr.as_str()).unwrap();
        assert_eq!(entry["name"], format!("server-{i:03}"));
        assert_eq!(entry["motd"], format!("motd of server-{i:03}"));
        assert_eq!(entry["max_clients"], 10);
        assert_eq!(entry["clients"], 3);
        assert_eq!(entry["version"], "test-1");
        assert_eq!(entry["data"]["name"], format!("server-{i:03}"));
        assert_eq!(entry["up"], true);
        assert!(entry["latency_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(entry["host"], s.local_addr().ip().to_string());
        assert_eq!(entry["port"], s.local_addr().port());
    }
    let even = get(master, "/servers?tag=even&limit=10000").await.json();
    assert_eq!(even["total"], 100);

    // The refresh pings them: each history grows past the announce's entry.
    until(
        Duration::from_secs(10),
        "every server refreshed at least once",
        || async {
            let list = servers(master).await;
            list.iter()
                .all(|e| e["history"].as_array().unwrap().len() >= 2)
                .then_some(())
        },
    )
    .await;

    // Stop 20: marked down (still listed), then dropped.
    let stopped: Vec<String> = servers_up[..20]
        .iter()
        .map(|s| s.local_addr().to_string())
        .collect();
    for s in &servers_up[..20] {
        s.shutdown().await;
    }
    until(Duration::from_secs(10), "the 20 marked down", || async {
        let list = servers(master).await;
        let down: Vec<&serde_json::Value> = list.iter().filter(|e| e["up"] == false).collect();
        let ok = list.len() == 200
            && down.len() == 20
            && down
                .iter()
                .all(|e| stopped.contains(&e["address"].as_str().unwrap().to_owned()))
            && down.iter().all(|e| e["failures"].as_i64().unwrap() >= 2);
        ok.then_some(())
    })
    .await;
    let list = until(Duration::from_secs(15), "the 20 dropped", || async {
        let list = servers(master).await;
        (list.len() == 180).then_some(list)
    })
    .await;
    assert!(list.iter().all(|e| e["up"] == true));
    assert!(list
        .iter()
        .all(|e| !stopped.contains(&e["address"].as_str().unwrap().to_owned())));

    let text = get(master, "/servers.txt").await;
    assert_eq!(text.status, 200);
    assert_eq!(text.text().lines().count(), 180);

    let metrics = get(master, "/metrics").await.text();
    assert!(
        metrics.contains(
            r#"peng3dnet_master_announces_total{method="post",result="accepted",reason="ok"} 200"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("peng3dnet_master_servers_listed 180"),
        "{metrics}"
    );
    assert!(
        metrics.contains("peng3dnet_master_dropped_total 20"),
        "{metrics}"
    );

    running.shutdown().await;
    for s in &servers_up[20..] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_is_one_self_contained_file_and_304s_follow_the_etag() {
    let dir = TempDir::new("page");
    let running = peng3dnet_master::start(settings(&dir)).await.unwrap();
    let master = running.local_addr();
    let page = get(master, "/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    // No external resource: no URL, no src/href to another file.
    for needle in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(needle),
            "the page refers to something outside: {needle}"
        );
    }
    assert!(html.contains("<meta name=\"viewport\""));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));

    // The list's ETag: the same list gives 304, a change gives a new tag.
    let first = get(master, "/servers").await;
    let tag = first.header("etag").unwrap().to_owned();
    let again = request(
        ip("127.0.0.1"),
        master,
        "GET",
        "/servers",
        &[("If-None-Match", &tag)],
        b"",
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let s = server(ip("127.0.8.1"), "tagged").await;
    let a = announce(
        s.local_addr().ip(),
        master,
        json!({ "port": s.local_addr().port() }),
    )
    .await;
    assert_eq!(a.status, 200);
    let changed = request(
        ip("127.0.0.1"),
        master,
        "GET",
        "/servers",
        &[("If-None-Match", &tag)],
        b"",
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag").unwrap(), tag);
    running.shutdown().await;
    s.shutdown().await;
}
