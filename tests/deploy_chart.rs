//! The Helm chart in `deploy/helm/gatehouse`: every template renders (with the chart's
//! own values) to valid YAML, and the objects say what the code needs. The RBAC rules
//! cover every kind the Kubernetes source watches and every status it writes, and the
//! classes name Gatehouse's controllers. No `helm` binary can be installed here, so the
//! templates keep to plain value substitution, which this test renders.

use gatehouse_sources::kubernetes::{MESH_WATCHED, WATCHED};
use serde_json::Value;
use std::path::Path;

const CHART: &str = "deploy/helm/gatehouse";

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{text}"))
}

fn lookup<'a>(values: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(values, |v, k| &v[k])
}

/// Renders `{{ .Values.x }}`, `{{ .Release.Name }}`, `{{ .Release.Namespace }}` and the
/// `| quote` pipe; anything else is a test failure.
fn render(template: &str, values: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("closed action") + start;
        let action = rest[start + 2..end].trim();
        let (expr, quote) = match action.split_once('|') {
            Some((e, pipe)) => {
                assert_eq!(pipe.trim(), "quote", "unsupported pipe in {action:?}");
                (e.trim(), true)
            }
            None => (action, false),
        };
        let text = match expr {
            ".Release.Name" => "gatehouse".to_string(),
            ".Release.Namespace" => "gatehouse-system".to_string(),
            e if e.starts_with(".Values.") => match lookup(values, &e[".Values.".len()..]) {
                Value::String(s) => s.clone(),
                Value::Null => panic!("{e} is not in values.yaml"),
                v => v.to_string(),
            },
            other => panic!("unsupported template action {other:?}"),
        };
        if quote {
            out.push_str(&format!("{text:?}"));
        } else {
            out.push_str(&text);
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn rendered() -> Vec<Value> {
    let values =
        yaml(&std::fs::read_to_string(Path::new(CHART).join("values.yaml")).expect("values"));
    let chart =
        yaml(&std::fs::read_to_string(Path::new(CHART).join("Chart.yaml")).expect("Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "gatehouse");
    let mut objects = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(Path::new(CHART).join("templates"))
        .expect("templates")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for path in names {
        let text = render(&std::fs::read_to_string(&path).expect("template"), &values);
        for doc in text.split("\n---\n") {
            let v = yaml(doc);
            if !v.is_null() {
                assert!(
                    v["apiVersion"].is_string() && v["kind"].is_string(),
                    "{}: {v}",
                    path.display()
                );
                objects.push(v);
            }
        }
    }
    objects
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn allows(rules: &Value, group: &str, resource: &str, verb: &str) -> bool {
    rules.as_array().into_iter().flatten().any(|r| {
        let has = |field: &str, want: &str| {
            r[field]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == want))
        };
        has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
    })
}

#[test]
fn chart_renders_and_grants_what_the_code_needs() {
    let objects = rendered();
    let cluster_role = find(&objects, "ClusterRole");
    let rules = &cluster_role[0]["rules"];
    // The controller's kinds, and the mesh's (its CA reads Pods and Nodes).
    for k in WATCHED.iter().chain(MESH_WATCHED) {
        for verb in ["list", "watch"] {
            assert!(
                allows(rules, k.group, k.plural, verb),
                "ClusterRole must allow {verb} on {}/{}",
                k.group,
                k.plural
            );
        }
    }
    for (group, resource) in [
        ("networking.k8s.io", "ingresses/status"),
        ("gateway.networking.k8s.io", "gatewayclasses/status"),
        ("gateway.networking.k8s.io", "gateways/status"),
        ("gateway.networking.k8s.io", "httproutes/status"),
        ("gateway.networking.k8s.io", "grpcroutes/status"),
    ] {
        assert!(
            allows(rules, group, resource, "patch"),
            "status writes need patch on {resource}"
        );
    }
    assert!(
        !allows(rules, "", "secrets", "update"),
        "no write access beyond status"
    );
    let role = find(&objects, "Role");
    for verb in ["get", "create", "update"] {
        assert!(
            allows(&role[0]["rules"], "coordination.k8s.io", "leases", verb),
            "leader election needs {verb} on leases"
        );
    }
    let deployment = find(&objects, "Deployment")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"controller"), "{args:?}");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "gatehouse"
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
    let service = find(&objects, "Service")[0];
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        find(&objects, "IngressClass")[0]["spec"]["controller"],
        gatehouse_model::INGRESS_CONTROLLER
    );
    assert_eq!(
        find(&objects, "GatewayClass")[0]["spec"]["controllerName"],
        gatehouse_model::GATEWAY_CONTROLLER
    );
    // The classes the chart installs convert like any other manifest.
    for o in objects
        .iter()
        .filter(|o| o["kind"] == "IngressClass" || o["kind"] == "GatewayClass")
    {
        let converted = gatehouse_model::manifest::object_from_value(o.clone());
        assert!(matches!(converted, Ok(Some(_))), "{o}: {converted:?}");
    }
}

#[test]
fn crds_are_generated_from_the_types_and_match_the_chart() {
    let generated = gatehouse_model::policy::crds_yaml().expect("CRDs serialize");
    let chart = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/helm/gatehouse/crds/gatehouse.dev.yaml"),
    )
    .expect("chart CRDs");
    assert_eq!(
        chart, generated,
        "deploy/helm/gatehouse/crds is stale: regenerate it with `gatehouse crds`"
    );
    let docs: Vec<Value> = generated
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| !d.trim().is_empty())
        .map(yaml)
        .collect();
    assert!(!docs.is_empty());
    for crd in &docs {
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        let spec = &crd["spec"];
        assert_eq!(spec["group"], gatehouse_model::policy::GROUP);
        let kind = spec["names"]["kind"].as_str().expect("kind");
        let plural = spec["names"]["plural"].as_str().expect("plural");
        assert_eq!(
            crd["metadata"]["name"],
            format!("{plural}.{}", gatehouse_model::policy::GROUP)
        );
        let version = &spec["versions"][0];
        assert_eq!(version["served"], true);
        assert_eq!(version["storage"], true);
        let columns = version["additionalPrinterColumns"]
            .as_array()
            .expect("printer columns");
        assert!(columns
            .iter()
            .all(|c| c["jsonPath"].is_string() && c["name"].is_string()));
        let schema = &version["schema"]["openAPIV3Schema"];
        assert_eq!(
            schema["properties"]["spec"]["type"], "object",
            "{kind}: {schema}"
        );
        // The controller watches it, and the chart lets it.
        let watched = WATCHED
            .iter()
            .find(|k| k.kind == kind)
            .unwrap_or_else(|| panic!("{kind} is not watched"));
        assert_eq!(watched.plural, plural);
        assert!(watched.optional, "a cluster may lack the CRD");
        let objects = rendered();
        let rules = &find(&objects, "ClusterRole")[0]["rules"];
        assert!(allows(
            rules,
            gatehouse_model::policy::GROUP,
            plural,
            "watch"
        ));
    }
    let btp = &docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(btp["required"][0], "targetRefs", "{btp}");
    assert!(btp["properties"]["circuitBreaker"]["properties"]["maxRequests"].is_object());
    assert!(btp["properties"]["loadBalancer"]["properties"]["type"].is_object());
}
