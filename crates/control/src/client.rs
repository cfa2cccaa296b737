//! The proxy's side of the protocol: one stream to the controller, which it tells who
//! it is and what it holds. Each response is parsed (an object this proxy cannot read
//! rejects the whole response), handed to the caller to apply, and acknowledged, or
//! rejected with the caller's error; a rejected response leaves the proxy with what
//! it had. When the stream breaks, the proxy keeps serving what it holds, indefinitely,
//! and reconnects with backoff; on reconnecting it says what it holds, so only the
//! difference comes back. Given several controller replicas, a proxy starts with the
//! one its id hashes to (so proxies spread over them) and moves to the next when its
//! stream breaks; replicas serving the same sources give the same versions, so moving
//! costs no reload.

use crate::pb::config_distribution_client::ConfigDistributionClient;
use crate::pb::{DeltaRequest, DeltaResponse, ErrorDetail, Proxy, ResourceList};
use crate::table::kind_of;
use gatehouse_model::manifest::object_from_value;
use gatehouse_model::{ObjectKey, StoredObject};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One response, parsed: what to change.
#[derive(Debug)]
pub struct Changes {
    pub upserts: Vec<StoredObject>,
    pub removals: Vec<ObjectKey>,
    /// The version the proxy holds once it has applied them.
    pub version: String,
}

/// What the follower has seen, for metrics.
#[derive(Debug, Default)]
pub struct FollowStats {
    pub connected: AtomicBool,
    pub responses: AtomicU64,
    pub resources: AtomicU64,
    pub full_states: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub reconnects: AtomicU64,
}

impl FollowStats {
    /// Prometheus text for these counts.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let rows = [
            (
                "gatehouse_control_connected",
                "gauge",
                "1 while the stream to the controller is up.",
                self.connected.load(Ordering::Relaxed) as u64,
            ),
            (
                "gatehouse_control_responses_total",
                "counter",
                "Responses received from the controller.",
                self.responses.load(Ordering::Relaxed),
            ),
            (
                "gatehouse_control_resources_total",
                "counter",
                "Resources received from the controller (added or changed).",
                self.resources.load(Ordering::Relaxed),
            ),
            (
                "gatehouse_control_full_states_total",
                "counter",
                "Responses that carried the whole set.",
                self.full_states.load(Ordering::Relaxed),
            ),
            (
                "gatehouse_control_acks_total",
                "counter",
                "Responses applied and acknowledged.",
                self.acks.load(Ordering::Relaxed),
            ),
            (
                "gatehouse_control_nacks_total",
                "counter",
                "Responses rejected (NACK).",
                self.nacks.load(Ordering::Relaxed),
            ),
            (
                "gatehouse_control_reconnects_total",
                "counter",
                "Streams to the controller lost or refused.",
                self.reconnects.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

/// The key a resource name stands for.
pub fn key_of(name: &str) -> Result<ObjectKey, String> {
    let kind = gatehouse_model::object::KINDS
        .into_iter()
        .find(|k| *k == kind_of(name))
        .ok_or_else(|| format!("{name}: unknown kind"))?;
    let mut parts = name.splitn(3, '/').skip(1);
    match (parts.next(), parts.next()) {
        (Some(ns), Some(n)) => Ok(ObjectKey {
            kind,
            namespace: Some(ns.to_string()),
            name: n.to_string(),
        }),
        (Some(n), None) => Ok(ObjectKey {
            kind,
            namespace: None,
            name: n.to_string(),
        }),
        _ => Err(format!("{name}: not a resource name")),
    }
}

/// The largest whole set a proxy accepts, decompressed.
const MAX_SET_BYTES: usize = 1 << 30;

/// Moves a compressed whole set into the response's resources.
fn decompress(resp: &mut DeltaResponse) -> Result<(), String> {
    if resp.compressed_resources.is_empty() {
        return Ok(());
    }
    let raw = zstd::bulk::decompress(&resp.compressed_resources, MAX_SET_BYTES)
        .map_err(|e| format!("the compressed set does not decompress: {e}"))?;
    let list = <ResourceList as prost::Message>::decode(raw.as_slice())
        .map_err(|e| format!("the compressed set does not decode: {e}"))?;
    resp.resources.extend(list.resources);
    resp.compressed_resources = bytes::Bytes::new();
    Ok(())
}

/// Parses a response against what is held (name -> version).
fn parse(resp: &DeltaResponse, held: &HashMap<String, String>) -> Result<Changes, String> {
    let mut upserts = Vec::with_capacity(resp.resources.len());
    for r in &resp.resources {
        let value: serde_json::Value =
            serde_json::from_slice(&r.object).map_err(|e| format!("{}: not JSON: {e}", r.name))?;
        let object = object_from_value(value)
            .map_err(|e| format!("{}: {e}", r.name))?
            .ok_or_else(|| format!("{}: a kind this proxy does not read", r.name))?;
        let key = object.key();
        if crate::table::resource_name(&key) != r.name {
            return Err(format!("{}: the object is {key}", r.name));
        }
        upserts.push(object);
    }
    let mut removals = resp
        .removed_resources
        .iter()
        .map(|n| key_of(n))
        .collect::<Result<Vec<_>, _>>()?;
    if resp.full_state {
        // The whole set: what is held and not in it goes.
        let names: std::collections::HashSet<&str> =
            resp.resources.iter().map(|r| r.name.as_str()).collect();
        for name in held.keys().filter(|n| !names.contains(n.as_str())) {
            removals.push(key_of(name)?);
        }
    }
    Ok(Changes {
        upserts,
        removals,
        version: resp.system_version_info.clone(),
    })
}

/// Where and as whom to follow a controller.
#[derive(Debug, Clone)]
pub struct Follow {
    /// `http://HOST:PORT`, or several replicas' separated by commas.
    pub url: String,
    pub proxy: Proxy,
    /// A file holding the bearer token that admits this proxy (read on every
    /// connection, so a replaced token is picked up).
    pub token_file: Option<std::path::PathBuf>,
    /// The CA bundle (PEM) that vouches for an `https://` controller.
    pub ca_file: Option<std::path::PathBuf>,
    /// The certificate (from the mesh CA) it presents over mutual TLS, if any.
    pub client_cert: Option<crate::transport::ClientCert>,
}

/// Follows the controller, forever: `apply` applies each response (an error rejects
/// it, and must leave things as they were).
pub async fn follow<F, Fut>(to: Follow, stats: Arc<FollowStats>, mut apply: F)
where
    F: FnMut(Changes) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut held: HashMap<String, String> = HashMap::new();
    let mut backoff = Duration::from_millis(100);
    let urls: Vec<String> = to
        .url
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    // Proxies spread over the replicas by their id.
    let mut i = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        to.proxy.id.hash(&mut h);
        h.finish() as usize % urls.len().max(1)
    };
    loop {
        let url = urls.get(i).cloned().unwrap_or_default();
        match session(&url, &to, &mut held, &stats, &mut apply).await {
            Ok(()) => tracing::warn!(%url, "the controller ended the stream; reconnecting"),
            Err(e) => {
                tracing::warn!(%url, error = format!("{e:#}"), "no stream to the controller; serving what is held and retrying")
            }
        }
        // The next replica, if there is one.
        i = (i + 1) % urls.len().max(1);
        if stats.connected.swap(false, Ordering::Relaxed) {
            backoff = Duration::from_millis(100);
        }
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        // Jitter spreads a thousand proxies' reconnections after a controller restart.
        let jitter = Duration::from_millis(fastrand_ms(backoff.as_millis() as u64 / 2 + 1));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A pseudo-random number below `n` (from the clock: good enough for jitter).
fn fastrand_ms(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (std::process::id() as u64).wrapping_mul(0x9e37_79b9)) % n.max(1)
}

async fn session<F, Fut>(
    url: &str,
    to: &Follow,
    held: &mut HashMap<String, String>,
    stats: &FollowStats,
    apply: &mut F,
) -> anyhow::Result<()>
where
    F: FnMut(Changes) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let proxy = &to.proxy;
    let token = match &to.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let channel =
        crate::transport::connect(url, to.ca_file.as_deref(), to.client_cert.as_ref()).await?;
    let mut client = ConfigDistributionClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaRequest {
        proxy: Some(proxy.clone()),
        initial_resource_versions: held.clone(),
        ..Default::default()
    })
    .await?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut responses = client.deltas(request).await?.into_inner();
    stats.connected.store(true, Ordering::Relaxed);
    tracing::info!(%url, held = held.len(), "following the controller");
    while let Some(mut resp) = responses.message().await? {
        stats.responses.fetch_add(1, Ordering::Relaxed);
        let unpacked = decompress(&mut resp);
        stats
            .resources
            .fetch_add(resp.resources.len() as u64, Ordering::Relaxed);
        if resp.full_state {
            stats.full_states.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = match unpacked.and_then(|()| parse(&resp, held)) {
            Ok(changes) => {
                let (n, gone) = (changes.upserts.len(), changes.removals.len());
                let r = apply(changes).await;
                if r.is_ok() {
                    tracing::info!(version = %resp.system_version_info, changed = n, removed = gone, "config from the controller applied");
                }
                r
            }
            Err(e) => Err(e),
        };
        let error_detail = match outcome {
            Ok(()) => {
                if resp.full_state {
                    held.clear();
                }
                for n in &resp.removed_resources {
                    held.remove(n);
                }
                for r in &resp.resources {
                    held.insert(r.name.clone(), r.version.clone());
                }
                stats.acks.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(message) => {
                tracing::error!(version = %resp.system_version_info, error = %message, "config from the controller rejected (NACK); still serving the last good one");
                stats.nacks.fetch_add(1, Ordering::Relaxed);
                Some(ErrorDetail { message })
            }
        };
        tx.send(DeltaRequest {
            response_nonce: resp.nonce.clone(),
            error_detail,
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_turn_back_into_keys() {
        let k = key_of("HTTPRoute/shop/web").expect("key");
        assert_eq!(
            (k.kind, k.namespace.as_deref(), k.name.as_str()),
            ("HTTPRoute", Some("shop"), "web")
        );
        let k = key_of("GatewayClass/gatehouse").expect("key");
        assert_eq!(
            (k.kind, k.namespace, k.name.as_str()),
            ("GatewayClass", None, "gatehouse")
        );
        assert!(key_of("Frobnicator/a/b").is_err());
    }
}
