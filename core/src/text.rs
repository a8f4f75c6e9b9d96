//! Text the sender controls, made safe to show back: in a problem detail,
//! a field name, a log line or an `IGNORED` reason.
//!
//! A path, a header, a key or an id can be as long as Envoy lets a request
//! be (tens of kilobytes) and hold anything. Echoed whole, a 404 for a
//! 20,000-character path would be 20,000 characters long, and a control
//! character would reach a log line. Everything shown goes through here.

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
}
