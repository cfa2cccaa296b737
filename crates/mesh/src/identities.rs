//! A node proxy's workload certificates: fetched from the CA for each identity its
//! workloads hold, kept in memory only, renewed at half their life (new connections
//! use the new one; connections open keep theirs), and dropped when no workload needs
//! them. Also the trust bundle, refreshed with every certificate.

use crate::ca::new_key_and_csr;
use crate::ca_api::CaClient;
use crate::identity::Identity;
use crate::tls;
use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One certificate held.
#[derive(Clone)]
pub struct Held {
    pub key: Arc<CertifiedKey>,
    pub issued: SystemTime,
    pub not_after: SystemTime,
}

impl Held {
    /// When to renew: half way through its life.
    fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.issued)
            .unwrap_or(Duration::ZERO);
        self.issued + life / 2
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;

/// The certificates of one node proxy.
pub struct Identities {
    ca: CaClient,
    slots: Mutex<HashMap<Identity, Slot>>,
    /// The latest certificate of each identity, for the synchronous TLS server path.
    current: ArcSwap<HashMap<Identity, Held>>,
    /// The roots peers are checked against.
    pub roots: ArcSwap<RootCertStore>,
    /// Certificates issued so far (renewals included).
    pub issued: std::sync::atomic::AtomicU64,
}

impl Identities {
    pub fn new(ca: CaClient, roots: Arc<RootCertStore>) -> Arc<Self> {
        Arc::new(Identities {
            ca,
            slots: Mutex::new(HashMap::new()),
            current: ArcSwap::from_pointee(HashMap::new()),
            roots: ArcSwap::new(roots),
            issued: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn slot(&self, id: &Identity) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(id.clone()).or_default().clone()
    }

    /// The certificate in force for `id`, if one is held (no fetching).
    pub fn current(&self, id: &Identity) -> Option<Arc<CertifiedKey>> {
        let now = SystemTime::now();
        self.current
            .load()
            .get(id)
            .filter(|h| h.not_after > now)
            .map(|h| h.key.clone())
    }

    /// A valid certificate for `id`, fetched if none is held or it is due for renewal.
    pub async fn get(&self, id: &Identity) -> anyhow::Result<Arc<CertifiedKey>> {
        if let Some(h) = self.current.load().get(id) {
            if h.renew_at() > SystemTime::now() {
                return Ok(h.key.clone());
            }
        }
        let slot = self.slot(id);
        let mut held = slot.lock().await;
        if let Some(h) = held.as_ref().filter(|h| h.renew_at() > SystemTime::now()) {
            return Ok(h.key.clone());
        }
        match self.fetch(id).await {
            Ok(h) => {
                let key = h.key.clone();
                *held = Some(h.clone());
                self.publish(id, Some(h));
                Ok(key)
            }
            // A renewal that fails keeps the old certificate while it is valid.
            Err(e) => match held.as_ref().filter(|h| h.not_after > SystemTime::now()) {
                Some(h) => {
                    tracing::warn!(identity = %id, error = %e, "certificate renewal failed; the current one is kept");
                    Ok(h.key.clone())
                }
                None => Err(e),
            },
        }
    }

    fn publish(&self, id: &Identity, held: Option<Held>) {
        self.current.rcu(|m| {
            let mut m = HashMap::clone(m);
            match &held {
                Some(h) => m.insert(id.clone(), h.clone()),
                None => m.remove(id),
            };
            m
        });
    }

    async fn fetch(&self, id: &Identity) -> anyhow::Result<Held> {
        let (key, csr) = new_key_and_csr(id)?;
        let resp = self.ca.sign(id, &csr).await?;
        let ck = tls::certified_key(&resp.certificate_chain, &key.serialize_pem())?;
        if let Ok(r) = tls::roots(&resp.trust_bundle) {
            self.roots.store(r);
        }
        self.issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(identity = %id, "workload certificate obtained");
        Ok(Held {
            key: ck,
            issued: SystemTime::now(),
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(resp.expires_at),
        })
    }

    /// Keeps exactly the identities in `wanted`: fetches missing ones, forgets others.
    pub async fn want(&self, wanted: &BTreeSet<Identity>) {
        let stale: Vec<Identity> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .keys()
                .filter(|k| !wanted.contains(*k))
                .cloned()
                .collect()
        };
        for id in stale {
            self.slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            self.publish(&id, None);
        }
        for id in wanted {
            if let Err(e) = self.get(id).await {
                tracing::warn!(identity = %id, error = %e, "cannot get a workload certificate");
            }
        }
    }

    /// Renews certificates due, every `every`, for as long as the task runs.
    pub async fn renew_loop(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let due: Vec<Identity> = {
                let now = SystemTime::now();
                self.current
                    .load()
                    .iter()
                    .filter(|(_, h)| h.renew_at() <= now)
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            for id in due {
                if let Err(e) = self.get(&id).await {
                    tracing::warn!(identity = %id, error = %e, "certificate renewal failed");
                }
            }
        }
    }
}
