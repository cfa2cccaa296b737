//! The HTTP/2 server (h2c prior knowledge on the plain listener) over real sockets:
//! flow control both ways with bodies larger than every window, many concurrent
//! streams on one connection, and, with hand-written frames, the limits that protect
//! it: malformed requests reset without harming the connection, streams past
//! SETTINGS_MAX_CONCURRENT_STREAMS refused, and rapid-reset and CONTINUATION floods
//! ended with GOAWAY ENHANCE_YOUR_CALM.

mod support;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use support::backend::Backend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIG: usize = 6 << 20;

/// An HTTP/1.1 backend whose every answer is a `BIG`-byte body.
async fn big_backend() -> SocketAddr {
    listen(|s| async move {
        let svc = hyper::service::service_fn(|_req| async {
            let body = Full::new(Bytes::from(vec![b'x'; BIG]));
            Ok::<_, std::convert::Infallible>(http::Response::new(body))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .await;
    })
    .await
}

async fn h2c(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn bodies_larger_than_every_window_flow_both_ways_and_streams_run_concurrently() {
    let (web, big) = (echo("web").await, big_backend().await);
    let all = [
        service("default", "web", web, None),
        service("default", "big", big, None),
        ingress("web.example", "web"),
        ingress("big.example", "big"),
    ]
    .concat();
    let (p, _) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[]).await;
    let mut sender = h2c(p.http).await;

    // Upload: 6 MiB is more than the stream (1 MiB) and connection (4 MiB) windows.
    let req = http::Request::post("http://web.example/up")
        .body(Full::new(Bytes::from(vec![7u8; BIG])))
        .expect("request");
    let r = read(sender.send_request(req).await.expect("response")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["bodyBytes"], BIG as u64);

    // Download: 6 MiB back, more than the client's windows.
    let req = http::Request::get("http://big.example/down")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), BIG);
    assert!(body.iter().all(|b| *b == b'x'));

    // 300 requests at once on the one connection (more than the 256 streams allowed
    // at a time: the client queues the rest).
    let mut all = Vec::new();
    for i in 0..300 {
        let mut s = sender.clone();
        all.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://web.example/c/{i}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let r = read(s.send_request(req).await.expect("response")).await;
            (r.status, r.json()["path"].as_str().map(str::to_string))
        }));
    }
    for (i, t) in all.into_iter().enumerate() {
        let (status, path) = t.await.expect("task");
        assert_eq!(status, 200);
        assert_eq!(path.as_deref(), Some(format!("/c/{i}").as_str()));
    }
    p.running.shutdown().await;
}

// ---------------------------------------------------------------- raw frames

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block of literal fields (no indexing, no Huffman; values under 127 bytes).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0x00);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn request(path: &str, method: &str) -> Vec<u8> {
    block(&[
        (":method", method),
        (":scheme", "http"),
        (":authority", "web.example"),
        (":path", path),
    ])
}

struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        tcp.write_all(&hello).await.expect("preface");
        Raw {
            tcp,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed: what it said is read afterwards.
        let _ = self.tcp.write_all(bytes).await;
    }

    /// The next frame, or None at the end of the connection.
    async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let stream = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
                    return Some((f[3], f[4], stream, f[9..].to_vec()));
                }
            }
            let mut chunk = [0u8; 16384];
            let read = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk));
            match read.await.expect("server answers in time") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until a frame of `kind` on `stream` (None: the connection ended first).
    async fn until(&mut self, kind: u8, stream: u32) -> Option<Vec<u8>> {
        while let Some((k, _, s, payload)) = self.next().await {
            if k == kind && s == stream {
                return Some(payload);
            }
        }
        None
    }

    /// The error code of the GOAWAY the server sends before closing.
    async fn goaway(&mut self) -> u32 {
        let p = self.until(GOAWAY, 0).await.expect("a GOAWAY");
        u32::from_be_bytes([p[4], p[5], p[6], p[7]])
    }
}

async fn raw_proxy(slow: Option<Duration>) -> (Proxy, Backend) {
    let b = Backend::start("web").await;
    if let Some(d) = slow {
        b.set_delay(d);
    }
    let all = [
        service("default", "web", b.addr, None),
        ingress("web.example", "web"),
    ]
    .concat();
    let (p, _) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[]).await;
    (p, b)
}

#[tokio::test]
async fn malformed_requests_are_reset_and_the_connection_goes_on() {
    let (p, _b) = raw_proxy(None).await;
    let mut c = Raw::connect(p.http).await;
    let mut bad = request("/", "GET");
    bad.extend(block(&[("X-Upper", "1")]));
    c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &bad))
        .await;
    let rst = c.until(RST_STREAM, 1).await.expect("RST_STREAM");
    assert_eq!(rst, 1u32.to_be_bytes(), "PROTOCOL_ERROR");
    let no_path = block(&[(":method", "GET"), (":scheme", "http")]);
    c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &no_path))
        .await;
    assert_eq!(
        c.until(RST_STREAM, 3).await.expect("RST_STREAM"),
        1u32.to_be_bytes()
    );
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        5,
        &request("/ok", "GET"),
    ))
    .await;
    let head = c.until(HEADERS, 5).await.expect("a response");
    assert_eq!(head[0], 0x80 | 8, ":status 200 (static index 8)");
    p.running.shutdown().await;
}

#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let (p, _b) = raw_proxy(None).await;
    let mut c = Raw::connect(p.http).await;
    // 257 requests whose bodies never come: the 257th is one too many.
    let mut burst = Vec::new();
    for i in 0..257u32 {
        burst.extend(frame(
            HEADERS,
            END_HEADERS,
            2 * i + 1,
            &request("/", "POST"),
        ));
    }
    c.send(&burst).await;
    let rst = c.until(RST_STREAM, 2 * 256 + 1).await.expect("RST_STREAM");
    assert_eq!(rst, 7u32.to_be_bytes(), "REFUSED_STREAM");
    p.running.shutdown().await;
}

#[tokio::test]
async fn a_rapid_reset_flood_ends_with_goaway() {
    let (p, b) = raw_proxy(Some(Duration::from_secs(2))).await;
    let mut c = Raw::connect(p.http).await;
    let mut flood = Vec::new();
    for i in 0..400u32 {
        let id = 2 * i + 1;
        flood.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request("/", "GET"),
        ));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    c.send(&flood).await;
    assert_eq!(c.goaway().await, 0xb, "ENHANCE_YOUR_CALM");
    assert!(c.next().await.is_none(), "the connection is closed");
    assert!(b.hits() < 400, "cancelled requests were not all sent on");
    p.running.shutdown().await;
}

#[tokio::test]
async fn a_continuation_flood_ends_with_goaway() {
    let (p, _b) = raw_proxy(None).await;
    let mut c = Raw::connect(p.http).await;
    c.send(&frame(HEADERS, 0, 1, &request("/", "GET"))).await;
    let junk = block(&[("x-junk", &"j".repeat(100))]);
    for _ in 0..2000 {
        c.send(&frame(CONTINUATION, 0, 1, &junk)).await;
    }
    assert_eq!(c.goaway().await, 0xb, "ENHANCE_YOUR_CALM");
    p.running.shutdown().await;
}

#[tokio::test]
async fn data_on_closed_streams_gives_its_window_back() {
    let (p, _b) = raw_proxy(None).await;
    let mut c = Raw::connect(p.http).await;
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request("/a", "GET"),
    ))
    .await;
    c.until(HEADERS, 1).await.expect("a response");
    // 5 MiB on the finished stream: more than the 4 MiB connection window.
    let chunk = frame(0x0, 0, 1, &[b'z'; 16_384]);
    for _ in 0..320 {
        c.send(&chunk).await;
    }
    let mut post = request("/b", "POST");
    post.extend(block(&[("content-length", "2")]));
    c.send(&frame(HEADERS, END_HEADERS, 3, &post)).await;
    c.send(&frame(0x0, END_STREAM, 3, b"ok")).await;
    let head = c
        .until(HEADERS, 3)
        .await
        .expect("the connection still takes data");
    assert_eq!(head[0], 0x80 | 8, ":status 200");
    p.running.shutdown().await;
}

#[tokio::test]
async fn trailers_after_an_early_answer_do_not_end_the_connection() {
    let (p, _b) = raw_proxy(None).await;
    let mut c = Raw::connect(p.http).await;
    // A request whose body is still coming is answered and reset early (a 404 here)...
    let mut lost = block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "nowhere.example"),
        (":path", "/"),
    ]);
    lost.extend(block(&[("content-length", "4")]));
    c.send(&frame(HEADERS, END_HEADERS, 1, &lost)).await;
    c.until(RST_STREAM, 1)
        .await
        .expect("reset after the answer");
    // ...and the client's data and trailers, already on their way, are ignored.
    c.send(&frame(0x0, 0, 1, b"body")).await;
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&[("x-trailer", "1")]),
    ))
    .await;
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &request("/ok", "GET"),
    ))
    .await;
    let head = c.until(HEADERS, 3).await.expect("the connection goes on");
    assert_eq!(head[0], 0x80 | 8, ":status 200");
    p.running.shutdown().await;
}
