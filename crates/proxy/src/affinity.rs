//! Session affinity from the request: the consistent-hash key (source IP, a header or a
//! cookie) and the sticky-session cookie, and the `Set-Cookie` that starts a session.

use gatehouse_translate::cluster::ClusterPolicy;
use gatehouse_translate::cluster::{key_hash, Affinity, Balancer, HashOn, SessionPolicy};
use http::{header, HeaderMap, HeaderValue};
use std::net::{IpAddr, SocketAddr};

/// What `policy` needs to know of this request to choose its endpoint.
pub fn of_request(policy: &ClusterPolicy, headers: &HeaderMap, peer: SocketAddr) -> Affinity {
    let hash = match &policy.balancer {
        Balancer::ConsistentHash(on) => match on {
            HashOn::SourceIp => Some(match peer.ip() {
                IpAddr::V4(v4) => key_hash(&v4.octets()),
                IpAddr::V6(v6) => key_hash(&v6.octets()),
            }),
            HashOn::Header(name) => headers.get(name.as_str()).map(|v| key_hash(v.as_bytes())),
            HashOn::Cookie(name) => cookie(headers, name.as_str()).map(key_hash),
        },
        _ => None,
    };
    let sticky = policy.session.as_ref().and_then(|s| {
        let v = cookie(headers, &s.cookie)?;
        u64::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
    });
    Affinity {
        hash,
        sticky,
        avoid: None,
    }
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// The `Set-Cookie` value that binds the client to the endpoint of `token`.
pub fn session_cookie(s: &SessionPolicy, token: u64) -> Option<HeaderValue> {
    let mut v = format!("{}={token:016x}; Path=/; HttpOnly", s.cookie);
    if let Some(ttl) = s.ttl {
        v.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    HeaderValue::from_str(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_many() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b = 2"));
        h.append(header::COOKIE, HeaderValue::from_static("user=alice"));
        assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "user"), Some(&b"alice"[..]));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn same_key_same_hash() {
        let policy = ClusterPolicy {
            balancer: Balancer::ConsistentHash(HashOn::Header("x-user".into())),
            ..ClusterPolicy::default()
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        let a = of_request(&policy, &h, peer).hash;
        assert!(a.is_some());
        assert_eq!(
            a,
            of_request(&policy, &h, SocketAddr::from(([10, 0, 0, 1], 2))).hash
        );
        h.insert("x-user", HeaderValue::from_static("bob"));
        assert_ne!(a, of_request(&policy, &h, peer).hash);
    }
}
