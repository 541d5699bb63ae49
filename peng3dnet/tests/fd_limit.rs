//! The open-file limit: a server raises the soft limit to the hard one and keeps its
//! connection cap below it. In a test binary of its own, since it changes the process's
//! limits.

use peng3dnet::Server;

fn limits() -> (libc::rlim_t, libc::rlim_t) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    (l.rlim_cur, l.rlim_max)
}

fn set(soft: libc::rlim_t, hard: libc::rlim_t) {
    let l = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) }, 0);
}

#[tokio::test]
async fn the_soft_limit_is_raised_and_the_connection_cap_stays_below_the_limit() {
    let (_, hard) = limits();
    if hard <= 1024 {
        return; // nothing to raise on this machine
    }
    set(1024, hard);
    let server = Server::builder().bind("127.0.0.1:0").await.unwrap();
    assert_eq!(limits(), (hard, hard), "soft limit raised to the hard one");
    assert!((server.max_connections() as libc::rlim_t) < hard);
    server.shutdown().await;

    // A hard limit of 1024: the default 16,384 connections cannot be served.
    set(1024, 1024);
    let server = Server::builder().bind("127.0.0.1:0").await.unwrap();
    assert!(
        server.max_connections() < 1024,
        "{}",
        server.max_connections()
    );
    server.shutdown().await;
}
