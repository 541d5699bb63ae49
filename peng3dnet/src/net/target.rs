//! Targets: `host`, `host:port`, `[v6]:port`, a bare IPv6 address or a socket address,
//! with the default port 8080, resolved to socket addresses of a chosen family.

use std::net::{IpAddr, SocketAddr};

use crate::config::DEFAULT_PORT;

/// Which address family to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Whatever the name resolves to, in resolver order.
    #[default]
    Any,
    /// IPv4 only (`-4`).
    V4,
    /// IPv6 only (`-6`).
    V6,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Any => "IP",
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

impl Family {
    /// Whether `addr` belongs to this family.
    pub fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

/// A target split into host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address literal, without brackets.
    pub host: String,
    /// Port, [`DEFAULT_PORT`] when none was given.
    pub port: u16,
}

/// `host` with the port of the first of `addrs`, as a [`Target`] shows it
/// (`example.org:8080`, `[::1]:8080`): what an error names when a target was given as
/// a host and its resolved addresses. Several servers often share a host, and only the
/// port tells them apart.
///
/// ```
/// use peng3dnet::target::name_with_port;
///
/// let addrs = ["127.0.0.1:39975".parse().unwrap()];
/// assert_eq!(name_with_port("127.0.0.1", &addrs), "127.0.0.1:39975");
/// assert_eq!(name_with_port("::1", &["[::1]:8080".parse().unwrap()]), "[::1]:8080");
/// assert_eq!(name_with_port("h", &[]), "h");
/// ```
pub fn name_with_port(host: &str, addrs: &[std::net::SocketAddr]) -> String {
    match addrs.first() {
        Some(addr) => Target {
            host: host.to_owned(),
            port: addr.port(),
        }
        .to_string(),
        None => host.to_owned(),
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Anything that names a server: `"host"`, `"host:port"`, `"[v6]:port"` (a `&str` or
/// `String`), a [`SocketAddr`], a `(host, port)` pair (the seed's address form) or a
/// [`Target`]. The ping and client functions take it, as `bind` takes any address.
///
/// ```
/// use std::net::SocketAddr;
/// use peng3dnet::target::{Target, ToTarget};
///
/// let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// for target in [
///     "127.0.0.1:9000".to_target(8080).unwrap(),
///     addr.to_target(8080).unwrap(),
///     ("127.0.0.1", 9000).to_target(8080).unwrap(),
/// ] {
///     assert_eq!(target.to_string(), "127.0.0.1:9000");
/// }
/// assert_eq!("example.org".to_target(8080).unwrap().port, 8080);
/// ```
pub trait ToTarget {
    /// The target, with `default_port` where none is given.
    fn to_target(&self, default_port: u16) -> Result<Target, BadTarget>;
}

impl ToTarget for str {
    fn to_target(&self, default_port: u16) -> Result<Target, BadTarget> {
        Target::parse(self, default_port)
    }
}

impl ToTarget for String {
    fn to_target(&self, default_port: u16) -> Result<Target, BadTarget> {
        Target::parse(self, default_port)
    }
}

impl ToTarget for SocketAddr {
    fn to_target(&self, _default_port: u16) -> Result<Target, BadTarget> {
        Ok(Target::from(*self))
    }
}

impl ToTarget for Target {
    fn to_target(&self, _default_port: u16) -> Result<Target, BadTarget> {
        Ok(self.clone())
    }
}

impl ToTarget for (&str, u16) {
    fn to_target(&self, _default_port: u16) -> Result<Target, BadTarget> {
        Target::parse(self.0, self.1).map(|t| Target {
            host: t.host,
            port: self.1,
        })
    }
}

impl ToTarget for (String, u16) {
    fn to_target(&self, default_port: u16) -> Result<Target, BadTarget> {
        (self.0.as_str(), self.1).to_target(default_port)
    }
}

impl ToTarget for (IpAddr, u16) {
    fn to_target(&self, _default_port: u16) -> Result<Target, BadTarget> {
        Ok(Target::from(SocketAddr::from(*self)))
    }
}

impl<T: ToTarget + ?Sized> ToTarget for &T {
    fn to_target(&self, default_port: u16) -> Result<Target, BadTarget> {
        (**self).to_target(default_port)
    }
}

/// Why a target string is not a target. Its message says what is wrong in plain words
/// when it can tell (a port out of range, port 0), else which forms a target takes.
///
/// ```
/// use peng3dnet::target::Target;
/// let e = Target::parse("example.org:99999", 8080).unwrap_err();
/// assert!(e.to_string().contains("port 99999 is out of range"));
/// let e = Target::parse("example.org:0", 8080).unwrap_err();
/// assert!(e.to_string().contains("port 0"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {:?}: {}", .0, why(.0))]
pub struct BadTarget(pub String);

/// What is wrong with a target that does not parse.
fn why(s: &str) -> String {
    let port = match s.trim().strip_prefix('[') {
        Some(rest) => rest.split_once("]:").map(|(_, p)| p),
        None => s.trim().rsplit_once(':').map(|(_, p)| p),
    };
    match port {
        Some("0") => "port 0 cannot be connected to; servers listen on ports 1 to 65535".into(),
        Some(p)
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_err() =>
        {
            format!("port {p} is out of range: ports are 1 to 65535")
        }
        Some("") => "the port after ':' is missing".into(),
        _ => "expected host, host:port or [v6]:port".into(),
    }
}

impl Target {
    /// Parses a target, with `default_port` where none is given.
    ///
    /// ```
    /// use peng3dnet::target::Target;
    /// assert_eq!(Target::parse("example.org", 8080).unwrap().to_string(), "example.org:8080");
    /// assert_eq!(Target::parse("[::1]:9000", 8080).unwrap().port, 9000);
    /// assert_eq!(Target::parse("::1", 8080).unwrap().host, "::1");
    /// assert!(Target::parse("host:notaport", 8080).is_err());
    /// ```
    pub fn parse(s: &str, default_port: u16) -> Result<Target, BadTarget> {
        let bad = || BadTarget(s.to_owned());
        let s = s.trim();
        if s.is_empty() {
            return Err(bad());
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(bad)?,
            };
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            return Ok(Target {
                host: host.to_owned(),
                port,
            });
        }
        if s.parse::<IpAddr>().is_ok() {
            return Ok(Target {
                host: s.to_owned(),
                port: default_port,
            });
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains(':') => Ok(Target {
                host: host.to_owned(),
                port: port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            }),
            Some(_) => Err(bad()),
            None => Ok(Target {
                host: s.to_owned(),
                port: default_port,
            }),
        }
    }

    /// Parses with the protocol's default port, 8080.
    pub fn parse_default(s: &str) -> Result<Target, BadTarget> {
        Self::parse(s, DEFAULT_PORT)
    }

    /// Resolves to the addresses of `family`, in resolver order.
    pub async fn resolve(&self, family: Family) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .filter(|a| family.admits(a))
            .collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {family} address for {}", self.host),
            ));
        }
        Ok(addrs)
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let t = |s| Target::parse(s, 8080);
        assert_eq!(
            t("localhost").unwrap(),
            Target {
                host: "localhost".into(),
                port: 8080
            }
        );
        assert_eq!(t("localhost:1").unwrap().port, 1);
        assert_eq!(
            t("127.0.0.1:9").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 9
            }
        );
        assert_eq!(
            t("[::1]").unwrap(),
            Target {
                host: "::1".into(),
                port: 8080
            }
        );
        assert_eq!(t("[::1]:7").unwrap().to_string(), "[::1]:7");
        for bad in [
            "",
            "a:b:c:",
            "[::1",
            "[nothost]:1",
            "h:70000",
            "[::1]x",
            "h:0",
            "[::1]:0",
            "h:",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn resolves_with_family_filter() {
        let t = Target::parse("127.0.0.1:5", 0).unwrap();
        assert_eq!(
            t.resolve(Family::Any).await.unwrap(),
            vec!["127.0.0.1:5".parse().unwrap()]
        );
        assert!(t.resolve(Family::V6).await.is_err());
    }
}
