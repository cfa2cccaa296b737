//! The east-west mesh benchmark (`bench/mesh.sh` runs it; needs root, `ip`, `nft` and
//! `iperf3`). On the tests' two-node network of namespaces it compares, in one run,
//! pod-to-pod traffic through two node proxies (mutual-TLS HTTP/2 tunnels) with a
//! direct pod-to-pod path between two pods outside the mesh on the same nodes:
//!
//! - latency of 1 KB HTTP/1.1 responses over keep-alive connections at a constant
//!   rate, taken from each request's scheduled send time (so queueing is not hidden);
//!   the load is sent by blocking threads that sleep with a 1 µs timer slack;
//! - CPU time of each node proxy per request (utime + stime from /proc), and its
//!   resident memory at that load, then again with 1,000 more workloads known;
//! - single-stream bulk TCP throughput (iperf3), direct and through the mesh.
//!
//! Direct and mesh phases alternate, `rounds` times, so a noisy spell of the machine
//! falls on both alike; medians are reported.
//!
//! cargo run --release --example mesh_bench -- [key=value ...]
//!   keys: rounds=3 seconds=10 rate=1000 conns=8 iperf=5 known=1000 threads=1
//!         bin=target/release/gatehouse out=FILE (JSON of all figures)

#[path = "../tests/support/netns.rs"]
mod netns;

use netns::{block_on_in, in_netns, serve_in, Cluster};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The body every request gets: 1 KB.
const BODY: [u8; 1024] = [b'x'; 1024];

/// Processes killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM first, so node proxies remove their capture rules.
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

struct Opts {
    rounds: usize,
    seconds: u64,
    rate: f64,
    conns: usize,
    iperf: u64,
    known: usize,
    /// `--workers` of the node proxies.
    threads: usize,
    bin: PathBuf,
    out: Option<PathBuf>,
}

fn opts() -> Opts {
    let mut kv: HashMap<String, String> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut num = |k: &str, d: f64| -> f64 {
        kv.remove(k)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{k}={v}: not a number"))
            })
            .unwrap_or(d)
    };
    let o = Opts {
        rounds: num("rounds", 3.0) as usize,
        seconds: num("seconds", 10.0) as u64,
        rate: num("rate", 1000.0),
        conns: num("conns", 8.0) as usize,
        iperf: num("iperf", 5.0) as u64,
        known: num("known", 1000.0) as usize,
        threads: num("threads", 1.0) as usize,
        bin: kv
            .remove("bin")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/gatehouse")),
        out: kv.remove("out").map(PathBuf::from),
    };
    if let Some(k) = kv.keys().next() {
        panic!("unknown key {k}");
    }
    o
}

/// Namespace `bench` is in the mesh (client on node 1, server on node 2); namespace
/// `plain` is not (its pods talk directly over the same nodes).
fn manifests(c: &Cluster) -> String {
    let mut m = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench, labels: {gatehouse.dev/mesh: node}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n---\n",
    );
    for (i, (_, ip)) in c.nodes.iter().enumerate() {
        m.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n{}}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n---\n",
            i + 1
        ));
    }
    for (ns, name, node, i) in [
        ("bench", "client", 1, 0),
        ("bench", "server", 2, 0),
        ("plain", "client", 1, 1),
        ("plain", "server", 2, 1),
    ] {
        m.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\n\
             spec: {{nodeName: n{node}, serviceAccountName: {name}}}\nstatus: {{phase: Running, podIP: {}}}\n---\n",
            c.pod(node, i).ip
        ));
    }
    m
}

/// `n` more meshed workloads on 20 other nodes, behind n/10 Services, and a policy per
/// Service: what a node proxy of a large cluster knows.
fn known_manifests(n: usize) -> String {
    let mut m = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: big, labels: {gatehouse.dev/mesh: node}}\n---\n",
    );
    for node in 0..20 {
        m.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: far{node}}}\nstatus: {{addresses: [{{type: InternalIP, address: 10.249.0.{}}}]}}\n---\n",
            node + 1
        ));
    }
    for i in 0..n {
        let svc = i / 10;
        m.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: w{i}, namespace: big, labels: {{app: s{svc}}}}}\n\
             spec: {{nodeName: far{}, serviceAccountName: s{svc}}}\nstatus: {{phase: Running, podIP: 10.248.{}.{}}}\n---\n",
            i % 20,
            i / 250,
            i % 250 + 1
        ));
    }
    for svc in 0..n.div_ceil(10) {
        m.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{svc}, namespace: big}}\n\
             spec: {{clusterIP: 10.97.{}.{}, selector: {{app: s{svc}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n---\n\
             apiVersion: gatehouse.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: s{svc}, namespace: big}}\n\
             spec: {{selector: {{matchLabels: {{app: s{svc}}}}}, rules: [{{from: [{{source: {{principals: [\"cluster.local/ns/big/sa/s{}\"]}}}}]}}]}}\n---\n",
            svc / 250,
            svc % 250 + 1,
            (svc + 1) % n.div_ceil(10)
        ));
    }
    m
}

/// An HTTP/1.1 server answering every request with the 1 KB body.
async fn server(addr: SocketAddr) {
    let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(&BODY),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        });
    }
}

/// Latencies (ns, from the scheduled send time) and failures of one load phase.
#[derive(Default)]
struct Load {
    latencies: Vec<u64>,
    errors: u64,
}

impl Load {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }
}

/// One keep-alive connection's part of a constant-rate load: requests at `start +
/// k * every`, from `offset` on; latency counted from each request's due time.
fn connection(
    target: SocketAddr,
    start: Instant,
    offset: Duration,
    every: Duration,
    end: Instant,
) -> Load {
    // Sleep precisely: the default 50 µs timer slack would blur what is measured.
    // SAFETY: prctl with PR_SET_TIMERSLACK takes an integer and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0, 0, 0) };
    let mut load = Load::default();
    let mut conn: Option<TcpStream> = None;
    let req = format!("GET / HTTP/1.1\r\nhost: {target}\r\n\r\n");
    let mut buf = vec![0u8; 4096];
    let mut due = start + offset;
    while due < end {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    conn.insert(s)
                }
                Err(_) => {
                    load.errors += 1;
                    due += every;
                    continue;
                }
            },
        };
        match exchange(s, req.as_bytes(), &mut buf) {
            Ok(()) => load.latencies.push(due.elapsed().as_nanos() as u64),
            Err(_) => {
                load.errors += 1;
                conn = None;
            }
        }
        due += every;
    }
    load
}

/// Sends one request and reads one response with a Content-Length body.
fn exchange(s: &mut TcpStream, req: &[u8], buf: &mut [u8]) -> std::io::Result<()> {
    s.write_all(req)?;
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        let head = &buf[..have];
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or(std::io::ErrorKind::InvalidData)?;
            let total = end + 4 + len;
            if total > buf.len() {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            while have < total {
                let n = s.read(&mut buf[have..total])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                have += n;
            }
            return Ok(());
        }
        if have == buf.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// A constant-rate load from namespace `ns` to `target`: `o.rate` requests/s spread
/// over `o.conns` connections, for `o.seconds` after a 1 s warm-up that is not counted.
fn load(ns: &str, target: SocketAddr, o: &Opts) -> Load {
    let every = Duration::from_secs_f64(o.conns as f64 / o.rate);
    let warm = Instant::now() + Duration::from_millis(200);
    let start = warm + Duration::from_secs(1);
    let end = start + Duration::from_secs(o.seconds);
    let threads: Vec<_> = (0..o.conns)
        .map(|i| {
            let offset = every.mul_f64(i as f64 / o.conns as f64);
            in_netns(ns, move || {
                let mut l = connection(target, warm, offset, every, end);
                // Only what was due from `start` on counts.
                let skip = ((start - warm).as_secs_f64() / every.as_secs_f64()) as usize;
                l.latencies.drain(..skip.min(l.latencies.len()));
                l
            })
        })
        .collect();
    let mut all = Load::default();
    for t in threads {
        let l = t.join().expect("load thread");
        all.latencies.extend(l.latencies);
        all.errors += l.errors;
    }
    all.latencies.sort_unstable();
    all
}

/// CPU time (s) a process has used, its threads' included.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no memory preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A field of /proc/PID/status, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / 1024.0
}

/// Single-stream bulk TCP throughput from namespace `from` to `to_ns`'s `ip`, Gbit/s.
fn iperf(from: &str, to_ns: &str, ip: std::net::Ipv4Addr, seconds: u64) -> f64 {
    let mut server = Command::new("ip")
        .args(["netns", "exec", to_ns, "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (apt-get install iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", from, "iperf3", "-J", "-p", "5201", "-c"])
        .arg(ip.to_string())
        .args(["-t", &seconds.to_string()])
        .output()
        .expect("iperf3");
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(f64::NAN)
        / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text a node proxy's admin listener answers on `path`.
fn admin(ns: &str, path: &'static str) -> String {
    block_on_in(ns, async move {
        let Ok(mut s) = tokio::net::TcpStream::connect("127.0.0.1:15020").await else {
            return String::new();
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
        let _ = s.write_all(req.as_bytes()).await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    })
}

fn start_node_proxy(c: &Cluster, n: usize, tmp: &Path, o: &Opts) -> Child {
    let ns = &c.nodes[n - 1].0;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&o.bin)
        .args(["--workers", &o.threads.to_string(), "node"])
        .arg("--config")
        .arg(tmp.join("manifests"))
        .args(["--node-name", &format!("n{n}")])
        .args(["--ca-addr", &format!("{}:15012", c.host_ip)])
        .arg("--ca-root")
        .arg(tmp.join("ca/root-cert.pem"))
        .arg("--token-file")
        .arg(tmp.join(format!("token-n{n}")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.join(format!("node{n}.log"))).expect("log"))
        .spawn()
        .expect("start node proxy")
}

fn main() {
    let o = opts();
    if let Some(why) = netns::unavailable() {
        eprintln!("mesh_bench needs network namespaces: {why}");
        std::process::exit(2);
    }
    let c = Cluster::new(9, 2);
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    std::fs::create_dir(t.join("manifests")).expect("dir");
    std::fs::write(t.join("manifests/bench.yaml"), manifests(&c)).expect("write");
    std::fs::write(
        t.join("tokens"),
        "n1-bench-token-0123456789 n1\nn2-bench-token-0123456789 n2\n",
    )
    .expect("tokens");
    for n in 1..=2 {
        std::fs::write(
            t.join(format!("token-n{n}")),
            format!("n{n}-bench-token-0123456789\n"),
        )
        .expect("token");
    }
    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new(&o.bin)
            .args(["run", "--no-watch", "--admin-addr", "127.0.0.1:0"])
            .arg("--config")
            .arg(t.join("manifests"))
            .args(["--mesh-ca-listen", &format!("{}:15012", c.host_ip)])
            .arg("--mesh-ca-dir")
            .arg(t.join("ca"))
            .arg("--mesh-node-tokens")
            .arg(t.join("tokens"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(t.join("controller.log")).expect("log"))
            .spawn()
            .expect("start the controller"),
    );
    let ca: SocketAddr = format!("{}:15012", c.host_ip).parse().expect("addr");
    wait_for("the CA", || {
        TcpStream::connect_timeout(&ca, Duration::from_millis(200)).is_ok()
    });
    for n in 1..=2 {
        procs.0.push(start_node_proxy(&c, n, t, &o));
    }
    let pids: Vec<u32> = procs.0[1..].iter().map(|p| p.id()).collect();
    for n in 1..=2 {
        let ns = c.nodes[n - 1].0.clone();
        wait_for("a node proxy", || {
            admin(&ns, "/ready").starts_with("HTTP/1.1 200")
        });
    }
    let (mesh_client, mesh_server) = (c.pod(1, 0), c.pod(2, 0));
    let (plain_client, plain_server) = (c.pod(1, 1), c.pod(2, 1));
    let mesh_target = SocketAddr::new(mesh_server.ip.into(), 8080);
    let plain_target = SocketAddr::new(plain_server.ip.into(), 8080);
    serve_in(&mesh_server.ns, server(mesh_target));
    serve_in(&plain_server.ns, server(plain_target));
    std::thread::sleep(Duration::from_millis(200));

    let mut rows: Vec<serde_json::Value> = Vec::new();
    let (mut direct_p, mut mesh_p, mut added) = (vec![], vec![], vec![]);
    let mut cpu_us = vec![];
    for round in 1..=o.rounds {
        let d = load(&plain_client.ns, plain_target, &o);
        let cpu0: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        let m = load(&mesh_client.ns, mesh_target, &o);
        let cpu1: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        // Requests of the whole phase, warm-up included, for the CPU they cost.
        let requests = o.rate * (o.seconds as f64 + 1.0);
        let per_req: Vec<f64> = cpu0
            .iter()
            .zip(&cpu1)
            .map(|(a, b)| (b - a) * 1e6 / requests)
            .collect();
        let ps = [0.5, 0.9, 0.99];
        let dp: Vec<f64> = ps.iter().map(|p| d.pct(*p)).collect();
        let mp: Vec<f64> = ps.iter().map(|p| m.pct(*p)).collect();
        eprintln!(
            "round {round}: direct p50/p90/p99 {:.0}/{:.0}/{:.0} us ({} ok, {} errors); mesh {:.0}/{:.0}/{:.0} us ({} ok, {} errors); proxy CPU per request {:.1} / {:.1} us",
            dp[0], dp[1], dp[2], d.latencies.len(), d.errors, mp[0], mp[1], mp[2], m.latencies.len(), m.errors, per_req[0], per_req[1]
        );
        rows.push(serde_json::json!({
            "round": round, "direct_us": dp, "mesh_us": mp,
            "direct_ok": d.latencies.len(), "direct_errors": d.errors,
            "mesh_ok": m.latencies.len(), "mesh_errors": m.errors,
            "proxy_cpu_us_per_request": per_req,
        }));
        added.push(mp.iter().zip(&dp).map(|(m, d)| m - d).collect::<Vec<f64>>());
        direct_p.push(dp);
        mesh_p.push(mp);
        cpu_us.push(per_req);
    }
    let rss_load: Vec<f64> = pids.iter().map(|p| status_mib(*p, "VmRSS:")).collect();
    let anon_load: Vec<f64> = pids.iter().map(|p| status_mib(*p, "RssAnon:")).collect();
    let file_load: Vec<f64> = pids.iter().map(|p| status_mib(*p, "RssFile:")).collect();
    let hwm_load: Vec<f64> = pids.iter().map(|p| status_mib(*p, "VmHWM:")).collect();

    // 1,000 more workloads known: the proxies reload, then carry the load again.
    std::fs::write(t.join("manifests/known.yaml"), known_manifests(o.known)).expect("write");
    for n in 1..=2 {
        let ns = c.nodes[n - 1].0.clone();
        wait_for("the reload", || {
            admin(&ns, "/ready").contains("mesh version 2")
        });
    }
    let k = load(&mesh_client.ns, mesh_target, &o);
    let rss_known: Vec<f64> = pids.iter().map(|p| status_mib(*p, "VmRSS:")).collect();
    eprintln!(
        "with {} workloads known: mesh p50/p99 {:.0}/{:.0} us ({} errors), RSS {:.1} / {:.1} MiB",
        o.known,
        k.pct(0.5),
        k.pct(0.99),
        k.errors,
        rss_known[0],
        rss_known[1]
    );

    let (mut direct_bulk, mut mesh_bulk) = (vec![], vec![]);
    for _ in 0..o.rounds {
        direct_bulk.push(iperf(
            &plain_client.ns,
            &plain_server.ns,
            plain_server.ip,
            o.iperf,
        ));
        mesh_bulk.push(iperf(
            &mesh_client.ns,
            &mesh_server.ns,
            mesh_server.ip,
            o.iperf,
        ));
        eprintln!(
            "bulk: direct {:.2} Gbit/s, mesh {:.2} Gbit/s",
            direct_bulk.last().unwrap_or(&0.0),
            mesh_bulk.last().unwrap_or(&0.0)
        );
    }
    let hwm_bulk: Vec<f64> = pids.iter().map(|p| status_mib(*p, "VmHWM:")).collect();

    let col = |v: &[Vec<f64>], i: usize| median(v.iter().map(|r| r[i]).collect());
    let summary = serde_json::json!({
        "rate": o.rate, "seconds": o.seconds, "conns": o.conns, "rounds": o.rounds,
        "direct_us_p50_p90_p99": [col(&direct_p, 0), col(&direct_p, 1), col(&direct_p, 2)],
        "mesh_us_p50_p90_p99": [col(&mesh_p, 0), col(&mesh_p, 1), col(&mesh_p, 2)],
        "added_us_p50_p90_p99": [col(&added, 0), col(&added, 1), col(&added, 2)],
        "proxy_cpu_us_per_request_n1_n2": [col(&cpu_us, 0), col(&cpu_us, 1)],
        "proxy_cores_at_rate_n1_n2": [col(&cpu_us, 0) * o.rate / 1e6, col(&cpu_us, 1) * o.rate / 1e6],
        "rss_mib_at_load_n1_n2": rss_load,
        "peak_rss_mib_at_load_n1_n2": hwm_load,
        "rss_anon_mib_at_load_n1_n2": anon_load,
        "rss_file_mib_at_load_n1_n2": file_load,
        "peak_rss_mib_after_bulk_n1_n2": hwm_bulk,
        "known_workloads": o.known,
        "rss_mib_with_known_n1_n2": rss_known,
        "bulk_gbit_direct_mesh": [median(direct_bulk.clone()), median(mesh_bulk.clone())],
        "bulk_gbit_rounds_direct": direct_bulk,
        "bulk_gbit_rounds_mesh": mesh_bulk,
        "bulk_ratio_median_of_rounds": median(mesh_bulk.iter().zip(&direct_bulk).map(|(m, d)| m / d).collect()),
        "rounds_detail": rows,
    });
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    println!("{text}");
    if let Some(out) = &o.out {
        std::fs::write(out, &text).expect("write the results");
    }
    drop(procs);
    drop(c);
}
