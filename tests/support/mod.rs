//! Shared pieces of the end-to-end tests: temporary manifest directories, echo
//! backends on loopback, an in-process gatehouse, and small HTTP clients.
#![allow(dead_code)]

pub mod apiserver;
pub mod backend;
pub mod browser;
pub mod tls;

use bytes::Bytes;
use gatehouse::app::{start, RunOptions, Running};
use gatehouse_proxy::ProxyConfig;
use gatehouse_translate::{ListenMapEntry, TranslateOptions};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

/// IngressClass and GatewayClass for gatehouse, the IngressClass marked default.
pub const CLASSES: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: gatehouse
  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}
spec: {controller: gatehouse.dev/ingress-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
";

/// A free loopback address for a server under test. It is chosen below the kernel's
/// ephemeral range (32768 and up by default), so that no client connection or port-0
/// bind elsewhere in the test can take it between now and when the server binds it,
/// and it is never handed out twice in one test process.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = fastrand::u16(20000..32000);
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
}

/// Starts an echo backend that names itself `name` in its JSON answers.
pub async fn echo(name: &str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(gatehouse::echo::serve(l, name.to_string()));
    addr
}

/// A Service `ns/name` with port 80 (named `http`) and an EndpointSlice pointing at
/// `backend`.
pub fn service(ns: &str, name: &str, backend: SocketAddr, app_protocol: Option<&str>) -> String {
    let ap = app_protocol
        .map(|p| format!(", appProtocol: {p}"))
        .unwrap_or_default();
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}{ap}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abc
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
",
        port = backend.port(),
        ip = backend.ip()
    )
}

/// An Ingress `svc` (namespace default) sending every path of `host` to Service `svc`
/// port 80.
pub fn ingress(host: &str, svc: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {svc}, namespace: default}}\nspec:\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}\n"
    )
}

/// A running in-process gatehouse on free loopback ports, serving `dir`.
pub struct Proxy {
    pub running: Running,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

pub fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as editors and `kubectl`-style tools do, so the watcher never
    // reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, dir.join(name)).expect("rename manifest");
}

/// Starts gatehouse on a new directory holding `files`. Gateway listener ports in
/// `gateway_ports` are rebound to free loopback addresses (returned in order).
pub async fn start_proxy(
    files: &[(&str, &str)],
    gateway_ports: &[u16],
) -> (Proxy, Vec<SocketAddr>) {
    let cfg = ProxyConfig {
        drain_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    };
    start_proxy_with(files, gateway_ports, cfg).await
}

/// As `start_proxy`, with explicit data-plane settings.
pub async fn start_proxy_with(
    files: &[(&str, &str)],
    gateway_ports: &[u16],
    proxy: ProxyConfig,
) -> (Proxy, Vec<SocketAddr>) {
    start_proxy_waf(files, gateway_ports, proxy, None).await
}

/// The WAF rule base: the Core Rule Set kept in the repository (`waf/crs`).
#[allow(dead_code)]
pub fn crs_base() -> std::sync::Arc<gatehouse_translate::waf::WafBase> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("waf/crs");
    std::sync::Arc::new(
        gatehouse_translate::waf::WafBase::load(&dir).unwrap_or_else(|e| panic!("{e}")),
    )
}

/// As `start_proxy_with`, with a WAF rule base.
pub async fn start_proxy_waf(
    files: &[(&str, &str)],
    gateway_ports: &[u16],
    proxy: ProxyConfig,
    waf: Option<std::sync::Arc<gatehouse_translate::waf::WafBase>>,
) -> (Proxy, Vec<SocketAddr>) {
    let base = TranslateOptions {
        waf,
        ..TranslateOptions::default()
    };
    start_proxy_translating(files, gateway_ports, proxy, base).await
}

/// Starts gatehouse on what the in-test API server `api` holds, its HTTP port on a
/// free loopback address, and waits until that address listens.
pub async fn start_on_api(api: &apiserver::ApiServer) -> (Running, SocketAddr) {
    let http = free_addr();
    let opts = kube_options(loopback_translate(http, Vec::new()), None);
    let running = gatehouse::app::start_kubernetes(api.client(), opts)
        .await
        .expect("start");
    wait_listening(http).await;
    (running, http)
}

/// Waits until `addr` accepts connections (at most 5 s).
pub async fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves `services` and `ingresses`, plus Ingress `guarded.example` to Service
/// `guarded_service` behind the WAF (the Core Rule Set, blocking), with `proxy`.
pub async fn start_proxy_guarded(
    services: &str,
    ingresses: &str,
    guarded_service: &str,
    proxy: ProxyConfig,
) -> Proxy {
    let guarded = ingress("guarded.example", guarded_service).replace(
        &format!("metadata: {{name: {guarded_service},"),
        "metadata: {name: guarded,",
    );
    let waf = "apiVersion: gatehouse.dev/v1alpha1\nkind: SecurityPolicy\nmetadata: {name: waf, namespace: default}\nspec:\n  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: guarded}]\n  waf: {mode: Blocking}\n";
    let (p, _) = start_proxy_waf(
        &[
            ("classes.yaml", CLASSES),
            ("services.yaml", services),
            ("ingresses.yaml", &(ingresses.to_string() + &guarded)),
            ("waf.yaml", waf),
        ],
        &[],
        proxy,
        Some(crs_base()),
    )
    .await;
    p
}

/// As `start_proxy_with`, with translate options (their addresses are set here).
pub async fn start_proxy_translating(
    files: &[(&str, &str)],
    gateway_ports: &[u16],
    proxy: ProxyConfig,
    base: TranslateOptions,
) -> (Proxy, Vec<SocketAddr>) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    let mapped: Vec<SocketAddr> = gateway_ports.iter().map(|_| free_addr()).collect();
    let listen_map = gateway_ports
        .iter()
        .zip(&mapped)
        .map(|(p, a)| ListenMapEntry {
            gateway: None,
            port: *p,
            addr: *a,
        })
        .collect();
    let http = free_addr();
    let https = free_addr();
    let opts = RunOptions {
        config_dir: dir.path().to_path_buf(),
        translate: TranslateOptions {
            http_addr: http,
            https_addr: https,
            gateway_host: "127.0.0.1".parse().expect("ip"),
            listen_map,
            ..base
        },
        proxy,
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        watch: true,
        demo_backends: false,
        distributor: None,
    };
    let running = start(opts).await.expect("gatehouse starts");
    let admin = running.admin_addr;
    (
        Proxy {
            running,
            http,
            https,
            admin,
            dir,
        },
        mapped,
    )
}

impl Proxy {
    /// Waits until the served config version is at least `v`.
    pub async fn wait_version(&self, v: u64) -> Duration {
        let t = Instant::now();
        while self.running.version() < v {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "config version {v} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        t.elapsed()
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    pub version: http::Version,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The echo backend's name, or "" when the answer did not come from one.
    pub fn service(&self) -> String {
        self.json()["service"].as_str().unwrap_or("").to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// A header the backend received.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One GET over a new h2c (prior knowledge) connection; `host` becomes :authority.
pub async fn h2c_get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("http://{host}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    read(resp).await
}

/// Reads a whole response.
pub async fn read(resp: http::Response<hyper::body::Incoming>) -> Resp {
    let status = resp.status().as_u16();
    let version = resp.version();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        version,
    }
}

/// A test server on a new loopback port: `serve` runs in its own task for every
/// accepted connection.
pub async fn listen<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s));
            }
        }
    });
    addr
}

/// Sends a request to `addr` with `host` and extra headers; reads the whole answer.
pub async fn send(
    c: &TestClient,
    method: &str,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).expect("request");
    let resp = c.request(req).await.expect("response");
    read(resp).await
}

pub async fn get(c: &TestClient, addr: SocketAddr, host: &str, path: &str) -> Resp {
    send(c, "GET", addr, host, path, &[]).await
}

/// Writes raw bytes on a new connection and returns everything read until close/timeout.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Translate options for a test: Ingress ports and Gateway listeners on free loopback
/// addresses (Gateway listener ports rebound by `listen_map`).
pub fn loopback_translate(http: SocketAddr, listen_map: Vec<ListenMapEntry>) -> TranslateOptions {
    TranslateOptions {
        http_addr: http,
        https_addr: free_addr(),
        gateway_host: "127.0.0.1".parse().expect("ip"),
        listen_map,
        ..TranslateOptions::default()
    }
}

/// Kubernetes-mode options for a test: admin on a free port, 5 ms debounce.
pub fn kube_options(
    translate: TranslateOptions,
    status: Option<gatehouse_sources::lease::LeaseConfig>,
) -> gatehouse::app::KubeRunOptions {
    gatehouse::app::KubeRunOptions {
        kube: Default::default(),
        translate,
        proxy: Default::default(),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        debounce: Duration::from_millis(5),
        status,
        distributor: None,
    }
}

/// A child process, killed (and reaped) when dropped.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to 5 s) for a log file to hold `needle`; returns its text.
#[allow(dead_code)]
pub async fn wait_log(path: &Path, needle: &str) -> String {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{needle:?} never logged in {}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request on a new connection from source address `from`; the status and head.
pub async fn get_from(from: &str, addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n");
    let (status, head) = send_from(from, addr, req.as_bytes()).await;
    (
        status.unwrap_or_else(|| panic!("no status in {head:?}")),
        head,
    )
}

/// Bytes sent on a new connection from source address `from`; the status (None: closed
/// without an answer) and the head.
pub async fn send_from(from: &str, addr: SocketAddr, bytes: &[u8]) -> (Option<u16>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ip: IpAddr = from.parse().expect("ip");
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(ip, 0)).expect("bind source");
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok());
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    (status, head)
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// `cfg` writing security events to a log in a new temporary directory (kept alive by
/// the returned handle), with a short drain: the config, the log's path, the directory.
#[allow(dead_code)]
pub fn with_security_log(cfg: ProxyConfig) -> (ProxyConfig, std::path::PathBuf, tempfile::TempDir) {
    let logs = tempfile::tempdir().expect("tempdir");
    let events = logs.path().join("security.log");
    let cfg = ProxyConfig {
        drain_timeout: Duration::from_secs(2),
        security_log: Some(events.clone()),
        ..cfg
    };
    (cfg, events, logs)
}
