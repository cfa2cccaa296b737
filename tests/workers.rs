//! The data plane on worker threads (as `gatehouse run --workers 2` serves): keep-alive
//! HTTP/1.1 from many connections at once, HTTP/2, and upstream connections reused per
//! worker, over real sockets.

mod support;
use std::sync::atomic::Ordering;
use support::backend::Backend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn worker_threads_serve_http1_and_http2_and_reuse_upstream_connections() {
    let workers = gatehouse_proxy::workers::Workers::start(2).expect("workers");
    assert!(gatehouse::app::WORKERS
        .set(std::sync::Arc::new(workers))
        .is_ok());
    let b = Backend::start("web").await;
    let all = [
        service("default", "web", b.addr, None),
        ingress("web.example", "web"),
    ]
    .concat();
    let (p, _) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[]).await;

    // 40 keep-alive connections, 5 requests each, all at once.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let addr = p.http;
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut ok = 0;
            for _ in 0..5 {
                s.write_all(b"GET /w HTTP/1.1\r\nHost: web.example\r\n\r\n")
                    .await
                    .expect("write");
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read");
                if buf[..n].starts_with(b"HTTP/1.1 200") {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("task");
    }
    assert_eq!(ok, 200);
    // Upstream connections are pooled per worker: at most one per client connection,
    // and reused across each connection's five requests.
    let opened = b.state.connections_total.load(Ordering::SeqCst);
    assert!((1..=40).contains(&opened), "{opened} upstream connections");

    let r = h2c_get(p.http, "web.example", "/h2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_2);
    p.running.shutdown().await;
}
