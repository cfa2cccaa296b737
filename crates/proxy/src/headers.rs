//! Header handling common to every forwarded request and response: hop-by-hop
//! stripping (RFC 9110 §7.6.1), X-Forwarded-*, Via, and request ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const VIA_VALUE: &str = "1.1 gatehouse";

/// Removes hop-by-hop headers, including those the Connection header names. When
/// `keep_upgrade` is set (a WebSocket handshake), `Connection: upgrade` and `Upgrade`
/// survive. `TE: trailers` survives (gRPC needs it).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|list| list.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for n in named {
            if n != header::TE && !(keep_upgrade && n == header::UPGRADE) {
                h.remove(n);
            }
        }
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::TRAILER);
    h.remove(header::PROXY_AUTHENTICATE);
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        h.remove(header::TE);
    }
}

/// Whether the request asks for a WebSocket upgrade. Other upgrades (notably `h2c`,
/// which would let a client tunnel past routing to an h2c-capable backend) are not
/// forwarded: their headers are stripped as hop-by-hop.
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Appends the client address to X-Forwarded-For and sets X-Forwarded-Proto and Via.
pub fn add_forwarded(h: &mut HeaderMap, client: IpAddr, https: bool) {
    use std::io::Write;
    // "prev, ip" built on the stack when it fits (an IPv6 address is at most 45 bytes).
    let mut buf = [0u8; 256];
    let prev = h
        .get(&X_FORWARDED_FOR)
        .map(|v| v.as_bytes())
        .filter(|p| !p.is_empty());
    let value = match prev {
        Some(p) if p.len() + 48 <= buf.len() => {
            let mut w = &mut buf[..];
            let _ = w.write_all(p);
            let _ = write!(w, ", {client}");
            let left = w.len();
            HeaderValue::from_bytes(&buf[..256 - left])
        }
        Some(p) => HeaderValue::from_str(&format!("{}, {client}", String::from_utf8_lossy(p))),
        None => {
            let mut w = &mut buf[..];
            let _ = write!(w, "{client}");
            let left = w.len();
            HeaderValue::from_bytes(&buf[..256 - left])
        }
    };
    if let Ok(v) = value {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    h.append(header::VIA, HeaderValue::from_static(VIA_VALUE));
}

/// The request id: the client's if it is sane, else a new random one (UUID v4 form).
pub fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        let ok =
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    new_request_id()
}

pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Random bits with the version (4) and variant (10) of a UUID v4.
    let r = fastrand::u128(..);
    let r =
        (r & !(0xf000u128 << 64) | (0x4000u128 << 64)) & !(0xc000u128 << 48) | (0x8000u128 << 48);
    let mut id = [0u8; 36];
    let mut nibble = 0;
    for (i, slot) in id.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
            continue;
        }
        *slot = HEX[((r >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-secret").is_none()
                && h.get("keep-alive").is_none()
                && h.get(header::UPGRADE).is_none()
        );
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        assert!(h.get("x-keep").is_some());
        // Every Connection line counts.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-second"));
        h.insert("x-second", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-second").is_none());
    }

    #[test]
    fn upgrade_headers_survive_for_websocket() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        let mut smuggle = h.clone();
        smuggle.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&smuggle), "h2c upgrades are never forwarded");
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn forwarded_headers_and_ids() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("10.0.0.1"),
        );
        add_forwarded(&mut h, "127.0.0.1".parse().expect("ip"), true);
        assert_eq!(
            h.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()),
            Some(&b"10.0.0.1, 127.0.0.1"[..])
        );
        assert_eq!(
            h.get(&X_FORWARDED_PROTO).map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.to_str().ok().and_then(|s| s.chars().nth(14)), Some('4'));
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        assert_eq!(request_id(&h), "abc");
    }
}
