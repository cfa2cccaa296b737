//! Translation: a pure function from the object store to an immutable, compiled
//! [`Snapshot`]. All validation happens here; the data plane only sees the result.

// ConfigError is built on the cold path of a rejected config; its size does not matter.
#![allow(clippy::result_large_err)]

pub mod backends;
pub mod duration;
pub mod gateway;
pub mod gateway_status;
pub mod hosts;
pub mod ingress;
pub mod labels;
pub mod routes;
pub mod snapshot;
pub mod tls;

use gatehouse_model::{ConfigError, ObjectStore};
pub use snapshot::*;
use std::net::SocketAddr;

/// Where listeners bind. Ingresses use `http_addr`/`https_addr`; Gateway listeners bind
/// their manifest's port on `gateway_host`, unless `listen_map` rebinds them.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub gateway_host: std::net::IpAddr,
    pub listen_map: Vec<ListenMapEntry>,
    /// Addresses (IPs or hostnames) to publish in Ingress and Gateway status.
    pub publish_addresses: Vec<String>,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            https_addr: SocketAddr::from(([0, 0, 0, 0], 8443)),
            gateway_host: std::net::IpAddr::from([0, 0, 0, 0]),
            listen_map: Vec::new(),
            publish_addresses: Vec::new(),
        }
    }
}

/// `PORT=ADDR` or `NAMESPACE/NAME:PORT=ADDR`: rebinds a Gateway listener port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenMapEntry {
    pub gateway: Option<(String, String)>,
    pub port: u16,
    pub addr: SocketAddr,
}

impl std::str::FromStr for ListenMapEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (lhs, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected PORT=ADDR"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| format!("{s:?}: bad address {addr:?}: {e}"))?;
        let (gateway, port) = match lhs.rsplit_once(':') {
            Some((gw, port)) => {
                let (ns, name) = gw
                    .split_once('/')
                    .ok_or_else(|| format!("{s:?}: expected NAMESPACE/NAME:PORT=ADDR"))?;
                (Some((ns.to_string(), name.to_string())), port)
            }
            None => (None, lhs),
        };
        let port = port
            .parse()
            .map_err(|e| format!("{s:?}: bad port {port:?}: {e}"))?;
        Ok(ListenMapEntry {
            gateway,
            port,
            addr,
        })
    }
}

impl TranslateOptions {
    /// The address a Gateway listener with `port` binds.
    pub fn gateway_bind(&self, namespace: &str, name: &str, port: u16) -> SocketAddr {
        let specific = self.listen_map.iter().find(|e| {
            e.port == port
                && e.gateway
                    .as_ref()
                    .is_some_and(|(n, g)| n == namespace && g == name)
        });
        let any = || {
            self.listen_map
                .iter()
                .find(|e| e.port == port && e.gateway.is_none())
        };
        specific
            .or_else(any)
            .map(|e| e.addr)
            .unwrap_or(SocketAddr::new(self.gateway_host, port))
    }
}

/// Translates every object in the store into a Snapshot with `version`, or returns
/// every error found (the caller then keeps its previous Snapshot).
pub fn translate(
    store: &ObjectStore,
    opts: &TranslateOptions,
    version: u64,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut b = builder::Builder::new(store, opts);
    ingress::translate(&mut b);
    gateway::translate(&mut b);
    b.finish(version)
}

pub mod builder;
