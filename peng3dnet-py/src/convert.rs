//! msgpack [`Value`]s to Python objects and back.
//!
//! Python to msgpack takes what the reference's `msgpack.packb` takes by default: `None`,
//! `bool`, `int` (in the 64-bit range), `float`, `str`, `bytes`/`bytearray`, `list`/`tuple`
//! and `dict`; anything else is a `TypeError` naming the type and where it was found.
//! msgpack to Python gives what `msgpack.unpackb(raw=False)` gives: maps as `dict`, arrays
//! as `list`, strings as `str` (as `bytes` if they are not valid UTF-8), binaries as
//! `bytes`; an extension type becomes a `(code, bytes)` tuple.

use peng3dnet::Value;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

/// Deepest nesting of containers accepted from Python (a recursive structure stops
/// here too). Servers refuse pings much deeper than this anyway (the library's decoder
/// allows a depth of 64, counting a container and its contents as a level each).
const MAX_DEPTH: usize = 32;

/// Why a Python object could not become a msgpack value.
enum Failure {
    /// A type msgpack cannot carry.
    Type(String),
    /// An int outside -2^63..2^64.
    Overflow,
    /// Nested deeper than [`MAX_DEPTH`] (or recursive).
    TooDeep,
    /// Python raised while we looked at the object (a dict changing size, for example).
    Python(PyErr),
}

/// Converts a Python object into a msgpack value; `what` names it in error messages
/// (for example `data`).
pub(crate) fn to_value(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    let mut path = Vec::new();
    convert(obj, 0, &mut path).map_err(|failure| {
        let at = format!("{what}{}", path.iter().rev().cloned().collect::<String>());
        match failure {
            Failure::Type(name) => PyTypeError::new_err(format!(
                "cannot send a value of type '{name}' (at {at}): msgpack carries dict, list, \
                 tuple, str, bytes, bytearray, int, float, bool and None"
            )),
            Failure::Overflow => PyOverflowError::new_err(format!(
                "integer out of msgpack's range -2**63 .. 2**64-1 (at {at})"
            )),
            Failure::TooDeep => PyValueError::new_err(format!(
                "{what} is nested more than {MAX_DEPTH} levels deep (or contains itself), at {at}"
            )),
            Failure::Python(e) => e,
        }
    })
}

/// `path` collects, innermost first, the subscripts leading to a failure.
fn convert(obj: &Bound<'_, PyAny>, depth: usize, path: &mut Vec<String>) -> Result<Value, Failure> {
    if obj.is_none() {
        return Ok(Value::Nil);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Boolean(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        return obj
            .extract::<u64>()
            .map(Value::from)
            .map_err(|_| Failure::Overflow);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::F64(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let s = s.to_cow().map_err(Failure::Python)?;
        return Ok(Value::from(s.as_ref()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Binary(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Binary(b.to_vec()));
    }
    let container = obj.is_instance_of::<PyDict>()
        || obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>();
    if container && depth >= MAX_DEPTH {
        return Err(Failure::TooDeep);
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = convert(&k, depth + 1, path).inspect_err(|_| {
                path.push(format!("[key {}]", short_repr(&k)));
            })?;
            let value = convert(&v, depth + 1, path).inspect_err(|_| {
                path.push(format!("[{}]", short_repr(&k)));
            })?;
            entries.push((key, value));
        }
        return Ok(Value::Map(entries));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter().map_err(Failure::Python)?.enumerate() {
            let item = item.map_err(Failure::Python)?;
            items.push(
                convert(&item, depth + 1, path).inspect_err(|_| path.push(format!("[{i}]")))?,
            );
        }
        return Ok(Value::Array(items));
    }
    let name = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(Failure::Type(name))
}

/// `repr()` of a key, cut short, for error paths.
fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let text = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into());
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(37).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Converts a msgpack value into a Python object.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Nil => py.None().into_bound(py),
        Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Integer(i) => match i.as_i64() {
            Some(i) => i.into_pyobject(py)?.into_any(),
            None => i.as_u64().unwrap_or(0).into_pyobject(py)?.into_any(),
        },
        Value::F32(f) => PyFloat::new(py, f64::from(*f)).into_any(),
        Value::F64(f) => PyFloat::new(py, *f).into_any(),
        Value::String(s) => match s.as_str() {
            Some(s) => PyString::new(py, s).into_any(),
            None => PyBytes::new(py, s.as_bytes()).into_any(),
        },
        Value::Binary(b) => PyBytes::new(py, b).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (k, v) in entries {
                dict.set_item(to_py_key(py, k)?, to_py(py, v)?)?;
            }
            dict.into_any()
        }
        Value::Ext(code, data) => (*code, PyBytes::new(py, data))
            .into_pyobject(py)?
            .into_any(),
    })
}

/// A map key as a hashable Python object: arrays become tuples, maps tuples of pairs.
fn to_py_key<'py>(py: Python<'py>, key: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match key {
        Value::Array(items) => {
            let items = items
                .iter()
                .map(|i| to_py_key(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any()
        }
        Value::Map(entries) => {
            let pairs = entries
                .iter()
                .map(|(k, v)| PyTuple::new(py, [to_py_key(py, k)?, to_py_key(py, v)?]))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, pairs)?.into_any()
        }
        other => to_py(py, other)?,
    })
}
