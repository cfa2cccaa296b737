//! The HTTP/1.1 fast path over real sockets, against backends that answer in every
//! framing HTTP/1.1 allows: pipelined requests, chunked bodies both ways, HEAD, 204,
//! close-delimited answers, stale pooled connections, hop-by-hop headers, and the
//! hand-over to hyper in the middle of a connection.

mod support;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn app(backend: SocketAddr) -> String {
    format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: app, namespace: default}}
spec:
  rules:
  - host: app.example
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}]}}
",
        service("default", "app", backend, None)
    )
}

/// Reads one HTTP/1.1 request head (and a Content-Length body) from `s`; None at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A backend that answers by path: `/chunked`, `/close` (close-delimited), `/nocontent`,
/// `/hop` (hop-by-hop headers), `/echo-head` (the request head it got as the body),
/// else a small fixed body.
/// A proxy serving `app.example` from a new scripted backend.
async fn app_proxy() -> Proxy {
    let backend = scripted_backend().await;
    let files = [("classes.yaml", CLASSES), ("app.yaml", &app(backend))];
    start_proxy(&files, &[]).await.0
}

async fn scripted_backend() -> SocketAddr {
    listen(|mut s| async move {
        let mut buf = Vec::new();
        while let Some((head, body)) = read_request(&mut s, &mut buf).await {
            let target = head.split(' ').nth(1).unwrap_or("/");
            let path = target.split('?').next().unwrap_or("/").to_string();
            let resp: Vec<u8> = match path.as_str() {
                "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
                "/close" => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
                    return;
                }
                "/nocontent" => b"HTTP/1.1 204 No Content\r\nx-empty: yes\r\n\r\n".to_vec(),
                "/hop" => b"HTTP/1.1 200 OK\r\nConnection: x-private\r\nx-private: secret\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                "/echo-head" => {
                    let mut text = head.clone();
                    text.push_str(&String::from_utf8_lossy(&body));
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()).into_bytes()
                }
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfixed".to_vec(),
            };
            if head.starts_with("HEAD ") {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").await;
                continue;
            }
            if s.write_all(&resp).await.is_err() {
                return;
            }
        }
    })
    .await
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn every_response_framing_passes_through() {
    let p = app_proxy().await;
    // Pipelined on one connection: chunked, 204, HEAD, hop-by-hop, then a close-delimited
    // answer, after which the client connection is closed too.
    let out = exchange(
        p.http,
        b"GET /chunked HTTP/1.1\r\nHost: app.example\r\n\r\n\
GET /nocontent HTTP/1.1\r\nHost: app.example\r\n\r\n\
HEAD /fixed HTTP/1.1\r\nHost: app.example\r\n\r\n\
GET /hop HTTP/1.1\r\nHost: app.example\r\n\r\n\
GET /close HTTP/1.1\r\nHost: app.example\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 5, "{out}");
    assert!(
        answers[0].contains("transfer-encoding: chunked\r\n")
            || answers[0].contains("Transfer-Encoding: chunked\r\n"),
        "{}",
        answers[0]
    );
    assert!(
        answers[0].ends_with("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{}",
        answers[0]
    );
    assert!(
        answers[1].starts_with("204") && answers[1].ends_with("\r\n\r\n"),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].contains("Content-Length: 5") && answers[2].ends_with("\r\n\r\n"),
        "HEAD has no body: {}",
        answers[2]
    );
    assert!(
        !answers[3].to_ascii_lowercase().contains("x-private")
            && !answers[3].to_ascii_lowercase().contains("keep-alive"),
        "{}",
        answers[3]
    );
    assert!(answers[3].ends_with("\r\n\r\nok"), "{}", answers[3]);
    assert!(
        answers[4].contains("connection: close") && answers[4].ends_with("until the end"),
        "{}",
        answers[4]
    );
    assert!(
        out.matches("x-request-id: ").count() == 5,
        "every answer has a request id"
    );
}

#[tokio::test]
async fn request_bodies_and_headers_reach_the_backend() {
    let p = app_proxy().await;
    let out = exchange(
        p.http,
        b"POST /echo-head?x=1 HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nConnection: keep-alive, x-drop\r\nx-drop: 1\r\nx-keep: 2\r\n\r\nhello\
POST /echo-head HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = out.split("HTTP/1.1 200 OK").skip(1).collect();
    assert_eq!(answers.len(), 2, "{out}");
    let first = answers[0].to_ascii_lowercase();
    assert!(first.contains("post /echo-head?x=1 http/1.1"), "{first}");
    assert!(
        first.contains("x-keep: 2") && !first.contains("x-drop"),
        "{first}"
    );
    assert!(
        first.contains("x-forwarded-for: 127.0.0.1") && first.contains("x-request-id: "),
        "{first}"
    );
    assert!(first.ends_with("hello"), "{first}");
    // The chunked body went as chunked (the scripted backend reads no chunked body,
    // so its echo shows the framing header only).
    assert!(
        answers[1]
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        answers[1]
    );
}

#[tokio::test]
async fn a_backend_closing_idle_connections_is_retried_on_a_new_one() {
    // Answers one request per connection, then closes it without saying so.
    let backend = listen(|mut s| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let (p, _) = start_proxy(
        &[("classes.yaml", CLASSES), ("app.yaml", &app(backend))],
        &[],
    )
    .await;
    let cl = client();
    for _ in 0..10 {
        let r = get(&cl, p.http, "app.example", "/").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_connection_moves_to_hyper_when_the_fast_path_cannot_serve_it() {
    let p = app_proxy().await;
    // A fast request, then HTTP/1.0 (hyper's), on one connection.
    let out = exchange(
        p.http,
        b"GET /fixed HTTP/1.1\r\nHost: app.example\r\n\r\nGET /fixed HTTP/1.0\r\nHost: app.example\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("fixed").count(), 2, "{out}");
    assert!(
        out.contains("HTTP/1.0 200") || out.matches("HTTP/1.1 200").count() == 2,
        "{out}"
    );
    // Expect: 100-continue goes to hyper, which says 100 Continue.
    let mut s = TcpStream::connect(p.http).await.expect("connect");
    s.write_all(b"POST /echo-head HTTP/1.1\r\nHost: app.example\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 64];
    let n = s.read(&mut first).await.expect("read");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(b"abc").await.expect("body");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(String::from_utf8_lossy(&rest).contains("200 OK"));
    // Malformed requests get hyper's 400.
    let bad = exchange(
        p.http,
        b"GET / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    // A 404 on the fast path keeps the connection.
    let out = exchange(
        p.http,
        b"GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\nGET /fixed HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 404") && out.contains("fixed"),
        "{out}"
    );
}

#[tokio::test]
async fn http2_clients_get_every_framing_decoded_from_raw_upstream_connections() {
    let p = app_proxy().await;
    // HTTP/2 is hyper's; its HTTP/1.1 backend is reached on the raw pool, which must
    // decode chunked and close-delimited bodies into frames.
    for _ in 0..3 {
        let r = h2c_get(p.http, "app.example", "/chunked").await;
        assert_eq!((r.status, r.body.as_str()), (200, "hello world"));
        let r = h2c_get(p.http, "app.example", "/fixed").await;
        assert_eq!((r.status, r.body.as_str()), (200, "fixed"));
        let r = h2c_get(p.http, "app.example", "/nocontent").await;
        assert_eq!((r.status, r.body.as_str()), (204, ""));
        let r = h2c_get(p.http, "app.example", "/close").await;
        assert_eq!((r.status, r.body.as_str()), (200, "until the end"));
        let r = h2c_get(p.http, "app.example", "/hop").await;
        assert_eq!(r.header("x-private"), None, "{:?}", r.headers);
    }
}

#[tokio::test]
async fn conflicting_framing_cannot_smuggle_a_request() {
    let p = app_proxy().await;
    // Chunked and a Content-Length together: refused, or sent on with one consistent
    // framing; never the client's length next to another body.
    let out = exchange(
        p.http,
        b"POST /echo-head HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.example\r\n\r\n",
    )
    .await;
    let lower = out.to_ascii_lowercase();
    assert!(
        out.starts_with("HTTP/1.1 400") || !lower.contains("content-length: 40"),
        "{out}"
    );
    assert!(!out.contains("/smuggled"), "{out}");
}
