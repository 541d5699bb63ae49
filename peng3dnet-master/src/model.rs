//! What the master keeps about a server ([`Record`], one database row), what it shows of
//! it ([`Server`], the JSON object of `GET /servers`), and what a ping told it
//! ([`Pong`], [`Observation`]).

use std::net::SocketAddr;

use base64::Engine as _;
use peng3dnet::{PingReply, Value};
use serde::{Deserialize, Serialize};

use crate::clock::rfc3339;

/// One listed server as stored: one row of the `servers` table. JSON columns (`data`,
/// `tags`, `history`) are kept as text, parsed only when shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `host:port`, `[v6]:port` for IPv6: the primary key.
    pub address: String,
    /// The IP address, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The last ping answered (false: marked down, not yet dropped).
    pub up: bool,
    /// From the pong: [`PingReply::name`].
    pub name: Option<String>,
    /// From the pong: [`PingReply::motd`].
    pub motd: Option<String>,
    /// From the pong: [`PingReply::clients`].
    pub clients: Option<i64>,
    /// From the pong: [`PingReply::max_clients`].
    pub max_clients: Option<i64>,
    /// From the pong: [`PingReply::version`].
    pub version: Option<String>,
    /// The server's whole data as JSON text ([`pong_json`]).
    pub data: String,
    /// The announce's tags, a JSON array of strings.
    pub tags: String,
    /// The master's last measured round trip, ms.
    pub latency_ms: Option<f64>,
    /// When first listed (Unix ms).
    pub first_seen: i64,
    /// The last pong (Unix ms): the clock of `--drop-after`.
    pub last_seen: i64,
    /// The last ping, answered or not (Unix ms).
    pub last_ping: i64,
    /// Consecutive failed pings.
    pub failures: i64,
    /// The last results, newest first: a JSON array of [`HistoryEntry`].
    pub history: String,
    /// Who announced it: the source's key (an IPv4 address or an IPv6 /64), for the cap
    /// of servers per source.
    pub source: String,
}

/// One ping's result in a server's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When (RFC 3339).
    pub at: String,
    /// Whether the pong came.
    pub ok: bool,
    /// The round trip, when it came.
    pub latency_ms: Option<f64>,
}

/// A server as `GET /servers` shows it (schema 1; docs/master.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// `host:port` to ping (IPv6 as `[::1]:7000`).
    pub address: String,
    /// The IP address.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The last ping answered.
    pub up: bool,
    /// The server's name, from its pong.
    pub name: Option<String>,
    /// The message of the day, from its pong.
    pub motd: Option<String>,
    /// Connected clients, from its pong.
    pub clients: Option<i64>,
    /// Most clients, from its pong.
    pub max_clients: Option<i64>,
    /// The version, from its pong.
    pub version: Option<String>,
    /// The whole pong data (binary strings as base64).
    pub data: serde_json::Value,
    /// The announce's tags.
    pub tags: Vec<String>,
    /// The master's last measured latency, ms.
    pub latency_ms: Option<f64>,
    /// When first listed.
    pub first_seen: String,
    /// The last pong.
    pub last_seen: String,
    /// The last ping.
    pub last_ping: String,
    /// Consecutive failed pings.
    pub failures: i64,
    /// The last results, newest first.
    pub history: Vec<HistoryEntry>,
}

impl Record {
    /// The JSON object shown for it. Columns that do not parse (a database edited by hand)
    /// show as empty, never as an error of the whole list.
    pub fn to_server(&self) -> Server {
        Server {
            address: self.address.clone(),
            host: self.host.clone(),
            port: self.port,
            up: self.up,
            name: self.name.clone(),
            motd: self.motd.clone(),
            clients: self.clients,
            max_clients: self.max_clients,
            version: self.version.clone(),
            data: serde_json::from_str(&self.data)
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
            tags: serde_json::from_str(&self.tags).unwrap_or_default(),
            latency_ms: self.latency_ms,
            first_seen: rfc3339(self.first_seen),
            last_seen: rfc3339(self.last_seen),
            last_ping: rfc3339(self.last_ping),
            failures: self.failures,
            history: serde_json::from_str(&self.history).unwrap_or_default(),
        }
    }
}

/// What a pong told: the fields the list shows and the whole data.
#[derive(Debug, Clone, PartialEq)]
pub struct Pong {
    /// [`PingReply::name`].
    pub name: Option<String>,
    /// [`PingReply::motd`].
    pub motd: Option<String>,
    /// [`PingReply::clients`].
    pub clients: Option<i64>,
    /// [`PingReply::max_clients`].
    pub max_clients: Option<i64>,
    /// [`PingReply::version`].
    pub version: Option<String>,
    /// [`PingReply::server_data`] as JSON text.
    pub data: String,
    /// [`PingReply::delay`] in ms.
    pub latency_ms: f64,
}

impl Pong {
    /// Takes what the list needs from a reply, through the library's getters.
    pub fn of(reply: &PingReply) -> Pong {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Pong {
            name: reply.name().map(str::to_owned),
            motd: reply.motd().map(str::to_owned),
            clients: reply.clients().map(clamp),
            max_clients: reply.max_clients().map(clamp),
            version: reply.version().map(str::to_owned),
            data: pong_json(&reply.server_data()).to_string(),
            latency_ms: reply.delay.as_secs_f64() * 1e3,
        }
    }
}

/// A ping's result for the store: the pong, or why none came.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The server's address (the row's key).
    pub address: String,
    /// When the ping started (Unix ms).
    pub at: i64,
    /// The pong, or the error's message.
    pub outcome: Result<Pong, String>,
}

/// A msgpack value as JSON: binary strings as base64 (standard alphabet, padded), map
/// keys that are not strings as their JSON text, floats that JSON cannot hold (NaN,
/// infinities) as null, extension values as `{"ext": type, "base64": ...}`.
///
/// ```
/// use peng3dnet::Value;
/// let v = Value::Map(vec![
///     (Value::from("b"), Value::Binary(vec![0, 1, 2])),
///     (Value::from(7), Value::F64(f64::NAN)),
/// ]);
/// assert_eq!(
///     peng3dnet_master::model::pong_json(&v).to_string(),
///     r#"{"7":null,"b":"AAEC"}"#
/// );
/// ```
pub fn pong_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (_, Some(s)) => J::from(s),
            _ => J::Null,
        },
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => match s.as_str() {
            Some(text) => J::String(text.to_owned()),
            None => J::String(b64(s.as_bytes())),
        },
        Value::Binary(b) => J::String(b64(b)),
        Value::Array(items) => J::Array(items.iter().map(pong_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) if s.as_str().is_some() => {
                            s.as_str().unwrap_or_default().to_owned()
                        }
                        other => pong_json(other).to_string(),
                    };
                    (key, pong_json(v))
                })
                .collect(),
        ),
        Value::Ext(t, data) => serde_json::json!({ "ext": t, "base64": b64(data) }),
    }
}

fn float(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The `address` form of a socket address: `127.0.0.5:7000`, `[::1]:7000`.
pub fn address_of(addr: SocketAddr) -> String {
    addr.to_string()
}

/// The body of `POST /announce` and `DELETE /announce`.
#[derive(Debug, Clone, Deserialize)]
pub struct AnnounceRequest {
    /// The port to list.
    pub port: u32,
    /// The IP address to list, honoured only from trusted announcers.
    #[serde(default)]
    pub host: Option<String>,
    /// Tags for filtering (`GET /servers?tag=`).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// Most tags an announce may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag, in characters.
pub const MAX_TAG_LEN: usize = 32;

/// Checks tags: at most [`MAX_TAGS`], each 1 to [`MAX_TAG_LEN`] characters of
/// `[A-Za-z0-9_.-]`; duplicates are removed, order kept. The error is a sentence for the
/// announcer.
///
/// ```
/// use peng3dnet_master::model::check_tags;
/// assert_eq!(check_tags(&["eu".into(), "pvp".into(), "eu".into()]).unwrap(), ["eu", "pvp"]);
/// assert!(check_tags(&["no spaces".into()]).is_err());
/// ```
pub fn check_tags(tags: &[String]) -> Result<Vec<String>, String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags given; at most {MAX_TAGS} are allowed",
            tags.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let ok_chars = tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if tag.is_empty() || tag.len() > MAX_TAG_LEN || !ok_chars {
            let shown: String = tag.chars().take(40).collect();
            return Err(format!(
                "tag {shown:?} is not 1-{MAX_TAG_LEN} characters of A-Z a-z 0-9 _ . -"
            ));
        }
        if !out.contains(tag) {
            out.push(tag.clone());
        }
    }
    Ok(out)
}

/// A history entry for a result, newest first, kept to `keep` entries.
pub fn push_history(history: &str, at: i64, latency_ms: Option<f64>, keep: usize) -> String {
    let mut entries: Vec<HistoryEntry> = serde_json::from_str(history).unwrap_or_default();
    entries.insert(
        0,
        HistoryEntry {
            at: rfc3339(at),
            ok: latency_ms.is_some(),
            latency_ms: latency_ms.map(|l| (l * 1000.0).round() / 1000.0),
        },
    );
    entries.truncate(keep.max(1));
    serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_newest_first_and_bounded() {
        let mut h = "[]".to_owned();
        for i in 0..5 {
            h = push_history(&h, i * 1000, (i % 2 == 0).then_some(1.5), 3);
        }
        let entries: Vec<HistoryEntry> = serde_json::from_str(&h).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].at, "1970-01-01T00:00:04.000Z");
        assert!(entries[0].ok);
        assert!(!entries[1].ok);
        assert_eq!(entries[1].latency_ms, None);
    }

    #[test]
    fn tags_are_checked() {
        assert!(check_tags(&vec!["a".to_owned(); 17]).is_err());
        assert!(check_tags(&["".into()]).is_err());
        assert!(check_tags(&["x".repeat(33)]).is_err());
        assert_eq!(check_tags(&["a-b_c.d".into()]).unwrap(), ["a-b_c.d"]);
    }
}
