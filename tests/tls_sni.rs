//! TLS termination over real sockets with certificates made in the test: SNI picks the
//! certificate (exact, wildcard, default), HTTP/2 by ALPN, HTTP→HTTPS redirect, and a
//! Gateway HTTPS listener.

mod support;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::tls::{handshake, Ca};
use support::*;

fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

#[tokio::test]
async fn sni_selects_certificates_and_alpn_negotiates_h2() {
    let ca = Ca::new();
    let (a_crt, a_key, a_der) = ca.leaf(&["a.example"]);
    let (w_crt, w_key, w_der) = ca.leaf(&["*.wild.example"]);
    let (g_crt, g_key, g_der) = ca.leaf(&["gw.example"]);
    let backend = echo("web").await;
    let ingress = "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: tls, namespace: default}
spec:
  tls:
  - {hosts: [a.example], secretName: a-cert}
  - {hosts: [\"*.wild.example\"], secretName: wild-cert}
  rules:
  - host: a.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: \"*.wild.example\"
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
";
    let gateway = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    hostname: gw.example
    tls: {certificateRefs: [{name: gw-cert}]}
  - name: https-other
    protocol: HTTPS
    port: 443
    hostname: other.example
    tls: {certificateRefs: [{name: a-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
";
    let all = [
        service("default", "web", backend, None),
        tls_secret("a-cert", &a_crt, &a_key),
        tls_secret("wild-cert", &w_crt, &w_key),
        tls_secret("gw-cert", &g_crt, &g_key),
        ingress.to_string(),
        gateway.to_string(),
    ]
    .concat();
    let (p, ports) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[443]).await;

    let (_, leaf) = handshake(&ca, p.https, "a.example", &[b"http/1.1"]).await;
    assert_eq!(leaf, a_der, "exact SNI match");
    let (_, leaf) = handshake(&ca, p.https, "x.wild.example", &[b"http/1.1"]).await;
    assert_eq!(leaf, w_der, "wildcard SNI match");
    let (_, leaf) = handshake(&ca, ports[0], "gw.example", &[b"http/1.1"]).await;
    assert_eq!(leaf, g_der, "Gateway listener certificate");
    // Handshakes are counted by TLS version (the client offers both 1.3 and 1.2).
    let metrics = get(&client(), p.admin, "admin", "/metrics").await.body;
    assert!(
        metrics.contains("gatehouse_tls_handshakes_total{version=\"TLSv1.3\"} 3"),
        "{metrics}"
    );

    // A request whose Host belongs to another listener than its SNI is misdirected.
    let (tls, _) = handshake(&ca, ports[0], "gw.example", &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "other.example")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(
        sender.send_request(req).await.expect("response").status(),
        421
    );
    let req = http::Request::get("/")
        .header("host", "gw.example")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(
        sender.send_request(req).await.expect("response").status(),
        200
    );

    // HTTP/2 over TLS by ALPN, end to end to an HTTP/1.1 backend.
    let (tls, _) = handshake(&ca, p.https, "a.example", &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = http::Request::get("https://a.example/hello")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["headers"]["x-forwarded-proto"], "https");
    assert_eq!(json["path"], "/hello");

    // Plain HTTP to a TLS host redirects to HTTPS with 308, keeping path and query.
    let r = get(&client(), p.http, "a.example", "/p?q=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.example:{}/p?q=1", p.https.port()))
    );
    p.running.shutdown().await;
}

#[tokio::test]
async fn broken_certificate_is_rejected_with_its_location() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = "apiVersion: v1
kind: Secret
metadata: {name: broken, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: not a certificate
  tls.key: not a key
";
    write(dir.path(), "secret.yaml", bad);
    let err = gatehouse::app::validate(dir.path(), &Default::default()).expect_err("must fail");
    let text = format!("{err}");
    assert!(
        text.contains(
            "secret.yaml:6: Secret default/broken: field stringData[tls.crt]: no CERTIFICATE"
        ),
        "{text}"
    );
}
