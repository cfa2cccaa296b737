//! Hostname tables (exact, then most specific wildcard, then catch-all) and the
//! hostname intersection rules of the Gateway API.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// How a `*.example.com` wildcard matches: Ingress allows one label only, Gateway API
/// any number of labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WildcardMode {
    SingleLabel,
    MultiLabel,
}

/// A table from hostnames to `T`: one hash look-up for exact names, then wildcard
/// suffixes from the most specific, then the catch-all.
#[derive(Debug, Clone)]
pub struct HostTable<T> {
    /// Shared keys: copying a table (as an incremental update does) copies pointers.
    exact: HashMap<Arc<str>, T>,
    /// (suffix including the leading dot, value), longest suffix first.
    wildcard: Vec<(String, T)>,
    any: Option<T>,
    mode: WildcardMode,
}

impl<T> HostTable<T> {
    pub fn new(mode: WildcardMode) -> Self {
        HostTable {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: None,
            mode,
        }
    }

    /// Inserts under `host` (`None` or `*` for the catch-all); returns false when taken.
    pub fn insert(&mut self, host: Option<&str>, value: T) -> bool {
        match host {
            None | Some("*") | Some("") => {
                if self.any.is_some() {
                    return false;
                }
                self.any = Some(value);
            }
            Some(h) if h.starts_with("*.") => {
                let suffix = h[1..].to_ascii_lowercase();
                if self.wildcard.iter().any(|(s, _)| *s == suffix) {
                    return false;
                }
                self.wildcard.push((suffix, value));
                self.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
            }
            Some(h) => {
                let h = h.to_ascii_lowercase();
                if self.exact.contains_key(h.as_str()) {
                    return false;
                }
                self.exact.insert(Arc::from(h), value);
            }
        }
        true
    }

    /// The value for a request host (any case, port already stripped).
    pub fn lookup(&self, host: &str) -> Option<&T> {
        let host = lowercase(host);
        let host = host.trim_end_matches('.');
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        for (suffix, v) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                let label = &host[..host.len() - suffix.len()];
                if self.mode == WildcardMode::MultiLabel || !label.contains('.') {
                    return Some(v);
                }
            }
        }
        self.any.as_ref()
    }

    /// Whether this exact key (not a match) is in the table.
    pub fn contains_key(&self, host: Option<&str>) -> bool {
        match host {
            None | Some("*") | Some("") => self.any.is_some(),
            Some(h) if h.starts_with("*.") => {
                let suffix = h[1..].to_ascii_lowercase();
                self.wildcard.iter().any(|(s, _)| *s == suffix)
            }
            Some(h) => self.exact.contains_key(h.to_ascii_lowercase().as_str()),
        }
    }

    /// The value stored under this exact key (not a match).
    pub fn get(&self, host: Option<&str>) -> Option<&T> {
        match host {
            None | Some("*") | Some("") => self.any.as_ref(),
            Some(h) if h.starts_with("*.") => {
                let suffix = h[1..].to_ascii_lowercase();
                self.wildcard
                    .iter()
                    .find(|(s, _)| *s == suffix)
                    .map(|(_, v)| v)
            }
            Some(h) => self.exact.get(lowercase(h).as_ref()),
        }
    }

    /// Removes the value stored under this exact key.
    pub fn remove(&mut self, host: Option<&str>) -> Option<T> {
        match host {
            None | Some("*") | Some("") => self.any.take(),
            Some(h) if h.starts_with("*.") => {
                let suffix = h[1..].to_ascii_lowercase();
                let i = self.wildcard.iter().position(|(s, _)| *s == suffix)?;
                Some(self.wildcard.remove(i).1)
            }
            Some(h) => self.exact.remove(lowercase(h).as_ref()),
        }
    }

    pub fn get_mut(&mut self, host: Option<&str>) -> Option<&mut T> {
        match host {
            None | Some("*") | Some("") => self.any.as_mut(),
            Some(h) if h.starts_with("*.") => {
                let suffix = h[1..].to_ascii_lowercase();
                self.wildcard
                    .iter_mut()
                    .find(|(s, _)| *s == suffix)
                    .map(|(_, v)| v)
            }
            Some(h) => self.exact.get_mut(h.to_ascii_lowercase().as_str()),
        }
    }

    /// All entries as (hostname, value), `*` for the catch-all.
    pub fn entries(&self) -> Vec<(String, &T)> {
        let mut out: Vec<(String, &T)> =
            self.exact.iter().map(|(k, v)| (k.to_string(), v)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(self.wildcard.iter().map(|(s, v)| (format!("*{s}"), v)));
        out.extend(self.any.iter().map(|v| ("*".to_string(), v)));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_none()
    }
}

/// `h` in lower case, copied only when it has upper-case letters.
pub fn lowercase(h: &str) -> Cow<'_, str> {
    match h.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(h.to_ascii_lowercase()),
        false => Cow::Borrowed(h),
    }
}

/// Whether `host` (exact or wildcard) is covered by `pattern` under Gateway API rules.
fn covered_by(host: &str, pattern: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix('*') {
        let h = host.strip_prefix('*').unwrap_or(host);
        h.len() > suffix.len() && h.ends_with(suffix) || (host.starts_with('*') && h == suffix)
    } else {
        host == pattern
    }
}

/// Intersects a listener hostname with a route hostname (Gateway API): the more
/// specific of the two when one covers the other, else `None`.
pub fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let route = route.to_ascii_lowercase();
    let Some(listener) = listener else {
        return Some(route);
    };
    let listener = listener.to_ascii_lowercase();
    if covered_by(&route, &listener) {
        Some(route)
    } else if covered_by(&listener, &route) {
        Some(listener)
    } else {
        None
    }
}

/// Validates a hostname as RFC 1123 with an optional leading `*.` label.
pub fn valid_hostname(h: &str, allow_wildcard: bool) -> bool {
    let body = match h.strip_prefix("*.") {
        Some(b) if allow_wildcard => b,
        Some(_) => return false,
        None => h,
    };
    !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Strips the port from a Host header value (`example.com:8080`, `[::1]:80`).
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_wins_then_longest_wildcard_then_any() {
        let mut t = HostTable::new(WildcardMode::MultiLabel);
        t.insert(Some("*.example.com"), 1);
        t.insert(Some("*.a.example.com"), 2);
        t.insert(Some("x.a.example.com"), 3);
        t.insert(None, 4);
        assert_eq!(t.lookup("x.a.example.com"), Some(&3));
        assert_eq!(t.lookup("Y.A.example.com"), Some(&2));
        assert_eq!(t.lookup("b.example.com"), Some(&1));
        assert_eq!(t.lookup("deep.b.example.com"), Some(&1));
        assert_eq!(t.lookup("example.com"), Some(&4));
        assert!(!t.insert(Some("*.example.com"), 5));
    }

    #[test]
    fn ingress_wildcards_match_one_label() {
        let mut t = HostTable::new(WildcardMode::SingleLabel);
        t.insert(Some("*.foo.com"), 1);
        assert_eq!(t.lookup("bar.foo.com"), Some(&1));
        assert_eq!(t.lookup("baz.bar.foo.com"), None);
        assert_eq!(t.lookup("foo.com"), None);
    }

    #[test]
    fn hostname_intersection() {
        assert_eq!(intersect(None, "a.com").as_deref(), Some("a.com"));
        assert_eq!(
            intersect(Some("*.example.com"), "foo.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            intersect(Some("foo.example.com"), "*.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            intersect(Some("*.example.com"), "*.foo.example.com").as_deref(),
            Some("*.foo.example.com")
        );
        assert_eq!(intersect(Some("*.example.com"), "example.com"), None);
        assert_eq!(intersect(Some("a.com"), "b.com"), None);
        assert_eq!(
            intersect(Some("*.example.com"), "*.example.com").as_deref(),
            Some("*.example.com")
        );
    }

    #[test]
    fn ports_and_validation() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.com"), "a.com");
        assert!(valid_hostname("*.a.com", true));
        assert!(!valid_hostname("*.a.com", false));
        assert!(!valid_hostname("a..com", true));
    }
}
