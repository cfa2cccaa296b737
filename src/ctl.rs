//! `gatehouse ctl`: questions to a running controller.

use anyhow::Context;
use gatehouse_control::pb::config_distribution_client::ConfigDistributionClient;
use gatehouse_control::pb::ListProxiesRequest;
use std::fmt::Write;
use std::path::Path;

/// `gatehouse ctl proxies`: the proxies connected to the controller at `url`, as a table
/// (or JSON): who each is, the version it acknowledged against the one it should run,
/// its last NACK and how long it has lagged.
pub async fn proxies(url: &str, ca: Option<&Path>, json: bool) -> anyhow::Result<String> {
    let channel = gatehouse_control::transport::connect(url, ca, None)
        .await
        .with_context(|| format!("cannot reach the controller at {url}"))?;
    let mut client = ConfigDistributionClient::new(channel);
    let list = client
        .list_proxies(ListProxiesRequest {})
        .await
        .with_context(|| format!("the controller at {url} did not answer"))?
        .into_inner();
    if json {
        let proxies: Vec<serde_json::Value> = list
            .proxies
            .iter()
            .map(|p| {
                let who = p.proxy.clone().unwrap_or_default();
                serde_json::json!({
                    "id": who.id, "role": who.role, "node": who.node, "cluster": who.cluster,
                    "softwareVersion": who.version, "address": p.address,
                    "ackedVersion": p.acked_version, "desiredVersion": p.desired_version,
                    "inSync": !p.acked_version.is_empty() && p.acked_version == p.desired_version,
                    "lastNack": p.last_nack, "secondsSinceAnswer": p.seconds_since_answer,
                    "connectedSeconds": p.connected_seconds, "lagSeconds": p.lag_seconds,
                })
            })
            .collect();
        let clusters: serde_json::Map<String, serde_json::Value> = list
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.resources.into()))
            .collect();
        let doc = serde_json::json!({"controller": list.controller, "proxies": proxies,
            "clusters": clusters});
        return Ok(format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let mut out = format!(
        "controller {}: {} proxies\n",
        list.controller,
        list.proxies.len()
    );
    for c in &list.clusters {
        let _ = writeln!(out, "cluster {}: {} objects", c.name, c.resources);
    }
    let _ = writeln!(
        out,
        "{:<24} {:<8} {:<12} {:<10} {:<17} {:<7} {:>7}  LAST NACK",
        "ID", "ROLE", "NODE", "CLUSTER", "ACKED VERSION", "IN SYNC", "LAG"
    );
    for p in &list.proxies {
        let who = p.proxy.clone().unwrap_or_default();
        let in_sync = !p.acked_version.is_empty() && p.acked_version == p.desired_version;
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<12} {:<10} {:<17} {:<7} {:>6.1}s  {}",
            who.id,
            who.role,
            if who.node.is_empty() { "-" } else { &who.node },
            who.cluster,
            if p.acked_version.is_empty() {
                "-"
            } else {
                &p.acked_version
            },
            if in_sync { "yes" } else { "no" },
            p.lag_seconds,
            if p.last_nack.is_empty() {
                "-"
            } else {
                &p.last_nack
            },
        );
    }
    Ok(out)
}

/// Asks the admin listener at `admin` for `path` (HTTP/1.0, so the answer ends with the
/// connection); returns the status and the reader, positioned at the body.
async fn admin_open(
    admin: &str,
    path: &str,
) -> anyhow::Result<(u16, tokio::io::BufReader<tokio::net::TcpStream>)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("cannot reach the admin listener at {admin}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nhost: admin\r\n\r\n").as_bytes())
        .await?;
    let mut r = tokio::io::BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{admin} did not answer HTTP: {line:?}"))?;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
    }
    Ok((status, r))
}

/// GETs `path` from the admin listener; an answer other than 200 is an error with its
/// text.
pub(crate) async fn admin_get(admin: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let (status, mut r) = admin_open(admin, path).await?;
    let mut body = String::new();
    r.read_to_string(&mut body).await?;
    if status != 200 {
        anyhow::bail!("{}", body.trim());
    }
    Ok(body)
}

/// `gatehouse ctl explain ID`: why the request with this id (its `x-request-id`) went
/// where it went and was answered as it was, from the proxy's ring of recent requests.
pub async fn explain(admin: &str, id: &str, json: bool) -> anyhow::Result<String> {
    let body = admin_get(admin, &format!("/requests/{}", escape_path(id))).await?;
    if json {
        return Ok(body);
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let mut out = String::new();
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let _ = writeln!(out, "request  {}", s("requestId"));
    let _ = writeln!(
        out,
        "         {} {} {} ({}) from {}",
        s("method"),
        s("host"),
        s("target"),
        s("protocol"),
        s("client")
    );
    let _ = writeln!(out, "route    {}", s("route"));
    if v["cluster"].is_string() {
        let _ = writeln!(
            out,
            "upstream {} endpoint {} ({})",
            s("cluster"),
            s("endpoint"),
            v["balancer"]
        );
    }
    let _ = writeln!(
        out,
        "answer   {} {} in {:.3} ms",
        v["status"],
        s("reason"),
        v["durationMs"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(out, "why      {}", s("explanation"));
    Ok(out)
}

fn escape_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What `gatehouse ctl tap` shows of the requests.
#[derive(Debug, Default, Clone)]
pub struct TapArgs {
    pub route: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub method: Option<String>,
    pub status: Option<String>,
    /// Stop after this many.
    pub max: Option<usize>,
    pub json: bool,
}

/// `gatehouse ctl tap`: the requests that match, live, as they end, until `max` (or
/// forever); each line goes to `out` as it comes.
pub async fn tap(admin: &str, args: &TapArgs, mut out: impl std::io::Write) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mut q = Vec::new();
    for (k, v) in [
        ("route", &args.route),
        ("host", &args.host),
        ("path", &args.path),
        ("method", &args.method),
        ("status", &args.status),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", escape_path(v)));
        }
    }
    let (status, mut r) = admin_open(admin, &format!("/tap?{}", q.join("&"))).await?;
    if status != 200 {
        anyhow::bail!("the admin listener at {admin} answered {status} to /tap");
    }
    let mut seen = 0;
    let mut line = String::new();
    while args.max.is_none_or(|m| seen < m) {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            break;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        seen += 1;
        if args.json {
            writeln!(out, "{}", line.trim())?;
        } else {
            let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
            writeln!(
                out,
                "{} {} {} {}{} route={} upstream={} reason={} {:.3}ms id={}",
                v["status"],
                s("method"),
                s("protocol"),
                s("host"),
                s("target"),
                s("route"),
                s("endpoint"),
                s("reason"),
                v["durationMs"].as_f64().unwrap_or(0.0),
                s("requestId"),
            )?;
        }
        out.flush()?;
    }
    Ok(())
}

/// One route's line of `gatehouse ctl top`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopRow {
    pub route: String,
    pub rps: f64,
    /// Share of answers that are not 5xx.
    pub success: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// The proxy's own answers by reason, in the interval.
    pub reasons: std::collections::BTreeMap<String, u64>,
}

/// The latency below which `q` of the requests counted in `buckets` fall (the bucket's
/// upper bound, in ms; the last bucket is slower than all bounds).
fn quantile_ms(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let want = (total as f64 * q).ceil() as u64;
    let mut cum = 0;
    for (i, n) in buckets.iter().enumerate() {
        cum += n;
        if cum >= want {
            return gatehouse_proxy::metrics::BUCKETS
                .get(i)
                .map_or(f64::INFINITY, |s| s * 1e3);
        }
    }
    f64::INFINITY
}

/// The busiest routes between two samples of `/top`, busiest first.
pub fn top_rows(before: &serde_json::Value, after: &serde_json::Value) -> Vec<TopRow> {
    let secs = (after["time"].as_u64().unwrap_or(0) as f64
        - before["time"].as_u64().unwrap_or(0) as f64)
        / 1e3;
    let of = |v: &serde_json::Value| -> std::collections::HashMap<String, serde_json::Value> {
        v["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["route"].as_str()?.to_string(), r.clone())))
            .collect()
    };
    let (old, new) = (of(before), of(after));
    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut rows: Vec<TopRow> = new
        .iter()
        .filter_map(|(name, n)| {
            let o = old.get(name).cloned().unwrap_or_default();
            let requests = num(n, "requests").saturating_sub(num(&o, "requests"));
            if requests == 0 {
                return None;
            }
            let errors = num(&n["classes"], "5xx").saturating_sub(num(&o["classes"], "5xx"));
            let buckets: Vec<u64> = n["latencyBuckets"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, b)| {
                    b.as_u64()
                        .unwrap_or(0)
                        .saturating_sub(o["latencyBuckets"][i].as_u64().unwrap_or(0))
                })
                .collect();
            let reasons = n["reasons"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| {
                    let d = v
                        .as_u64()?
                        .saturating_sub(o["reasons"][k].as_u64().unwrap_or(0));
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect();
            Some(TopRow {
                route: name.clone(),
                rps: if secs > 0.0 {
                    requests as f64 / secs
                } else {
                    0.0
                },
                success: 1.0 - errors as f64 / requests as f64,
                p50_ms: quantile_ms(&buckets, 0.5),
                p99_ms: quantile_ms(&buckets, 0.99),
                requests,
                reasons,
            })
        })
        .collect();
    rows.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));
    rows
}

/// `gatehouse ctl top`: the busiest routes over `interval`, with request rate, success
/// rate, p50/p99 latency and the proxy's own answers by reason; `iterations` times (0:
/// until stopped).
pub async fn top(
    admin: &str,
    interval: std::time::Duration,
    iterations: usize,
    json: bool,
    mut out: impl std::io::Write,
) -> anyhow::Result<()> {
    let sample = || async {
        let body = admin_get(admin, "/top").await?;
        anyhow::Ok(serde_json::from_str::<serde_json::Value>(&body)?)
    };
    let mut before = sample().await?;
    let mut n = 0;
    while iterations == 0 || n < iterations {
        tokio::time::sleep(interval).await;
        let after = sample().await?;
        let rows = top_rows(&before, &after);
        if json {
            writeln!(out, "{}", serde_json::to_string(&rows)?)?;
        } else {
            writeln!(
                out,
                "{:<48} {:>9} {:>8} {:>9} {:>9}  reasons",
                "ROUTE", "RPS", "SUCCESS", "P50 ms", "P99 ms"
            )?;
            for r in &rows {
                let reasons: Vec<String> =
                    r.reasons.iter().map(|(k, v)| format!("{k}={v}")).collect();
                writeln!(
                    out,
                    "{:<48} {:>9.1} {:>7.1}% {:>9.2} {:>9.2}  {}",
                    r.route,
                    r.rps,
                    r.success * 100.0,
                    r.p50_ms,
                    r.p99_ms,
                    reasons.join(" ")
                )?;
            }
            writeln!(out)?;
        }
        out.flush()?;
        before = after;
        n += 1;
    }
    Ok(())
}

/// `gatehouse ctl policy suggest`: the AuthorizationPolicies that allow exactly the
/// east-west calls the node proxies at `admins` saw (their `/flows/edges`), as YAML.
pub async fn policy_suggest(
    admins: &[String],
    opts: &gatehouse_telemetry::policy_suggest::SuggestOptions,
) -> anyhow::Result<String> {
    let mut edges = Vec::new();
    for admin in admins {
        let body = admin_get(admin, "/flows/edges").await?;
        let doc: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{admin}/flows/edges is not JSON"))?;
        edges.extend(
            gatehouse_telemetry::policy_suggest::edges_from_json(&doc)
                .map_err(|e| anyhow::anyhow!("{admin}/flows/edges: {e}"))?,
        );
    }
    Ok(gatehouse_telemetry::policy_suggest::suggest(&edges, opts))
}
