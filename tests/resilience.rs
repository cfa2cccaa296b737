//! Health and resilience over real sockets, against backends that really fail: active
//! health checks, retries and their budget, per-try timeouts, the connection circuit
//! breaker, consistent hashing and sticky sessions, request mirroring, and a backend
//! killed under load.

mod support;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::backend::Backend;
use support::*;

/// Service `app`, the EndpointSlices of `backends`, an Ingress for `app.example`, and a
/// BackendTrafficPolicy on the Service with `policy` (YAML lines under `spec:`).
fn app(backends: &[&Backend], policy: &str) -> String {
    let mut m = String::from(
        "---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app, namespace: default}
spec:
  rules:
  - host: app.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}
",
    );
    if !policy.is_empty() {
        m.push_str(&format!(
            "---
apiVersion: gatehouse.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: app, namespace: default}}
spec:
  targetRefs: [{{kind: Service, name: app}}]
{policy}"
        ));
    }
    for b in backends {
        m.push_str(&b.slice("app"));
    }
    m
}

/// Gatehouse serving `app` with `backends` and `policy`.
async fn start_app(backends: &[&Backend], policy: &str) -> Proxy {
    let manifests = app(backends, policy);
    start_proxy(&[("classes.yaml", CLASSES), ("app.yaml", &manifests)], &[])
        .await
        .0
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the first cluster in `/config` satisfies `ok`.
async fn cluster_until(p: &Proxy, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let t = Instant::now();
    loop {
        let c = cluster_config(p).await;
        if ok(&c) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{what}: {c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cluster_config(p: &Proxy) -> serde_json::Value {
    let config = get(&client(), p.admin, "admin", "/config").await.json();
    config["clusters"][0].clone()
}

#[tokio::test]
async fn active_health_checks_take_an_endpoint_out_and_bring_it_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let policy = "  healthCheck:
    type: HTTP
    interval: 50ms
    timeout: 1s
    unhealthyThreshold: 2
    healthyThreshold: 2
    http: {path: /health, expectedStatuses: [200]}
";
    let p = start_app(&[&a, &b], policy).await;
    let cl = client();
    // Both are probed, and both serve.
    until("both probed", || {
        a.state.health_probes.load(Ordering::SeqCst) >= 2
            && b.state.health_probes.load(Ordering::SeqCst) >= 2
    })
    .await;
    for _ in 0..10 {
        assert_eq!(get(&cl, p.http, "app.example", "/").await.status, 200);
    }
    assert!(
        a.hits() >= 4 && b.hits() >= 4,
        "a {} b {}",
        a.hits(),
        b.hits()
    );

    // b's health endpoint fails: after two probes b leaves rotation, though it would
    // still answer requests.
    b.set_health(503);
    cluster_until(&p, "b never marked unhealthy", |c| {
        c["unhealthy"][0] == b.addr.to_string()
    })
    .await;
    let before = b.hits();
    for _ in 0..20 {
        let r = get(&cl, p.http, "app.example", "/").await;
        assert_eq!(r.header("x-backend").as_deref(), Some("a"));
    }
    assert_eq!(
        b.hits(),
        before,
        "no request reaches the unhealthy endpoint"
    );

    // Healthy again after two passing probes.
    b.set_health(200);
    cluster_until(&p, "b never healthy again", |c| {
        c["unhealthy"].as_array().is_some_and(|u| u.is_empty())
    })
    .await;
    let before = b.hits();
    for _ in 0..10 {
        get(&cl, p.http, "app.example", "/").await;
    }
    assert!(b.hits() >= before + 4, "b serves again");
    let metrics = get(&cl, p.admin, "admin", "/metrics").await.body;
    assert!(
        metrics.contains("gatehouse_health_transitions_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn tcp_health_checks_notice_a_dead_endpoint() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let policy = "  healthCheck: {type: TCP, interval: 50ms, timeout: 200ms, unhealthyThreshold: 1}
";
    let p = start_app(&[&a, &b], policy).await;
    b.kill();
    cluster_until(&p, "dead b never unhealthy", |c| {
        c["unhealthy"][0] == b.addr.to_string()
    })
    .await;
    let cl = client();
    for _ in 0..20 {
        assert_eq!(get(&cl, p.http, "app.example", "/").await.status, 200);
    }
}

#[tokio::test]
async fn retries_hide_a_failing_endpoint() {
    let good = Backend::start("good").await;
    let bad = Backend::start("bad").await;
    bad.set_status(503);
    let policy = "  retry: {attempts: 2, retryOn: [gateway-error], backoff: {baseInterval: 1ms}}
";
    let p = start_app(&[&good, &bad], policy).await;
    let cl = client();
    for _ in 0..40 {
        let r = get(&cl, p.http, "app.example", "/").await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(
        bad.hits() >= 10,
        "round robin still tries the bad one: {}",
        bad.hits()
    );
    // POST is not idempotent: a 503 after it was sent is not retried.
    let mut failed = 0;
    for _ in 0..20 {
        if send(&cl, "POST", p.http, "app.example", "/", &[])
            .await
            .status
            == 503
        {
            failed += 1;
        }
    }
    assert!(
        failed >= 5,
        "POSTs that reached the bad endpoint fail: {failed}"
    );
    let metrics = get(&cl, p.admin, "admin", "/metrics").await.body;
    assert!(
        metrics.contains("gatehouse_upstream_retries_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn connect_failures_are_retried_for_any_method() {
    let good = Backend::start("good").await;
    let dead = Backend::start("dead").await;
    dead.kill();
    let policy = "  retry: {attempts: 1, retryOn: [connect-failure], backoff: {baseInterval: 1ms}}
";
    let p = start_app(&[&good, &dead], policy).await;
    let cl = client();
    for _ in 0..20 {
        let r = send(&cl, "POST", p.http, "app.example", "/", &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(good.hits(), 20);
}

#[tokio::test]
async fn the_retry_budget_caps_retries_against_a_failing_backend() {
    let bad = Backend::start("bad").await;
    bad.set_status(503);
    let policy = "  retry:
    attempts: 3
    retryOn: [gateway-error]
    backoff: {baseInterval: 1ms, maxInterval: 1ms}
    budget: {percent: 20, minRetriesPerSecond: 0}
";
    let p = start_app(&[&bad], policy).await;
    let cl = client();
    for _ in 0..200 {
        assert_eq!(get(&cl, p.http, "app.example", "/").await.status, 503);
    }
    // Without a budget, three retries each would make 800 requests; the budget allows
    // 20% more than the 200 sent.
    let hits = bad.hits();
    assert!(
        (230..=241).contains(&hits),
        "backend saw {hits} requests for 200"
    );
    let metrics = get(&cl, p.admin, "admin", "/metrics").await.body;
    assert!(
        !metrics.contains("gatehouse_retry_budget_exhausted_total 0\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_per_try_timeout_moves_on_to_another_endpoint() {
    let slow = Backend::start("slow").await;
    let fast = Backend::start("fast").await;
    slow.set_delay(Duration::from_secs(2));
    let policy = "  retry: {attempts: 1, retryOn: [reset], perTryTimeout: 100ms, backoff: {baseInterval: 1ms}}
";
    let p = start_app(&[&slow, &fast], policy).await;
    let cl = client();
    for _ in 0..6 {
        let t = Instant::now();
        let r = get(&cl, p.http, "app.example", "/").await;
        assert_eq!(r.header("x-backend").as_deref(), Some("fast"));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    assert!(slow.hits() >= 2);
}

#[tokio::test]
async fn the_connection_circuit_breaker_limits_connections_and_waiting_requests() {
    let b = Backend::start("b").await;
    b.set_delay(Duration::from_millis(300));
    let policy = "  circuitBreaker: {maxConnections: 2, maxPendingRequests: 2}
";
    let p = start_app(&[&b], policy).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = p.http;
        tasks.push(tokio::spawn(async move {
            get(&client(), addr, "app.example", "/").await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(
                    r.header("x-gatehouse-reason").as_deref(),
                    Some("circuit-breaker-max-pending")
                );
                refused += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(
        (ok, refused),
        (4, 6),
        "two on connections, two waiting, six refused"
    );
    assert!(b.state.max_open_connections.load(Ordering::SeqCst) <= 2);
    assert_eq!(
        b.state.connections_total.load(Ordering::SeqCst),
        2,
        "waiting requests reuse the two"
    );
}

#[tokio::test]
async fn consistent_hashing_keeps_a_user_on_one_endpoint() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let policy = "  loadBalancer:
    type: ConsistentHash
    consistentHash: {type: Header, header: x-user}
";
    let refs: Vec<&Backend> = backends.iter().collect();
    let p = start_app(&refs, policy).await;
    let cl = client();
    let mut seen = std::collections::HashSet::new();
    for user in 0..30 {
        let u = format!("user-{user}");
        let first = send(&cl, "GET", p.http, "app.example", "/", &[("x-user", &u)])
            .await
            .header("x-backend");
        for _ in 0..3 {
            let again = send(&cl, "GET", p.http, "app.example", "/", &[("x-user", &u)])
                .await
                .header("x-backend");
            assert_eq!(again, first, "{u}");
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "users spread over all endpoints: {seen:?}");
}

#[tokio::test]
async fn sticky_sessions_follow_the_cookie_the_proxy_sets() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let policy = "  sessionPersistence: {cookieName: route, ttl: 1h}
";
    let p = start_app(&[&a, &b], policy).await;
    let cl = client();
    let first = get(&cl, p.http, "app.example", "/").await;
    let cookie = first.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.starts_with("route=") && cookie.contains("Max-Age=3600"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    let backend = first.header("x-backend");
    for _ in 0..10 {
        let r = send(&cl, "GET", p.http, "app.example", "/", &[("cookie", &pair)]).await;
        assert_eq!(r.header("x-backend"), backend);
        assert_eq!(
            r.header("set-cookie"),
            None,
            "an existing session is not reset"
        );
    }
    // Without the cookie, round robin.
    let names: std::collections::HashSet<_> = backends_seen(&cl, &p).await;
    assert_eq!(names.len(), 2);
}

async fn backends_seen(cl: &TestClient, p: &Proxy) -> std::collections::HashSet<Option<String>> {
    let mut names = std::collections::HashSet::new();
    for _ in 0..4 {
        names.insert(
            get(cl, p.http, "app.example", "/")
                .await
                .header("x-backend"),
        );
    }
    names
}

#[tokio::test]
async fn mirroring_copies_requests_without_touching_the_response() {
    let main = Backend::start("main").await;
    let shadow = Backend::start("shadow").await;
    let half = Backend::start("half").await;
    shadow.set_status(500);
    shadow.set_delay(Duration::from_millis(300));
    let manifests = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: gatehouse
  listeners: [{{name: http, port: 8080, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: main, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: shadow, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: half, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app.example]
  rules:
  - filters:
    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}}}}}
    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: half, port: 80}}, percent: 50}}}}
    backendRefs: [{{name: main, port: 80}}]
{}{}{}",
        main.slice("main"),
        shadow.slice("shadow"),
        half.slice("half")
    );
    let (_p, ports) = start_proxy(
        &[("classes.yaml", CLASSES), ("app.yaml", &manifests)],
        &[8080],
    )
    .await;
    let cl = client();
    for i in 0..200 {
        let t = Instant::now();
        let r = get(&cl, ports[0], "app.example", &format!("/item/{i}")).await;
        assert_eq!((r.status, r.body.as_str()), (200, "main"));
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "the slow mirror does not delay: {:?}",
            t.elapsed()
        );
    }
    until("every request mirrored", || shadow.hits() == 200).await;
    let paths = shadow.state.paths.lock().expect("paths").clone();
    assert!(
        paths.contains(&"/item/17".to_string()),
        "copies keep their path"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let halved = half.hits();
    assert!(
        (70..=130).contains(&halved),
        "50% mirror got {halved} of 200"
    );
    assert_eq!(main.hits(), 200);
}

#[tokio::test]
async fn killing_one_of_three_backends_under_load_fails_a_handful_at_most() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let policy = "  outlierDetection: {consecutiveErrors: 1, baseEjectionTime: 30s, maxEjectionPercent: 34}
  retry: {attempts: 2, retryOn: [connect-failure, reset, gateway-error], backoff: {baseInterval: 1ms}}
";
    let refs: Vec<&Backend> = backends.iter().collect();
    let p = start_app(&refs, policy).await;
    let start = Instant::now();
    let killed_at = Duration::from_millis(500);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let addr = p.http;
        workers.push(tokio::spawn(async move {
            let cl = client();
            let mut results = Vec::new();
            while start.elapsed() < Duration::from_secs(2) {
                let r = get(&cl, addr, "app.example", "/").await;
                results.push((start.elapsed(), r.status));
            }
            results
        }));
    }
    tokio::time::sleep(killed_at).await;
    backends[1].kill();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let failed: Vec<_> = all.iter().filter(|(_, s)| *s != 200).collect();
    assert!(all.len() > 200, "load ran: {} requests", all.len());
    assert!(
        failed.len() <= 3,
        "{} of {} failed: {failed:?}",
        failed.len(),
        all.len()
    );
    let late = failed
        .iter()
        .filter(|(t, _)| *t > killed_at + Duration::from_millis(200))
        .count();
    assert_eq!(late, 0, "none fail once the dead endpoint is ejected");
    let c = cluster_config(&p).await;
    assert_eq!(c["ejected"][0], backends[1].addr.to_string(), "{c}");
}
