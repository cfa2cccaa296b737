//! BackendTrafficPolicy over real sockets: outlier detection takes an endpoint that
//! keeps failing out of rotation, and `/config` shows it ejected. (The circuit breaker
//! and the policy's path through the Kubernetes API are in `kubernetes_source.rs`.)

mod support;
use std::net::SocketAddr;
use support::backend::endpoint_slice;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 backend that answers every request with 500.
async fn failing_backend() -> SocketAddr {
    listen(|mut s| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let resp = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom";
            if s.write_all(resp.as_bytes()).await.is_err() {
                break;
            }
        }
    })
    .await
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint() {
    let good = echo("good").await;
    let bad = failing_backend().await;
    let manifests = [
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
---
apiVersion: gatehouse.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: app, namespace: default}
spec:
  targetRefs: [{kind: Service, name: app}]
  outlierDetection: {consecutiveErrors: 3, baseEjectionTime: 30s, maxEjectionPercent: 50}
"
        .to_string(),
        endpoint_slice("app", "app-good", good),
        endpoint_slice("app", "app-bad", bad),
    ]
    .concat();
    let (p, _) = start_proxy(&[("classes.yaml", CLASSES), ("app.yaml", &manifests)], &[]).await;
    let cl = client();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&cl, p.http, "app.example", "/").await.status);
    }
    let failures = statuses.iter().filter(|s| **s == 500).count();
    assert_eq!(
        failures, 3,
        "three failures in a row eject the endpoint: {statuses:?}"
    );
    assert!(statuses[10..].iter().all(|s| *s == 200), "{statuses:?}");
    let config = get(&cl, p.admin, "admin", "/config").await.json();
    let cluster = &config["clusters"][0];
    assert_eq!(cluster["ejected"][0], bad.to_string(), "{cluster}");
    assert_eq!(cluster["ejections_total"], 1);
    assert_eq!(cluster["policy"]["outlier"]["consecutive_errors"], 3);

    // A reload builds new clusters; the ejection carries over to them.
    write(
        p.dir.path(),
        "other.yaml",
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other, namespace: default}
spec:
  rules:
  - host: other.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}
",
    );
    p.wait_version(2).await;
    for _ in 0..6 {
        assert_eq!(get(&cl, p.http, "app.example", "/").await.status, 200);
    }
    let config = get(&cl, p.admin, "admin", "/config").await.json();
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["clusters"][0]["ejected"][0], bad.to_string());
}
