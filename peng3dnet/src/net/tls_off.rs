//! TLS is off: the library was built without its `tls` feature (on by default), so it
//! depends on no rustls. The TLS types keep their names but have no values, so
//! `ClientBuilder::tls`, `PingOptions::tls` and `ServerBuilder::tls` keep their shape and
//! can never be given one: every connection is plain TCP. Build with the `tls` feature
//! for TLS.

use std::io;

use tokio::net::TcpStream;

use crate::transport::Stream;

pub use peng3dnet_proto::security::SecurityLevel;

/// TLS settings of a server; without the `tls` feature there are none.
#[derive(Debug, Clone)]
pub enum ServerTls {}

impl ServerTls {
    pub(crate) async fn accept(&self, _tcp: TcpStream) -> io::Result<Stream> {
        match *self {}
    }
}

/// TLS settings of a client; without the `tls` feature there are none.
#[derive(Debug, Clone)]
pub enum ClientTls {}

impl ClientTls {
    /// Whether the server's certificate is checked (never called: there is no value).
    pub fn verifies(&self) -> bool {
        match *self {}
    }

    /// Runs the TLS handshake (never called: there is no value).
    pub async fn connect(&self, _host: &str, _tcp: TcpStream) -> Result<Stream, io::Error> {
        match *self {}
    }
}

/// The error of a failed TLS handshake, in words.
pub fn describe_handshake_error(e: &io::Error) -> String {
    format!("TLS handshake failed: {e}")
}
