//! Request path normalisation before routing (RFC 3986 §6.2.2): decode percent-encoded
//! unreserved characters (including `%2E`), remove dot-segments, optionally merge
//! slashes. `/x/%2e%2E/admin` and `/x/../admin` both become `/admin`, so no route or
//! access rule can be bypassed; the backend receives the normalised path.

use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    NotOriginForm,
    BadPercentEncoding,
    /// A backslash, raw or `%5C`: some backends treat it as a separator, which would let
    /// `/x/..\\admin` reach `/admin` past the route match. Rejected outright.
    Backslash,
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Normalises an origin-form path (no query). Borrowed when nothing changes.
pub fn normalize_path(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if b.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    let needs_work =
        b.contains(&b'%') || path.contains("/.") || (merge_slashes && path.contains("//"));
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Percent-encoding: decode unreserved, upper-case the rest. Bytes, since a path
    //    may carry UTF-8.
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) else {
                return Err(PathError::BadPercentEncoding);
            };
            let c = h * 16 + l;
            if c == b'\\' {
                return Err(PathError::Backslash);
            }
            if unreserved(c) {
                decoded.push(c);
            } else {
                decoded.extend_from_slice(&[
                    b'%',
                    b[i + 1].to_ascii_uppercase(),
                    b[i + 2].to_ascii_uppercase(),
                ]);
            }
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Err(PathError::BadPercentEncoding);
    };
    // 2. Dot-segments (also `..;params`, which Java servers read as `..`) and,
    //    optionally, empty segments.
    let dot = |seg: &str| seg.split(';').next().unwrap_or("").to_string();
    let trailing = decoded.ends_with('/')
        || matches!(
            dot(decoded.rsplit('/').next().unwrap_or("")).as_str(),
            "." | ".."
        );
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (idx, seg) in segments.iter().enumerate() {
        let bare = if seg.starts_with('.') {
            dot(seg)
        } else {
            String::new()
        };
        match (bare.as_str(), *seg) {
            (".", _) => {}
            ("..", _) => {
                out.pop();
            }
            (_, "") if merge_slashes || idx == last => {}
            (_, s) => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if result.is_empty() || (trailing && !result.ends_with('/')) {
        result.push('/');
    }
    Ok(Cow::Owned(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize_path(p, false).expect("valid").into_owned()
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(n("/x/../admin"), "/admin");
        assert_eq!(n("/x/%2e%2E/admin"), "/admin");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/."), "/");
        assert_eq!(n("/"), "/");
    }

    #[test]
    fn percent_encoding_is_normalised() {
        assert_eq!(n("/%7Euser/%61bc"), "/~user/abc");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/a%3f"), "/a%3F");
        assert_eq!(
            normalize_path("/a%zz", false),
            Err(PathError::BadPercentEncoding)
        );
        assert_eq!(
            normalize_path("/a%2", false),
            Err(PathError::BadPercentEncoding)
        );
        assert_eq!(normalize_path("a", false), Err(PathError::NotOriginForm));
        assert_eq!(n("/caf\u{e9}/./x"), "/caf\u{e9}/x");
    }

    #[test]
    fn separator_tricks_are_closed() {
        assert_eq!(n("/x/..;/admin"), "/admin");
        assert_eq!(n("/x/.;a=b/admin"), "/x/admin");
        assert_eq!(n("/x/..;jsessionid=1"), "/");
        assert_eq!(
            normalize_path("/x/..\\admin", false),
            Err(PathError::Backslash)
        );
        assert_eq!(
            normalize_path("/x/..%5Cadmin", false),
            Err(PathError::Backslash)
        );
        assert_eq!(
            normalize_path("/x/..%5cadmin", false),
            Err(PathError::Backslash)
        );
        // Encoded slashes stay encoded: they are data, not separators.
        assert_eq!(n("/x/..%2Fadmin"), "/x/..%2Fadmin");
    }

    #[test]
    fn slashes_merge_only_when_asked() {
        assert_eq!(n("/a//b/"), "/a//b/");
        assert_eq!(normalize_path("/a//b///c", true).expect("valid"), "/a/b/c");
        assert!(matches!(
            normalize_path("/plain/path", false),
            Ok(Cow::Borrowed(_))
        ));
    }
}
