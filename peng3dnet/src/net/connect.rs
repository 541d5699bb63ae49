//! Opening a TCP connection from a chosen source address, on tokio and on a blocking
//! socket alike, and telling a local shortage from the peer's failure. Everything that
//! connects ([`super::happy_eyeballs`], the clients, the pingers, the master client) comes
//! here; nothing here knows of the protocol.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// Connects to `addr`, from `local` if given (bound before connecting, port chosen by
/// the system).
pub(crate) async fn connect_from(addr: SocketAddr, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = local else {
        return TcpStream::connect(addr).await;
    };
    check_source_family(ip, addr)?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket
        .bind(SocketAddr::new(ip, 0))
        .map_err(|e| source_error(ip, e))?;
    socket.connect(addr).await
}

/// A source address of the other family than the target's cannot reach it.
pub(crate) fn check_source_family(ip: IpAddr, addr: SocketAddr) -> io::Result<()> {
    if ip.is_ipv4() == addr.is_ipv4() {
        return Ok(());
    }
    let family = |v4: bool| if v4 { "IPv4" } else { "IPv6" };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "the source address {ip} is {} but the server address is {}",
            family(ip.is_ipv4()),
            family(addr.is_ipv4())
        ),
    ))
}

/// The error binding to a source address: says which.
pub(crate) fn source_error(ip: IpAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot use source address {ip}: {e}"))
}

/// Connects to `addr` within `left`, from `local` if given (bound before connecting).
pub(crate) fn connect_from_blocking(
    addr: SocketAddr,
    local: Option<IpAddr>,
    left: Duration,
) -> io::Result<std::net::TcpStream> {
    let Some(ip) = local else {
        return std::net::TcpStream::connect_timeout(&addr, left);
    };
    check_source_family(ip, addr)?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket
        .bind(&SocketAddr::new(ip, 0).into())
        .map_err(|e| source_error(ip, e))?;
    socket.connect_timeout(&addr.into(), left)?;
    Ok(socket.into())
}

/// True for an error that means this machine ran short (file descriptors, buffers,
/// memory), not that the peer failed.
pub(crate) fn is_local_exhaustion(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::OutOfMemory
    }
}
