//! Table tests of translation alone (no sockets): class selection, validation errors
//! with their fields, endpoint conditions, listener conflicts and route lookup.

use gatehouse_model::manifest::parse_manifest;
use gatehouse_model::{ConfigError, ObjectStore};
use gatehouse_translate::cluster::Balancer;
use gatehouse_translate::routes::RequestView;
use gatehouse_translate::{
    translate, ListenMapEntry, Snapshot, TranslateOptions, UpstreamProtocol,
};
use std::net::SocketAddr;

const CLASSES: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: gatehouse}
spec: {controller: gatehouse.dev/ingress-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
";

fn store(yaml: &str) -> ObjectStore {
    let parsed = parse_manifest("test.yaml", yaml).expect("test manifests parse");
    ObjectStore::from_objects(parsed.objects)
}

fn run(yaml: &str) -> Result<Snapshot, Vec<ConfigError>> {
    translate(&store(yaml), &TranslateOptions::default(), 1)
}

fn errors(yaml: &str) -> Vec<String> {
    match run(yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

/// Route name chosen for host/path on the Ingress HTTP port.
fn route_name(s: &Snapshot, addr: SocketAddr, host: &str, path: &str) -> Option<String> {
    let port = s.port(addr)?;
    let section = port.sections.lookup(host)?;
    let headers = http::HeaderMap::new();
    let view = RequestView {
        method: &http::Method::GET,
        path,
        query: None,
        headers: &headers,
    };
    let table = section.hosts.lookup(host)?;
    table.find(&view).map(|e| e.action.name.to_string())
}

const SVC: &str = "---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports:
  - {name: http, port: 80, targetPort: web-port}
  - {name: grpc, port: 81, targetPort: 9000, appProtocol: kubernetes.io/h2c}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: grpc, port: 9000}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
- addresses: [10.0.0.2]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.0.0.3]
- addresses: [10.0.0.4]
  conditions: {ready: false}
";

fn ingress(name: &str, class_line: &str, backend_port: &str) -> String {
    format!(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default}}
spec:
{class_line}  rules:
  - host: {name}.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: web, port: {backend_port}}}}}
"
    )
}

#[test]
fn ingress_class_selection() {
    let default_class = CLASSES.replace(
        "metadata: {name: gatehouse}\nspec: {controller",
        "metadata: {name: gatehouse, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}\nspec: {controller",
    );
    let other_class = "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n";
    let objects = [
        SVC,
        other_class,
        &ingress("named", "  ingressClassName: gatehouse\n", "{number: 80}"),
        &ingress("other", "  ingressClassName: nginx\n", "{number: 80}"),
        &ingress("classless", "", "{number: 80}"),
    ]
    .concat();
    // Without a default class the classless Ingress is ignored (with a warning).
    let s = run(&[CLASSES, &objects].concat()).expect("valid");
    assert_eq!(s.summary.ingresses, 1);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("Ingress default/classless")),
        "{:?}",
        s.warnings
    );
    // With the default-class annotation it is ours.
    let s = run(&[default_class.as_str(), &objects].concat()).expect("valid");
    assert_eq!(s.summary.ingresses, 2);
    let http = TranslateOptions::default().http_addr;
    assert_eq!(
        route_name(&s, http, "classless.example", "/").as_deref(),
        Some("ingress/default/classless")
    );
    assert_eq!(route_name(&s, http, "other.example", "/"), None);
}

#[test]
fn endpoints_follow_conditions_ports_and_app_protocol() {
    let yaml = [
        CLASSES,
        SVC,
        &ingress("a", "  ingressClassName: gatehouse\n", "{name: http}"),
        &ingress("b", "  ingressClassName: gatehouse\n", "{number: 81}"),
    ]
    .concat();
    let s = run(&yaml).expect("valid");
    let http = &s.clusters["default/web:80"];
    // 10.0.0.3 has no conditions (ready by default); 10.0.0.2 is terminating.
    let eps: Vec<String> = http.endpoints().iter().map(|e| e.to_string()).collect();
    assert_eq!(eps, ["10.0.0.1:8080", "10.0.0.3:8080"]);
    assert_eq!(http.protocol, UpstreamProtocol::Http1);
    let grpc = &s.clusters["default/web:81"];
    assert_eq!(grpc.protocol, UpstreamProtocol::Http2);
    assert_eq!(grpc.endpoints().len(), 2);
    // When nothing is ready, serving-but-terminating endpoints are used.
    let draining = SVC
        .replace("- addresses: [10.0.0.1]\n  conditions: {ready: true}\n", "")
        .replace("- addresses: [10.0.0.3]\n", "");
    let s = run(&[
        CLASSES,
        &draining,
        &ingress("a", "  ingressClassName: gatehouse\n", "{number: 80}"),
    ]
    .concat())
    .expect("valid");
    let eps: Vec<String> = s.clusters["default/web:80"]
        .endpoints()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(eps, ["10.0.0.2:8080"]);
}

#[test]
fn ingress_errors_name_the_field() {
    let bad = "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad, namespace: default}
spec:
  ingressClassName: gatehouse
  rules:
  - host: bad_host!
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: ok.example
    http:
      paths:
      - {path: relative, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /x, pathType: Prefix, backend: {service: {name: web, port: {}}}}
";
    let errs = errors(&[CLASSES, SVC, bad].concat());
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].contains("Ingress default/bad: field spec.rules[0].host: invalid hostname"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains(
            "field spec.rules[1].http.paths[0].path: path \"relative\" must start with '/'"
        ),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("field spec.rules[1].http.paths[1].backend.service.port"),
        "{}",
        errs[2]
    );
}

fn gateway_with(listeners: &str, rules: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: gatehouse
  listeners:
{listeners}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
{rules}"
    )
}

#[test]
fn httproute_errors_name_the_field() {
    let listeners = "  - {name: http, protocol: HTTP, port: 80}\n";
    let cases: &[(&str, &str)] = &[
        ("  - matches: [{path: {type: RegularExpression, value: \"/a(\"}}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].matches[0].path.value: invalid regular expression"),
        ("  - matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].filters[0].urlRewrite.path: ReplacePrefixMatch needs every match"),
        ("  - filters:\n    - {type: URLRewrite, urlRewrite: {hostname: a.example}}\n    - {type: RequestRedirect, requestRedirect: {hostname: b.example}}\n", "spec.rules[0].filters: RequestRedirect and URLRewrite cannot be used together"),
        ("  - timeouts: {request: soon}\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].timeouts.request: invalid duration"),
        ("  - filters: [{type: Teleport}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].filters[0].type: unknown filter type"),
        ("  - matches: [{headers: [{name: \"bad header\", value: x}]}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].matches[0].headers[0].name: invalid header name"),
        ("  - matches: [{method: \"G T\"}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].matches[0].method: invalid method"),
        ("  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 399}}]\n", "spec.rules[0].filters[0].requestRedirect.statusCode: unsupported status 399"),
    ];
    for (rules, want) in cases {
        let errs = errors(&[CLASSES, SVC, &gateway_with(listeners, rules)].concat());
        assert!(
            errs.iter()
                .any(|e| e.contains("HTTPRoute default/r: field ") && e.contains(want)),
            "want {want:?}, got {errs:?}"
        );
    }
    let errs = errors(
        &[
            CLASSES,
            SVC,
            &gateway_with(
                "  - {name: h, protocol: HTTPS, port: 443}\n",
                "  - backendRefs: [{name: web, port: 80}]\n",
            ),
        ]
        .concat(),
    );
    assert!(
        errs.iter()
            .any(|e| e
                .contains("Gateway default/gw: field spec.listeners[0]: HTTPS listener needs tls")),
        "{errs:?}"
    );
    let errs = errors(
        &[
            CLASSES,
            SVC,
            &gateway_with(
                "  - {name: h, protocol: HTTP, port: 80, hostname: \"a..b\"}\n",
                "  - backendRefs: [{name: web, port: 80}]\n",
            ),
        ]
        .concat(),
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("field spec.listeners[0].hostname")),
        "{errs:?}"
    );
}

fn grpc_route(rules: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: g, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
{rules}"
    )
}

#[test]
fn grpcroute_errors_name_the_field() {
    let gw = gateway_with(
        "  - {name: http, protocol: HTTP, port: 80}
",
        "  - backendRefs: [{name: web, port: 80}]
",
    );
    let cases: &[(&str, &str)] = &[
        ("  - matches: [{method: {service: \"bad service\"}}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].matches[0].method.service: invalid gRPC service name"),
        ("  - matches: [{method: {service: a.B, method: \"9x\"}}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].matches[0].method.method: invalid gRPC method name"),
        ("  - matches: [{method: {type: Exact}}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].matches[0].method: an Exact method match needs service or method"),
        ("  - matches: [{method: {type: RegularExpression, method: \"(\"}}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].matches[0].method.method: invalid regular expression"),
        ("  - matches: [{method: {type: Prefix, service: a.B}}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].matches[0].method.type: unsupported method match type"),
        ("  - filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]\n    backendRefs: [{name: web, port: 80}]\n", "spec.rules[0].filters[0].type: filter type \"URLRewrite\" is not allowed in a GRPCRoute"),
    ];
    for (rules, want) in cases {
        let errs = errors(&[CLASSES, SVC, &gw, &grpc_route(rules)].concat());
        assert!(
            errs.iter()
                .any(|e| e.contains("GRPCRoute default/g: field ") && e.contains(want)),
            "want {want:?}, got {errs:?}"
        );
    }
}

#[test]
fn grpcroute_status_kinds_and_h2_backends() {
    let gw = gateway_with(
        "  - {name: http, protocol: HTTP, port: 80}
  - {name: only-http, protocol: HTTP, port: 81, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}
  - {name: tcp-kind, protocol: HTTP, port: 82, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
",
        "  - backendRefs: [{name: web, port: 80}]
",
    );
    let grpc = grpc_route(
        "  - matches: [{method: {service: echo.Echo}}]
    backendRefs: [{name: web, port: 80}]
",
    );
    let s = run(&[CLASSES, SVC, &gw, &grpc].concat()).expect("translates");
    let status = |kind: &str, name: &str| {
        s.statuses
            .values()
            .find(|u| u.kind == kind && u.name == name)
            .map(|u| u.status.value())
            .unwrap_or_default()
    };
    let listeners = &status("Gateway", "gw")["listeners"];
    let kinds = |i: usize| -> Vec<String> {
        listeners[i]["supportedKinds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["kind"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(kinds(0), ["HTTPRoute", "GRPCRoute"]);
    assert_eq!(kinds(1), ["HTTPRoute"]);
    assert_eq!(kinds(2), Vec::<String>::new());
    assert_eq!(listeners[2]["conditions"][2]["reason"], "InvalidRouteKinds");
    assert_eq!(
        listeners[0]["attachedRoutes"], 2,
        "the HTTPRoute and the GRPCRoute"
    );
    assert_eq!(listeners[1]["attachedRoutes"], 1, "only the HTTPRoute");
    let g = status("GRPCRoute", "g");
    assert_eq!(g["parents"][0]["conditions"][0]["status"], "True", "{g}");
    // The Service port has no appProtocol; the GRPCRoute's cluster speaks HTTP/2.
    let h2 = s
        .clusters
        .values()
        .find(|c| c.name.ends_with("/h2c"))
        .expect("an HTTP/2 cluster for the GRPCRoute");
    assert_eq!(h2.protocol, UpstreamProtocol::Http2);
    assert_eq!(s.summary.grpc_routes, 1);
}

fn btp(name: &str, created: &str, spec: &str) -> String {
    format!(
        "---
apiVersion: gatehouse.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {name}, namespace: default, creationTimestamp: '{created}'}}
spec:
{spec}"
    )
}

#[test]
fn backend_traffic_policy_sets_cluster_policy_and_names_bad_fields() {
    let ing = ingress("a", "  ingressClassName: gatehouse\n", "{number: 80}");
    let good = btp(
        "p",
        "2026-01-01T00:00:00Z",
        "  targetRefs: [{kind: Service, name: web}]\n  loadBalancer: {type: LeastRequest}\n  circuitBreaker: {maxRequests: 7}\n",
    );
    let later = btp(
        "q",
        "2026-02-01T00:00:00Z",
        "  targetRefs: [{kind: Service, name: web}]\n  loadBalancer: {type: Random}\n",
    );
    let s = run(&[CLASSES, SVC, &ing, &good, &later].concat()).expect("translates");
    let c = s.clusters.values().next().expect("a cluster");
    assert_eq!(c.policy.balancer, Balancer::LeastRequest);
    assert_eq!(c.policy.max_requests, Some(7));
    assert_eq!(
        c.policy.from.as_deref(),
        Some("default/p"),
        "the oldest wins"
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("BackendTrafficPolicy default/q")
                && w.contains("already has policy default/p")),
        "{:?}",
        s.warnings
    );
    let cases: &[(&str, &str)] = &[
        (
            "  targetRefs: [{kind: Service, name: web}]\n  loadBalancer: {type: Fastest}\n",
            "spec.loadBalancer.type: unknown load balancer \"Fastest\"",
        ),
        (
            "  targetRefs: [{group: apps, kind: Deployment, name: r}]\n",
            "spec.targetRefs[0].kind: unsupported target apps/Deployment",
        ),
        (
            "  targetRefs: [{kind: HTTPRoute, name: r}]\n",
            "spec.targetRefs[0].kind: unsupported target HTTPRoute",
        ),
        (
            "  targetRefs: [{kind: Service, name: web}]\n  circuitBreaker: {maxRequests: 0}\n",
            "spec.circuitBreaker.maxRequests: must be at least 1",
        ),
        (
            "  targetRefs: []\n",
            "spec.targetRefs: at least one target is required",
        ),
        ("  targetRefs: [{kind: Service, name: web}]\n  outlierDetection: {consecutiveErrors: 0}\n", "spec.outlierDetection.consecutiveErrors: must be at least 1"),
        ("  targetRefs: [{kind: Service, name: web}]\n  outlierDetection: {baseEjectionTime: soon}\n", "spec.outlierDetection.baseEjectionTime: invalid duration"),
        ("  targetRefs: [{kind: Service, name: web}]\n  outlierDetection: {maxEjectionPercent: 150}\n", "spec.outlierDetection.maxEjectionPercent: 150 is more than 100"),
        ("  targetRefs: [{kind: Service, name: web}]\n  loadBalancer: {type: ConsistentHash, consistentHash: {type: Header}}\n", "spec.loadBalancer.consistentHash.header: required for type Header"),
        ("  targetRefs: [{kind: Service, name: web}]\n  loadBalancer: {type: ConsistentHash, consistentHash: {type: Moon}}\n", "spec.loadBalancer.consistentHash.type: unknown hash key \"Moon\""),
        ("  targetRefs: [{kind: Service, name: web}]\n  loadBalancer: {type: RoundRobin, slowStart: {window: 0s}}\n", "spec.loadBalancer.slowStart.window: must be more than zero"),
        ("  targetRefs: [{kind: Service, name: web}]\n  sessionPersistence: {cookieName: 'a b'}\n", "spec.sessionPersistence.cookieName: \"a b\" is not a valid cookie name"),
        ("  targetRefs: [{kind: Service, name: web}]\n  circuitBreaker: {maxPendingRequests: 3}\n", "spec.circuitBreaker.maxPendingRequests: needs maxConnections"),
        ("  targetRefs: [{kind: Service, name: web}]\n  circuitBreaker: {maxConnections: 0}\n", "spec.circuitBreaker.maxConnections: must be at least 1"),
        ("  targetRefs: [{kind: Service, name: web}]\n  healthCheck: {type: UDP}\n", "spec.healthCheck.type: unknown health check \"UDP\""),
        ("  targetRefs: [{kind: Service, name: web}]\n  healthCheck: {interval: often}\n", "spec.healthCheck.interval: invalid duration"),
        ("  targetRefs: [{kind: Service, name: web}]\n  healthCheck: {http: {path: health}}\n", "spec.healthCheck.http.path: \"health\" is not an absolute path"),
        ("  targetRefs: [{kind: Service, name: web}]\n  healthCheck: {http: {expectedStatuses: [42]}}\n", "spec.healthCheck.http.expectedStatuses: 42 is not an HTTP status"),
        ("  targetRefs: [{kind: Service, name: web}]\n  healthCheck: {unhealthyThreshold: 0}\n", "spec.healthCheck.unhealthyThreshold: must be at least 1"),
        ("  targetRefs: [{kind: Service, name: web}]\n  retry: {retryOn: [sometimes]}\n", "spec.retry.retryOn[0]: unknown retry condition \"sometimes\""),
        ("  targetRefs: [{kind: Service, name: web}]\n  retry: {attempts: 50}\n", "spec.retry.attempts: 50 is more than 10"),
        ("  targetRefs: [{kind: Service, name: web}]\n  retry: {perTryTimeout: fast}\n", "spec.retry.perTryTimeout: invalid duration"),
        ("  targetRefs: [{kind: Service, name: web}]\n  retry: {backoff: {baseInterval: 1s, maxInterval: 10ms}}\n", "spec.retry.backoff.maxInterval: must be at least baseInterval"),
    ];
    for (spec, want) in cases {
        let errs = errors(
            &[
                CLASSES,
                SVC,
                &ing,
                &btp("bad", "2026-01-01T00:00:00Z", spec),
            ]
            .concat(),
        );
        assert!(
            errs.iter().any(|e| e.contains("BackendTrafficPolicy default/bad: field ") && e.contains(want)),
            "want {want:?}, got {errs:?}"
        );
    }
}

#[test]
fn l4_listeners_take_only_l4_routes() {
    let gw = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: tcp, protocol: TCP, port: 5432}
  - {name: term, protocol: TLS, port: 8443, tls: {mode: Terminate}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
";
    let s = run(&[CLASSES, SVC, gw].concat()).expect("translates");
    let status = |kind: &str, name: &str| {
        s.statuses
            .values()
            .find(|u| u.kind == kind && u.name == name)
            .map(|u| u.status.value())
            .unwrap_or_default()
    };
    let g = status("Gateway", "gw");
    assert_eq!(g["listeners"][0]["supportedKinds"][0]["kind"], "TCPRoute");
    assert_eq!(g["listeners"][0]["attachedRoutes"], 1);
    assert_eq!(
        g["listeners"][1]["conditions"][0]["reason"],
        "UnsupportedValue"
    );
    assert_eq!(
        status("TCPRoute", "t")["parents"][0]["conditions"][0]["status"],
        "True"
    );
    let h = status("HTTPRoute", "h");
    assert_eq!(
        h["parents"][0]["conditions"][0]["reason"], "NotAllowedByListeners",
        "{h}"
    );
    let port = s
        .ports
        .iter()
        .find(|p| p.addr.port() == 5432)
        .expect("TCP port bound");
    assert!(matches!(
        port.l4,
        Some(gatehouse_translate::L4Routes::Tcp(_))
    ));
    assert_eq!(s.summary.tcp_routes, 1);
}

#[test]
fn conflicting_listeners_warn_and_keep_the_first() {
    let second = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw2, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, protocol: HTTP, port: 80}]
";
    let yaml = [
        CLASSES,
        SVC,
        &gateway_with(
            "  - {name: http, protocol: HTTP, port: 80}\n",
            "  - backendRefs: [{name: web, port: 80}]\n",
        ),
        second,
    ]
    .concat();
    let s = run(&yaml).expect("a conflict is not a config error");
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("Gateway default/gw2 listener http not programmed")),
        "{:?}",
        s.warnings
    );
    let addr: SocketAddr = "0.0.0.0:80".parse().expect("addr");
    assert_eq!(
        route_name(&s, addr, "any.example", "/").as_deref(),
        Some("httproute/default/r/rule/0")
    );
}

#[test]
fn listen_map_rebinds_ports() {
    let e: ListenMapEntry = "80=127.0.0.1:8000".parse().expect("parse");
    assert_eq!(
        e,
        ListenMapEntry {
            gateway: None,
            port: 80,
            addr: "127.0.0.1:8000".parse().expect("addr")
        }
    );
    let g: ListenMapEntry = "infra/edge:443=127.0.0.1:8443".parse().expect("parse");
    assert_eq!(g.gateway, Some(("infra".to_string(), "edge".to_string())));
    assert!("x=1".parse::<ListenMapEntry>().is_err());
    assert!("80=nowhere".parse::<ListenMapEntry>().is_err());
    let opts = TranslateOptions {
        listen_map: vec![e, g],
        ..TranslateOptions::default()
    };
    assert_eq!(
        opts.gateway_bind("infra", "edge", 443).to_string(),
        "127.0.0.1:8443"
    );
    assert_eq!(
        opts.gateway_bind("default", "gw", 80).to_string(),
        "127.0.0.1:8000"
    );
    assert_eq!(
        opts.gateway_bind("default", "gw", 443).to_string(),
        "0.0.0.0:443"
    );
}

#[test]
fn translation_is_deterministic() {
    let yaml = [
        CLASSES,
        SVC,
        &ingress("a", "  ingressClassName: gatehouse\n", "{number: 80}"),
        &gateway_with(
            "  - {name: http, protocol: HTTP, port: 80}\n",
            "  - backendRefs: [{name: web, port: 80}]\n",
        ),
    ]
    .concat();
    let a = run(&yaml).expect("valid");
    let b = run(&yaml).expect("valid");
    assert_eq!(a.route_names, b.route_names);
    assert_eq!(
        a.clusters.keys().collect::<Vec<_>>(),
        b.clusters.keys().collect::<Vec<_>>()
    );
}

#[test]
fn lenient_translation_leaves_invalid_objects_out() {
    let bad_route = gateway_with(
        "  - {name: http, protocol: HTTP, port: 80}\n",
        "  - matches: [{path: {type: RegularExpression, value: \"/a(\"}}]\n    backendRefs: [{name: web, port: 80}]\n",
    );
    let yaml = [
        CLASSES,
        SVC,
        &ingress("a", "  ingressClassName: gatehouse\n", "{number: 80}"),
        &bad_route,
    ]
    .concat();
    let objects = store(&yaml);
    assert!(
        translate(&objects, &TranslateOptions::default(), 1).is_err(),
        "strict translation rejects all"
    );
    let (snapshot, rejected) =
        gatehouse_translate::translate_lenient(&objects, &TranslateOptions::default(), 1, None);
    let snapshot = snapshot.expect("the rest translates");
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0]
            .to_string()
            .contains("HTTPRoute default/r: field spec.rules[0].matches[0].path.value"),
        "{}",
        rejected[0]
    );
    let http = TranslateOptions::default().http_addr;
    assert_eq!(
        route_name(&snapshot, http, "a.example", "/").as_deref(),
        Some("ingress/default/a")
    );
    let status = snapshot
        .statuses
        .values()
        .find(|s| s.kind == "HTTPRoute" && s.name == "r")
        .expect("status for the rejected route");
    assert_eq!(
        status.status.value()["parents"][0]["conditions"][0]["status"],
        "False"
    );
    assert_eq!(
        status.status.value()["parents"][0]["parentRef"]["name"],
        "gw"
    );
}

#[test]
fn policies_on_routes_and_gateways_get_their_own_clusters() {
    use gatehouse_translate::cluster::HashOn;
    let listeners = "  - {name: http, protocol: HTTP, port: 80}\n";
    let route = gateway_with(listeners, "  - backendRefs: [{name: web, port: 80}]\n");
    let ing = ingress("a", "  ingressClassName: gatehouse\n", "{number: 80}");
    let on_route = btp(
        "by-route",
        "2026-01-01T00:00:00Z",
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n  loadBalancer: {type: ConsistentHash, consistentHash: {type: Cookie, cookie: user}}\n",
    );
    let on_gateway = btp(
        "by-gateway",
        "2026-01-01T00:00:00Z",
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  retry: {attempts: 3}\n",
    );
    let on_service = btp(
        "by-service",
        "2026-01-01T00:00:00Z",
        "  targetRefs: [{kind: Service, name: web}]\n  loadBalancer: {type: Random}\n",
    );
    // The route's policy wins for the route; the Ingress keeps the Service's.
    let s = run(&[
        CLASSES,
        SVC,
        &ing,
        &route,
        &on_route,
        &on_gateway,
        &on_service,
    ]
    .concat())
    .expect("translates");
    let names: Vec<&str> = s.clusters.keys().map(|k| k.as_ref()).collect();
    assert_eq!(
        names,
        ["default/web:80", "default/web:80@default/by-route"],
        "{names:?}"
    );
    let by_route = &s.clusters[&std::sync::Arc::<str>::from("default/web:80@default/by-route")];
    assert_eq!(
        by_route.policy.balancer,
        Balancer::ConsistentHash(HashOn::Cookie("user".into()))
    );
    let shared = &s.clusters[&std::sync::Arc::<str>::from("default/web:80")];
    assert_eq!(shared.policy.balancer, Balancer::Random);
    // Without the route's policy: the Service's beats the Gateway's.
    let s = run(&[CLASSES, SVC, &route, &on_gateway, &on_service].concat()).expect("translates");
    let names: Vec<&str> = s.clusters.keys().map(|k| k.as_ref()).collect();
    assert_eq!(names, ["default/web:80"]);
    // With only the Gateway's, the route's backends get a cluster of it.
    let s = run(&[CLASSES, SVC, &route, &on_gateway].concat()).expect("translates");
    let c = s.clusters.values().next().expect("cluster");
    assert_eq!(c.name, "default/web:80@default/by-gateway");
    assert_eq!(c.policy.retry.as_ref().map(|r| r.attempts), Some(3));
}

#[test]
fn ingress_annotations_set_the_common_knobs() {
    use gatehouse_translate::cluster::HashOn;
    let annotated = |annotations: &str| {
        ingress("a", "  ingressClassName: gatehouse\n", "{number: 80}").replace(
            "metadata: {name: a, namespace: default}",
            &format!("metadata:\n  name: a\n  namespace: default\n  annotations:\n{annotations}"),
        )
    };
    let good = annotated(
        "    gatehouse.dev/hash-on: header:X-User\n    gatehouse.dev/retries: \"3\"\n    gatehouse.dev/retry-on: connect-failure, 5xx\n    gatehouse.dev/health-check-path: /healthz\n    gatehouse.dev/max-connections: \"10\"\n    gatehouse.dev/session-cookie: sid\n",
    );
    let s = run(&[CLASSES, SVC, &good].concat()).expect("translates");
    let c = s.clusters.values().next().expect("cluster");
    assert_eq!(c.name, "default/web:80@ingress/default/a");
    let p = &c.policy;
    assert_eq!(
        p.balancer,
        Balancer::ConsistentHash(HashOn::Header("x-user".into()))
    );
    let retry = p.retry.as_ref().expect("retry");
    assert_eq!(retry.attempts, 3);
    assert!(retry.on.connect_failure && retry.on.server_error && !retry.on.reset);
    assert!(p.health.is_some());
    assert_eq!(p.max_connections, Some(10));
    assert_eq!(p.session.as_ref().map(|s| s.cookie.as_str()), Some("sid"));
    for (annotations, want) in [
        (
            "    gatehouse.dev/retries: lots\n",
            "field metadata.annotations[\"gatehouse.dev/retries\"]: \"lots\" is not a whole number",
        ),
        (
            "    gatehouse.dev/load-balancer: Fastest\n",
            "field metadata.annotations[\"gatehouse.dev/load-balancer\"]: unknown load balancer",
        ),
        (
            "    gatehouse.dev/hash-on: planet:x\n",
            "field metadata.annotations[\"gatehouse.dev/hash-on\"]: unknown hash key",
        ),
        (
            "    gatehouse.dev/per-try-timeout: fast\n",
            "field metadata.annotations[\"gatehouse.dev/per-try-timeout\"]: invalid duration",
        ),
    ] {
        let errs = errors(&[CLASSES, SVC, &annotated(annotations)].concat());
        assert!(
            errs.iter()
                .any(|e| e.contains("Ingress default/a: ") && e.contains(want)),
            "want {want:?}, got {errs:?}"
        );
    }
}

#[test]
fn request_mirrors_resolve_their_backend_and_share() {
    let listeners = "  - {name: http, protocol: HTTP, port: 80}\n";
    let route = gateway_with(
        listeners,
        "  - filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 81}, fraction: {numerator: 1, denominator: 4}}}\n    backendRefs: [{name: web, port: 80}]\n",
    );
    let s = run(&[CLASSES, SVC, &route].concat()).expect("translates");
    let section = s.ports[0].sections.lookup("any.example").expect("section");
    let headers = http::HeaderMap::new();
    let view = RequestView {
        method: &http::Method::GET,
        path: "/",
        query: None,
        headers: &headers,
    };
    let entry = section
        .hosts
        .lookup("any.example")
        .and_then(|t| t.find(&view))
        .expect("route");
    let mirrors = &entry.action.mirrors;
    assert_eq!(mirrors.len(), 1);
    assert_eq!(mirrors[0].cluster.name, "default/web:81");
    assert_eq!(mirrors[0].per_million, 250_000);
    let bad = gateway_with(
        listeners,
        "  - filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 81}, percent: 150}}\n    backendRefs: [{name: web, port: 80}]\n",
    );
    let errs = errors(&[CLASSES, SVC, &bad].concat());
    assert!(
        errs.iter().any(|e| e.contains(
            "spec.rules[0].filters[0].requestMirror.percent: 150 is not between 0 and 100"
        )),
        "{errs:?}"
    );
}
