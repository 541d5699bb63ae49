//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`), receiver side, without I/O.
//!
//! A load balancer in TCP mode (HAProxy's `send-proxy-v2`, and others) opens its own
//! connection to the server and starts it with a header naming the client it relays:
//! without it every server sees the balancer's address. This module
//!
//! - parses the header, text (v1) or binary (v2), with the [`ppp`] crate: [`parse`] looks
//!   at the bytes received so far and says whether they are a complete header, a prefix of
//!   one, or not one at all;
//! - holds the policy ([`ProxyPolicy`]): which sources are trusted to send one (CIDRs).
//!
//! The rules (spec section 2.2 and 2.3), as the server applies them:
//!
//! - a connection from a trusted source **must** start with a header; it is never guessed;
//! - a connection from a source that is not trusted is refused before anything is read
//!   (the header must not be accepted from it, and guessing whether it sent one is what the
//!   spec forbids);
//! - `LOCAL` (the balancer's own health checks), v1 `UNKNOWN`, and v2 `PROXY` with an
//!   unspecified or UNIX address family are served with the connection's own addresses;
//! - a header longer than [`MAX_HEADER_LEN`] bytes, or malformed, refuses the connection.
//!
//! ```
//! use peng3dnet_proto::proxy::{parse, ProxyPolicy};
//!
//! let policy: ProxyPolicy = "10.0.0.0/8".parse::<ProxyPolicy>()?;
//! assert!(policy.trusts("10.1.2.3".parse()?));
//! assert!(!policy.trusts("192.0.2.1".parse()?));
//!
//! let wire = b"PROXY TCP4 192.0.2.7 10.0.0.2 51234 8080\r\n\x00\x00\x00\x0c";
//! // A prefix is not a header yet:
//! assert!(parse(&wire[..20])?.is_none());
//! let header = parse(wire)?.expect("complete");
//! assert_eq!(header.len, 42); // the frame after it is left alone
//! assert_eq!(header.source.unwrap().to_string(), "192.0.2.7:51234");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Most bytes a header may take; a longer one is refused as oversized.
///
/// A v1 header is at most 107 bytes. A v2 header is 16 bytes plus up to 65,535 of
/// addresses and TLVs; the spec suggests receivers accept at least 216 bytes and
/// recommends that senders keep within 536, the minimum TCP segment, so that the header
/// arrives in one segment. HAProxy's `send-proxy-v2` without TLV options sends 28 bytes
/// (IPv4) or 52 (IPv6).
pub const MAX_HEADER_LEN: usize = 536;

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// How every v1 header starts.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest v1 header, CRLF included (spec 2.1).
const V1_MAX_LEN: usize = 107;

/// Version of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text: `PROXY TCP4 ...\r\n`.
    V1,
    /// Binary, with the 12-byte signature.
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Text or binary.
    pub version: Version,
    /// The v2 `LOCAL` command: the balancer speaks for itself (a health check).
    pub local: bool,
    /// The client the balancer relays, if the header names one: `None` for `LOCAL`, v1
    /// `UNKNOWN`, and v2 with an unspecified or UNIX address family. The receiver then uses
    /// the connection's own addresses.
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the balancer's front end), when named.
    pub destination: Option<SocketAddr>,
    /// Bytes the header takes; what follows belongs to the relayed connection.
    pub len: usize,
}

/// Why bytes are not a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The first bytes start neither a v1 nor a v2 header.
    #[error("the first bytes are not a PROXY protocol header")]
    Missing,
    /// The bytes start a header but break its rules.
    #[error("malformed PROXY protocol {version} header: {detail}")]
    Malformed {
        /// Which version it started as.
        version: Version,
        /// What is wrong, as the parser says it.
        detail: String,
    },
    /// The header is (or announces itself as) longer than [`MAX_HEADER_LEN`], or a v1
    /// header has no CRLF within 107 bytes.
    #[error("PROXY protocol {version} header too long: {len} bytes or more (at most {max})")]
    Oversized {
        /// Which version.
        version: Version,
        /// Its length, or the bytes seen without its end.
        len: usize,
        /// The most accepted.
        max: usize,
    },
}

/// Parses the bytes received so far on a connection.
///
/// `Ok(Some(header))`: a complete header, `header.len` bytes long (the bytes after it are
/// not looked at). `Ok(None)`: a prefix of a header (or nothing yet); more bytes are
/// needed. `Err`: not a header, malformed or oversized; more bytes would not change that.
///
/// Stateless: call it again with the longer buffer when more bytes arrive.
pub fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, ParseError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return parse_v2(buf);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return parse_v1(buf);
    }
    Err(ParseError::Missing)
}

fn parse_v2(buf: &[u8]) -> Result<Option<ProxyHeader>, ParseError> {
    use ppp::v2;
    if buf.len() >= 16 {
        let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > MAX_HEADER_LEN {
            return Err(ParseError::Oversized {
                version: Version::V2,
                len,
                max: MAX_HEADER_LEN,
            });
        }
    }
    // ppp tells a valid prefix (Incomplete, Partial) from a bad version, command, family
    // or protocol as soon as the bytes that hold them have arrived.
    let header = match v2::Header::try_from(buf) {
        Ok(header) => header,
        Err(v2::ParseError::Incomplete(_) | v2::ParseError::Partial(..)) => return Ok(None),
        Err(e) => {
            return Err(ParseError::Malformed {
                version: Version::V2,
                detail: e.to_string(),
            })
        }
    };
    // TLVs are unused, but one whose length runs past the header means the sender and we
    // disagree on where the header ends: refused, not skipped.
    for tlv in header.tlvs() {
        if let Err(e) = tlv {
            return Err(ParseError::Malformed {
                version: Version::V2,
                detail: format!("bad TLV: {e}"),
            });
        }
    }
    let local = header.command == v2::Command::Local;
    let (source, destination) = match (local, header.addresses) {
        (false, v2::Addresses::IPv4(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        (false, v2::Addresses::IPv6(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        // LOCAL: the addresses are to be ignored (spec 2.2); UNSPEC and UNIX name no IP
        // client.
        _ => (None, None),
    };
    Ok(Some(ProxyHeader {
        version: Version::V2,
        local,
        source,
        destination,
        len: header.len(),
    }))
}

fn parse_v1(buf: &[u8]) -> Result<Option<ProxyHeader>, ParseError> {
    use ppp::v1;
    // The header ends at the first LF (after a CR), within 107 bytes. ppp is only shown
    // whole lines: on a prefix it may take a half-received port or address for a bad one.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ParseError::Oversized {
                version: Version::V1,
                len: buf.len(),
                max: V1_MAX_LEN,
            });
        }
        return Ok(None);
    };
    let line = &buf[..=end];
    let malformed = |detail: String| ParseError::Malformed {
        version: Version::V1,
        detail,
    };
    let header = v1::Header::try_from(line).map_err(|e| malformed(e.to_string()))?;
    if header.header.len() != line.len() {
        return Err(malformed("a CR inside the line".into()));
    }
    let (source, destination) = match header.addresses {
        v1::Addresses::Tcp4(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        v1::Addresses::Tcp6(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        v1::Addresses::Unknown => (None, None),
    };
    Ok(Some(ProxyHeader {
        version: Version::V1,
        local: false,
        source,
        destination,
        len: line.len(),
    }))
}

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` leading bits; `None` if `prefix` is longer
    /// than the address (32 for IPv4, 128 for IPv6).
    ///
    /// ```
    /// use peng3dnet_proto::proxy::Cidr;
    /// let net = Cidr::new("192.168.1.77".parse()?, 24).unwrap();
    /// assert_eq!(net.to_string(), "192.168.1.0/24");
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as
    /// a dual-stack listener sees IPv4 peers) counts as its IPv4 address.
    ///
    /// ```
    /// use peng3dnet_proto::proxy::Cidr;
    /// let net: Cidr = "127.0.0.0/8".parse()?;
    /// assert!(net.contains("127.0.0.9".parse()?));
    /// assert!(net.contains("::ffff:127.0.0.9".parse()?));
    /// assert!(!net.contains("::1".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP network (ADDR or ADDR/PREFIX, e.g. 10.0.0.0/8 or ::1)")]
pub struct BadCidr(pub String);

impl FromStr for Cidr {
    type Err = BadCidr;

    /// `ADDR/PREFIX`, or a bare `ADDR` (one address: /32 or /128).
    fn from_str(s: &str) -> Result<Cidr, BadCidr> {
        let bad = || BadCidr(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (addr, prefix.parse::<u8>().map_err(|_| bad())?)
            }
            None => {
                let addr: IpAddr = s.trim().parse().map_err(|_| bad())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

/// Which sources must start their connections with a PROXY header: the load balancers.
///
/// With a policy, a server reads a header from every connection whose source is in one
/// of the trusted networks, and refuses every other connection.
///
/// ```
/// use peng3dnet_proto::proxy::ProxyPolicy;
/// let policy = ProxyPolicy::trusting(["127.0.0.1".parse()?, "10.0.0.0/8".parse()?]);
/// assert!(policy.trusts("10.9.8.7".parse()?));
/// assert_eq!(policy.to_string(), "127.0.0.1/32, 10.0.0.0/8");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyPolicy {
    trusted: Vec<Cidr>,
}

impl ProxyPolicy {
    /// Trusts these networks (an empty list trusts nobody: every connection is refused).
    pub fn trusting(trusted: impl IntoIterator<Item = Cidr>) -> ProxyPolicy {
        ProxyPolicy {
            trusted: trusted.into_iter().collect(),
        }
    }

    /// Whether connections from `ip` come from a balancer (and must send a header).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The trusted networks.
    pub fn trusted(&self) -> &[Cidr] {
        &self.trusted
    }
}

impl fmt::Display for ProxyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.trusted.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

impl FromStr for ProxyPolicy {
    type Err = BadCidr;

    /// Comma-separated CIDRs: `127.0.0.1,10.0.0.0/8`.
    fn from_str(s: &str) -> Result<ProxyPolicy, BadCidr> {
        s.split(',')
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, _>>()
            .map(ProxyPolicy::trusting)
    }
}

/// Why a server refused a connection at the PROXY header: the counters of
/// [`crate::stats::ProxyStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The source is not trusted.
    Untrusted,
    /// No header: the first bytes are something else, or nothing came.
    Missing,
    /// The connection closed, or the handshake timeout passed, in the middle of a header.
    Partial,
    /// A header that breaks the spec's rules.
    Malformed,
    /// A header longer than [`MAX_HEADER_LEN`].
    Oversized,
}

impl Refusal {
    /// The refusal a parse error counts as.
    pub fn of(e: &ParseError) -> Refusal {
        match e {
            ParseError::Missing => Refusal::Missing,
            ParseError::Malformed { .. } => Refusal::Malformed,
            ParseError::Oversized { .. } => Refusal::Oversized,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn v2_tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&src);
        a.extend_from_slice(&dst);
        a.extend_from_slice(&sport.to_be_bytes());
        a.extend_from_slice(&dport.to_be_bytes());
        v2(1, 0x11, &a, &[])
    }

    fn v2_tcp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&src);
        a.extend_from_slice(&dst);
        a.extend_from_slice(&sport.to_be_bytes());
        a.extend_from_slice(&dport.to_be_bytes());
        v2(1, 0x21, &a, &[])
    }

    /// Every strict prefix is incomplete, the whole is the header (with any bytes after
    /// it), as if the header arrived split at that byte.
    fn assert_splits(wire: &[u8]) -> ProxyHeader {
        for cut in 0..wire.len() {
            assert_eq!(
                parse(&wire[..cut]),
                Ok(None),
                "prefix of {cut} bytes of {wire:?}"
            );
        }
        let header = parse(wire).unwrap().unwrap();
        assert_eq!(header.len, wire.len());
        let mut more = wire.to_vec();
        more.extend_from_slice(b"\x00\x00\x00\x0cPROXY trailing");
        assert_eq!(parse(&more), Ok(Some(header)));
        header
    }

    #[test]
    fn v1_tcp4_split_at_every_byte() {
        let h = assert_splits(b"PROXY TCP4 192.0.2.7 10.0.0.2 51234 8080\r\n");
        assert_eq!(h.version, Version::V1);
        assert!(!h.local);
        assert_eq!(h.source, Some("192.0.2.7:51234".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.2:8080".parse().unwrap()));
    }

    #[test]
    fn v1_tcp6_split_at_every_byte() {
        let h = assert_splits(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 8080\r\n");
        assert_eq!(h.source, Some("[2001:db8::7]:4000".parse().unwrap()));
    }

    #[test]
    fn v1_unknown_names_no_client() {
        let h = assert_splits(b"PROXY UNKNOWN\r\n");
        assert_eq!((h.source, h.local), (None, false));
        let h = assert_splits(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
        assert_eq!(h.source, None);
    }

    #[test]
    fn v2_tcp4_split_at_every_byte() {
        let h = assert_splits(&v2_tcp4([192, 0, 2, 7], 51234, [10, 0, 0, 2], 8080));
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.len, 28);
        assert_eq!(h.source, Some("192.0.2.7:51234".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.2:8080".parse().unwrap()));
    }

    #[test]
    fn v2_tcp6_split_at_every_byte() {
        let mut src = [0u8; 16];
        src[0] = 0x20;
        src[1] = 0x01;
        src[15] = 7;
        let h = assert_splits(&v2_tcp6(src, 4000, [0; 16], 8080));
        assert_eq!(h.len, 52);
        assert_eq!(h.source, Some("[2001::7]:4000".parse().unwrap()));
    }

    #[test]
    fn v2_with_tlvs_is_skipped_whole() {
        let mut a = vec![127, 0, 0, 2, 127, 0, 0, 1, 0, 1, 0, 2];
        let tlvs = [0x04, 0x00, 0x03, b'a', b'b', b'c']; // PP2_TYPE_NOOP
        a.extend_from_slice(&tlvs);
        let wire = v2(1, 0x11, &a, &[]);
        let h = assert_splits(&wire);
        assert_eq!(h.source, Some("127.0.0.2:1".parse().unwrap()));
    }

    #[test]
    fn v2_with_a_tlv_longer_than_the_header_is_refused() {
        let mut a = vec![127, 0, 0, 2, 127, 0, 0, 1, 0, 1, 0, 2];
        // A NOOP TLV announcing 9 bytes where 3 follow before the header's end.
        a.extend_from_slice(&[0x04, 0x00, 0x09, b'a', b'b', b'c']);
        let wire = v2(1, 0x11, &a, &[]);
        match parse(&wire) {
            Err(ParseError::Malformed { detail, .. }) => {
                assert!(detail.contains("TLV"), "{detail}")
            }
            other => panic!("expected a malformed header, got {other:?}"),
        }
    }

    #[test]
    fn v2_local_names_no_client_whatever_its_addresses() {
        let mut wire = v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2);
        wire[12] = 0x20; // LOCAL
        let h = assert_splits(&wire);
        assert!(h.local);
        assert_eq!(h.source, None);
        let h = assert_splits(&v2(0, 0x00, &[], &[]));
        assert!(h.local);
        assert_eq!(h.len, 16);
    }

    #[test]
    fn v2_unspecified_and_unix_families_name_no_client() {
        assert_eq!(assert_splits(&v2(1, 0x00, &[], &[])).source, None);
        assert_eq!(assert_splits(&v2(1, 0x31, &[0u8; 216], &[])).source, None);
    }

    #[test]
    fn v2_unknown_family_protocol_version_or_command_is_malformed() {
        let base = v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2);
        for (at, byte) in [(13, 0x41u8), (13, 0x13), (12, 0x11), (12, 0x22)] {
            let mut wire = base.clone();
            wire[at] = byte;
            // Refused as soon as the fixed 16 bytes are there, before the addresses.
            for cut in 16..=wire.len() {
                assert!(
                    matches!(
                        parse(&wire[..cut]),
                        Err(ParseError::Malformed {
                            version: Version::V2,
                            ..
                        })
                    ),
                    "byte {byte:#x} at {at}, {cut} bytes: {:?}",
                    parse(&wire[..cut])
                );
            }
        }
    }

    #[test]
    fn v2_length_too_short_for_its_family_is_malformed() {
        let wire = v2(1, 0x11, &[1, 2, 3, 4], &[]);
        assert!(matches!(parse(&wire), Err(ParseError::Malformed { .. })));
    }

    #[test]
    fn oversized_headers_are_refused_from_their_length_field() {
        let mut wire = v2(1, 0x11, &[0u8; 12], &[]);
        wire[14..16].copy_from_slice(&((MAX_HEADER_LEN - 16 + 1) as u16).to_be_bytes());
        assert_eq!(
            parse(&wire[..16]),
            Err(ParseError::Oversized {
                version: Version::V2,
                len: MAX_HEADER_LEN + 1,
                max: MAX_HEADER_LEN
            })
        );
        // The largest accepted: the addresses, then one NOOP TLV of padding.
        let mut body = vec![0u8; 12];
        let pad = MAX_HEADER_LEN - 16 - 12 - 3;
        body.push(0x04);
        body.extend_from_slice(&(pad as u16).to_be_bytes());
        body.resize(MAX_HEADER_LEN - 16, 0);
        let big = v2(1, 0x11, &body, &[]);
        assert_eq!(parse(&big).unwrap().unwrap().len, MAX_HEADER_LEN);
        // v1: no CRLF within 107 bytes.
        let mut line = b"PROXY TCP4 ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'1');
        assert_eq!(parse(&line), Ok(None));
        line.push(b'1');
        assert!(matches!(
            parse(&line),
            Err(ParseError::Oversized {
                version: Version::V1,
                ..
            })
        ));
    }

    #[test]
    fn malformed_v1_headers() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
            b"PROXY \xff\r\n",
            b"PROXY \r\n",
        ] {
            assert!(
                matches!(
                    parse(bad),
                    Err(ParseError::Malformed {
                        version: Version::V1,
                        ..
                    })
                ),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
    }

    #[test]
    fn anything_else_is_missing() {
        for other in [
            &b"\x00\x00\x00\x0c"[..],
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01\x00\xa5",
            b"PROXX",
            b"\r\n\r\n\0\r\nQUIX",
            b"proxy ",
        ] {
            assert_eq!(parse(other), Err(ParseError::Missing), "{other:?}");
        }
    }

    #[test]
    fn cidrs() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        assert!(!all.contains("::2".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10/8",
            "x",
            "1.2.3.4/+8",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            "127.0.0.1,::1".parse::<ProxyPolicy>().unwrap().to_string(),
            "127.0.0.1/32, ::1/128"
        );
        assert!(ProxyPolicy::default().trusted().is_empty());
    }

    proptest! {
        /// Whatever the bytes, parse answers without panicking, never claims more bytes
        /// than it was given, and agrees with itself on longer input: a complete header
        /// stays the same header, an error stays an error.
        #[test]
        fn parse_is_consistent_on_any_bytes(
            prefix in prop_oneof![
                Just(V2_SIGNATURE.to_vec()),
                Just(b"PROXY ".to_vec()),
                Just(b"PROXY TCP4 ".to_vec()),
                Just(Vec::new()),
            ],
            body in proptest::collection::vec(any::<u8>(), 0..600),
            more in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut buf = prefix;
            buf.extend_from_slice(&body);
            let first = parse(&buf);
            if let Ok(Some(h)) = &first {
                prop_assert!(h.len <= buf.len() && h.len <= MAX_HEADER_LEN);
            }
            let mut longer = buf.clone();
            longer.extend_from_slice(&more);
            let second = parse(&longer);
            match first {
                Ok(Some(h)) => prop_assert_eq!(second, Ok(Some(h))),
                Err(_) => prop_assert!(second.is_err()),
                Ok(None) => {}
            }
        }

        /// Valid headers of any address and port parse at any split.
        #[test]
        fn valid_headers_round_trip(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            src6 in any::<[u8; 16]>(),
            cut in 0usize..60,
        ) {
            let v4 = v2_tcp4(src, sport, dst, dport);
            let text = format!(
                "PROXY TCP4 {} {} {sport} {dport}\r\n",
                std::net::Ipv4Addr::from(src),
                std::net::Ipv4Addr::from(dst)
            );
            let v6 = v2_tcp6(src6, sport, [0; 16], dport);
            for wire in [&v4[..], text.as_bytes(), &v6[..]] {
                let h = parse(wire).unwrap().unwrap();
                prop_assert_eq!(h.len, wire.len());
                prop_assert_eq!(h.source.map(|s| s.port()), Some(sport));
                prop_assert_eq!(parse(&wire[..cut.min(wire.len() - 1)]), Ok(None));
            }
        }
    }
}
