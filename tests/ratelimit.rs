//! Rate limits and access lists in the proxy, over real sockets (clients bound to
//! several loopback source addresses). Rate limits: a SecurityPolicy's limit per client
//! address answers 429 with `Retry-After` and `RateLimit-*` headers once a client has
//! spent its burst, while other addresses (clients bound to other loopback addresses)
//! are still served; a limit per API key counts each key and leaves requests without
//! one alone; a route-wide limit holds its rate within tolerance; a limit keeps its
//! counts across config reloads; a bad limit is refused and the last good config keeps
//! serving; the Ingress annotations work; every refusal is a JSON security event.
//! Access lists: the most specific network decides, an allow list denies the rest,
//! IPv4 and IPv6; `X-Forwarded-For` is believed from trusted proxies only; a PROXY
//! protocol header (v1, v2) names the client for a configured load balancer, and is
//! required from it and never believed from anyone else. Connection limits: a client
//! address over its concurrent or per-second connections is closed at once while others
//! are served.

mod support;

use gatehouse_proxy::ProxyConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

fn policy(limits: &str) -> String {
    spec(&format!("  rateLimits:\n{limits}"))
}

/// A SecurityPolicy on the Ingress with `body` (indented) as the rest of its spec.
fn spec(body: &str) -> String {
    format!(
        "---
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: limits, namespace: default}}
spec:
  targetRefs: [{{group: networking.k8s.io, kind: Ingress, name: app}}]
{body}"
    )
}

struct Limited {
    proxy: Proxy,
    events: std::path::PathBuf,
    backend: SocketAddr,
    _logs: tempfile::TempDir,
}

async fn start(policy: &str, annotations: &str) -> Limited {
    start_with(policy, annotations, ProxyConfig::default()).await
}

async fn start_with(policy: &str, annotations: &str, cfg: ProxyConfig) -> Limited {
    let backend = echo("app").await;
    let (cfg, events, logs) = with_security_log(cfg);
    let app = app(backend, annotations);
    let (proxy, _) = start_proxy_with(
        &[
            ("classes.yaml", CLASSES),
            ("app.yaml", &app),
            ("policy.yaml", policy),
        ],
        &[],
        cfg,
    )
    .await;
    Limited {
        proxy,
        events,
        backend,
        _logs: logs,
    }
}

fn app(backend: SocketAddr, annotations: &str) -> String {
    let ing = ingress("app.test", "app");
    let ing = match annotations {
        "" => ing,
        a => ing.replace(
            "metadata: {name: app, namespace: default}",
            &format!("metadata: {{name: app, namespace: default, annotations: {{{a}}}}}"),
        ),
    };
    [service("default", "app", backend, None), ing].concat()
}

#[tokio::test]
async fn per_client_limits_answer_429_with_headers_and_spare_other_clients() {
    let l = start(
        &policy("  - {name: per-client, requests: 3, per: 1m, key: {clientIP: {}}}\n"),
        "",
    )
    .await;
    let addr = l.proxy.http;
    // Over keep-alive (the fast path): three pass, the fourth is refused.
    let c = client();
    for i in 0..3 {
        let r = get(&c, addr, "app.test", "/").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let r = get(&c, addr, "app.test", "/").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("per-client"), "{}", r.body);
    let h = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    // One request every 20 s: the next is allowed in at most 20 s.
    let retry: u64 = h("retry-after").parse().expect("Retry-After in seconds");
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(h("ratelimit-limit"), "3");
    assert_eq!(h("ratelimit-remaining"), "0");
    let reset: u64 = h("ratelimit-reset").parse().expect("RateLimit-Reset");
    assert!((40..=60).contains(&reset), "RateLimit-Reset {reset}");
    assert_eq!(
        h("ratelimit-policy"),
        "3;w=60;burst=3;comment=\"per-client\""
    );
    assert!(!h("x-request-id").is_empty());

    // The same address on new connections is still limited; other addresses are not.
    let (status, _) = get_from("127.0.0.1", addr, "/", "").await;
    assert_eq!(status, 429);
    for _ in 0..3 {
        let (status, head) = get_from("127.0.0.2", addr, "/", "").await;
        assert_eq!(status, 200, "{head}");
    }
    let (status, head) = get_from("127.0.0.2", addr, "/", "").await;
    assert_eq!(status, 429);
    assert_eq!(header(&head, "ratelimit-limit"), Some("3"));
    let (status, _) = get_from("127.0.0.3", addr, "/", "").await;
    assert_eq!(status, 200);

    // Each refusal is a security event.
    let text = wait_log(&l.events, "127.0.0.2").await;
    let event: serde_json::Value = text
        .lines()
        .find(|line| line.contains("127.0.0.2"))
        .and_then(|line| serde_json::from_str(line).ok())
        .expect("a JSON event");
    assert_eq!(event["event"], "rate_limited");
    assert_eq!(event["limit"], "per-client");
    assert_eq!(event["policy"], "SecurityPolicy default/limits");
    assert_eq!(event["action"], "deny");
    assert!(event["route"].as_str().is_some_and(|r| !r.is_empty()));

    // And counted.
    let metrics = get(&c, l.proxy.admin, "admin", "/metrics").await.body;
    let refused = metrics
        .lines()
        .find_map(|line| line.strip_prefix("gatehouse_rate_limited_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(refused.is_some_and(|n| n >= 3), "{refused:?}");
}

#[tokio::test]
async fn api_key_limits_count_each_key_and_leave_requests_without_one_alone() {
    let l = start(
        &policy("  - {name: per-key, requests: 2, per: 1h, key: {header: X-API-Key}}\n"),
        "",
    )
    .await;
    let addr = l.proxy.http;
    let c = client();
    let with = |key: &'static str| [("x-api-key", key)];
    for _ in 0..2 {
        assert_eq!(
            send(&c, "GET", addr, "app.test", "/", &with("a"))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        send(&c, "GET", addr, "app.test", "/", &with("a"))
            .await
            .status,
        429
    );
    assert_eq!(
        send(&c, "GET", addr, "app.test", "/", &with("b"))
            .await
            .status,
        200
    );
    for _ in 0..5 {
        assert_eq!(get(&c, addr, "app.test", "/").await.status, 200);
    }
}

#[tokio::test]
async fn a_route_wide_limit_holds_its_rate() {
    // 20 per second, one at a time, for every client together.
    let l = start(
        &policy("  - {name: route, requests: 20, per: 1s, burst: 1}\n"),
        "",
    )
    .await;
    let addr = l.proxy.http;
    let c = client();
    let t = Instant::now();
    let (mut ok, mut refused) = (0u32, 0u32);
    while t.elapsed() < Duration::from_millis(1500) {
        match get(&c, addr, "app.test", "/").await.status {
            200 => ok += 1,
            429 => refused += 1,
            s => panic!("status {s}"),
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    // One at the start, then one per 50 ms.
    let expected = 1.0 + elapsed * 20.0;
    assert!(
        (f64::from(ok) - expected).abs() <= 3.0,
        "{ok} passed in {elapsed:.2} s, expected about {expected:.0} ({refused} refused)"
    );
    assert!(refused > 0);
}

#[tokio::test]
async fn limits_survive_reloads_and_bad_limits_are_refused() {
    let l = start(
        &policy(
            "  - {name: per-client, requests: 1, per: 1h, key: {clientIP: {ipv4Prefix: 24}}}\n",
        ),
        "",
    )
    .await;
    let addr = l.proxy.http;
    assert_eq!(get_from("127.0.0.5", addr, "/", "").await.0, 200);
    // The /24 is one key: another address of it is over the limit too.
    assert_eq!(get_from("127.0.0.6", addr, "/", "").await.0, 429);
    assert_eq!(get_from("127.0.1.6", addr, "/", "").await.0, 200);

    // An unrelated change: the limit keeps its count.
    let v = l.proxy.running.version();
    let more = [
        app(l.backend, ""),
        service("default", "other", l.backend, None),
    ]
    .concat();
    write(l.proxy.dir.path(), "app.yaml", &more);
    l.proxy.wait_version(v + 1).await;
    assert_eq!(get_from("127.0.0.5", addr, "/", "").await.0, 429);

    // A bad limit: refused, named by field; the last good config keeps serving.
    let v = l.proxy.running.version();
    write(
        l.proxy.dir.path(),
        "policy.yaml",
        &policy("  - {name: per-client, requests: 1, per: soon}\n"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(l.proxy.running.version(), v, "the bad policy is not served");
    assert_eq!(get_from("127.0.0.5", addr, "/", "").await.0, 429);
    let errors =
        gatehouse::app::validate(l.proxy.dir.path(), &Default::default()).expect_err("invalid");
    let text = format!("{errors:#}");
    assert!(
        text.contains("SecurityPolicy") && text.contains("spec.rateLimits[0].per"),
        "{text}"
    );
}

#[tokio::test]
async fn ingress_annotations_limit_each_client() {
    let l = start(
        "# no policy: the annotations alone\n",
        "gatehouse.dev/limit-rpm: \"2\", gatehouse.dev/limit-burst-multiplier: \"1\"",
    )
    .await;
    let addr = l.proxy.http;
    assert_eq!(get_from("127.0.0.7", addr, "/", "").await.0, 200);
    assert_eq!(get_from("127.0.0.7", addr, "/", "").await.0, 200);
    let (status, head) = get_from("127.0.0.7", addr, "/", "").await;
    assert_eq!(status, 429);
    assert_eq!(header(&head, "ratelimit-limit"), Some("2"));
    assert_eq!(get_from("127.0.0.8", addr, "/", "").await.0, 200);
}

#[tokio::test]
async fn access_lists_decide_by_the_most_specific_network() {
    let l = start(
        &spec("  ipAccess:\n    allow: [127.0.0.0/24, \"2001:db8::/32\"]\n    deny: [127.0.0.9, \"2001:db8:bad::/48\"]\n"),
        "",
    )
    .await;
    let addr = l.proxy.http;
    assert_eq!(get_from("127.0.0.5", addr, "/", "").await.0, 200);
    let (status, head) = get_from("127.0.0.9", addr, "/", "").await;
    assert_eq!(status, 403, "{head}");
    assert_eq!(
        get_from("127.0.1.1", addr, "/", "").await.0,
        403,
        "outside the allow list"
    );
    let text = wait_log(&l.events, "ip_denied").await;
    assert!(text.contains("\"client\":\"127.0.0.9\""), "{text}");
    assert!(text.contains("SecurityPolicy default/limits"), "{text}");
    let c = client();
    let metrics = get(&c, l.proxy.admin, "admin", "/metrics").await.body;
    assert!(metrics.contains("gatehouse_ip_denied_total 2"), "{metrics}");
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let l = start(
        &spec(concat!(
            "  clientIPDetection:\n    xForwardedFor:\n      trustedCIDRs: [127.0.0.1/32]\n",
            "  ipAccess:\n    deny: [203.0.113.0/24, \"2001:db8::/32\"]\n",
        )),
        "",
    )
    .await;
    let addr = l.proxy.http;
    let xff = |v: &str| format!("X-Forwarded-For: {v}\r\n");
    // From the trusted proxy, its header tells the client.
    assert_eq!(
        get_from("127.0.0.1", addr, "/", &xff("203.0.113.5"))
            .await
            .0,
        403
    );
    assert_eq!(
        get_from("127.0.0.1", addr, "/", &xff("2001:db8::7"))
            .await
            .0,
        403,
        "IPv6"
    );
    assert_eq!(
        get_from("127.0.0.1", addr, "/", &xff("198.51.100.1"))
            .await
            .0,
        200
    );
    // A client cannot hide behind an address it wrote itself: the rightmost
    // untrusted address counts.
    let spoof = xff("198.51.100.1, 203.0.113.5");
    assert_eq!(get_from("127.0.0.1", addr, "/", &spoof).await.0, 403);
    // From anyone else the header is not believed.
    assert_eq!(
        get_from("127.0.0.2", addr, "/", &xff("203.0.113.5"))
            .await
            .0,
        200
    );
    assert_eq!(
        get_from("127.0.0.2", addr, "/", &xff("198.51.100.1"))
            .await
            .0,
        200
    );

    // Without trusted proxies the header is ignored.
    let v = l.proxy.running.version();
    write(
        l.proxy.dir.path(),
        "policy.yaml",
        &spec("  ipAccess:\n    deny: [203.0.113.0/24]\n"),
    );
    l.proxy.wait_version(v + 1).await;
    assert_eq!(
        get_from("127.0.0.1", addr, "/", &xff("203.0.113.5"))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn bad_networks_are_refused_by_field() {
    let l = start(&spec("  ipAccess:\n    deny: [203.0.113.0/24]\n"), "").await;
    let v = l.proxy.running.version();
    write(
        l.proxy.dir.path(),
        "policy.yaml",
        &spec("  ipAccess:\n    deny: [203.0.113.0/24, 10.0.0.0/33]\n"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(l.proxy.running.version(), v, "the bad policy is not served");
    let errors =
        gatehouse::app::validate(l.proxy.dir.path(), &Default::default()).expect_err("invalid");
    let text = format!("{errors:#}");
    assert!(text.contains("spec.ipAccess.deny[1]"), "{text}");
}

#[tokio::test]
async fn proxy_protocol_names_the_client_for_load_balancers_only() {
    let from: gatehouse_security::ipacl::Cidr = "127.0.0.1/32".parse().expect("cidr");
    let cfg = ProxyConfig {
        proxy_protocol: Some(std::sync::Arc::new(
            gatehouse_security::ipacl::AccessList::new(&[from], &[]),
        )),
        ..ProxyConfig::default()
    };
    let l = start_with(&spec("  ipAccess:\n    deny: [203.0.113.0/24]\n"), "", cfg).await;
    let addr = l.proxy.http;
    let req = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let v1 = |client: &str| {
        [
            format!("PROXY TCP4 {client} 127.0.0.1 40000 80\r\n").as_bytes(),
            &req[..],
        ]
        .concat()
    };
    // Version 1 from the load balancer: the named client decides.
    assert_eq!(
        send_from("127.0.0.1", addr, &v1("203.0.113.5")).await.0,
        Some(403)
    );
    assert_eq!(
        send_from("127.0.0.1", addr, &v1("198.51.100.1")).await.0,
        Some(200)
    );
    // Version 2.
    let v2 = |ip: [u8; 4]| {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        h.extend_from_slice(&ip);
        h.extend_from_slice(&[127, 0, 0, 1, 0x9c, 0x40, 0, 80]);
        [&h[..], &req[..]].concat()
    };
    assert_eq!(
        send_from("127.0.0.1", addr, &v2([203, 0, 113, 9])).await.0,
        Some(403)
    );
    assert_eq!(
        send_from("127.0.0.1", addr, &v2([198, 51, 100, 2])).await.0,
        Some(200)
    );
    // The header is required from the load balancer...
    assert_eq!(
        send_from("127.0.0.1", addr, req).await.0,
        None,
        "no header: dropped"
    );
    // ...and never believed from anyone else (it is a bad request there).
    let forged = [
        &b"PROXY TCP4 198.51.100.1 127.0.0.1 40000 80\r\n"[..],
        &req[..],
    ]
    .concat();
    assert_eq!(send_from("127.0.0.2", addr, &forged).await.0, Some(400));
    assert_eq!(get_from("127.0.0.2", addr, "/", "").await.0, 200);
}

#[tokio::test]
async fn connection_limits_close_extra_connections_at_once() {
    use tokio::io::AsyncReadExt;
    let cfg = ProxyConfig {
        conn_limits: gatehouse_proxy::connlimit::ConnLimits {
            per_ip: 2,
            ..Default::default()
        },
        ..ProxyConfig::default()
    };
    let l = start_with("# no policy\n", "", cfg).await;
    let addr = l.proxy.http;
    let idle = |from: &'static str| async move {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(from.parse().expect("ip"), 0))
            .expect("bind");
        sock.connect(addr).await.expect("connect")
    };
    // Two idle connections from one address hold its two places.
    let first = idle("127.0.0.1").await;
    let _second = idle("127.0.0.1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third is closed at once, before it sends anything.
    let mut third = idle("127.0.0.1").await;
    let mut b = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut b)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // Other addresses are served meanwhile.
    assert_eq!(get_from("127.0.0.2", addr, "/", "").await.0, 200);
    // A place comes free when a connection closes.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get_from("127.0.0.1", addr, "/", "").await.0, 200);
    let metrics = get(&client(), l.proxy.admin, "admin", "/metrics")
        .await
        .body;
    assert!(
        metrics.contains("gatehouse_connections_refused_total 1"),
        "{metrics}"
    );
    wait_log(&l.events, "connections_per_ip").await;

    // New connections per second per address.
    let cfg = ProxyConfig {
        conn_limits: gatehouse_proxy::connlimit::ConnLimits {
            new_per_ip_per_second: 3,
            ..Default::default()
        },
        ..ProxyConfig::default()
    };
    let l = start_with("# no policy\n", "", cfg).await;
    let addr = l.proxy.http;
    for _ in 0..3 {
        assert_eq!(get_from("127.0.0.4", addr, "/", "").await.0, 200);
    }
    let req = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    assert_eq!(
        send_from("127.0.0.4", addr, req).await.0,
        None,
        "a fourth in the second"
    );
    assert_eq!(get_from("127.0.0.5", addr, "/", "").await.0, 200);
}
