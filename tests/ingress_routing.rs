//! Ingress semantics over real sockets: class selection, hosts (exact, wildcard,
//! catch-all), path types and precedence, defaultBackend, named ports, normalisation,
//! and clean 400/404/503 answers.

mod support;
use support::*;

fn ingress(name: &str, extra_meta: &str, spec: &str) -> String {
    format!("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n{extra_meta}spec:\n{spec}")
}

#[tokio::test]
async fn ingress_routing_matrix() {
    let (a, b, c, d) = (
        echo("a").await,
        echo("b").await,
        echo("c").await,
        echo("d").await,
    );
    let services = [
        service("default", "svc-a", a, None),
        service("default", "svc-b", b, None),
        service("default", "svc-c", c, None),
        service("default", "svc-d", d, None),
    ]
    .concat();
    let main = ingress(
        "main",
        "  creationTimestamp: \"2024-01-01T00:00:00Z\"\n",
        "  rules:
  - host: foo.example
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: svc-a, port: {number: 80}}}}
      - {path: /app, pathType: Prefix, backend: {service: {name: svc-b, port: {name: http}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: svc-c, port: {number: 80}}}}
  - host: \"*.wild.example\"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-d, port: {number: 80}}}}
      - {path: /impl, pathType: ImplementationSpecific, backend: {service: {name: svc-a, port: {number: 80}}}}
  - http:
      paths:
      - {path: /any, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}
      - {path: /missing, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}
",
    );
    // A newer Ingress with the same host and path loses the tie to the older one.
    let newer = ingress(
        "newer",
        "  creationTimestamp: \"2025-01-01T00:00:00Z\"\n",
        "  rules:
  - host: foo.example
    http:
      paths:
      - {path: /app, pathType: Prefix, backend: {service: {name: svc-d, port: {number: 80}}}}
      - {path: /app/deeper, pathType: Prefix, backend: {service: {name: svc-d, port: {number: 80}}}}
",
    );
    let other_class = ingress(
        "other",
        "",
        "  ingressClassName: nginx
  rules:
  - host: ignored.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}
",
    );
    let all = [services, main, newer, other_class].concat();
    let (p, _) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[]).await;
    let cl = client();
    let cases: &[(&str, &str, &str)] = &[
        ("foo.example", "/exact", "a"),
        ("foo.example", "/exact/", "c"),
        ("foo.example", "/exactly", "c"),
        ("foo.example", "/app", "b"),
        ("foo.example", "/app/", "b"),
        ("foo.example", "/app/x/y", "b"),
        ("foo.example", "/apple", "c"),
        ("foo.example", "/app/deeper/x", "d"),
        ("foo.example", "/", "c"),
        ("FOO.example:1234", "/app", "b"),
        ("x.wild.example", "/", "d"),
        ("x.wild.example", "/impl/z", "a"),
        ("other.example", "/any/thing", "a"),
        // Normalised before routing: no way around /exact's rule by dot-segments.
        ("foo.example", "/app/../exact", "a"),
        ("foo.example", "/x/%2e%2E/exact", "a"),
        ("foo.example", "/%61pp", "b"),
    ];
    for (host, path, want) in cases {
        let r = get(&cl, p.http, host, path).await;
        assert_eq!(r.status, 200, "{host}{path}: {}", r.body);
        assert_eq!(r.service(), *want, "{host}{path}");
    }
    let r = get(&cl, p.http, "foo.example", "/app/../exact?q=1").await;
    assert_eq!(
        r.json()["path"],
        "/exact?q=1",
        "backend receives the normalised path"
    );
    for (host, path) in [
        ("a.b.wild.example", "/"),
        ("wild.example", "/"),
        ("ignored.example", "/"),
        ("other.example", "/none"),
    ] {
        let r = get(&cl, p.http, host, path).await;
        assert_eq!(r.status, 404, "{host}{path} should not route: {}", r.body);
        let rid = r.header("x-request-id").expect("request id");
        assert!(
            r.body.contains(&rid),
            "404 names the request id: {}",
            r.body
        );
    }
    let r = get(&cl, p.http, "other.example", "/missing").await;
    assert_eq!(r.status, 503, "missing Service: {}", r.body);
    assert!(r.body.contains("nope"), "{}", r.body);
    // Forwarding headers.
    let r = send(
        &cl,
        "GET",
        p.http,
        "foo.example",
        "/",
        &[
            ("x-forwarded-for", "10.1.2.3"),
            ("connection", "x-drop"),
            ("x-drop", "1"),
        ],
    )
    .await;
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("10.1.2.3, 127.0.0.1")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(r.upstream_header("via").as_deref(), Some("1.1 gatehouse"));
    assert_eq!(r.upstream_header("host").as_deref(), Some("foo.example"));
    assert!(
        r.upstream_header("x-drop").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(r.upstream_header("x-request-id"), r.header("x-request-id"));
    // Only WebSocket upgrades are forwarded; an h2c upgrade could tunnel past routing.
    let r = send(
        &cl,
        "GET",
        p.http,
        "foo.example",
        "/",
        &[
            ("connection", "upgrade, http2-settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.upstream_header("upgrade").is_none() && r.upstream_header("http2-settings").is_none(),
        "{}",
        r.body
    );
    let r = send(
        &cl,
        "GET",
        p.http,
        "foo.example",
        "/",
        &[("x-request-id", "my-id-1")],
    )
    .await;
    assert_eq!(r.header("x-request-id").as_deref(), Some("my-id-1"));
    p.running.shutdown().await;
}

#[tokio::test]
async fn default_backend_and_malformed_requests() {
    let (a, d) = (echo("a").await, echo("d").await);
    let all = [
        service("default", "svc-a", a, None),
        service("default", "svc-d", d, None),
        ingress(
            "main",
            "",
            "  defaultBackend: {service: {name: svc-d, port: {number: 80}}}
  rules:
  - host: foo.example
    http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}
",
        ),
    ]
    .concat();
    let (p, _) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[]).await;
    let cl = client();
    assert_eq!(get(&cl, p.http, "foo.example", "/a").await.service(), "a");
    assert_eq!(get(&cl, p.http, "foo.example", "/b").await.service(), "d");
    assert_eq!(
        get(&cl, p.http, "unknown.example", "/").await.service(),
        "d"
    );
    let no_host = raw(p.http, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    let bad_pct = raw(
        p.http,
        b"GET /a%zz HTTP/1.1\r\nHost: foo.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(bad_pct.starts_with("HTTP/1.1 400"), "{bad_pct}");
    for path in ["/x/..;/a", "/x/..%5Ca"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: foo.example\r\nConnection: close\r\n\r\n");
        let resp = raw(p.http, req.as_bytes()).await;
        if path.contains(';') {
            assert!(
                resp.starts_with("HTTP/1.1 200") && resp.contains("\"service\": \"a\""),
                "..; is a dot-segment: {resp}"
            );
        } else {
            assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
        }
    }
    let ctl = raw(p.http, b"GET /a\x01b HTTP/1.1\r\nHost: foo.example\r\n\r\n").await;
    assert!(ctl.starts_with("HTTP/1.1 400"), "{ctl}");
    let both = raw(p.http, b"POST /a HTTP/1.1\r\nHost: foo.example\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd").await;
    assert!(both.starts_with("HTTP/1.1 400"), "{both}");
    p.running.shutdown().await;
}

#[tokio::test]
async fn size_limits() {
    let a = echo("a").await;
    let all = [
        service("default", "svc-a", a, None),
        ingress(
            "main",
            "",
            "  rules:\n  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}]}\n",
        ),
    ]
    .concat();
    let cfg = gatehouse_proxy::ProxyConfig {
        max_body_bytes: 1024,
        ..Default::default()
    };
    let (p, _) = start_proxy_with(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[], cfg).await;
    let small = raw(
        p.http,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(
        small.starts_with("HTTP/1.1 200") && small.contains("\"bodyBytes\": 5"),
        "{small}"
    );
    let declared = raw(
        p.http,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    let mut chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n".to_vec();
    chunked.extend(std::iter::repeat_n(b'x', 2048));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let streamed = raw(p.http, &chunked).await;
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    let mut big_head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big_head.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big_head.extend_from_slice(b"\r\n\r\n");
    let head = raw(p.http, &big_head).await;
    assert!(
        head.starts_with("HTTP/1.1 431"),
        "{}",
        &head[..head.len().min(200)]
    );
    p.running.shutdown().await;
}
