//! Hot reload over real sockets: manifests change under concurrent keep-alive load with
//! zero failed requests; bad manifests are rejected and the last good config keeps
//! serving; new listeners appear without a restart.

mod support;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

fn app_ingress(svc: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: app, namespace: default}}\nspec:\n  rules:\n  - host: app.example\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: {svc}, port: {{number: 80}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing_and_bad_config_is_rejected() {
    let (a, b) = (echo("a").await, echo("b").await);
    let services = [
        service("default", "svc-a", a, None),
        service("default", "svc-b", b, None),
    ]
    .concat();
    let (p, ports) = start_proxy(
        &[
            ("classes.yaml", CLASSES),
            ("services.yaml", &services),
            ("app.yaml", &app_ingress("svc-a")),
        ],
        &[9000],
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let total = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, failures, total, seen, http) = (
            stop.clone(),
            failures.clone(),
            total.clone(),
            seen.clone(),
            p.http,
        );
        workers.push(tokio::spawn(async move {
            let cl = client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(format!("http://{http}/"))
                    .header("host", "app.example")
                    .body(Default::default());
                let Ok(req) = req else { continue };
                match cl.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = http_body_util::BodyExt::collect(resp.into_body())
                            .await
                            .map(|b| b.to_bytes());
                        match body {
                            Ok(body) if status == 200 => {
                                let v: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                seen.lock()
                                    .expect("lock")
                                    .insert(v["service"].as_str().unwrap_or("?").to_string());
                            }
                            Ok(body) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("{status}: {}", String::from_utf8_lossy(&body))),
                            Err(e) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("body error: {e}")),
                        }
                    }
                    Err(e) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("request error: {e}")),
                }
                total.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut version = 1;
    for i in 0..20 {
        let svc = if i % 2 == 0 { "svc-b" } else { "svc-a" };
        write(p.dir.path(), "app.yaml", &app_ingress(svc));
        version += 1;
        latencies.push(p.wait_version(version).await);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failed requests of {}: {:?}",
        failures.len(),
        total.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    assert!(total.load(Ordering::Relaxed) > 100, "the load actually ran");
    assert_eq!(
        seen.lock()
            .expect("lock")
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    latencies.sort();
    println!(
        "reload latency (write → new config serving): median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    // A syntax error and a bad field are both rejected; the last good config serves on.
    // (A write can reach the watcher as two batches of events, so count from here.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let version = p.running.version();
    let cl = client();
    let last = get(&cl, p.http, "app.example", "/").await.service();
    write(
        p.dir.path(),
        "app.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: app\n",
    );
    write(
        p.dir.path(),
        "bad-field.yaml",
        &app_ingress("svc-a")
            .replace("pathType: Prefix", "pathType: Sometimes")
            .replace("name: app,", "name: app2,"),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        p.running.version(),
        version,
        "a bad config must not be installed"
    );
    let r = get(&cl, p.http, "app.example", "/").await;
    assert_eq!((r.status, r.service()), (200, last));
    let metrics = get(&cl, p.admin, "admin", "/metrics").await.body;
    let rejected = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_config_rejected_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("rejected counter");
    assert!(rejected >= 1, "{metrics}");

    // Fixing it applies again, and a new Gateway listener starts serving without restart.
    std::fs::remove_file(p.dir.path().join("bad-field.yaml")).expect("rm");
    write(p.dir.path(), "app.yaml", &app_ingress("svc-a"));
    let gateway = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: late, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, protocol: HTTP, port: 9000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: late, namespace: default}
spec:
  parentRefs: [{name: late}]
  rules: [{backendRefs: [{name: svc-b, port: 80}]}]
";
    write(p.dir.path(), "late.yaml", gateway);
    let t = std::time::Instant::now();
    loop {
        let ok = tokio::net::TcpStream::connect(ports[0]).await.is_ok();
        if ok && p.running.version() > version {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "new listener never came up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(&cl, ports[0], "any.example", "/").await.service(), "b");
    let config = get(&cl, p.admin, "admin", "/config").await.json();
    assert!(
        config["version"].as_u64().unwrap_or(0) > version,
        "{config}"
    );
    assert_eq!(config["summary"]["gateways"], 1);
    p.running.shutdown().await;
}
