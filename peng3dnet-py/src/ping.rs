//! Pinging from Python: `ping_server`, `ping_server_async` and what they share (reading
//! the address, data, timeout and TLS arguments).

use std::path::PathBuf;
use std::time::Duration;

use peng3dnet::tls::ClientTls;
use peng3dnet::value::map;
use peng3dnet::{PingError, PingOptions, PingReply};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};

use crate::convert::{to_py, to_value};
use crate::errors::{ping_error, tls_setup_error};
use crate::runtime::block_on;

/// Reads a server's own address: `"host:port"` (or `"host"`, port 8080; `"[v6]:port"`) or
/// the seed's `(host, port)` tuple, whose port must be in range and host not empty
/// (`ValueError`). Returns the library's target string.
pub(crate) fn address(addr: &Bound<'_, PyAny>) -> PyResult<String> {
    read_address(addr, true)
}

/// Reads the address of a server to ping, as [`address`] does, but a tuple's values are
/// judged by the library, as a string's are: `("h", 70000)` and `"h:99999"` both raise
/// `ResolveError` at the ping (in `ping_many`, that target's result), one rule for a bad
/// port whatever its form. Wrong types are still a `TypeError` at once.
pub(crate) fn target(addr: &Bound<'_, PyAny>) -> PyResult<String> {
    read_address(addr, false)
}

fn read_address(addr: &Bound<'_, PyAny>, check_values: bool) -> PyResult<String> {
    if let Ok(s) = addr.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if addr.is_instance_of::<PyTuple>() || addr.is_instance_of::<PyList>() {
        let (host, port): (Bound<'_, PyAny>, Bound<'_, PyAny>) = addr.extract().map_err(|_| {
            PyTypeError::new_err("an address tuple must have two items: (host, port)")
        })?;
        let host = host
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("the host of an address must be a str"))?
            .to_cow()?
            .into_owned();
        if port.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(
                "the port of an address must be an int",
            ));
        }
        let port: i64 = port
            .extract()
            .map_err(|_| PyTypeError::new_err("the port of an address must be an int"))?;
        if check_values {
            u16::try_from(port).map_err(|_| {
                PyValueError::new_err(format!("port {port} is out of range 0..65535"))
            })?;
            if host.is_empty() {
                return Err(PyValueError::new_err("the host of an address is empty"));
            }
        }
        return Ok(if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        });
    }
    let type_name = addr
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    Err(PyTypeError::new_err(format!(
        "an address is a 'host:port' str or a (host, port) tuple, not {type_name}"
    )))
}

/// Reads a timeout in seconds.
pub(crate) fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a positive number of seconds, not {seconds}"
        )));
    }
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| PyValueError::new_err(format!("{what} of {seconds} s is too large")))
}

/// Reads the `data` argument: a dict, or `None` for an empty one.
pub(crate) fn data_map(data: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<peng3dnet::Value> {
    match data {
        None => Ok(map([])),
        Some(d) if d.is_none() => Ok(map([])),
        Some(d) if d.is_instance_of::<PyDict>() => to_value(d, what),
        Some(d) => {
            let type_name = d
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            Err(PyTypeError::new_err(format!(
                "{what} must be a dict or None, not {type_name}"
            )))
        }
    }
}

/// Reads the `tls` argument of a client:
/// `None`/`False` plain TCP; `True` verify against the system's roots; `"insecure"` no
/// verification (self-signed test servers only); or a dict with `ca` (PEM file), and
/// optionally `cert` and `key` (a client certificate), `server_name`, `insecure`.
pub(crate) fn client_tls(
    py: Python<'_>,
    tls: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<ClientTls>> {
    let Some(tls) = tls else { return Ok(None) };
    if tls.is_none() {
        return Ok(None);
    }
    let setup = |r: Result<ClientTls, peng3dnet::tls::TlsError>| {
        r.map_err(|e| tls_setup_error(py, e.to_string()))
    };
    if let Ok(b) = tls.cast::<PyBool>() {
        return if b.is_true() {
            setup(ClientTls::with_system_roots()).map(Some)
        } else {
            Ok(None)
        };
    }
    if let Ok(s) = tls.cast::<PyString>() {
        return match s.to_cow()?.as_ref() {
            "insecure" => Ok(Some(ClientTls::dangerous_no_verification())),
            other => Err(PyValueError::new_err(format!(
                "tls={other:?}: expected True, False, None, \"insecure\" or a dict with \"ca\""
            ))),
        };
    }
    let Ok(options) = tls.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(
            "tls must be None, a bool, \"insecure\" or a dict (ca, cert, key, server_name, insecure)",
        ));
    };
    for key in options.keys() {
        let key: String = key.extract()?;
        if !["ca", "cert", "key", "server_name", "insecure"].contains(&key.as_str()) {
            return Err(PyValueError::new_err(format!(
                "unknown tls option {key:?} (known: ca, cert, key, server_name, insecure)"
            )));
        }
    }
    let path = |key: &str| -> PyResult<Option<PathBuf>> {
        options
            .get_item(key)?
            .filter(|v| !v.is_none())
            .map(|v| v.extract())
            .transpose()
    };
    let insecure: bool = options
        .get_item("insecure")?
        .map(|v| v.extract())
        .transpose()?
        .unwrap_or(false);
    let server_name: Option<String> = options
        .get_item("server_name")?
        .filter(|v| !v.is_none())
        .map(|v| v.extract())
        .transpose()?;
    let (ca, cert, key) = (path("ca")?, path("cert")?, path("key")?);
    let client = if insecure {
        if ca.is_some() || cert.is_some() {
            return Err(PyValueError::new_err(
                "tls: \"insecure\" does not verify, so it takes no \"ca\"; client certificates need \"ca\"",
            ));
        }
        ClientTls::dangerous_no_verification()
    } else {
        match (ca, cert, key) {
            (Some(ca), None, None) => setup(ClientTls::with_ca_file(&ca))?,
            (Some(ca), Some(cert), Some(key)) => {
                setup(ClientTls::with_ca_file_and_client_cert(&ca, &cert, &key))?
            }
            (None, None, None) => setup(ClientTls::with_system_roots())?,
            (_, Some(_), None) | (_, None, Some(_)) => {
                return Err(PyValueError::new_err(
                    "tls: a client certificate needs both \"cert\" and \"key\"",
                ))
            }
            (None, Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "tls: a client certificate needs \"ca\" to verify the server",
                ))
            }
        }
    };
    Ok(Some(match server_name {
        Some(name) => client.with_server_name(&name),
        None => client,
    }))
}

/// Builds the library's options from the Python arguments.
pub(crate) fn options(
    py: Python<'_>,
    data: Option<&Bound<'_, PyAny>>,
    timeout: f64,
    tls: Option<&Bound<'_, PyAny>>,
) -> PyResult<PingOptions> {
    Ok(PingOptions {
        data: data_map(data, "data")?,
        timeout: duration(timeout, "timeout")?,
        tls: client_tls(py, tls)?,
        ..PingOptions::default()
    })
}

/// A reply as the seed's `pingServer` returns it: the server's map plus `recvtime` and
/// `delay`.
pub(crate) fn reply_dict(py: Python<'_>, reply: &PingReply) -> PyResult<Py<PyAny>> {
    Ok(to_py(py, reply.data())?.unbind())
}

/// The Python result of one ping.
pub(crate) fn outcome(py: Python<'_>, result: Result<PingReply, PingError>) -> PyResult<Py<PyAny>> {
    match result {
        Ok(reply) => reply_dict(py, &reply),
        Err(e) => Err(ping_error(py, &e)),
    }
}

/// Pings a peng3dnet server once and returns its answer (the seed's `pingServer`).
///
/// `addr` is `"host:port"` or a `(host, port)` tuple; `data` a dict sent in the ping
/// (`time` and `seq` are set by the library); `timeout` the seconds allowed for the
/// whole ping; `tls` see the package docs. Returns the server's dict plus `recvtime`
/// (Unix seconds) and `delay` (seconds). Raises a `PingError` subclass on failure.
/// Releases the GIL while it waits.
#[pyfunction]
#[pyo3(signature = (addr, data=None, timeout=10.0, tls=None))]
pub(crate) fn ping_server(
    py: Python<'_>,
    addr: &Bound<'_, PyAny>,
    data: Option<&Bound<'_, PyAny>>,
    timeout: f64,
    tls: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let target = target(addr)?;
    let options = options(py, data, timeout, tls)?;
    let result = block_on(py, async move {
        peng3dnet::ping_server(&target, &options).await
    })?;
    outcome(py, result)
}

/// `ping_server` for asyncio: returns an awaitable with the same result. Cancelling it
/// closes the connection.
#[pyfunction]
#[pyo3(signature = (addr, data=None, timeout=10.0, tls=None))]
pub(crate) fn ping_server_async<'py>(
    py: Python<'py>,
    addr: &Bound<'py, PyAny>,
    data: Option<&Bound<'py, PyAny>>,
    timeout: f64,
    tls: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let target = target(addr)?;
    let options = options(py, data, timeout, tls)?;
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let result = peng3dnet::ping_server(&target, &options).await;
        Python::attach(|py| outcome(py, result))
    })
}
