//! Benchmark (ignored by default): translating 10,000 Ingresses with their Services and
//! EndpointSlices (100,000 endpoints). Run with
//! `cargo test --release -p gatehouse-translate --test scale -- --ignored --nocapture`.

use gatehouse_model::manifest::object_from_value;
use gatehouse_model::ObjectStore;
use gatehouse_translate::{translate, TranslateOptions};
use serde_json::json;
use std::time::Instant;

fn store(n: usize) -> ObjectStore {
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
        add(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": format!("ing-{i}"), "namespace": "default"},
            "spec": {"rules": [{"host": format!("h{i}.example"), "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}}),
        );
    }
    s
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
