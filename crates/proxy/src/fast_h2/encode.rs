//! HPACK encoding of response and trailer header blocks (RFC 7541), kept stateless:
//! common `:status` values are static-table entries, every other field is a literal
//! "without indexing" (or "never indexed" when the value is marked sensitive) with the
//! name taken from the static table where it is there. With no dynamic table there is
//! no encoder state to keep in step with the client's decoder, and no per-response
//! table search.

use http::{HeaderMap, HeaderName, StatusCode};

/// Appends `:status` and `headers` (minus connection-specific ones) as a header block.
pub fn response(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap) {
    match status.as_u16() {
        200 => out.push(0x80 | 8),
        204 => out.push(0x80 | 9),
        206 => out.push(0x80 | 10),
        304 => out.push(0x80 | 11),
        400 => out.push(0x80 | 12),
        404 => out.push(0x80 | 13),
        500 => out.push(0x80 | 14),
        _ => {
            integer(out, 0x00, 4, 8);
            string(out, status.as_str().as_bytes());
        }
    }
    fields(out, headers);
}

/// Appends `headers` (trailers: no pseudo-headers) as a header block.
pub fn fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        if connection_specific(name) {
            continue;
        }
        // 0000xxxx: literal without indexing; 0001xxxx: never indexed.
        let first = if value.is_sensitive() { 0x10 } else { 0x00 };
        match static_name(name.as_str()) {
            Some(i) => integer(out, first, 4, i),
            None => {
                out.push(first);
                string(out, name.as_str().as_bytes());
            }
        }
        string(out, value.as_bytes());
    }
}

/// Header fields HTTP/2 forbids (RFC 9113 §8.2.2): they describe the HTTP/1.1 hop.
pub fn connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}

/// An HPACK integer with an `n`-bit prefix, the other bits of the first byte `first`.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// The static-table index of a header name (RFC 7541 Appendix A).
fn static_name(name: &str) -> Option<usize> {
    Some(match name {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn decode(block: &[u8]) -> Vec<(String, String)> {
        let mut d = loona_hpack::Decoder::new();
        let mut got = Vec::new();
        d.decode_with_cb(block, |n, v| {
            got.push((
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ))
        })
        .expect("valid block");
        got
    }

    #[test]
    fn a_decoder_reads_what_we_write() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("x-custom", HeaderValue::from_static("v"));
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        let mut secret = HeaderValue::from_static("s3cr3t");
        secret.set_sensitive(true);
        h.insert("set-cookie", secret);
        h.insert("x-long", HeaderValue::from_str(&"a".repeat(300)).unwrap());
        let mut out = Vec::new();
        response(&mut out, StatusCode::OK, &h);
        let got = decode(&out);
        assert_eq!(got[0], (":status".into(), "200".into()));
        assert_eq!(got[1], ("content-type".into(), "text/plain".into()));
        assert_eq!(got[2], ("x-custom".into(), "v".into()));
        assert_eq!(got[3], ("set-cookie".into(), "s3cr3t".into()));
        assert_eq!(got[4].1.len(), 300);
        assert_eq!(got.len(), 5, "connection must not be sent: {got:?}");

        let mut out = Vec::new();
        response(&mut out, StatusCode::IM_A_TEAPOT, &HeaderMap::new());
        assert_eq!(decode(&out), vec![(":status".into(), "418".into())]);
    }

    #[test]
    fn integers_past_the_prefix() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]); // RFC 7541 C.1.2
    }
}
