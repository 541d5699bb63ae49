//! Connecting to a target with several addresses, as RFC 8305 ("Happy Eyeballs v2")
//! describes: the addresses are interleaved by family (the resolver's first family first),
//! and the next attempt starts when the previous one fails or after the connection attempt
//! delay (250 ms), whichever comes first, so a name that resolves to `::1` first while the
//! server listens on 127.0.0.1 only still connects, without waiting for a time-out.
//!
//! Every connect of the library goes through here (the tokio client, [`crate::ping`], and,
//! with threads, [`crate::blocking`]). The first connection to complete wins; the others
//! are dropped. When every address fails, the error names each address with its last
//! error ([`ConnectionError::ConnectEach`]; a single address keeps
//! [`ConnectionError::Connect`]).
//!
//! A local shortage of resources (too many open files, no buffer space) is not the
//! target's fault: such an attempt is retried after a short pause until the deadline, and
//! if the deadline comes first the error is the shortage, which
//! [`ConnectionError::is_local_exhaustion`] recognises, not a time-out.
//!
//! ```no_run
//! # async fn f() -> Result<(), peng3dnet::ConnectionError> {
//! use std::time::Duration;
//! use peng3dnet::happy_eyeballs;
//!
//! let addrs = ["[::1]:8080".parse().unwrap(), "127.0.0.1:8080".parse().unwrap()];
//! let stream = happy_eyeballs::connect(&addrs, Duration::from_secs(5)).await?;
//! println!("connected to {}", stream.peer_addr()?);
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at, Instant};

use super::connect::is_local_exhaustion;
use crate::error::{ConnectionError, Phase};

/// RFC 8305's recommended connection attempt delay: how long an attempt runs alone before
/// the next address is tried too.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Longest pause between retries of an attempt that failed for lack of local resources.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// The addresses in the order they are tried: families interleaved, starting with the
/// family of the first address (RFC 8305, section 4, "First Address Family Count" 1),
/// each family in resolver order. Duplicates are dropped.
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use peng3dnet::happy_eyeballs::interleave;
///
/// let a: Vec<SocketAddr> = ["[::1]:1", "[::2]:1", "127.0.0.1:1", "127.0.0.2:1"]
///     .iter().map(|s| s.parse().unwrap()).collect();
/// let order: Vec<String> = interleave(&a).iter().map(|a| a.to_string()).collect();
/// assert_eq!(order, ["[::1]:1", "127.0.0.1:1", "[::2]:1", "127.0.0.2:1"]);
/// ```
pub fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut unique: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !unique.contains(a) {
            unique.push(*a);
        }
    }
    let Some(first) = unique.first() else {
        return unique;
    };
    let first_v6 = first.is_ipv6();
    let (mut preferred, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        unique.iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(unique.len());
    preferred.reverse();
    other.reverse();
    loop {
        match (preferred.pop(), other.pop()) {
            (None, None) => return out,
            (p, o) => out.extend(p.into_iter().chain(o)),
        }
    }
}

/// Connects to the first of `addrs` that accepts within `timeout`, as RFC 8305 describes
/// (see the [module](self) documentation).
pub async fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream, ConnectionError> {
    connect_by(addrs, None, crate::deadline::after(timeout))
        .await
        .map(|(stream, _)| stream)
}

/// [`connect`] with a deadline instead of a time allowance, from the local address
/// `local` if given (`ping --source`); also returns the address that accepted.
pub(crate) async fn connect_by(
    addrs: &[SocketAddr],
    local: Option<IpAddr>,
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), ConnectionError> {
    connect_with_delay(addrs, local, deadline, CONNECTION_ATTEMPT_DELAY).await
}

/// [`connect_by`] with a chosen connection attempt delay.
pub(crate) async fn connect_with_delay(
    addrs: &[SocketAddr],
    local: Option<IpAddr>,
    deadline: Instant,
    delay: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectionError> {
    let started = Instant::now();
    if let [addr] = addrs {
        // One address (a literal, or a name with one): no race to run, so one timer and
        // no set of attempts; the same errors as below.
        return match timeout_at(deadline, attempt(*addr, local, deadline)).await {
            Ok((addr, Ok(stream))) => Ok((stream, addr)),
            Ok((addr, Err(source))) => Err(ConnectionError::Connect { addr, source }),
            Err(_) => Err(ConnectionError::Timeout {
                phase: Phase::Connecting,
                after: started.elapsed(),
                target: None,
            }),
        };
    }
    let order = interleave(addrs);
    let mut next = 0;
    let mut attempts = FuturesUnordered::new();
    let mut failures: Vec<(SocketAddr, io::Error)> = Vec::new();
    let mut next_start = started;
    loop {
        if next < order.len() && (attempts.is_empty() || Instant::now() >= next_start) {
            let addr = order[next];
            next += 1;
            attempts.push(attempt(addr, local, deadline));
            next_start = Instant::now() + delay;
        }
        if attempts.is_empty() {
            break;
        }
        let more = next < order.len();
        tokio::select! {
            Some((addr, result)) = attempts.next() => match result {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => {
                    failures.push((addr, e));
                    // The next address starts at once (RFC 8305, section 5).
                    next_start = Instant::now();
                }
            },
            _ = sleep_until(next_start), if more => {}
            _ = sleep_until(deadline) => {
                // A shortage of local resources is reported as such, not as the target's
                // time-out.
                return Err(match failures.pop() {
                    Some((addr, source)) if is_local_exhaustion(&source) => {
                        ConnectionError::Connect { addr, source }
                    }
                    _ => ConnectionError::Timeout {
                        phase: Phase::Connecting,
                        after: started.elapsed(),
                        target: None,
                    },
                });
            }
        }
    }
    Err(failed(failures))
}

/// The error for attempts that all failed: [`ConnectionError::Connect`] for one address,
/// [`ConnectionError::ConnectEach`] for several.
pub(crate) fn failed(mut failures: Vec<(SocketAddr, io::Error)>) -> ConnectionError {
    match failures.len() {
        0 => ConnectionError::State("no address to connect to"),
        1 => {
            let (addr, source) = failures.remove(0);
            ConnectionError::Connect { addr, source }
        }
        _ => ConnectionError::ConnectEach(failures),
    }
}

/// One address: connects, retrying while the machine is short of resources, until
/// `deadline` (the caller stops waiting then).
pub(crate) async fn attempt(
    addr: SocketAddr,
    local: Option<IpAddr>,
    deadline: Instant,
) -> (SocketAddr, io::Result<TcpStream>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match super::connect::connect_from(addr, local).await {
            Err(e) if is_local_exhaustion(&e) && Instant::now() + backoff < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            result => return (addr, result),
        }
    }
}

/// The blocking client's connect ([`crate::blocking`]): the same order and delays, each
/// attempt on its own thread, before `deadline`.
pub(crate) fn connect_blocking(
    addrs: &[SocketAddr],
    local: Option<IpAddr>,
    deadline: std::time::Instant,
    allowance: Duration,
) -> Result<std::net::TcpStream, ConnectionError> {
    use std::sync::mpsc;
    let order = interleave(addrs);
    if let [addr] = order[..] {
        // One address: no race to run, so no thread.
        return connect_one_blocking(addr, local, deadline, allowance);
    }
    let (tx, rx) = mpsc::channel();
    let mut next = 0;
    let mut running = 0;
    let mut failures = Vec::new();
    let timeout = || ConnectionError::Timeout {
        phase: Phase::Connecting,
        after: allowance,
        target: None,
    };
    loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(timeout());
        }
        if next < order.len() {
            let addr = order[next];
            next += 1;
            running += 1;
            let tx = tx.clone();
            let left = deadline - now;
            std::thread::spawn(move || {
                let mut backoff = Duration::from_millis(5);
                let result = loop {
                    match super::connect::connect_from_blocking(addr, local, left) {
                        Err(e)
                            if is_local_exhaustion(&e)
                                && std::time::Instant::now() + backoff < deadline =>
                        {
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        result => break result,
                    }
                };
                // The receiver is gone once another attempt won: the stream is dropped.
                let _ = tx.send((addr, result));
            });
        } else if running == 0 {
            return Err(failed(failures));
        }
        let wait = if next < order.len() {
            CONNECTION_ATTEMPT_DELAY
        } else {
            deadline.saturating_duration_since(std::time::Instant::now())
        };
        match rx.recv_timeout(wait) {
            Ok((_, Ok(stream))) => return Ok(stream),
            Ok((_, Err(e))) if e.kind() == io::ErrorKind::TimedOut => {
                running -= 1;
                if running == 0 && next >= order.len() {
                    return Err(timeout());
                }
            }
            Ok((addr, Err(e))) => {
                running -= 1;
                failures.push((addr, e));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(failed(failures)),
        }
    }
}

/// One address, on the calling thread, retrying while short of local resources.
fn connect_one_blocking(
    addr: SocketAddr,
    local: Option<IpAddr>,
    deadline: std::time::Instant,
    allowance: Duration,
) -> Result<std::net::TcpStream, ConnectionError> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(ConnectionError::Timeout {
                phase: Phase::Connecting,
                after: allowance,
                target: None,
            });
        }
        match super::connect::connect_from_blocking(addr, local, left) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(ConnectionError::Timeout {
                    phase: Phase::Connecting,
                    after: allowance,
                    target: None,
                })
            }
            Err(e) if is_local_exhaustion(&e) && std::time::Instant::now() + backoff < deadline => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(source) => return Err(ConnectionError::Connect { addr, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn interleaves_families_starting_with_the_first() {
        let order = interleave(&addrs(&[
            "127.0.0.1:1",
            "127.0.0.2:1",
            "127.0.0.3:1",
            "[::1]:1",
            "127.0.0.1:1",
        ]));
        assert_eq!(
            order,
            addrs(&["127.0.0.1:1", "[::1]:1", "127.0.0.2:1", "127.0.0.3:1"])
        );
        assert!(interleave(&[]).is_empty());
    }

    #[test]
    fn blocking_connect_falls_back_and_reports_each_failure() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = live.local_addr().unwrap().port();
        let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let stream = connect_blocking(
            &[v6, live.local_addr().unwrap()],
            None,
            deadline,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live.local_addr().unwrap());
        drop(live);
        let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        match connect_blocking(&[v6, v4], None, deadline, Duration::ZERO) {
            Err(ConnectionError::ConnectEach(failures)) => {
                assert_eq!(failures.len(), 2);
                assert!(failures
                    .iter()
                    .all(|(_, e)| e.kind() == io::ErrorKind::ConnectionRefused));
            }
            Err(e) => panic!("expected ConnectEach, got {e}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
