//! `@rx` patterns compiled the way ModSecurity's PCRE runs them: on bytes (no UTF-8
//! decoding: `\xbe` and `\x{be}` are the byte 0xBE, `\w` and `\d` are ASCII), with `.`
//! matching newlines and `^`/`$` at line ends (PCRE's DOTALL and MULTILINE, as
//! ModSecurity v3 and Coraza compile rules).

use crate::error::Bad;
use regex::bytes::{Regex, RegexBuilder};

/// Compiles a rule's regex.
pub fn compile(pattern: &str) -> Result<Regex, Bad> {
    RegexBuilder::new(&braced_hex_to_plain(pattern))
        .unicode(false)
        .dot_matches_new_line(true)
        .multi_line(true)
        .size_limit(64 << 20)
        .dfa_size_limit(64 << 20)
        .build()
        .map_err(|e| Bad::new(pattern, format!("invalid regex: {e}")))
}

/// `\x{hh}` written as `\xhh`, so a two-digit code can only ever mean one byte.
pub(crate) fn braced_hex_to_plain(p: &str) -> std::borrow::Cow<'_, str> {
    if !p.contains("\\x{") {
        return std::borrow::Cow::Borrowed(p);
    }
    let b = p.as_bytes();
    let mut out = String::with_capacity(p.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] != b'x' {
            // Any other escape, including `\\`, is copied whole.
            out.push_str(&p[i..i + 2]);
            i += 2;
            continue;
        }
        if p[i..].starts_with("\\x{") {
            if let Some(close) = p[i + 3..].find('}') {
                let digits = &p[i + 3..i + 3 + close];
                if digits.len() <= 2
                    && !digits.is_empty()
                    && digits.bytes().all(|c| c.is_ascii_hexdigit())
                {
                    out.push_str("\\x");
                    if digits.len() == 1 {
                        out.push('0');
                    }
                    out.push_str(digits);
                    i += 3 + close + 1;
                    continue;
                }
            }
        }
        let ch = p[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_not_characters() {
        let r = compile("a\\x{be}b").expect("compiles");
        assert!(r.is_match(b"a\xbeb"));
        assert!(
            !r.is_match("a\u{be}b".as_bytes()),
            "not the UTF-8 of U+00BE"
        );
        // After an escaped backslash, `x{41}` is a repetition, not an escape.
        assert_eq!(braced_hex_to_plain("\\\\x{41}"), "\\\\x{41}");
        assert_eq!(braced_hex_to_plain("[\\x{e2}\\x{9}]"), "[\\xe2\\x09]");
        let dot = compile("a.b").expect("dot");
        assert!(dot.is_match(b"a\nb"));
        let line = compile("^x$").expect("anchors");
        assert!(line.is_match(b"a\nx\nb"));
        let w = compile("^\\w+$").expect("ascii word");
        assert!(!w.is_match("é".as_bytes()));
        assert!(compile("(?i)select").expect("caseless").is_match(b"SeLeCt"));
        assert!(compile("(unclosed").is_err());
    }
}
