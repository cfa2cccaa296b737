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
