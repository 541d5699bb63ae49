//! [`MapWriter`]: dynamic ping data written straight as msgpack, and [`ServerTiming`].

use std::time::SystemTime;

use crate::value::{self, map, Value, MAX_DEPTH_CLAMP};

use super::responder::{
    write_map_len, KeySet, RECVTIME_KEY, RESERVED_KEYS, SENDTIME_KEY, SERVER_TIMING_HEAD,
};
use super::unix_seconds;

/// The server's clock when a ping arrived and when its pong left: the pong's
/// `servertiming` entry. The caller reads the clock (this crate never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTiming {
    /// When the ping was read.
    pub received: SystemTime,
    /// When the pong is sent.
    pub sent: SystemTime,
}

impl ServerTiming {
    /// Both timestamps at one instant: for a server that reads its clock once per ping.
    pub fn at(now: SystemTime) -> Self {
        ServerTiming {
            received: now,
            sent: now,
        }
    }

    /// Writes the `servertiming` entry (key and map), byte for byte the encoding of
    /// [`to_value`](Self::to_value) under its key.
    pub(super) fn write_entry(self, out: &mut Vec<u8>) {
        out.extend_from_slice(SERVER_TIMING_HEAD);
        out.extend_from_slice(RECVTIME_KEY);
        out.push(0xcb);
        out.extend_from_slice(&unix_seconds(self.received).to_be_bytes());
        out.extend_from_slice(SENDTIME_KEY);
        out.push(0xcb);
        out.extend_from_slice(&unix_seconds(self.sent).to_be_bytes());
    }

    pub(super) fn to_value(self) -> Value {
        map([
            ("recvtime", unix_seconds(self.received).into()),
            ("sendtime", unix_seconds(self.sent).into()),
        ])
    }
}

/// Writes the entries of a map (the dynamic data of a pong) straight as msgpack: what a
/// provider given to [`PingResponder::with_dynamic_entries`](super::PingResponder::with_dynamic_entries) writes into. Each method
/// appends one entry, encoded as the same key and value in a [`Value`] map would be.
pub struct MapWriter<'a> {
    pub(super) out: &'a mut Vec<u8>,
    /// Entries written.
    pub(super) count: u32,
    /// Where the first [`KEYS_TRACKED`] keys' bytes are in `out` (start, end).
    pub(super) keys: [(u32, u32); KEYS_TRACKED],
    /// Every key is a string and at most [`KEYS_TRACKED`] were written: the keys can be
    /// checked for collisions without decoding.
    pub(super) plain: bool,
}

/// Writes `n` in decimal at the start of `out`; returns the length.
pub(super) fn write_decimal(out: &mut [u8], n: u16) -> usize {
    let len = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let mut n = n;
    for digit in out[..len].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    len
}

/// Keys a [`MapWriter`] remembers; more send the pong down the general merge.
pub(super) const KEYS_TRACKED: usize = 32;

impl<'a> MapWriter<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        MapWriter {
            out,
            count: 0,
            keys: [(0, 0); KEYS_TRACKED],
            plain: true,
        }
    }

    fn key(&mut self, key: &str) {
        value::write_str_header(self.out, key.len());
        let start = self.out.len();
        self.out.extend_from_slice(key.as_bytes());
        match self.keys.get_mut(self.count as usize) {
            Some(slot) => *slot = (start as u32, self.out.len() as u32),
            None => self.plain = false,
        }
        self.count += 1;
    }

    /// An entry with a string value.
    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        value::write_str(self.out, value);
    }

    /// An entry with an unsigned integer value.
    pub fn uint(&mut self, key: &str, value: u64) {
        self.key(key);
        value::write_uint(self.out, value);
    }

    /// An entry with a signed integer value.
    pub fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        match u64::try_from(value) {
            Ok(u) => value::write_uint(self.out, u),
            Err(_) => value::write_nint(self.out, value),
        }
    }

    /// An entry with a float64 value.
    pub fn f64(&mut self, key: &str, value: f64) {
        self.key(key);
        self.out.push(0xcb);
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// An entry with a boolean value.
    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push(if value { 0xc3 } else { 0xc2 });
    }

    /// An entry whose value is the string `value` formats to (an address, say), written
    /// without an intermediate `String`.
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        use std::io::Write;
        self.key(key);
        let at = self.out.len();
        self.out.push(0xa0);
        let _ = write!(self.out, "{value}");
        let len = self.out.len() - at - 1;
        if len <= 31 {
            self.out[at] = 0xa0 | len as u8;
        } else {
            let mut header = Vec::with_capacity(5);
            value::write_str_header(&mut header, len);
            self.out.splice(at..at + 1, header);
        }
    }

    /// An entry whose value is a socket address as a string (`ip:port`, as its
    /// `Display` writes it), an IPv4 one formatted without the formatting machinery (most
    /// of the cost of the CLI's dynamic data, BENCHMARKS.md).
    pub fn socket_addr(&mut self, key: &str, addr: std::net::SocketAddr) {
        let std::net::SocketAddr::V4(v4) = addr else {
            return self.display(key, addr);
        };
        self.key(key);
        // At most "255.255.255.255:65535": 21 bytes, a fixstr, written on the stack first
        // (one copy into the pong instead of a capacity check per character).
        let mut text = [0u8; 21];
        let mut len = 0;
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            len += write_decimal(&mut text[len..], u16::from(octet));
        }
        text[len] = b':';
        len += 1;
        len += write_decimal(&mut text[len..], v4.port());
        self.out.push(0xa0 | len as u8);
        self.out.extend_from_slice(&text[..len]);
    }

    /// An entry with any value.
    pub fn value(&mut self, key: &str, value: &Value) {
        self.key(key);
        value::encode_into(self.out, value);
    }

    /// An entry with any key and value (a key that is not a string is allowed, as in a
    /// [`Value`] map).
    pub fn entry(&mut self, key: &Value, value: &Value) {
        match key {
            Value::String(k) if k.as_str().is_some() => self.key(k.as_str().unwrap_or("")),
            _ => {
                value::encode_into(self.out, key);
                self.plain = false;
                self.count += 1;
            }
        }
        value::encode_into(self.out, value);
    }

    /// Whether no key repeats, none is one of [`RESERVED_KEYS`] and none is in `taken`:
    /// the entries can be spliced into a pong as they are.
    pub(super) fn distinct_from(&self, taken: &KeySet) -> bool {
        if !self.plain {
            return false;
        }
        let keys = &self.keys[..self.count as usize];
        keys.iter().enumerate().all(|(i, &(start, end))| {
            let key = &self.out[start as usize..end as usize];
            !RESERVED_KEYS.iter().any(|r| r.as_bytes() == key)
                && !taken.contains(key)
                && !keys[..i]
                    .iter()
                    .any(|&(s, e)| &self.out[s as usize..e as usize] == key)
        })
    }

    /// The entries written, as a map.
    pub(super) fn into_value(self) -> Value {
        let mut bytes = Vec::with_capacity(self.out.len() + 5);
        write_map_len(&mut bytes, self.count);
        bytes.extend_from_slice(self.out);
        value::decode(&bytes, MAX_DEPTH_CLAMP).unwrap_or_else(|_| map([]))
    }
}
