//! Protocol abuse, over real sockets: a table of request-smuggling and request-line
//! cases, each sent byte for byte, must be refused without the backend seeing a
//! request (a recording backend counts what reaches it); dot segments are resolved
//! before forwarding; slow-header (slowloris) and slow-body (R.U.D.Y.) clients are cut
//! off while a normal client keeps being served, and the slow bodies are recorded; an
//! HTTP/2 rapid-reset burst (CVE-2023-44487) ends its connection with at most 1% of its
//! streams reaching the backend.

mod support;

use gatehouse_proxy::ProxyConfig;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend that answers every request head it reads with 200 and keeps the request
/// lines it saw.
async fn recorder() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = listen(move |mut s| {
        let log = log.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16384];
            let mut answered = 0;
            loop {
                let n = match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                // Every request line in the stream, however its body was framed.
                let text = String::from_utf8_lossy(&buf).into_owned();
                let lines: Vec<String> = text
                    .split("\r\n")
                    .filter(|l| l.ends_with(" HTTP/1.1") && l.contains(' '))
                    .map(str::to_string)
                    .collect();
                if lines.len() > answered {
                    log.lock()
                        .expect("log")
                        .extend(lines[answered..].iter().cloned());
                    for _ in answered..lines.len() {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                    answered = lines.len();
                }
            }
        }
    })
    .await;
    (addr, seen)
}

async fn start(
    cfg: ProxyConfig,
) -> (
    Proxy,
    Arc<Mutex<Vec<String>>>,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    let (backend, seen) = recorder().await;
    let (cfg, events, logs) = with_security_log(cfg);
    let app = [
        service("default", "app", backend, None),
        ingress("a", "app"),
    ]
    .concat();
    let (proxy, _) =
        start_proxy_with(&[("classes.yaml", CLASSES), ("app.yaml", &app)], &[], cfg).await;
    (proxy, seen, events, logs)
}

/// Sends `bytes` on a new connection; the status of the first answer (None: closed
/// without one).
async fn status_of(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let out = raw(addr, bytes).await;
    out.strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
}

#[tokio::test]
async fn smuggling_and_request_line_abuse_are_refused() {
    let (proxy, seen, _, _logs) = start(ProxyConfig::default()).await;
    let addr = proxy.http;
    let many_headers: Vec<u8> = (0..500)
        .flat_map(|i| format!("X-{i}: a\r\n").into_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("CL.TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX".to_vec(), &[400]),
        ("TE.CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n".to_vec(), &[400]),
        ("TE with trailing space, and CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\nContent-Length: 4\r\n\r\n0\r\n\r\n".to_vec(), &[400]),
        ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec(), &[400, 501]),
        ("TE chunked, identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".to_vec(), &[400, 501]),
        ("two TE headers", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n".to_vec(), &[400, 501]),
        ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), &[400]),
        ("two different Content-Lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde".to_vec(), &[400]),
        ("Content-Length list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc".to_vec(), &[400]),
        ("Content-Length with sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc".to_vec(), &[400]),
        ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n".to_vec(), &[400]),
        ("space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc".to_vec(), &[400]),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), &[400]),
        ("bare CR in a header", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n".to_vec(), &[400]),
        ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n".to_vec(), &[400]),
        ("header name with a space", b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n".to_vec(), &[400]),
        ("empty header name", b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n".to_vec(), &[400]),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), &[400]),
        ("Host with user info", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n".to_vec(), &[400]),
        ("Host with a space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), &[400]),
        ("GET *", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("HTTP/2.0 request line over HTTP/1", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(), &[400, 505]),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), &[400]),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec(), &[400, 505]),
        ("lower-case protocol", b"GET / http/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("fragment in the target", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("space in the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("tabs as separators", b"GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("backslash in the path", b"GET /x\\..\\secret HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("TRACE", b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[405]),
        ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec(), &[400, 405]),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n".to_vec(), &[400]),
        ("chunk size in 0x form", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n".to_vec(), &[400]),
        ("control byte in a chunk extension", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n".to_vec(), &[400]),
        ("chunk data without its CRLF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n".to_vec(), &[400]),
        ("header of 100 kB", [&b"GET / HTTP/1.1\r\nHost: a\r\nX-A: "[..], &vec![b'a'; 100_000], b"\r\n\r\n"].concat(), &[431]),
        ("500 headers", [&b"GET / HTTP/1.1\r\nHost: a\r\n"[..], &many_headers, b"\r\n"].concat(), &[431]),
        ("URI of 100 kB", [&b"GET /"[..], &vec![b'a'; 100_000], b" HTTP/1.1\r\nHost: a\r\n\r\n"].concat(), &[414, 431]),
    ];
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        seen.lock().expect("log").clear();
        let got = status_of(addr, bytes).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reached = seen.lock().expect("log").clone();
        // A refusal may also be a close without an answer, for a body broken mid-way.
        let refused = got.is_none_or(|s| want.contains(&s));
        if !refused || !reached.is_empty() {
            failures.push(format!(
                "{name}: answered {got:?} (want {want:?}), backend saw {reached:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // What must pass, and how it reaches the backend.
    for (path, upstream) in [
        ("/x/../secret", "GET /secret HTTP/1.1"),
        ("/x/%2e%2e/secret", "GET /secret HTTP/1.1"),
        ("/a/./b", "GET /a/b HTTP/1.1"),
    ] {
        seen.lock().expect("log").clear();
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(status_of(addr, req.as_bytes()).await, Some(200), "{path}");
        assert_eq!(
            seen.lock().expect("log").as_slice(),
            [upstream.to_string()],
            "{path}"
        );
    }
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off_while_others_are_served() {
    let cfg = ProxyConfig {
        header_read_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        body_min_rate: 1024,
        ..ProxyConfig::default()
    };
    let (proxy, _seen, events, _logs) = start(cfg).await;
    let addr = proxy.http;

    // Slowloris: a header line every 300 ms, never the end of the head.
    let slowloris = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let t = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(format!("X-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            let mut b = [0u8; 512];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
            {
                break;
            }
        }
        t.elapsed()
    });
    // R.U.D.Y.: a body of 10,000 bytes, one byte every 300 ms; fast path and hyper
    // path (Expect: 100-continue goes through hyper).
    let rudy = |expect: bool| {
        tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let t = Instant::now();
            let head = format!(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000\r\n{}\r\n",
                if expect {
                    "Expect: 100-continue\r\n"
                } else {
                    ""
                }
            );
            s.write_all(head.as_bytes()).await.expect("write");
            let mut got = Vec::new();
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = s.write_all(b"a").await;
                let mut b = [0u8; 4096];
                match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => got.extend_from_slice(&b[..n]),
                    Err(_) => {}
                }
            }
            (t.elapsed(), String::from_utf8_lossy(&got).into_owned())
        })
    };
    let (fast, hyper) = (rudy(false), rudy(true));

    // Meanwhile a normal client is served, again and again.
    let c = client();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        let r = send(
            &c,
            "POST",
            addr,
            "a",
            "/",
            &[("content-type", "text/plain")],
        )
        .await;
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let held = slowloris.await.expect("slowloris");
    assert!(held < Duration::from_secs(5), "slowloris held {held:?}");
    for (name, task) in [("fast path", fast), ("hyper path", hyper)] {
        let (held, answer) = task.await.expect("rudy");
        assert!(
            held < Duration::from_secs(8),
            "{name}: slow body held {held:?}"
        );
        if name == "fast path" {
            assert!(answer.contains("408"), "{name}: {answer:?}");
        }
    }
    // Both slow bodies were cut by their pace, each a security event.
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    assert_eq!(text.matches("\"event\":\"slow_body\"").count(), 2, "{text}");
}

#[tokio::test]
async fn an_http2_rapid_reset_flood_is_stopped_before_it_reaches_the_backend() {
    let (proxy, seen, _, _logs) = start(ProxyConfig::default()).await;
    let addr = proxy.http;
    // h2c with prior knowledge, frames written by hand as the attack writes them: a
    // request (HEADERS with END_STREAM) and its RST_STREAM (CANCEL), 20,000 times, in
    // batches of 100 streams per write.
    let frame = |kind: u8, flags: u8, id: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    // :method GET, :scheme http, :path /, :authority a (literal, not indexed).
    let block = [0x82, 0x86, 0x84, 0x01, 0x01, b'a'];
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&frame(0x4, 0, 0, &[]));
    s.write_all(&hello).await.expect("preface");
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut sink = vec![0u8; 65536];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    const BURST: u32 = 20_000;
    let mut sent = 0;
    while sent < BURST {
        let mut batch = Vec::new();
        for i in sent..sent + 100 {
            let id = 2 * i + 1;
            batch.extend_from_slice(&frame(0x1, 0x5, id, &block));
            batch.extend_from_slice(&frame(0x3, 0, id, &8u32.to_be_bytes()));
        }
        if wr.write_all(&batch).await.is_err() {
            break;
        }
        sent += 100;
    }
    // The proxy ends the connection (GOAWAY, then close) long before the burst is over,
    // or at the latest once it has seen it.
    let ended = tokio::time::timeout(Duration::from_secs(5), reader).await;
    assert!(ended.is_ok(), "the connection survived {sent} resets");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached = seen.lock().expect("log").len();
    eprintln!("rapid reset: {sent} of {BURST} streams written, {reached} reached the backend");
    assert!(
        reached as u32 * 100 <= BURST,
        "{reached} of {BURST} reset streams reached the backend ({sent} written)"
    );
    // Everyone else is still served.
    assert_eq!(get(&client(), addr, "a", "/").await.status, 200);
}
