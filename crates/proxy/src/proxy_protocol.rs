//! The PROXY protocol (HAProxy's, versions 1 and 2) from load balancers in front: a
//! connection from a configured address starts with a header that names the real
//! client, which then stands for the connection's peer (access lists, rate limits,
//! `X-Forwarded-For`, logs). The header is required from those addresses and never read
//! from others, so a client cannot forge one. It is read byte-exactly with `peek`, so
//! nothing after it (a TLS ClientHello, an HTTP request) is taken from the stream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// What the start of a stream holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet.
    Incomplete,
    /// A header of `len` bytes; the client it names (None: LOCAL or UNKNOWN, a health
    /// check of the load balancer itself: the peer stands).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    Invalid(&'static str),
}

/// Parses a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < V2_SIGNATURE.len() {
        let v1 = b"PROXY ";
        let v2 = &V2_SIGNATURE[..];
        let n = buf.len();
        if v1[..n.min(6)] == buf[..n.min(6)] || v2[..n] == buf[..] {
            return Parsed::Incomplete;
        }
        return Parsed::Invalid("no PROXY protocol header");
    }
    if buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf);
    }
    Parsed::Invalid("no PROXY protocol header")
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 header too long")
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[6..end]) else {
        return Parsed::Invalid("PROXY v1 header is not text");
    };
    let len = end + 2;
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        ["UNKNOWN", ..] => Parsed::Header { len, source: None },
        [family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: Result<IpAddr, _> = match *family {
                "TCP4" => src.parse::<Ipv4Addr>().map(IpAddr::from),
                _ => src.parse::<Ipv6Addr>().map(IpAddr::from),
            };
            match (ip, sport.parse::<u16>()) {
                (Ok(ip), Ok(port)) => Parsed::Header {
                    len,
                    source: Some(SocketAddr::new(ip, port)),
                },
                _ => Parsed::Invalid("bad address in PROXY v1 header"),
            }
        }
        _ => Parsed::Invalid("malformed PROXY v1 header"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("PROXY v2: bad version");
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let a = &buf[16..len];
    match ver_cmd & 0x0f {
        0 => return Parsed::Header { len, source: None },
        1 => {}
        _ => return Parsed::Invalid("PROXY v2: bad command"),
    }
    let source = match fam >> 4 {
        // AF_INET: 4 + 4 address bytes, 2 + 2 port bytes.
        1 if a.len() >= 12 => Some(SocketAddr::new(
            IpAddr::from([a[0], a[1], a[2], a[3]]),
            u16::from_be_bytes([a[8], a[9]]),
        )),
        // AF_INET6: 16 + 16, 2 + 2.
        2 if a.len() >= 36 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            Some(SocketAddr::new(
                IpAddr::from(ip),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // AF_UNSPEC or AF_UNIX: no usable client address.
        0 | 3 => None,
        _ => return Parsed::Invalid("PROXY v2: bad address block"),
    };
    Parsed::Header { len, source }
}

/// Reads the PROXY header off `stream` within `timeout`; the client it names, or the
/// peer for a LOCAL header. Err: no valid header came, and the connection is dropped.
pub async fn read(
    stream: &mut TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, &'static str> {
    let work = async {
        let mut buf = [0u8; 536];
        loop {
            let n = stream
                .peek(&mut buf)
                .await
                .map_err(|_| "connection failed")?;
            if n == 0 {
                return Err("connection closed before the PROXY header");
            }
            match parse(&buf[..n]) {
                Parsed::Incomplete if n == buf.len() => return Err("PROXY header too long"),
                Parsed::Incomplete => {
                    // Wait for more bytes than we have seen.
                    stream.readable().await.map_err(|_| "connection failed")?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Parsed::Invalid(why) => return Err(why),
                Parsed::Header { len, source } => {
                    let mut take = vec![0u8; len];
                    tokio::io::AsyncReadExt::read_exact(stream, &mut take)
                        .await
                        .map_err(|_| "connection failed")?;
                    return Ok(source.unwrap_or(peer));
                }
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| "no PROXY header in time")?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, addrs: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x20 | cmd, fam]);
        b.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        b.extend_from_slice(addrs);
        b
    }

    #[test]
    fn version_1() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Parsed::Header {
                len: 43,
                source: Some("203.0.113.7:51234".parse().expect("addr"))
            }
        );
        let h6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n";
        assert!(
            matches!(parse(h6), Parsed::Header { source: Some(s), .. } if s.ip() == "2001:db8::7".parse::<IpAddr>().expect("ip"))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
        assert_eq!(parse(b"PROXY TCP4 203.0.113.7 10.0"), Parsed::Incomplete);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert!(matches!(
            parse(b"PROXY TCP4 nope 10.0.0.1 1 2\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(&[b'P'; 200]), Parsed::Invalid(_)));
    }

    #[test]
    fn version_2() {
        let mut a = vec![203, 0, 113, 7, 10, 0, 0, 1];
        a.extend_from_slice(&51234u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(1, 0x11, &a);
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: 28,
                source: Some("203.0.113.7:51234".parse().expect("addr"))
            }
        );
        assert_eq!(parse(&h[..20]), Parsed::Incomplete);
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Parsed::Header {
                len: 16,
                source: None
            },
            "LOCAL"
        );
        let mut a6 = vec![0x20, 0x01, 0x0d, 0xb8];
        a6.extend_from_slice(&[0; 11]);
        a6.push(7);
        a6.extend_from_slice(&[0; 16]);
        a6.extend_from_slice(&[0x0f, 0xa0, 0, 80]);
        assert!(
            matches!(parse(&v2(1, 0x21, &a6)), Parsed::Header { source: Some(s), .. } if s.port() == 4000)
        );
        assert!(
            matches!(parse(&v2(5, 0x11, &a)), Parsed::Invalid(_)),
            "bad command"
        );
    }
}
