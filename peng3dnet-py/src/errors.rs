//! The library's [`PingError`]s as Python exceptions.
//!
//! The exception classes live in Python (`peng3dnet_rs/errors.py`), where they can also
//! derive from the built-in `TimeoutError`, `ConnectionRefusedError` and the like, so
//! that code catching those keeps working. This module picks the class for each reason
//! and fills in its attributes.

use std::io::ErrorKind;

use peng3dnet::PingError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Module holding the exception classes.
const MODULE: &str = "peng3dnet_rs.errors";

/// Builds the Python exception for a failed ping.
pub(crate) fn ping_error(py: Python<'_>, error: &PingError) -> PyErr {
    match build(py, error) {
        Ok(err) => err,
        // Only if the package is broken (errors.py missing); still say what happened.
        Err(import_failed) => import_failed,
    }
}

/// The exception instance (not raised) for a failed ping, as `PingResult.error` holds it.
pub(crate) fn ping_error_value(py: Python<'_>, error: &PingError) -> Py<PyAny> {
    ping_error(py, error).into_value(py).into_any()
}

fn build(py: Python<'_>, error: &PingError) -> PyResult<PyErr> {
    let attrs = PyDict::new(py);
    // The library's word for the failure, as the CLI's JSON and the exporter say it.
    attrs.set_item("kind", error.kind().as_str())?;
    let class = match error {
        PingError::Resolve { target, .. } => {
            attrs.set_item("target", target)?;
            "ResolveError"
        }
        PingError::Connect { addr, source } => {
            attrs.set_item("address", addr.to_string())?;
            if let Some(code) = source.raw_os_error() {
                attrs.set_item("errno", code)?;
            }
            if source.kind() == ErrorKind::ConnectionRefused {
                "ConnectionRefused"
            } else {
                "ConnectFailed"
            }
        }
        PingError::Timeout { phase, after, .. } => {
            attrs.set_item("phase", phase.as_str())?;
            attrs.set_item("after", after.as_secs_f64())?;
            "PingTimeout"
        }
        PingError::NotPeng3dnet(_) => "NotPeng3dnetServer",
        PingError::ProtocolMismatch => "ProtocolMismatch",
        PingError::ClosedByPeer(reason) => {
            attrs.set_item("reason", reason.as_ref().map(|r| r.as_str()))?;
            "ClosedByServer"
        }
        PingError::Protocol(reason) => {
            attrs.set_item("reason", reason.as_str())?;
            "ProtocolViolation"
        }
        PingError::Tls(_) | PingError::TlsRequired => "TlsError",
        PingError::Io(_) | PingError::Frame(peng3dnet::FrameError::Io(_)) => "ConnectionLost",
        _ => "PingError",
    };
    let module = py.import(MODULE)?;
    let instance = module.getattr(class)?.call1((error.to_string(),))?;
    for (k, v) in attrs.iter() {
        instance.setattr(k.cast::<pyo3::types::PyString>()?, v)?;
    }
    Ok(PyErr::from_value(instance))
}

/// A `TlsError` for TLS set-up that failed before any connection (a CA file that does
/// not load, for example).
pub(crate) fn tls_setup_error(py: Python<'_>, message: String) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let instance = py.import(MODULE)?.getattr("TlsError")?.call1((message,))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|e| e)
}

/// An exception of the package's `errors` module by class name, with `message`, its
/// attributes set by `attrs`.
pub(crate) fn package_error(
    py: Python<'_>,
    class: &str,
    message: String,
    attrs: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<()>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let instance = py.import(MODULE)?.getattr(class)?.call1((message,))?;
        attrs(&instance)?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|e| e)
}
