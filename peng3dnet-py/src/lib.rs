//! # peng3dnet-rs: the seed's ping API for Python, backed by the Rust library
//!
//! The native module `peng3dnet_rs._native` of the Python package `peng3dnet-rs`; the
//! package's `__init__.py` re-exports it with the exception classes of `errors.py`.
//!
//! ## Layout
//!
//! | module | what |
//! |---|---|
//! | [`ping`] | `ping_server`, `ping_server_async`; reading addresses, data, timeouts, TLS |
//! | [`many`] | `ping_many`: many targets, bounded concurrency, results as they come |
//! | [`session`] | `PingSession`, `AsyncPingSession`: one connection, many pings |
//! | [`server`] | `PingServer`: a pingable server on the background runtime |
//! | [`callbacks`] | its `dynamic` callable, on threads of its own, under a deadline |
//! | [`convert`] | msgpack values to Python objects and back |
//! | [`errors`] | the library's ping errors as Python exceptions |
//! | [`runtime`] | the tokio runtime, and blocking on it without the GIL |
#![warn(missing_docs, unreachable_pub)]

use pyo3::prelude::*;

mod callbacks;
mod convert;
mod errors;
mod many;
mod ping;
mod runtime;
mod server;
mod session;

/// The native part of `peng3dnet_rs`; import `peng3dnet_rs` instead.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ping::ping_server, m)?)?;
    m.add_function(wrap_pyfunction!(ping::ping_server_async, m)?)?;
    m.add_function(wrap_pyfunction!(many::ping_many, m)?)?;
    m.add_class::<many::PingMany>()?;
    m.add_class::<many::PingResult>()?;
    m.add_class::<server::PingServer>()?;
    m.add_class::<session::PingSession>()?;
    m.add_class::<session::AsyncPingSession>()?;
    m.add("PROTOCOL_VERSION", peng3dnet::protocol::PROTOVERSION)?;
    m.add("REFERENCE_VERSION", peng3dnet::protocol::VERSION)?;
    Ok(())
}
