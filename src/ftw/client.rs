//! One exchange with the WAF: a fresh TCP connection, the request bytes written as they
//! are, and one response read back. The response is complete when its head is read and
//! its body is framed (Content-Length, chunked, none for HEAD/1xx/204/304) or, without
//! framing, when the server closes; the read stops at a timeout anyway. The status is
//! the 3-digit code of the first response line (as go-ftw, which parses with Go's
//! `http.ReadResponse`). No response head at all (refused, reset, closed, timed out,
//! garbage) is an error, which is what a test's `expect_error` looks for.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Timeouts of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    /// How long to wait for a complete response head after writing the request.
    pub response_timeout: Duration,
    /// How long a body read may stall before the response is taken as it is.
    pub idle_timeout: Duration,
    /// An upper bound on the whole exchange.
    pub total_timeout: Duration,
    /// Responses larger than this are cut (and taken as they are).
    pub max_response_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(3),
            total_timeout: Duration::from_secs(15),
            max_response_bytes: 32 << 20,
        }
    }
}

/// A response as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    /// Everything read, head and body.
    pub raw: Vec<u8>,
    /// Where the body starts in `raw`.
    pub body_start: usize,
    /// The body was not read to its framed end (timeout, close or size cap).
    pub truncated: bool,
}

impl RawResponse {
    pub fn body(&self) -> &[u8] {
        &self.raw[self.body_start.min(self.raw.len())..]
    }
}

/// An exchange that produced no response.
#[derive(Debug)]
pub enum ExchangeError {
    Connect(std::io::Error),
    ConnectTimeout,
    /// Writing failed and no response followed.
    Write(std::io::Error),
    Read(std::io::Error),
    /// No complete response head within the response timeout.
    Timeout,
    /// The server closed the connection before a complete response head.
    Closed {
        bytes_read: usize,
    },
    /// What came back is not an HTTP response head.
    Malformed(String),
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Connect(e) => write!(f, "connect failed: {e}"),
            ExchangeError::ConnectTimeout => f.write_str("connect timed out"),
            ExchangeError::Write(e) => write!(f, "write failed: {e}"),
            ExchangeError::Read(e) => write!(f, "read failed: {e}"),
            ExchangeError::Timeout => f.write_str("no response before the timeout"),
            ExchangeError::Closed { bytes_read: 0 } => {
                f.write_str("connection closed without a response")
            }
            ExchangeError::Closed { bytes_read } => write!(
                f,
                "connection closed after {bytes_read} bytes, before the response head ended"
            ),
            ExchangeError::Malformed(e) => write!(f, "malformed response: {e}"),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// Sends `request` over a new connection to `addr` and reads one response. `head_request`
/// says the response has no body whatever its headers say.
pub async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    head_request: bool,
    cfg: &ClientConfig,
) -> Result<RawResponse, ExchangeError> {
    let started = Instant::now();
    let mut stream = match timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ExchangeError::ConnectTimeout),
        Ok(Err(e)) => return Err(ExchangeError::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    // A server may answer and close before taking the whole request; a response that
    // can still be read counts, so a write error is only reported if none follows.
    let write_error = match timeout(cfg.response_timeout, stream.write_all(request)).await {
        Err(_) => Some(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
        Ok(Err(e)) => Some(e),
        Ok(Ok(())) => stream.flush().await.err(),
    };
    let result = read_response(&mut stream, head_request, cfg, started).await;
    match (result, write_error) {
        (Ok(r), _) => Ok(r),
        (Err(_), Some(w)) => Err(ExchangeError::Write(w)),
        (Err(e), None) => Err(e),
    }
}

async fn read_response(
    stream: &mut TcpStream,
    head_request: bool,
    cfg: &ClientConfig,
    started: Instant,
) -> Result<RawResponse, ExchangeError> {
    let head_deadline = Instant::now() + cfg.response_timeout;
    let total_deadline = started + cfg.total_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];

    // The head.
    let head = loop {
        if let Some(head) = parse_head(&buf, head_request)? {
            break head;
        }
        if buf.len() > cfg.max_response_bytes {
            return Err(ExchangeError::Malformed("response head too large".into()));
        }
        let deadline = head_deadline.min(total_deadline);
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(ExchangeError::Timeout),
            Ok(Err(e)) => return Err(ExchangeError::Read(e)),
            Ok(Ok(0)) => {
                return Err(ExchangeError::Closed {
                    bytes_read: buf.len(),
                })
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };

    // The body.
    let mut truncated = false;
    loop {
        let body = &buf[head.len..];
        let complete = match head.framing {
            Framing::None => true,
            Framing::Length(n) => body.len() >= n,
            Framing::Chunked => chunked_end(body).is_some(),
            Framing::UntilClose => false,
        };
        if complete {
            break;
        }
        if buf.len() >= cfg.max_response_bytes {
            truncated = true;
            break;
        }
        let deadline = (Instant::now() + cfg.idle_timeout).min(total_deadline);
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) | Ok(Err(_)) => {
                truncated = true;
                break;
            }
            Ok(Ok(0)) => {
                truncated = head.framing != Framing::UntilClose;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // Drop anything past the framed end (a second response, say).
    let end = match head.framing {
        Framing::None => head.len,
        Framing::Length(n) => head.len + n,
        Framing::Chunked => chunked_end(&buf[head.len..]).map_or(buf.len(), |e| head.len + e),
        Framing::UntilClose => buf.len(),
    };
    buf.truncate(end.min(buf.len()));
    Ok(RawResponse {
        status: head.status,
        raw: buf,
        body_start: head.len,
        truncated,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Length of the head, blank line included.
    len: usize,
    framing: Framing,
}

/// Parses a response head once it is complete: `Ok(None)` while more bytes are needed.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, ExchangeError> {
    // Check the status line as soon as it is there, so garbage fails fast.
    if let Some(line_end) = buf.iter().position(|b| *b == b'\n') {
        parse_status_line(&buf[..line_end])?;
    } else if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
        return Err(malformed_line(buf));
    }
    let Some(len) = head_end(buf) else {
        return Ok(None);
    };
    let head = &buf[..len];
    let mut lines = head.split(|b| *b == b'\n').map(trim_cr);
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "content-length" => content_length = value.parse().ok(),
            "transfer-encoding" => chunked = value.split(',').any(|v| v.trim() == "chunked"),
            _ => {}
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        len,
        framing,
    }))
}

fn malformed_line(line: &[u8]) -> ExchangeError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
    ExchangeError::Malformed(format!("bad status line {shown:?}"))
}

/// `HTTP/x.y NNN reason` → NNN.
fn parse_status_line(line: &[u8]) -> Result<u16, ExchangeError> {
    let line = trim_cr(line);
    let rest = line
        .strip_prefix(b"HTTP/")
        .ok_or_else(|| malformed_line(line))?;
    let sp = rest
        .iter()
        .position(|b| *b == b' ')
        .ok_or_else(|| malformed_line(line))?;
    let code = &rest[sp + 1..];
    if code.len() < 3
        || !code[..3].iter().all(u8::is_ascii_digit)
        || code.get(3).is_some_and(|b| *b != b' ')
    {
        return Err(malformed_line(line));
    }
    let digits = std::str::from_utf8(&code[..3]).map_err(|_| malformed_line(line))?;
    digits.parse().map_err(|_| malformed_line(line))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The length of the head (through the blank line), if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(off) = buf[start..].iter().position(|b| *b == b'\n') {
        let nl = start + off;
        let line = trim_cr(&buf[start..nl]);
        if line.is_empty() && start > 0 {
            return Some(nl + 1);
        }
        start = nl + 1;
    }
    None
}

/// The length of a complete chunked body (last chunk and trailers included), if complete.
fn chunked_end(body: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let nl = pos + body.get(pos..)?.iter().position(|b| *b == b'\n')?;
        let line = trim_cr(&body[pos..nl]);
        let size_text = line.split(|b| *b == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text).ok()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        pos = nl + 1;
        if size == 0 {
            // Trailers, then a blank line.
            loop {
                let nl = pos + body.get(pos..)?.iter().position(|b| *b == b'\n')?;
                let line = trim_cr(&body[pos..nl]);
                pos = nl + 1;
                if line.is_empty() {
                    return Some(pos);
                }
            }
        }
        pos = pos.checked_add(size)?;
        if body.len() < pos {
            return None;
        }
        // The CRLF after the chunk data.
        let nl = pos + body.get(pos..)?.iter().position(|b| *b == b'\n')?;
        pos = nl + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-shot server: reads a little, writes `reply` in pieces, then closes or not.
    async fn serve_once(reply: Vec<u8>, close: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            for piece in reply.chunks(7) {
                let _ = s.write_all(piece).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if !close {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        addr
    }

    fn quick() -> ClientConfig {
        ClientConfig {
            response_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        }
    }

    #[tokio::test]
    async fn keep_alive_content_length_does_not_hang() {
        let addr = serve_once(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!".to_vec(),
            false,
        )
        .await;
        let t = Instant::now();
        let r = exchange(addr, b"GET / HTTP/1.1\r\n\r\n", false, &quick())
            .await
            .expect("response");
        assert!(t.elapsed() < Duration::from_millis(400));
        assert_eq!(r.status, 403);
        assert_eq!(r.body(), b"nope!");
        assert!(!r.truncated);
    }

    #[tokio::test]
    async fn chunked_and_until_close() {
        let addr = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
            false,
        )
        .await;
        let r = exchange(addr, b"GET / HTTP/1.1\r\n\r\n", false, &quick())
            .await
            .expect("response");
        assert_eq!(r.body(), b"3\r\nabc\r\n0\r\n\r\n");
        assert!(!r.truncated);
        let addr = serve_once(b"HTTP/1.0 404 Not Found\r\n\r\nbody".to_vec(), true).await;
        let r = exchange(addr, b"GET / HTTP/1.0\r\n\r\n", false, &quick())
            .await
            .expect("response");
        assert_eq!((r.status, r.body()), (404, &b"body"[..]));
    }

    #[tokio::test]
    async fn errors() {
        let addr = serve_once(Vec::new(), true).await;
        let e = exchange(addr, b"GET / HTTP/1.1\r\n\r\n", false, &quick()).await;
        assert!(
            matches!(e, Err(ExchangeError::Closed { bytes_read: 0 })),
            "{e:?}"
        );
        let addr = serve_once(b"garbage\r\n\r\n".to_vec(), true).await;
        let e = exchange(addr, b"GET / HTTP/1.1\r\n\r\n", false, &quick()).await;
        assert!(matches!(e, Err(ExchangeError::Malformed(_))), "{e:?}");
        let addr = serve_once(Vec::new(), false).await;
        let e = exchange(addr, b"GET / HTTP/1.1\r\n\r\n", false, &quick()).await;
        assert!(matches!(e, Err(ExchangeError::Timeout)), "{e:?}");
        // Nothing listens on a just-closed port.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead = l.local_addr().expect("addr");
        drop(l);
        let e = exchange(dead, b"GET / HTTP/1.1\r\n\r\n", false, &quick()).await;
        assert!(matches!(e, Err(ExchangeError::Connect(_))), "{e:?}");
    }

    #[test]
    fn heads() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r").ok(), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 505").ok(), Some(505));
        assert!(parse_status_line(b"HTTP/1.1 2000").is_err());
        let h = parse_head(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .expect("parses")
        .expect("complete");
        assert_eq!(h.framing, Framing::None);
        let h = parse_head(b"HTTP/1.1 200 OK\nContent-Length: 9\n\n", true)
            .expect("parses")
            .expect("complete");
        assert_eq!((h.framing, h.len), (Framing::None, 35));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nX: y\r\n", false)
            .expect("fine so far")
            .is_none());
        assert_eq!(
            chunked_end(b"1;ext=1\r\na\r\n0\r\nT: x\r\n\r\nEXTRA"),
            Some(23)
        );
        assert_eq!(chunked_end(b"5\r\nab"), None);
    }
}
