//! The mutable state of one translation run: errors, warnings, clusters, certificates
//! and ports under construction. `finish` freezes it into a Snapshot.

use crate::hosts::{HostTable, WildcardMode};
use crate::incremental::Scope;
use crate::policy::Policies;
use crate::routes::{RouteEntry, RouteTable};
use crate::snapshot::{
    BackendSet, BoundPort, Cluster, Clusters, L4Routes, RouteAction, Section, Snapshot, Summary,
};
use crate::tls::{load_certs, SniTable};
use crate::TranslateOptions;
use gatehouse_model::status::StatusUpdate;
use gatehouse_model::{ConfigError, ObjectStore};
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Builder<'a> {
    pub store: &'a ObjectStore,
    pub opts: &'a TranslateOptions,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
    /// TLS keys by Secret: all of them in a full run; looked up as needed in an
    /// incremental one (see [`Builder::cert`]).
    certs: HashMap<(String, String), Arc<CertifiedKey>>,
    pub clusters: Clusters,
    pub route_names: Vec<Arc<str>>,
    pub summary: Summary,
    pub statuses: Vec<StatusUpdate>,
    /// BackendTrafficPolicies by the Services they govern.
    pub policies: Policies,
    /// What the adaptive traffic controls changed (`TrafficAdjustment` objects).
    pub adjustments: crate::adjustments::Adjustments,
    /// Route rules watched for a canary rollback.
    pub canaries: Vec<Arc<crate::snapshot::CanaryGuard>>,
    pub security: crate::security::SecurityPolicies,
    /// Set for an incremental run: only these hostnames are compiled.
    pub scope: Option<&'a Scope>,
    /// Clusters of the previous Snapshot, reused for Services that did not change.
    reuse: Option<&'a Clusters>,
    /// Clusters of the previous Snapshot whose state new clusters take over.
    carry: Option<&'a Clusters>,
    ports: BTreeMap<SocketAddr, PortBuilder>,
}

struct PortBuilder {
    tls: Option<SniTable>,
    l4: Option<L4Routes>,
    hostless_default: bool,
    sections: HostTable<Arc<Section>>,
    owners: Vec<String>,
}

/// What an L4 listener brings to its port.
pub enum L4Listener {
    Tcp(Arc<BackendSet>),
    /// Backends by hostname (None: any name, or no SNI).
    Tls(Vec<(Option<String>, Arc<BackendSet>)>),
}

/// Precedence key of a route entry; smaller sorts first and wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey(pub Vec<i64>, pub String, pub Vec<i64>);

/// Route entries of one section, grouped by hostname, before sorting.
#[derive(Default)]
pub struct SectionRoutes {
    hosts: BTreeMap<Option<String>, Vec<(SortKey, RouteEntry)>>,
}

impl SectionRoutes {
    pub fn add(&mut self, host: Option<String>, key: SortKey, entry: RouteEntry) {
        self.hosts.entry(host).or_default().push((key, entry));
    }

    /// Sorts each host's entries by precedence and compiles the host table.
    pub fn build(self, mode: WildcardMode) -> (HostTable<Arc<RouteTable>>, usize) {
        let mut table = HostTable::new(mode);
        let mut count = 0;
        for (host, mut entries) in self.hosts {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            count += entries.len();
            table.insert(
                host.as_deref(),
                Arc::new(RouteTable::new(
                    entries.into_iter().map(|(_, e)| e).collect(),
                )),
            );
        }
        (table, count)
    }
}

impl<'a> Builder<'a> {
    pub fn new(store: &'a ObjectStore, opts: &'a TranslateOptions) -> Self {
        Builder::with_certs(store, opts, true)
    }

    /// A builder; `all_certs` parses (and judges) every TLS Secret up front.
    fn with_certs(store: &'a ObjectStore, opts: &'a TranslateOptions, all_certs: bool) -> Self {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let certs = match all_certs {
            true => load_certs(store, &mut errors),
            false => HashMap::new(),
        };
        let policies = Policies::load(store, &mut errors, &mut warnings);
        let adjustments = crate::adjustments::Adjustments::load(store, &mut errors);
        let security =
            crate::security::SecurityPolicies::load(store, opts, &mut errors, &mut warnings);
        Builder {
            store,
            opts,
            errors,
            warnings,
            policies,
            adjustments,
            canaries: Vec::new(),
            security,
            certs,
            clusters: Clusters::new(),
            route_names: Vec::new(),
            summary: Summary::default(),
            statuses: Vec::new(),
            scope: None,
            reuse: None,
            carry: None,
            ports: BTreeMap::new(),
        }
    }

    /// A builder for an incremental run over `scope`, on top of `prev`: route ids
    /// continue after `prev`'s, and unchanged Services keep their clusters. Errors of
    /// TLS Secrets are not this run's business (Secrets have not changed since the last
    /// full translation, which judged them).
    pub fn scoped(
        store: &'a ObjectStore,
        opts: &'a TranslateOptions,
        scope: &'a Scope,
        prev: &'a Snapshot,
    ) -> Self {
        let mut b = Builder::with_certs(store, opts, false);
        b.errors.clear();
        b.scope = Some(scope);
        b.reuse = Some(&prev.clusters);
        b.route_names = prev.route_names.clone();
        b
    }

    /// The key of TLS Secret `namespace/name`, if it exists and is valid.
    pub fn cert(&mut self, namespace: &str, name: &str) -> Option<Arc<CertifiedKey>> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(c) = self.certs.get(&key) {
            return Some(c.clone());
        }
        // A full run loaded every valid key up front.
        self.scope?;
        let c = crate::tls::cert_of(self.store, namespace, name)?;
        self.certs.insert(key, c.clone());
        Some(c)
    }

    /// Whether routes for `host` are compiled in this run (always, unless incremental).
    pub fn in_scope(&self, host: Option<&str>) -> bool {
        match (self.scope, host) {
            (None, _) => true,
            (Some(s), Some(h)) => s.contains_host(h),
            (Some(_), None) => false,
        }
    }

    /// The previous Snapshot's cluster `name`, whose state a new copy takes over.
    pub fn previous_cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.carry.or(self.reuse)?.get(name).cloned()
    }

    /// Lets a full translation carry the state of `prev`'s clusters over.
    pub fn carry_state_of(&mut self, prev: &'a Snapshot) {
        self.carry = Some(&prev.clusters);
    }

    /// The previous Snapshot's cluster `name`, if its Service has not changed.
    pub fn reusable_cluster(
        &self,
        namespace: &str,
        service: &str,
        name: &str,
    ) -> Option<Arc<Cluster>> {
        let scope = self.scope?;
        if scope
            .services
            .contains(&(namespace.to_string(), service.to_string()))
        {
            return None;
        }
        self.reuse?.get(name).cloned()
    }

    /// Allocates a route id and wraps the action.
    pub fn action(&mut self, mut action: RouteAction) -> Arc<RouteAction> {
        action.id = self.route_names.len() as u32;
        self.route_names.push(action.name.clone());
        Arc::new(action)
    }

    /// Adds a section to the port at `addr` under `hostname`. `certs` are (SNI name,
    /// key) pairs for TLS sections. Returns an error text when the slot is taken or
    /// the port mixes TLS and plain text.
    pub fn add_section(
        &mut self,
        addr: SocketAddr,
        hostname: Option<&str>,
        section: Section,
        certs: Vec<(Option<String>, Arc<CertifiedKey>)>,
        owner: String,
    ) -> Result<(), String> {
        let https = section.https;
        let port = self.ports.entry(addr).or_insert_with(|| PortBuilder {
            tls: https.then(SniTable::new),
            l4: None,
            hostless_default: false,
            sections: HostTable::new(WildcardMode::MultiLabel),
            owners: Vec::new(),
        });
        if port.tls.is_some() != https || port.l4.is_some() {
            return Err(format!(
                "{addr} is already bound by {} with another protocol",
                port.owners.join(", ")
            ));
        }
        if !port.sections.insert(hostname, Arc::new(section)) {
            return Err(format!(
                "{addr} already has a listener for hostname {:?} ({})",
                hostname.unwrap_or("*"),
                port.owners.join(", ")
            ));
        }
        if let Some(tls) = &mut port.tls {
            for (name, key) in certs {
                match name {
                    Some(n) => {
                        tls.certs.insert(Some(&n), key.clone());
                        // A named certificate is the default only until a hostless one
                        // (a listener without hostname, an Ingress TLS entry without
                        // hosts) claims the role.
                        if tls.default.is_none() {
                            tls.default = Some(key);
                        }
                    }
                    None if !port.hostless_default => {
                        tls.default = Some(key);
                        port.hostless_default = true;
                    }
                    None => {}
                }
            }
        }
        port.owners.push(owner);
        Ok(())
    }

    /// Adds an L4 listener to the port at `addr`: a TCP one takes the whole port; TLS
    /// passthrough ones share it by hostname. Returns an error text on a conflict.
    pub fn add_l4(
        &mut self,
        addr: SocketAddr,
        hostname: Option<&str>,
        routes: L4Listener,
        owner: String,
    ) -> Result<(), String> {
        let fresh = !self.ports.contains_key(&addr);
        let port = self.ports.entry(addr).or_insert_with(|| PortBuilder {
            tls: None,
            l4: None,
            hostless_default: false,
            sections: HostTable::new(WildcardMode::MultiLabel),
            owners: Vec::new(),
        });
        let taken = || format!("{addr} is already bound by {}", port.owners.join(", "));
        match (&mut port.l4, routes) {
            (None, routes) if fresh => {
                port.l4 = Some(match routes {
                    L4Listener::Tcp(set) => L4Routes::Tcp(set),
                    L4Listener::Tls(hosts) => {
                        let mut table = HostTable::new(WildcardMode::MultiLabel);
                        for (h, set) in hosts {
                            table.insert(h.as_deref(), set);
                        }
                        L4Routes::Tls(Arc::new(table))
                    }
                });
            }
            (Some(L4Routes::Tls(table)), L4Listener::Tls(hosts))
                if !table.contains_key(hostname) =>
            {
                let table = Arc::make_mut(table);
                for (h, set) in hosts {
                    table.insert(h.as_deref(), set);
                }
            }
            _ => return Err(taken()),
        }
        port.owners.push(owner);
        Ok(())
    }

    pub fn finish(mut self, version: u64) -> Result<Snapshot, Vec<ConfigError>> {
        let blocks = crate::adaptive::blocks(self.store, &mut self.errors);
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let surge = std::mem::take(&mut self.security.surge).build();
        let adaptive = std::mem::take(&mut self.security.adaptive);
        let mut summary = self.summary;
        // Counting walks the store; an incremental run keeps the previous counts.
        if self.scope.is_none() {
            summary.services = self.store.of_kind("Service").count();
            summary.endpoint_slices = self.store.of_kind("EndpointSlice").count();
            summary.secrets = self.store.of_kind("Secret").count();
        }
        let ports = self
            .ports
            .into_iter()
            .map(|(addr, p)| {
                Arc::new(BoundPort {
                    addr,
                    l4: p.l4,
                    tls: p.tls,
                    sections: p.sections,
                    owners: p.owners,
                })
            })
            .collect();
        Ok(Snapshot {
            version,
            ports,
            clusters: self.clusters,
            route_names: self.route_names,
            warnings: self.warnings,
            summary,
            statuses: self
                .statuses
                .into_iter()
                .map(|u| (u.key(), Arc::new(u)))
                .collect(),
            blocks,
            surge,
            adaptive,
            canaries: self.canaries,
        })
    }
}
