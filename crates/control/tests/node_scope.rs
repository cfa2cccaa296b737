//! Per-node scoping over the real protocol: a controller's Distributor served on
//! loopback and node proxies following it with the real client. Each node proxy
//! holds the policies of the root namespace and of the namespaces it runs pods of;
//! when pods move, policies follow them, and a proxy that reconnects resumes with
//! only the difference.

use gatehouse_control::client::{follow, Changes, Follow, FollowStats};
use gatehouse_control::pb::Proxy;
use gatehouse_control::server::Distributor;
use gatehouse_model::manifest::parse_manifest;
use gatehouse_model::ObjectStore;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn store(yaml: &str) -> ObjectStore {
    ObjectStore::from_objects(parse_manifest("t.yaml", yaml).expect("manifest").objects)
}

fn pod(ns: &str, name: &str, node: &str) -> String {
    format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{namespace: {ns}, name: {name}}}\nspec: {{nodeName: {node}}}\nstatus: {{phase: Running, podIP: 10.0.0.1}}\n")
}

fn policy(kind: &str, ns: &str, name: &str) -> String {
    format!("---\napiVersion: gatehouse.dev/v1alpha1\nkind: {kind}\nmetadata: {{namespace: {ns}, name: {name}}}\nspec: {{}}\n")
}

fn service(ns: &str, name: &str) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: {ns}, name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n")
}

/// What one following node proxy holds, as resource names.
#[derive(Clone, Default)]
struct Held(Arc<Mutex<BTreeSet<String>>>);

impl Held {
    fn policies(&self) -> Vec<String> {
        let held = self.0.lock().expect("lock");
        held.iter()
            .filter(|n| {
                n.starts_with("AuthorizationPolicy/") || n.starts_with("PeerAuthentication/")
            })
            .cloned()
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.0.lock().expect("lock").contains(name)
    }
}

fn start_node(
    url: &str,
    node: &str,
    stats: Arc<FollowStats>,
) -> (Held, tokio::task::JoinHandle<()>) {
    let held = Held::default();
    let h = held.clone();
    let to = Follow {
        url: url.to_string(),
        proxy: Proxy {
            id: format!("{node}/node"),
            role: "node".into(),
            node: node.into(),
            cluster: String::new(),
            version: "test".into(),
        },
        token_file: None,
        ca_file: None,
        client_cert: None,
    };
    let task = tokio::spawn(follow(to, stats, move |c: Changes| {
        let h = h.clone();
        async move {
            let mut held = h.0.lock().expect("lock");
            for k in &c.removals {
                held.remove(&gatehouse_control::table::resource_name(k));
            }
            for o in &c.upserts {
                held.insert(gatehouse_control::table::resource_name(&o.key()));
            }
            Ok(())
        }
    }));
    (held, task)
}

/// A TCP relay in front of a controller, which can be pointed at another one,
/// cutting every connection through it (as a controller's restart would).
struct Relay {
    url: String,
    to: Arc<Mutex<(std::net::SocketAddr, Vec<tokio::task::JoinHandle<()>>)>>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new((to, Vec::new())));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = s.lock().expect("lock").0;
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                s.lock().expect("lock").1.push(conn);
            }
        });
        Relay { url, to: state }
    }

    fn switch(&self, to: std::net::SocketAddr) {
        let mut state = self.to.lock().expect("lock");
        state.0 = to;
        for conn in state.1.drain(..) {
            conn.abort();
        }
    }
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..800 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn node_proxies_hold_only_their_nodes_policies() {
    let policies = [
        policy("AuthorizationPolicy", "gatehouse-system", "deny-all"),
        policy("AuthorizationPolicy", "shop", "allow-front"),
        policy("PeerAuthentication", "shop", "strict"),
        policy("AuthorizationPolicy", "bank", "allow-tellers"),
        policy("AuthorizationPolicy", "empty", "nobody-here"),
    ]
    .concat();
    let world = |pods: &str| store(&[&policies, &service("shop", "web"), pods].concat());
    let d = Distributor::new("test-controller");
    d.sync(&world(
        &(pod("shop", "web-1", "n1") + &pod("bank", "ledger-1", "n2")),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let first = listener.local_addr().expect("addr");
    let _server = d.serve(listener, None);
    let relay = Relay::start(first).await;

    let (n1, t1) = start_node(&url, "n1", Arc::default());
    let n2_stats = Arc::new(FollowStats::default());
    let (n2, t2) = start_node(&relay.url, "n2", n2_stats.clone());
    let (n1_want, n2_want) = (
        vec![
            "AuthorizationPolicy/gatehouse-system/deny-all",
            "AuthorizationPolicy/shop/allow-front",
            "PeerAuthentication/shop/strict",
        ],
        vec![
            "AuthorizationPolicy/bank/allow-tellers",
            "AuthorizationPolicy/gatehouse-system/deny-all",
        ],
    );
    eventually("n1's and n2's first sets", || {
        n1.policies() == n1_want && n2.policies() == n2_want
    })
    .await;
    // Everything unscoped goes to every node proxy: Pods, Services.
    for held in [&n1, &n2] {
        assert!(held.has("Service/shop/web") && held.has("Pod/bank/ledger-1"));
    }
    // Both proxies report the versions the controller wants them at.
    eventually("both in sync", || {
        let p = d.proxies();
        p.len() == 2
            && p.iter()
                .all(|p| !p.acked_version.is_empty() && p.acked_version == p.desired_version)
    })
    .await;
    let versions: BTreeSet<String> = d.proxies().into_iter().map(|p| p.acked_version).collect();
    assert_eq!(versions.len(), 2, "each node's set has its own version");

    // shop's pod moves to n2: shop's policies leave n1 and come to n2.
    d.sync(&world(
        &(pod("shop", "web-1", "n2") + &pod("bank", "ledger-1", "n2")),
    ));
    eventually("shop's policies moved to n2", || {
        n1.policies() == ["AuthorizationPolicy/gatehouse-system/deny-all"]
            && n2.policies()
                == [
                    "AuthorizationPolicy/bank/allow-tellers",
                    "AuthorizationPolicy/gatehouse-system/deny-all",
                    "AuthorizationPolicy/shop/allow-front",
                    "PeerAuthentication/shop/strict",
                ]
    })
    .await;

    // A change to a policy of a namespace n1 runs nothing of is not sent to n1.
    let n1_acked = || {
        d.proxies()
            .into_iter()
            .find(|p| p.proxy.as_ref().is_some_and(|p| p.node == "n1"))
            .expect("n1")
            .acked_version
    };
    let before = n1_acked();
    let edited = policies.replace("nobody-here", "still-nobody");
    let moved = pod("shop", "web-1", "n2") + &pod("bank", "ledger-1", "n2");
    d.sync(&store(
        &[edited.as_str(), &service("shop", "web"), &moved].concat(),
    ));
    eventually("n2 in sync after the edit", || {
        d.proxies()
            .iter()
            .all(|p| p.acked_version == p.desired_version)
    })
    .await;
    assert_eq!(before, n1_acked(), "n1's set did not change");
    assert!(!n1.has("AuthorizationPolicy/empty/still-nobody"));

    // The controller restarts (a new one, rebuilt from the same sources, behind the
    // address n2's proxy follows): n2 resumes with what it holds and is sent no whole
    // set again.
    let full_before = n2_stats
        .full_states
        .load(std::sync::atomic::Ordering::Relaxed);
    let d2 = Distributor::new("test-controller-2");
    d2.sync(&store(
        &[edited.as_str(), &service("shop", "web"), &moved].concat(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let second = listener.local_addr().expect("addr");
    let _server2 = d2.serve(listener, None);
    relay.switch(second);
    eventually("n2 resumed in sync", || {
        d2.proxies().iter().any(|p| {
            p.proxy.as_ref().is_some_and(|p| p.node == "n2")
                && !p.acked_version.is_empty()
                && p.acked_version == p.desired_version
        })
    })
    .await;
    assert_eq!(
        n2_stats
            .full_states
            .load(std::sync::atomic::Ordering::Relaxed),
        full_before,
        "no whole set on resumption"
    );
    assert_eq!(n2.policies().len(), 4);
    t1.abort();
    t2.abort();
}
