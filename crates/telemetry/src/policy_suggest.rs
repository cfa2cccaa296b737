//! Least-privilege authorization from observed traffic: the edges node proxies saw
//! (caller identity → workload and port, with methods and paths where HTTP was read)
//! become one ALLOW `AuthorizationPolicy` per destination workload that lets in
//! exactly the calls seen, with one rule per caller and port. Once a workload has an
//! ALLOW policy, every call it does not match is denied, so a policy written this way
//! is default-deny for what was never seen.
//!
//! Paths are kept as seen while there are few; past `max_paths` they are folded into
//! prefixes (`/api/orders/17`, `/api/orders/18` → `/api/orders/*`) and, past that, the
//! rule stops naming paths. Callers without a mesh identity (plaintext, allowed by
//! PERMISSIVE) are named by address. Calls that were denied shape nothing.
//!
//! The YAML is written with JSON-quoted values (valid YAML, safe for any path), and can
//! carry the dry-run annotation so that it is first checked in the shadows.

use gatehouse_translate::authz::principal_of;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// One observed edge, as a node proxy's `/flows/edges` serves it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedEdge {
    /// The caller's SPIFFE ID, if it came through the mesh.
    pub source: Option<String>,
    /// The callers' addresses, when they had no identity.
    pub source_ips: Vec<String>,
    pub namespace: String,
    pub workload: String,
    pub selector: BTreeMap<String, String>,
    pub port: u16,
    pub calls: u64,
    pub denied: u64,
    /// Calls let in that a dry-run policy would have denied.
    pub would_deny: u64,
    /// Calls whose HTTP was read (with methods and paths).
    pub http_calls: u64,
    pub methods: Vec<String>,
    pub paths: Vec<String>,
    pub paths_truncated: bool,
}

/// Reads the edges of one or more `/flows/edges` documents.
pub fn edges_from_json(doc: &Value) -> Result<Vec<ObservedEdge>, String> {
    let list = doc["edges"]
        .as_array()
        .ok_or_else(|| "no \"edges\" list in the document".to_string())?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let d = &e["destination"];
            let field = |name: &str| format!("edges[{i}]: no {name}");
            Ok(ObservedEdge {
                source: e["source"].as_str().map(str::to_string),
                source_ips: strings(&e["sourceIps"]),
                namespace: d["namespace"]
                    .as_str()
                    .ok_or_else(|| field("destination.namespace"))?
                    .to_string(),
                workload: d["workload"]
                    .as_str()
                    .ok_or_else(|| field("destination.workload"))?
                    .to_string(),
                selector: d["selector"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect(),
                port: e["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| field("port"))?,
                calls: e["calls"].as_u64().unwrap_or(0),
                denied: e["denied"].as_u64().unwrap_or(0),
                would_deny: e["wouldDeny"].as_u64().unwrap_or(0),
                http_calls: e["httpCalls"].as_u64().unwrap_or(0),
                methods: strings(&e["methods"]),
                paths: strings(&e["paths"]),
                paths_truncated: e["pathsTruncated"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

/// How policies are written.
#[derive(Debug, Clone)]
pub struct SuggestOptions {
    /// Add the dry-run annotation.
    pub dry_run: bool,
    /// Only workloads of this namespace.
    pub namespace: Option<String>,
    /// Paths named per rule before they are folded into prefixes.
    pub max_paths: usize,
}

impl Default for SuggestOptions {
    fn default() -> Self {
        SuggestOptions {
            dry_run: false,
            namespace: None,
            max_paths: 16,
        }
    }
}

/// A caller: its identity (or, without one, its addresses) and the port it called.
type Caller = (Option<String>, Vec<String>, u16);

/// A workload's selector, and what each caller was seen to do.
type Workload = (BTreeMap<String, String>, BTreeMap<Caller, Seen>);

/// What one rule lets in: a caller on a port, with the methods and paths seen.
#[derive(Debug, Default)]
struct Seen {
    calls: u64,
    http_calls: u64,
    l4_calls: u64,
    methods: BTreeSet<String>,
    paths: BTreeSet<String>,
    truncated: bool,
}

/// The policies for `edges`, as YAML documents (with a comment atop each saying what
/// it rests on). Edges of one workload seen by several proxies are merged.
pub fn suggest(edges: &[ObservedEdge], opts: &SuggestOptions) -> String {
    // (namespace, workload) → selector and (caller, port) → what was seen.
    let mut by_workload: BTreeMap<(String, String), Workload> = BTreeMap::new();
    for e in edges {
        if opts.namespace.as_ref().is_some_and(|n| *n != e.namespace) {
            continue;
        }
        let allowed = e.calls.saturating_sub(e.denied);
        if allowed == 0 {
            continue;
        }
        let (selector, callers) = by_workload
            .entry((e.namespace.clone(), e.workload.clone()))
            .or_insert_with(|| (e.selector.clone(), BTreeMap::new()));
        let who = match &e.source {
            Some(s) => (Some(s.clone()), Vec::new(), e.port),
            None => (None, e.source_ips.clone(), e.port),
        };
        let seen = callers.entry(who).or_default();
        seen.calls += allowed;
        seen.http_calls += e.http_calls;
        seen.l4_calls += allowed.saturating_sub(e.http_calls);
        seen.methods.extend(e.methods.iter().cloned());
        seen.paths.extend(e.paths.iter().cloned());
        seen.truncated |= e.paths_truncated;
        if selector.is_empty() {
            *selector = e.selector.clone();
        }
    }
    let mut out = String::new();
    for ((namespace, workload), (selector, callers)) in &by_workload {
        let total: u64 = callers.values().map(|s| s.calls).sum();
        let _ = writeln!(
            out,
            "# {namespace}/{workload}: {total} calls seen from {} callers",
            callers.len()
        );
        if selector.is_empty() {
            let _ = writeln!(
                out,
                "# skipped: the workload has no labels a policy could select it by\n"
            );
            continue;
        }
        let mut rules = Vec::new();
        for ((source, ips, port), seen) in callers {
            let from = match source {
                Some(id) => json!([{"source": {"principals": [principal_of(id)]}}]),
                None => {
                    json!([{"source": {"ipBlocks": ips.iter().map(|ip| host_block(ip)).collect::<Vec<_>>()}}])
                }
            };
            let mut operation = serde_json::Map::new();
            operation.insert("ports".into(), json!([port.to_string()]));
            // A caller also seen at L4 (its HTTP not read) gets the port only: naming
            // methods and paths would deny what it was seen to do.
            if seen.http_calls > 0 && seen.l4_calls == 0 {
                operation.insert("methods".into(), json!(seen.methods));
                if let Some(paths) = fold_paths(&seen.paths, seen.truncated, opts.max_paths) {
                    operation.insert("paths".into(), json!(paths));
                }
            }
            let comment = match source {
                Some(id) => format!("{id}: {} calls", seen.calls),
                None => format!("plaintext callers: {} calls", seen.calls),
            };
            rules.push((comment, from, Value::Object(operation)));
        }
        let name = policy_name(workload, selector);
        let _ = writeln!(out, "apiVersion: gatehouse.dev/v1alpha1");
        let _ = writeln!(out, "kind: AuthorizationPolicy");
        let _ = writeln!(out, "metadata:");
        let _ = writeln!(out, "  name: {}", json!(name));
        let _ = writeln!(out, "  namespace: {}", json!(namespace));
        let mut annotations = json!({"gatehouse.dev/suggested-from": "observed traffic"});
        if opts.dry_run {
            annotations["gatehouse.dev/dry-run"] = "true".into();
        }
        let _ = writeln!(out, "  annotations: {annotations}");
        let _ = writeln!(out, "spec:");
        let _ = writeln!(out, "  selector:");
        let _ = writeln!(out, "    matchLabels: {}", json!(selector));
        let _ = writeln!(out, "  action: ALLOW");
        let _ = writeln!(out, "  rules:");
        for (comment, from, operation) in rules {
            let _ = writeln!(out, "  # {}", comment.replace('\n', " "));
            let _ = writeln!(out, "  - from: {from}");
            let _ = writeln!(out, "    to: {}", json!([{"operation": operation}]));
        }
        out.push_str("---\n");
    }
    if by_workload.is_empty() {
        out.push_str("# no call was seen: nothing to suggest\n");
    }
    out
}

/// One address as a network.
fn host_block(ip: &str) -> String {
    match ip.contains(':') {
        true => format!("{ip}/128"),
        false => format!("{ip}/32"),
    }
}

/// `suggested-VALUE` from the selector's `app` label (or the workload's name), cut to a
/// valid object name.
fn policy_name(workload: &str, selector: &BTreeMap<String, String>) -> String {
    let base = selector
        .get("app")
        .or_else(|| selector.get("app.kubernetes.io/name"))
        .map(String::as_str)
        .unwrap_or(workload);
    let clean: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("suggested-{}", clean.trim_matches('-'));
    name.truncate(253);
    name
}

/// The paths a rule names: as seen while they are few; else folded into the prefixes
/// of their parents (`/a/b/1`, `/a/b/2` → `/a/b/*`); None when even those are too many
/// (the rule then allows any path).
fn fold_paths(paths: &BTreeSet<String>, truncated: bool, max: usize) -> Option<Vec<String>> {
    if !truncated && paths.len() <= max {
        return Some(paths.iter().cloned().collect());
    }
    let mut level: BTreeSet<String> = paths.clone();
    // Fold the deepest segments first, one level at a time.
    for _ in 0..8 {
        let mut next = BTreeSet::new();
        for p in &level {
            let trimmed = p.trim_end_matches('*').trim_end_matches('/');
            match trimmed.rfind('/') {
                Some(i) if i > 0 => next.insert(format!("{}/*", &trimmed[..i])),
                _ => next.insert(p.clone()),
            };
        }
        if next.len() <= max {
            // Keep a path as seen if nothing else shares its parent.
            return Some(next.into_iter().collect());
        }
        if next == level {
            break;
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(
        source: Option<&str>,
        workload: &str,
        port: u16,
        methods: &[&str],
        paths: &[&str],
    ) -> ObservedEdge {
        ObservedEdge {
            source: source.map(str::to_string),
            source_ips: match source {
                None => vec!["10.0.0.9".into()],
                Some(_) => Vec::new(),
            },
            namespace: "shop".into(),
            workload: workload.into(),
            selector: BTreeMap::from([("app".to_string(), workload.to_string())]),
            port,
            calls: 10,
            denied: 0,
            would_deny: 0,
            http_calls: if methods.is_empty() { 0 } else { 10 },
            methods: methods.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            paths_truncated: false,
        }
    }

    const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/client";

    #[test]
    fn observed_calls_become_one_policy_per_workload() {
        let edges = vec![
            edge(
                Some(CLIENT),
                "web",
                8080,
                &["GET", "POST"],
                &["/orders", "/public/a"],
            ),
            edge(Some(CLIENT), "db", 9000, &[], &[]),
            edge(None, "legacy", 9000, &[], &[]),
            ObservedEdge {
                denied: 10,
                ..edge(
                    Some("spiffe://cluster.local/ns/shop/sa/other"),
                    "web",
                    8080,
                    &["GET"],
                    &["/x"],
                )
            },
        ];
        let yaml = suggest(
            &edges,
            &SuggestOptions {
                dry_run: true,
                ..Default::default()
            },
        );
        let docs: Vec<&str> = yaml
            .split("---\n")
            .filter(|d| d.contains("kind:"))
            .collect();
        assert_eq!(docs.len(), 3, "{yaml}");
        let web = docs
            .iter()
            .find(|d| d.contains("suggested-web"))
            .copied()
            .unwrap_or_default();
        assert!(web.contains(r#"matchLabels: {"app":"web"}"#), "{web}");
        assert!(
            web.contains(r#""principals":["cluster.local/ns/shop/sa/client"]"#),
            "{web}"
        );
        assert!(web.contains(r#""methods":["GET","POST"]"#), "{web}");
        assert!(web.contains(r#""paths":["/orders","/public/a"]"#), "{web}");
        assert!(
            !web.contains("sa/other"),
            "a denied caller is not let in: {web}"
        );
        assert!(web.contains(r#""gatehouse.dev/dry-run":"true""#), "{web}");
        let db = docs
            .iter()
            .find(|d| d.contains("suggested-db"))
            .copied()
            .unwrap_or_default();
        assert!(
            db.contains(r#"to: [{"operation":{"ports":["9000"]}}]"#),
            "{db}"
        );
        let legacy = docs
            .iter()
            .find(|d| d.contains("suggested-legacy"))
            .copied()
            .unwrap_or_default();
        assert!(legacy.contains(r#""ipBlocks":["10.0.0.9/32"]"#), "{legacy}");
    }

    #[test]
    fn many_paths_fold_into_prefixes() {
        let paths: BTreeSet<String> = (0..40)
            .map(|i| format!("/api/orders/{i}"))
            .chain(["/health".to_string()])
            .collect();
        assert_eq!(
            fold_paths(&paths, false, 16),
            Some(vec!["/api/orders/*".to_string(), "/health".to_string()])
        );
        let few: BTreeSet<String> = ["/a".to_string()].into();
        assert_eq!(fold_paths(&few, false, 16), Some(vec!["/a".to_string()]));
        let wide: BTreeSet<String> = (0..40).map(|i| format!("/p{i}")).collect();
        assert_eq!(fold_paths(&wide, false, 16), None);
    }

    #[test]
    fn edges_are_read_from_a_proxys_document() {
        let doc = json!({"edges": [{
            "source": CLIENT, "sourceIps": [], "port": 8080, "calls": 3, "denied": 0,
            "httpCalls": 3, "methods": ["GET"], "paths": ["/a"], "pathsTruncated": false,
            "destination": {"namespace": "shop", "workload": "web", "selector": {"app": "web"}, "identity": "x"},
        }], "unfollowed": 0});
        let edges = edges_from_json(&doc).unwrap_or_default();
        assert_eq!(
            edges,
            vec![edge(Some(CLIENT), "web", 8080, &["GET"], &["/a"]).with_calls(3)]
        );
        assert!(edges_from_json(&json!({})).is_err());
    }

    impl ObservedEdge {
        fn with_calls(mut self, n: u64) -> Self {
            self.calls = n;
            self.http_calls = n;
            self
        }
    }
}
