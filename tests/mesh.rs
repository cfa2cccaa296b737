//! The east-west mesh on a real two-node network made of namespaces (needs root, `ip`
//! and `nft`; skipped with a message elsewhere): the CA in the test's namespace, a node
//! proxy per node, pods as namespaces with plain TCP and HTTP clients and servers.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/netns.rs"]
mod netns;

use netns::{block_on_in, serve_in, Cluster};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// Children killed on drop.
struct Procs(Vec<(String, Child)>);

impl Procs {
    fn get(&mut self, name: &str) -> &mut Child {
        self.0
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Stops `name` with `signal` and waits for it.
    fn stop(&mut self, name: &str, signal: i32) {
        let c = self.get(name);
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(c.id() as i32, signal) };
        let _ = c.wait();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn skip() -> bool {
    match netns::unavailable() {
        Some(why) => {
            eprintln!("SKIPPED: the mesh tests need network namespaces ({why})");
            true
        }
        None => false,
    }
}

/// How a test's mesh differs from the default one.
#[derive(Default, Clone, Copy)]
struct Opts {
    /// `--mesh-cert-ttl` of the CA.
    cert_ttl: Option<&'static str>,
    /// The web pod runs a sidecar proxy instead of using its node's.
    web_sidecar: bool,
    /// Two clusters, each node its own (n1 in "east", n2 in "west"), merged by the
    /// controller that node proxies follow, instead of one directory they read.
    clusters: bool,
    /// No AuthorizationPolicy: every call is allowed (and observed).
    no_policies: bool,
    /// Node proxies read the HTTP of every call (`--observe-http`).
    observe_http: bool,
}

/// The documents of `manifests` each cluster holds when the nodes are two clusters:
/// node n1 and its pods in the east, node n2, its pods and the Service in the west,
/// the rest (the namespace, policies) in both.
fn split_clusters(manifests: &str) -> (String, String) {
    let (mut east, mut west) = (String::new(), String::new());
    for doc in manifests.split("---\n").filter(|d| !d.trim().is_empty()) {
        let doc = format!("{doc}---\n");
        let on = |n: &str| {
            doc.contains(&format!("nodeName: {n},"))
                || doc.contains(&format!("kind: Node\nmetadata: {{name: {n}}}"))
        };
        if on("n1") {
            east.push_str(&doc);
        } else if on("n2") || doc.contains("kind: Service") {
            west.push_str(&doc);
        } else {
            east.push_str(&doc);
            west.push_str(&doc);
        }
    }
    (east, west)
}

/// The manifests: namespace `shop` in the mesh, STRICT; pods client (n1), other (n1),
/// web (n2, HTTP on 8080, behind Service web at 10.96.K.10:80), db (n2, TCP echo on
/// 9000) and legacy (n2, TCP echo on 9000, PERMISSIVE, no policy); web allows GET
/// /public* from client only; db allows client only.
fn manifests(c: &Cluster, k: u8, opts: Opts) -> String {
    let pod = |name: &str, sa: &str, node: usize, i: usize| {
        let p = c.pod(node, i);
        let mode = match (name, opts.web_sidecar) {
            ("web", true) => ", gatehouse.dev/mesh: sidecar",
            _ => "",
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {name}{mode}}}}}\n\
             spec: {{nodeName: n{node}, serviceAccountName: {sa}, containers: [{{name: main}}]}}\n\
             status: {{phase: Running, podIP: {}}}\n---\n",
            p.ip
        )
    };
    let mut m = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {gatehouse.dev/mesh: node}}\n---\n",
    );
    for (i, (_, ip)) in c.nodes.iter().enumerate() {
        m.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n{}}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n---\n",
            i + 1
        ));
    }
    m.push_str(&pod("client", "client", 1, 0));
    m.push_str(&pod("other", "other", 1, 1));
    m.push_str(&pod("web", "web", 2, 0));
    m.push_str(&pod("db", "db", 2, 1));
    m.push_str(&pod("legacy", "legacy", 2, 2));
    m.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{clusterIP: 10.96.{k}.10, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}\n---\n"
    ));
    m.push_str(
        r#"apiVersion: gatehouse.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: legacy, namespace: shop}
spec: {selector: {matchLabels: {app: legacy}}, mtls: {mode: PERMISSIVE}}
---
"#,
    );
    if opts.no_policies {
        return m;
    }
    m.push_str(
        r#"apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-public, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
    to: [{operation: {methods: [GET], paths: ["/public/*"]}}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-clients, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
"#,
    );
    m
}

/// A TCP echo server.
async fn echo(addr: SocketAddr) {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind echo");
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// An HTTP/1.1 and HTTP/2 (h2c) server answering `web METHOD PATH`; a request to
/// upgrade to `echo` gets 101 and its bytes echoed.
async fn web(addr: SocketAddr) {
    let l = tokio::net::TcpListener::bind(addr).await.expect("bind web");
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                |mut req: hyper::Request<hyper::body::Incoming>| async move {
                    let wants_echo = req.headers().get("upgrade").is_some_and(|v| v == "echo");
                    if wants_echo {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(u) = on.await {
                                let mut io = hyper_util::rt::TokioIo::new(u);
                                let mut buf = [0u8; 1024];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        let resp = hyper::Response::builder()
                            .status(101)
                            .header("connection", "upgrade")
                            .header("upgrade", "echo")
                            .body(http_body_util::Full::new(bytes::Bytes::new()))
                            .expect("response");
                        return Ok::<_, std::convert::Infallible>(resp);
                    }
                    let body = format!("web {} {}", req.method(), req.uri().path());
                    Ok(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body),
                    )))
                },
            );
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
        });
    }
}

/// Requests over one HTTP/2 connection with prior knowledge (as gRPC clients make
/// them), at once: (status, body) of each.
async fn http2(addr: SocketAddr, reqs: &[(&str, &str)]) -> Result<Vec<(u16, String)>, String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let all = reqs.iter().map(|(method, path)| {
        let mut send = send.clone();
        let req = hyper::Request::builder()
            .method(*method)
            .uri(format!("http://web.shop{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new());
        async move {
            let req = req.map_err(|e| e.to_string())?;
            let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
                .await
                .map_err(|_| "request timed out".to_string())?
                .map_err(|e| format!("request: {e}"))?;
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        }
    });
    futures_util::future::join_all(all)
        .await
        .into_iter()
        .collect()
}

/// An HTTP/1.1 upgrade to `echo` on `path`: the status, and after a 101 what the
/// upgraded connection echoed of `payload`.
async fn upgrade(addr: SocketAddr, path: &str, payload: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn.with_upgrades());
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", "web.shop")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    if status != 101 {
        return Ok((status, Vec::new()));
    }
    let u = hyper::upgrade::on(resp)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let mut io = hyper_util::rt::TokioIo::new(u);
    io.write_all(payload)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut got))
        .await
        .map_err(|_| "echo timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok((status, got))
}

/// Sends `payload` over TCP and reads it back; Err if the connection is refused or
/// reset, or the echo differs.
async fn tcp_roundtrip(addr: SocketAddr, payload: &[u8]) -> Result<(), String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(payload)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    if got != payload {
        return Err("echo differs".into());
    }
    Ok(())
}

/// One HTTP/1.1 request on a new connection: (status, body), or Err on a transport
/// failure.
async fn http(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "web.shop")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a node proxy for node `n` in namespace `ns` (a sidecar's pod's, with
/// `--sidecar-for`), logging to `<log>.log`.
#[allow(clippy::too_many_arguments)]
fn mesh_proxy(
    c: &Cluster,
    ns: &str,
    n: usize,
    sidecar_for: Option<std::net::Ipv4Addr>,
    tmp: &Path,
    log: &str,
    cluster: Option<&str>,
    extra: &[&str],
) -> Child {
    let dir = tmp.join("manifests");
    let ca = tmp.join("ca");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tmp.join(format!("{log}.log")))
        .expect("log");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, BIN, "node"]);
    if let Some(ip) = sidecar_for {
        cmd.args(["--sidecar-for", &ip.to_string()]);
    }
    match cluster {
        // Following the controller, as a node of `cluster`.
        Some(cluster) => cmd
            .args(["--controller", &format!("http://{}:15010", c.host_ip)])
            .args(["--cluster", cluster])
            .arg("--controller-token-file")
            .arg(tmp.join(format!("token-n{n}"))),
        None => cmd.arg("--config").arg(&dir),
    };
    cmd.args(extra)
        .args(["--node-name", &format!("n{n}")])
        .args(["--ca-addr", &format!("{}:15012", c.host_ip)])
        .arg("--ca-root")
        .arg(ca.join("root-cert.pem"))
        .arg("--token-file")
        .arg(tmp.join(format!("token-n{n}")))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start node proxy")
}

/// Reads a node proxy's metrics from inside its namespace.
fn metrics(c: &Cluster, n: usize) -> String {
    metrics_in(&c.nodes[n - 1].0)
}

/// Reads the metrics of the mesh proxy in namespace `ns`.
fn metrics_in(ns: &str) -> String {
    block_on_in(ns, async move {
        http("127.0.0.1:15020".parse().expect("addr"), "GET", "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    })
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Waits until a node proxy says it holds certificates for all its workloads.
fn wait_ready(c: &Cluster, n: usize) {
    wait_ready_in(&c.nodes[n - 1].0);
}

/// Waits until the mesh proxy in namespace `ns` holds all its certificates.
fn wait_ready_in(ns: &str) {
    let ns = ns.to_string();
    wait_for(
        &format!("the mesh proxy in {ns} to be ready"),
        Duration::from_secs(30),
        || {
            let ns = ns.clone();
            block_on_in(&ns, async move {
                matches!(
                    http("127.0.0.1:15020".parse().expect("addr"), "GET", "/ready").await,
                    Ok((200, _))
                )
            })
        },
    );
}

struct Setup {
    c: Cluster,
    tmp: tempfile::TempDir,
    /// The controller (`controller`), node proxies (`n1`, `n2`) and sidecars, stopped
    /// on drop.
    procs: Procs,
    opts: Opts,
}

impl Setup {
    /// (Re)starts node `n`'s proxy.
    fn start_node_proxy(&mut self, n: usize) {
        let ns = self.c.nodes[n - 1].0.clone();
        let cluster = self
            .opts
            .clusters
            .then_some(if n == 1 { "east" } else { "west" });
        let log = format!("node{n}");
        // Observing node proxies also serve their admin (flows) to the host.
        let extra: &[&str] = match self.opts.observe_http {
            true => &["--observe-http", "--admin-addr", "0.0.0.0:15020"],
            false => &[],
        };
        let child = mesh_proxy(&self.c, &ns, n, None, self.tmp.path(), &log, cluster, extra);
        let name = format!("n{n}");
        self.procs.0.retain(|(p, _)| *p != name);
        self.procs.0.push((name, child));
    }
}

fn setup(k: u8, opts: Opts) -> Setup {
    let c = Cluster::new(k, 3);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("manifests");
    std::fs::create_dir(&dir).expect("dir");
    let west = tmp.path().join("west");
    match opts.clusters {
        true => {
            let (e, w) = split_clusters(&manifests(&c, k, opts));
            std::fs::write(dir.join("mesh.yaml"), e).expect("write");
            std::fs::create_dir(&west).expect("dir");
            std::fs::write(west.join("mesh.yaml"), w).expect("write");
        }
        false => std::fs::write(dir.join("mesh.yaml"), manifests(&c, k, opts)).expect("write"),
    }
    let ca = tmp.path().join("ca");
    std::fs::write(
        tmp.path().join("tokens"),
        "n1-token-0123456789abcdef n1\nn2-token-0123456789abcdef n2\n",
    )
    .expect("tokens");
    for n in 1..=2 {
        std::fs::write(
            tmp.path().join(format!("token-n{n}")),
            format!("n{n}-token-0123456789abcdef\n"),
        )
        .expect("token");
    }
    let log = std::fs::File::create(tmp.path().join("controller.log")).expect("log");
    let mut controller = Command::new(BIN);
    if opts.clusters {
        // The node proxies follow the controller, which merges the two clusters.
        std::fs::write(
            tmp.path().join("control-tokens"),
            "n1-token-0123456789abcdef node n1\nn2-token-0123456789abcdef node n2\n",
        )
        .expect("tokens");
        controller
            .args(["run", "--cluster", "east", "--cluster-config"])
            .arg(format!("west={}", west.display()))
            .args(["--control-listen", &format!("{}:15010", c.host_ip)])
            .arg("--control-tokens")
            .arg(tmp.path().join("control-tokens"));
    } else {
        controller.args(["run", "--no-watch"]);
    }
    let controller = controller
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--mesh-cert-ttl", opts.cert_ttl.unwrap_or("1h")])
        .arg("--config")
        .arg(&dir)
        .args(["--mesh-ca-listen", &format!("{}:15012", c.host_ip)])
        .arg("--mesh-ca-dir")
        .arg(&ca)
        .arg("--mesh-node-tokens")
        .arg(tmp.path().join("tokens"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start controller");
    let procs = Procs(vec![("controller".into(), controller)]);
    let ca_addr: SocketAddr = format!("{}:15012", c.host_ip).parse().expect("addr");
    wait_for("the CA", Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&ca_addr, Duration::from_millis(200)).is_ok()
    });
    let mut s = Setup {
        c,
        tmp,
        procs,
        opts,
    };
    for n in 1..=2 {
        s.start_node_proxy(n);
    }
    // Servers in the pods of node 2.
    let c = &s.c;
    let (web_pod, db_pod, legacy_pod) = (c.pod(2, 0), c.pod(2, 1), c.pod(2, 2));
    serve_in(&web_pod.ns, web(SocketAddr::new(web_pod.ip.into(), 8080)));
    serve_in(&db_pod.ns, echo(SocketAddr::new(db_pod.ip.into(), 9000)));
    serve_in(
        &legacy_pod.ns,
        echo(SocketAddr::new(legacy_pod.ip.into(), 9000)),
    );
    if opts.web_sidecar {
        let child = mesh_proxy(
            c,
            &web_pod.ns,
            2,
            Some(web_pod.ip),
            s.tmp.path(),
            "sidecar",
            None,
            &[],
        );
        s.procs.0.push(("sidecar".into(), child));
        wait_ready_in(&web_pod.ns);
    }
    wait_ready(c, 1);
    wait_ready(c, 2);
    s
}

#[test]
fn cross_node_traffic_is_tunnelled_authorized_and_encrypted() {
    if skip() {
        return;
    }
    let s = setup(1, Opts::default());
    let c = &s.c;
    let client = c.pod(1, 0).ns.clone();
    let other = c.pod(1, 1).ns.clone();
    let web_addr = SocketAddr::new(c.pod(2, 0).ip.into(), 8080);
    let web_service: SocketAddr = "10.96.1.10:80".parse().expect("addr");
    let db_addr = SocketAddr::new(c.pod(2, 1).ip.into(), 9000);

    // Capture the inter-node link while the pods talk.
    let pcap = s.tmp.path().join("link.pcap");
    let mut tcpdump = Command::new("tcpdump")
        .args([
            "-i",
            &c.node_link(1),
            "--immediate-mode",
            "-Z",
            "root",
            "-U",
            "-s",
            "0",
            "-w",
        ])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.tmp.path().join("tcpdump.log")).expect("log"))
        .spawn()
        .expect("tcpdump (installed by .ci/run)");
    let tcpdump_log = s.tmp.path().join("tcpdump.log");
    wait_for("tcpdump", Duration::from_secs(10), || {
        std::fs::read_to_string(&tcpdump_log).is_ok_and(|l| l.contains("listening on"))
    });
    std::thread::sleep(Duration::from_millis(200));

    const SECRET: &[u8] = b"plaintext-payload-7f3a9c";
    let results = block_on_in(&client, async move {
        let tcp = tcp_roundtrip(db_addr, SECRET).await;
        let public = http(web_addr, "GET", "/public/index").await;
        let via_service = http(web_service, "GET", "/public/svc").await;
        let admin = http(web_addr, "POST", "/admin").await;
        let h2 = http2(web_addr, &[("GET", "/public/h2"), ("POST", "/admin")]).await;
        let upgraded = upgrade(web_addr, "/public/ws", b"upgraded-bytes").await;
        let upgrade_denied = upgrade(web_addr, "/admin", b"x").await;
        let mut many = 0;
        for i in 0..20 {
            if tcp_roundtrip(
                db_addr,
                format!("{i}-{}", String::from_utf8_lossy(SECRET)).as_bytes(),
            )
            .await
            .is_ok()
            {
                many += 1;
            }
        }
        (
            tcp,
            public,
            via_service,
            admin,
            many,
            h2,
            upgraded,
            upgrade_denied,
        )
    });
    assert_eq!(results.0, Ok(()), "plain TCP across nodes, unchanged");
    assert_eq!(results.1, Ok((200, "web GET /public/index".into())));
    assert_eq!(
        results.2,
        Ok((200, "web GET /public/svc".into())),
        "through the Service address"
    );
    assert_eq!(
        results.3.as_ref().map(|r| r.0),
        Ok(403),
        "POST /admin is denied"
    );
    assert_eq!(results.4, 20);
    // HTTP/2 with prior knowledge (as gRPC speaks it), each request checked.
    assert_eq!(
        results.5,
        Ok(vec![
            (200, "web GET /public/h2".into()),
            (403, "RBAC: access denied\n".into())
        ]),
        "h2c requests on one connection"
    );
    // An allowed upgrade carries bytes both ways; a denied one never reaches the server.
    assert_eq!(results.6, Ok((101, b"upgraded-bytes".to_vec())));
    assert_eq!(results.7, Ok((403, Vec::new())));

    // Another identity: denied at L4 (db) and L7 (web).
    let denied = block_on_in(&other, async move {
        (
            tcp_roundtrip(db_addr, b"hello").await,
            http(web_addr, "GET", "/public/index").await,
        )
    });
    assert!(denied.0.is_err(), "other may not reach db: {:?}", denied.0);
    assert_eq!(denied.1.as_ref().map(|r| r.0), Ok(403));

    std::thread::sleep(Duration::from_millis(300));
    // SIGINT, so tcpdump writes what it holds before it exits.
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    let _ = tcpdump.wait();
    let raw = std::fs::read(&pcap).expect("pcap");
    assert!(
        raw.len() > 10_000,
        "the capture holds the traffic ({} bytes); tcpdump: {}",
        raw.len(),
        std::fs::read_to_string(s.tmp.path().join("tcpdump.log")).unwrap_or_default()
    );
    assert!(
        !raw.windows(SECRET.len()).any(|w| w == SECRET),
        "the plaintext payload crossed the link"
    );
    assert!(
        !raw.windows(b"/public/index".len())
            .any(|w| w == b"/public/index"),
        "the HTTP request crossed the link in the clear"
    );
    let text = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&pcap)
        .arg("tcp")
        .output()
        .expect("tcpdump -r");
    let text = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains(".15008")),
        "tunnel traffic was seen:\n{text}"
    );
    for l in &lines {
        assert!(
            l.contains(".15008") || l.contains(".15012"),
            "only tunnel (and CA) traffic crosses the link, saw: {l}"
        );
    }

    // Denials are counted by policy on the destination's proxy.
    let m = metrics(c, 2);
    assert!(
        metric(&m, "gatehouse_mesh_authz_denied_total{policy=\"-\"}") >= 3,
        "{m}"
    );
    assert!(
        metric(&m, "gatehouse_mesh_inbound_connections_total") >= 22,
        "{m}"
    );
    let m1 = metrics(c, 1);
    assert_eq!(
        metric(&m1, "gatehouse_mesh_tunnel_connections_opened_total"),
        4,
        "one tunnel per (source, destination identity), however many connections:\n{m1}"
    );

    // STRICT: plaintext from outside the mesh (the node itself) is refused.
    let n1 = c.nodes[0].0.clone();
    let legacy_addr = SocketAddr::new(c.pod(2, 2).ip.into(), 9000);
    let plain = block_on_in(&n1, async move {
        (
            tcp_roundtrip(db_addr, b"hello").await,
            tcp_roundtrip(legacy_addr, b"hello").await,
        )
    });
    assert!(plain.0.is_err(), "plaintext reached a STRICT workload");
    // PERMISSIVE: plaintext is let in (the migration mode).
    assert_eq!(plain.1, Ok(()), "plaintext to a PERMISSIVE workload");
    let m = metrics(c, 2);
    assert_eq!(
        metric(&m, "gatehouse_mesh_plaintext_refused_total"),
        1,
        "{m}"
    );
    drop(s);
}

/// Two clusters, one node each, merged by one controller that both node proxies follow
/// (each scoped to its node): a client in the east reaches the west's Service and pods
/// through the mutual-TLS tunnel between the clusters' node proxies, with the west's
/// policies enforced at the west's proxy, and plaintext from outside the mesh refused.
#[test]
fn cross_cluster_traffic_goes_through_the_tunnel() {
    if skip() {
        return;
    }
    let s = setup(
        5,
        Opts {
            clusters: true,
            ..Opts::default()
        },
    );
    let c = &s.c;
    let client = c.pod(1, 0).ns.clone();
    let other = c.pod(1, 1).ns.clone();
    let web_addr = SocketAddr::new(c.pod(2, 0).ip.into(), 8080);
    let web_service: SocketAddr = "10.96.5.10:80".parse().expect("addr");
    let db_addr = SocketAddr::new(c.pod(2, 1).ip.into(), 9000);
    let from_client = block_on_in(&client, async move {
        (
            http(web_service, "GET", "/public/svc").await,
            http(web_addr, "POST", "/admin").await,
            tcp_roundtrip(db_addr, b"east-to-west").await,
        )
    });
    assert_eq!(
        from_client.0,
        Ok((200, "web GET /public/svc".into())),
        "the west's Service from the east"
    );
    assert_eq!(
        from_client.1.as_ref().map(|r| r.0),
        Ok(403),
        "the west's policy"
    );
    assert_eq!(from_client.2, Ok(()), "TCP across the clusters");
    let from_other = block_on_in(&other, async move { tcp_roundtrip(db_addr, b"x").await });
    assert!(from_other.is_err(), "db allows client only");
    let m2 = metrics(c, 2);
    assert!(
        metric(&m2, "gatehouse_mesh_inbound_connections_total") >= 3,
        "{m2}"
    );
    assert!(
        metric(&m2, "gatehouse_mesh_authz_denied_total{policy=\"-\"}") >= 2,
        "{m2}"
    );
    let m1 = metrics(c, 1);
    assert!(
        metric(&m1, "gatehouse_mesh_tunnel_connections_opened_total") >= 2,
        "{m1}"
    );
    // STRICT in the west: plaintext from the east's node itself is refused.
    let n1 = c.nodes[0].0.clone();
    let plain = block_on_in(&n1, async move { tcp_roundtrip(db_addr, b"hello").await });
    assert!(plain.is_err(), "plaintext reached a STRICT workload");
    drop(s);
}

/// The sidecar mode: web's own proxy, in web's namespace, receives the tunnels, checks
/// requests, and carries web's outgoing calls as web's identity, beside node proxies
/// that serve the other pods.
#[test]
fn a_sidecar_proxy_serves_its_pod_beside_node_proxies() {
    if skip() {
        return;
    }
    let s = setup(
        2,
        Opts {
            web_sidecar: true,
            ..Opts::default()
        },
    );
    let c = &s.c;
    let client = c.pod(1, 0).ns.clone();
    let web_ns = c.pod(2, 0).ns.clone();
    let web_addr = SocketAddr::new(c.pod(2, 0).ip.into(), 8080);
    let web_service: SocketAddr = "10.96.2.10:80".parse().expect("addr");
    let db_addr = SocketAddr::new(c.pod(2, 1).ip.into(), 9000);
    let legacy_addr = SocketAddr::new(c.pod(2, 2).ip.into(), 9000);

    let r = block_on_in(&client, async move {
        (
            http(web_addr, "GET", "/public/a").await,
            http(web_service, "GET", "/public/b").await,
            http(web_addr, "POST", "/admin").await,
        )
    });
    assert_eq!(r.0, Ok((200, "web GET /public/a".into())));
    assert_eq!(r.1, Ok((200, "web GET /public/b".into())));
    assert_eq!(r.2.map(|r| r.0), Ok(403));
    let side = metrics_in(&web_ns);
    assert!(
        metric(&side, "gatehouse_mesh_inbound_connections_total") >= 3,
        "the sidecar received the tunnels:\n{side}"
    );
    assert_eq!(
        metric(&side, "gatehouse_mesh_authz_denied_total{policy=\"-\"}"),
        1,
        "{side}"
    );
    let n2 = metrics(c, 2);
    assert_eq!(
        metric(&n2, "gatehouse_mesh_inbound_connections_total"),
        0,
        "node 2's proxy does not serve a pod with a sidecar:\n{n2}"
    );

    // web's own outgoing calls leave through its sidecar, as web: db (client only)
    // refuses them at node 2's proxy, legacy (no policy) takes them.
    let out = block_on_in(&web_ns, async move {
        (
            tcp_roundtrip(db_addr, b"from web").await,
            tcp_roundtrip(legacy_addr, b"from web").await,
        )
    });
    assert!(out.0.is_err(), "web may not reach db: {:?}", out.0);
    assert_eq!(out.1, Ok(()));
    let side = metrics_in(&web_ns);
    assert_eq!(
        metric(&side, "gatehouse_mesh_outbound_connections_total"),
        2,
        "{side}"
    );
    assert_eq!(
        metric(&side, "gatehouse_mesh_tunnel_connections_opened_total"),
        2,
        "tunnels from web's sidecar to node 2's proxy, one per destination identity:\n{side}"
    );
    let n2 = metrics(c, 2);
    assert_eq!(
        metric(&n2, "gatehouse_mesh_authz_denied_total{policy=\"-\"}"),
        1,
        "{n2}"
    );
    assert_eq!(
        metric(&n2, "gatehouse_mesh_inbound_connections_total"),
        1,
        "{n2}"
    );
}

/// A node proxy that crashes (SIGKILL, its capture rules left behind) or stops
/// (SIGTERM, rules removed) and starts again serves again; the other node's pooled
/// tunnel to it is replaced.
#[test]
fn a_restarted_node_proxy_recovers() {
    if skip() {
        return;
    }
    let mut s = setup(3, Opts::default());
    let client = s.c.pod(1, 0).ns.clone();
    let web_addr = SocketAddr::new(s.c.pod(2, 0).ip.into(), 8080);
    let db_addr = SocketAddr::new(s.c.pod(2, 1).ip.into(), 9000);
    let traffic = |client: &str| {
        block_on_in(client, async move {
            (
                tcp_roundtrip(db_addr, b"ping").await,
                http(web_addr, "GET", "/public/x").await.map(|r| r.0),
            )
        })
    };
    assert_eq!(traffic(&client), (Ok(()), Ok(200)));

    // The destination's proxy crashes: nothing answers its tunnels.
    s.procs.stop("n2", libc::SIGKILL);
    let down = traffic(&client);
    assert!(down.0.is_err() && down.1.is_err(), "{down:?}");
    s.start_node_proxy(2);
    wait_ready(&s.c, 2);
    assert_eq!(
        traffic(&client),
        (Ok(()), Ok(200)),
        "after node 2's proxy restarted"
    );
    let m1 = metrics(&s.c, 1);
    assert_eq!(
        metric(&m1, "gatehouse_mesh_tunnel_connections_opened_total"),
        4,
        "the dead tunnels were dialled again:\n{m1}"
    );

    // The source's proxy stops cleanly (removing its rules) and comes back.
    s.procs.stop("n1", libc::SIGTERM);
    let rules = Command::new("ip")
        .args(["netns", "exec", &s.c.nodes[0].0, "nft", "list", "tables"])
        .output()
        .expect("nft");
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains("gatehouse"),
        "a stopped proxy leaves no capture rules"
    );
    s.start_node_proxy(1);
    wait_ready(&s.c, 1);
    assert_eq!(
        traffic(&client),
        (Ok(()), Ok(200)),
        "after node 1's proxy restarted"
    );
}

/// Workload certificates that live 4 s are renewed every 2 s while traffic flows, and
/// the root is rotated meanwhile (`gatehouse ca rotate`: the new root joins the bundle,
/// then signs 4 s later): connections opened before a renewal keep working past their
/// certificate's expiry, new ones use the new certificate on new tunnels, and no
/// request fails.
#[test]
fn certificate_rotation_under_load_drops_nothing() {
    if skip() {
        return;
    }
    let s = setup(
        4,
        Opts {
            cert_ttl: Some("4s"),
            ..Opts::default()
        },
    );
    let c = &s.c;
    let client = c.pod(1, 0).ns.clone();
    let web_addr = SocketAddr::new(c.pod(2, 0).ip.into(), 8080);
    let db_addr = SocketAddr::new(c.pod(2, 1).ip.into(), 9000);
    let before = metric(&metrics(c, 1), "gatehouse_mesh_certificates_issued_total");
    const RUN: Duration = Duration::from_secs(13);
    let ca_dir = s.tmp.path().join("ca");
    let first_root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).expect("root");
    let rotate = {
        let ca_dir = ca_dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            Command::new(BIN)
                .args(["ca", "rotate", "--dir"])
                .arg(&ca_dir)
                .output()
                .expect("ca rotate")
        })
    };
    let (ok, failures) = block_on_in(&client, async move {
        let mut tasks = Vec::new();
        // Long-lived connections, a round trip every 20 ms.
        for i in 0..4 {
            tasks.push(tokio::spawn(async move {
                let mut fails = Vec::new();
                let mut ok = 0u32;
                let mut conn = match tokio::net::TcpStream::connect(db_addr).await {
                    Ok(c) => c,
                    Err(e) => return (0, vec![format!("long {i}: connect: {e}")]),
                };
                let start = Instant::now();
                let mut n = 0u32;
                while start.elapsed() < RUN {
                    let msg = format!("long-{i}-{n}");
                    let mut got = vec![0u8; msg.len()];
                    let r = async {
                        conn.write_all(msg.as_bytes()).await?;
                        conn.read_exact(&mut got).await?;
                        Ok::<_, std::io::Error>(())
                    };
                    match tokio::time::timeout(Duration::from_secs(5), r).await {
                        Ok(Ok(())) if got == msg.as_bytes() => ok += 1,
                        other => {
                            fails.push(format!("long {i} at {:?}: {other:?}", start.elapsed()));
                            break;
                        }
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (ok, fails)
            }));
        }
        // New connections, one HTTP request each, every 20 ms.
        for i in 0..4 {
            tasks.push(tokio::spawn(async move {
                let mut fails = Vec::new();
                let mut ok = 0u32;
                let start = Instant::now();
                while start.elapsed() < RUN {
                    match http(web_addr, "GET", &format!("/public/{i}")).await {
                        Ok((200, _)) => ok += 1,
                        other => fails.push(format!("new {i} at {:?}: {other:?}", start.elapsed())),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (ok, fails)
            }));
        }
        let mut ok = 0;
        let mut fails = Vec::new();
        for t in tasks {
            let (o, f) = t.await.expect("task");
            ok += o;
            fails.extend(f);
        }
        (ok, fails)
    });
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert!(ok > 1200, "only {ok} round trips");
    let rotated = rotate.join().expect("rotate thread");
    assert!(
        rotated.status.success(),
        "ca rotate: {}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    // The new root was promoted while traffic flowed; both are trusted.
    let root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).expect("root");
    assert_ne!(root, first_root, "the new root signs now");
    assert!(!ca_dir.join("next-root-cert.pem").exists());
    let m1 = metrics(c, 1);
    let renewed = metric(&m1, "gatehouse_mesh_certificates_issued_total") - before;
    assert!(
        renewed >= 6,
        "client's and other's certificates were renewed every 2 s ({renewed} issued):\n{m1}"
    );
    assert!(
        metric(&m1, "gatehouse_mesh_tunnel_connections_opened_total") >= 4,
        "new tunnels were dialled with the renewed certificates:\n{m1}"
    );
    assert_eq!(metric(&m1, "gatehouse_mesh_trust_roots"), 2, "{m1}");
    let m2 = metrics(c, 2);
    assert_eq!(
        metric(&m2, "gatehouse_mesh_failed_connections_total"),
        0,
        "{m2}"
    );
    assert_eq!(metric(&m2, "gatehouse_mesh_trust_roots"), 2, "{m2}");
}

/// Least privilege from observed traffic: with no policy and node proxies reading every
/// call's HTTP, the client calls web (two paths, two methods) and db; `gatehouse ctl
/// policy suggest` turns the flows node 2 recorded into one ALLOW policy per workload.
/// Applied as a dry run, it denies nothing but counts (and records as `would_deny`) a
/// call from another identity; enforced, it lets in exactly what was seen.
#[test]
fn observed_calls_become_a_least_privilege_policy() {
    if skip() {
        return;
    }
    let s = setup(
        6,
        Opts {
            no_policies: true,
            observe_http: true,
            ..Opts::default()
        },
    );
    let c = &s.c;
    let client = c.pod(1, 0).ns.clone();
    let other = c.pod(1, 1).ns.clone();
    let node2 = c.nodes[1].0.clone();
    let web_service: SocketAddr = "10.96.6.10:80".parse().expect("addr");
    let web_addr = SocketAddr::new(c.pod(2, 0).ip.into(), 8080);
    let db_addr = SocketAddr::new(c.pod(2, 1).ip.into(), 9000);

    let seen = block_on_in(&client, async move {
        (
            http(web_service, "GET", "/public/a").await,
            http(web_addr, "GET", "/public/b").await,
            http(web_addr, "POST", "/orders").await,
            tcp_roundtrip(db_addr, b"hello").await,
        )
    });
    assert_eq!(
        seen.0,
        Ok((200, "web GET /public/a".into())),
        "no policy yet"
    );
    assert_eq!(seen.2, Ok((200, "web POST /orders".into())));
    assert_eq!(seen.3, Ok(()));

    // The flows node 2 recorded, with identities, methods and paths. A connection's
    // flow is recorded when both ends have closed it, which may come a little later.
    let read_flows = || -> serde_json::Value {
        let flows = block_on_in(&node2, async {
            http(
                "127.0.0.1:15020".parse().expect("addr"),
                "GET",
                "/flows?last=20",
            )
            .await
        });
        serde_json::from_str(&flows.expect("/flows").1).expect("flows are JSON")
    };
    let db_flow = |f: &serde_json::Value| {
        f["destination"]["workload"] == "db"
            && f["verdict"] == "allowed"
            && f["bytesIn"].as_u64().is_some_and(|b| b >= 5)
    };
    wait_for("the db connection's flow", Duration::from_secs(10), || {
        read_flows()
            .as_array()
            .is_some_and(|l| l.iter().any(db_flow))
    });
    let flows = read_flows();
    let list = flows.as_array().cloned().unwrap_or_default();
    assert!(
        list.iter().any(
            |f| f["source"] == "spiffe://cluster.local/ns/shop/sa/client"
                && f["destination"]["workload"] == "web"
                && f["method"] == "POST"
                && f["path"] == "/orders"
                && f["verdict"] == "allowed"
        ),
        "a request flow: {flows:#}"
    );

    let suggest = |dry_run: bool| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node2, BIN, "ctl", "policy", "suggest"])
            .args(["--admin", "127.0.0.1:15020", "--namespace", "shop"]);
        if dry_run {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().expect("gatehouse ctl policy suggest");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let yaml = suggest(true);
    assert!(yaml.contains("name: \"suggested-web\""), "{yaml}");
    assert!(yaml.contains("name: \"suggested-db\""), "{yaml}");
    for part in [
        r#""methods":["GET","POST"]"#,
        r#""paths":["/orders","/public/a","/public/b"]"#,
        r#""ports":["8080"]"#,
        r#""ports":["9000"]"#,
    ] {
        assert!(yaml.contains(part), "{part} in {yaml}");
    }
    assert!(
        yaml.contains(r#""principals":["cluster.local/ns/shop/sa/client"]"#),
        "{yaml}"
    );
    assert!(!yaml.contains("sa/other"), "{yaml}");
    assert!(yaml.contains(r#""gatehouse.dev/dry-run":"true""#), "{yaml}");

    // As a dry run: the other identity still gets in, and is counted as would-deny.
    let policy_file = s.tmp.path().join("manifests").join("suggested.yaml");
    std::fs::write(&policy_file, &yaml).expect("write the policy");
    let denied_total = |text: &str, policy: &str| {
        metric(
            text,
            &format!("gatehouse_mesh_authz_dry_run_denied_total{{policy=\"shop/{policy}\"}}"),
        )
    };
    wait_for(
        "the dry-run policy to be served",
        Duration::from_secs(20),
        || {
            let r = block_on_in(
                &other,
                async move { http(web_addr, "GET", "/public/a").await },
            );
            assert_eq!(r.as_ref().map(|r| r.0), Ok(200), "a dry run denies nothing");
            denied_total(&metrics(c, 2), "suggested-web") > 0
        },
    );
    let allowed = block_on_in(
        &client,
        async move { http(web_addr, "GET", "/public/a").await },
    );
    assert_eq!(allowed.map(|r| r.0), Ok(200));
    let flows = block_on_in(&node2, async {
        http(
            "127.0.0.1:15020".parse().expect("addr"),
            "GET",
            "/flows?last=50",
        )
        .await
    });
    assert!(
        flows
            .as_ref()
            .is_ok_and(|f| f.1.contains("\"would_deny\"") && f.1.contains("sa/other")),
        "the would-be denial is a flow: {flows:?}"
    );

    // Enforced: exactly what was seen passes.
    let enforced = yaml
        .replace(r#""gatehouse.dev/dry-run":"true","#, "")
        .replace(r#","gatehouse.dev/dry-run":"true""#, "");
    assert!(!enforced.contains("dry-run"), "{enforced}");
    std::fs::write(&policy_file, enforced).expect("write the policy");
    wait_for("the enforced policy", Duration::from_secs(20), || {
        let r = block_on_in(
            &other,
            async move { http(web_addr, "GET", "/public/a").await },
        );
        r.is_ok_and(|r| r.0 == 403)
    });
    let results = block_on_in(&client, async move {
        (
            http(web_service, "GET", "/public/a").await,
            http(web_addr, "POST", "/orders").await,
            http(web_addr, "GET", "/admin").await,
            http(web_addr, "DELETE", "/orders").await,
            tcp_roundtrip(db_addr, b"again").await,
        )
    });
    assert_eq!(results.0.map(|r| r.0), Ok(200), "seen: allowed");
    assert_eq!(results.1.map(|r| r.0), Ok(200), "seen: allowed");
    assert_eq!(results.2.map(|r| r.0), Ok(403), "a path never seen");
    assert_eq!(results.3.map(|r| r.0), Ok(403), "a method never seen");
    assert_eq!(results.4, Ok(()), "db, as seen");
    let refused = block_on_in(&other, async move { tcp_roundtrip(db_addr, b"x").await });
    assert!(refused.is_err(), "other never called db: {refused:?}");

    // The dashboard of a gatehouse that reads node 2's flows shows the east-west edges
    // (the refused ones bad) and the policies the traffic suggests, in Chromium.
    let empty = s.tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("dir");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let log = std::fs::File::create(s.tmp.path().join("dashboard.log")).expect("log");
    let mut dashboard = Procs(vec![(
        "dashboard".into(),
        Command::new(BIN)
            .args(["run", "--no-watch", "--config"])
            .arg(&empty)
            .args(["--admin-addr", &admin.to_string()])
            .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
            .args(["--flows-from", &format!("{}:15020", c.nodes[1].1)])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gatehouse run"),
    )]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    wait_for(
        "the dashboard's east-west edges",
        Duration::from_secs(30),
        || {
            runtime
                .block_on(http(admin, "GET", "/api/dashboard"))
                .is_ok_and(|(_, b)| b.contains("workload:shop/db"))
        },
    );
    let dom = runtime.block_on(browser::browse(
        &format!("http://{admin}/dashboard"),
        &["--dump-dom"],
    ));
    for (edge, health) in [
        (
            "identity:cluster.local/ns/shop/sa/client-&gt;workload:shop/db",
            "ok",
        ),
        (
            "identity:cluster.local/ns/shop/sa/other-&gt;workload:shop/web",
            "bad",
        ),
    ] {
        let at = dom
            .find(&format!(r#"data-edge="{edge}""#))
            .unwrap_or_else(|| panic!("the map has edge {edge}: {dom}"));
        let end = at + dom[at..].find('>').unwrap_or(0);
        assert!(
            dom[at..end].contains(&format!(r#"data-health="{health}""#)),
            "{edge} is {health}: {}",
            &dom[at..end]
        );
    }
    assert!(
        dom.contains("name: \"suggested-web\""),
        "the suggested policies are shown: {dom}"
    );
    dashboard.stop("dashboard", libc::SIGTERM);
}
