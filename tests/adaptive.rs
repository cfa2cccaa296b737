//! Adaptive DDoS mitigation and surge protection, over real sockets (clients bound to
//! several loopback source addresses). A source flooding past its policy's threshold is
//! blocked within seconds, as a `SourceBlock` listed by the admin API and recorded as a
//! security event, while a normal client keeps being served; its connections are closed
//! at accept, the block ends on time, a repeat offence gets a longer block, and lifting
//! the block through the admin API serves the source again at once. A `SourceBlock`
//! written by hand blocks too, and a bad one is refused by field. In DryRun, a flood is
//! only reported. Under a surge (backends slow, too many requests in flight), the route
//! of the lowest priority gets 503 with `Retry-After` while the higher priority one is
//! still served, and serving resumes when the surge ends.

mod support;

use gatehouse_proxy::ProxyConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// A SecurityPolicy `name` on Ingress `target` with `body` (indented) as the rest of
/// its spec.
fn policy(name: &str, target: &str, body: &str) -> String {
    format!(
        "---
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: networking.k8s.io, kind: Ingress, name: {target}}}]
{body}"
    )
}

const ADAPTIVE: &str = "  adaptiveBlocking:
    requestsPerSecond: 20
    window: 1s
    blockDuration: 3s
    maxBlockDuration: 12s
";

struct Guarded {
    proxy: Proxy,
    events: std::path::PathBuf,
    _logs: tempfile::TempDir,
}

async fn start(files: &[(&str, &str)]) -> Guarded {
    let backend = echo("app").await;
    let app = [
        service("default", "app", backend, None),
        ingress("app.test", "app"),
    ]
    .concat();
    start_app(&app, files).await
}

/// Serves `app` (Services and Ingresses) and `files`, with security events in a log.
async fn start_app(app: &str, files: &[(&str, &str)]) -> Guarded {
    let (cfg, events, logs) = with_security_log(ProxyConfig::default());
    let mut all = vec![("classes.yaml", CLASSES), ("app.yaml", app)];
    all.extend_from_slice(files);
    let (proxy, _) = start_proxy_with(&all, &[], cfg).await;
    Guarded {
        proxy,
        events,
        _logs: logs,
    }
}

/// One request from `from` on a new connection: its status, or None if no answer came
/// within a second (a blocked client's connection is held unanswered, then reset).
async fn status_from(from: &str, addr: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(from.parse().expect("ip"), 0))
        .expect("bind source");
    let mut s = sock.connect(addr).await.expect("connect");
    let req = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    s.write_all(req).await.ok()?;
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut head)).await {
        Ok(Ok(_)) => std::str::from_utf8(&head[9..12]).ok()?.parse().ok(),
        _ => None,
    }
}

/// Sends from `from` as fast as it can until a request is refused (403 or a closed
/// connection); how long that took.
async fn flood_until_refused(from: &str, addr: SocketAddr, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        match status_from(from, addr).await {
            Some(200) => {}
            Some(403) | None => return start.elapsed(),
            Some(s) => panic!("unexpected status {s}"),
        }
    }
    panic!("{from} was not blocked within {limit:?}");
}

/// Polls until a request from `from` is served; how long that took.
async fn wait_served(from: &str, addr: SocketAddr, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if status_from(from, addr).await == Some(200) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{from} was not served again within {limit:?}");
}

/// The value of an unlabelled metric in Prometheus text (panics if it is missing).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A normal client: a request every 100 ms from `from` until stopped; (served, all).
fn normal_client(
    from: &'static str,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let (mut ok, mut all) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            all += 1;
            if status_from(from, addr).await == Some(200) {
                ok += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (ok, all)
    })
}

#[tokio::test]
async fn a_flooding_source_is_blocked_released_and_blocked_longer_again() {
    let g = start(&[("policy.yaml", &policy("edge", "app", ADAPTIVE))]).await;
    let addr = g.proxy.http;
    let stop = Arc::new(AtomicBool::new(false));
    let normal = normal_client("127.0.0.1", addr, stop.clone());

    let took = flood_until_refused("127.0.0.2", addr, Duration::from_secs(6)).await;
    assert!(took < Duration::from_secs(4), "blocked after {took:?}");
    // Refused at accept from now on: held without an answer.
    assert_eq!(status_from("127.0.0.2", addr).await, None);
    let c = client();
    let blocks = get(&c, g.proxy.admin, "admin", "/blocks").await.json();
    let list = blocks["blocks"].as_array().expect("list").clone();
    assert_eq!(list.len(), 1, "{blocks}");
    assert_eq!(list[0]["source"], "127.0.0.2/32");
    assert_eq!(list[0]["policy"], "default/edge");
    assert_eq!(list[0]["adaptive"], true);
    assert_eq!(list[0]["name"], "default/src-127-0-0-2-32");
    let event = wait_log(&g.events, "\"source_blocked\"").await;
    assert!(event.contains("\"client\":\"127.0.0.2/32\""), "{event}");
    assert!(event.contains("\"offence\":1"), "{event}");
    assert!(event.contains("\"duration_seconds\":3"), "{event}");
    wait_log(&g.events, "\"source_block_refused\"").await;

    // The block ends after its term (3 s, plus up to a second's tick).
    let back = wait_served("127.0.0.2", addr, Duration::from_secs(8)).await;
    assert!(
        back > Duration::from_millis(500),
        "served again after {back:?}"
    );

    // At it again: blocked for twice as long.
    flood_until_refused("127.0.0.2", addr, Duration::from_secs(6)).await;
    let event = wait_log(&g.events, "\"offence\":2").await;
    assert!(event.contains("\"duration_seconds\":6"), "{event}");

    // Lifted by hand: served again at once.
    let lifted = send(
        &c,
        "DELETE",
        g.proxy.admin,
        "admin",
        "/blocks/default/src-127-0-0-2-32",
        &[],
    )
    .await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    let back = wait_served("127.0.0.2", addr, Duration::from_secs(3)).await;
    assert!(back < Duration::from_secs(2), "served again after {back:?}");
    wait_log(&g.events, "\"source_block_lifted\"").await;

    stop.store(true, Ordering::Relaxed);
    let (ok, all) = normal.await.expect("normal client");
    assert_eq!(
        ok, all,
        "the normal client was always served ({ok} of {all})"
    );
    assert!(all > 20, "{all}");
    let metrics = get(&c, g.proxy.admin, "admin", "/metrics").await.body;
    assert_eq!(metric(&metrics, "gatehouse_sources_blocked_total"), 2.0);
    assert!(metric(&metrics, "gatehouse_blocked_connections_total") > 0.0);
}

/// `action: Limit`: a flooding source is not refused but held to a tightened rate: its
/// `SourceBlock` carries the limit, its connections are still accepted, and past the
/// limit its requests get 429 while a normal client is served.
#[tokio::test]
async fn a_flooding_source_is_held_to_a_tightened_limit() {
    let body = format!("{ADAPTIVE}    action: Limit\n    limitRequestsPerSecond: 5\n");
    let g = start(&[("policy.yaml", &policy("edge", "app", &body))]).await;
    let addr = g.proxy.http;
    let stop = Arc::new(AtomicBool::new(false));
    let normal = normal_client("127.0.0.1", addr, stop.clone());
    let c = client();
    // Flood until the limit applies (a 429).
    let start = Instant::now();
    loop {
        match status_from("127.0.0.3", addr).await {
            Some(200) => {}
            Some(429) => break,
            other => panic!("a limited source is answered, not refused: {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(6), "never limited");
    }
    let blocks = get(&c, g.proxy.admin, "admin", "/blocks").await.json();
    let list = blocks["blocks"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{blocks}");
    assert_eq!(list[0]["source"], "127.0.0.3/32");
    assert_eq!(list[0]["limit"], 5, "{blocks}");
    // Held to about 5 a second: over two seconds of flooding, 5 (burst) + 10 pass.
    let (mut ok, mut limited) = (0, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        match status_from("127.0.0.3", addr).await {
            Some(200) => ok += 1,
            Some(429) => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((5..=20).contains(&ok), "{ok} served, {limited} limited");
    assert!(limited > ok, "{ok} served, {limited} limited");
    let event = wait_log(&g.events, "\"source_limited\"").await;
    assert!(event.contains("\"limit_per_second\":5"), "{event}");
    let made = wait_log(&g.events, "\"source_blocked\"").await;
    assert!(made.contains("limit to 5/s"), "{made}");
    stop.store(true, Ordering::Relaxed);
    let (served, all) = normal.await.expect("normal client");
    assert_eq!(served, all, "the normal client was always served");
    let metrics = get(&c, g.proxy.admin, "admin", "/metrics").await.body;
    assert!(metric(&metrics, "gatehouse_source_limited_total") >= limited as f64);
    assert_eq!(metric(&metrics, "gatehouse_blocked_connections_total"), 0.0);
}

#[tokio::test]
async fn a_keep_alive_flood_is_cut_off_on_its_own_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = start(&[("policy.yaml", &policy("edge", "app", ADAPTIVE))]).await;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.4:0".parse().expect("addr"))
        .expect("bind");
    let mut s = sock.connect(g.proxy.http).await.expect("connect");
    let req = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut answers = 0;
    // One connection, request after request: the block reaches it with a 403 and the
    // connection is closed.
    let refused = loop {
        assert!(start.elapsed() < Duration::from_secs(6), "never refused");
        if s.write_all(req).await.is_err() {
            break "write failed".to_string();
        }
        let n = match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            other => panic!("no answer: {other:?}"),
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if n == 0 || text.starts_with("HTTP/1.1 403") {
            break text;
        }
        answers += 1;
    };
    assert!(answers > 20, "{answers} answers first");
    if refused.starts_with("HTTP/1.1 403") {
        assert!(
            refused.to_ascii_lowercase().contains("connection: close"),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn hand_written_blocks_and_dry_run() {
    let block = "---
apiVersion: gatehouse.dev/v1alpha1
kind: SourceBlock
metadata: {name: bad-actor, namespace: default}
spec:
  source: 127.0.0.3
  reason: seen scanning
";
    let dry = ADAPTIVE.to_string() + "    mode: DryRun\n";
    let g = start(&[
        ("block.yaml", block),
        ("policy.yaml", &policy("edge", "app", &dry)),
    ])
    .await;
    let addr = g.proxy.http;
    assert_eq!(
        status_from("127.0.0.3", addr).await,
        None,
        "blocked at accept"
    );
    assert_eq!(status_from("127.0.0.1", addr).await, Some(200));
    let c = client();
    let blocks = get(&c, g.proxy.admin, "admin", "/blocks").await.json();
    assert_eq!(blocks["blocks"][0]["adaptive"], false, "{blocks}");
    let refused = send(
        &c,
        "DELETE",
        g.proxy.admin,
        "admin",
        "/blocks/default/bad-actor",
        &[],
    )
    .await;
    assert_eq!(
        refused.status, 409,
        "a block of the config is deleted where it is defined"
    );

    // DryRun: a flood is reported, never blocked.
    let start = Instant::now();
    let mut served = 0;
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(status_from("127.0.0.2", addr).await, Some(200));
        served += 1;
    }
    let event = wait_log(&g.events, "\"source_would_block\"").await;
    assert!(event.contains("\"action\":\"log\""), "{event}");
    assert!(served > 100, "{served}");
    let blocks = get(&c, g.proxy.admin, "admin", "/blocks").await.json();
    assert_eq!(
        blocks["blocks"].as_array().map(Vec::len),
        Some(1),
        "{blocks}"
    );

    // The hand-written block removed from the directory: served.
    std::fs::remove_file(g.proxy.dir.path().join("block.yaml")).expect("remove");
    wait_served("127.0.0.3", addr, Duration::from_secs(3)).await;

    // A bad block is refused by field; the last good config keeps serving.
    let v = g.proxy.running.version();
    write(
        g.proxy.dir.path(),
        "block.yaml",
        &block.replace("127.0.0.3", "127.0.0.300"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(g.proxy.running.version(), v, "the bad block is not served");
    let errors =
        gatehouse::app::validate(g.proxy.dir.path(), &Default::default()).expect_err("invalid");
    let text = format!("{errors:#}");
    assert!(
        text.contains("SourceBlock default/bad-actor") && text.contains("spec.source"),
        "{text}"
    );
}

/// A backend that answers after `delay`.
async fn slow_backend(delay: Duration) -> SocketAddr {
    listen(move |s| async move {
        let svc = hyper::service::service_fn(move |_req| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"slow\n"),
            )))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    })
    .await
}

#[tokio::test]
async fn a_surge_sheds_the_lowest_priority_first() {
    let backend = slow_backend(Duration::from_millis(100)).await;
    let app = [
        service("default", "app", backend, None),
        ingress("bulk.test", "app").replace("name: app, namespace", "name: bulk, namespace"),
        ingress("critical.test", "app")
            .replace("name: app, namespace", "name: critical, namespace"),
    ]
    .concat();
    let bulk = policy(
        "bulk",
        "bulk",
        "  loadShedding:\n    priority: 0\n    maxConcurrentRequests: 8\n",
    );
    let critical = policy(
        "critical",
        "critical",
        "  loadShedding:\n    priority: 10\n",
    );
    let g = start_app(&app, &[("bulk.yaml", &bulk), ("critical.yaml", &critical)]).await;
    let (proxy, events) = (&g.proxy, &g.events);
    let c = client();
    assert_eq!(get(&c, proxy.http, "bulk.test", "/").await.status, 200);

    // 32 clients hammer the bulk route while one keeps asking the critical one.
    let stop = Arc::new(AtomicBool::new(false));
    let shed = Arc::new(AtomicUsize::new(0));
    let mut hammers = Vec::new();
    for _ in 0..32 {
        let (stop, shed, c) = (stop.clone(), shed.clone(), c.clone());
        let addr = proxy.http;
        hammers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = get(&c, addr, "bulk.test", "/").await;
                if r.status == 503 {
                    assert_eq!(
                        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
                        Some("1")
                    );
                    shed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let start = Instant::now();
    let (mut critical_ok, mut critical_all) = (0, 0);
    while start.elapsed() < Duration::from_secs(3) {
        critical_all += 1;
        if get(&c, proxy.http, "critical.test", "/").await.status == 200 {
            critical_ok += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.await.expect("hammer");
    }
    assert!(shed.load(Ordering::Relaxed) > 0, "nothing was shed");
    assert_eq!(
        critical_ok, critical_all,
        "the critical route was always served"
    );
    let event = wait_log(events, "\"load_shedding\"").await;
    assert!(event.contains("maxConcurrentRequests"), "{event}");
    let metrics = get(&c, proxy.admin, "admin", "/metrics").await.body;
    assert!(metric(&metrics, "gatehouse_requests_shed_total") > 0.0);

    // The surge over, the bulk route is served again.
    let start = Instant::now();
    loop {
        if get(&c, proxy.http, "bulk.test", "/").await.status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "bulk still shed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_log(events, "\"load_shedding_ended\"").await;
}

#[tokio::test]
async fn on_a_cluster_blocks_are_api_objects_that_kubectl_delete_lifts() {
    use serde_json::json;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let api = support::apiserver::ApiServer::start().await;
    let backend = echo("app").await;
    for o in [
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "gatehouse", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "gatehouse.dev/ingress-controller"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "app-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "app"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": backend.port()}],
            "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}]}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "app", "namespace": "default"},
            "spec": {"rules": [{"host": "app.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "SecurityPolicy",
            "metadata": {"name": "edge", "namespace": "default"},
            "spec": {"targetRefs": [{"group": "networking.k8s.io", "kind": "Ingress", "name": "app"}],
                "adaptiveBlocking": {"requestsPerSecond": 20, "window": "1s", "blockDuration": "1m"}}}),
    ] {
        api.apply(o);
    }
    let (running, http) = start_on_api(&api).await;
    wait_served("127.0.0.1", http, Duration::from_secs(5)).await;

    flood_until_refused("127.0.0.2", http, Duration::from_secs(6)).await;
    let block = api
        .get(
            "gatehouse.dev/v1alpha1",
            "SourceBlock",
            "default",
            "src-127-0-0-2-32",
        )
        .expect("the block is an object in the API");
    assert_eq!(block["spec"]["source"], "127.0.0.2/32", "{block}");
    assert_eq!(block["spec"]["policy"], "default/edge", "{block}");
    assert!(block["spec"]["expiresAt"].as_str().is_some(), "{block}");
    assert_eq!(status_from("127.0.0.1", http).await, Some(200));

    // `kubectl delete sourceblock`: lifted.
    api.delete(
        "gatehouse.dev/v1alpha1",
        "SourceBlock",
        "default",
        "src-127-0-0-2-32",
    );
    let back = wait_served("127.0.0.2", http, Duration::from_secs(4)).await;
    assert!(back < Duration::from_secs(3), "served again after {back:?}");
    running.shutdown().await;
}
