//! Servers running on the thread of a tokio `current_thread` runtime, so that the
//! blocking client can refuse to ping one of them from that same thread.
//!
//! Such a runtime runs all its tasks on the one thread that drives it. A blocking ping
//! from that thread holds it for the whole call, so the server cannot accept, let alone
//! say hello: the ping ran to its timeout and then blamed the server ("may use TLS, not
//! be a peng3dnet server, or be overloaded"). Each server bound on a `current_thread`
//! runtime records its address and thread here; a blocking ping of that address from that
//! thread is refused at once with
//! [`ConnectionError::BlockingOnCurrentThreadRuntime`](crate::ConnectionError).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::thread::ThreadId;

/// The servers bound on `current_thread` runtimes, with the thread that drives each.
static SERVERS: Mutex<Vec<(SocketAddr, ThreadId)>> = Mutex::new(Vec::new());

/// A server's entry; removed when dropped (with the server's shared state).
#[derive(Debug)]
pub(crate) struct Registration {
    addr: SocketAddr,
    thread: ThreadId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = servers
            .iter()
            .position(|&(a, t)| a == self.addr && t == self.thread)
        {
            servers.swap_remove(i);
        }
    }
}

/// Records a server listening on `addr`, if it is being bound on a `current_thread`
/// runtime (whose tasks all run on this thread).
pub(crate) fn register(addr: SocketAddr) -> Option<Registration> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return None;
    }
    let thread = std::thread::current().id();
    SERVERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((addr, thread));
    Some(Registration { addr, thread })
}

/// Whether one of `targets` is served by a server whose runtime this thread drives.
pub(crate) fn served_here(targets: &[SocketAddr]) -> bool {
    let thread = std::thread::current().id();
    let servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    servers
        .iter()
        .filter(|&&(_, t)| t == thread)
        .any(|&(server, _)| targets.iter().any(|&target| reaches(target, server)))
}

/// Whether connecting to `target` reaches a server listening on `server`.
fn reaches(target: SocketAddr, server: SocketAddr) -> bool {
    target.port() == server.port()
        && (server.ip().is_unspecified()
            || server.ip() == target.ip()
            || (server.ip().is_loopback() && target.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_or_loopback_listener_is_reached_by_its_port() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(reaches(a("127.0.0.1:9"), a("0.0.0.0:9")));
        assert!(reaches(a("127.0.0.2:9"), a("127.0.0.1:9")));
        assert!(reaches(a("192.0.2.1:9"), a("192.0.2.1:9")));
        assert!(!reaches(a("127.0.0.1:9"), a("127.0.0.1:10")));
        assert!(!reaches(a("192.0.2.2:9"), a("192.0.2.1:9")));
    }

    #[test]
    fn only_the_thread_that_bound_a_server_sees_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let registration = rt.block_on(async { register(addr) });
        assert!(registration.is_some());
        assert!(served_here(&[addr]));
        assert!(!std::thread::spawn(move || served_here(&[addr]))
            .join()
            .unwrap());
        drop(registration);
        assert!(!served_here(&[addr]));
    }
}
