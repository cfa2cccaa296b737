//! The `gatehouse` binary itself: `validate` exit codes and messages, a bad start-up
//! config, and graceful drain of in-flight requests on SIGTERM.

mod support;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

#[test]
fn validate_accepts_the_quickstart_and_names_bad_fields() {
    let out = Command::new(BIN)
        .args(["validate", "examples/quickstart"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let dir = tempfile::tempdir().expect("dir");
    let bad = "# a comment line
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
spec:
  rules:
  - host: shop.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
      - path: /x
        pathType: Sometimes
        backend: {service: {name: web, port: {number: 80}}}
";
    write(dir.path(), "classes.yaml", CLASSES);
    write(dir.path(), "bad.yaml", bad);
    write(
        dir.path(),
        "syntax.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
    );
    let out = Command::new(BIN)
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:16: Ingress shop/web: field spec.rules[0].http.paths[1].pathType: unsupported pathType \"Sometimes\""),
        "{err}"
    );
    assert!(
        err.contains("syntax.yaml:"),
        "every file's errors are reported: {err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn run_refuses_a_bad_config_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    write(
        dir.path(),
        "x.yaml",
        "apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: old}\n",
    );
    let out = Command::new(BIN)
        .args([
            "run",
            "--no-watch",
            "--admin-addr",
            "127.0.0.1:0",
            "--http-addr",
        ])
        .arg(free_addr().to_string())
        .arg("--config")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("x.yaml:1: Ingress old: field apiVersion"),
        "{err}"
    );
}

/// A backend that answers after `delay`.
async fn slow_backend(delay: Duration) -> std::net::SocketAddr {
    listen(move |s| async move {
        let svc = hyper::service::service_fn(move |_req| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from("slow but done"),
            )))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    })
    .await
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let backend = slow_backend(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().expect("dir");
    let ing = "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: slow, namespace: default}\nspec:\n  rules:\n  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: slow, port: {number: 80}}}}]}\n";
    write(
        dir.path(),
        "all.yaml",
        &[CLASSES, &service("default", "slow", backend, None), ing].concat(),
    );
    let (http, admin) = (free_addr(), free_addr());
    let mut child = Command::new(BIN)
        .args(["run", "--no-watch", "--drain-timeout", "10"])
        .arg("--config")
        .arg(dir.path())
        .args([
            "--http-addr",
            &http.to_string(),
            "--https-addr",
            &free_addr().to_string(),
            "--admin-addr",
            &admin.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let cl = client();
    let t = Instant::now();
    loop {
        let req = http::Request::get(format!("http://{admin}/readyz"))
            .body(Default::default())
            .expect("req");
        if matches!(cl.request(req).await, Ok(r) if r.status() == 200) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "gatehouse never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_flight = tokio::spawn(async move { get(&client(), http, "any", "/").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let resp = in_flight.await.expect("request task");
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "slow but done"),
        "in-flight request finished"
    );
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("gatehouse did not exit after draining");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "listener closed after shutdown"
    );
}
