//! The mesh on a cluster, through the real kube-rs client against the in-test API
//! server: the CA keeps its root in a Secret (made once, then reused, rotated in place),
//! publishes the trust bundle in a ConfigMap, admits node proxies by a TokenReview of
//! their service-account tokens, and checks certificate requests against Pods and
//! Nodes from the API; a `gatehouse node --kubernetes` process follows Pods as they
//! come, and keeps its last good view when a policy in the API is invalid.

mod support;
use gatehouse::mesh::{start_ca, CaArgs, MeshArgs, MeshSource};
use gatehouse::mesh_tokenreview::TOKEN_AUDIENCE;
use gatehouse_mesh::ca_api::CaClient;
use gatehouse_mesh::identity::Identity;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::apiserver::ApiServer;
use support::Kill;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn pod(name: &str, node: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {"nodeName": node, "serviceAccountName": name, "containers": [{"name": "main"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}], "hostIP": "10.0.0.1"}})
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// GETs `path` from the node proxy's admin listener: (status, body).
async fn admin(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

async fn wait_until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_on_a_cluster_follows_the_api_and_keeps_its_root_in_a_secret() {
    let api = ApiServer::start().await;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"gatehouse.dev/mesh": "node"}}}));
    api.apply(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    api.apply(pod("client", "n1", "10.1.0.5"));
    api.apply(pod("web", "n2", "10.2.0.5"));

    // The node proxies' service-account tokens, as the API server reviews them: n1's
    // proxy's token is bound to its pod and node.
    let node_sa = "system:serviceaccount:gatehouse-system:gatehouse-node";
    let bound_to = |node: &str, pod: &str, uid: &str| {
        json!({"username": node_sa, "uid": "sa-uid", "groups": ["system:serviceaccounts",
            "system:serviceaccounts:gatehouse-system", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/credential-id": ["JTI=1"],
                "authentication.kubernetes.io/node-name": [node],
                "authentication.kubernetes.io/node-uid": ["node-uid"],
                "authentication.kubernetes.io/pod-name": [pod],
                "authentication.kubernetes.io/pod-uid": [uid]}})
    };
    api.grant_token(
        "eyJ.n1-node-proxy.sig",
        &[TOKEN_AUDIENCE],
        bound_to("n1", "gatehouse-node-a", "pa"),
    );
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("token"), "eyJ.n1-node-proxy.sig\n").expect("token");
    let ca_port = free_port();
    let args = CaArgs {
        mesh_ca_listen: Some(format!("127.0.0.1:{ca_port}").parse().expect("addr")),
        mesh_ca_dir: tmp.path().join("unused"),
        mesh_ca_secret: "gatehouse-system/gatehouse-mesh-ca".into(),
        mesh_node_tokens: None,
        mesh_node_service_account: "gatehouse-system/gatehouse-node".into(),
        mesh_root_configmap: "gatehouse-system/gatehouse-mesh-root".into(),
        mesh_cert_ttl: Duration::from_secs(3600),
        mesh: MeshArgs {
            trust_domain: "cluster.local".into(),
            mesh_root_namespace: "gatehouse-system".into(),
        },
    };
    start_ca(&args, MeshSource::Kube(api.client()))
        .await
        .expect("the CA starts");

    // The root was made once, into the Secret, and not on disk.
    let secret = api
        .get("v1", "Secret", "gatehouse-system", "gatehouse-mesh-ca")
        .expect("the CA's Secret was made");
    let cert = secret["data"]["ca.crt"]
        .as_str()
        .expect("ca.crt")
        .to_string();
    assert!(secret["data"]["ca.key"].is_string());
    assert!(!tmp.path().join("unused").exists());
    // Another replica (or a restart) signs with the same root.
    let again = gatehouse::mesh_secret::load_or_create(
        &api.client(),
        "gatehouse-system/gatehouse-mesh-ca",
        "cluster.local",
    )
    .await
    .expect("the Secret loads");
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(&cert)
        .expect("base64");
    assert_eq!(again.root_pem().as_bytes(), pem.as_slice());
    // The trust bundle is published for node proxies to mount; it has no key.
    let bundle = |api: &ApiServer| {
        api.get("v1", "ConfigMap", "gatehouse-system", "gatehouse-mesh-root")
            .map(|c| {
                c["data"]["root-cert.pem"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    };
    assert_eq!(bundle(&api).as_bytes(), pem.as_slice());

    // A rotation of the Secret's root: the next root joins it; the signing one stays
    // until the CA promotes it; a second rotation waits for the first.
    let secret_name = "gatehouse-system/gatehouse-mesh-ca";
    gatehouse::mesh_secret::rotate(&api.client(), secret_name, "cluster.local", false)
        .await
        .expect("rotate");
    let rotated = api
        .get("v1", "Secret", "gatehouse-system", "gatehouse-mesh-ca")
        .expect("secret");
    assert_eq!(rotated["data"]["ca.crt"].as_str(), Some(cert.as_str()));
    assert!(rotated["data"]["next.crt"].is_string());
    assert!(rotated["data"]["next-since"].is_string());
    let second =
        gatehouse::mesh_secret::rotate(&api.client(), secret_name, "cluster.local", false).await;
    assert!(
        second.is_err_and(|e| e.to_string().contains("already under way")),
        "one rotation at a time"
    );
    // The running CA picks the next root up, and the published bundle follows.
    wait_until("the published bundle to hold the next root", async || {
        bundle(&api).matches("BEGIN CERTIFICATE").count() == 2
    })
    .await;
    let published = bundle(&api);
    assert!(published.starts_with(std::str::from_utf8(&pem).expect("pem")));
    assert!(!published.contains("PRIVATE KEY"));
    std::fs::write(tmp.path().join("root.pem"), &published).expect("root");

    // Tokens that do not speak for n1 are refused, each for its reason, and the CA
    // says why; a token bound only to a pod (an older API server) is checked against
    // that pod's node.
    api.apply(pod("client2", "n1", "10.1.0.7"));
    api.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "gatehouse-node-b", "namespace": "gatehouse-system"},
        "spec": {"nodeName": "n1", "containers": [{"name": "node"}]}}));
    let pod_uid = api
        .get("v1", "Pod", "gatehouse-system", "gatehouse-node-b")
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
        .expect("uid");
    let mut pod_bound = bound_to("", "gatehouse-node-b", &pod_uid);
    pod_bound["extra"]
        .as_object_mut()
        .expect("extra")
        .remove("authentication.kubernetes.io/node-name");
    let mut other_sa = bound_to("n1", "gatehouse-node-a", "pa");
    other_sa["username"] = "system:serviceaccount:shop:client".into();
    let mut unbound = bound_to("n1", "x", "y");
    unbound["extra"] = json!({});
    api.grant_token(
        "eyJ.n2-node-proxy.sig",
        &[TOKEN_AUDIENCE],
        bound_to("n2", "gatehouse-node-c", "pc"),
    );
    api.grant_token(
        "eyJ.api-audience.sig",
        &["https://kubernetes.default.svc"],
        bound_to("n1", "gatehouse-node-a", "pa"),
    );
    api.grant_token("eyJ.other-account.sig", &[TOKEN_AUDIENCE], other_sa);
    api.grant_token("eyJ.unbound.sig", &[TOKEN_AUDIENCE], unbound);
    api.grant_token("eyJ.pod-bound.sig", &[TOKEN_AUDIENCE], pod_bound);
    let client2 = Identity::new("cluster.local", "shop", "client2");
    let ask = async |token: &str| {
        let file = tmp.path().join("probe-token");
        std::fs::write(&file, token).expect("token");
        let roots = gatehouse_mesh::tls::roots(&published).expect("roots");
        let ca = CaClient {
            addr: format!("localhost:{ca_port}"),
            node: "n1".into(),
            token_file: file,
            trust_domain: "cluster.local".into(),
            roots: std::sync::Arc::new(arc_swap::ArcSwap::new(roots)),
        };
        let (_, csr) = gatehouse_mesh::ca::new_key_and_csr(&client2).expect("csr");
        ca.sign(&client2, &csr)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    for (token, why) in [
        ("eyJ.n2-node-proxy.sig", "speaks for node \"n2\""),
        ("eyJ.api-audience.sig", "did not authenticate"),
        (
            "eyJ.other-account.sig",
            "not the node proxies' service account",
        ),
        ("eyJ.unbound.sig", "not bound to a pod"),
        ("eyJ.forged.sig", "invalid bearer token"),
    ] {
        let refused = ask(token).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("401") && e.contains(why)),
            "{token}: {refused:?}"
        );
    }
    // Admitted once the CA's view holds client2 (it follows the API a moment behind).
    let mut last = Err(String::new());
    wait_until("a token bound to a pod on n1 admitted", async || {
        last = ask("eyJ.pod-bound.sig").await;
        last.is_ok()
    })
    .await;
    assert!(last.is_ok(), "{last:?}");
    let reviews = api.token_reviews();
    ask("eyJ.pod-bound.sig").await.expect("admitted again");
    assert_eq!(
        api.token_reviews(),
        reviews,
        "an admission is kept, not reviewed again"
    );

    // A node proxy for n1 reading the API (no capture: this is not its own namespace).
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters: [{{name: t, cluster: {{server: 'http://{}'}}}}]\n\
             contexts: [{{name: t, context: {{cluster: t, user: u}}}}]\nusers: [{{name: u, user: {{}}}}]\n",
            api.addr
        ),
    )
    .expect("kubeconfig");
    let admin_port = free_port();
    let _node = Kill(
        Command::new(BIN)
            .args(["node", "--kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--node-name", "n1", "--no-capture", "--bind", "127.0.0.1"])
            .args(["--ca-addr", &format!("localhost:{ca_port}")])
            .arg("--ca-root")
            .arg(tmp.path().join("root.pem"))
            .arg("--token-file")
            .arg(tmp.path().join("token"))
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("node.log")).expect("log"))
            .spawn()
            .expect("start the node proxy"),
    );
    let log = tmp.path().join("node.log");
    let ready = async || admin(admin_port, "/ready").await;
    wait_until("the node proxy to be ready", async || {
        ready().await.0 == 200
    })
    .await;
    let m = admin(admin_port, "/metrics").await.1;
    assert_eq!(
        metric(&m, "gatehouse_mesh_certificates_issued_total"),
        2,
        "two certificates, for client and client2 (web runs on n2):\n{m}"
    );

    // A new Pod on n1: the proxy sees it and gets its certificate.
    api.apply(pod("api", "n1", "10.1.0.6"));
    wait_until("the new pod's certificate", async || {
        metric(
            &admin(admin_port, "/metrics").await.1,
            "gatehouse_mesh_certificates_issued_total",
        ) == 3
    })
    .await;
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    let version = body.clone();

    // An invalid policy in the API: rejected, the last good view stays.
    api.apply(
        json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"action": "MAYBE", "rules": [{}]}}),
    );
    wait_until("the rejection", async || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("mesh configuration rejected"))
    })
    .await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("AuthorizationPolicy shop/broken"),
        "the error names the object:\n{logged}"
    );
    assert_eq!(
        ready().await,
        (200, version),
        "still serving the last good view"
    );
}
