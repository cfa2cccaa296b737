//! Flow records of the east-west calls a proxy lets in or refuses at the destination,
//! where the caller's identity is proven and policy is decided (like Cilium Hubble's
//! flows): source identity and address, destination workload, port, verdict and
//! deciding policy, bytes each way and duration for a connection, method and path for
//! a request seen at L7. The last [`RING`] are kept for `/flows`; all are folded into
//! edges (caller → workload and port, with the methods and paths seen) for
//! `/flows/edges`, from which `gatehouse ctl policy suggest` writes least-privilege
//! policies. Everything is bounded: edges, and the methods, paths and addresses each
//! keeps.

use gatehouse_translate::authz::principal_of;
use gatehouse_translate::mesh::Workload;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Flow records kept for `/flows`.
pub const RING: usize = 1024;
/// Edges followed at most (more are counted, not kept).
pub const MAX_EDGES: usize = 10_000;
const MAX_METHODS: usize = 16;
const MAX_PATHS: usize = 64;
const MAX_SOURCE_IPS: usize = 16;

/// What happened to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Allowed, but a dry-run policy would have denied it.
    WouldDeny,
}

impl Verdict {
    pub fn code(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::WouldDeny => "would_deny",
        }
    }
}

/// One connection (L4) or request (L7).
#[derive(Debug, Clone)]
pub struct Flow {
    pub time_ms: u64,
    /// The caller's SPIFFE ID, if it came through the mesh.
    pub source: Option<Arc<str>>,
    pub source_ip: IpAddr,
    pub workload: Arc<Workload>,
    pub target: SocketAddr,
    pub verdict: Verdict,
    pub policy: Option<Arc<str>>,
    /// Bytes to and from the workload (a connection's).
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
    /// A request's method and path (L7).
    pub http: Option<(String, String)>,
}

impl Flow {
    pub fn json(&self) -> Value {
        let mut v = json!({
            "time": self.time_ms,
            "source": self.source.as_deref(),
            "sourceIp": self.source_ip.to_string(),
            "destination": {
                "namespace": self.workload.namespace,
                "workload": self.workload.name,
                "identity": &*self.workload.identity,
                "address": self.target.to_string(),
            },
            "verdict": self.verdict.code(),
            "policy": self.policy.as_deref(),
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
            "durationMs": self.duration_ms,
        });
        if let Some((method, path)) = &self.http {
            v["method"] = method.as_str().into();
            v["path"] = path.as_str().into();
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EdgeKey {
    source: Option<Arc<str>>,
    namespace: String,
    workload: String,
    port: u16,
}

#[derive(Debug)]
struct Edge {
    identity: Arc<str>,
    selector: Arc<BTreeMap<String, String>>,
    calls: u64,
    denied: u64,
    would_deny: u64,
    bytes: u64,
    /// Calls seen at L7 (with a method and path).
    http_calls: u64,
    methods: BTreeSet<String>,
    paths: BTreeSet<String>,
    /// More paths were seen than are kept.
    paths_truncated: bool,
    source_ips: BTreeSet<IpAddr>,
    first_ms: u64,
    last_ms: u64,
}

#[derive(Default)]
struct Inner {
    ring: VecDeque<Flow>,
    edges: HashMap<EdgeKey, Edge>,
    /// Flows of edges past [`MAX_EDGES`].
    unfollowed: u64,
}

/// The flows of one proxy.
#[derive(Default)]
pub struct Flows(Mutex<Inner>);

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flows")
    }
}

impl Flows {
    pub fn record(&self, flow: Flow) {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = EdgeKey {
            source: flow.source.clone(),
            namespace: flow.workload.namespace.clone(),
            workload: flow.workload.name.clone(),
            port: flow.target.port(),
        };
        let full = inner.edges.len() >= MAX_EDGES;
        match inner.edges.get_mut(&key) {
            Some(e) => e.add(&flow),
            None if full => inner.unfollowed += 1,
            None => {
                let mut e = Edge {
                    identity: flow.workload.identity.clone(),
                    selector: flow.workload.selector.clone(),
                    calls: 0,
                    denied: 0,
                    would_deny: 0,
                    bytes: 0,
                    http_calls: 0,
                    methods: BTreeSet::new(),
                    paths: BTreeSet::new(),
                    paths_truncated: false,
                    source_ips: BTreeSet::new(),
                    first_ms: flow.time_ms,
                    last_ms: flow.time_ms,
                };
                e.add(&flow);
                inner.edges.insert(key, e);
            }
        }
        if inner.ring.len() >= RING {
            inner.ring.pop_front();
        }
        inner.ring.push_back(flow);
    }

    /// The last `n` flows, newest first.
    pub fn last(&self, n: usize) -> Vec<Value> {
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.ring.iter().rev().take(n).map(Flow::json).collect()
    }

    /// Calls and bytes by edge (caller identity → workload), in Prometheus' text
    /// format: the RED of east-west traffic. Bounded by [`MAX_EDGES`].
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(String, String, &Edge)> = inner
            .edges
            .iter()
            .map(|(k, e)| {
                let source = k
                    .source
                    .as_deref()
                    .map_or("plaintext", principal_of)
                    .to_string();
                (
                    source,
                    format!("{}/{}:{}", k.namespace, k.workload, k.port),
                    e,
                )
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let name = "gatehouse_mesh_calls_total";
        let _ = writeln!(out, "# HELP {name} Calls let in or refused at the destination, by caller identity, workload and verdict.\n# TYPE {name} counter");
        for (s, d, e) in &rows {
            let allowed = e.calls - e.denied - e.would_deny;
            for (verdict, n) in [
                ("allowed", allowed),
                ("denied", e.denied),
                ("would_deny", e.would_deny),
            ] {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "{name}{{source=\"{}\",destination=\"{}\",verdict=\"{verdict}\"}} {n}",
                        esc(s),
                        esc(d)
                    );
                }
            }
        }
        let name = "gatehouse_mesh_edge_bytes_total";
        let _ = writeln!(out, "# HELP {name} Bytes of the connections carried at L4, by caller identity and workload.\n# TYPE {name} counter");
        for (s, d, e) in &rows {
            if e.bytes > 0 {
                let _ = writeln!(
                    out,
                    "{name}{{source=\"{}\",destination=\"{}\"}} {}",
                    esc(s),
                    esc(d),
                    e.bytes
                );
            }
        }
    }

    /// The edges, as `/flows/edges` serves them.
    pub fn edges_json(&self) -> Value {
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut edges: Vec<Value> = inner
            .edges
            .iter()
            .map(|(k, e)| {
                json!({
                    "source": k.source.as_deref(),
                    "sourceIps": e.source_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "destination": {
                        "namespace": k.namespace,
                        "workload": k.workload,
                        "identity": &*e.identity,
                        "selector": &*e.selector,
                    },
                    "port": k.port,
                    "calls": e.calls,
                    "denied": e.denied,
                    "wouldDeny": e.would_deny,
                    "bytes": e.bytes,
                    "httpCalls": e.http_calls,
                    "methods": e.methods,
                    "paths": e.paths,
                    "pathsTruncated": e.paths_truncated,
                    "firstSeen": e.first_ms,
                    "lastSeen": e.last_ms,
                })
            })
            .collect();
        edges.sort_by_cached_key(|e| e.to_string());
        json!({ "edges": edges, "unfollowed": inner.unfollowed })
    }
}

impl Edge {
    fn add(&mut self, f: &Flow) {
        self.calls += 1;
        match f.verdict {
            Verdict::Denied => self.denied += 1,
            Verdict::WouldDeny => self.would_deny += 1,
            Verdict::Allowed => {}
        }
        self.bytes += f.bytes_in + f.bytes_out;
        self.last_ms = self.last_ms.max(f.time_ms);
        if f.source.is_none() && self.source_ips.len() < MAX_SOURCE_IPS {
            self.source_ips.insert(f.source_ip);
        }
        // What was denied is not what the workload needs: it does not shape the
        // policy a suggestion writes.
        if let (Some((method, path)), false) = (&f.http, f.verdict == Verdict::Denied) {
            self.http_calls += 1;
            if self.methods.len() < MAX_METHODS || self.methods.contains(method) {
                self.methods.insert(method.clone());
            }
            if self.paths.contains(path) {
            } else if self.paths.len() < MAX_PATHS {
                self.paths.insert(path.clone());
            } else {
                self.paths_truncated = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Arc<Workload> {
        Arc::new(Workload {
            namespace: "shop".into(),
            name: "web".into(),
            service_account: "web".into(),
            identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
            ip: "10.0.0.2".parse().expect("ip"),
            node: "n2".into(),
            mode: gatehouse_translate::mesh::DataplaneMode::Node,
            tunnel: None,
            strict: true,
            authz: Default::default(),
            selector: Arc::new(BTreeMap::from([("app".to_string(), "web".to_string())])),
        })
    }

    fn flow(source: &str, verdict: Verdict, http: Option<(&str, &str)>) -> Flow {
        Flow {
            time_ms: 1,
            source: Some(source.into()),
            source_ip: "10.0.0.1".parse().expect("ip"),
            workload: workload(),
            target: "10.0.0.2:8080".parse().expect("addr"),
            verdict,
            policy: None,
            bytes_in: 10,
            bytes_out: 20,
            duration_ms: 1,
            http: http.map(|(m, p)| (m.to_string(), p.to_string())),
        }
    }

    #[test]
    fn flows_fold_into_bounded_edges() {
        let flows = Flows::default();
        let client = "spiffe://cluster.local/ns/shop/sa/client";
        flows.record(flow(client, Verdict::Allowed, Some(("GET", "/a"))));
        flows.record(flow(client, Verdict::Allowed, Some(("POST", "/b"))));
        flows.record(flow(client, Verdict::Denied, Some(("DELETE", "/c"))));
        for i in 0..100 {
            flows.record(flow(
                client,
                Verdict::Allowed,
                Some(("GET", &format!("/p/{i}"))),
            ));
        }
        flows.record(flow(
            "spiffe://cluster.local/ns/shop/sa/other",
            Verdict::WouldDeny,
            None,
        ));
        let v = flows.edges_json();
        let edges = v["edges"].as_array().cloned().unwrap_or_default();
        assert_eq!(edges.len(), 2, "{v}");
        let e = edges
            .iter()
            .find(|e| e["source"] == client)
            .cloned()
            .unwrap_or_default();
        assert_eq!(e["calls"], 103);
        assert_eq!(e["denied"], 1);
        assert_eq!(
            e["methods"],
            json!(["GET", "POST"]),
            "a denied call shapes nothing"
        );
        assert_eq!(e["paths"].as_array().map(|p| p.len()), Some(MAX_PATHS));
        assert_eq!(e["pathsTruncated"], true);
        assert_eq!(e["destination"]["selector"], json!({"app": "web"}));
        assert_eq!(flows.last(5).len(), 5);
        let mut text = String::new();
        flows.render(&mut text);
        assert!(
            text.contains("gatehouse_mesh_calls_total{source=\"cluster.local/ns/shop/sa/client\",destination=\"shop/web:8080\",verdict=\"allowed\"} 102"),
            "{text}"
        );
        assert_eq!(flows.last(5)[0]["verdict"], "would_deny");
    }
}
