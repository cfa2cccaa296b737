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

/// The value of `{{ .Values.x }}`, `{{ .Release.Name }}` or `{{ .Release.Namespace }}`;
/// anything else is a test failure.
fn value(expr: &str, values: &Value) -> Value {
    match expr {
        ".Release.Name" => "gatehouse".into(),
        ".Release.Namespace" => "gatehouse-system".into(),
        e if e.starts_with(".Values.") => match lookup(values, &e[".Values.".len()..]) {
            Value::Null => panic!("{e} is not in values.yaml"),
            v => v.clone(),
        },
        other => panic!("unsupported template expression {other:?}"),
    }
}

/// Renders `{{ EXPR }}` with the `| quote` pipe, and `{{ if EXPR }}...{{ end }}` blocks
/// (truthy as in Go templates), with `{{-` and `-}}` trimming whitespace; anything
/// else is a test failure.
fn render(template: &str, values: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    // One entry per open `if`: whether its body is rendered.
    let mut open: Vec<bool> = Vec::new();
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let end = rest[start..].find("}}").expect("closed action") + start;
        let mut action = &rest[start + 2..end];
        if let Some(a) = action.strip_prefix('-') {
            text = text.trim_end();
            action = a;
        }
        trim_next = action.ends_with('-');
        let action = action.trim_end_matches('-').trim();
        let shown = open.iter().all(|&b| b);
        if shown {
            out.push_str(text);
        }
        rest = &rest[end + 2..];
        if let Some(cond) = action.strip_prefix("if ") {
            let truthy = match value(cond.trim(), values) {
                Value::Bool(b) => b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                Value::Null => false,
            };
            open.push(truthy);
            continue;
        }
        if action == "end" {
            assert!(open.pop().is_some(), "`end` without `if`");
            continue;
        }
        let (expr, quote) = match action.split_once('|') {
            Some((e, pipe)) => {
                assert_eq!(pipe.trim(), "quote", "unsupported pipe in {action:?}");
                (e.trim(), true)
            }
            None => (action, false),
        };
        let text = match value(expr, values) {
            Value::String(s) => s,
            v => v.to_string(),
        };
        if shown {
            if quote {
                out.push_str(&format!("{text:?}"));
            } else {
                out.push_str(&text);
            }
        }
    }
    assert!(open.is_empty(), "`if` without `end`");
    out.push_str(if trim_next { rest.trim_start() } else { rest });
    out
}

/// Every object the chart renders, with its values and `set` (`path`, value) over them.
fn rendered_with(set: &[(&str, Value)]) -> Vec<Value> {
    let mut values =
        yaml(&std::fs::read_to_string(Path::new(CHART).join("values.yaml")).expect("values"));
    for (path, v) in set {
        let slot = path.split('.').fold(&mut values, |v, k| &mut v[k]);
        assert!(!slot.is_null(), "{path} is not in values.yaml");
        *slot = v.clone();
    }
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

fn rendered() -> Vec<Value> {
    rendered_with(&[])
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

fn args_of(workload: &Value) -> Vec<String> {
    workload["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

/// `args` parse as a `gatehouse` command line: every flag known, every value valid (the
/// binary stops at --help once the flags before it have parsed).
fn assert_parses(args: &[String]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run gatehouse");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of `--flag=VALUE` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} is not in {args:?}"))
}

#[test]
fn the_mesh_is_off_by_default_and_its_parts_fit_together_when_on() {
    let off = rendered();
    assert!(find(&off, "DaemonSet").is_empty());
    assert!(!args_of(find(&off, "Deployment")[0])
        .iter()
        .any(|a| a.starts_with("--mesh-ca-listen")));

    let on = rendered_with(&[("mesh.enabled", true.into())]);
    let controller = args_of(find(&on, "Deployment")[0]);
    // Both command lines parse.
    for workload in [find(&on, "Deployment")[0], find(&on, "DaemonSet")[0]] {
        assert_parses(&args_of(workload));
    }
    let ca_port = flag(&controller, "--mesh-ca-listen")
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let daemonset = find(&on, "DaemonSet")[0];
    let pod = &daemonset["spec"]["template"]["spec"];
    let node = args_of(daemonset);
    assert_eq!(node[..2], ["node", "--kubernetes"]);
    assert_eq!(flag(&node, "--node-name"), "$(NODE_NAME)");
    assert_eq!(
        pod["containers"][0]["env"][1]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        pod["hostNetwork"], true,
        "capture works in the node's namespace"
    );
    // The CA's Service reaches the controllers on the port the CA listens on.
    let ca_addr = flag(&node, "--ca-addr");
    let ca_service = find(&on, "Service")
        .into_iter()
        .find(|s| {
            ca_addr.starts_with(&format!(
                "{}.gatehouse-system.svc:",
                s["metadata"]["name"].as_str().unwrap_or("?")
            ))
        })
        .expect("the --ca-addr Service");
    assert!(ca_addr.ends_with(&format!(":{}", ca_service["spec"]["ports"][0]["port"])));
    let target = &ca_service["spec"]["ports"][0]["targetPort"];
    let ports = &find(&on, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(ports
        .as_array()
        .expect("ports")
        .iter()
        .any(|p| &p["name"] == target && p["containerPort"].as_u64() == ca_port.parse().ok()));
    // The token the node proxy presents is the one the CA reviews: its service
    // account's, projected for the CA's audience.
    let mounted = |volume: &str, file: &str| {
        let mount = pod["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == volume)
            .expect("mounted");
        format!("{}/{file}", mount["mountPath"].as_str().expect("path"))
    };
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .expect("volume")
    };
    let token = &volume("token")["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(
        token["audience"],
        gatehouse::mesh_tokenreview::TOKEN_AUDIENCE
    );
    assert_eq!(
        flag(&node, "--token-file"),
        mounted("token", token["path"].as_str().expect("path"))
    );
    assert_eq!(
        flag(&controller, "--mesh-node-service-account"),
        format!(
            "gatehouse-system/{}",
            pod["serviceAccountName"].as_str().expect("sa")
        )
    );
    // The bundle the CA publishes is the root the node proxy trusts.
    let configmap = volume("mesh-root")["configMap"]["name"].clone();
    assert_eq!(
        flag(&controller, "--mesh-root-configmap"),
        format!("gatehouse-system/{}", configmap.as_str().expect("name"))
    );
    assert_eq!(
        flag(&node, "--ca-root"),
        mounted("mesh-root", gatehouse::mesh_bundle::BUNDLE_KEY)
    );
    // The controller may review tokens and publish the bundle; the node proxy reads
    // the mesh and nothing else.
    let controller_rules = &find(&on, "ClusterRole")[0]["rules"];
    assert!(allows(
        controller_rules,
        "authentication.k8s.io",
        "tokenreviews",
        "create"
    ));
    let role = &find(&on, "Role")[0]["rules"];
    for verb in ["get", "create", "update"] {
        assert!(allows(role, "", "configmaps", verb));
    }
    let node_role = find(&on, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "gatehouse-node")
        .expect("the node proxies' ClusterRole");
    for k in MESH_WATCHED {
        assert!(
            allows(&node_role["rules"], k.group, k.plural, "watch"),
            "the node proxy watches {}",
            k.plural
        );
    }
    assert!(!allows(&node_role["rules"], "", "secrets", "get"));
    let binding = find(&on, "ClusterRoleBinding")
        .into_iter()
        .find(|b| b["roleRef"]["name"] == "gatehouse-node")
        .expect("binding");
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
}

#[test]
fn the_control_plane_when_on_listens_behind_its_service_and_reviews_tokens() {
    let off = rendered();
    assert!(!args_of(find(&off, "Deployment")[0])
        .iter()
        .any(|a| a.starts_with("--control-listen")));
    let on = rendered_with(&[
        ("controlPlane.enabled", true.into()),
        ("mesh.enabled", true.into()),
    ]);
    let deployment = find(&on, "Deployment")[0];
    let args = args_of(deployment);
    assert_parses(&args);
    let port: u64 = flag(&args, "--control-listen")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    // The Service reaches the port the controllers listen on.
    let service = find(&on, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "gatehouse-control")
        .expect("the control Service");
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(port));
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| &p["name"] == target && p["containerPort"].as_u64() == Some(port))
    );
    // The accounts granted roles are the chart's own: the controllers' (gateways) and
    // the node proxies'.
    let accounts: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--control-service-account="))
        .collect();
    assert_eq!(
        accounts,
        [
            "--control-service-account=gateway=gatehouse-system/gatehouse",
            "--control-service-account=node=gatehouse-system/gatehouse-node"
        ]
    );
    let service_accounts: Vec<&str> = find(&on, "ServiceAccount")
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    for sa in ["gatehouse", "gatehouse-node"] {
        assert!(service_accounts.contains(&sa), "{service_accounts:?}");
    }
    assert!(allows(
        &find(&on, "ClusterRole")[0]["rules"],
        "authentication.k8s.io",
        "tokenreviews",
        "create"
    ));
}
