//! The Kubernetes source through the real kube-rs client, against the in-test API server
//! (`support/apiserver.rs`): initial sync, add/modify/delete, endpoint churn, watch
//! expiry with re-list, API server outage and recovery, Gateway API kinds and the TLS
//! Secret field selector.

mod support;
use gatehouse::app::{start_kubernetes, Running};
use gatehouse_translate::ListenMapEntry;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::apiserver::ApiServer;
use support::*;

fn ingress_class() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "gatehouse", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "gatehouse.dev/ingress-controller"}})
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}})
}

fn endpoints(service: &str, backends: &[SocketAddr]) -> Value {
    let port = backends.first().map(|b| b.port()).unwrap_or(1);
    let eps: Vec<Value> = backends
        .iter()
        .map(|b| json!({"addresses": [b.ip().to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": port}], "endpoints": eps})
}

fn ingress(name: &str, host: &str, service: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": "default"},
        "spec": {"rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}

async fn start(api: &ApiServer, listen_map: Vec<ListenMapEntry>) -> (Running, SocketAddr) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let http = free_addr();
    let opts = kube_options(loopback_translate(http, listen_map), None);
    (
        start_kubernetes(api.client(), opts).await.expect("start"),
        http,
    )
}

/// Polls until `host/` on `addr` is answered by `want` ("404" for no route).
async fn eventually(addr: SocketAddr, host: &str, want: &str, within: Duration) -> Duration {
    let cl = client();
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < within {
        let req = http::Request::get(format!("http://{addr}/"))
            .header("host", host)
            .body(Default::default());
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(2), cl.request(req.expect("req"))).await
        {
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            last = if status == 200 {
                v["service"].as_str().unwrap_or("").to_string()
            } else {
                status.to_string()
            };
            if last == want {
                return t.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{host} never answered {want:?} (last: {last:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_follows_the_api_through_churn_expiry_and_outage() {
    let api = ApiServer::start().await;
    let (a, b) = (echo("a").await, echo("b").await);
    api.apply(ingress_class());
    api.apply(service("svc-a"));
    api.apply(endpoints("svc-a", &[a]));
    api.apply(ingress("app", "app.example", "svc-a"));
    let (running, http) = start(&api, vec![]).await;

    // Initial sync.
    eventually(http, "app.example", "a", Duration::from_secs(10)).await;
    let cl = client();
    assert_eq!(
        get(&cl, running.admin_addr, "admin", "/readyz")
            .await
            .status,
        200
    );

    // Add and modify.
    api.apply(service("svc-b"));
    api.apply(endpoints("svc-b", &[b]));
    api.apply(ingress("app", "app.example", "svc-b"));
    let took = eventually(http, "app.example", "b", Duration::from_secs(5)).await;
    println!("watch event to serving: {took:?}");

    // Endpoint churn: svc-b's endpoints move to backend a's address and back. Only
    // EndpointSlices change, so endpoints swap in place with no new Snapshot.
    let counters = &running.dataplane.metrics.counters;
    let count = || {
        (
            running.version(),
            counters.config_full_total.load(Ordering::Relaxed),
            counters.config_incremental_total.load(Ordering::Relaxed),
            counters.endpoint_updates_total.load(Ordering::Relaxed),
        )
    };
    // Changes of one step can reach the store before their pass runs (the Ingress's
    // pass may already see svc-b), so a pass for them may follow "b" being served:
    // wait for the passes to settle first.
    let mut settled = count();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = count();
        if now.0 == settled.0 {
            break;
        }
        settled = now;
    }
    let before = count();
    api.apply(endpoints("svc-b", &[a]));
    let took = eventually(http, "app.example", "a", Duration::from_secs(5)).await;
    println!("endpoint change to serving: {took:?}");
    api.apply(endpoints("svc-b", &[b]));
    eventually(http, "app.example", "b", Duration::from_secs(5)).await;
    // The only new Snapshot allowed is the reconciling full pass that follows the
    // incremental update above, which may land meanwhile (its version shows a moment
    // before its count does, so look again if they disagree).
    let mut after = count();
    for _ in 0..20 {
        if after.0 - before.0 == after.1 - before.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        after = count();
    }
    assert_eq!(
        after.0 - before.0,
        after.1 - before.1,
        "endpoint-only changes patch the Snapshot in place: {before:?} -> {after:?}"
    );
    assert_eq!(after.2, before.2, "no incremental Snapshot either");
    assert!(after.3 >= before.3 + 2, "both changes went in place");

    // Delete.
    api.delete("networking.k8s.io/v1", "Ingress", "default", "app");
    eventually(http, "app.example", "404", Duration::from_secs(5)).await;

    // Watch expiry: while the watches are cut, a change lands and the history is
    // compacted, so resuming from the old version gets 410 Gone and the watchers
    // re-list, seeing what changed meanwhile.
    let ingresses = "apis/networking.k8s.io/v1/ingresses";
    let (lists_before, _) = api.requests(ingresses);
    api.set_down(true);
    api.apply(ingress("again", "again.example", "svc-a"));
    api.compact();
    api.set_down(false);
    let took = eventually(http, "again.example", "a", Duration::from_secs(30)).await;
    let (lists_after, watches) = api.requests(ingresses);
    assert!(
        lists_after > lists_before,
        "a re-list followed 410 Gone ({lists_before} → {lists_after} lists, {watches} watches)"
    );
    println!("recovered from 410 Gone by re-listing in {took:?}");
    // Bookmarks and plain watch drops resume without a re-list.
    api.bookmark();
    api.drop_watches();
    api.apply(ingress("third", "third.example", "svc-b"));
    eventually(http, "third.example", "b", Duration::from_secs(10)).await;

    // Outage: the last good config keeps serving; changes made while the API server
    // was unreachable arrive after it recovers.
    api.set_down(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&cl, http, "again.example", "/").await.service(), "a");
    api.set_down(false);
    api.apply(ingress("after", "after.example", "svc-a"));
    eventually(http, "after.example", "a", Duration::from_secs(30)).await;
    assert_eq!(get(&cl, http, "third.example", "/").await.service(), "b");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_kinds_and_tls_secrets_from_the_api() {
    let api = ApiServer::start().await;
    let web = echo("web").await;
    api.apply(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "gatehouse"}, "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}));
    api.apply(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "gatehouse", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}));
    api.apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["gw.example"],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
    );
    api.apply(service("web"));
    api.apply(endpoints("web", &[web]));
    // Only TLS Secrets are watched (field selector); an Opaque one is never seen.
    api.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "opaque", "namespace": "default"},
        "type": "Opaque", "data": {"password": "c2VjcmV0"}}));
    let gw_addr = free_addr();
    let (running, _) = start(
        &api,
        vec![ListenMapEntry {
            gateway: None,
            port: 80,
            addr: gw_addr,
        }],
    )
    .await;
    eventually(gw_addr, "gw.example", "web", Duration::from_secs(10)).await;
    let config = get(&client(), running.admin_addr, "admin", "/config")
        .await
        .json();
    assert_eq!(config["summary"]["gateways"], 1);
    assert_eq!(config["summary"]["http_routes"], 1);
    assert_eq!(config["summary"]["secrets"], 0, "{config}");
    // A route change among others applies without touching the rest.
    api.apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r2", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["new.example"],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
    );
    eventually(gw_addr, "new.example", "web", Duration::from_secs(5)).await;
    eventually(gw_addr, "gw.example", "web", Duration::from_secs(1)).await;

    // GRPCRoutes are watched too: added, then deleted.
    let grpc_routes = |running: &Running| {
        let running_admin = running.admin_addr;
        async move {
            get(&client(), running_admin, "admin", "/config")
                .await
                .json()["summary"]["grpc_routes"]
                .as_u64()
        }
    };
    api.apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "g", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["grpc.example"],
            "rules": [{"matches": [{"method": {"service": "echo.Echo"}}],
                "backendRefs": [{"name": "web", "port": 80}]}]}}),
    );
    let t = std::time::Instant::now();
    while grpc_routes(&running).await != Some(1) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "GRPCRoute never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.delete("gateway.networking.k8s.io/v1", "GRPCRoute", "default", "g");
    while grpc_routes(&running).await != Some(0) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "GRPCRoute never removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
}

/// An HTTP/1.1 backend that answers every request after `delay`.
async fn slow_backend(delay: Duration) -> SocketAddr {
    listen(move |mut s| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(delay).await;
            let body = r#"{"service":"slow"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).await.is_err() {
                break;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_do_not_block_sync_and_policies_apply_once_installed() {
    let api = ApiServer::start().await;
    // A cluster with neither Gatehouse's CRDs nor GRPCRoute installed.
    api.set_served("gatehouse.dev/v1alpha1", "BackendTrafficPolicy", false);
    api.set_served("gateway.networking.k8s.io/v1", "GRPCRoute", false);
    let slow = slow_backend(Duration::from_millis(400)).await;
    api.apply(ingress_class());
    api.apply(service("slow"));
    api.apply(endpoints("slow", &[slow]));
    api.apply(ingress("slow", "slow.example", "slow"));
    let (running, http) = start(&api, vec![]).await;
    eventually(http, "slow.example", "slow", Duration::from_secs(10)).await;
    assert_eq!(
        get(&client(), running.admin_addr, "admin", "/readyz")
            .await
            .status,
        200,
        "ready although two kinds are not served"
    );

    // The CRD is installed and a policy caps requests in flight to the Service at 1.
    api.set_served("gatehouse.dev/v1alpha1", "BackendTrafficPolicy", true);
    api.apply(
        json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "BackendTrafficPolicy",
        "metadata": {"name": "cap", "namespace": "default"},
        "spec": {"targetRefs": [{"kind": "Service", "name": "slow"}],
            "loadBalancer": {"type": "LeastRequest"}, "circuitBreaker": {"maxRequests": 1}}}),
    );
    let t = Instant::now();
    loop {
        let config = get(&client(), running.admin_addr, "admin", "/config")
            .await
            .json();
        let policy = config["clusters"][0]["policy"].clone();
        if policy["max_requests"] == 1 {
            assert_eq!(policy["balancer"], "LeastRequest");
            assert_eq!(policy["from"], "default/cap");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the policy never applied: {config}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two requests at once: one goes through, the other is refused at once.
    let (a, b) = tokio::join!(
        async { get(&client(), http, "slow.example", "/").await },
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            get(&client(), http, "slow.example", "/").await
        }
    );
    assert_eq!(a.status, 200);
    assert_eq!(b.status, 503);
    assert_eq!(
        b.header("x-gatehouse-reason").as_deref(),
        Some("circuit-breaker-max-requests")
    );
    // Once the first has finished, the next is admitted.
    assert_eq!(get(&client(), http, "slow.example", "/").await.status, 200);
    running.shutdown().await;
}
