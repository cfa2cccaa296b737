//! Status write-back and leader election through kube-rs against the in-test API
//! server: Ingress load-balancer addresses, Gateway API conditions with their reasons,
//! and a leader handover between two controller instances.

mod support;
use gatehouse::app::{start_kubernetes, Running};
use gatehouse_sources::lease::LeaseConfig;
use gatehouse_translate::ListenMapEntry;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::apiserver::ApiServer;
use support::*;

const GW: &str = "gateway.networking.k8s.io/v1";

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "gatehouse-system".into(),
        name: "gatehouse-leader".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
    }
}

async fn controller(api: &ApiServer, identity: &str) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let mut translate = loopback_translate(
        free_addr(),
        vec![ListenMapEntry {
            gateway: None,
            port: 80,
            addr: free_addr(),
        }],
    );
    translate.publish_addresses = vec!["203.0.113.7".into()];
    let opts = kube_options(translate, Some(lease(identity)));
    start_kubernetes(api.client(), opts).await.expect("start")
}

/// Polls an object until `check` accepts it.
async fn wait_for(
    api: &ApiServer,
    api_version: &str,
    kind: &str,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let t = Instant::now();
    loop {
        if let Some(o) = api.get(api_version, kind, ns, name) {
            if check(&o) {
                return o;
            }
            if t.elapsed() > Duration::from_secs(15) {
                panic!("{kind} {ns}/{name}: {what} never held; object: {o:#}");
            }
        } else if t.elapsed() > Duration::from_secs(15) {
            panic!("{kind} {ns}/{name} not found");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

fn route(name: &str, section: Option<&str>, backend: &str) -> Value {
    let mut parent = json!({"name": "gw"});
    if let Some(s) = section {
        parent["sectionName"] = s.into();
    }
    json!({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": "default", "generation": 3},
        "spec": {"parentRefs": [parent], "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}})
}

fn setup(api: &ApiServer, backend: std::net::SocketAddr) {
    api.apply(json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "gatehouse"}, "spec": {"controller": "gatehouse.dev/ingress-controller"}}));
    api.apply(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ingressClassName": "gatehouse", "rules": [{"host": "web.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}}));
    api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": backend.port()}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}));
    api.apply(
        json!({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "gatehouse"},
        "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
    );
    api.apply(json!({"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "gw", "namespace": "default", "generation": 2},
        "spec": {"gatewayClassName": "gatehouse", "listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80},
            {"name": "udp", "protocol": "UDP", "port": 5353}]}}));
    let mut good = route("good", None, "web");
    good["status"] = json!({"parents": [{"parentRef": {"name": "theirs"},
        "controllerName": "example.com/other", "conditions": []}]});
    api.apply(good);
    api.apply(route("missing-backend", Some("http"), "nope"));
    api.apply(route("wrong-section", Some("https"), "web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_with_the_reasons_the_spec_names() {
    let api = ApiServer::start().await;
    setup(&api, echo("web").await);
    let running = controller(&api, "replica-a").await;

    let ing = wait_for(
        &api,
        "networking.k8s.io/v1",
        "Ingress",
        "default",
        "web",
        "loadBalancer address",
        |o| o["status"]["loadBalancer"]["ingress"][0]["ip"] == "203.0.113.7",
    )
    .await;
    assert!(ing["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_some_and(|a| a.len() == 1));

    let class = wait_for(&api, GW, "GatewayClass", "", "gatehouse", "Accepted", |o| {
        condition(&o["status"]["conditions"], "Accepted")["status"] == "True"
    })
    .await;
    assert!(class["status"]["conditions"][0]["lastTransitionTime"].is_string());

    let gw = wait_for(&api, GW, "Gateway", "default", "gw", "Programmed", |o| {
        condition(&o["status"]["conditions"], "Programmed")["status"] == "True"
    })
    .await;
    let st = &gw["status"];
    assert_eq!(
        st["addresses"][0],
        json!({"type": "IPAddress", "value": "203.0.113.7"})
    );
    assert_eq!(
        condition(&st["conditions"], "Accepted")["observedGeneration"],
        2
    );
    let http = &st["listeners"][0];
    assert_eq!(http["name"], "http");
    assert_eq!(
        http["attachedRoutes"], 2,
        "good and missing-backend attach; wrong-section does not: {st:#}"
    );
    assert_eq!(
        condition(&http["conditions"], "Programmed")["status"],
        "True"
    );
    assert_eq!(http["supportedKinds"][0]["kind"], "HTTPRoute");
    let udp = &st["listeners"][1];
    assert_eq!(
        condition(&udp["conditions"], "Accepted")["reason"],
        "UnsupportedProtocol"
    );
    assert_eq!(
        condition(&udp["conditions"], "Programmed")["status"],
        "False"
    );

    let ours = |o: &Value| -> Value {
        o["status"]["parents"]
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["controllerName"] == "gatehouse.dev/gateway-controller")
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    let parent_conditions = |o: &Value| ours(o)["conditions"].clone();
    let good = wait_for(&api, GW, "HTTPRoute", "default", "good", "Accepted", |o| {
        condition(&parent_conditions(o), "Accepted")["status"] == "True"
    })
    .await;
    // Another controller's entry for its own parent stays beside ours.
    let parents = good["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert!(
        parents
            .iter()
            .any(|p| p["controllerName"] == "example.com/other"
                && p["parentRef"]["name"] == "theirs"),
        "{parents:?}"
    );
    assert_eq!(
        condition(&parent_conditions(&good), "ResolvedRefs")["status"],
        "True"
    );
    assert_eq!(
        condition(&parent_conditions(&good), "Accepted")["observedGeneration"],
        3
    );
    let missing = wait_for(
        &api,
        GW,
        "HTTPRoute",
        "default",
        "missing-backend",
        "ResolvedRefs=False",
        |o| condition(&parent_conditions(o), "ResolvedRefs")["status"] == "False",
    )
    .await;
    assert_eq!(
        condition(&parent_conditions(&missing), "ResolvedRefs")["reason"],
        "BackendNotFound"
    );
    let wrong = wait_for(
        &api,
        GW,
        "HTTPRoute",
        "default",
        "wrong-section",
        "Accepted=False",
        |o| condition(&parent_conditions(o), "Accepted")["status"] == "False",
    )
    .await;
    assert_eq!(
        condition(&parent_conditions(&wrong), "Accepted")["reason"],
        "NoMatchingParent"
    );

    // An invalid route is left out and told why; everything else keeps applying.
    api.apply(json!({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": "bad-regex", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
            "matches": [{"path": {"type": "RegularExpression", "value": "/a("}}],
            "backendRefs": [{"name": "web", "port": 80}]}]}}));
    let bad = wait_for(
        &api,
        GW,
        "HTTPRoute",
        "default",
        "bad-regex",
        "Accepted=False",
        |o| condition(&parent_conditions(o), "Accepted")["status"] == "False",
    )
    .await;
    let msg = condition(&parent_conditions(&bad), "Accepted")["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("spec.rules[0].matches[0].path.value") && msg.contains("regular expression"),
        "{msg}"
    );
    api.apply(route("after-bad", None, "web"));
    wait_for(
        &api,
        GW,
        "HTTPRoute",
        "default",
        "after-bad",
        "Accepted despite another invalid route",
        |o| condition(&parent_conditions(o), "Accepted")["status"] == "True",
    )
    .await;

    // A route with a hostname is compiled incrementally: its own status comes at once,
    // and the reconciling full pass that follows counts it on the Gateway's listener.
    let incremental = |running: &Running| {
        running
            .dataplane
            .metrics
            .counters
            .config_incremental_total
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = incremental(&running);
    let mut named = route("named", Some("http"), "web");
    named["spec"]["hostnames"] = json!(["named.example"]);
    api.apply(named);
    wait_for(&api, GW, "HTTPRoute", "default", "named", "Accepted", |o| {
        condition(&parent_conditions(o), "Accepted")["status"] == "True"
    })
    .await;
    assert!(
        incremental(&running) > before,
        "the named route took the incremental path"
    );
    wait_for(
        &api,
        GW,
        "Gateway",
        "default",
        "gw",
        "attachedRoutes 4",
        |o| o["status"]["listeners"][0]["attachedRoutes"] == 4,
    )
    .await;

    // Nothing changes, so nothing is written again.
    let writes = api.status_patches();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        api.status_patches(),
        writes,
        "unchanged status is not rewritten"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_hands_over_between_two_controllers() {
    let api = ApiServer::start().await;
    setup(&api, echo("web").await);
    let a = controller(&api, "replica-a").await;
    let holder = |api: &ApiServer| {
        api.get(
            "coordination.k8s.io/v1",
            "Lease",
            "gatehouse-system",
            "gatehouse-leader",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let t = Instant::now();
    while holder(&api).as_deref() != Some("replica-a") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "replica-a never took the Lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = controller(&api, "replica-b").await;
    wait_for(&api, GW, "HTTPRoute", "default", "good", "Accepted", |o| {
        o["status"]["parents"][0].is_object()
    })
    .await;
    // Both serve; only the holder writes. Give replica-b time to (not) act.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(holder(&api).as_deref(), Some("replica-a"));
    let writes = api.status_patches();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.status_patches(), writes, "the follower writes nothing");

    // replica-a stops and releases the Lease; replica-b takes over and writes status
    // for what changes next.
    a.shutdown().await;
    let t = Instant::now();
    while holder(&api).as_deref() != Some("replica-b") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "replica-b never took over (holder {:?})",
            holder(&api)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.apply(route("late", None, "web"));
    wait_for(
        &api,
        GW,
        "HTTPRoute",
        "default",
        "late",
        "Accepted by the new leader",
        |o| condition(&o["status"]["parents"][0]["conditions"], "Accepted")["status"] == "True",
    )
    .await;
    b.shutdown().await;
}
