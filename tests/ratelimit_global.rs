//! Global rate limits through a real Redis (Debian's `redis-server`, started by the
//! test on a free loopback port and stopped after): two proxies share one limit, so
//! requests through either count against it; when Redis goes away, a fail-open limit
//! lets requests through and a fail-closed one answers 503, both counted; when Redis
//! comes back, the limits count again.

mod support;

use gatehouse_proxy::ProxyConfig;
use gatehouse_translate::TranslateOptions;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A redis-server of our own, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; .ci/run installs it)");
        let t = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

const POLICY: &str = "---
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: shared, namespace: default}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: open}]
  rateLimits:
    - {name: per-client, requests: 4, per: 1m, mode: Global, key: {clientIP: {}}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: strict, namespace: default}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: closed}]
  rateLimits:
    - {name: all, requests: 1000, per: 1s, mode: Global, failOpen: false}
";

async fn proxy(redis: u16) -> Proxy {
    let backend = echo("app").await;
    let app = [
        service("default", "app", backend, None),
        ingress("open.test", "app").replacen("name: app,", "name: open,", 1),
        ingress("closed.test", "app").replacen("name: app,", "name: closed,", 1),
    ]
    .concat();
    let cfg = ProxyConfig {
        drain_timeout: Duration::from_secs(2),
        redis: Some(format!("redis://127.0.0.1:{redis}/")),
        ..ProxyConfig::default()
    };
    let base = TranslateOptions {
        global_rate_limits: true,
        ..TranslateOptions::default()
    };
    let files = [
        ("classes.yaml", CLASSES),
        ("app.yaml", app.as_str()),
        ("policy.yaml", POLICY),
    ];
    start_proxy_translating(&files, &[], cfg, base).await.0
}

async fn status(c: &TestClient, addr: SocketAddr, host: &str) -> u16 {
    get(c, addr, host, "/").await.status
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn two_proxies_share_a_global_limit_and_fail_as_configured() {
    let port = free_addr().port();
    let mut redis = Redis::start(port).await;
    let (a, b) = (proxy(port).await, proxy(port).await);
    let c = client();

    // Four per minute for this client, whichever proxy it goes through.
    let mut seen = Vec::new();
    for i in 0..6 {
        let p = if i % 2 == 0 { &a } else { &b };
        seen.push(status(&c, p.http, "open.test").await);
    }
    assert_eq!(seen, [200, 200, 200, 200, 429, 429], "A B A B A B");
    let r = get(&c, b.http, "open.test", "/").await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=15).contains(&retry), "Retry-After {retry}");
    assert_eq!(status(&c, a.http, "closed.test").await, 200);

    // Redis goes away: the fail-open limit lets requests through, the fail-closed one
    // answers 503; both are counted.
    redis.stop();
    assert_eq!(status(&c, a.http, "open.test").await, 200, "fail open");
    assert_eq!(status(&c, a.http, "closed.test").await, 503, "fail closed");
    let metrics = get(&c, a.admin, "admin", "/metrics").await.body;
    assert!(
        metric(&metrics, "gatehouse_ratelimit_store_errors_total") >= 2,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "gatehouse_ratelimit_store_fail_closed_total"),
        1
    );

    // Redis comes back (empty): counting starts again, through both proxies.
    let _redis = Redis::start(redis.port).await;
    // (The fail-closed route answers 200 once a proxy reaches the store again.)
    for p in [&a, &b] {
        let t = Instant::now();
        while status(&c, p.http, "closed.test").await != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the store never came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut passed = 0;
    for i in 0..8 {
        let p = if i % 2 == 0 { &a } else { &b };
        if status(&c, p.http, "open.test").await == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 4, "four per minute again, across both proxies");
}
