//! The ping connection type, server side: building the pong.
//!
//! The pong is a map merged from these sources, each later one overwriting the keys of the
//! earlier ones (PROTOCOL.md, "Ping connection", step 3):
//! 1. `{"oldmsg": <the ping as received>}` when write-back is on;
//! 2. the dynamic data ([`PingResponder::with_dynamic`]);
//! 3. the static data ([`PingResponder::with_static_data`]);
//! 4. `{"peng3dnet": {"version", "release", "protoversion"}}`;
//! 5. ours: `{"servertiming": {"recvtime", "sendtime"}}`, the server's clock when the ping
//!    arrived and when the pong left, so a client can subtract the server's processing
//!    time. Python clients ignore keys they do not know.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::protocol::{PROTOVERSION, RELEASE, VERSION};
use crate::server::ClientId;
use crate::value::{self, get, insert, map, update, Value};

/// Key of the server's timestamps in a pong.
pub const SERVER_TIMING_KEY: &str = "servertiming";

/// One ping as the server sees it, given to the dynamic data provider.
#[derive(Debug, Clone, Copy)]
pub struct PingRequest<'a> {
    /// The ping map exactly as the client sent it.
    pub message: &'a Value,
    /// The id the server gave this connection.
    pub client_id: ClientId,
    /// The client's address.
    pub peer_addr: SocketAddr,
}

type DynamicData = dyn Fn(&PingRequest<'_>) -> Value + Send + Sync;

/// Answers pings: what a pingable server tells the world about itself.
///
/// The seed's `PingableServerMixin` (its `pingdata` and `getPingData`) and the module's
/// `WRITEBACK` switch, as one value that a server holds and that may be changed while the
/// server runs (it is cheap to clone; clones share the data).
///
/// ```
/// use peng3dnet::conntype::ping::PingResponder;
/// use peng3dnet::value::{get, map};
///
/// let responder = PingResponder::new()
///     .with_static_data(map([("name", "my server".into()), ("motd", "hello".into())]))
///     .with_dynamic(|req| map([("you_sent", req.message.clone())]));
/// responder.set_static_data(map([("name", "renamed".into())]));
/// assert_eq!(get(&responder.static_data(), "name").unwrap().as_str(), Some("renamed"));
/// ```
#[derive(Clone)]
pub struct PingResponder {
    inner: Arc<Inner>,
}

struct Inner {
    /// Static data (the seed's `pingdata`), replaceable at run time.
    static_data: RwLock<Value>,
    /// Dynamic data (the seed's `getPingData`).
    dynamic: Option<Box<DynamicData>>,
    /// Echo the ping under `oldmsg` (the seed's `WRITEBACK`).
    writeback: bool,
}

impl std::fmt::Debug for PingResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingResponder")
            .field("static_data", &self.static_data())
            .field("dynamic", &self.inner.dynamic.is_some())
            .field("writeback", &self.inner.writeback)
            .finish()
    }
}

impl Default for PingResponder {
    fn default() -> Self {
        Self::new()
    }
}

impl PingResponder {
    /// A responder with no data of its own and write-back on.
    pub fn new() -> Self {
        PingResponder {
            inner: Arc::new(Inner {
                static_data: RwLock::new(map([])),
                dynamic: None,
                writeback: true,
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                static_data: RwLock::new(read(&shared.static_data)),
                dynamic: None,
                writeback: shared.writeback,
            },
        };
        f(&mut inner);
        PingResponder {
            inner: Arc::new(inner),
        }
    }

    /// Sets the static data (a map: name, message of the day and the like).
    pub fn with_static_data(self, data: Value) -> Self {
        self.rebuild(|i| i.static_data = RwLock::new(data))
    }

    /// Sets the dynamic data provider, called for every ping with the ping message, the
    /// client's id and address. It returns a map (user count and the like); it runs on the
    /// connection's task, so it should be quick.
    pub fn with_dynamic(
        self,
        provider: impl Fn(&PingRequest<'_>) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.rebuild(|i| i.dynamic = Some(Box::new(provider)))
    }

    /// Turns write-back (echoing the ping under `oldmsg`) on or off. On by default.
    pub fn with_writeback(self, on: bool) -> Self {
        self.rebuild(|i| i.writeback = on)
    }

    /// Replaces the static data; later pongs carry the new data.
    pub fn set_static_data(&self, data: Value) {
        *self
            .inner
            .static_data
            .write()
            .unwrap_or_else(|e| e.into_inner()) = data;
    }

    /// A copy of the current static data.
    pub fn static_data(&self) -> Value {
        read(&self.inner.static_data)
    }

    /// Whether write-back is on.
    pub fn writeback(&self) -> bool {
        self.inner.writeback
    }

    /// Builds the pong for one ping.
    ///
    /// `ping_len` is the ping's encoded size: a ping larger than `max_echo_bytes` is
    /// echoed with its `time` key only, so clients can still time it but a client cannot
    /// make the server send back megabytes.
    pub fn respond(
        &self,
        request: &PingRequest<'_>,
        ping_len: usize,
        max_echo_bytes: usize,
        received_at: SystemTime,
    ) -> Value {
        let mut pong = map([]);
        if self.inner.writeback {
            let echo = if ping_len <= max_echo_bytes {
                request.message.clone()
            } else {
                map(get(request.message, "time").map(|t| ("time", t.clone())))
            };
            insert(&mut pong, "oldmsg", echo);
        }
        if let Some(dynamic) = &self.inner.dynamic {
            update(&mut pong, &dynamic(request));
        }
        update(
            &mut pong,
            &self
                .inner
                .static_data
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        );
        insert(&mut pong, "peng3dnet", version_block());
        insert(
            &mut pong,
            SERVER_TIMING_KEY,
            map([
                ("recvtime", unix_seconds(received_at).into()),
                ("sendtime", unix_seconds(SystemTime::now()).into()),
            ]),
        );
        pong
    }
}

fn read(lock: &RwLock<Value>) -> Value {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The `peng3dnet` block every pong carries.
pub fn version_block() -> Value {
    map([
        ("version", VERSION.into()),
        ("release", RELEASE.into()),
        ("protoversion", PROTOVERSION.into()),
    ])
}

/// A wall-clock time as Unix seconds, as the protocol's `time` keys carry it.
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Encoded size of a value (used for the echo cap when the size is not known already).
pub fn encoded_len(v: &Value) -> usize {
    value::encode(v).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(msg: &Value) -> PingRequest<'_> {
        PingRequest {
            message: msg,
            client_id: ClientId(7),
            peer_addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect()
    }

    #[test]
    fn merge_order_is_oldmsg_dynamic_static_version() {
        let r = PingResponder::new()
            .with_dynamic(|req| {
                map([
                    ("oldmsg", "dyn".into()),
                    ("clients", req.client_id.0.into()),
                    ("name", "dyn".into()),
                ])
            })
            .with_static_data(map([
                ("name", "static".into()),
                ("peng3dnet", "static".into()),
            ]));
        let ping = map([("time", Value::F64(1.5)), ("x", 1.into())]);
        let pong = r.respond(&request(&ping), 20, 1000, SystemTime::now());
        assert_eq!(
            keys(&pong),
            ["oldmsg", "clients", "name", "peng3dnet", "servertiming"]
        );
        assert_eq!(
            get(&pong, "oldmsg"),
            Some(&Value::from("dyn")),
            "dynamic overwrites oldmsg"
        );
        assert_eq!(get(&pong, "clients"), Some(&Value::from(7)));
        assert_eq!(
            get(&pong, "name"),
            Some(&Value::from("static")),
            "static overwrites dynamic"
        );
        assert_eq!(
            get(&pong, "peng3dnet"),
            Some(&version_block()),
            "version block overwrites static"
        );
        let timing = get(&pong, SERVER_TIMING_KEY).unwrap();
        let recv = get(timing, "recvtime").unwrap().as_f64().unwrap();
        let send = get(timing, "sendtime").unwrap().as_f64().unwrap();
        assert!(send >= recv && recv > 1.7e9);
    }

    #[test]
    fn writeback_echoes_the_ping_and_can_be_turned_off() {
        let ping = map([("time", Value::F64(1.5)), ("x", 1.into())]);
        let on = PingResponder::new().respond(&request(&ping), 20, 1000, SystemTime::now());
        assert_eq!(get(&on, "oldmsg"), Some(&ping));
        let off = PingResponder::new().with_writeback(false).respond(
            &request(&ping),
            20,
            1000,
            SystemTime::now(),
        );
        assert_eq!(get(&off, "oldmsg"), None);
    }

    #[test]
    fn echo_over_the_cap_keeps_only_the_time() {
        let ping = map([
            ("time", Value::F64(1.5)),
            ("big", Value::Binary(vec![0; 5000])),
        ]);
        let pong = PingResponder::new().respond(&request(&ping), 5020, 1000, SystemTime::now());
        assert_eq!(
            get(&pong, "oldmsg"),
            Some(&map([("time", Value::F64(1.5))]))
        );
    }

    #[test]
    fn static_data_can_be_replaced_while_shared() {
        let r = PingResponder::new().with_static_data(map([("name", "a".into())]));
        let clone = r.clone();
        clone.set_static_data(map([("name", "b".into())]));
        let pong = r.respond(&request(&map([])), 1, 1000, SystemTime::now());
        assert_eq!(get(&pong, "name"), Some(&Value::from("b")));
    }
}
