//! Proxies on a cluster admitted to the controller by their service-account tokens,
//! reviewed by the API server (the in-test one, which answers TokenReviews as a real
//! one does): the real controller server and the real client over loopback. A gateway
//! whose token is its own pod's and a node proxy whose token's pod runs on its node are
//! served; a token of another pod, another node, an account not granted the role, or
//! another audience is refused, and told why.

mod support;
use gatehouse::control_tokenreview::{ReviewedProxies, CONTROL_AUDIENCE};
use gatehouse_control::client::{follow, Follow, FollowStats};
use gatehouse_control::pb::config_distribution_client::ConfigDistributionClient;
use gatehouse_control::pb::{DeltaRequest, Proxy};
use gatehouse_control::server::Distributor;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::apiserver::ApiServer;

fn proxy(id: &str, role: &str, node: &str) -> Proxy {
    Proxy {
        id: id.into(),
        role: role.into(),
        node: node.into(),
        ..Proxy::default()
    }
}

/// The controller's answer to `proxy` with `token`: Ok if served, else the refusal.
async fn ask(url: &str, who: Proxy, token: &str) -> Result<(), String> {
    let mut client = ConfigDistributionClient::connect(url.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(DeltaRequest {
        proxy: Some(who),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let mut stream = client
        .deltas(request)
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    stream
        .message()
        .await
        .map_err(|s| s.message().to_string())?
        .map(|_| ())
        .ok_or_else(|| "no response".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_are_admitted_by_their_service_account_tokens() {
    let api = ApiServer::start().await;
    let user = |sa: &str, pod: &str, node: &str| {
        json!({"username": format!("system:serviceaccount:gatehouse-system:{sa}"),
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/pod-name": [pod],
                "authentication.kubernetes.io/pod-uid": ["uid-1"],
                "authentication.kubernetes.io/node-name": [node]}})
    };
    api.grant_token(
        "eyJ.gw-1.sig",
        &[CONTROL_AUDIENCE],
        user("gatehouse", "gw-1", "n1"),
    );
    api.grant_token(
        "eyJ.node-n1.sig",
        &[CONTROL_AUDIENCE],
        user("gatehouse-node", "gatehouse-node-a", "n1"),
    );
    api.grant_token(
        "eyJ.api.sig",
        &["https://kubernetes.default.svc"],
        user("gatehouse", "gw-1", "n1"),
    );

    let d = Distributor::new("test-controller");
    let accounts = [
        (
            "gateway".to_string(),
            "gatehouse-system/gatehouse".to_string(),
        ),
        (
            "node".to_string(),
            "gatehouse-system/gatehouse-node".to_string(),
        ),
    ];
    d.require(Arc::new(
        ReviewedProxies::new(None, api.client(), &accounts).expect("auth"),
    ));
    let objects = gatehouse_model::manifest::parse_manifest(
        "t.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n",
    )
    .expect("manifest")
    .objects;
    d.sync(&gatehouse_model::ObjectStore::from_objects(objects));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    d.serve(listener, None);

    // Served: a gateway with its own pod's token, a node proxy with a token of a pod on
    // its node, through the real client.
    let tmp = tempfile::tempdir().expect("tmp");
    let mut followers = Vec::new();
    for (who, token) in [
        (proxy("gw-1", "gateway", ""), "eyJ.gw-1.sig"),
        (proxy("n1/node", "node", "n1"), "eyJ.node-n1.sig"),
    ] {
        let file = tmp.path().join(format!("{}.token", who.role));
        std::fs::write(&file, token).expect("token");
        let stats = Arc::new(FollowStats::default());
        let to = Follow {
            url: url.clone(),
            proxy: who,
            token_file: Some(file),
            ca_file: None,
            client_cert: None,
        };
        tokio::spawn(follow(to, stats.clone(), |_| async { Ok(()) }));
        followers.push(stats);
    }
    let start = Instant::now();
    while !followers
        .iter()
        .all(|s| s.acks.load(Ordering::Relaxed) >= 1)
    {
        assert!(start.elapsed() < Duration::from_secs(20), "both served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed: Vec<String> = d
        .proxies()
        .iter()
        .filter_map(|p| p.proxy.as_ref().map(|p| p.id.clone()))
        .collect();
    assert_eq!(listed, ["gw-1", "n1/node"]);

    // Refused, each for its reason.
    for (who, token, why) in [
        (
            proxy("gw-2", "gateway", ""),
            "eyJ.gw-1.sig",
            "pod \"gw-1\"'s, not \"gw-2\"'s",
        ),
        (
            proxy("n2/node", "node", "n2"),
            "eyJ.node-n1.sig",
            "runs on \"n1\", not \"n2\"",
        ),
        (
            proxy("gw-1", "gateway", ""),
            "eyJ.node-n1.sig",
            "not granted the role \"gateway\"",
        ),
        (
            proxy("gw-1", "gateway", ""),
            "eyJ.api.sig",
            "did not authenticate",
        ),
        (
            proxy("gw-1", "gateway", ""),
            "eyJ.forged.sig",
            "invalid bearer token",
        ),
    ] {
        let id = who.id.clone();
        let refused = ask(&url, who, token).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains(why)),
            "{id} with {token}: {refused:?}"
        );
    }
    assert_eq!(d.proxies().len(), 2, "no refused proxy is listed");
}
