//! The raw bytes of a stage's request, built as go-ftw builds them (`ftwhttp/request.go`,
//! `ftwhttp/header.go`, `test/defaults.go`, `runner/run.go`):
//!
//! - `encoded_request` (else the deprecated `raw_request`) is the whole request, sent
//!   byte for byte: nothing is added.
//! - Otherwise: `METHOD URI VERSION\r\n`, the headers as `Name: value\r\n`, `\r\n`, then
//!   the body. go-ftw keeps the test's headers in a map and writes them sorted by name
//!   (byte order); [`HeaderOrder::AsWritten`] keeps the file's order instead.
//! - With a non-empty body and autocompletion on, a missing `Content-Type` becomes
//!   `application/x-www-form-urlencoded` (appended), and if the `Content-Type` is exactly
//!   that (case-insensitively) and the body holds no `%` and no `+` (go-ftw's "unescaping
//!   changes nothing" test), each `key=value` pair of the body is query-escaped; a
//!   trailing `&` is dropped by that re-encoding.
//! - If a `Content-Type` contains `multipart/form-data;`, every LF of the body becomes
//!   CRLF (even without autocompletion; an existing CRLF becomes CR CR LF, as in go-ftw).
//! - With autocompletion on, `Connection: close` is appended unless a `Connection`
//!   header exists, then `Content-Length: <body length>` unless a `Content-Length` header
//!   exists and if the body is non-empty or the method matches go-ftw's
//!   `^POST|PUT|PATCH|DELETE$` (which is: starts with POST, contains PUT or PATCH, or
//!   ends with DELETE).
//! - The body is sent as is: no CRLF is added after it, and `data` is not evaluated as
//!   a Go template (no CRS test uses `{{`).
//!
//! Header names compare as Go's `CanonicalMIMEHeaderKey` does.

use super::spec::Input;
use base64::Engine as _;
use std::fmt;

/// The order in which a stage's own headers go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderOrder {
    /// Sorted by name, byte-wise: what go-ftw does with the test file's header map.
    #[default]
    GoFtw,
    /// The order the test file lists them in.
    AsWritten,
}

/// A stage whose request cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// `encoded_request` is not valid base64.
    BadEncodedRequest(String),
    /// `data` and `encoded_request` are both set (go-ftw refuses such a stage).
    DataAndEncodedRequest,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::BadEncodedRequest(e) => write!(f, "encoded_request is not base64: {e}"),
            RequestError::DataAndEncodedRequest => {
                f.write_str("'data' and 'encoded_request' must not be set simultaneously")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// The request bytes of a stage, in go-ftw's header order.
pub fn build_request(input: &Input) -> Result<Vec<u8>, RequestError> {
    build_request_with(input, HeaderOrder::GoFtw)
}

/// The request bytes of a stage, with the given order for the test's own headers.
pub fn build_request_with(input: &Input, order: HeaderOrder) -> Result<Vec<u8>, RequestError> {
    let encoded = input.encoded_request.as_deref().filter(|s| !s.is_empty());
    if let Some(encoded) = encoded {
        if input.data.as_deref().is_some_and(|d| !d.is_empty()) {
            return Err(RequestError::DataAndEncodedRequest);
        }
        return decode_base64(encoded).map_err(RequestError::BadEncodedRequest);
    }
    if let Some(raw) = input.raw_request.as_deref().filter(|s| !s.is_empty()) {
        return Ok(raw.as_bytes().to_vec());
    }

    let method = input.method();
    let mut headers: Vec<(String, String)> = input.headers.0.clone();
    if order == HeaderOrder::GoFtw {
        // A Go map holds one value per exact name; YAML keys are unique already.
        headers.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
    let mut data: Vec<u8> = body_of(input);
    let autocomplete = input.autocomplete();

    if !data.is_empty() && autocomplete {
        if !has_header(&headers, "Content-Type") {
            headers.push((
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ));
        }
        data = encode_form_data(&headers, data);
    }
    let multipart = headers.iter().any(|(k, v)| {
        canonical_key(k) == "Content-Type"
            && v.to_ascii_lowercase().contains("multipart/form-data;")
    });
    if multipart {
        data = lf_to_crlf(&data);
    }
    if autocomplete {
        if !has_header(&headers, "Connection") {
            headers.push(("Connection".to_string(), "close".to_string()));
        }
        if !has_header(&headers, "Content-Length")
            && (!data.is_empty() || method_permits_body(method))
        {
            headers.push(("Content-Length".to_string(), data.len().to_string()));
        }
    }

    let mut out = Vec::with_capacity(256 + data.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(input.uri().as_bytes());
    out.push(b' ');
    out.extend_from_slice(input.version().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&data);
    Ok(out)
}

/// The request method of a built request (its first space-delimited token), upper-cased;
/// used to know that a `HEAD` response has no body.
pub fn request_method(raw: &[u8]) -> String {
    let end = raw
        .iter()
        .position(|b| *b == b' ' || *b == b'\r' || *b == b'\n')
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).to_ascii_uppercase()
}

/// The marker request go-ftw sends around each stage (`buildMarkerRequest`), to `/`.
pub fn marker_request(header_name: &str, marker_id: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nAccept: */*\r\nUser-Agent: go-ftw test agent\r\nHost: localhost\r\n{header_name}: {marker_id}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The body: `data` as UTF-8, else `encoded_data` decoded (nothing if that is invalid,
/// as go-ftw does).
fn body_of(input: &Input) -> Vec<u8> {
    if let Some(data) = &input.data {
        return data.as_bytes().to_vec();
    }
    if let Some(encoded) = &input.encoded_data {
        return decode_base64(encoded).unwrap_or_default();
    }
    Vec::new()
}

/// Go's `base64.StdEncoding.DecodeString`: padded standard alphabet, ignoring CR and LF.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|e| e.to_string())
}

/// go-ftw's `methodsWithBodyRegex` `^POST|PUT|PATCH|DELETE$`, alternation and all.
fn method_permits_body(method: &str) -> bool {
    method.starts_with("POST")
        || method.contains("PUT")
        || method.contains("PATCH")
        || method.ends_with("DELETE")
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(k, _)| canonical_key(k) == name)
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: a name made only of token characters gets
/// its first letter and every letter after `-` upper-cased and the rest lower-cased;
/// any other name is left as is.
pub fn canonical_key(name: &str) -> String {
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(is_token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// go-ftw's `encodeDataParameters`.
fn encode_form_data(headers: &[(String, String)], data: Vec<u8>) -> Vec<u8> {
    let form = headers.iter().any(|(k, v)| {
        canonical_key(k) == "Content-Type"
            && v.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    // Go's QueryUnescape leaves a string unchanged only if it has no '+' and no '%'
    // (a '%' either decodes or fails, and a failure leaves the data alone too).
    if !form || data.is_empty() || data.contains(&b'+') || data.contains(&b'%') {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 2);
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        let token = match rest.iter().position(|b| *b == b'&') {
            Some(i) => {
                let t = &rest[..i];
                rest = &rest[i + 1..];
                t
            }
            None => std::mem::take(&mut rest),
        };
        match token.iter().position(|b| *b == b'=') {
            Some(eq) => {
                query_escape(&token[..eq], &mut out);
                out.push(b'=');
                query_escape(&token[eq + 1..], &mut out);
            }
            None => query_escape(token, &mut out),
        }
        out.push(b'&');
    }
    out.pop();
    out
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`, the rest `%XX`.
fn query_escape(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else if b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

fn lf_to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for &b in data {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftw::spec::{parse_test_file, Headers};

    fn input(f: impl FnOnce(&mut Input)) -> Input {
        let mut i = Input::default();
        f(&mut i);
        i
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn defaults_give_a_bare_get() {
        let raw = build_request(&Input::default()).expect("builds");
        assert_eq!(text(&raw), "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn encoded_request_is_sent_byte_for_byte() {
        let raw: Vec<u8> =
            b"POST / HTTP/1.0\r\nContent-Length: 9\r\n\r\ntest=\xac\xed\x00\x05\r\n\r\n".to_vec();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
        let i = input(|i| {
            i.encoded_request = Some(encoded);
            i.headers = Headers(vec![("Host".into(), "ignored".into())]);
            i.uri = Some("/ignored".into());
        });
        assert_eq!(build_request(&i).expect("builds"), raw);
        // The CRS test 944200: decodes exactly, binary bytes included.
        let dir = crate::ftw::spec::regression_dir();
        let text = std::fs::read_to_string(
            dir.join("tests/REQUEST-944-APPLICATION-ATTACK-JAVA/944200.yaml"),
        )
        .expect("944200.yaml");
        let file = parse_test_file(&text, "944200.yaml")
            .expect("parses")
            .expect("document");
        let raw = build_request(&file.tests[0].stages[0].input).expect("builds");
        assert!(raw.starts_with(b"POST / HTTP/1.0\r\nHost: localhost\r\n"));
        assert!(raw.ends_with(b"test=\xac\xed\x00\x05\r\n\r\n"));
        let bad = input(|i| i.encoded_request = Some("not base64!".into()));
        assert!(matches!(
            build_request(&bad),
            Err(RequestError::BadEncodedRequest(_))
        ));
    }

    #[test]
    fn data_gets_content_type_and_length_and_headers_are_sorted() {
        let i = input(|i| {
            i.method = Some("POST".into());
            i.uri = Some("/post".into());
            i.headers = Headers(vec![
                ("User-Agent".into(), "OWASP CRS test agent".into()),
                ("Host".into(), "localhost".into()),
            ]);
            i.data = Some("a=b c&d=<x>&".into());
        });
        let raw = build_request(&i).expect("builds");
        assert_eq!(
            text(&raw),
            "POST /post HTTP/1.1\r\nHost: localhost\r\nUser-Agent: OWASP CRS test agent\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: 15\r\n\r\na=b+c&d=%3Cx%3E"
        );
        let raw = build_request_with(&i, HeaderOrder::AsWritten).expect("builds");
        assert!(text(&raw).starts_with(
            "POST /post HTTP/1.1\r\nUser-Agent: OWASP CRS test agent\r\nHost: localhost\r\n"
        ));
    }

    #[test]
    fn already_encoded_or_other_types_are_left_alone() {
        let i = input(|i| {
            i.method = Some("POST".into());
            i.data = Some("x=%27 or 1=1".into());
        });
        assert!(text(&build_request(&i).expect("builds")).ends_with("\r\n\r\nx=%27 or 1=1"));
        let i = input(|i| {
            i.method = Some("POST".into());
            i.headers = Headers(vec![("content-type".into(), "application/json".into())]);
            i.data = Some("{\"a\": \"b c\"}\n".into());
        });
        let t = text(&build_request(&i).expect("builds"));
        assert!(t.contains("content-type: application/json\r\n"), "{t}");
        assert!(!t.contains("Content-Type"), "{t}");
        assert!(t.contains("Content-Length: 13\r\n"), "{t}");
        assert!(
            t.ends_with("\r\n\r\n{\"a\": \"b c\"}\n"),
            "no CRLF added: {t}"
        );
    }

    #[test]
    fn multipart_lf_becomes_crlf() {
        let i = input(|i| {
            i.method = Some("POST".into());
            i.headers = Headers(vec![(
                "Content-Type".into(),
                "multipart/form-data; boundary=x".into(),
            )]);
            i.data = Some("--x\nContent-Disposition: form-data; name=\"a\"\n\nb\n--x--\n".into());
        });
        let t = text(&build_request(&i).expect("builds"));
        assert!(t.ends_with(
            "\r\n\r\n--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--x--\r\n"
        ));
        assert!(t.contains("Content-Length: 59\r\n"), "{t}");
    }

    #[test]
    fn autocomplete_off_adds_nothing_and_existing_headers_win() {
        let i = input(|i| {
            i.method = Some("POST".into());
            i.autocomplete_headers = Some(false);
            i.data = Some("a b".into());
        });
        assert_eq!(
            text(&build_request(&i).expect("builds")),
            "POST / HTTP/1.1\r\n\r\na b"
        );
        let i = input(|i| {
            i.method = Some("POST".into());
            i.headers = Headers(vec![
                ("connection".into(), "keep-alive".into()),
                ("Content-length".into(), "0".into()),
            ]);
        });
        // Byte order: "Content-length" sorts before "connection".
        assert_eq!(
            text(&build_request(&i).expect("builds")),
            "POST / HTTP/1.1\r\nContent-length: 0\r\nconnection: keep-alive\r\n\r\n"
        );
        // An empty POST still gets a zero Content-Length; an empty GET none.
        let i = input(|i| i.method = Some("PUT".into()));
        assert!(text(&build_request(&i).expect("builds")).contains("Content-Length: 0\r\n"));
        let i = input(|i| i.method = Some("OPTIONS".into()));
        assert!(!text(&build_request(&i).expect("builds")).contains("Content-Length"));
    }

    #[test]
    fn helpers_match_go() {
        assert_eq!(canonical_key("content-type"), "Content-Type");
        assert_eq!(canonical_key("X_Filename"), "X_filename");
        assert_eq!(canonical_key("bad header"), "bad header");
        assert!(method_permits_body("OUTPUT"));
        assert!(!method_permits_body("GET"));
        assert_eq!(request_method(b"head / HTTP/1.1\r\n"), "HEAD");
        let m = text(&marker_request("X-CRS-Test", "abc"));
        assert!(m.starts_with("GET / HTTP/1.1\r\n"));
        assert!(m.contains("\r\nX-CRS-Test: abc\r\n"));
        assert!(m.contains("\r\nHost: localhost\r\n"));
        let mut out = Vec::new();
        query_escape("a/b?c=d é~".as_bytes(), &mut out);
        assert_eq!(text(&out), "a%2Fb%3Fc%3Dd+%C3%A9~");
    }
}
