//! What one HTTP exchange gives the rules: the request line, headers and body, the
//! response, and the collections derived from them (arguments, cookies, files, XML),
//! and the extraction of a rule target's values from all that. Values are borrowed
//! from the exchange; a collection no request filled costs nothing.

use crate::body::multipart::Multipart;
use crate::body::xml::XmlDoc;
use crate::body::Pairs;
use crate::store::Store;
use crate::target::{Select, Target};
use crate::variables::Collection as C;
use std::borrow::Cow;

/// One value a target yields: its collection, its key (if the collection has keys),
/// and the value.
#[derive(Debug, Clone)]
pub struct Val<'a> {
    pub col: C,
    pub key: Option<Cow<'a, [u8]>>,
    pub value: Cow<'a, [u8]>,
}

impl Val<'_> {
    /// The name `MATCHED_VAR_NAME` shows: `ARGS:id`, `REQUEST_URI`.
    pub fn name(&self) -> Vec<u8> {
        let mut n = self.col.name().as_bytes().to_vec();
        if let Some(k) = &self.key {
            n.push(b':');
            n.extend_from_slice(k);
        }
        n
    }
}

/// The connection an exchange came on.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub remote_addr: String,
    pub remote_port: u16,
    pub server_addr: String,
    pub server_port: u16,
    /// The request id (`UNIQUE_ID`).
    pub unique_id: String,
}

/// The exchange's data.
#[derive(Debug, Default)]
pub struct Exchange {
    pub peer: Peer,
    pub method: Vec<u8>,
    /// The request target as received (`REQUEST_URI_RAW`).
    pub uri_raw: Vec<u8>,
    /// `HTTP/1.1`.
    pub protocol: Vec<u8>,
    /// Path and query, without scheme and authority (`REQUEST_URI`).
    pub uri: Vec<u8>,
    /// The URL-decoded path (`REQUEST_FILENAME`, `PATH_INFO`).
    pub filename: Vec<u8>,
    pub basename: Vec<u8>,
    pub query: Vec<u8>,
    pub request_line: Vec<u8>,
    pub headers: Pairs,
    pub cookies: Pairs,
    pub args_get: Pairs,
    pub args_post: Pairs,
    pub body: Vec<u8>,
    /// `REQUEST_BODY` is filled (URLENCODED, or forced).
    pub body_visible: bool,
    pub multipart: Option<Box<Multipart>>,
    pub xml: Option<Box<XmlDoc>>,
    pub reqbody_error: Option<String>,
    pub reqbody_processor: Option<&'static str>,
    pub urlencoded_error: bool,
    pub inbound_data_error: bool,
    pub status: u16,
    pub response_protocol: Vec<u8>,
    pub response_headers: Pairs,
    pub response_body: Vec<u8>,
    pub outbound_data_error: bool,
}

impl Exchange {
    /// Fills the request line and what derives from it.
    pub fn set_request_line(&mut self, method: &[u8], uri: &[u8], protocol: &[u8]) {
        self.method = method.to_vec();
        self.uri_raw = uri.to_vec();
        self.protocol = protocol.to_vec();
        let mut line = method.to_vec();
        line.push(b' ');
        line.extend_from_slice(uri);
        line.push(b' ');
        line.extend_from_slice(protocol);
        self.request_line = line;
        // Absolute form: drop scheme and authority.
        let lower = uri
            .get(..8)
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_default();
        let mut rel = uri;
        for scheme in [&b"http://"[..], b"https://"] {
            if lower.starts_with(scheme) {
                let rest = &uri[scheme.len()..];
                rel = rest
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(&b"/"[..], |i| &rest[i..]);
            }
        }
        self.uri = rel.to_vec();
        let (path, query) = match rel.iter().position(|&b| b == b'?') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (rel, &b""[..]),
        };
        self.query = query.to_vec();
        // `%XX` only (no `+`), as ModSecurity decodes the path.
        self.filename = crate::transform::url_decode(path, false, false).into_owned();
        self.basename = match self.filename.iter().rposition(|&b| b == b'/' || b == b'\\') {
            Some(i) => self.filename[i + 1..].to_vec(),
            None => self.filename.clone(),
        };
        self.args_get.clear();
        self.urlencoded_error |= crate::body::urlencoded::parse(query, &mut self.args_get);
    }

    pub fn add_header(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"cookie") {
            parse_cookies(value, &mut self.cookies);
        }
        self.headers.push((name.to_vec(), value.to_vec()));
    }

    /// The first request header named `name` (any case).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        first(&self.headers, name)
    }

    /// The first response header named `name` (any case).
    pub fn response_header(&self, name: &[u8]) -> Option<&[u8]> {
        first(&self.response_headers, name)
    }

    /// Appends the values `t` selects (not counting, not excluding) to `out`.
    pub fn collect<'a>(
        &'a self,
        t: &Target,
        store: &'a Store,
        m: &'a Matched,
        out: &mut Vec<Val<'a>>,
    ) {
        let sel = &t.select;
        let col = t.collection;
        let pairs = |list: &'a Pairs, out: &mut Vec<Val<'a>>| {
            for (k, v) in list {
                if sel.selects(k) {
                    out.push(Val {
                        col,
                        key: Some(Cow::Borrowed(k)),
                        value: Cow::Borrowed(v),
                    });
                }
            }
        };
        let names = |list: &'a Pairs, out: &mut Vec<Val<'a>>| {
            for (k, _) in list {
                if sel.selects(k) {
                    out.push(Val {
                        col,
                        key: Some(Cow::Borrowed(k)),
                        value: Cow::Borrowed(k),
                    });
                }
            }
        };
        let one = |v: Cow<'a, [u8]>, out: &mut Vec<Val<'a>>| {
            out.push(Val {
                col,
                key: None,
                value: v,
            })
        };
        let b = |v: &'a [u8]| Cow::Borrowed(v);
        let num = |n: usize| Cow::Owned(n.to_string().into_bytes());
        let flag = |f: bool| Cow::Borrowed(if f { &b"1"[..] } else { &b"0"[..] });
        let mp = self.multipart.as_deref();
        let mflag =
            |f: fn(&crate::body::multipart::Flags) -> bool| flag(mp.is_some_and(|m| f(&m.flags)));
        match col {
            C::Args => {
                pairs(&self.args_get, out);
                pairs(&self.args_post, out);
            }
            C::ArgsGet => pairs(&self.args_get, out),
            C::ArgsPost => pairs(&self.args_post, out),
            C::ArgsNames => {
                names(&self.args_get, out);
                names(&self.args_post, out);
            }
            C::ArgsGetNames => names(&self.args_get, out),
            C::ArgsPostNames => names(&self.args_post, out),
            C::ArgsCombinedSize => {
                let n: usize = self
                    .args_get
                    .iter()
                    .chain(&self.args_post)
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
                one(num(n), out)
            }
            C::RequestHeaders => pairs(&self.headers, out),
            C::RequestHeadersNames => names(&self.headers, out),
            C::RequestCookies => pairs(&self.cookies, out),
            C::RequestCookiesNames => names(&self.cookies, out),
            C::ResponseHeaders => pairs(&self.response_headers, out),
            C::ResponseHeadersNames => names(&self.response_headers, out),
            C::Files | C::FilesNames | C::FilesSizes => {
                for f in mp.map(|m| m.files.as_slice()).unwrap_or(&[]) {
                    if sel.selects(&f.field) {
                        let value = match col {
                            C::Files => b(&f.filename),
                            C::FilesNames => b(&f.field),
                            _ => num(f.size),
                        };
                        out.push(Val {
                            col,
                            key: Some(b(&f.field)),
                            value,
                        });
                    }
                }
            }
            C::FilesCombinedSize => one(
                num(mp.map_or(0, |m| m.files.iter().map(|f| f.size).sum())),
                out,
            ),
            C::MultipartPartHeaders => {
                if let Some(m) = mp {
                    pairs(&m.part_headers, out)
                }
            }
            C::MultipartFilename => one(b(mp.map_or(&[][..], |m| &m.last_filename)), out),
            C::MultipartName => one(b(mp.map_or(&[][..], |m| &m.last_name)), out),
            C::MultipartBoundaryQuoted => one(mflag(|f| f.boundary_quoted), out),
            C::MultipartBoundaryWhitespace => one(mflag(|f| f.boundary_whitespace), out),
            C::MultipartDataBefore => one(mflag(|f| f.data_before), out),
            C::MultipartDataAfter => one(mflag(|f| f.data_after), out),
            C::MultipartHeaderFolding => one(mflag(|f| f.header_folding), out),
            C::MultipartLfLine => one(mflag(|f| f.lf_line), out),
            C::MultipartCrlfLfLines => one(mflag(|f| f.crlf_lf_lines), out),
            C::MultipartMissingSemicolon => one(mflag(|f| f.missing_semicolon), out),
            C::MultipartInvalidQuoting => one(mflag(|f| f.invalid_quoting), out),
            C::MultipartInvalidPart => one(mflag(|f| f.invalid_part), out),
            C::MultipartInvalidHeaderFolding => one(mflag(|f| f.invalid_header_folding), out),
            C::MultipartFileLimitExceeded => one(mflag(|f| f.file_limit_exceeded), out),
            C::MultipartUnmatchedBoundary => one(mflag(|f| f.unmatched_boundary), out),
            C::MultipartStrictError => one(
                flag(
                    mp.is_some_and(|m| m.flags.strict())
                        || (mp.is_some() && self.reqbody_error.is_some()),
                ),
                out,
            ),
            C::Xml => {
                if let (Some(x), Select::Key(path)) = (self.xml.as_deref(), sel) {
                    for v in x.select(path) {
                        out.push(Val {
                            col,
                            key: Some(Cow::Owned(path.clone())),
                            value: b(v),
                        });
                    }
                }
            }
            C::Tx | C::Ip | C::Global | C::Session | C::User => {
                let cname = col.name();
                if let Select::Key(k) = sel {
                    // Keys are stored lower case, as the selector is.
                    let found = std::str::from_utf8(k)
                        .ok()
                        .and_then(|k| store.entry(cname, k));
                    if let Some((k, v)) = found {
                        out.push(Val {
                            col,
                            key: Some(Cow::Borrowed(k.as_bytes())),
                            value: b(v),
                        });
                    }
                    return;
                }
                for (k, v) in store.members(cname) {
                    if sel.selects(k.as_bytes()) {
                        out.push(Val {
                            col,
                            key: Some(Cow::Borrowed(k.as_bytes())),
                            value: b(v),
                        });
                    }
                }
            }
            C::MatchedVar => {
                if let Some((_, v)) = m.last() {
                    one(b(v), out)
                }
            }
            C::MatchedVarName => {
                if let Some((n, _)) = m.last() {
                    one(b(n), out)
                }
            }
            C::MatchedVars => {
                for (n, v) in &m.vars {
                    out.push(Val {
                        col,
                        key: Some(b(n)),
                        value: b(v),
                    });
                }
            }
            C::MatchedVarsNames => {
                for (n, _) in &m.vars {
                    out.push(Val {
                        col,
                        key: Some(b(n)),
                        value: b(n),
                    });
                }
            }
            C::RequestMethod => one(b(&self.method), out),
            C::RequestProtocol => one(b(&self.protocol), out),
            C::RequestLine => one(b(&self.request_line), out),
            C::RequestUri => one(b(&self.uri), out),
            C::RequestUriRaw => one(b(&self.uri_raw), out),
            C::RequestFilename | C::PathInfo => one(b(&self.filename), out),
            C::RequestBasename => one(b(&self.basename), out),
            C::QueryString => one(b(&self.query), out),
            C::RequestBody if self.body_visible => one(b(&self.body), out),
            C::RequestBodyLength => one(num(self.body.len()), out),
            C::FullRequestLength => {
                let h: usize = self
                    .headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum();
                one(
                    num(self.request_line.len() + 2 + h + 2 + self.body.len()),
                    out,
                )
            }
            C::ReqbodyError | C::ReqbodyProcessorError => {
                one(flag(self.reqbody_error.is_some()), out)
            }
            C::ReqbodyErrorMsg => one(
                b(self.reqbody_error.as_deref().unwrap_or("").as_bytes()),
                out,
            ),
            // Empty when no processor is chosen (a negated test of it then matches).
            C::ReqbodyProcessor => one(b(self.reqbody_processor.unwrap_or("").as_bytes()), out),
            C::UrlencodedError => one(flag(self.urlencoded_error), out),
            C::InboundDataError => one(flag(self.inbound_data_error), out),
            C::OutboundDataError => one(flag(self.outbound_data_error), out),
            C::RemoteAddr => one(b(self.peer.remote_addr.as_bytes()), out),
            C::RemoteHost => one(b(self.peer.remote_addr.as_bytes()), out),
            C::RemotePort => one(num(self.peer.remote_port as usize), out),
            C::ServerAddr => one(b(self.peer.server_addr.as_bytes()), out),
            C::ServerPort => one(num(self.peer.server_port as usize), out),
            C::ServerName => {
                let host = self.header(b"host").unwrap_or(b"");
                let name = match host.iter().rposition(|&c| c == b':') {
                    Some(i) if !host.ends_with(b"]") => &host[..i],
                    _ => host,
                };
                one(b(name), out)
            }
            C::UniqueId => one(b(self.peer.unique_id.as_bytes()), out),
            C::ResponseStatus if self.status != 0 => one(num(self.status as usize), out),
            C::ResponseProtocol => one(b(&self.response_protocol), out),
            C::ResponseBody => one(b(&self.response_body), out),
            C::ResponseContentType => {
                if let Some(v) = self.response_header(b"content-type") {
                    one(b(v), out)
                }
            }
            C::ResponseContentLength => {
                if let Some(v) = self.response_header(b"content-length") {
                    one(b(v), out)
                }
            }
            C::StatusLine => {
                let mut line = self.response_protocol.clone();
                line.extend_from_slice(format!(" {}", self.status).as_bytes());
                one(Cow::Owned(line), out)
            }
            C::TimeEpoch => one(num(epoch() as usize), out),
            // Not available here: GEO lookups, the environment, sessions, authentication.
            _ => {}
        }
    }
}

fn first<'a>(list: &'a Pairs, name: &[u8]) -> Option<&'a [u8]> {
    list.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The current rule's matches (`MATCHED_VAR(S)`, `MATCHED_VAR_NAME`), as owned copies.
#[derive(Debug, Default, Clone)]
pub struct Matched {
    pub vars: Vec<(Vec<u8>, Vec<u8>)>,
    /// The last match of any rule, which `MATCHED_VAR` keeps after its rule ends.
    pub last: Option<(Vec<u8>, Vec<u8>)>,
}

impl Matched {
    fn last(&self) -> Option<(&[u8], &[u8])> {
        self.last
            .as_ref()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
    }
}

fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `Cookie: a=1; b=2` into pairs; a part without `=` is a name with an empty value.
pub fn parse_cookies(value: &[u8], out: &mut Pairs) {
    for part in value.split(|&b| b == b';') {
        let part = part.trim_ascii_start();
        if part.is_empty() {
            continue;
        }
        match part.iter().position(|&b| b == b'=') {
            Some(i) => out.push((part[..i].to_vec(), part[i + 1..].to_vec())),
            None => out.push((part.to_vec(), Vec::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variables::parse;

    fn values(x: &Exchange, target: &str) -> Vec<(String, String)> {
        let t = Target::compile(&parse(target).expect("parses")[0]).expect("compiles");
        let (store, m) = (Store::default(), Matched::default());
        let mut out = Vec::new();
        x.collect(&t, &store, &m, &mut out);
        out.iter()
            .map(|v| {
                (
                    String::from_utf8_lossy(&v.name()).into(),
                    String::from_utf8_lossy(&v.value).into(),
                )
            })
            .collect()
    }

    #[test]
    fn request_line_headers_and_cookies() {
        let mut x = Exchange::default();
        x.set_request_line(
            b"GET",
            b"http://example.com/a%20b/c.php?x=1&y=%3Cs%3E",
            b"HTTP/1.1",
        );
        x.add_header(b"Host", b"example.com");
        x.add_header(b"Cookie", b"sid=abc; theme=dark");
        assert_eq!(
            values(&x, "REQUEST_URI"),
            [("REQUEST_URI".into(), "/a%20b/c.php?x=1&y=%3Cs%3E".into())]
        );
        assert_eq!(values(&x, "REQUEST_FILENAME")[0].1, "/a b/c.php");
        assert_eq!(values(&x, "REQUEST_BASENAME")[0].1, "c.php");
        assert_eq!(values(&x, "ARGS:y"), [("ARGS:y".into(), "<s>".into())]);
        assert_eq!(values(&x, "ARGS_NAMES").len(), 2);
        assert_eq!(
            values(&x, "REQUEST_COOKIES:/^s/"),
            [("REQUEST_COOKIES:sid".into(), "abc".into())]
        );
        assert_eq!(values(&x, "REQUEST_HEADERS:host")[0].1, "example.com");
        assert_eq!(values(&x, "SERVER_NAME")[0].1, "example.com");
        assert!(values(&x, "REQUEST_BODY").is_empty());
        let decoded = crate::transform::url_decode(b"%41%4", false, false);
        assert_eq!(decoded.as_ref(), b"A%4");
    }
}
