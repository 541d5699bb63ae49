//! Text that came from a peer, made safe to show: to a terminal, in a log line, in an
//! error message.
//!
//! A peer chooses its close reasons, its server data and its banners. Shown as they
//! came, a newline forges a log line, an escape sequence drives the reader's terminal and
//! a 4 MiB reason fills the log. [`escape`] neutralises the characters that do harm and
//! [`Shown`] also bounds the length, so every place that shows a peer's text can do it
//! the same way.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// How many characters of a peer's text [`Shown`] prints before it says how much more
/// there was. A real close reason is one word; a real server name a few dozen characters.
pub const SHOWN_CHARS: usize = 128;

/// `s` with C0 controls (newline and tab included), DEL and C1 controls written as
/// `\xNN` (C0, DEL) or `\u{NN}` (C1) escapes, and the bidirectional overrides and
/// isolates as `\u{NNNN}`: nothing left can retitle, clear or drive a terminal, forge a
/// line, or reorder the text around it on the screen. Borrowed when there is nothing to
/// escape (the common case).
///
/// ```
/// use peng3dnet_proto::text::escape;
///
/// assert_eq!(escape("lobby"), "lobby");
/// assert_eq!(escape("a\nb\x1b[2J"), "a\\x0ab\\x1b[2J");
/// ```
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    if !is_control(c) {
        out.push(c);
    } else if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:02x}}}", c as u32);
    }
}

/// C0 controls, DEL and C1 controls, and the bidirectional overrides and isolates that
/// reorder the text around them on the screen.
pub fn is_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f)
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A peer's text for display: [`escape`]d, and cut after [`SHOWN_CHARS`] characters with
/// a note of how many bytes were left out, so that neither a line nor a log can be forged
/// or flooded through it.
///
/// ```
/// use peng3dnet_proto::text::Shown;
///
/// assert_eq!(Shown("bye\r\n").to_string(), "bye\\x0d\\x0a");
/// let long = "x".repeat(1000);
/// assert_eq!(
///     Shown(&long).to_string(),
///     format!("{}... (872 more bytes)", "x".repeat(128))
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let cut = text
            .char_indices()
            .nth(SHOWN_CHARS)
            .map_or(text.len(), |(at, _)| at);
        let (head, rest) = text.split_at(cut);
        f.write_str(&escape(head))?;
        if !rest.is_empty() {
            write!(f, "... ({} more bytes)", rest.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_c1_are_escaped() {
        assert_eq!(escape("\u{202e}evil\u{85}"), "\\u{202e}evil\\u{85}");
        assert_eq!(escape("\x7f\t"), "\\x7f\\x09");
    }

    #[test]
    fn shown_cuts_on_a_char_boundary_and_counts_bytes() {
        let text = "é".repeat(SHOWN_CHARS + 2);
        assert_eq!(
            Shown(&text).to_string(),
            format!("{}... (4 more bytes)", "é".repeat(SHOWN_CHARS))
        );
        assert_eq!(Shown("").to_string(), "");
    }
}
