//! Benchmarks (ignored by default): translating 10,000 Ingresses with their Services
//! and EndpointSlices (100,000 endpoints), and one new HTTPRoute among 3,000 (with
//! 7,000 Ingresses) compiled incrementally. Run with
//! `cargo test --release -p gatehouse-translate --test scale -- --ignored --nocapture`.

use gatehouse_model::manifest::object_from_value;
use gatehouse_model::ObjectStore;
use gatehouse_translate::{translate, TranslateOptions};
use serde_json::json;
use std::time::Instant;

fn store(n: usize) -> ObjectStore {
    mixed_store(n, 0)
}

/// `n` routes, the last `http_routes` of them HTTPRoutes on one Gateway.
fn mixed_store(n: usize, http_routes: usize) -> ObjectStore {
    let mut s = ObjectStore::new();
    let mut add = |v| {
        if let Ok(Some(o)) = object_from_value(v) {
            s.upsert(o);
        }
    };
    add(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "gatehouse", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "gatehouse.dev/ingress-controller"}}),
    );
    for i in 0..n {
        let svc = format!("svc-{i}");
        let eps: Vec<_> = (1..=10)
            .map(|a| json!({"addresses": [format!("127.0.0.{a}")], "conditions": {"ready": true}}))
            .collect();
        add(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        );
        add(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{svc}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps}),
        );
        if i >= n - http_routes {
            add(http_route(i, i));
            continue;
        }
        add(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": format!("ing-{i}"), "namespace": "default"},
            "spec": {"rules": [{"host": format!("h{i}.example"), "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}}),
        );
    }
    if http_routes > 0 {
        add(
            json!({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "gatehouse"},
            "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
        );
        add(
            json!({"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "gw", "namespace": "default"},
            "spec": {"gatewayClassName": "gatehouse", "listeners": [{"name": "http", "protocol": "HTTP", "port": 8000}]}}),
        );
    }
    s
}

const GW: &str = "gateway.networking.k8s.io/v1";

fn http_route(i: usize, svc: usize) -> serde_json::Value {
    json!({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": format!("route-{i}"), "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [format!("r{i}.example")],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": format!("svc-{svc}"), "port": 80}]}]}})
}

#[test]
#[ignore = "benchmark"]
fn one_new_http_route_among_three_thousand() {
    use gatehouse_translate::incremental::{plan, translate_scoped};
    let mut s = mixed_store(10_000, 3_000);
    let opts = TranslateOptions {
        publish_addresses: vec!["203.0.113.7".into()],
        ..TranslateOptions::default()
    };
    let t = Instant::now();
    let mut prev = translate(&s, &opts, 1).expect("translates");
    let full = t.elapsed();
    let mut times = Vec::new();
    for n in 0..20 {
        let Ok(Some(o)) = object_from_value(http_route(20_000 + n, n)) else {
            panic!("route converts");
        };
        let key = o.key();
        s.upsert(o);
        let changes = [(key, None)].into_iter().collect();
        let t = Instant::now();
        let scope = plan(&s, &changes).expect("scoped");
        let next = translate_scoped(&s, &opts, &prev, &scope, 2 + n as u64).expect("splices");
        times.push(t.elapsed());
        assert!(next.summary.http_routes >= 3_000);
        prev = next;
    }
    times.sort();
    println!(
        "new HTTPRoute among 3,000 (7,000 Ingresses, {} objects): incremental median {:?}, max {:?}; full translation {full:?}",
        s.len(),
        times[10],
        times[19]
    );
}

#[test]
#[ignore = "benchmark"]
fn translate_ten_thousand_ingresses() {
    let s = store(10_000);
    let opts = TranslateOptions::default();
    let mut times = Vec::new();
    for v in 0..10 {
        let t = Instant::now();
        let snap = translate(&s, &opts, v).expect("translates");
        times.push(t.elapsed());
        assert_eq!(snap.summary.ingresses, 10_000);
    }
    times.sort();
    println!(
        "translate {} objects: median {:?}, min {:?}",
        s.len(),
        times[5],
        times[0]
    );
}

#[test]
#[ignore = "benchmark"]
fn ten_thousand_http_routes_and_an_endpoint_change() {
    use gatehouse_translate::backends::refresh_endpoints;
    let mut s = mixed_store(10_000, 10_000);
    let opts = TranslateOptions::default();
    let mut times = Vec::new();
    let mut snap = None;
    for v in 0..5 {
        let t = Instant::now();
        let next = translate(&s, &opts, v).expect("translates");
        times.push(t.elapsed());
        assert_eq!(next.summary.http_routes, 10_000);
        snap = Some(next);
    }
    times.sort();
    let snap = snap.expect("translated");
    // An endpoint-only change: one Service's slice moves; the clusters are patched in
    // place and no route is compiled again.
    let Ok(Some(o)) = object_from_value(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "svc-42-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "svc-42"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["127.0.0.99"], "conditions": {"ready": true}}]}),
    ) else {
        panic!("slice converts");
    };
    s.upsert(o);
    let only = [("default".to_string(), "svc-42".to_string())]
        .into_iter()
        .collect();
    let t = Instant::now();
    let changed = refresh_endpoints(&s, &snap, Some(&only));
    let patch = t.elapsed();
    assert_eq!(changed, 1);
    println!(
        "10,000 HTTPRoutes ({} objects): full translation median {:?}, min {:?}; endpoint-only change patched in place in {patch:?}",
        s.len(),
        times[2],
        times[0]
    );
}
