//! Active health checking: one task per cluster whose policy asks for it probes every
//! endpoint on the interval (TCP connect, or an HTTP GET whose status must fall in the
//! expected ranges) and feeds the results to the endpoint's health state machine. The
//! task follows the cluster across Snapshots and endpoint updates, and ends when the
//! cluster or its health check leaves the config.

use crate::dataplane::DataPlane;
use gatehouse_translate::cluster::{HealthPolicy, Probe};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Clusters whose checker task runs.
#[derive(Default)]
pub struct HealthCheckers {
    running: Mutex<HashSet<Arc<str>>>,
}

impl HealthCheckers {
    /// Starts a checker for each cluster of the current Snapshot that has a health
    /// check and none yet.
    pub fn sync(dp: &Arc<DataPlane>) {
        let active = dp.current();
        let mut running = dp.health.running.lock().unwrap_or_else(|e| e.into_inner());
        for (name, c) in active.snapshot.clusters.iter() {
            if c.policy.health.is_none() || running.contains(name) {
                continue;
            }
            running.insert(name.clone());
            tokio::spawn(check_cluster(Arc::downgrade(dp), name.clone()));
        }
    }
}

/// Probes the endpoints of cluster `name` until it (or its health check) goes away.
async fn check_cluster(dp: Weak<DataPlane>, name: Arc<str>) {
    let mut first = true;
    loop {
        let Some(plane) = dp.upgrade() else { return };
        let cluster = plane.current().snapshot.clusters.get(&name).cloned();
        let Some((cluster, policy)) = cluster.and_then(|c| c.policy.health.clone().map(|h| (c, h)))
        else {
            plane
                .health
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            return;
        };
        let mut shutdown = plane.shutdown.subscribe();
        drop(plane);
        if !first {
            // Up to 10% jitter, so checkers started together do not probe in step.
            let wait = policy.interval.mul_f64(1.0 + fastrand::f64() * 0.1);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
        first = false;
        let mut probes = tokio::task::JoinSet::new();
        for ep in cluster.endpoints() {
            let policy = policy.clone();
            probes.spawn(async move { (ep, probe(ep, &policy).await) });
        }
        while let Some(Ok((ep, result))) = probes.join_next().await {
            if let Some(plane) = dp.upgrade() {
                plane
                    .metrics
                    .counters
                    .health_probes_total
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(healthy) = cluster.record_probe(ep, result.is_ok()) {
                    plane
                        .metrics
                        .counters
                        .health_transitions_total
                        .fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(()) => {
                            tracing::info!(cluster = %name, endpoint = %ep, "endpoint healthy")
                        }
                        Err(why) => {
                            tracing::warn!(cluster = %name, endpoint = %ep, %why, healthy, "endpoint unhealthy")
                        }
                    }
                }
            }
        }
    }
}

/// One probe of `ep`: Ok if it passes, else why not.
pub async fn probe(ep: SocketAddr, policy: &HealthPolicy) -> Result<(), String> {
    tokio::time::timeout(policy.timeout, probe_once(ep, &policy.probe))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", policy.timeout)))
}

async fn probe_once(ep: SocketAddr, probe: &Probe) -> Result<(), String> {
    let mut tcp = TcpStream::connect(ep)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let Probe::Http {
        path,
        host,
        expected,
    } = probe
    else {
        return Ok(());
    };
    let host = match host {
        Some(h) => h.clone(),
        None => ep.to_string(),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gatehouse-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    // The status line is all a probe needs.
    let mut buf = [0u8; 512];
    let mut len = 0;
    while !buf[..len].windows(2).any(|w| w == b"\r\n") && len < buf.len() {
        let n = tcp
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let status = status_of(&buf[..len]).ok_or("no HTTP status line in the answer")?;
    match expected.iter().any(|&(lo, hi)| (lo..=hi).contains(&status)) {
        true => Ok(()),
        false => Err(format!("status {status}")),
    }
}

/// The status code of an HTTP/1.x status line.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let mut parts = line.split(|&b| b == b' ');
    if !parts.next()?.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_of(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_of(b""), None);
    }
}
