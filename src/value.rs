//! Message bodies: msgpack documents as dynamic [`Value`]s or typed serde structs.
//!
//! The Python peers pack with `msgpack` 1.x defaults: strings as `str`, byte strings as
//! `bin`, floats as float64, integers in their shortest form, maps in insertion order.
//! [`rmpv`] writes exactly that, so a [`Value`] round-trips byte for byte.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ValueError;

pub use rmpv::Value;

/// Encodes a value as msgpack.
///
/// ```
/// use peng3dnet::value::{encode, map};
/// let body = encode(&map([("conntype", "ping".into())]));
/// assert_eq!(&body[..], b"\x81\xa8conntype\xa4ping");
/// ```
pub fn encode(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut out, value).expect("writing msgpack to a Vec cannot fail");
    Bytes::from(out)
}

/// Decodes one msgpack document, refusing nesting deeper than `max_depth` and any bytes
/// after the document.
pub fn decode(body: &[u8], max_depth: usize) -> Result<Value, ValueError> {
    let mut reader = body;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, max_depth)
        .map_err(|e| ValueError::Decode(e.to_string()))?;
    if !reader.is_empty() {
        return Err(ValueError::TrailingBytes(reader.len()));
    }
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

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
