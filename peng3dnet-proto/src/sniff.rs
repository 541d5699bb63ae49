//! What the first bytes of a connection tell: a peng3dnet hello, a TLS record, an SSH
//! banner, an HTTP response, or bytes that cannot start a peng3dnet frame.
//!
//! A peng3dnet server speaks first (its hello), and a TLS client speaks first (its
//! ClientHello), so the first bytes of either side already say what was reached. These are
//! pure functions on the bytes received so far; the I/O layers read, ask, and fail at once
//! with a message that names what they found.

use crate::frame::{FrameHeader, PREFIX_BYTES};

/// The largest first frame a peng3dnet server plausibly sends (a hello or a closeconn:
/// a few dozen bytes). A length prefix above this is another protocol's bytes.
pub const MAX_GREETING_FRAME: usize = 64 * 1024;

/// How many bytes of a foreign greeting are kept to show the user.
const PREVIEW_BYTES: usize = 48;

/// What a server's first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// Too few bytes to tell yet.
    Incomplete,
    /// The start of a peng3dnet hello or closeconn frame.
    Peng3dnet,
    /// A TLS record (a TLS server answering something, or an alert): the server uses TLS.
    Tls,
    /// An SSH banner, e.g. `SSH-2.0-OpenSSH_9.6`.
    Ssh(String),
    /// An HTTP response, e.g. `HTTP/1.1 400 Bad Request`.
    Http(String),
    /// Bytes that cannot start a peng3dnet frame, shown escaped.
    Other(String),
}

/// Whether `buf` starts with a TLS record header: content type handshake (22) or alert
/// (21), then major version 3. One byte is enough for a tentative yes.
pub fn is_tls_record(buf: &[u8]) -> bool {
    matches!(buf.first(), Some(0x15 | 0x16)) && buf.get(1).is_none_or(|&v| v == 0x03)
}

/// Whether a length prefix read by a frame decoder is really the start of a TLS
/// handshake record (a ClientHello sent to a plain server): `16 03 xx xx`.
pub fn length_is_tls_record(length: usize) -> bool {
    length >> 24 == 0x16 && (length >> 16) & 0xff == 0x03
}

/// What the client-side first bytes of a connection to a TLS server are: `Some(true)` for
/// a TLS record (a ClientHello), `Some(false)` for anything else, `None` for no bytes.
pub fn client_speaks_tls(buf: &[u8]) -> Option<bool> {
    buf.first().map(|_| is_tls_record(buf))
}

/// Classifies a server's first bytes. With `complete` (the stream ended, or the wait is
/// over) a partial signature is reported as what it starts, not [`Greeting::Incomplete`].
pub fn server_greeting(buf: &[u8], complete: bool) -> Greeting {
    let Some(&first) = buf.first() else {
        return Greeting::Incomplete;
    };
    for (signature, text) in [(&b"SSH-"[..], true), (&b"HTTP/"[..], false)] {
        let n = buf.len().min(signature.len());
        if buf[..n] == signature[..n] {
            if n < signature.len() && !complete {
                return Greeting::Incomplete;
            }
            if n == signature.len() || complete {
                let line_done = buf.contains(&b'\n') || buf.len() >= PREVIEW_BYTES;
                if !line_done && !complete {
                    return Greeting::Incomplete;
                }
                let line = first_line(buf);
                return if text {
                    Greeting::Ssh(line)
                } else {
                    Greeting::Http(line)
                };
            }
        }
    }
    if is_tls_record(buf) {
        return Greeting::Tls;
    }
    // A plausible first frame is short: its length prefix starts with zero bytes.
    if first != 0 || buf.get(1).is_some_and(|&b| b != 0) {
        return Greeting::Other(preview(buf));
    }
    match FrameHeader::parse(buf) {
        None if complete => Greeting::Other(preview(buf)),
        None => Greeting::Incomplete,
        Some(h) => {
            // Any well-formed small frame is a peng3dnet peer; that it is not a hello is
            // the protocol layer's finding ("first packet has id N, not hello").
            let plausible = (6..=MAX_GREETING_FRAME).contains(&h.length) && h.flags & !0b11 == 0;
            if plausible {
                Greeting::Peng3dnet
            } else {
                Greeting::Other(preview(&buf[..buf.len().min(PREFIX_BYTES)]))
            }
        }
    }
}

/// The first line of `buf` (without its line end), escaped and shortened.
fn first_line(buf: &[u8]) -> String {
    let end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    preview(&buf[..end])
}

/// Up to 48 bytes as text: printable ASCII as is, the rest as `\xNN`.
pub fn preview(buf: &[u8]) -> String {
    let mut out = String::new();
    for &b in buf.iter().take(PREVIEW_BYTES) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if buf.len() > PREVIEW_BYTES {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameCodec;
    use crate::protocol::{closeconn_frame, hello_frame};

    fn wire(frame: crate::frame::Frame) -> Vec<u8> {
        FrameCodec::default().to_bytes(frame).unwrap().to_vec()
    }

    #[test]
    fn a_hello_and_a_closeconn_are_peng3dnet_once_their_header_is_in() {
        for w in [wire(hello_frame()), wire(closeconn_frame(None))] {
            for n in 0..PREFIX_BYTES {
                assert_eq!(server_greeting(&w[..n], false), Greeting::Incomplete, "{n}");
            }
            assert_eq!(
                server_greeting(&w[..PREFIX_BYTES], false),
                Greeting::Peng3dnet
            );
            assert_eq!(server_greeting(&w, true), Greeting::Peng3dnet);
        }
    }

    #[test]
    fn tls_records_are_recognised_from_their_first_bytes() {
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46];
        assert_eq!(server_greeting(&alert, false), Greeting::Tls);
        assert_eq!(server_greeting(&[0x16], false), Greeting::Tls);
        assert!(is_tls_record(&[0x16, 0x03, 0x01]));
        assert!(!is_tls_record(&[0x16, 0x00]));
        assert_eq!(client_speaks_tls(&[0x16, 0x03, 0x01, 0x00]), Some(true));
        assert_eq!(client_speaks_tls(b"GET / HTTP/1.1"), Some(false));
        assert_eq!(client_speaks_tls(b""), None);
        // The refusal the plain server used to log: "frame of 369295616 bytes".
        assert!(length_is_tls_record(369_295_616));
        assert!(!length_is_tls_record(8 << 20));
    }

    #[test]
    fn ssh_and_http_are_named_with_their_first_line() {
        let ssh = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n";
        assert_eq!(server_greeting(&ssh[..3], false), Greeting::Incomplete);
        assert_eq!(server_greeting(&ssh[..10], false), Greeting::Incomplete);
        assert_eq!(
            server_greeting(&ssh[..10], true),
            Greeting::Ssh("SSH-2.0-Op".into())
        );
        assert_eq!(
            server_greeting(ssh, false),
            Greeting::Ssh("SSH-2.0-OpenSSH_9.6p1 Ubuntu-3".into())
        );
        let http = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            server_greeting(http, false),
            Greeting::Http("HTTP/1.1 400 Bad Request".into())
        );
    }

    #[test]
    fn other_bytes_are_refused_at_once_and_shown_escaped() {
        assert_eq!(
            server_greeting(b"\x7fELF", false),
            Greeting::Other("\\x7fELF".into())
        );
        assert_eq!(
            server_greeting(b"220 mail ESMTP\r\n", false),
            Greeting::Other("220 mail ESMTP\\x0d\\x0a".into())
        );
        // A zero-led length that is too large, or flags no one defines.
        assert!(matches!(
            server_greeting(&[0, 0x10, 0, 0, 0, 0, 0, 1, 0, 0], false),
            Greeting::Other(_)
        ));
        assert!(matches!(
            server_greeting(&[0, 0, 0, 7, 0, 0, 0, 1, 0x80, 0, 0x80], false),
            Greeting::Other(_)
        ));
        // A well-formed frame that is not a hello is a peng3dnet peer breaking the
        // protocol: the protocol layer says "first packet has id 64, not hello".
        assert_eq!(
            server_greeting(&[0, 0, 0, 7, 0, 0, 0, 64, 0, 0, 0x80], false),
            Greeting::Peng3dnet
        );
        assert_eq!(preview(&[b'a'; 60]).len(), PREVIEW_BYTES + 3);
    }
}
