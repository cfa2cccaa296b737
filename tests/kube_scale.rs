//! Benchmark (ignored by default; `bash bench/kube_scale.sh` runs it in release): the
//! Kubernetes source at scale against the in-test API server: 10,000 Ingresses with
//! Services and 100,000 endpoints. Measures initial sync to serving, a new route among
//! them under load, endpoint changes, a burst of 1,000 changes, and memory. It prints
//! numbers and asserts correctness only (no failed requests, nothing lost), never time.

mod support;
use gatehouse::app::start_kubernetes;
use gatehouse_translate::TranslateOptions;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::apiserver::ApiServer;
use support::*;

const ROUTES: usize = 10_000;
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

fn objects(i: usize, port: u16, service_suffix: &str) -> [Value; 3] {
    let svc = format!("svc-{i}{service_suffix}");
    let addrs: Vec<Value> = (1..=ENDPOINTS_PER_SERVICE)
        .map(|a| json!({"addresses": [format!("127.0.0.{a}")], "conditions": {"ready": true}}))
        .collect();
    [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{svc}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port}], "endpoints": addrs}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": format!("ing-{i}"), "namespace": "default"},
            "spec": {"rules": [{"host": format!("h{i}.example"), "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}}),
    ]
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
    api.apply(json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "gatehouse", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "gatehouse.dev/ingress-controller"}}));
    for i in 0..ROUTES {
        for o in objects(i, port, "") {
            api.apply(o);
        }
    }
    let rss_before = rss_mib();
    let http = free_addr();
    let opts = kube_options(loopback_translate(http, vec![]), None);
    let started = Instant::now();
    let running = start_kubernetes(api.client(), opts).await.expect("start");
    let cl = client();
    until_served(&cl, http, &format!("h{}.example", ROUTES - 1), "main").await;
    let sync = started.elapsed();
    let rss_after = rss_mib();
    // Translation alone, on a copy of what the API server holds.
    let mut store = gatehouse_model::ObjectStore::new();
    for kind in ["IngressClass", "Service", "EndpointSlice", "Ingress"] {
        let (api_version, plural) = match kind {
            "IngressClass" => ("networking.k8s.io/v1", "ingressclasses"),
            "Ingress" => ("networking.k8s.io/v1", "ingresses"),
            "Service" => ("v1", "services"),
            _ => ("discovery.k8s.io/v1", "endpointslices"),
        };
        let _ = plural;
        for i in 0..ROUTES + 1 {
            let name = match kind {
                "IngressClass" if i == 0 => "gatehouse".to_string(),
                "IngressClass" => continue,
                "Service" => format!("svc-{i}"),
                "EndpointSlice" => format!("svc-{i}-1"),
                _ => format!("ing-{i}"),
            };
            let ns = if kind == "IngressClass" {
                ""
            } else {
                "default"
            };
            if let Some(v) = api.get(api_version, kind, ns, &name) {
                if let Ok(Some(o)) = gatehouse_model::manifest::object_from_value(v) {
                    store.upsert(o);
                }
            }
        }
    }
    let t = Instant::now();
    let snapshot = gatehouse_translate::translate(&store, &TranslateOptions::default(), 1)
        .expect("translates");
    let translate_time = t.elapsed();
    let t = Instant::now();
    let copy = store.clone();
    let clone_time = t.elapsed();
    drop((snapshot, copy));

    // Load on existing routes while routes are added.
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
                // Hosts 1000..1500: never touched by the changes below.
                match answer(&cl, http, &format!("h{}.example", 1000 + i % 500)).await {
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
    let mut route_changes = Vec::new();
    for n in 0..10 {
        let i = ROUTES + n;
        let t = Instant::now();
        for o in objects(i, port, "") {
            api.apply(o);
        }
        until_served(&cl, http, &format!("h{i}.example"), "main").await;
        route_changes.push(t.elapsed());
    }
    let mut endpoint_changes = Vec::new();
    for n in 0..20 {
        let [_, slice, _] = objects(n, other_port, "");
        let t = Instant::now();
        api.apply(slice);
        until_served(&cl, http, &format!("h{n}.example"), "moved").await;
        endpoint_changes.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load");
    }

    // A burst of 1,000 new routes, coalesced.
    let v0 = running.version();
    let t = Instant::now();
    for n in 0..1000 {
        for o in objects(ROUTES + 100 + n, port, "") {
            api.apply(o);
        }
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

    println!(
        "--- kube scale: {ROUTES} Ingresses, {} endpoints ---",
        ROUTES * ENDPOINTS_PER_SERVICE
    );
    println!("initial sync to serving: {sync:?}");
    println!("one full translation of {} objects: {translate_time:?}; one copy of the store: {clone_time:?}", store.len());
    println!("process RSS: {rss_before:.0} MiB before the controller started (test API server and its objects), {rss_after:.0} MiB after sync (+{:.0} MiB)", rss_after - rss_before);
    println!(
        "new route to serving (10 runs): median {:?}, max {:?}",
        pct(route_changes.clone(), 0.5),
        pct(route_changes, 1.0)
    );
    println!(
        "endpoint change to serving (20 runs): median {:?}, p99 {:?}",
        pct(endpoint_changes.clone(), 0.5),
        pct(endpoint_changes, 0.99)
    );
    println!("burst of 1000 new routes: all serving after {burst:?}, in {swaps} Snapshot swaps");
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
