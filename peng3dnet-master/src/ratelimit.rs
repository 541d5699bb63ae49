//! Announces per source: a token bucket per source key (an IPv4 address, an IPv6 /64),
//! in a map of bounded size.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources remembered at most; past it, buckets that refilled are forgotten, and if none
/// did, new sources are refused until some do (memory stays bounded under a flood from
/// many addresses).
pub const MAX_SOURCES: usize = 100_000;

/// The key of a source: an IPv4 address, or the /64 of an IPv6 one (a host usually
/// holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
///
/// ```
/// use peng3dnet_master::ratelimit::source_key;
/// assert_eq!(source_key("127.0.0.5".parse().unwrap()), "127.0.0.5");
/// assert_eq!(source_key("2001:db8:1:2:3:4:5:6".parse().unwrap()), "2001:db8:1:2::/64");
/// assert_eq!(source_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
/// ```
pub fn source_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets: `burst` announces at once, then `per_minute` on average.
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

impl RateLimiter {
    /// Takes a token for `key`, or says how long until one is there.
    pub fn take(&self, key: &str, per_minute: f64, burst: u32) -> Result<(), Duration> {
        self.take_at(key, per_minute, burst, Instant::now())
    }

    fn take_at(
        &self,
        key: &str,
        per_minute: f64,
        burst: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let per_sec = per_minute / 60.0;
        let burst = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= MAX_SOURCES {
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
            if buckets.len() >= MAX_SOURCES {
                return Err(Duration::from_secs_f64(1.0 / per_sec).max(Duration::from_secs(1)));
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take_at("a", 60.0, 3, t0).unwrap();
        }
        let wait = limiter.take_at("a", 60.0, 3, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        // Another source is not affected.
        limiter.take_at("b", 60.0, 3, t0).unwrap();
        // One second later one more token.
        limiter
            .take_at("a", 60.0, 3, t0 + Duration::from_secs(1))
            .unwrap();
        assert!(limiter
            .take_at("a", 60.0, 3, t0 + Duration::from_secs(1))
            .is_err());
    }
}
