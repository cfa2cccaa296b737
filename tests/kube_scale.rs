//! Benchmark (ignored by default; `bash bench/kube_scale.sh` runs it in release): the
//! Kubernetes source at scale against the in-test API server: 7,000 Ingresses and 3,000
//! HTTPRoutes, each with its Service, and 100,000 endpoints. Measures initial sync to
//! serving, a new HTTPRoute among the 3,000 and a new Ingress (with its Service) under
//! load, endpoint changes, a burst of 1,000 changes, and memory. It prints numbers and
//! asserts correctness only (no failed requests, nothing lost), never time.

mod support;
use gatehouse::app::start_kubernetes;
use gatehouse_translate::{ListenMapEntry, TranslateOptions};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::apiserver::ApiServer;
use support::*;

/// Routes in all; the last `HTTP_ROUTES` of them are HTTPRoutes, the rest Ingresses.
const ROUTES: usize = 10_000;
const HTTP_ROUTES: usize = 3_000;
const GW: &str = "gateway.networking.k8s.io/v1";
/// Pause before each timed change.
const SPACING: Duration = Duration::from_millis(25);
const ENDPOINTS_PER_SERVICE: usize = 10;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Echo servers on 127.0.0.1..=127.0.0.10, all on one port (so one EndpointSlice port
/// covers ten real endpoints).
async fn echo_fleet(name: &str) -> u16 {
    loop {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = first.local_addr().expect("addr").port();
        let mut listeners = vec![first];
        for i in 2..=ENDPOINTS_PER_SERVICE {
            match tokio::net::TcpListener::bind(format!("127.0.0.{i}:{port}")).await {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == ENDPOINTS_PER_SERVICE {
            for l in listeners {
                tokio::spawn(gatehouse::echo::serve(l, name.to_string()));
            }
            return port;
        }
    }
}

/// Service `svc-{i}` and its EndpointSlice.
fn service(i: usize, port: u16) -> [Value; 2] {
    let svc = format!("svc-{i}");
    let addrs: Vec<Value> = (1..=ENDPOINTS_PER_SERVICE)
        .map(|a| json!({"addresses": [format!("127.0.0.{a}")], "conditions": {"ready": true}}))
        .collect();
    [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{svc}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port}], "endpoints": addrs}),
    ]
}

/// Ingress `ing-{i}` for host `h{i}.example`, to Service `svc-{i}`.
fn ingress(i: usize) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": format!("ing-{i}"), "namespace": "default"},
        "spec": {"rules": [{"host": format!("h{i}.example"), "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": format!("svc-{i}"), "port": {"number": 80}}}}]}}]}})
}

/// HTTPRoute `route-{i}` for host `r{i}.example`, to Service `svc-{svc}`.
fn http_route(i: usize, svc: usize) -> Value {
    json!({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": format!("route-{i}"), "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [format!("r{i}.example")],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": format!("svc-{svc}"), "port": 80}]}]}})
}

/// Everything for route `i`: its Service, EndpointSlice, and Ingress or HTTPRoute.
fn objects(i: usize, port: u16) -> Vec<Value> {
    let mut v = service(i, port).to_vec();
    v.push(match is_http_route(i) {
        true => http_route(i, i),
        false => ingress(i),
    });
    v
}

/// Whether route `i` of the initial set is an HTTPRoute (else an Ingress).
fn is_http_route(i: usize) -> bool {
    (ROUTES - HTTP_ROUTES..ROUTES).contains(&i)
}

/// Where a route's host is served: HTTPRoutes on the Gateway, Ingresses on the Ingress port.
fn host_of(i: usize) -> String {
    match is_http_route(i) {
        true => format!("r{i}.example"),
        false => format!("h{i}.example"),
    }
}

async fn served_by(cl: &TestClient, http: SocketAddr, host: &str) -> Option<String> {
    answer(cl, http, host).await.ok()
}

/// The echo backend's name, or what went wrong instead.
async fn answer(cl: &TestClient, http: SocketAddr, host: &str) -> Result<String, String> {
    let req = http::Request::get(format!("http://{http}/"))
        .header("host", host)
        .body(Default::default())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(2), cl.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("client error: {e}"))?;
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != 200 {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    v["service"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "no service".to_string())
}

async fn until_served(cl: &TestClient, http: SocketAddr, host: &str, want: &str) -> Duration {
    let t = Instant::now();
    while served_by(cl, http, host).await.as_deref() != Some(want) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{host} never served by {want}"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    t.elapsed()
}

type Histogram = (
    [u64; gatehouse_proxy::metrics::PROPAGATION_BUCKETS.len()],
    u64,
    u64,
);

/// The controller's own view between two readings of its propagation histogram (from
/// a change reaching the store to it being served): passes, mean, and the bucket
/// bounds that hold the median and the 90th percentile.
fn propagation(before: &Histogram, after: &Histogram) -> String {
    let bounds = gatehouse_proxy::metrics::PROPAGATION_BUCKETS;
    let counts: Vec<u64> = after.0.iter().zip(before.0).map(|(a, b)| a - b).collect();
    let n = after.2 - before.2;
    if n == 0 {
        return "no passes".into();
    }
    let mean = (after.1 - before.1) as f64 / n as f64 / 1000.0;
    let quantile = |q: f64| {
        let want = (n as f64 * q).ceil() as u64;
        let mut cum = 0;
        for (c, b) in counts.iter().zip(bounds) {
            cum += c;
            if cum >= want {
                return format!("<= {} ms", b * 1000.0);
            }
        }
        "> 5 s".to_string()
    };
    format!(
        "{n} passes, mean {mean:.2} ms, p50 {}, p90 {}",
        quantile(0.5),
        quantile(0.9)
    )
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with bash bench/kube_scale.sh"]
async fn kubernetes_source_at_scale() {
    let api = ApiServer::start().await;
    let port = echo_fleet("main").await;
    let other_port = echo_fleet("moved").await;
    let mut all: Vec<Value> = vec![
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "gatehouse", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "gatehouse.dev/ingress-controller"}}),
        json!({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "gatehouse"},
            "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
        json!({"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "gw", "namespace": "default"},
            "spec": {"gatewayClassName": "gatehouse", "listeners": [{"name": "http", "protocol": "HTTP", "port": 8000}]}}),
    ];
    for i in 0..ROUTES {
        all.extend(objects(i, port));
    }
    for o in &all {
        api.apply(o.clone());
    }
    let rss_before = rss_mib();
    let http = free_addr();
    let gateway = free_addr();
    let listen = vec![ListenMapEntry {
        gateway: None,
        port: 8000,
        addr: gateway,
    }];
    let addr_of = move |host: &str| if host.starts_with('r') { gateway } else { http };
    let opts = kube_options(loopback_translate(http, listen), None);
    let started = Instant::now();
    let running = start_kubernetes(api.client(), opts).await.expect("start");
    let cl = client();
    let last = host_of(ROUTES - 1);
    until_served(&cl, addr_of(&last), &last, "main").await;
    let first = host_of(0);
    until_served(&cl, addr_of(&first), &first, "main").await;
    let sync = started.elapsed();
    let rss_after = rss_mib();
    // Translation alone, of the same objects.
    let store = gatehouse_model::ObjectStore::from_objects(all.iter().filter_map(|v| {
        gatehouse_model::manifest::object_from_value(v.clone())
            .ok()
            .flatten()
    }));
    let t = Instant::now();
    let snapshot = gatehouse_translate::translate(&store, &TranslateOptions::default(), 1)
        .expect("translates");
    let translate_time = t.elapsed();
    let t = Instant::now();
    let copy = store.clone();
    let clone_time = t.elapsed();
    drop((snapshot, copy));

    // Load on existing routes, Ingresses and HTTPRoutes, while routes are added.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for w in 0..4 {
        let (stop, failures, total) = (stop.clone(), failures.clone(), total.clone());
        load.push(tokio::spawn(async move {
            let cl = client();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                // Routes 1000..1500 and the HTTPRoutes 9000..9500: never touched below.
                let n = if i % 2 == 0 { 1000 } else { 9000 } + i % 500;
                let host = host_of(n);
                let addr = addr_of(&host);
                match answer(&cl, addr, &host).await {
                    Ok(s) if s == "main" => {}
                    other => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            println!("failed request: {other:?}");
                        }
                    }
                }
                total.fetch_add(1, Ordering::Relaxed);
                i += 4;
            }
        }));
    }
    // A new HTTPRoute among the 3,000, to an existing Service.
    let hist = || running.dataplane.metrics.propagation.read();
    let h0 = hist();
    let mut http_route_changes = Vec::new();
    for n in 0..20 {
        let i = ROUTES + 50_000 + n;
        // Changes a moment apart, not back to back with the previous pass (which would
        // time the coalescing window rather than the path from the watch event).
        tokio::time::sleep(SPACING).await;
        let t = Instant::now();
        api.apply(http_route(i, n));
        until_served(&cl, gateway, &format!("r{i}.example"), "main").await;
        http_route_changes.push(t.elapsed());
    }
    let h1 = hist();
    // A new Ingress with its new Service and EndpointSlice (three watch events).
    let mut ingress_changes = Vec::new();
    for n in 0..10 {
        let i = ROUTES + n;
        tokio::time::sleep(SPACING).await;
        let t = Instant::now();
        for o in service(i, port) {
            api.apply(o);
        }
        api.apply(ingress(i));
        until_served(&cl, http, &format!("h{i}.example"), "main").await;
        ingress_changes.push(t.elapsed());
    }
    let h2 = hist();
    let mut endpoint_changes = Vec::new();
    for n in 0..20 {
        let [_, slice] = service(n, other_port);
        tokio::time::sleep(SPACING).await;
        let t = Instant::now();
        api.apply(slice);
        until_served(&cl, http, &format!("h{n}.example"), "moved").await;
        endpoint_changes.push(t.elapsed());
    }
    let h3 = hist();
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load");
    }

    // A burst of 1,000 new routes (Service, EndpointSlice, Ingress), coalesced.
    let v0 = running.version();
    let t = Instant::now();
    for n in 0..1000 {
        let i = ROUTES + 100 + n;
        for o in service(i, port) {
            api.apply(o);
        }
        api.apply(ingress(i));
    }
    until_served(
        &cl,
        http,
        &format!("h{}.example", ROUTES + 100 + 999),
        "main",
    )
    .await;
    let burst = t.elapsed();
    let swaps = running.version() - v0;
    let mut lost = 0;
    for n in (0..1000).step_by(37) {
        if served_by(&cl, http, &format!("h{}.example", ROUTES + 100 + n))
            .await
            .as_deref()
            != Some("main")
        {
            lost += 1;
        }
    }
    let counters = &running.dataplane.metrics.counters;
    let incremental = counters.config_incremental_total.load(Ordering::Relaxed);
    let reloads = counters.config_reloads_total.load(Ordering::Relaxed);

    println!(
        "--- kube scale: {} Ingresses, {HTTP_ROUTES} HTTPRoutes, {} endpoints ---",
        ROUTES - HTTP_ROUTES,
        ROUTES * ENDPOINTS_PER_SERVICE
    );
    println!("initial sync to serving: {sync:?}");
    println!("one full translation of {} objects: {translate_time:?}; one copy of the store: {clone_time:?}", store.len());
    println!("process RSS: {rss_before:.0} MiB before the controller started (test API server and its objects), {rss_after:.0} MiB after sync (+{:.0} MiB)", rss_after - rss_before);
    println!(
        "new HTTPRoute among {HTTP_ROUTES} to serving (20 runs): median {:?}, p90 {:?}, max {:?}",
        pct(http_route_changes.clone(), 0.5),
        pct(http_route_changes.clone(), 0.9),
        pct(http_route_changes, 1.0)
    );
    println!(
        "  in the controller, store to serving: {}",
        propagation(&h0, &h1)
    );
    println!(
        "new Ingress + Service + EndpointSlice to serving (10 runs): median {:?}, max {:?}",
        pct(ingress_changes.clone(), 0.5),
        pct(ingress_changes, 1.0)
    );
    println!(
        "  in the controller, store to serving: {}",
        propagation(&h1, &h2)
    );
    println!(
        "endpoint change to serving (20 runs): median {:?}, p99 {:?}",
        pct(endpoint_changes.clone(), 0.5),
        pct(endpoint_changes, 0.99)
    );
    println!(
        "  in the controller, store to serving: {}",
        propagation(&h2, &h3)
    );
    println!("burst of 1000 new routes: all serving after {burst:?}, in {swaps} Snapshot swaps");
    println!("snapshots installed: {reloads}, of which incremental: {incremental}");
    println!(
        "requests on other routes during changes: {} ({} failed)",
        total.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests on other routes failed during changes"
    );
    assert_eq!(lost, 0, "changes of the burst were lost");
    running.shutdown().await;
}
