//! What talking to a master server can go wrong with, each failure with a stable
//! [`MasterError::kind`] for scripts and a sentence for people.

use std::fmt;
use std::io;
use std::time::Duration;

/// The longest text of a master's own error message kept in a [`MasterError::Refused`]: a
/// master cannot fill a log line (or a terminal) with its words.
pub(crate) const MAX_MESSAGE_CHARS: usize = 300;

/// An error talking to a master server: fetching its list, announcing or unlisting.
///
/// [`kind`](Self::kind) names the failure in one stable word (as `ping --json`'s `kind`
/// does for pings); the `Display` text says what happened in a sentence, naming the
/// master. The master's own error replies (`{"error": KIND, "message": ...}`, HTTP 4xx
/// and 5xx) are [`MasterError::Refused`].
///
/// ```
/// use peng3dnet::master::{fetch, MasterError, Query};
///
/// # async fn demo() {
/// match fetch("ftp://example.org", &Query::default()).await {
///     Err(e @ MasterError::BadUrl { .. }) => assert_eq!(e.kind(), "bad_url"),
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum MasterError {
    /// The master's URL cannot be used: not `http://` or `https://`, no host, a query
    /// string, user information, or `https://` in a build without TLS.
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why, in words.
        reason: String,
    },
    /// An argument the master would refuse anyway (a tag of the wrong form, too many
    /// tags), found before sending anything.
    BadRequest {
        /// Why, in words.
        reason: String,
    },
    /// An async call was made outside a tokio runtime.
    NoRuntime,
    /// The master's host name did not resolve.
    Resolve {
        /// `host:port` of the master.
        master: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No connection to the master: refused, unreachable, or the source address unusable.
    Connect {
        /// `host:port` of the master.
        master: String,
        /// The connection error, in words (every address tried is named).
        reason: String,
    },
    /// The TLS handshake with an `https://` master failed (its certificate, most often).
    Tls {
        /// `host:port` of the master.
        master: String,
        /// Why, in words.
        reason: String,
    },
    /// The master did not answer in time.
    Timeout {
        /// `host:port` of the master.
        master: String,
        /// The time allowed.
        after: Duration,
    },
    /// The master's answer is not well-formed HTTP, or the connection broke during it.
    Http {
        /// `host:port` of the master.
        master: String,
        /// Why, in words.
        reason: String,
    },
    /// The master's answer is larger than allowed
    /// ([`FetchOptions::max_response_bytes`](super::FetchOptions::max_response_bytes)),
    /// or lists more servers than
    /// [`FetchOptions::max_servers`](super::FetchOptions::max_servers).
    TooLarge {
        /// `host:port` of the master.
        master: String,
        /// What was too large, in words.
        what: String,
    },
    /// The master answered 2xx with a body that is not the contract's JSON (not JSON, a
    /// field of the wrong type, another schema version).
    BadResponse {
        /// `host:port` of the master.
        master: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// The master answered with an error status: 4xx or 5xx, with its error kind
    /// (`rate_limited`, `not_verified`, `forbidden`, `not_found`, `bad_request`,
    /// `too_large`, `internal`) when its body says one.
    Refused {
        /// `host:port` of the master.
        master: String,
        /// The HTTP status code.
        status: u16,
        /// The master's error kind (`"error"` of its body), if it gave one.
        error: Option<String>,
        /// The master's message, if it gave one (cut to a few hundred characters).
        message: Option<String>,
        /// The wait a `429` asked for (`Retry-After`, seconds).
        retry_after: Option<Duration>,
    },
}

impl MasterError {
    /// The failure in one stable word: `bad_url`, `bad_request`, `no_runtime`, `resolve`,
    /// `connect`, `tls`, `timeout`, `http`, `too_large`, `bad_response` or `refused`
    /// (the master's own reason is then [`master_error`](Self::master_error)).
    pub fn kind(&self) -> &'static str {
        match self {
            MasterError::BadUrl { .. } => "bad_url",
            MasterError::BadRequest { .. } => "bad_request",
            MasterError::NoRuntime => "no_runtime",
            MasterError::Resolve { .. } => "resolve",
            MasterError::Connect { .. } => "connect",
            MasterError::Tls { .. } => "tls",
            MasterError::Timeout { .. } => "timeout",
            MasterError::Http { .. } => "http",
            MasterError::TooLarge { .. } => "too_large",
            MasterError::BadResponse { .. } => "bad_response",
            MasterError::Refused { .. } => "refused",
        }
    }

    /// The master's own error kind of a [`Refused`](Self::Refused) answer
    /// (`rate_limited`, `not_verified`...), if it said one.
    pub fn master_error(&self) -> Option<&str> {
        match self {
            MasterError::Refused { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of a [`Refused`](Self::Refused) answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            MasterError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The wait the master asked for before the next request (`429` with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MasterError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the error is in the request itself (the URL, an argument), so that
    /// sending it again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            MasterError::BadUrl { .. } | MasterError::BadRequest { .. } | MasterError::NoRuntime
        )
    }
}

impl fmt::Display for MasterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterError::BadUrl { url, reason } => {
                write!(f, "bad master URL {url:?}: {reason}")
            }
            MasterError::BadRequest { reason } => f.write_str(reason),
            MasterError::NoRuntime => f.write_str(
                "not inside a tokio runtime: call the async master functions from a tokio \
                 runtime, or use peng3dnet::master::blocking",
            ),
            MasterError::Resolve { master, source } => {
                write!(f, "cannot resolve the master {master}: {source}")
            }
            MasterError::Connect { master, reason } => {
                write!(f, "cannot connect to the master {master}: {reason}")
            }
            MasterError::Tls { master, reason } => {
                write!(f, "TLS with the master {master} failed: {reason}")
            }
            MasterError::Timeout { master, after } => write!(
                f,
                "the master {master} did not answer within {}",
                seconds(*after)
            ),
            MasterError::Http { master, reason } => {
                write!(f, "HTTP with the master {master} failed: {reason}")
            }
            MasterError::TooLarge { master, what } => {
                write!(f, "the master {master} answered too much: {what}")
            }
            MasterError::BadResponse { master, reason } => {
                write!(
                    f,
                    "the master {master} answered an unexpected body: {reason}"
                )
            }
            MasterError::Refused {
                master,
                status,
                error,
                message,
                retry_after,
            } => {
                write!(f, "the master {master} refused (HTTP {status}")?;
                if let Some(error) = error {
                    write!(f, " {error}")?;
                }
                f.write_str(")")?;
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                if let Some(wait) = retry_after {
                    write!(f, " (retry after {})", seconds(*wait))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for MasterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The resolver's words are part of the message already, and its error kind is
            // what a caller may want to inspect.
            MasterError::Resolve { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `1.5 s`, `10 s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// Text a master sent, for a message: control characters replaced (they could draw on a
/// terminal), cut to [`MAX_MESSAGE_CHARS`].
pub(crate) fn clean_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_status_kind_message_and_wait() {
        let e = MasterError::Refused {
            master: "127.0.0.1:8090".into(),
            status: 429,
            error: Some("rate_limited".into()),
            message: Some("slow down".into()),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(e.kind(), "refused");
        assert_eq!(e.master_error(), Some("rate_limited"));
        assert_eq!(
            e.to_string(),
            "the master 127.0.0.1:8090 refused (HTTP 429 rate_limited): slow down (retry after 3 s)"
        );
    }

    #[test]
    fn master_text_is_cleaned_and_cut() {
        assert_eq!(clean_text("a\x1b[31mb\nc"), "a [31mb c");
        let long = "x".repeat(1000);
        assert_eq!(clean_text(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
