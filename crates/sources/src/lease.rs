//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas
//! (all serving traffic) exactly one writes status. The holder renews the Lease; another
//! replica takes it over once it has not been renewed for its duration. Every write
//! carries the Lease's resourceVersion, so two replicas cannot both win.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name in the Lease (pod name, or host name plus pid).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews and others check.
    pub renew_every: Duration,
}

/// Handle of a running election: whether this replica leads, and a way to step down.
pub struct Election {
    pub leader: watch::Receiver<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Election {
    /// Steps down: releases the Lease (if held) so another replica takes over at once.
    pub async fn resign(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One round: create, renew or take over the Lease. Ok(true) when this replica holds it.
async fn round(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let secs = cfg.duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let held_by_me = holder.as_deref() == Some(cfg.identity.as_str());
    let valid_for = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).max(1) as u64);
    let expired = match &spec.renew_time {
        Some(t) => now.duration_since(t.0).unsigned_abs() > valid_for && now > t.0,
        None => true,
    };
    if !held_by_me && holder.is_some() && !expired {
        return Ok(false);
    }
    if !held_by_me {
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(secs);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if this replica holds it.
async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    if let Err(e) = api.replace(&cfg.name, &PostParams::default(), &lease).await {
        tracing::warn!(error = %e, "could not release the leader Lease");
    }
}

/// Runs the election until `resign`.
pub fn elect(client: Client, cfg: LeaseConfig) -> Election {
    let (tx, leader) = watch::channel(false);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let mut last_success = tokio::time::Instant::now();
        loop {
            let lead = match round(&api, &cfg).await {
                Ok(l) => {
                    last_success = tokio::time::Instant::now();
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    // Keep leading only while the Lease we hold cannot have expired.
                    *tx.borrow() && last_success.elapsed() < cfg.duration
                }
            };
            tx.send_if_modified(|v| {
                if *v != lead {
                    tracing::info!(identity = %cfg.identity, leader = lead, "leadership changed");
                    *v = lead;
                    true
                } else {
                    false
                }
            });
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tokio::time::sleep(cfg.renew_every) => {}
            }
        }
        let _ = tx.send(false);
        release(&api, &cfg).await;
    });
    Election {
        leader,
        stop: Some(stop_tx),
        task: Some(task),
    }
}
