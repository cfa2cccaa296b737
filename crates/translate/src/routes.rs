//! Per-host route tables: entries sorted by precedence, indexed by exact path and by
//! path prefix, so a request never scans every route; plus path rewrite helpers.

use crate::snapshot::{PathModifier, RouteAction};
use regex::Regex;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing slash; `/` is stored as the empty string.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum StrMatch {
    Exact(String),
    Regex(Regex),
}

impl StrMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => e == v,
            StrMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// One match entry of a rule, with the action it leads to.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    pub path: PathMatch,
    pub method: Option<http::Method>,
    pub headers: Vec<(http::HeaderName, StrMatch)>,
    pub query: Vec<(String, StrMatch)>,
    pub action: Arc<RouteAction>,
}

/// What the router needs from a request.
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

impl RouteEntry {
    fn matches_rest(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method {
            if m != req.method {
                return false;
            }
        }
        for (name, m) in &self.headers {
            let ok = req
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| m.matches(v)));
            if !ok {
                return false;
            }
        }
        for (name, m) in &self.query {
            match query_param(req.query, name) {
                Some(v) if m.matches(&v) => {}
                _ => return false,
            }
        }
        true
    }

    /// Length of the matched prefix, for `ReplacePrefixMatch`.
    pub fn prefix_len(&self) -> usize {
        match &self.path {
            PathMatch::Prefix(p) => p.len(),
            _ => 0,
        }
    }
}

/// First value of query parameter `name`, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let q = query?;
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return Some(percent_decode(v));
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Route entries for one host, sorted by precedence (index 0 wins), with indexes.
#[derive(Debug, Default)]
pub struct RouteTable {
    entries: Vec<RouteEntry>,
    exact: HashMap<String, Vec<u32>>,
    prefix: HashMap<String, Vec<u32>>,
    regex: Vec<u32>,
}

impl RouteTable {
    /// Builds a table from entries already sorted by precedence.
    pub fn new(entries: Vec<RouteEntry>) -> Self {
        let mut t = RouteTable {
            entries,
            ..Default::default()
        };
        for (i, e) in t.entries.iter().enumerate() {
            let i = i as u32;
            match &e.path {
                PathMatch::Exact(p) => t.exact.entry(p.clone()).or_default().push(i),
                PathMatch::Prefix(p) => t.prefix.entry(p.clone()).or_default().push(i),
                PathMatch::Regex(_) => t.regex.push(i),
            }
        }
        t
    }

    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    /// The best entry for the request (lowest index that fully matches).
    pub fn find(&self, req: &RequestView<'_>) -> Option<&RouteEntry> {
        let mut best = u32::MAX;
        let mut consider = |list: &[u32]| {
            for &i in list {
                if i >= best {
                    break;
                }
                if self.entries[i as usize].matches_rest(req) {
                    best = i;
                    break;
                }
            }
        };
        if let Some(l) = self.exact.get(req.path) {
            consider(l);
        }
        if !self.prefix.is_empty() {
            // Every segment boundary of the path is a candidate prefix.
            let p = req.path.trim_end_matches('/');
            if let Some(l) = self.prefix.get("") {
                consider(l);
            }
            for (i, b) in p.bytes().enumerate().skip(1) {
                if b == b'/' {
                    if let Some(l) = self.prefix.get(&p[..i]) {
                        consider(l);
                    }
                }
            }
            if !p.is_empty() {
                if let Some(l) = self.prefix.get(p) {
                    consider(l);
                }
            }
        }
        for &i in &self.regex {
            if i >= best {
                break;
            }
            let e = &self.entries[i as usize];
            if let PathMatch::Regex(r) = &e.path {
                if r.is_match(req.path) && e.matches_rest(req) {
                    best = i;
                    break;
                }
            }
        }
        self.entries.get(best as usize)
    }
}

/// Applies a path modifier to `path` whose matched prefix was `prefix_len` bytes.
pub fn modify_path(path: &str, modifier: &PathModifier, prefix_len: usize) -> String {
    match modifier {
        PathModifier::Full(p) => p.clone(),
        PathModifier::Prefix(replacement) => {
            let rest = path.get(prefix_len..).unwrap_or("");
            let mut out = replacement.trim_end_matches('/').to_string();
            if rest.is_empty() {
                if out.is_empty() {
                    out.push('/');
                }
            } else {
                out.push_str(rest);
            }
            if !out.starts_with('/') {
                out.insert(0, '/');
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ActionKind, BackendSet};

    fn action(id: u32) -> Arc<RouteAction> {
        Arc::new(RouteAction {
            id,
            name: Arc::from(format!("r{id}")),
            request_headers: None,
            response_headers: None,
            kind: ActionKind::Forward {
                rewrite: None,
                backends: BackendSet::default(),
            },
            timeout: None,
            backend_timeout: None,
            mirrors: Vec::new(),
            protection: Default::default(),
        })
    }

    fn entry(path: PathMatch, id: u32) -> RouteEntry {
        RouteEntry {
            path,
            method: None,
            headers: vec![],
            query: vec![],
            action: action(id),
        }
    }

    fn find(
        t: &RouteTable,
        method: &http::Method,
        path: &str,
        query: Option<&str>,
        h: &http::HeaderMap,
    ) -> Option<u32> {
        t.find(&RequestView {
            method,
            path,
            query,
            headers: h,
        })
        .map(|e| e.action.id)
    }

    #[test]
    fn precedence_and_prefix_boundaries() {
        let mut with_header = entry(PathMatch::Prefix("/api".into()), 2);
        with_header.headers.push((
            http::HeaderName::from_static("x-v"),
            StrMatch::Exact("2".into()),
        ));
        let mut with_query = entry(PathMatch::Prefix("".into()), 5);
        with_query
            .query
            .push(("q".into(), StrMatch::Exact("a b".into())));
        let t = RouteTable::new(vec![
            entry(PathMatch::Exact("/api/exact".into()), 1),
            with_header,
            entry(PathMatch::Prefix("/api".into()), 3),
            entry(
                PathMatch::Regex(Regex::new("^/re/[0-9]+$").expect("regex")),
                4,
            ),
            with_query,
            entry(PathMatch::Prefix("".into()), 6),
        ]);
        let g = http::Method::GET;
        let mut h = http::HeaderMap::new();
        assert_eq!(find(&t, &g, "/api/exact", None, &h), Some(1));
        assert_eq!(find(&t, &g, "/api/exact/x", None, &h), Some(3));
        assert_eq!(find(&t, &g, "/api", None, &h), Some(3));
        assert_eq!(find(&t, &g, "/api/", None, &h), Some(3));
        assert_eq!(find(&t, &g, "/apix", None, &h), Some(6));
        assert_eq!(find(&t, &g, "/re/12", None, &h), Some(4));
        assert_eq!(find(&t, &g, "/other", Some("q=a%20b"), &h), Some(5));
        assert_eq!(find(&t, &g, "/other", Some("q=a+b"), &h), Some(5));
        h.insert("x-v", http::HeaderValue::from_static("2"));
        assert_eq!(find(&t, &g, "/api/x", None, &h), Some(2));
    }

    #[test]
    fn prefix_rewrites() {
        let p = |r: &str| PathModifier::Prefix(r.to_string());
        assert_eq!(modify_path("/foo/bar", &p("/xyz"), 4), "/xyz/bar");
        assert_eq!(modify_path("/foo/bar", &p("/"), 4), "/bar");
        assert_eq!(modify_path("/foo", &p("/xyz"), 4), "/xyz");
        assert_eq!(modify_path("/foo/", &p("/xyz"), 4), "/xyz/");
        assert_eq!(modify_path("/foo", &p("/"), 4), "/");
        assert_eq!(modify_path("/foo/bar", &p("/xyz/"), 4), "/xyz/bar");
        assert_eq!(modify_path("/a", &PathModifier::Full("/b".into()), 0), "/b");
    }
}
