//! Text the sender controls, made safe to show back: in a problem detail,
//! a field name, a log line or an `IGNORED` reason.
//!
//! A path, a header, a key or an id can be as long as Envoy lets a request
//! be (tens of kilobytes) and hold anything. Echoed whole, a 404 for a
//! 20,000-character path would be 20,000 characters long, and a control
//! character would reach a log line. Everything shown goes through here,
//! and so does the one decoding a path segment needs ([`percent_decode`]).

/// The most characters of sender text shown anywhere.
pub const SHOWN_MAX: usize = 64;

/// `s` as printable ASCII (anything else becomes `?`), at most
/// [`SHOWN_MAX`] characters.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(SHOWN_MAX)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `s` without control characters, at most `max` characters: for text a
/// person reads in a JSON view (an incident's title), where letters beyond
/// ASCII are kept.
pub fn shown(s: &str, max: usize) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// `s` for a problem detail: [`printable`], in quotes, with `...` after the
/// closing quote when it was cut, so a reader knows it saw only the start.
pub fn quoted(s: &str) -> String {
    let cut = s.chars().nth(SHOWN_MAX).is_some();
    format!("{:?}{}", printable(s), if cut { "..." } else { "" })
}

/// A path segment with its percent-encoding undone (RFC 3986: `%` and two
/// hex digits is one byte; `+` stays `+`). `None` when a `%` is not
/// followed by two hex digits, or the bytes are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex_value)?;
            let lo = bytes.next().and_then(hex_value)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn printable_is_bounded_ascii() {
        assert_eq!(printable("INC-1 ok"), "INC-1 ok");
        assert_eq!(printable("a\u{7f}b\nc\u{e9}d\0"), "a?b?c?d?");
        assert_eq!(printable(&"x".repeat(20_000)).len(), SHOWN_MAX);
        // Counted in characters, so a multi-byte character is never split.
        assert_eq!(printable(&"\u{e9}".repeat(100)), "?".repeat(SHOWN_MAX));
    }

    #[test]
    fn quoted_says_when_it_cut() {
        assert_eq!(quoted("nagios"), "\"nagios\"");
        assert_eq!(
            quoted(&"x".repeat(SHOWN_MAX)),
            format!("\"{}\"", "x".repeat(64))
        );
        assert_eq!(
            quoted(&"x".repeat(SHOWN_MAX + 1)),
            format!("\"{}\"...", "x".repeat(64))
        );
        // Quotes and backslashes are escaped, never closing the quote early.
        assert_eq!(quoted("a\"b\\"), r#""a\"b\\""#);
        let long = quoted(&"/".repeat(20_000));
        assert!(long.len() <= SHOWN_MAX + 5, "{long}");
    }

    #[test]
    fn percent_decoding_undoes_the_encoding_or_says_it_is_broken() {
        assert_eq!(percent_decode("eg-voice").as_deref(), Some("eg-voice"));
        assert_eq!(percent_decode("eg%2Dvoice").as_deref(), Some("eg-voice"));
        assert_eq!(percent_decode("a%20b%2fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("\u{e9}"));
        assert_eq!(percent_decode("").as_deref(), Some(""));
        for broken in ["%", "%2", "a%G1", "%%20", "%FF", "x%2"] {
            assert_eq!(percent_decode(broken), None, "{broken}");
        }
    }
}
