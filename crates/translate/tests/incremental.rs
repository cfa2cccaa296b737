//! Incremental translation must give what a full translation gives: each case applies a
//! change to a base store, splices the scoped result into the base Snapshot, and
//! compares every port, section, host and route entry (and the route statuses) with a
//! full translation of the changed store. Changes that cannot be scoped must say so.

use gatehouse_model::manifest::parse_manifest;
use gatehouse_model::{ObjectKey, ObjectStore, StoredObject};
use gatehouse_translate::incremental::{plan, translate_scoped, Changes};
use gatehouse_translate::{translate, ListenMapEntry, Snapshot, TranslateOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

const BASE: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: gatehouse}
spec: {controller: gatehouse.dev/ingress-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: any, protocol: HTTP, port: 8000}
  - {name: shop, protocol: HTTP, port: 8001, hostname: '*.shop.example'}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, namespace: default, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: b-1, namespace: default, labels: {kubernetes.io/service-name: b}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.2]}]
---
apiVersion: v1
kind: Service
metadata: {name: dflt, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: one, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  ingressClassName: gatehouse
  defaultBackend: {service: {name: dflt, port: {number: 80}}}
  tls: [{hosts: [secure.example], secretName: missing}]
  rules:
  - host: one.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}
  - host: shared.example
    http: {paths: [{path: /api, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: two, namespace: default, creationTimestamp: '2026-01-02T00:00:00Z'}
spec:
  ingressClassName: gatehouse
  rules:
  - host: shared.example
    http: {paths: [{path: /api, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}},
                   {path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r1, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: [r1.example, x.shop.example]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: b, port: 80}]
";

fn objects(yaml: &str) -> Vec<StoredObject> {
    parse_manifest("test.yaml", yaml)
        .expect("test manifests parse")
        .objects
}

fn opts() -> TranslateOptions {
    TranslateOptions {
        listen_map: vec![
            ListenMapEntry {
                gateway: None,
                port: 8000,
                addr: "127.0.0.1:18000".parse().expect("addr"),
            },
            ListenMapEntry {
                gateway: None,
                port: 8001,
                addr: "127.0.0.1:18001".parse().expect("addr"),
            },
        ],
        ..TranslateOptions::default()
    }
}

/// Every routing decision of a Snapshot, as text: port, section, host, then each entry
/// in precedence order with its match and its action (ids left out: they differ).
fn describe(s: &Snapshot) -> BTreeMap<String, String> {
    let ids = regex::Regex::new(r"id: \d+, ").expect("regex");
    let mut out = BTreeMap::new();
    for port in &s.ports {
        for (skey, section) in port.sections.entries() {
            let fallback = section.fallback.as_ref().map(|a| a.name.to_string());
            out.insert(
                format!("{} {skey} {}", port.addr, section.name),
                format!("fallback {fallback:?}"),
            );
            for (host, table) in section.hosts.entries() {
                let entries: Vec<String> = table
                    .entries()
                    .iter()
                    .map(|e| {
                        let action = format!("{:?}", e.action);
                        let action = ids.replace_all(&action, "");
                        format!(
                            "{:?} {:?} {:?} {:?} {action}",
                            e.path, e.method, e.headers, e.query
                        )
                    })
                    .collect();
                out.insert(format!("{} {skey} {host}", port.addr), entries.join("\n"));
            }
        }
    }
    out
}

fn route_statuses(s: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = s
        .statuses
        .values()
        .filter(|u| matches!(u.kind, "HTTPRoute" | "Ingress"))
        .map(|u| format!("{} {:?} {} {}", u.kind, u.namespace, u.name, u.status))
        .collect();
    v.sort();
    v
}

/// Applies `upserts` and `deletes` to the base, then checks the scoped result against a
/// full translation. Returns the plan's refusal, if any.
fn check(upserts: &str, deletes: &[(&'static str, &str)]) -> Result<(), String> {
    check_on("", upserts, deletes)
}

/// `check` on the base plus `extra`.
fn check_on(extra: &str, upserts: &str, deletes: &[(&'static str, &str)]) -> Result<(), String> {
    let mut store = ObjectStore::from_objects(objects(BASE));
    for o in objects(extra) {
        store.upsert(o);
    }
    let prev = translate(&store, &opts(), 1).expect("base translates");
    let mut changes: Changes = BTreeMap::new();
    for o in objects(upserts) {
        let key = o.key();
        changes.insert(key.clone(), store.get_shared(&key));
        store.upsert(o);
    }
    for (kind, name) in deletes {
        let key = ObjectKey {
            kind,
            namespace: Some("default".into()),
            name: name.to_string(),
        };
        let old: Option<Arc<StoredObject>> = store.remove(&key);
        assert!(old.is_some(), "{kind} {name} exists");
        changes.insert(key, old);
    }
    let scope = plan(&store, &changes)?;
    let spliced = translate_scoped(&store, &opts(), &prev, &scope, 2)?;
    let full = translate(&store, &opts(), 2).expect("changed store translates");
    assert_eq!(describe(&spliced), describe(&full), "routing differs");
    assert_eq!(
        route_statuses(&spliced),
        route_statuses(&full),
        "statuses differ"
    );
    // Clusters used by the new routes are there, with their endpoints.
    for (name, c) in &full.clusters {
        let s = spliced.clusters.get(name).expect("cluster present");
        assert_eq!(s.endpoints(), c.endpoints(), "{name} endpoints");
    }
    Ok(())
}

#[test]
fn new_http_route_on_a_new_host() {
    check(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r2, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [r2.example, y.shop.example, not.matching.other]
  rules:
  - matches: [{path: {type: Exact, value: /x}, method: POST}]
    backendRefs: [{name: b, port: 80, weight: 3}, {name: a, port: 80}]
",
        &[],
    )
    .expect("scoped");
}

#[test]
fn new_grpc_route_sharing_a_host_with_an_http_route() {
    check(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [r1.example]
  rules:
  - matches: [{method: {service: pkg.Svc, method: Get}}]
    backendRefs: [{name: b, port: 80}]
",
        &[],
    )
    .expect("scoped");
}

#[test]
fn a_new_host_under_another_ingress_wildcard_tls_redirects_to_https() {
    let ck =
        rcgen::generate_simple_self_signed(vec!["*.tls.example".to_string()]).expect("certificate");
    let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let secure = format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: wild, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: secure, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}}
spec:
  ingressClassName: gatehouse
  tls: [{{hosts: ['*.tls.example'], secretName: wild}}]
  rules:
  - host: a.tls.example
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]}}
",
        indent(ck.cert.pem()),
        indent(ck.signing_key.serialize_pem())
    );
    check_on(
        &secure,
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: plain, namespace: default}
spec:
  ingressClassName: gatehouse
  rules:
  - host: b.tls.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}]}
",
        &[],
    )
    .expect("scoped");
}

#[test]
fn new_http_route_sharing_a_host_takes_precedence_into_account() {
    check(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r0, namespace: default, creationTimestamp: '2025-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw, sectionName: any}]
  hostnames: [r1.example]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: b, port: 80}]
",
        &[],
    )
    .expect("scoped");
}

#[test]
fn modified_and_deleted_routes() {
    // r1 moves off x.shop.example and onto a new host; Ingress two loses shared.example.
    check(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r1, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: [r1.example, z.example]
  rules:
  - matches: [{path: {type: RegularExpression, value: '/v[0-9]+'}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: two, namespace: default, creationTimestamp: '2026-01-02T00:00:00Z'}
spec:
  ingressClassName: gatehouse
  rules:
  - host: moved.example
    http: {paths: [{path: /, pathType: Exact, backend: {service: {name: b, port: {number: 80}}}}]}
",
        &[],
    )
    .expect("scoped");
    check("", &[("HTTPRoute", "r1"), ("Ingress", "two")]).expect("scoped");
}

#[test]
fn service_changes_rebuild_the_routes_that_use_them() {
    // A Service that was missing appears; a used one changes its port.
    let routes = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: later, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [later.example]
  rules:
  - backendRefs: [{name: c, port: 80}]
";
    check_on(
        routes,
        "apiVersion: v1
kind: Service
metadata: {name: c, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: c-1, namespace: default, labels: {kubernetes.io/service-name: c}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
",
        &[],
    )
    .expect("scoped");
    check(
        "apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {ports: [{name: http, port: 81}]}
",
        &[],
    )
    .expect("scoped");
}

#[test]
fn changes_that_need_a_full_translation_say_why() {
    let no_hosts = check(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r3, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: a, port: 80}]
",
        &[],
    )
    .expect_err("a route without hostnames lands under every listener name");
    assert!(no_hosts.contains("no exact hostnames"), "{no_hosts}");
    let tls = check(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: three, namespace: default}
spec:
  ingressClassName: gatehouse
  tls: [{hosts: [three.example], secretName: missing}]
  rules:
  - host: three.example
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}
",
        &[],
    )
    .expect_err("TLS changes the certificates");
    assert!(tls.contains("TLS or defaultBackend"), "{tls}");
    let default_backend = check(
        "apiVersion: v1
kind: Service
metadata: {name: dflt, namespace: default}
spec: {ports: [{name: http, port: 81}]}
",
        &[],
    )
    .expect_err("Service dflt is the defaultBackend");
    assert!(
        default_backend.contains("defaultBackend"),
        "{default_backend}"
    );
    let gateway = check("", &[("Gateway", "gw")]).expect_err("listeners change");
    assert!(gateway.contains("Gateway"), "{gateway}");
    let invalid = check(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad, namespace: default}
spec:
  ingressClassName: gatehouse
  rules:
  - host: bad.example
    http: {paths: [{path: nope, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}
",
        &[],
    )
    .expect_err("errors go to the full translation, which judges them");
    assert!(invalid.contains("must start with '/'"), "{invalid}");
}
