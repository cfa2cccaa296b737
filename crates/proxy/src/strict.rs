//! Strict checks on a request head, before routing, against request smuggling and
//! request-line abuse that the HTTP parsers let through: a request must have at most
//! one Host, and a Host that is an authority (no user info, no spaces); it must not
//! carry both Content-Length and Transfer-Encoding (RFC 9112 §6.3: such a request may
//! be an attempt to smuggle one past a server that reads it the other way; it is
//! refused and the connection closed); a request target has no fragment; TRACE and
//! TRACK (cross-site tracing) are not served. Both HTTP/1 paths and HTTP/2 apply them
//! through routing.

use http::{header, HeaderMap, Method, StatusCode};

/// Why a request is refused: the status, and a reason for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        reason,
    }
}

/// Checks a request head (`path` and `query` as received).
pub fn check(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    if method.as_str() == "TRACE" || method.as_str() == "TRACK" {
        return Err(Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "TRACE is not allowed",
        });
    }
    if path.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(bad("a request target has no fragment"));
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    if let Some(host) = hosts.next() {
        if hosts.next().is_some() {
            return Err(bad("more than one Host header"));
        }
        if !authority(host.as_bytes()) {
            return Err(bad("invalid Host header"));
        }
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    Ok(())
}

/// True if `v` is `host[:port]` (RFC 3986): a registered name or IPv4 address of
/// unreserved, sub-delims and percent characters, or a bracketed IP literal; then an
/// optional port of digits. Empty is allowed (HTTP/1.0 without a host).
fn authority(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(end) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &v[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        (&v[..=end], &v[end + 1..])
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    let name_ok = host.first() == Some(&b'[')
        || host.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        });
    port_ok && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts() {
        for good in [
            "a",
            "a.example:8080",
            "127.0.0.1:80",
            "[::1]:443",
            "[2001:db8::1]",
            "",
        ] {
            assert!(authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "u@a", "a b", "a:80x", "a:123456", "[::1", "[zz]", "a/b", "a\\b",
        ] {
            assert!(!authority(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn refusals() {
        let get = Method::GET;
        assert!(check(&get, "/", None, &headers(&[("host", "a")])).is_ok());
        let two = headers(&[("host", "a"), ("host", "b")]);
        assert_eq!(
            check(&get, "/", None, &two).unwrap_err().reason,
            "more than one Host header"
        );
        let both = headers(&[
            ("host", "a"),
            ("content-length", "4"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(
            check(&Method::POST, "/", None, &both).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert!(check(&get, "/a#b", None, &headers(&[("host", "a")])).is_err());
        let trace = Method::from_bytes(b"TRACE").expect("method");
        assert_eq!(
            check(&trace, "/", None, &headers(&[("host", "a")]))
                .unwrap_err()
                .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
