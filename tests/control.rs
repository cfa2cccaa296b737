//! The central controller and remote gateways as real processes over loopback: a
//! controller (`run --config DIR --control-listen`) serves two gateways (`run
//! --controller URL`). A change reaches both; a config one gateway cannot apply (its
//! listener port is taken on its address) is rejected by that gateway alone (NACK),
//! which keeps serving the version before while `ctl proxies` says why, and which
//! catches up with the next change; the controller killed under load leaves the
//! gateways serving, and once restarted it resumes them without a full reload. Only
//! proxies with a token that admits them are served; a revoked token closes its
//! proxy's stream (the proxy keeps serving what it has).

mod support;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn app_ingress(svc: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: app, namespace: default}}\nspec:\n  rules:\n  - host: app.example\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: {svc}, port: {{number: 80}}}}\n"
    )
}

fn gateway(port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  gatewayClassName: gatehouse
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: gw, namespace: default}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [gw.example]
  rules: [{{backendRefs: [{{name: svc-a, port: 80}}]}}]
"
    )
}

/// One gatehouse process, with its addresses.
struct Process {
    child: Kill,
    http: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    log: std::path::PathBuf,
}

/// Starts `gatehouse run` with `args`, its Ingress listener on `ip` and Gateway
/// listeners on `ip`.
fn start(ip: &str, args: &[&str], log: std::path::PathBuf) -> Process {
    let port = |a: std::net::SocketAddr| a.port();
    let http: std::net::SocketAddr = format!("{ip}:{}", port(free_addr())).parse().expect("addr");
    let https = format!("{ip}:{}", port(free_addr()));
    let admin = free_addr();
    let child = Command::new(BIN)
        .arg("run")
        .args(args)
        .args(["--http-addr", &http.to_string(), "--https-addr", &https])
        .args(["--gateway-host", ip, "--admin-addr", &admin.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start gatehouse");
    Process {
        child: Kill(child),
        http,
        admin,
        log,
    }
}

/// One GET on a new connection: (status, body); (0, "") if there is no answer.
async fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
    else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.0\r\nhost: {host}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// The backend that answers `host` at `addr` ("" if none does).
async fn served_by(addr: std::net::SocketAddr, host: &str) -> String {
    match get(addr, host, "/").await {
        (200, body) => serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["service"].as_str().map(str::to_string))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

async fn metrics(p: &Process) -> String {
    get(p.admin, "admin", "/metrics").await.1
}

/// A directory where `app.example` goes to Service svc-a, backed by echo "a" (whose
/// address comes back too).
async fn app_dir() -> (tempfile::TempDir, std::net::SocketAddr) {
    let a = echo("a").await;
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "classes.yaml", CLASSES);
    write(
        dir.path(),
        "services.yaml",
        &service("default", "svc-a", a, None),
    );
    write(dir.path(), "app.yaml", &app_ingress("svc-a"));
    (dir, a)
}

/// Each gateway's Snapshots installed and whole sets received, to tell a resumption
/// from a reload.
async fn reloads(gateways: &[&Process]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for g in gateways {
        let m = metrics(g).await;
        out.push((
            metric(&m, "gatehouse_config_reloads_total"),
            metric(&m, "gatehouse_control_full_states_total"),
        ));
    }
    out
}

/// Waits until every one of `gateways` answers `host` from backend `want`.
async fn all_serve(gateways: &[&Process], host: &str, want: &str, what: &str) {
    for g in gateways {
        wait_until(what, Duration::from_secs(20), async || {
            served_by(g.http, host).await == want
        })
        .await;
    }
}

async fn wait_until(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ctl_proxies(control: &str) -> serde_json::Value {
    ctl_proxies_trusting(control, None)
}

/// `ctl proxies --json`, trusting `ca` for an `https://` controller.
fn ctl_proxies_trusting(control: &str, ca: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new(BIN);
    cmd.args(["ctl", "proxies", "--json", "--controller", control]);
    if let Some(ca) = ca {
        cmd.args(["--controller-ca", ca]);
    }
    let out = cmd.output().expect("ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A controller's TLS files in `dir`, from a new CA, for `localhost`: (certificate, key,
/// the CA's certificate), as paths.
fn controller_tls(dir: &std::path::Path) -> (String, String, String) {
    let ca = support::tls::Ca::new();
    let (cert, key, _) = ca.leaf(&["localhost"]);
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("path").to_string()
    };
    (
        file("cert.pem", &cert),
        file("key.pem", &key),
        file("ca.pem", &ca.pem()),
    )
}

/// The ids of the proxies a `ctl proxies --json` list holds.
fn proxy_ids(list: &serde_json::Value) -> Vec<String> {
    list["proxies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The log lines of `p`'s failed attempts to reach the controller.
fn failed_attempts(p: &Process) -> Vec<String> {
    std::fs::read_to_string(&p.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("no stream to the controller"))
        .map(str::to_string)
        .collect()
}

fn proxy<'a>(list: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    list["proxies"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == id))
        .unwrap_or_else(|| panic!("{id} is not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_serves_gateways_that_ack_nack_and_outlive_it() {
    let (a, b) = (echo("a").await, echo("b").await);
    let dir = tempfile::tempdir().expect("tmp");
    let services = [
        service("default", "svc-a", a, None),
        service("default", "svc-b", b, None),
    ]
    .concat();
    write(dir.path(), "classes.yaml", CLASSES);
    write(dir.path(), "services.yaml", &services);
    write(dir.path(), "app.yaml", &app_ingress("svc-a"));
    let control_addr = free_addr();
    let control = format!("http://{control_addr}");
    let logs = tempfile::tempdir().expect("logs");
    let config = dir.path().to_str().expect("path").to_string();
    // Tokens: one per gateway; g3's is g1's, so it does not admit g3.
    let tokens = logs.path().join("tokens");
    std::fs::write(
        &tokens,
        "g1-token-0123456789abcdef gateway g1\ng2-token-0123456789abcdef gateway g2\n",
    )
    .expect("tokens");
    for (name, token) in [
        ("g1", "g1-token-0123456789abcdef"),
        ("g2", "g2-token-0123456789abcdef"),
        ("g3", "g1-token-0123456789abcdef"),
    ] {
        std::fs::write(logs.path().join(format!("{name}.token")), token).expect("token");
    }
    let token_of = |name: &str| {
        logs.path()
            .join(format!("{name}.token"))
            .to_str()
            .expect("path")
            .to_string()
    };
    let controller_args = [
        "--config",
        &config,
        "--control-listen",
        &control_addr.to_string(),
        "--control-tokens",
        tokens.to_str().expect("path"),
    ];
    let mut controller = start(
        "127.0.0.1",
        &controller_args,
        logs.path().join("controller.log"),
    );
    let gateway_args = |name: &str| -> Vec<String> {
        ["--controller", &control, "--identity", name]
            .iter()
            .map(|s| s.to_string())
            .chain(["--controller-token-file".to_string(), token_of(name)])
            .collect()
    };
    let (a1, mut a2, a3) = (gateway_args("g1"), gateway_args("g2"), gateway_args("g3"));
    a2.extend(["--cluster".to_string(), "east".to_string()]);
    let g1 = start("127.0.0.2", &refs(&a1), logs.path().join("g1.log"));
    let g2 = start("127.0.0.3", &refs(&a2), logs.path().join("g2.log"));
    let g3 = start("127.0.0.4", &refs(&a3), logs.path().join("g3.log"));
    all_serve(
        &[&g1, &g2],
        "app.example",
        "a",
        "a gateway to serve the controller's config",
    )
    .await;
    // g3's token admits g1, not g3: refused, never served, and told why.
    let log_of = |p: &Process| std::fs::read_to_string(&p.log).unwrap_or_default();
    wait_until("g3's refusal", Duration::from_secs(20), async || {
        log_of(&g3).contains("g3 refused")
    })
    .await;
    let refused = log_of(&g3);
    assert!(
        refused.contains("g3 refused: the token admits") && refused.contains("g1"),
        "{refused}"
    );
    assert_eq!(get(g3.admin, "admin", "/readyz").await.0, 503);
    // An ACK follows the serving by a moment.
    let both_in_sync = |list: &serde_json::Value| {
        list["proxies"].as_array().map(Vec::len) == Some(2)
            && proxy(list, "g1")["inSync"] == true
            && proxy(list, "g2")["inSync"] == true
    };
    wait_until(
        "both gateways in sync",
        Duration::from_secs(10),
        async || both_in_sync(&ctl_proxies(&control)),
    )
    .await;
    let list = ctl_proxies(&control);
    let first = proxy(&list, "g1")["ackedVersion"].clone();
    for id in ["g1", "g2"] {
        let p = proxy(&list, id);
        assert_eq!(p["role"], "gateway");
        assert_eq!(p["inSync"], true, "{p}");
        assert_eq!(
            p["ackedVersion"], first,
            "the same objects, the same version"
        );
    }
    assert_eq!(proxy(&list, "g2")["cluster"], "east");

    // A change reaches both.
    write(dir.path(), "app.yaml", &app_ingress("svc-b"));
    all_serve(
        &[&g1, &g2],
        "app.example",
        "b",
        "the change to reach a gateway",
    )
    .await;

    // A Gateway listener whose port g1 cannot bind on its address: g1 rejects that
    // version and keeps the one before; g2 and the controller serve it.
    let port = free_addr().port();
    let taken = std::net::TcpListener::bind(("127.0.0.2", port)).expect("take the port");
    write(dir.path(), "gateway.yaml", &gateway(port));
    let g2_gw: std::net::SocketAddr = format!("127.0.0.3:{port}").parse().expect("addr");
    wait_until(
        "g2 to serve the new listener",
        Duration::from_secs(10),
        async || served_by(g2_gw, "gw.example").await == "a",
    )
    .await;
    wait_until(
        "g1's NACK to be reported",
        Duration::from_secs(10),
        async || {
            let list = ctl_proxies(&control);
            proxy(&list, "g1")["lastNack"]
                .as_str()
                .is_some_and(|n| n.contains(&format!("127.0.0.2:{port}")))
                && proxy(&list, "g2")["inSync"] == true
        },
    )
    .await;
    let list = ctl_proxies(&control);
    let (p1, p2) = (proxy(&list, "g1"), proxy(&list, "g2"));
    assert_eq!(p1["inSync"], false, "{p1}");
    assert_eq!(p2["inSync"], true, "{p2}");
    assert_ne!(p1["ackedVersion"], p2["ackedVersion"]);
    assert!(metric(&metrics(&g1).await, "gatehouse_control_nacks_total") >= 1.0);
    assert_eq!(
        served_by(g1.http, "app.example").await,
        "b",
        "g1 keeps serving"
    );
    let table = Command::new(BIN)
        .args(["ctl", "proxies", "--controller", &control])
        .output()
        .expect("ctl");
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains("g1") && table.contains("no") && table.contains(&port.to_string()),
        "{table}"
    );

    // With the port free, the next change brings g1 up to date, the listener with it.
    drop(taken);
    write(dir.path(), "app.yaml", &app_ingress("svc-a"));
    let g1_gw: std::net::SocketAddr = format!("127.0.0.2:{port}").parse().expect("addr");
    wait_until("g1 to catch up", Duration::from_secs(10), async || {
        served_by(g1_gw, "gw.example").await == "a"
    })
    .await;
    wait_until("both in sync", Duration::from_secs(10), async || {
        let list = ctl_proxies(&control);
        proxy(&list, "g1")["inSync"] == true && proxy(&list, "g2")["inSync"] == true
    })
    .await;

    // The controller dies under load: the gateways keep serving, with no failure.
    // (First let the gateways settle: a full pass reconciles incremental ones a second
    // after the last change.)
    let mut last = (Vec::new(), Instant::now());
    wait_until(
        "the gateways to settle",
        Duration::from_secs(10),
        async || {
            let mut now = Vec::new();
            for g in [&g1, &g2] {
                now.push(metric(&metrics(g).await, "gatehouse_config_reloads_total"));
            }
            if now != last.0 {
                last = (now, Instant::now());
            }
            last.1.elapsed() > Duration::from_millis(1500)
        },
    )
    .await;
    let before = reloads(&[&g1, &g2]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for addr in [g1.http, g2.http] {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match served_by(addr, "app.example").await.as_str() {
                    "a" => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let _ = controller.child.0.kill();
    let _ = controller.child.0.wait();
    for g in [&g1, &g2] {
        wait_until(
            "the gateway to see the controller gone",
            Duration::from_secs(30),
            async || metric(&metrics(g).await, "gatehouse_control_connected") == 0.0,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    controller = start(
        "127.0.0.1",
        &controller_args,
        logs.path().join("controller2.log"),
    );
    for g in [&g1, &g2] {
        wait_until(
            "the gateway to reconnect",
            Duration::from_secs(20),
            async || metric(&metrics(g).await, "gatehouse_control_connected") == 1.0,
        )
        .await;
    }
    wait_until(
        "both in sync with the new controller",
        Duration::from_secs(10),
        async || {
            let list = ctl_proxies(&control);
            list["proxies"].as_array().map(Vec::len) == Some(2)
                && proxy(&list, "g1")["inSync"] == true
                && proxy(&list, "g2")["inSync"] == true
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 50, "load ran: {ok} ok");
    assert_eq!(
        failed, 0,
        "no request failed while the controller was away ({ok} ok)"
    );
    // Resumed: nothing was sent again in full, nothing reloaded.
    assert_eq!(
        reloads(&[&g1, &g2]).await,
        before,
        "no reload, no full state"
    );
    // And changes flow again.
    write(dir.path(), "app.yaml", &app_ingress("svc-b"));
    all_serve(
        &[&g1, &g2],
        "app.example",
        "b",
        "a change after the restart",
    )
    .await;
    drop(controller);
}

fn pod(name: &str, node: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {name}}}}}\nspec: {{nodeName: {node}, serviceAccountName: {name}, containers: [{{name: main}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
    )
}

/// A node proxy (`node --controller`) takes the mesh from the controller's stream: it
/// is sent the mesh's kinds, gets certificates for its node's workloads, follows a new
/// Pod, and is listed with its role and node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_proxy_follows_the_controller() {
    let dir = tempfile::tempdir().expect("tmp");
    let mesh = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {gatehouse.dev/mesh: node}}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: 127.0.0.1}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n2}\nstatus: {addresses: [{type: InternalIP, address: 127.0.0.9}]}\n";
    write(dir.path(), "classes.yaml", CLASSES);
    write(dir.path(), "mesh.yaml", mesh);
    write(
        dir.path(),
        "pods.yaml",
        &(pod("client", "n1", "10.1.0.5") + &pod("web", "n2", "10.2.0.5")),
    );
    let state = tempfile::tempdir().expect("state");
    std::fs::write(
        state.path().join("tokens"),
        "n1-token-0123456789abcdef n1\n",
    )
    .expect("tokens");
    std::fs::write(state.path().join("token"), "n1-token-0123456789abcdef\n").expect("token");
    // The same token admits n1's proxy to the controller.
    let control_tokens = state.path().join("control-tokens");
    std::fs::write(&control_tokens, "n1-token-0123456789abcdef node n1\n").expect("tokens");
    let (control_addr, ca_addr) = (free_addr(), free_addr());
    let control = format!("http://{control_addr}");
    let config = dir.path().to_str().expect("path").to_string();
    let ca_dir = state.path().join("ca");
    let tokens = state.path().join("tokens");
    let controller_args = [
        "--config",
        &config,
        "--control-listen",
        &control_addr.to_string(),
        "--mesh-ca-listen",
        &ca_addr.to_string(),
        "--mesh-ca-dir",
        ca_dir.to_str().expect("path"),
        "--mesh-node-tokens",
        tokens.to_str().expect("path"),
        "--control-tokens",
        control_tokens.to_str().expect("path"),
    ];
    let _controller = start(
        "127.0.0.1",
        &controller_args,
        state.path().join("controller.log"),
    );
    let root = ca_dir.join("root-cert.pem");
    wait_until("the CA's root", Duration::from_secs(20), async || {
        root.exists()
    })
    .await;
    let admin = free_addr();
    let _node = Kill(
        Command::new(BIN)
            .args(["node", "--controller", &control, "--node-name", "n1"])
            .arg("--controller-token-file")
            .arg(state.path().join("token"))
            .args(["--no-capture", "--bind", "127.0.0.1"])
            .args(["--ca-addr", &ca_addr.to_string()])
            .arg("--ca-root")
            .arg(&root)
            .arg("--token-file")
            .arg(state.path().join("token"))
            .args(["--admin-addr", &admin.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.path().join("node.log")).expect("log"))
            .spawn()
            .expect("start the node proxy"),
    );
    let issued = async || {
        metric(
            &get(admin, "admin", "/metrics").await.1,
            "gatehouse_mesh_certificates_issued_total",
        )
    };
    wait_until(
        "the node proxy's first certificate",
        Duration::from_secs(20),
        async || issued().await == 1.0,
    )
    .await;
    assert_eq!(get(admin, "admin", "/ready").await.0, 200);
    let list = ctl_proxies(&control);
    let p = proxy(&list, "n1/node");
    assert_eq!(
        (p["role"].as_str(), p["node"].as_str()),
        (Some("node"), Some("n1"))
    );
    wait_until(
        "the node proxy in sync",
        Duration::from_secs(10),
        async || proxy(&ctl_proxies(&control), "n1/node")["inSync"] == true,
    )
    .await;
    // A new Pod on n1 reaches the node proxy through the controller.
    write(
        dir.path(),
        "pods.yaml",
        &(pod("client", "n1", "10.1.0.5")
            + &pod("web", "n2", "10.2.0.5")
            + &pod("api", "n1", "10.1.0.6")),
    );
    wait_until(
        "the new Pod's certificate",
        Duration::from_secs(20),
        async || issued().await == 2.0,
    )
    .await;
}

/// Two controller replicas serve the same directory: gateways spread over them, and
/// when one dies its gateways move to the other, which has the same versions, so they
/// reload nothing and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_gateways_and_take_over_from_each_other() {
    let (dir, a) = app_dir().await;
    let logs = tempfile::tempdir().expect("logs");
    let config = dir.path().to_str().expect("path").to_string();
    let (c1, c2) = (free_addr(), free_addr());
    let urls = format!("http://{c1},http://{c2}");
    let replica = |addr: std::net::SocketAddr, ip: &str, log: &str| {
        let args = ["--config", &config, "--control-listen", &addr.to_string()];
        start(ip, &args, logs.path().join(log))
    };
    let mut r1 = replica(c1, "127.0.0.1", "r1.log");
    let _r2 = replica(c2, "127.0.0.5", "r2.log");
    // Both replicas listen before the gateways start (one that finds its replica down
    // moves to the other, and stays).
    for c in [c1, c2] {
        wait_until("a replica to listen", Duration::from_secs(20), async || {
            tokio::net::TcpStream::connect(c).await.is_ok()
        })
        .await;
    }
    let mut gateways = Vec::new();
    for (i, id) in ["gw-a", "gw-b", "gw-c", "gw-d", "gw-e", "gw-f"]
        .iter()
        .enumerate()
    {
        let ip = format!("127.0.1.{}", i + 1);
        let args = ["--controller", urls.as_str(), "--identity", id];
        gateways.push(start(&ip, &args, logs.path().join(format!("{id}.log"))));
    }
    let all: Vec<&Process> = gateways.iter().collect();
    all_serve(&all, "app.example", "a", "every gateway served").await;
    let count = |url: &str| {
        ctl_proxies(url)["proxies"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };
    let (u1, u2) = (format!("http://{c1}"), format!("http://{c2}"));
    wait_until("all gateways listed", Duration::from_secs(10), async || {
        count(&u1) + count(&u2) == 6
    })
    .await;
    assert!(
        count(&u1) > 0 && count(&u2) > 0,
        "spread over both: {} and {}",
        count(&u1),
        count(&u2)
    );
    let listed = || -> Vec<serde_json::Value> {
        [&u1, &u2]
            .iter()
            .flat_map(|u| {
                ctl_proxies(u)["proxies"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    };
    wait_until(
        "every gateway in sync",
        Duration::from_secs(10),
        async || listed().iter().all(|p| p["inSync"] == true),
    )
    .await;
    let versions: std::collections::BTreeSet<String> = listed()
        .iter()
        .map(|p| p["ackedVersion"].to_string())
        .collect();
    assert_eq!(
        versions.len(),
        1,
        "one version on both replicas: {versions:?}"
    );
    let before = reloads(&all).await;
    // Replica 1 dies: its gateways go to replica 2, resume, and reload nothing.
    let _ = r1.child.0.kill();
    let _ = r1.child.0.wait();
    wait_until(
        "every gateway on replica 2",
        Duration::from_secs(20),
        async || {
            let list = ctl_proxies(&u2);
            list["proxies"]
                .as_array()
                .is_some_and(|p| p.len() == 6 && p.iter().all(|p| p["inSync"] == true))
        },
    )
    .await;
    assert_eq!(reloads(&all).await, before, "no reload, no full state");
    for g in &gateways {
        assert_eq!(served_by(g.http, "app.example").await, "a");
    }
    // Changes reach them through replica 2.
    let b = echo("b").await;
    write(
        dir.path(),
        "services.yaml",
        &(service("default", "svc-a", a, None) + &service("default", "svc-b", b, None)),
    );
    write(dir.path(), "app.yaml", &app_ingress("svc-b"));
    all_serve(&all, "app.example", "b", "the change through replica 2").await;
}

/// Over TLS: the controller presents its certificate, a gateway that trusts its CA is
/// served (its token inside TLS), and one that trusts another CA, or speaks plaintext,
/// is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_controller_serves_only_proxies_that_trust_it() {
    let (dir, _a) = app_dir().await;
    let state = tempfile::tempdir().expect("state");
    let file = |name: &str, text: &str| {
        let p = state.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("path").to_string()
    };
    let (cert, key, ca_pem) = controller_tls(state.path());
    let other_ca = file("other-ca.pem", &support::tls::Ca::new().pem());
    let tokens = file("tokens", "tls-token-0123456789ab gateway *\n");
    let token = file("token", "tls-token-0123456789ab\n");
    let control_addr = free_addr();
    let config = dir.path().to_str().expect("path").to_string();
    let args = [
        "--config",
        &config,
        "--control-listen",
        &control_addr.to_string(),
        "--control-tls-cert",
        &cert,
        "--control-tls-key",
        &key,
        "--control-tokens",
        &tokens,
    ];
    let _controller = start("127.0.0.1", &args, state.path().join("controller.log"));
    let https = format!("https://localhost:{}", control_addr.port());
    let gateway = |ip: &str, id: &str, url: &str, ca: &str| {
        let args = [
            "--controller",
            url,
            "--identity",
            id,
            "--controller-token-file",
            &token,
            "--controller-ca",
            ca,
        ];
        start(ip, &args, state.path().join(format!("{id}.log")))
    };
    let trusted = gateway("127.0.0.2", "trusted", &https, &ca_pem);
    let stranger = gateway("127.0.0.3", "stranger", &https, &other_ca);
    let plain = gateway(
        "127.0.0.4",
        "plain",
        &format!("http://{control_addr}"),
        &ca_pem,
    );
    all_serve(
        &[&trusted],
        "app.example",
        "a",
        "the trusting gateway served",
    )
    .await;
    // Attempts made once the controller is up (the trusted gateway was served) fail:
    // the stranger's for the certificate, the plaintext one at all.
    for g in [&stranger, &plain] {
        let before = failed_attempts(g).len();
        wait_until(
            "a failed attempt at the running controller",
            Duration::from_secs(20),
            async || failed_attempts(g).len() > before,
        )
        .await;
    }
    let last = failed_attempts(&stranger).pop().unwrap_or_default();
    assert!(last.to_lowercase().contains("certificate"), "{last}");
    for g in [&stranger, &plain] {
        assert_eq!(
            get(g.admin, "admin", "/readyz").await.0,
            503,
            "{}",
            g.log.display()
        );
    }
    let ids = proxy_ids(&ctl_proxies_trusting(&https, Some(&ca_pem)));
    assert_eq!(ids, ["trusted"]);
}

/// One controller, two clusters' directories: a Service both define balances across
/// both clusters' endpoints; a gateway that says its cluster prefers that cluster's
/// endpoints and fails over to the other's when its own have none ready; an object
/// they define differently comes from the first, with the conflict logged; `ctl
/// proxies` counts each cluster's objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_merges_two_clusters() {
    let (east, a) = app_dir().await;
    let b = echo("b").await;
    let west = tempfile::tempdir().expect("west");
    // The same Service; its endpoint in the west is b.
    let same_service = service("default", "svc-a", a, None);
    let service_doc = same_service
        .split("\n---\n")
        .find(|d| d.contains("kind: Service"))
        .expect("the Service");
    let west_slice = |ready: bool| {
        format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-a-west\n  namespace: default\n  labels: {{kubernetes.io/service-name: svc-a}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: {ready}}}\n",
        b.port(),
        b.ip()
    )
    };
    let west_services = |ready: bool| format!("---\n{service_doc}\n---\n{}", west_slice(ready));
    write(west.path(), "services.yaml", &west_services(true));
    // And an Ingress of the same name that differs: the east's wins.
    write(
        west.path(),
        "app.yaml",
        &app_ingress("svc-a").replace("app.example", "west.example"),
    );
    let logs = tempfile::tempdir().expect("logs");
    let control_addr = free_addr();
    let control = format!("http://{control_addr}");
    let (east_dir, west_dir) = (
        east.path().to_str().expect("path").to_string(),
        format!("west={}", west.path().display()),
    );
    let args = [
        "--config",
        &east_dir,
        "--cluster",
        "east",
        "--cluster-config",
        &west_dir,
        "--control-listen",
        &control_addr.to_string(),
    ];
    let controller = start("127.0.0.1", &args, logs.path().join("controller.log"));
    // A gateway in the west prefers the west's endpoint while it is ready, and fails
    // over to the east's when it is not.
    let (gw, west_gw) = merged_gateways(&control, logs.path()).await;
    write(west.path(), "services.yaml", &west_services(false));
    all_serve(&[&west_gw], "app.example", "a", "failed over to the east").await;
    write(west.path(), "services.yaml", &west_services(true));
    all_serve(&[&west_gw], "app.example", "b", "back to the west").await;
    assert_eq!(
        served_by(gw.http, "west.example").await,
        "",
        "the east's Ingress wins"
    );
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    assert!(
        log.contains("Ingress default/app: cluster west defines it differently"),
        "{log}"
    );
    let clusters = ctl_proxies(&control)["clusters"].clone();
    assert!(
        clusters["east"].as_u64().is_some_and(|n| n >= 4),
        "{clusters}"
    );
    assert_eq!(clusters["west"], 2, "{clusters}");
}

/// The backends that answer `host` at `gw` over `n` requests.
async fn served_set(gw: &Process, host: &str, n: usize) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        seen.insert(served_by(gw.http, host).await);
    }
    seen.into_iter().collect()
}

/// Two gateways of a controller that merges an east (backend a) and a west (backend
/// b): one of no cluster in particular, served by both clusters' endpoints, and one in
/// the west, served by the west's alone.
async fn merged_gateways(control: &str, logs: &std::path::Path) -> (Process, Process) {
    let gw = start(
        "127.0.0.2",
        &["--controller", control, "--identity", "gw"],
        logs.join("gw.log"),
    );
    let west_gw = start(
        "127.0.0.3",
        &[
            "--controller",
            control,
            "--identity",
            "gw-west",
            "--cluster",
            "west",
        ],
        logs.join("gw-west.log"),
    );
    all_serve(&[&gw], "app.example", "a", "the gateway served").await;
    assert_eq!(
        served_set(&gw, "app.example", 40).await,
        ["a", "b"],
        "both clusters' endpoints serve"
    );
    all_serve(&[&west_gw], "app.example", "b", "the west's gateway served").await;
    assert_eq!(
        served_set(&west_gw, "app.example", 40).await,
        ["b"],
        "the west's own endpoint only"
    );
    (gw, west_gw)
}

/// Applies each document of `yaml` to `api`.
fn apply_yaml(api: &apiserver::ApiServer, yaml: &str) {
    for doc in yaml.split("\n---\n") {
        if doc.trim().trim_start_matches("---").trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_saphyr::from_str(doc).expect("yaml");
        api.apply(v);
    }
}

/// One controller, two clusters' APIs (two in-test API servers, two contexts of one
/// kubeconfig): the controller reads its own cluster's API (`--kubernetes --context`)
/// and the other's (`--cluster-context`), and serves the merge. A Service both define
/// balances across both clusters' endpoints; a gateway in the west prefers the west's
/// and fails over to the east's when the west's go away; a change in either API
/// reaches the gateways; `ctl proxies` counts each cluster's objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_merges_two_clusters_apis() {
    let (east, west) = (
        apiserver::ApiServer::start().await,
        apiserver::ApiServer::start().await,
    );
    let (a, b) = (echo("a").await, echo("b").await);
    apply_yaml(&east, CLASSES);
    apply_yaml(&east, &service("default", "svc-a", a, None));
    apply_yaml(&east, &app_ingress("svc-a"));
    apply_yaml(&west, &service("default", "svc-a", b, None));
    let tmp = tempfile::tempdir().expect("tmp");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: east\nclusters:\n- {{name: east, cluster: {{server: 'http://{}'}}}}\n- {{name: west, cluster: {{server: 'http://{}'}}}}\n\
             contexts:\n- {{name: east, context: {{cluster: east, user: u}}}}\n- {{name: west, context: {{cluster: west, user: u}}}}\nusers: [{{name: u, user: {{}}}}]\n",
            east.addr, west.addr
        ),
    )
    .expect("kubeconfig");
    let control_addr = free_addr();
    let control = format!("http://{control_addr}");
    let kubeconfig = kubeconfig.to_str().expect("path").to_string();
    let _controller = start(
        "127.0.0.1",
        &[
            "--kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "east",
            "--no-status",
            "--cluster",
            "east",
            "--cluster-context",
            "west=west",
            "--control-listen",
            &control_addr.to_string(),
        ],
        tmp.path().join("controller.log"),
    );
    let (gw, west_gw) = merged_gateways(&control, tmp.path()).await;
    // The west's endpoints go: its gateway fails over to the east's.
    west.delete(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "default",
        "svc-a-abc",
    );
    all_serve(&[&west_gw], "app.example", "a", "failed over to the east").await;
    // A change in the east's API reaches both gateways.
    apply_yaml(
        &east,
        &app_ingress("svc-a").replace("app.example", "moved.example"),
    );
    all_serve(&[&gw, &west_gw], "moved.example", "a", "the east's change").await;
}

/// Mutual TLS with the mesh CA: the controller asks proxies for a certificate and
/// checks it against the mesh's root. A gateway whose certificate (from `gatehouse ca
/// issue`) names an identity granted the gateway role is served with no token; one of
/// an identity not granted, or one whose certificate another CA signed for the very
/// same identity, is refused; taking the grant out closes the served gateway's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_certificate_admits_a_proxy_over_mutual_tls() {
    let (dir, _a) = app_dir().await;
    let state = tempfile::tempdir().expect("state");
    let path = |name: &str| state.path().join(name).to_str().expect("path").to_string();
    let file = |name: &str, text: &str| {
        std::fs::write(path(name), text).expect("write");
        path(name)
    };
    let (cert, key, ca_pem) = controller_tls(state.path());
    let edge = "spiffe://cluster.local/ns/gatehouse-system/sa/edge";
    let tokens = file("tokens", &format!("{edge} gateway *\n"));
    let (control_addr, mesh_ca_addr) = (free_addr(), free_addr());
    let config = dir.path().to_str().expect("path").to_string();
    let ca_dir = path("mesh-ca");
    let root = format!("{ca_dir}/root-cert.pem");
    let node_tokens = file("node-tokens", "n1-token-0123456789abcdef n1\n");
    let args = [
        "--config",
        &config,
        "--control-listen",
        &control_addr.to_string(),
        "--control-tls-cert",
        &cert,
        "--control-tls-key",
        &key,
        "--control-client-ca",
        &root,
        "--control-tokens",
        &tokens,
        "--mesh-ca-listen",
        &mesh_ca_addr.to_string(),
        "--mesh-ca-dir",
        &ca_dir,
        "--mesh-node-tokens",
        &node_tokens,
    ];
    // The mesh CA makes its root first; the controller then checks proxies against it.
    let mesh_ca = start(
        "127.0.0.1",
        &[
            "--config",
            &config,
            "--mesh-ca-listen",
            &mesh_ca_addr.to_string(),
            "--mesh-ca-dir",
            &ca_dir,
            "--mesh-node-tokens",
            &node_tokens,
        ],
        path("ca.log").into(),
    );
    wait_until("the mesh root", Duration::from_secs(20), async || {
        std::path::Path::new(&root).exists()
    })
    .await;
    drop(mesh_ca);
    let issue = |identity: &str, name: &str| {
        let out = Command::new(BIN)
            .args(["ca", "issue", "--dir", &ca_dir, "--identity", identity])
            .args([
                "--cert",
                &path(&format!("{name}.pem")),
                "--key",
                &path(&format!("{name}-key.pem")),
            ])
            .output()
            .expect("ca issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    issue("gatehouse-system/edge", "edge");
    issue("shop/web", "web");
    let (forged_cert, forged_key) = support::tls::Ca::new().spiffe_leaf(edge);
    file("forged.pem", &forged_cert);
    file("forged-key.pem", &forged_key);
    let _controller = start("127.0.0.1", &args, path("controller.log").into());
    let https = format!("https://localhost:{}", control_addr.port());
    let gateway = |ip: &str, id: &str, cert: &str| {
        let (c, k) = (
            path(&format!("{cert}.pem")),
            path(&format!("{cert}-key.pem")),
        );
        let args = [
            "--controller",
            &https,
            "--identity",
            id,
            "--controller-ca",
            &ca_pem,
            "--controller-cert",
            &c,
            "--controller-key",
            &k,
        ];
        start(ip, &args, path(&format!("{id}.log")).into())
    };
    let meshed = gateway("127.0.0.2", "meshed", "edge");
    let web = gateway("127.0.0.3", "web", "web");
    let forged = gateway("127.0.0.4", "forged", "forged");
    all_serve(
        &[&meshed],
        "app.example",
        "a",
        "the gateway with the granted identity",
    )
    .await;
    // Attempts made once the controller is up (the meshed gateway was served) fail:
    // the other identity's for want of a grant, the forged one in the handshake.
    let refused = |g: &Process, why: &'static str| {
        let g_log = g.log.clone();
        async move {
            wait_until(why, Duration::from_secs(20), async || {
                std::fs::read_to_string(&g_log)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.contains("no stream to the controller") && l.contains(why))
            })
            .await
        }
    };
    refused(&web, "no grant for spiffe://cluster.local/ns/shop/sa/web").await;
    let before = failed_attempts(&forged).len();
    wait_until(
        "a forged attempt at the running controller",
        Duration::from_secs(20),
        async || failed_attempts(&forged).len() > before,
    )
    .await;
    let last = failed_attempts(&forged).pop().unwrap_or_default();
    assert!(!last.contains("Connection refused"), "{last}");
    for g in [&web, &forged] {
        assert_eq!(
            get(g.admin, "admin", "/readyz").await.0,
            503,
            "{}",
            g.log.display()
        );
    }
    let ctl = || proxy_ids(&ctl_proxies_trusting(&https, Some(&ca_pem)));
    assert_eq!(ctl(), ["meshed"]);
    // The grant goes: the served gateway's stream is closed; it keeps serving.
    file("tokens", "# nobody\n");
    wait_until("the stream closed", Duration::from_secs(20), async || {
        ctl().is_empty()
    })
    .await;
    assert_eq!(served_by(meshed.http, "app.example").await, "a");
}
