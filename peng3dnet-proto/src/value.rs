//! Message bodies: msgpack documents as dynamic [`Value`]s or typed serde structs.
//!
//! The Python peers pack with `msgpack` 1.x defaults: strings as `str`, byte strings as
//! `bin`, floats as float64, integers in their shortest form, maps in insertion order.
//! [`rmpv`] writes exactly that, so a [`Value`] round-trips byte for byte.
//!
//! [`encode`] and [`decode`] are this crate's own, byte for byte and error for error what
//! `rmpv::encode::write_value` and `rmpv::decode::read_value_with_max_depth` do (the tests
//! compare them on random values), only faster, because they are on every packet's path:
//! the encoder writes into a per-thread scratch buffer and copies the result out in one
//! allocation of the exact size (rmpv grows a `Vec` as it goes, and a `Bytes` made from a
//! `Vec` with spare room costs one more allocation), and the decoder slices its input
//! instead of reading strings through `io::Read` (profile and figures in BENCHMARKS.md).

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ValueError;

pub use rmpv::Value;

/// Encodes a value as msgpack.
///
/// ```
/// use peng3dnet_proto::value::{encode, map};
/// let body = encode(&map([("conntype", "ping".into())]));
/// assert_eq!(&body[..], b"\x81\xa8conntype\xa4ping");
/// ```
pub fn encode(value: &Value) -> Bytes {
    thread_local! {
        /// Where values are encoded before being copied out at their exact size.
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            write_value(&mut scratch, value);
            // One allocation of exactly the right size (a `Bytes` made from a `Vec` with
            // spare capacity costs a second one).
            let out = Bytes::copy_from_slice(&scratch);
            if scratch.capacity() > SCRATCH_KEEP {
                *scratch = Vec::new();
            }
            out
        }
        Err(_) => {
            let mut out = Vec::new();
            write_value(&mut out, value);
            Bytes::from(out)
        }
    })
}

/// Largest scratch buffer a thread keeps between two [`encode`]s.
const SCRATCH_KEEP: usize = 64 * 1024;

/// Appends the msgpack encoding of `value` to `out` (what [`encode`] returns).
pub fn encode_into(out: &mut Vec<u8>, value: &Value) {
    write_value(out, value);
}

/// The deepest nesting any decode accepts, whatever `max_depth` a caller asks for: the
/// decoder recurses once per level, and a raised limit must not let a peer overflow the
/// stack of a 2 MiB runtime thread.
pub const MAX_DEPTH_CLAMP: usize = 512;

/// Decodes one msgpack document, refusing nesting deeper than `max_depth` (clamped to
/// [`MAX_DEPTH_CLAMP`]) and any bytes after the document.
pub fn decode(body: &[u8], max_depth: usize) -> Result<Value, ValueError> {
    decode_with_room(body, max_depth, 0)
}

/// [`decode`], with room for `room` more entries in a top-level map: a receiver that adds
/// keys to the map (the ping client adds `recvtime` and `delay` to a pong's, as the
/// reference's `pingServer` does) then does not move it to grow it.
pub(crate) fn decode_with_room(
    body: &[u8],
    max_depth: usize,
    room: usize,
) -> Result<Value, ValueError> {
    let max_depth = max_depth.min(MAX_DEPTH_CLAMP);
    let depth = max_depth as u16;
    let mut reader = Reader {
        buf: body,
        pos: 0,
        room,
    };
    let value = match read_value(&mut reader, depth) {
        Ok(value) => value,
        Err(Fail::Invalid(message)) => return Err(ValueError::Decode(message)),
        // A string that is not UTF-8: only rmpv can build that value.
        Err(Fail::NotUtf8) => return decode_with_rmpv(body, max_depth),
    };
    if reader.pos != body.len() {
        return Err(ValueError::TrailingBytes(body.len() - reader.pos));
    }
    Ok(value)
}

/// [`decode`] by rmpv itself.
fn decode_with_rmpv(body: &[u8], max_depth: usize) -> Result<Value, ValueError> {
    let mut reader = body;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, max_depth)
        .map_err(|e| ValueError::Decode(e.to_string()))?;
    if !reader.is_empty() {
        return Err(ValueError::TrailingBytes(reader.len()));
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------
// The encoder: rmpv's `write_value` (shortest integer forms, fixstr/str8/16/32, bin for
// strings that are not UTF-8, fix/16/32 arrays and maps, fixext/ext8/16/32).

pub(crate) fn write_uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=127 => out.push(n as u8),
        128..=255 => out.extend_from_slice(&[0xcc, n as u8]),
        256..=65_535 => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        65_536..=4_294_967_295 => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

pub(crate) fn write_nint(out: &mut Vec<u8>, n: i64) {
    match n {
        -32..=-1 => out.push(n as i8 as u8),
        -128..=-33 => out.extend_from_slice(&[0xd0, n as i8 as u8]),
        -32_768..=-129 => {
            out.push(0xd1);
            out.extend_from_slice(&(n as i16).to_be_bytes());
        }
        -2_147_483_648..=-32_769 => {
            out.push(0xd2);
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// A length after a one-byte marker chosen from `markers` (8-, 16-, 32-bit forms).
fn write_len(out: &mut Vec<u8>, len: u32, markers: [u8; 3]) {
    match len {
        0..=255 => out.extend_from_slice(&[markers[0], len as u8]),
        256..=65_535 => {
            out.push(markers[1]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(markers[2]);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

fn write_collection_len(out: &mut Vec<u8>, len: u32, fix: u8, markers: [u8; 2]) {
    match len {
        0..=15 => out.push(fix | len as u8),
        16..=65_535 => {
            out.push(markers[0]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(markers[1]);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// A map's msgpack header for `len` entries (what [`write_value`] writes before a map's
/// entries).
pub(crate) fn write_map_header(out: &mut Vec<u8>, len: u32) {
    write_collection_len(out, len, 0x80, [0xde, 0xdf]);
}

/// A string's msgpack header (what [`write_value`] writes before a UTF-8 string's bytes).
pub(crate) fn write_str_header(out: &mut Vec<u8>, len: usize) {
    let len = len as u32;
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=255 => out.extend_from_slice(&[0xd9, len as u8]),
        _ => write_len(out, len, [0xd9, 0xda, 0xdb]),
    }
}

/// A UTF-8 string, as [`write_value`] writes `Value::from(s)`.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    write_str_header(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Nil => out.push(0xc0),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(n) => match n.as_u64() {
            Some(u) => write_uint(out, u),
            None => write_nint(out, n.as_i64().unwrap_or(i64::MIN)),
        },
        Value::F32(f) => {
            out.push(0xca);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::F64(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::String(s) => {
            let bytes = s.as_bytes();
            let len = bytes.len() as u32;
            if s.is_str() {
                write_str_header(out, bytes.len());
            } else {
                write_len(out, len, [0xc4, 0xc5, 0xc6]);
            }
            out.extend_from_slice(bytes);
        }
        Value::Binary(b) => {
            write_len(out, b.len() as u32, [0xc4, 0xc5, 0xc6]);
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            write_collection_len(out, items.len() as u32, 0x90, [0xdc, 0xdd]);
            for item in items {
                write_value(out, item);
            }
        }
        Value::Map(entries) => {
            write_map_header(out, entries.len() as u32);
            for (k, v) in entries {
                write_value(out, k);
                write_value(out, v);
            }
        }
        Value::Ext(ty, data) => {
            let len = data.len() as u32;
            match len {
                1 => out.push(0xd4),
                2 => out.push(0xd5),
                4 => out.push(0xd6),
                8 => out.push(0xd7),
                16 => out.push(0xd8),
                _ => write_len(out, len, [0xc7, 0xc8, 0xc9]),
            }
            out.push(*ty as u8);
            out.extend_from_slice(data);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The decoder: rmpv's `read_value_with_max_depth`, including how it counts depth (every
// value costs one level; a string two more, binary and collections one more, ext two
// more), that the reserved marker 0xc1 reads as nil, and that a claimed length allocates
// no more than the input can fill.

enum Fail {
    Invalid(String),
    NotUtf8,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Spare entries for the first map read (the top-level one, when the body is a map).
    room: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Fail> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                Fail::Invalid(format!(
                    "unexpected end of data: {n} bytes wanted at offset {}",
                    self.pos
                ))
            })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Fail> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Fail> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Fail> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Fail> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

fn deeper(depth: u16) -> Result<u16, Fail> {
    depth
        .checked_sub(1)
        .ok_or_else(|| Fail::Invalid("depth limit exceeded".into()))
}

fn read_bin(r: &mut Reader<'_>, len: usize, depth: u16) -> Result<Vec<u8>, Fail> {
    deeper(depth)?;
    Ok(r.take(len)?.to_vec())
}

fn read_str(r: &mut Reader<'_>, len: usize, depth: u16) -> Result<Value, Fail> {
    let depth = deeper(depth)?;
    deeper(depth)?;
    let bytes = r.take(len)?;
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Value::from(s)),
        Err(_) => Err(Fail::NotUtf8),
    }
}

fn read_ext(r: &mut Reader<'_>, len: usize, depth: u16) -> Result<Value, Fail> {
    let depth = deeper(depth)?;
    let ty = r.u8()? as i8;
    Ok(Value::Ext(ty, read_bin(r, len, depth)?))
}

fn read_array(r: &mut Reader<'_>, len: usize, depth: u16) -> Result<Value, Fail> {
    let depth = deeper(depth)?;
    // Every element takes at least one byte: a claimed length cannot make us allocate
    // more than the input could fill.
    let mut items = Vec::with_capacity(len.min(r.remaining()));
    for _ in 0..len {
        items.push(read_value(r, depth)?);
    }
    Ok(Value::Array(items))
}

fn read_map(r: &mut Reader<'_>, len: usize, depth: u16) -> Result<Value, Fail> {
    let depth = deeper(depth)?;
    let room = std::mem::take(&mut r.room);
    let mut entries = Vec::with_capacity(len.min(r.remaining() / 2) + room);
    for _ in 0..len {
        let k = read_value(r, depth)?;
        let v = read_value(r, depth)?;
        entries.push((k, v));
    }
    Ok(Value::Map(entries))
}

fn read_value(r: &mut Reader<'_>, depth: u16) -> Result<Value, Fail> {
    let depth = deeper(depth)?;
    let marker = r.u8()?;
    Ok(match marker {
        0x00..=0x7f => Value::from(marker),
        0x80..=0x8f => read_map(r, usize::from(marker & 0x0f), depth)?,
        0x90..=0x9f => read_array(r, usize::from(marker & 0x0f), depth)?,
        0xa0..=0xbf => read_str(r, usize::from(marker & 0x1f), depth)?,
        0xc0 | 0xc1 => Value::Nil,
        0xc2 => Value::Boolean(false),
        0xc3 => Value::Boolean(true),
        0xc4 => {
            let len = usize::from(r.u8()?);
            Value::Binary(read_bin(r, len, depth)?)
        }
        0xc5 => {
            let len = usize::from(r.u16()?);
            Value::Binary(read_bin(r, len, depth)?)
        }
        0xc6 => {
            let len = r.u32()? as usize;
            Value::Binary(read_bin(r, len, depth)?)
        }
        0xc7 => {
            let len = usize::from(r.u8()?);
            read_ext(r, len, depth)?
        }
        0xc8 => {
            let len = usize::from(r.u16()?);
            read_ext(r, len, depth)?
        }
        0xc9 => {
            let len = r.u32()? as usize;
            read_ext(r, len, depth)?
        }
        0xca => Value::F32(f32::from_be_bytes(r.array()?)),
        0xcb => Value::F64(f64::from_be_bytes(r.array()?)),
        0xcc => Value::from(r.u8()?),
        0xcd => Value::from(r.u16()?),
        0xce => Value::from(r.u32()?),
        0xcf => Value::from(u64::from_be_bytes(r.array()?)),
        0xd0 => Value::from(r.u8()? as i8),
        0xd1 => Value::from(i16::from_be_bytes(r.array()?)),
        0xd2 => Value::from(i32::from_be_bytes(r.array()?)),
        0xd3 => Value::from(i64::from_be_bytes(r.array()?)),
        0xd4 => read_ext(r, 1, depth)?,
        0xd5 => read_ext(r, 2, depth)?,
        0xd6 => read_ext(r, 4, depth)?,
        0xd7 => read_ext(r, 8, depth)?,
        0xd8 => read_ext(r, 16, depth)?,
        0xd9 => {
            let len = usize::from(r.u8()?);
            read_str(r, len, depth)?
        }
        0xda => {
            let len = usize::from(r.u16()?);
            read_str(r, len, depth)?
        }
        0xdb => {
            let len = r.u32()? as usize;
            read_str(r, len, depth)?
        }
        0xdc => {
            let len = usize::from(r.u16()?);
            read_array(r, len, depth)?
        }
        0xdd => {
            let len = r.u32()? as usize;
            read_array(r, len, depth)?
        }
        0xde => {
            let len = usize::from(r.u16()?);
            read_map(r, len, depth)?
        }
        0xdf => {
            let len = r.u32()? as usize;
            read_map(r, len, depth)?
        }
        0xe0..=0xff => Value::from(marker as i8),
    })
}

/// Converts any serde-serialisable type to a [`Value`]; structs become maps keyed by field
/// name, as Python peers expect.
pub fn to_value<T: Serialize + ?Sized>(data: &T) -> Result<Value, ValueError> {
    let bytes = rmp_serde::to_vec_named(data).map_err(|e| ValueError::Shape(e.to_string()))?;
    decode(&bytes, usize::from(u16::MAX))
}

/// Converts a [`Value`] to a serde-deserialisable type.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ValueError> {
    rmpv::ext::from_value(value).map_err(|e| ValueError::Shape(e.to_string()))
}

/// Builds a string-keyed map, keeping the order given (as a Python dict does).
pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// The value under a string key of a map, or `None` if `value` is no map or lacks the key.
pub fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Sets `key` in a map to `new`, overwriting an existing entry in place (like Python's
/// `dict.__setitem__`) or appending. Does nothing if `target` is not a map.
pub fn insert(target: &mut Value, key: &str, new: Value) {
    if let Value::Map(entries) = target {
        match entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            Some((_, v)) => *v = new,
            None => entries.push((Value::from(key), new)),
        }
    }
}

/// Merges the entries of map `source` into map `target`, later keys overwriting earlier
/// ones in place, like Python's `dict.update`. Non-map sources are ignored.
pub fn update(target: &mut Value, source: &Value) {
    if let Some(entries) = source.as_map() {
        for (k, v) in entries {
            match k.as_str() {
                Some(key) => insert(target, key, v.clone()),
                None => {
                    if let Value::Map(t) = target {
                        match t.iter_mut().find(|(tk, _)| tk == k) {
                            Some((_, tv)) => *tv = v.clone(),
                            None => t.push((k.clone(), v.clone())),
                        }
                    }
                }
            }
        }
    }
}

/// Decodes like [`decode`], after refusing, without allocating, a body of more than
/// `max_items` values ([`check_items`]): what every received packet goes through.
pub fn decode_bounded(
    body: &[u8],
    max_depth: usize,
    max_items: usize,
) -> Result<Value, ValueError> {
    let max_depth = max_depth.min(MAX_DEPTH_CLAMP);
    check_items(body, max_depth, max_items)?;
    decode(body, max_depth)
}

/// The encoded bytes of the value under the string key `key` of the map that `body`
/// holds (the first such entry, the one [`get`] finds), found without building anything:
/// `None` when `body` is no map, lacks the key or ends early.
///
/// What a receiver uses to read one or two entries of a body it has checked
/// ([`validate`]) but need not build: the ping client reads a pong's echoed sequence
/// number and the server's timing this way.
///
/// ```
/// use peng3dnet_proto::value::{decode, encode, lookup, map, Value};
///
/// let body = encode(&map([
///     ("name", "lobby".into()),
///     ("servertiming", map([("recvtime", Value::F64(2.5))])),
/// ]));
/// let timing = lookup(&body, "servertiming").unwrap();
/// let recvtime = lookup(timing, "recvtime").unwrap();
/// assert_eq!(decode(recvtime, 4).unwrap(), Value::F64(2.5));
/// assert_eq!(lookup(&body, "motd"), None);
/// assert_eq!(lookup(recvtime, "recvtime"), None, "not a map");
/// ```
pub fn lookup<'a>(body: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let (&marker, _) = body.split_first()?;
    let (entries, mut pos) = match marker {
        0x80..=0x8f => (usize::from(marker & 0x0f), 1),
        0xde => (
            usize::from(u16::from_be_bytes(*body.get(1..3)?.first_chunk()?)),
            3,
        ),
        0xdf => (
            u32::from_be_bytes(*body.get(1..5)?.first_chunk()?) as usize,
            5,
        ),
        _ => return None,
    };
    for _ in 0..entries {
        let key_end = pos + encoded_len_at(body.get(pos..)?)?;
        let value_end = key_end + encoded_len_at(body.get(key_end..)?)?;
        if str_bytes(&body[pos..key_end]) == Some(key.as_bytes()) {
            return Some(&body[key_end..value_end]);
        }
        pos = value_end;
    }
    None
}

/// The length of the first msgpack value of `bytes`: a plain count of the values still to
/// skip, without the depth and item checks of [`walk`] (`lookup` reads bodies already
/// checked; on others it still ends, every value taking a byte).
fn encoded_len_at(bytes: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    let mut pending = 1usize;
    while pending > 0 {
        let marker = *bytes.get(pos)?;
        pos += 1;
        let (skip, children) = shape(marker, bytes, &mut pos).ok()?;
        pos = pos.checked_add(skip).filter(|&end| end <= bytes.len())?;
        pending = (pending - 1).saturating_add(children);
        if pending > bytes.len() - pos {
            return None;
        }
    }
    Some(pos)
}

/// The UTF-8 bytes of an encoded string (exactly one, nothing after it), or `None` for any
/// other value.
fn str_bytes(encoded: &[u8]) -> Option<&[u8]> {
    let (&marker, rest) = encoded.split_first()?;
    let (len, rest) = match marker {
        0xa0..=0xbf => (usize::from(marker & 0x1f), rest),
        0xd9 => (usize::from(*rest.first()?), rest.get(1..)?),
        0xda => (
            usize::from(u16::from_be_bytes(*rest.first_chunk()?)),
            rest.get(2..)?,
        ),
        0xdb => (
            u32::from_be_bytes(*rest.first_chunk()?) as usize,
            rest.get(4..)?,
        ),
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

fn truncated() -> ValueError {
    ValueError::Decode("the body claims more bytes or values than it holds".into())
}

/// Walks a msgpack document without building it and refuses one holding more than
/// `max_items` values ([`ValueError::TooManyItems`], closed with `packettoolarge`), or
/// nesting containers deeper than the decoder will accept, or claiming more values or bytes
/// than it has ([`ValueError::Decode`], `invalidpacket`).
///
/// Depth: the decoder spends two levels of `max_depth` per container, so more than
/// `max_depth / 2` nested containers are refused here (the decoder refuses the rest), and a
/// deeply nested body is `invalidpacket`, not `packettoolarge` (unless the item budget is
/// below `max_depth / 2`).
///
/// Decoding builds a 40-byte [`Value`] per item however short its encoding (an empty array
/// is one byte), so this bounds the memory a body can make the decoder allocate to about
/// `40 * max_items` plus the body itself, before any of it is allocated. It costs one pass
/// over the bytes, without recursion or allocation; depth is left to the decoder.
pub fn check_items(body: &[u8], max_depth: usize, max_items: usize) -> Result<(), ValueError> {
    walk(body, max_depth, max_items).map(|_| ())
}

/// Whether [`decode_bounded`] would accept `body`, and with the same error when it would
/// not, without building anything: [`check_items`] plus the decoder's own refusals (its
/// depth counting, trailing bytes).
///
/// This is what lets a server answer a ping without decoding it: the pong echoes the
/// ping's bytes, and the ping is decoded only if a ping data provider reads it.
///
/// ```
/// use peng3dnet_proto::value::{validate, decode_bounded};
///
/// let ping = b"\x81\xa4time\xcb\x41\xd9\x00\x00\x00\x00\x00\x00";
/// assert!(validate(ping, 64, 1000).is_ok());
/// assert!(decode_bounded(ping, 64, 1000).is_ok());
/// // A complete map followed by a stray byte: both refuse it.
/// assert!(validate(b"\x80\xc0", 64, 1000).is_err());
/// assert!(decode_bounded(b"\x80\xc0", 64, 1000).is_err());
/// ```
pub fn validate(body: &[u8], max_depth: usize, max_items: usize) -> Result<(), ValueError> {
    let max_depth = max_depth.min(MAX_DEPTH_CLAMP);
    let walked = walk(body, max_depth, max_items)?;
    if walked.too_deep {
        return Err(ValueError::Decode("depth limit exceeded".into()));
    }
    if walked.end != body.len() {
        return Err(ValueError::TrailingBytes(body.len() - walked.end));
    }
    Ok(())
}

/// What [`walk`] found besides the refusals of [`check_items`].
struct Walked {
    /// Where the document ends.
    end: usize,
    /// The decoder would refuse the nesting (it counts depth per value, see [`depth_needed`]).
    too_deep: bool,
}

/// The depth budget [`decode`] needs left, when it reaches a value with this marker, to
/// read it: one level for the value, one more for a container's or a binary's body, two
/// more for a string's or an extension's (rmpv's counting, which the decoder keeps).
fn depth_needed(marker: u8) -> usize {
    match marker {
        0x80..=0x9f | 0xdc..=0xdf | 0xc4..=0xc6 => 2,
        0xa0..=0xbf | 0xd9..=0xdb | 0xc7..=0xc9 | 0xd4..=0xd8 => 3,
        _ => 1,
    }
}

/// The values still to walk in the containers around the innermost one, outermost first:
/// on the stack for the nesting real messages have (a ping is one map), so that walking
/// one allocates nothing.
struct Outer {
    inline: [usize; 8],
    len: usize,
    spill: Vec<usize>,
}

impl Outer {
    fn new() -> Self {
        Outer {
            inline: [0; 8],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, n: usize) {
        if self.len < self.inline.len() {
            self.inline[self.len] = n;
            self.len += 1;
        } else {
            self.spill.push(n);
        }
    }

    /// The last pushed count (0 when empty: the walk never pops more than it pushed).
    fn pop(&mut self) -> usize {
        match self.spill.pop() {
            Some(n) => n,
            None => {
                self.len = self.len.saturating_sub(1);
                self.inline[self.len]
            }
        }
    }
}

/// The walk of [`check_items`] and [`validate`].
/// Why [`shape`] cannot read a value's header.
enum Malformed {
    /// The header's length runs past the end.
    Truncated,
    /// The marker 0xc1, never used.
    Marker,
}

impl From<Malformed> for ValueError {
    fn from(m: Malformed) -> ValueError {
        match m {
            Malformed::Truncated => truncated(),
            Malformed::Marker => ValueError::Decode("invalid marker 0xc1".into()),
        }
    }
}

/// What a value with this marker holds after its header: the payload bytes to skip and the
/// values it contains. `pos` is just after the marker and moves past a length in the
/// header.
#[inline(always)]
fn shape(marker: u8, body: &[u8], pos: &mut usize) -> Result<(usize, usize), Malformed> {
    fn length(body: &[u8], pos: &mut usize, width: usize) -> Result<usize, Malformed> {
        let end = pos
            .checked_add(width)
            .filter(|&end| end <= body.len())
            .ok_or(Malformed::Truncated)?;
        let n = body[*pos..end]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        *pos = end;
        Ok(n)
    }
    Ok(match marker {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
        0x80..=0x8f => (0, 2 * usize::from(marker & 0x0f)),
        0x90..=0x9f => (0, usize::from(marker & 0x0f)),
        0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
        0xc4 | 0xd9 => (length(body, pos, 1)?, 0),
        0xc5 | 0xda => (length(body, pos, 2)?, 0),
        0xc6 | 0xdb => (length(body, pos, 4)?, 0),
        // ext 8/16/32: length, then a type byte, then the data
        0xc7 => (length(body, pos, 1)? + 1, 0),
        0xc8 => (length(body, pos, 2)? + 1, 0),
        0xc9 => (length(body, pos, 4)?.saturating_add(1), 0),
        0xcc | 0xd0 => (1, 0),
        0xcd | 0xd1 => (2, 0),
        0xca | 0xce | 0xd2 => (4, 0),
        0xcb | 0xcf | 0xd3 => (8, 0),
        // fixext 1/2/4/8/16: a type byte, then the data
        0xd4 => (2, 0),
        0xd5 => (3, 0),
        0xd6 => (5, 0),
        0xd7 => (9, 0),
        0xd8 => (17, 0),
        0xdc => (0, length(body, pos, 2)?),
        0xdd => (0, length(body, pos, 4)?),
        0xde => (0, 2 * length(body, pos, 2)?),
        0xdf => (0, length(body, pos, 4)?.saturating_mul(2)),
        _ => return Err(Malformed::Marker),
    })
}

fn walk(body: &[u8], max_depth: usize, max_items: usize) -> Result<Walked, ValueError> {
    let mut pos = 0usize;
    // Values announced (by the root or by containers) and not yet walked.
    let mut pending = 1usize;
    // Containers around the value walked now (its nesting), at most `max_depth / 2`;
    // values left to walk in the innermost one (or at the root), and in the others.
    let mut level = 0usize;
    let mut left = 1usize;
    let mut outer = Outer::new();
    let mut items = 0usize;
    let mut too_deep = false;
    while pending > 0 {
        // A finished container: back to its parent (`pending > 0`, so one is open).
        while left == 0 && level > 0 {
            left = outer.pop();
            level -= 1;
        }
        left = left.saturating_sub(1);
        pending -= 1;
        items += 1;
        if items > max_items {
            return Err(ValueError::TooManyItems { max: max_items });
        }
        let marker = *body.get(pos).ok_or_else(truncated)?;
        pos += 1;
        // The decoder enters this value with its budget less two levels per container
        // around it; it is read only after the whole walk, like the decoder runs after
        // `check_items`, so that the error is the one `decode_bounded` gives.
        let depth_left = max_depth.saturating_sub(2 * level);
        too_deep |= depth_left < depth_needed(marker);
        let (skip, children) = shape(marker, body, &mut pos)?;
        pos = pos
            .checked_add(skip)
            .filter(|&end| end <= body.len())
            .ok_or_else(truncated)?;
        if children > 0 {
            if level >= max_depth / 2 {
                return Err(ValueError::Decode("nested deeper than allowed".into()));
            }
            outer.push(left);
            left = children;
            level += 1;
        }
        // Every announced value takes at least one more byte.
        pending = pending.saturating_add(children);
        if pending > body.len() - pos {
            return Err(truncated());
        }
    }
    Ok(Walked { end: pos, too_deep })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_max_depth_is_clamped_so_deep_nesting_cannot_overflow_the_stack() {
        // 200,000 nested one-element arrays: recursing that deep would overflow a thread
        // stack; clamped, it is a plain error.
        let body: Vec<u8> = std::iter::repeat_n(0x91u8, 200_000).chain([0xc0]).collect();
        let run = move || {
            (
                decode(&body, usize::MAX).is_err(),
                decode_bounded(&body, usize::MAX, usize::MAX).is_err(),
            )
        };
        let on_small_stack = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(on_small_stack, (true, true));
    }

    #[test]
    fn types_are_encoded_as_python_msgpack_does() {
        let v = map([
            ("s", "héllo".into()),
            ("b", Value::Binary(vec![0, 1, 255])),
            ("f", Value::F64(1.5)),
            ("i", Value::from(300)),
            ("n", Value::from(-1)),
            ("nil", Value::Nil),
        ]);
        // msgpack.packb({...}) in Python 3.11 with msgpack 1.x
        let expected = b"\x86\xa1s\xa6h\xc3\xa9llo\xa1b\xc4\x03\x00\x01\xff\xa1f\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xa1i\xcd\x01\x2c\xa1n\xff\xa3nil\xc0";
        assert_eq!(&encode(&v)[..], &expected[..]);
        assert_eq!(decode(expected, 64).unwrap(), v);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert!(matches!(
            decode(b"\x80\x80", 64),
            Err(ValueError::TrailingBytes(1))
        ));
    }

    #[test]
    fn truncated_msgpack_is_an_error() {
        assert!(matches!(
            decode(b"\x82\xa1a", 64),
            Err(ValueError::Decode(_))
        ));
        assert!(matches!(decode(b"", 64), Err(ValueError::Decode(_))));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_without_recursion_blowup() {
        let deep = vec![0x91u8; 100_000]; // [[[[...
        assert!(decode(&deep, 64).is_err());
        let mut ok = vec![0x91u8; 10];
        ok.push(0xc0);
        assert!(decode(&ok, 64).is_ok());
    }

    #[test]
    fn huge_claimed_lengths_do_not_allocate() {
        // array32 claiming 4 billion elements in 5 bytes
        assert!(decode(b"\xdd\xff\xff\xff\xff", 64).is_err());
        assert!(decode(b"\xc6\xff\xff\xff\xff", 64).is_err());
    }

    #[test]
    fn update_overwrites_in_place_and_appends_like_dict_update() {
        let mut a = map([("x", 1.into()), ("y", 2.into())]);
        update(&mut a, &map([("y", 3.into()), ("z", 4.into())]));
        assert_eq!(a, map([("x", 1.into()), ("y", 3.into()), ("z", 4.into())]));
        assert_eq!(get(&a, "z"), Some(&Value::from(4)));
        assert_eq!(get(&Value::Nil, "z"), None);
    }

    /// rmpv's own encoder, which ours must match byte for byte.
    fn rmpv_encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Boolean),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-40i64..300).prop_map(Value::from),
            prop_oneof![
                Just(127u64),
                Just(128),
                Just(255),
                Just(256),
                Just(65_535),
                Just(65_536),
                Just(4_294_967_295),
                Just(4_294_967_296)
            ]
            .prop_map(Value::from),
            prop_oneof![
                Just(-32i64),
                Just(-33),
                Just(-128),
                Just(-129),
                Just(-32_768),
                Just(-32_769),
                Just(-2_147_483_648),
                Just(-2_147_483_649)
            ]
            .prop_map(Value::from),
            any::<f32>().prop_map(Value::F32),
            any::<f64>().prop_map(Value::F64),
            ".{0,40}".prop_map(Value::from),
            (0usize..70_000).prop_map(|n| Value::from("s".repeat(n))),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Binary),
            (0usize..70_000).prop_map(|n| Value::Binary(vec![7; n])),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(t, d)| Value::Ext(t, d)),
            (any::<i8>(), prop_oneof![Just(256usize), Just(70_000)])
                .prop_map(|(t, n)| Value::Ext(t, vec![1; n])),
        ];
        leaf.prop_recursive(4, 64, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..20).prop_map(Value::Map),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        #[test]
        fn encode_is_rmpv_byte_for_byte(v in arb_value()) {
            let ours = encode(&v);
            proptest::prop_assert_eq!(&ours[..], &rmpv_encode(&v)[..]);
            let mut appended = vec![0xc0];
            encode_into(&mut appended, &v);
            proptest::prop_assert_eq!(&appended[1..], &ours[..]);
        }

        #[test]
        fn decode_is_rmpv_for_every_depth(v in arb_value(), depth in 0usize..12) {
            let bytes = rmpv_encode(&v);
            let ours = decode(&bytes, depth);
            let theirs = decode_with_rmpv(&bytes, depth);
            proptest::prop_assert_eq!(ours.is_ok(), theirs.is_ok());
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                proptest::prop_assert_eq!(rmpv_encode(&a), rmpv_encode(&b));
            }
        }

        #[test]
        fn decode_is_rmpv_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            depth in 0usize..8,
        ) {
            let ours = decode(&bytes, depth);
            let theirs = decode_with_rmpv(&bytes, depth);
            proptest::prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} {:?}", ours, theirs);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(rmpv_encode(&a), rmpv_encode(&b)),
                (Err(ValueError::TrailingBytes(a)), Err(ValueError::TrailingBytes(b))) => {
                    proptest::prop_assert_eq!(a, b)
                }
                (Err(ValueError::TrailingBytes(_)), Err(e)) | (Err(e), Err(ValueError::TrailingBytes(_))) => {
                    proptest::prop_assert!(false, "one says trailing bytes, the other {e}")
                }
                _ => {}
            }
        }
    }

    #[test]
    fn strings_that_are_not_utf8_decode_as_rmpv_does() {
        let bytes = b"\x92\xa2\xff\xfe\xa1a";
        let v = decode(bytes, 64).unwrap();
        assert_eq!(
            rmpv_encode(&v),
            rmpv_encode(&decode_with_rmpv(bytes, 64).unwrap())
        );
        // rmpv writes such a string back as binary.
        assert_eq!(&encode(&v)[..], b"\x92\xc4\x02\xff\xfe\xa1a");
    }

    #[test]
    fn serde_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct S {
            name: String,
            n: u32,
        }
        let s = S {
            name: "a".into(),
            n: 3,
        };
        let v = to_value(&s).unwrap();
        assert_eq!(get(&v, "name"), Some(&Value::from("a")));
        assert_eq!(from_value::<S>(v).unwrap(), s);
    }
}
