//! `PingServer`: a pingable server (the seed's `PingableServerMixin` on a `Server`)
//! running on the package's background runtime.
//!
//! The server holds no GIL: its tasks run on the runtime's threads, which never attach to
//! Python. The `dynamic` callable is called once per ping on threads of its own, and the
//! ping waits for it at most `callback_timeout` ([`crate::callbacks`]). An exception
//! there (or a result that is not a dict of msgpack-able values) is logged on the
//! `peng3dnet_rs` logger and the pong is sent without dynamic data, with the static data as
//! usual; so is a late answer (logged as a warning, rate-limited).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use peng3dnet::tls::{ClientCertPolicy, ServerTls};
use peng3dnet::{PingResponder, Server};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::callbacks::Callbacks;
use crate::convert::to_py;
use crate::errors::tls_setup_error;
use crate::ping::{address, data_map, duration};
use crate::runtime::{block_on, runtime};

/// A pingable peng3dnet server, answering on background threads.
///
/// `PingServer(addr, data=None, dynamic=None, *, writeback=True, tls=None,
/// callback_timeout=1.0)`: `addr` is where to listen (`"host:port"` or `(host, port)`;
/// port 0 picks a free one), `data` the static dict every pong carries (the seed's
/// `pingdata`), `dynamic` a callable `dynamic(msg, client_id) -> dict` called for every
/// ping (the seed's `getPingData`) on threads of its own, `writeback` whether the ping is
/// echoed under `oldmsg` (the seed's `WRITEBACK`), `tls` a dict with `cert` and `key` (PEM
/// files) and optionally `client_ca` to serve over TLS, `callback_timeout` how many seconds
/// a ping waits for `dynamic` before it is answered with the static data only (logged).
/// Call `start()` and `stop()`, or use it as a context manager.
#[pyclass(frozen, module = "peng3dnet_rs")]
pub(crate) struct PingServer {
    /// Where to listen, as the library's target string.
    addr: String,
    /// Builds the pongs; shared with the running server, so `data` can change live.
    responder: PingResponder,
    /// The threads that call `dynamic`, if given.
    callbacks: Option<Callbacks>,
    /// How long a ping waits for `dynamic`.
    callback_timeout: Duration,
    /// TLS, if configured.
    tls: Option<ServerTls>,
    /// The running server, if started.
    server: Mutex<Option<Server>>,
}

impl PingServer {
    fn running(&self) -> Option<Server> {
        self.server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn running_or_err(&self) -> PyResult<Server> {
        self.running()
            .ok_or_else(|| PyRuntimeError::new_err("the PingServer is not running; call start()"))
    }
}

impl Drop for PingServer {
    fn drop(&mut self) {
        // Garbage-collected while running: stop in the background rather than leak the
        // listening socket. (Waiting here could deadlock: we may hold the GIL.)
        if let Some(callbacks) = &self.callbacks {
            callbacks.close();
        }
        let server = self.server.get_mut().map(Option::take).unwrap_or(None);
        if let Some(server) = server {
            runtime().spawn(async move { server.shutdown().await });
        }
    }
}

#[pymethods]
impl PingServer {
    #[new]
    // callback_timeout: the module docs of `callbacks` say why 1 s.
    #[pyo3(signature = (
        addr, data=None, dynamic=None, *, writeback=true, tls=None, callback_timeout=1.0
    ))]
    fn new(
        py: Python<'_>,
        addr: &Bound<'_, PyAny>,
        data: Option<&Bound<'_, PyAny>>,
        dynamic: Option<Bound<'_, PyAny>>,
        writeback: bool,
        tls: Option<&Bound<'_, PyAny>>,
        callback_timeout: f64,
    ) -> PyResult<Self> {
        let addr = address(addr)?;
        let callback_timeout = duration(callback_timeout, "callback_timeout")?;
        let mut responder = PingResponder::new()
            .with_static_data(data_map(data, "data")?)
            .with_writeback(writeback);
        let mut callbacks = None;
        if let Some(dynamic) = dynamic.filter(|d| !d.is_none()) {
            if !dynamic.is_callable() {
                return Err(PyTypeError::new_err(
                    "dynamic must be a callable dynamic(msg, client_id) -> dict, or None",
                ));
            }
            let pool = Callbacks::new(dynamic.unbind(), callback_timeout);
            let provider = pool.clone();
            responder = responder.with_dynamic(move |request| provider.answer(request));
            callbacks = Some(pool);
        }
        let tls = server_tls(py, tls)?;
        Ok(PingServer {
            addr,
            responder,
            callbacks,
            callback_timeout,
            tls,
            server: Mutex::new(None),
        })
    }

    /// Binds and starts answering in the background; returns the server itself.
    /// Raises `OSError` if the address cannot be bound, `RuntimeError` if already running.
    fn start(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        let this = slf.get();
        if this.running().is_some() {
            return Err(PyRuntimeError::new_err("the PingServer is already running"));
        }
        let mut builder = Server::builder().pingable(this.responder.clone());
        if let Some(tls) = &this.tls {
            builder = builder.tls(tls.clone());
        }
        let addr = this.addr.clone();
        if let Some(callbacks) = &this.callbacks {
            callbacks.open();
        }
        let bound = block_on(py, async move {
            builder.bind(addr.as_str()).await.map_err(|e| match e {
                peng3dnet::server::ServerError::Bind(io) => io,
                other => std::io::Error::other(other.to_string()),
            })
        })?;
        let server = bound.map_err(|e| {
            let message = e.to_string();
            // The library's error names the address and keeps the OS error inside.
            let os_code = e.raw_os_error().or_else(|| {
                e.get_ref()
                    .and_then(|inner| inner.downcast_ref::<peng3dnet::server::BindError>())
                    .and_then(|b| b.source.raw_os_error())
            });
            match os_code {
                Some(code) => PyOSError::new_err((code, message)),
                None => PyOSError::new_err(message),
            }
        })?;
        let mut slot = this.server.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            // Started by another thread meanwhile: keep theirs.
            drop(slot);
            block_on(py, async move { server.shutdown().await })?;
            return Err(PyRuntimeError::new_err("the PingServer is already running"));
        }
        *slot = Some(server);
        drop(slot);
        Ok(slf)
    }

    /// Stops: no new connections, every open one closed with `servershutdown`, and waits
    /// until they are gone (bounded by the library's write timeout and close linger).
    /// Pings waiting for `dynamic` are answered with the static data at once, so a
    /// callable that does not return cannot hold it up (its call is abandoned).
    /// Does nothing if not running.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            if let Some(callbacks) = &self.callbacks {
                callbacks.halt();
            }
            block_on(py, async move { server.shutdown().await })?;
        }
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        Self::start(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    /// Whether the server is running.
    #[getter(running)]
    fn is_running(&self) -> bool {
        self.running().is_some()
    }

    /// The address listened on, `(host, port)`, once started (the real port when 0 was
    /// asked for).
    #[getter]
    fn address<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let addr = self.running_or_err()?.local_addr();
        (addr.ip().to_string(), addr.port()).into_pyobject(py)
    }

    /// The port listened on, once started.
    #[getter]
    fn port(&self) -> PyResult<u16> {
        Ok(self.running_or_err()?.local_addr().port())
    }

    /// The static data every pong carries (a copy); assign a dict to change it, also
    /// while running.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.responder.static_data())
    }

    #[setter]
    fn set_data(&self, data: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let data = data.ok_or_else(|| PyTypeError::new_err("cannot delete data"))?;
        self.responder
            .set_static_data(data_map(Some(data), "data")?);
        Ok(())
    }

    /// Whether pings are echoed under `oldmsg`.
    #[getter]
    fn writeback(&self) -> bool {
        self.responder.writeback()
    }

    /// How many seconds a ping waits for `dynamic` before it is answered with the static
    /// data only.
    #[getter]
    fn callback_timeout(&self) -> f64 {
        self.callback_timeout.as_secs_f64()
    }

    /// The server's counters: `accepted` connections, `refused` (server full), `pings`
    /// answered, `connected` now. Zeros when not running.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let server = self.running();
        let read = |f: fn(&peng3dnet::Stats) -> &std::sync::atomic::AtomicU64| {
            server
                .as_ref()
                .map_or(0, |s| f(s.stats()).load(Ordering::Relaxed))
        };
        dict.set_item("accepted", read(|s| &s.accepted))?;
        dict.set_item("refused", read(|s| &s.refused))?;
        dict.set_item("pings", read(|s| &s.pings))?;
        dict.set_item("connected", read(|s| &s.connected))?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        match self.running() {
            Some(server) => format!("<PingServer {} running>", server.local_addr()),
            None => format!("<PingServer {} stopped>", self.addr),
        }
    }
}

/// Reads the `tls` argument of a server: `None`, or a dict with `cert` and `key` (PEM
/// files) and optionally `client_ca` (a PEM CA file: clients may present a certificate
/// signed by it) and `require_client_cert` (then they must).
fn server_tls(py: Python<'_>, tls: Option<&Bound<'_, PyAny>>) -> PyResult<Option<ServerTls>> {
    let Some(tls) = tls.filter(|t| !t.is_none()) else {
        return Ok(None);
    };
    let options = tls.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(
            "tls must be None or a dict (cert, key, client_ca, require_client_cert)",
        )
    })?;
    for key in options.keys() {
        let key: String = key.extract()?;
        if !["cert", "key", "client_ca", "require_client_cert"].contains(&key.as_str()) {
            return Err(PyValueError::new_err(format!(
                "unknown tls option {key:?} (known: cert, key, client_ca, require_client_cert)"
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
    let (Some(cert), Some(key)) = (path("cert")?, path("key")?) else {
        return Err(PyValueError::new_err(
            "tls needs both \"cert\" and \"key\" (PEM files)",
        ));
    };
    let require: bool = options
        .get_item("require_client_cert")?
        .map(|v| v.extract())
        .transpose()?
        .unwrap_or(false);
    let policy = match (path("client_ca")?, require) {
        (None, false) => ClientCertPolicy::None,
        (None, true) => {
            return Err(PyValueError::new_err(
                "tls: require_client_cert needs \"client_ca\"",
            ))
        }
        (Some(ca), false) => ClientCertPolicy::Optional(ca),
        (Some(ca), true) => ClientCertPolicy::Required(ca),
    };
    ServerTls::from_pem_files(&cert, &key, policy)
        .map(Some)
        .map_err(|e| tls_setup_error(py, e.to_string()))
}
