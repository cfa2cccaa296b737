//! A test backend to put behind the WAF, like go-ftw's "albedo" (`server/server.go`):
//!
//! - `POST /reflect` (and `/reflect/`) answers as its JSON body says:
//!   `{"status": 403, "headers": {"Name": "value"}, "body": "text",
//!   "encodedBody": "<base64>", "logMessage": "..."}`. A missing or 0 status is 200; a
//!   status outside 100..=599 (or 1xx, which cannot carry a final answer here) is 400;
//!   `body` wins over `encodedBody`; invalid JSON or base64 is 400; headers with invalid
//!   names or values are dropped; a body without a `Content-Type` gets one sniffed as
//!   Go's `http.DetectContentType` would (text, HTML, XML, ...), as albedo's does.
//! - Anything else (any method, any path, `GET /reflect` included) is 200 with a short
//!   text body.
//!
//! HTTP/1.1 only, lenient in what it accepts: invalid header lines are ignored, and the
//! request target is made acceptable to hyper before hyper parses it (bytes that the
//! `http` crate refuses in a URI, such as `<`, `"`, `{`, spaces or invalid UTF-8, are
//! percent-encoded; a target not starting with `/` gets one). For that, a connection
//! carries one request (the answer says `connection: close`). Request bodies are read
//! before answering.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The body of every answer that is not a reflection.
pub const DEFAULT_BODY: &str = "ok\n";

/// The largest request body the backend reads.
const MAX_BODY: usize = 64 << 20;

/// Binds 127.0.0.1 on a free port and serves the backend there until the task is
/// aborted. Returns the address and the serving task.
pub async fn start_backend() -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    start_backend_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// [`start_backend`] on a given address (for a WAF whose configuration names the
/// backend's port in advance).
pub async fn start_backend_at(
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .ignore_invalid_headers(true)
                    .allow_multiple_spaces_in_request_line_delimiters(true)
                    .keep_alive(false)
                    .max_headers(1000)
                    .max_buf_size(1 << 20);
                let svc = hyper::service::service_fn(|req| async move {
                    Ok::<_, Infallible>(answer(req).await)
                });
                let io = TokioIo::new(LenientRequestLine::new(stream));
                let _ = builder.serve_connection(io, svc).await;
            });
        }
    });
    Ok((addr, handle))
}

/// What `/reflect` is asked to answer (albedo's `reflectionSpec`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReflectionSpec {
    status: i64,
    headers: BTreeMap<String, String>,
    body: String,
    #[serde(rename = "encodedBody")]
    encoded_body: String,
    #[serde(rename = "logMessage")]
    log_message: String,
}

async fn answer(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reflect =
        req.method() == Method::POST && matches!(req.uri().path(), "/reflect" | "/reflect/");
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(StatusCode::BAD_REQUEST, "Failed to read request body"),
    };
    if !reflect {
        return plain(StatusCode::OK, DEFAULT_BODY);
    }
    let spec: ReflectionSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(_) => return plain(StatusCode::BAD_REQUEST, "Invalid JSON in request body"),
    };
    if !spec.log_message.is_empty() {
        tracing::debug!(message = %spec.log_message, "ftw backend reflection");
    }
    let status = match spec.status {
        0 => StatusCode::OK,
        s @ 200..=599 => match u16::try_from(s)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
        {
            Some(s) => s,
            None => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid status code: {s}"),
                )
            }
        },
        s => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("Invalid status code: {s}"),
            )
        }
    };
    let body: Vec<u8> = if !spec.body.is_empty() {
        spec.body.into_bytes()
    } else if !spec.encoded_body.is_empty() {
        use base64::Engine as _;
        match base64::engine::general_purpose::STANDARD.decode(spec.encoded_body.trim()) {
            Ok(b) => b,
            Err(_) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "invalid base64 encoding of response body",
                )
            }
        }
    } else {
        Vec::new()
    };
    let sniffed = (!body.is_empty()).then(|| sniff_content_type(&body));
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    for (name, value) in &spec.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    // Go's net/http (albedo) sniffs a Content-Type for a body that has none.
    if let Some(ct) = sniffed {
        if !resp.headers().contains_key(hyper::header::CONTENT_TYPE) {
            resp.headers_mut()
                .insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
    }
    resp
}

/// A short form of Go's `http.DetectContentType` (first 512 bytes): HTML and XML
/// signatures, PDF, otherwise text unless a control byte marks it binary.
fn sniff_content_type(body: &[u8]) -> &'static str {
    let head = &body[..body.len().min(512)];
    let trimmed = head.trim_ascii_start();
    const HTML: [&[u8]; 17] = [
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    for sig in HTML {
        if trimmed.len() > sig.len()
            && trimmed[..sig.len()].eq_ignore_ascii_case(sig)
            && matches!(trimmed[sig.len()], b' ' | b'>')
        {
            return "text/html; charset=utf-8";
        }
    }
    if trimmed.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    if head.starts_with(b"%PDF-") {
        return "application/pdf";
    }
    let binary = |b: &u8| matches!(*b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F);
    if head.iter().any(binary) {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Wraps a connection and rewrites its first request line's target so that hyper
/// accepts it; everything after that line passes through untouched.
struct LenientRequestLine<S> {
    inner: S,
    /// Still looking for the request line.
    scanning: bool,
    /// Bytes read but not yet handed out (the line being scanned, or rewritten output).
    held: Vec<u8>,
    /// Rewritten bytes ready to hand out, from `ready_pos`.
    ready: Vec<u8>,
    ready_pos: usize,
}

/// The longest request line looked at; a longer one passes through as it is.
const MAX_REQUEST_LINE: usize = 64 * 1024;

impl<S> LenientRequestLine<S> {
    fn new(inner: S) -> Self {
        LenientRequestLine {
            inner,
            scanning: true,
            held: Vec::new(),
            ready: Vec::new(),
            ready_pos: 0,
        }
    }

    /// Moves complete lines from `held` to `ready`, rewriting the first non-blank one;
    /// stops scanning after it (or at EOF, or when the line is too long).
    fn process(&mut self, eof: bool) {
        while let Some(nl) = self.held.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.held.drain(..=nl).collect();
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                self.ready.extend_from_slice(&line);
                continue;
            }
            self.ready.extend_from_slice(&fix_request_line(&line));
            self.scanning = false;
            break;
        }
        if !self.scanning || eof || self.held.len() > MAX_REQUEST_LINE {
            self.scanning = false;
            self.ready.append(&mut self.held);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LenientRequestLine<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_pos < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_pos);
                buf.put_slice(&this.ready[this.ready_pos..this.ready_pos + n]);
                this.ready_pos += n;
                if this.ready_pos == this.ready.len() {
                    this.ready.clear();
                    this.ready_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if !this.scanning {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    let eof = filled.is_empty();
                    this.held.extend_from_slice(filled);
                    this.process(eof);
                    if eof && this.ready.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LenientRequestLine<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `METHOD target VERSION` with the target made URI-safe; a line that does not end in an
/// `HTTP/` version is returned as it is.
fn fix_request_line(line: &[u8]) -> Vec<u8> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let ending = &line[body.len()..];
    let (Some(first_sp), Some(last_sp)) = (
        body.iter().position(|b| *b == b' '),
        body.iter().rposition(|b| *b == b' '),
    ) else {
        return line.to_vec();
    };
    let version = &body[last_sp + 1..];
    if first_sp >= last_sp || !version.starts_with(b"HTTP/") {
        return line.to_vec();
    }
    let method = &body[..first_sp];
    let target = body[first_sp..last_sp].trim_ascii();
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
    let mut fixed = Vec::with_capacity(target.len() + 8);
    let keep_absolute = target.windows(3).any(|w| w == b"://") && target.iter().all(|b| safe(*b));
    if target == b"*" || keep_absolute {
        fixed.extend_from_slice(target);
    } else {
        if !target.starts_with(b"/") {
            fixed.push(b'/');
        }
        for &b in target {
            if safe(b) {
                fixed.push(b);
            } else {
                fixed.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
    }
    let mut out = Vec::with_capacity(line.len() + fixed.len());
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(&fixed);
    out.push(b' ');
    out.extend_from_slice(version);
    out.extend_from_slice(ending);
    out
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(text.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftw::client::{exchange, ClientConfig};

    async fn send(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
        let r = exchange(addr, raw, false, &ClientConfig::default())
            .await
            .expect("a response");
        (r.status, String::from_utf8_lossy(&r.raw).into_owned())
    }

    fn post(path: &str, json: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn reflects_over_a_real_socket() {
        let (addr, task) = start_backend().await.expect("backend starts");
        let (status, raw) = send(
            addr,
            &post(
                "/reflect",
                r#"{"status": 503, "headers": {"X-Leak": "ORA-00933", "Bad Name": "x"}, "body": "SQL Error: ORA-00933", "logMessage": "t1"}"#,
            ),
        )
        .await;
        assert_eq!(status, 503);
        assert!(
            raw.to_ascii_lowercase().contains("x-leak: ora-00933\r\n"),
            "{raw}"
        );
        assert!(!raw.to_ascii_lowercase().contains("bad name"), "{raw}");
        assert!(raw.ends_with("\r\n\r\nSQL Error: ORA-00933"), "{raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("content-type: text/plain; charset=utf-8\r\n"),
            "{raw}"
        );

        let (status, raw) = send(
            addr,
            &post("/reflect/", r#"{"encodedBody": "PD9waHAgZXZhbCgpOw=="}"#),
        )
        .await;
        assert_eq!(status, 200);
        assert!(raw.ends_with("<?php eval();"), "{raw}");
        assert_eq!(send(addr, &post("/reflect", "{not json")).await.0, 400);
        assert_eq!(
            send(addr, &post("/reflect", r#"{"status": 42}"#)).await.0,
            400
        );
        assert_eq!(
            send(addr, &post("/reflect", r#"{"encodedBody": "%%%"}"#))
                .await
                .0,
            400
        );

        // Everything else: 200 with a short body, odd requests included.
        let (status, raw) = send(
            addr,
            b"GET /reflect HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200);
        assert!(raw.ends_with(DEFAULT_BODY), "{raw}");
        for odd in [
            &b"PROPFIND  /any/thing?x=<script>  HTTP/1.1\r\nHost: localhost\r\nBad Header Line\r\nX_Under: 1\r\n\r\n"[..],
            b"\r\nGET /a\"b{c}|d\\e^f`g h\xff#frag HTTP/1.1\r\nHost: localhost\r\nX: \xc3\xa9\x01\r\n\r\n",
            b"GET index.html HTTP/1.0\r\n\r\n",
            b"GET http://localhost/x?y=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ] {
            let (status, raw) = send(addr, odd).await;
            assert_eq!(status, 200, "{raw}");
        }
        let (status, _) = send(addr, &post("/post", "a=b&c=d")).await;
        assert_eq!(status, 200);
        task.abort();
    }

    #[test]
    fn content_sniffing() {
        assert_eq!(
            sniff_content_type(b"  <html><body>"),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            sniff_content_type(b"<?xml version=\"1.0\"?>"),
            "text/xml; charset=utf-8"
        );
        assert_eq!(
            sniff_content_type(b"<?php eval();"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(sniff_content_type(b"\x00\x01"), "application/octet-stream");
    }

    #[test]
    fn request_line_fixing() {
        let fix = |l: &[u8]| String::from_utf8_lossy(&fix_request_line(l)).into_owned();
        assert_eq!(
            fix(b"GET /a<b> c HTTP/1.1\r\n"),
            "GET /a%3Cb%3E%20c HTTP/1.1\r\n"
        );
        assert_eq!(
            fix(b"GET /ok?a=%41&b=1 HTTP/1.1\n"),
            "GET /ok?a=%41&b=1 HTTP/1.1\n"
        );
        assert_eq!(fix(b"GET x HTTP/1.1\r\n"), "GET /x HTTP/1.1\r\n");
        assert_eq!(fix(b"garbage\r\n"), "garbage\r\n");
        assert_eq!(fix(b"GET / JUNK/1.0\r\n"), "GET / JUNK/1.0\r\n");
    }
}
