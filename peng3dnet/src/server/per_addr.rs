//! The per-address connection cap ([`Limits::max_connections_per_addr`]): which
//! connections count as one source, and the table that counts them.
//!
//! A cap on the full IP address holds an IPv4 host, but not an IPv6 one: a single host
//! is routinely given a whole /64 and can pick a new address for every connection (the
//! audit had 200 addresses of one /64 accepted under a cap of 2). So IPv6 addresses
//! count by their prefix ([`Limits::per_addr_ipv6_prefix`], /64 by default), and an
//! IPv4-mapped address (`::ffff:a.b.c.d`, what a dual-stack socket reports for IPv4
//! clients) counts as the IPv4 address it is.
//!
//! [`Limits::max_connections_per_addr`]: crate::config::Limits::max_connections_per_addr
//! [`Limits::per_addr_ipv6_prefix`]: crate::config::Limits::per_addr_ipv6_prefix

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The source a connection from `ip` counts against: the IPv4 address itself (mapped
/// ones unwrapped), or the IPv6 address cut to its first `v6_prefix` bits (at most 128).
pub(crate) fn source_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(v6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Connections held per source (see [`source_key`]), shared by a server's accept loop
/// and its connections.
#[derive(Debug)]
pub(crate) struct AddrCounts {
    counts: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
    v6_prefix: u8,
}

impl AddrCounts {
    /// A table that lets each source hold up to `max` connections (0: no cap).
    pub(crate) fn new(max: usize, v6_prefix: u8) -> AddrCounts {
        AddrCounts {
            counts: Mutex::new(HashMap::new()),
            max,
            v6_prefix,
        }
    }

    /// Whether connections are capped at all.
    pub(crate) fn is_capped(&self) -> bool {
        self.max > 0
    }

    /// The cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Counts a connection from `ip`, unless its source already holds the most allowed:
    /// the slot, given back when dropped.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddrSlot> {
        let key = source_key(ip, self.v6_prefix);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddrSlot {
            counts: self.clone(),
            key,
        })
    }

    fn give_back(&self, key: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        let key = source_key(ip, self.v6_prefix);
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&key).copied().unwrap_or(0)
    }
}

/// A connection counted against its source's cap; forgotten when dropped.
#[derive(Debug)]
pub(crate) struct AddrSlot {
    counts: Arc<AddrCounts>,
    key: IpAddr,
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        self.counts.give_back(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_by_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            source_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            source_key(ip("2001:db8:1:2:aaaa::1"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(source_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(source_key(ip("2001:db8::1"), 200), ip("2001:db8::1"));
        assert_eq!(source_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(source_key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(source_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn a_source_holds_at_most_the_cap_and_slots_come_back_when_dropped() {
        let counts = Arc::new(AddrCounts::new(2, 64));
        let a = counts.take(ip("2001:db8::1")).unwrap();
        let _b = counts.take(ip("2001:db8::ffff:2")).unwrap();
        assert!(counts.take(ip("2001:db8::3")).is_none(), "same /64");
        assert!(counts.take(ip("2001:db8:0:1::1")).is_some(), "another /64");
        let _c = counts.take(ip("192.0.2.1")).unwrap();
        let _d = counts.take(ip("::ffff:192.0.2.1")).unwrap();
        assert!(
            counts.take(ip("192.0.2.1")).is_none(),
            "mapped counts as v4"
        );
        drop(a);
        assert_eq!(counts.held(ip("2001:db8::9")), 1);
        assert!(counts.take(ip("2001:db8::9")).is_some());
    }
}
