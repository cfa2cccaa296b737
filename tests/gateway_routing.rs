//! Gateway API semantics over real sockets: HTTPRoute match precedence across routes,
//! header/query/method/regex matches, the four core filters, weighted backends,
//! unresolvable backends (500), ReferenceGrant, allowedRoutes, listener isolation and
//! hostname intersection.

mod support;
use support::*;

fn gateway(name: &str, ns: &str, listeners: &str) -> String {
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  gatewayClassName: gatehouse\n  listeners:\n{listeners}")
}

fn route(name: &str, ns: &str, created: &str, spec: &str) -> String {
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {ns}\n  creationTimestamp: \"{created}\"\nspec:\n{spec}")
}

#[tokio::test]
async fn httproute_matching_and_precedence() {
    let names = ["a", "b", "c", "d", "e"];
    let mut services = String::new();
    for n in names {
        services.push_str(&service(
            "default",
            &format!("svc-{n}"),
            echo(n).await,
            None,
        ));
    }
    let gw = gateway(
        "gw",
        "default",
        "  - {name: http, protocol: HTTP, port: 80}\n",
    );
    let older = route(
        "older",
        "default",
        "2024-01-01T00:00:00Z",
        "  parentRefs: [{name: gw}]
  hostnames: [example.com]
  rules:
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    backendRefs: [{name: svc-b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /prefix/longer/}}]
    backendRefs: [{name: svc-c, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /}
      headers: [{name: version, value: \"2\"}]
    - path: {type: PathPrefix, value: /}
      queryParams: [{name: v, value: \"2\"}]
    backendRefs: [{name: svc-d, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /m}, method: POST}]
    backendRefs: [{name: svc-e, port: 80}]
  - matches: [{path: {type: RegularExpression, value: \"/re/[0-9]+\"}}]
    backendRefs: [{name: svc-c, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /h}
      headers:
      - {name: x-a, value: \"1\"}
      - {name: x-b, type: RegularExpression, value: \"^b+$\"}
    backendRefs: [{name: svc-a, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /h}
      headers: [{name: x-a, value: \"1\"}]
    backendRefs: [{name: svc-b, port: 80}]
",
    );
    // A newer route on the same hostname: merged, and loses ties to the older one.
    let newer = route(
        "newer",
        "default",
        "2025-01-01T00:00:00Z",
        "  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [example.com]
  rules:
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: svc-e, port: 80}]
  - backendRefs: [{name: svc-e, port: 80}]
",
    );
    let all = [services, gw, older, newer].concat();
    let (p, ports) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[80]).await;
    let gw_addr = ports[0];
    let cl = client();
    // (method, path, request headers, backend expected)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("GET", "/exact", &[], "a"),
        ("GET", "/exact/more", &[], "e"),
        ("GET", "/prefix", &[], "b"),
        ("GET", "/prefix/", &[], "b"),
        ("GET", "/prefixed", &[], "e"),
        ("GET", "/prefix/longer", &[], "c"),
        ("GET", "/prefix/longer/x", &[], "c"),
        ("GET", "/anything", &[("version", "2")], "d"),
        ("GET", "/anything?v=2", &[], "d"),
        ("GET", "/anything?v=3", &[], "e"),
        ("POST", "/m", &[], "e"),
        ("GET", "/m", &[], "e"),
        ("GET", "/re/123", &[], "c"),
        ("GET", "/re/12a", &[], "e"),
        ("GET", "/h", &[("x-a", "1"), ("x-b", "bbb")], "a"),
        ("GET", "/h", &[("x-a", "1"), ("x-b", "c")], "b"),
        ("GET", "/h", &[("x-a", "2")], "e"),
        // Exact beats a header match on a shorter prefix.
        ("GET", "/exact", &[("version", "2")], "a"),
    ];
    for (method, path, headers, want) in cases {
        let r = send(&cl, method, gw_addr, "example.com", path, headers).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        assert_eq!(r.service(), *want, "{method} {path} {headers:?}");
    }
    let r = get(&cl, gw_addr, "other.com", "/").await;
    assert_eq!(r.status, 404);
    p.running.shutdown().await;
}

#[tokio::test]
async fn httproute_filters_weights_and_failures() {
    let (a, b) = (echo("a").await, echo("b").await);
    let other_ns = echo("other-ns").await;
    let services = [
        service("default", "svc-a", a, None),
        service("default", "svc-b", b, None),
        service("apps", "svc-x", other_ns, None),
    ]
    .concat();
    let gw = gateway(
        "gw",
        "default",
        "  - {name: http, protocol: HTTP, port: 8080}\n",
    );
    let r1 = route(
        "filters",
        "default",
        "2024-01-01T00:00:00Z",
        "  parentRefs: [{name: gw}]
  hostnames: [filters.example]
  rules:
  - matches: [{path: {value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: set-value}]
        add: [{name: x-add, value: added}]
        remove: [x-remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-resp, value: r}]
        remove: [content-type]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {value: /keep-port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: moved.example}
  - matches: [{path: {value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /split}}]
    backendRefs: [{name: svc-a, port: 80, weight: 3}, {name: svc-b, port: 80, weight: 1}]
  - matches: [{path: {value: /half-broken}}]
    backendRefs: [{name: svc-a, port: 80, weight: 1}, {name: does-not-exist, port: 80, weight: 1}]
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: does-not-exist, port: 80}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: svc-a, port: 80, weight: 0}]
  - matches: [{path: {value: /nobackends}}]
  - matches: [{path: {value: /ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: x.example, kind: Foo, name: bar}}]
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {value: /cross}}]
    backendRefs: [{name: svc-x, namespace: apps, port: 80}]
",
    );
    let all = [services, gw, r1].concat();
    let (p, ports) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[8080]).await;
    let gw_addr = ports[0];
    let cl = client();
    let h = "filters.example";

    let r = send(
        &cl,
        "GET",
        gw_addr,
        h,
        "/headers",
        &[
            ("x-set", "original"),
            ("x-add", "first"),
            ("x-remove", "gone"),
        ],
    )
    .await;
    assert_eq!(r.upstream_header("x-set").as_deref(), Some("set-value"));
    assert!(
        r.upstream_header("x-add")
            .is_some_and(|v| v.contains("first") && v.contains("added")),
        "{}",
        r.body
    );
    assert!(r.upstream_header("x-remove").is_none());
    assert_eq!(r.header("x-resp").as_deref(), Some("r"));
    assert!(
        r.header("content-type").is_none(),
        "response header removed"
    );

    let r = get(&cl, gw_addr, h, "/old/page?x=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://new.example/new/page?x=1")
    );
    let r = get(&cl, gw_addr, h, "/keep-port").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://moved.example:8080/keep-port"),
        "no scheme: listener port kept"
    );

    let r = get(&cl, gw_addr, h, "/api/users?id=7").await;
    assert_eq!(r.json()["path"], "/v2/users?id=7");
    assert_eq!(
        r.upstream_header("host").as_deref(),
        Some("internal.example")
    );
    let r = get(&cl, gw_addr, h, "/full/x").await;
    assert_eq!(r.json()["path"], "/replaced");

    // Weighted 3:1 split, with a statistical tolerance (expected 25% b; ±7 points is
    // over 3 standard deviations for 400 requests).
    let mut b_count = 0;
    for _ in 0..400 {
        let r = get(&cl, gw_addr, h, "/split").await;
        assert_eq!(r.status, 200);
        if r.service() == "b" {
            b_count += 1;
        }
    }
    let share = b_count as f64 / 400.0;
    assert!(
        (0.18..=0.32).contains(&share),
        "b got {share} of traffic, expected 0.25"
    );

    // Half the traffic of a rule with one unresolvable backend gets 500.
    let mut errors = 0;
    for _ in 0..200 {
        let r = get(&cl, gw_addr, h, "/half-broken").await;
        match r.status {
            200 => assert_eq!(r.service(), "a"),
            500 => errors += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(
        (60..=140).contains(&errors),
        "{errors} of 200 got 500, expected about 100"
    );

    for path in ["/missing", "/zero", "/nobackends", "/ext", "/cross"] {
        let r = get(&cl, gw_addr, h, path).await;
        assert_eq!(r.status, 500, "{path}: {}", r.body);
    }

    // A ReferenceGrant in the target namespace makes the cross-namespace backend valid.
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-default, namespace: apps}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: \"\", kind: Service}]
";
    write(p.dir.path(), "grant.yaml", grant);
    p.wait_version(2).await;
    let r = get(&cl, gw_addr, h, "/cross").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.service(), "other-ns");
    p.running.shutdown().await;
}

#[tokio::test]
async fn attachment_allowed_routes_isolation_and_hostnames() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let services = [
        service("default", "svc-a", a, None),
        service("team", "svc-b", b, None),
        service("default", "svc-c", c, None),
    ]
    .concat();
    let ns =
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {shared: \"yes\"}}\n";
    let gw = gateway(
        "gw",
        "default",
        "  - {name: wild, protocol: HTTP, port: 80, hostname: \"*.example.net\"}
  - {name: specific, protocol: HTTP, port: 80, hostname: special.example.net}
  - name: shared
    protocol: HTTP
    port: 81
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {shared: \"yes\"}}
  - {name: same-only, protocol: HTTP, port: 82}
",
    );
    let wild = route(
        "wild",
        "default",
        "2024-01-01T00:00:00Z",
        "  parentRefs: [{name: gw, sectionName: wild}]
  hostnames: [foo.example.net, other.org, special.example.net]
  rules:
  - backendRefs: [{name: svc-a, port: 80}]
",
    );
    let any_host = route(
        "any-host",
        "default",
        "2024-01-01T00:00:00Z",
        "  parentRefs: [{name: gw, sectionName: specific}]
  rules:
  - backendRefs: [{name: svc-c, port: 80}]
",
    );
    let team = route(
        "team",
        "team",
        "2024-01-01T00:00:00Z",
        "  parentRefs: [{name: gw, namespace: default, port: 81}, {name: gw, namespace: default, sectionName: same-only}]
  rules:
  - backendRefs: [{name: svc-b, port: 80}]
",
    );
    let all = [services, ns.to_string(), gw, wild, any_host, team].concat();
    let (p, ports) = start_proxy(
        &[("classes.yaml", CLASSES), ("all.yaml", &all)],
        &[80, 81, 82],
    )
    .await;
    let cl = client();
    // Intersection: foo.example.net is inside *.example.net; other.org is not.
    assert_eq!(
        get(&cl, ports[0], "foo.example.net", "/").await.service(),
        "a"
    );
    assert_eq!(get(&cl, ports[0], "other.org", "/").await.status, 404);
    assert_eq!(get(&cl, ports[0], "bar.example.net", "/").await.status, 404);
    // Listener isolation: special.example.net belongs to the more specific listener, so
    // the wild listener's route for that name is not reachable.
    assert_eq!(
        get(&cl, ports[0], "special.example.net", "/")
            .await
            .service(),
        "c"
    );
    // allowedRoutes: the team namespace matches the selector on port 81, but the
    // same-namespace-only listener on port 82 refuses it.
    assert_eq!(get(&cl, ports[1], "anything", "/").await.service(), "b");
    assert_eq!(get(&cl, ports[2], "anything", "/").await.status, 404);
    p.running.shutdown().await;
}
