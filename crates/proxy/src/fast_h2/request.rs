//! A decoded HTTP/2 request header block turned into an `http::Request` head, with the
//! checks RFC 9113 §8.2–8.3 asks of a server: pseudo-headers first and not repeated,
//! lower-case names, no connection-specific fields, `te` only "trailers", and the
//! required `:method`, `:scheme` and `:path`.

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};

/// A request head being collected field by field.
#[derive(Default)]
pub struct Fields {
    method: Option<Method>,
    scheme: Option<Vec<u8>>,
    authority: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    pub headers: HeaderMap,
    /// Bytes counted against the header list limit (RFC 9113 §6.5.2: name + value + 32).
    pub size: usize,
    /// The first rule the block broke.
    pub malformed: Option<&'static str>,
    regular_seen: bool,
    /// Trailers carry no pseudo-headers.
    trailers: bool,
}

/// A complete, checked request head.
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl Fields {
    pub fn trailers() -> Fields {
        Fields {
            trailers: true,
            ..Fields::default()
        }
    }

    fn bad(&mut self, why: &'static str) {
        self.malformed.get_or_insert(why);
    }

    /// One decoded field.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.size += name.len() + value.len() + 32;
        if self.malformed.is_some() {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.trailers {
                return self.bad("pseudo-header in trailers");
            }
            if self.regular_seen {
                return self.bad("pseudo-header after a regular header");
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        return self.bad("repeated :method");
                    }
                    match Method::from_bytes(value) {
                        Ok(m) => self.method = Some(m),
                        Err(_) => self.bad("invalid :method"),
                    }
                    return;
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                _ => return self.bad("unknown pseudo-header"),
            };
            if slot.is_some() {
                return self.bad("repeated pseudo-header");
            }
            *slot = Some(value.to_vec());
            return;
        }
        self.regular_seen = true;
        if name.iter().any(|b| b.is_ascii_uppercase()) {
            return self.bad("upper-case header name");
        }
        let Ok(name) = HeaderName::from_bytes(name) else {
            return self.bad("invalid header name");
        };
        if super::encode::connection_specific(&name) {
            return self.bad("connection-specific header");
        }
        if name == header::TE && value != b"trailers" {
            return self.bad("te other than trailers");
        }
        match HeaderValue::from_bytes(value) {
            Ok(v) => {
                self.headers.append(name, v);
            }
            Err(_) => self.bad("invalid header value"),
        }
    }

    /// The checked request head.
    pub fn request(self) -> Result<RequestHead, &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        let method = self.method.ok_or("missing :method")?;
        let mut uri = Uri::builder();
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err(":scheme or :path in CONNECT");
            }
            let authority = self.authority.ok_or("missing :authority in CONNECT")?;
            uri = uri.path_and_query(authority);
        } else {
            let scheme = self.scheme.ok_or("missing :scheme")?;
            let path = self.path.filter(|p| !p.is_empty()).ok_or("missing :path")?;
            if let Some(a) = self.authority.filter(|a| !a.is_empty()) {
                uri = uri.scheme(scheme.as_slice()).authority(a);
            }
            uri = uri.path_and_query(path);
        }
        let uri = uri.build().map_err(|_| "invalid request target")?;
        Ok(RequestHead {
            method,
            uri,
            headers: self.headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Fields {
        let mut f = Fields::default();
        for (n, v) in list {
            f.add(n.as_bytes(), v.as_bytes());
        }
        f
    }

    #[test]
    fn a_plain_get() {
        let head = fields(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "example.com"),
            (":path", "/a?b=1"),
            ("accept", "*/*"),
        ])
        .request()
        .expect("valid");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.to_string(), "https://example.com/a?b=1");
        assert_eq!(head.headers["accept"], "*/*");
    }

    #[test]
    fn malformed_requests_are_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[(":scheme", "https"), (":path", "/")],
            &[(":method", "GET"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "https"), (":path", "")],
            &[
                (":method", "GET"),
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                ("a", "b"),
                (":scheme", "https"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("Upper", "x"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("connection", "x"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("te", "gzip"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                (":x", "y"),
            ],
        ];
        for c in cases {
            assert!(fields(c).request().is_err(), "{c:?}");
        }
        let mut t = Fields::trailers();
        t.add(b":status", b"200");
        assert!(t.malformed.is_some());
    }
}
