//! Benchmark of the central controller (issue 8), run by `bench/control.sh`.
//!
//! The controller is this process: the real `Distributor` and its gRPC server on
//! loopback, holding `services` Services, each with an EndpointSlice of `endpoints`
//! endpoints (10,000 and 10 by default: 100,000 endpoints). The proxies are a second
//! process (this binary with `mode=clients`): `proxies` lightweight clients of the
//! real protocol (1,000 by default), each on its own HTTP/2 connection, saying who it
//! is (a gateway), acknowledging every response, and printing when each arrived. They
//! do not decompress or parse what they get; a real proxy's cost of that is measured
//! once, here.
//!
//! Measured:
//! - the storm: all proxies connect at once holding nothing; the time until every one
//!   has its whole set, and the bytes each got;
//! - `changes` endpoint changes, one at a time: one endpoint of one slice changes in the
//!   store, the controller syncs its table from the whole store (as its Kubernetes path
//!   does), and each proxy is sent the change; latency from the change to each proxy's
//!   receipt (wall clock, one machine), and bytes per proxy per change;
//! - the controller process's memory: before the table, with it, and its peak (VmHWM).
//!
//! With `role=node` the proxies are node proxies, each of its own node, and the store
//! holds `pods` Pods spread over those nodes (10 per node by default) and one
//! AuthorizationPolicy per namespace (100, and one in the root namespace): each node
//! proxy is sent only the policies of its pods' namespaces and the root's, beside the
//! shared whole set. The policies each proxy got are reported against all of them.
//!
//! keys: proxies=1000 services=10000 endpoints=10 changes=20 role=gateway pods=N out=FILE

use gatehouse_control::pb::config_distribution_client::ConfigDistributionClient;
use gatehouse_control::pb::{DeltaRequest, Proxy};
use gatehouse_control::server::Distributor;
use gatehouse_model::manifest::object_from_value;
use gatehouse_model::{ObjectStore, StoredObject};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn rss(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn service(i: usize) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 100)},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            "selector": {"app": format!("app-{i}")}}})
}

fn slice(i: usize, endpoints: usize, bump: usize) -> serde_json::Value {
    let eps: Vec<serde_json::Value> = (0..endpoints)
        .map(|e| {
            let last = if e == 0 { bump % 250 } else { e };
            serde_json::json!({"addresses": [format!("10.{}.{}.{}", i / 250 % 250, i % 250, last)],
                "conditions": {"ready": true}})
        })
        .collect();
    serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abc"), "namespace": format!("ns-{}", i % 100),
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps})
}

fn pod(i: usize, nodes: usize) -> serde_json::Value {
    let ns = format!("ns-{}", (i / 3) % 100);
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": ns, "labels": {"app": format!("app-{}", i % 50)}},
        "spec": {"nodeName": format!("node-{}", i % nodes), "serviceAccountName": format!("sa-{}", i % 20)},
        "status": {"phase": "Running", "podIP": format!("10.200.{}.{}", i / 250 % 250, i % 250)}})
}

fn policy(ns: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-callers", "namespace": ns},
        "spec": {"rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/{ns}/sa/sa-1")]}}],
            "to": [{"operation": {"methods": ["GET"]}}]}]}})
}

fn object(v: serde_json::Value) -> StoredObject {
    match object_from_value(v) {
        Ok(Some(o)) => o,
        other => panic!("bench object does not convert: {other:?}"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args: HashMap<String, String> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let num = |k: &str, d: usize| args.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    gatehouse_proxy::listener::raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let role = args
        .get("role")
        .cloned()
        .unwrap_or_else(|| "gateway".into());
    let proxies = num("proxies", 1000);
    match args.get("mode").map(String::as_str) {
        Some("clients") => rt.block_on(clients(
            args.get("addr").cloned().unwrap_or_default(),
            proxies,
            role,
        )),
        _ => rt.block_on(controller(Setup {
            pods: num("pods", if role == "node" { proxies * 10 } else { 0 }),
            proxies,
            services: num("services", 10_000),
            endpoints: num("endpoints", 10),
            changes: num("changes", 20),
            role,
            out: args.get("out").cloned(),
        })),
    }
}

/// What the controller side runs.
struct Setup {
    proxies: usize,
    services: usize,
    endpoints: usize,
    changes: usize,
    /// `gateway` or `node`.
    role: String,
    pods: usize,
    out: Option<String>,
}

/// The proxies: one task and one connection each; prints `start NS`, then `full NS
/// BYTES SCOPED` for each first response (SCOPED: the resources sent to it alone) and
/// `recv NS NAME BYTES` for each later one.
async fn clients(addr: String, proxies: usize, role: String) -> anyhow::Result<()> {
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    println!("start {}", now_ns());
    for id in 0..proxies {
        let (addr, lines_tx, role) = (addr.clone(), lines_tx.clone(), role.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = client(&addr, id, &role, &lines_tx).await {
                    eprintln!("client {id}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    drop(lines_tx);
    let mut out = std::io::stdout().lock();
    while let Some(line) = lines.recv().await {
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

async fn client(
    addr: &str,
    id: usize,
    role: &str,
    lines: &tokio::sync::mpsc::UnboundedSender<String>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let mut client = ConfigDistributionClient::new(channel).max_decoding_message_size(1 << 30);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DeltaRequest {
        proxy: Some(Proxy {
            id: format!("sim-{id}"),
            role: role.into(),
            node: format!("node-{id}"),
            cluster: "bench".into(),
            version: "bench".into(),
        }),
        ..Default::default()
    })
    .await?;
    let mut stream = client
        .deltas(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut first = true;
    while let Some(resp) = stream.message().await? {
        let bytes = prost::Message::encoded_len(&resp);
        let line = if first {
            format!("full {} {bytes} {}", now_ns(), resp.resources.len())
        } else {
            let name = resp
                .resources
                .first()
                .map(|r| r.name.as_str())
                .unwrap_or("-");
            format!("recv {} {name} {bytes}", now_ns())
        };
        first = false;
        let _ = lines.send(line);
        tx.send(DeltaRequest {
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

async fn controller(setup: Setup) -> anyhow::Result<()> {
    let Setup {
        proxies,
        services,
        endpoints,
        changes,
        ref role,
        pods,
        ref out,
    } = setup;
    let rss_start = rss("VmRSS:");
    let mut objects = Vec::with_capacity(services * 2 + pods);
    for i in 0..services {
        objects.push(object(service(i)));
        objects.push(object(slice(i, endpoints, 1)));
    }
    for i in 0..pods {
        objects.push(object(pod(i, proxies)));
    }
    let policies = if role == "node" { 101 } else { 0 };
    if role == "node" {
        for k in 0..100 {
            objects.push(object(policy(&format!("ns-{k}"))));
        }
        objects.push(object(policy("gatehouse-system")));
    }
    let mut store = ObjectStore::from_objects(objects);
    let rss_store = rss("VmRSS:");
    let dist = Distributor::new("bench");
    let t = Instant::now();
    dist.sync(&store);
    let sync_initial_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_table = rss("VmRSS:");
    eprintln!(
        "{} resources; table built in {sync_initial_ms:.0} ms; RSS {rss_start:.0} -> {rss_store:.0} (store) -> {rss_table:.0} MiB (table)",
        dist.len()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    dist.serve(listener, None);

    // What a real proxy pays to unpack the whole set, once.
    let full_bytes = {
        use gatehouse_control::pb::ResourceList;
        let table_set = {
            let mut all = Vec::new();
            let full = dist.update(|t| t.full(|_| true));
            for (name, e) in full.upserts {
                all.push(gatehouse_control::pb::Resource {
                    name: name.to_string(),
                    version: gatehouse_control::table::version_string(e.version),
                    object: e.body.map(|b| b.to_vec()).unwrap_or_default(),
                });
            }
            ResourceList { resources: all }
        };
        let encoded = prost::Message::encode_to_vec(&table_set);
        let compressed = zstd::bulk::compress(&encoded, 1)?;
        let t = Instant::now();
        let raw = zstd::bulk::decompress(&compressed, 1 << 30)?;
        let list = <ResourceList as prost::Message>::decode(raw.as_slice())?;
        let mut parsed = 0;
        for r in &list.resources {
            let v: serde_json::Value = serde_json::from_slice(&r.object)?;
            if object_from_value(v)?.is_some() {
                parsed += 1;
            }
        }
        let unpack_ms = t.elapsed().as_secs_f64() * 1e3;
        eprintln!(
            "whole set: {} resources, {:.1} MB encoded, {:.2} MB compressed; a proxy unpacks and parses it in {unpack_ms:.0} ms",
            parsed,
            encoded.len() as f64 / 1e6,
            compressed.len() as f64 / 1e6
        );
        (encoded.len(), compressed.len(), unpack_ms)
    };

    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "mode=clients",
            &format!("addr={addr}"),
            &format!("proxies={proxies}"),
            &format!("role={role}"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |within: Duration| lines_rx.recv_timeout(within).ok();

    // The storm.
    let mut start = 0u128;
    let (mut fulls, mut last_full, mut storm_bytes) = (0usize, 0u128, Vec::new());
    let mut scoped = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while fulls < proxies && Instant::now() < deadline {
        let Some(line) = next(Duration::from_secs(5)) else {
            continue;
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["start", ns] => start = ns.parse()?,
            ["full", ns, bytes, alone] => {
                fulls += 1;
                last_full = last_full.max(ns.parse()?);
                storm_bytes.push(bytes.parse::<usize>()?);
                scoped.push(alone.parse::<usize>()?);
            }
            _ => {}
        }
    }
    let storm_s = (last_full.saturating_sub(start)) as f64 / 1e9;
    eprintln!("storm: {fulls}/{proxies} proxies have the whole set after {storm_s:.2} s");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Endpoint changes, one at a time.
    let mut latencies_ms = Vec::new();
    let mut change_bytes = Vec::new();
    let mut sync_ms = Vec::new();
    for k in 0..changes {
        let i = (k * 37) % services;
        let name = format!("EndpointSlice/ns-{}/svc-{i}-abc", i % 100);
        store.upsert(object(slice(i, endpoints, 100 + k)));
        let t0 = now_ns();
        let t = Instant::now();
        let changed = dist.sync(&store);
        sync_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(changed, 1, "one resource changed");
        let mut got = 0;
        let until = Instant::now() + Duration::from_secs(20);
        while got < proxies && Instant::now() < until {
            let Some(line) = next(Duration::from_secs(5)) else {
                continue;
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            if let ["recv", ns, n, bytes] = f.as_slice() {
                if *n == name {
                    got += 1;
                    let ns: u128 = ns.parse()?;
                    latencies_ms.push(ns.saturating_sub(t0) as f64 / 1e6);
                    change_bytes.push(bytes.parse::<usize>()?);
                }
            }
        }
        eprintln!("change {k}: {got}/{proxies} proxies got it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    sync_ms.sort_by(|a, b| a.total_cmp(b));
    let peak = rss("VmHWM:");
    let median = |v: &[usize]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let result = serde_json::json!({
        "role": role, "pods": pods, "policies": policies,
        "policies_per_proxy_median_max": [median(&scoped), scoped.iter().max().copied().unwrap_or(0)],
        "proxies": proxies, "services": services, "endpoints": services * endpoints,
        "resources": dist.len(),
        "table_build_ms": sync_initial_ms,
        "whole_set_bytes_encoded": full_bytes.0, "whole_set_bytes_compressed": full_bytes.1,
        "proxy_unpack_and_parse_ms": full_bytes.2,
        "storm_proxies_served": fulls, "storm_seconds": storm_s,
        "storm_bytes_per_proxy_median": median(&storm_bytes),
        "change_latency_ms_p50_p90_p99_max": [percentile(&latencies_ms, 0.5), percentile(&latencies_ms, 0.9),
            percentile(&latencies_ms, 0.99), latencies_ms.last().copied().unwrap_or(0.0)],
        "change_deliveries": latencies_ms.len(), "changes": changes,
        "change_bytes_per_proxy_median": median(&change_bytes),
        "table_sync_ms_p50_max": [percentile(&sync_ms, 0.5), sync_ms.last().copied().unwrap_or(0.0)],
        "controller_rss_mib": {"start": rss_start, "with_store": rss_store, "with_table": rss_table,
            "end": rss("VmRSS:"), "peak": peak},
    });
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(path) = out {
        std::fs::write(path, &text)?;
    }
    Ok(())
}
