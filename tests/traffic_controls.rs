//! The adaptive traffic controls, end to end with real backends: a canary that starts
//! failing is rolled back (its weight set to 0 by a TrafficAdjustment the admin API
//! lists), stays out while the object lasts, and comes back when it is deleted; and an
//! endpoint much slower than its siblings is held out of its Service's rotation.

mod support;
use std::time::{Duration, Instant};
use support::backend::Backend;
use support::*;

/// Waits until `ok` holds (checked every 50 ms), at most `secs` seconds.
async fn until(what: &str, secs: u64, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn adjustments(c: &TestClient, admin: std::net::SocketAddr) -> Vec<serde_json::Value> {
    get(c, admin, "localhost", "/adjustments").await.json()["adjustments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

const GATEWAY: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 8080, protocol: HTTP}]
";

fn service(name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_by_an_object() {
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let manifests = format!(
        "{GATEWAY}{}{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [web.example]
  rules:
  - backendRefs: [{{name: stable, port: 80, weight: 70}}, {{name: canary, port: 80, weight: 30}}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: rollout, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}}]
  canaryRollback: {{minErrorRatio: 0.2, minRequests: 10, interval: 1s, holdFor: 5m}}
{}{}",
        service("stable"),
        service("canary"),
        stable.slice("stable"),
        canary.slice("canary"),
    );
    let (p, ports) = start_proxy(
        &[("classes.yaml", CLASSES), ("app.yaml", &manifests)],
        &[8080],
    )
    .await;
    let c = client();
    for _ in 0..100 {
        assert_eq!(get(&c, ports[0], "web.example", "/").await.status, 200);
    }
    assert!(canary.hits() > 10, "the canary takes its share");
    assert!(
        adjustments(&c, p.admin).await.is_empty(),
        "a healthy canary stays"
    );

    canary.set_status(500);
    until("the rollback", 20, async || {
        for _ in 0..20 {
            get(&c, ports[0], "web.example", "/").await;
        }
        !adjustments(&c, p.admin).await.is_empty()
    })
    .await;
    let made = adjustments(&c, p.admin).await;
    let spec = &made[0]["spec"];
    assert_eq!(made[0]["name"], "default/rollback-web-canary", "{made:?}");
    assert_eq!(
        (
            spec["action"].as_str(),
            spec["service"].as_str(),
            spec["route"].as_str(),
            spec["weight"].as_u64()
        ),
        (Some("SetWeight"), Some("canary"), Some("web"), Some(0)),
        "{made:?}"
    );
    assert!(
        spec["reason"]
            .as_str()
            .is_some_and(|r| r.contains("requests failed")),
        "{made:?}"
    );
    assert!(spec["expiresAt"].is_string(), "{made:?}");

    // Served as config: every request now goes to the stable backend.
    until("the rollback to be served", 10, async || {
        let before = canary.hits();
        for _ in 0..20 {
            get(&c, ports[0], "web.example", "/").await;
        }
        canary.hits() == before
    })
    .await;
    let before = canary.hits();
    for _ in 0..100 {
        let r = get(&c, ports[0], "web.example", "/").await;
        assert_eq!((r.status, r.body.as_str()), (200, "stable"));
    }
    assert_eq!(canary.hits(), before);
    let metrics = get(&c, p.admin, "localhost", "/metrics").await.body;
    assert!(
        metrics.contains("gatehouse_canary_rollbacks_total 1"),
        "{metrics}"
    );
    let config = get(&c, p.admin, "localhost", "/config").await.body;
    assert!(
        config.contains("set to 0 by a TrafficAdjustment"),
        "{config}"
    );

    // Undone through the admin API: the canary is back.
    canary.set_status(200);
    let r = send(
        &c,
        "DELETE",
        p.admin,
        "localhost",
        "/adjustments/default/rollback-web-canary",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    until("the canary back in rotation", 10, async || {
        for _ in 0..20 {
            get(&c, ports[0], "web.example", "/").await;
        }
        canary.hits() > before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_is_held_out_by_an_object() {
    let fast: Vec<Backend> = vec![Backend::start("a").await, Backend::start("b").await];
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(60));
    let manifests = format!(
        "{GATEWAY}{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app.example]
  rules:
  - backendRefs: [{{name: app, port: 80}}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: latency, namespace: default}}
spec:
  targetRefs: [{{kind: Service, name: app}}]
  outlierDetection: {{latencyFactor: 3, latencyMinRequests: 5, latencyInterval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 50}}
{}",
        service("app"),
        fast[0].slice("app") + &fast[1].slice("app") + &slow.slice("app"),
    );
    let (p, ports) = start_proxy(
        &[("classes.yaml", CLASSES), ("app.yaml", &manifests)],
        &[8080],
    )
    .await;
    let c = client();
    until("the slow endpoint held out", 30, async || {
        for _ in 0..15 {
            assert_eq!(get(&c, ports[0], "app.example", "/").await.status, 200);
        }
        !adjustments(&c, p.admin).await.is_empty()
    })
    .await;
    let made = adjustments(&c, p.admin).await;
    assert_eq!(made.len(), 1, "only the slow one: {made:?}");
    let spec = &made[0]["spec"];
    assert_eq!(spec["action"], "EjectEndpoint");
    assert_eq!(spec["service"], "app");
    assert_eq!(spec["endpoint"], slow.addr.to_string(), "{made:?}");
    assert!(
        spec["reason"]
            .as_str()
            .is_some_and(|r| r.contains("times the median")),
        "{made:?}"
    );
    until("the hold to be served", 10, async || {
        let before = slow.hits();
        for _ in 0..10 {
            get(&c, ports[0], "app.example", "/").await;
        }
        slow.hits() == before
    })
    .await;
    let before = slow.hits();
    for _ in 0..60 {
        let r = get(&c, ports[0], "app.example", "/").await;
        assert_eq!(r.status, 200);
        assert_ne!(r.body, "slow");
    }
    assert_eq!(slow.hits(), before, "the slow endpoint gets nothing");
    let metrics = get(&c, p.admin, "localhost", "/metrics").await.body;
    assert!(
        metrics.contains("gatehouse_endpoints_held_out_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "gatehouse_upstream_endpoints{cluster=\"default/app:80\",state=\"held_out\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("gatehouse_upstream_endpoints{cluster=\"default/app:80\",state=\"ready\"} 2"),
        "{metrics}"
    );
    let ok = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "gatehouse_upstream_requests_total{cluster=\"default/app:80\",outcome=\"ok\"} ",
            )
        })
        .and_then(|v| v.parse::<u64>().ok());
    assert!(ok.is_some_and(|n| n >= 60), "RED per cluster: {metrics}");
}

/// On a cluster the adjustment is an API object: the controller writes it, every
/// replica's watchers bring it back and serve it, and `kubectl delete` undoes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_an_adjustment_is_an_api_object() {
    use serde_json::json;
    let api = support::apiserver::ApiServer::start().await;
    let fast = [Backend::start("a").await, Backend::start("b").await];
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(60));
    let mut objects = vec![
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "gatehouse", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "gatehouse.dev/ingress-controller"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "app", "namespace": "default"},
            "spec": {"rules": [{"host": "app.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "BackendTrafficPolicy",
            "metadata": {"name": "latency", "namespace": "default"},
            "spec": {"targetRefs": [{"kind": "Service", "name": "app"}],
                "outlierDetection": {"latencyFactor": 3.0, "latencyMinRequests": 5, "latencyInterval": "1s",
                    "baseEjectionTime": "5m", "maxEjectionPercent": 50}}}),
    ];
    for (i, b) in fast.iter().chain([&slow]).enumerate() {
        objects.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("app-{i}"), "namespace": "default", "labels": {"kubernetes.io/service-name": "app"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": b.addr.port()}],
            "endpoints": [{"addresses": [b.addr.ip().to_string()], "conditions": {"ready": true}}]}));
    }
    for o in objects {
        api.apply(o);
    }
    let (running, http) = start_on_api(&api).await;
    let c = client();
    let name = format!(
        "eject-app-{}",
        slow.addr.to_string().replace(['.', ':'], "-")
    );
    until("the adjustment in the API", 30, async || {
        for _ in 0..15 {
            get(&c, http, "app.test", "/").await;
        }
        api.get(
            "gatehouse.dev/v1alpha1",
            "TrafficAdjustment",
            "default",
            &name,
        )
        .is_some()
    })
    .await;
    let object = api
        .get(
            "gatehouse.dev/v1alpha1",
            "TrafficAdjustment",
            "default",
            &name,
        )
        .unwrap_or_default();
    assert_eq!(object["spec"]["action"], "EjectEndpoint", "{object}");
    assert_eq!(
        object["spec"]["endpoint"],
        slow.addr.to_string(),
        "{object}"
    );
    assert_eq!(
        object["metadata"]["labels"]["gatehouse.dev/made-by"], "traffic-controls",
        "{object}"
    );
    // Served from the API's copy: the slow endpoint is out.
    until("the hold to be served", 10, async || {
        let before = slow.hits();
        for _ in 0..10 {
            get(&c, http, "app.test", "/").await;
        }
        slow.hits() == before
    })
    .await;

    // `kubectl delete trafficadjustment`: back in rotation (and no longer slow, so not
    // held out again).
    slow.set_delay(Duration::ZERO);
    api.delete(
        "gatehouse.dev/v1alpha1",
        "TrafficAdjustment",
        "default",
        &name,
    );
    until("the endpoint back", 10, async || {
        let before = slow.hits();
        for _ in 0..10 {
            get(&c, http, "app.test", "/").await;
        }
        slow.hits() > before
    })
    .await;
    running.shutdown().await;
}
