//! An in-test Kubernetes API server speaking the real list/watch protocol over HTTP,
//! with real object JSON, for testing the Kubernetes source through kube-rs:
//! - list with `limit`/`continue` pages and the collection's `resourceVersion`;
//! - `watch=true` streams of ADDED/MODIFIED/DELETED events from a `resourceVersion`,
//!   BOOKMARK events when asked, and `410 Gone` (an ERROR event with an `Expired`
//!   Status) for a version older than the compacted history;
//! - `fieldSelector=type=...`, namespaced and cluster-wide paths;
//! - outages (every request answers 503 and open watches drop) and dropped watches;
//! - TokenReview (`POST .../authentication.k8s.io/v1/tokenreviews`) of the tokens the
//!   test grants, answered as a real server answers: audiences checked, the user and
//!   its `extra` (bound pod and node) in the status.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Resource path prefix and plural for a kind, as the API server lays them out.
fn resource_of(api_version: &str, kind: &str) -> (String, &'static str) {
    let prefix = if api_version.contains('/') {
        format!("apis/{api_version}")
    } else {
        format!("api/{api_version}")
    };
    let plural = match kind {
        "IngressClass" => "ingressclasses",
        "Ingress" => "ingresses",
        "Service" => "services",
        "EndpointSlice" => "endpointslices",
        "Secret" => "secrets",
        "Namespace" => "namespaces",
        "GatewayClass" => "gatewayclasses",
        "Gateway" => "gateways",
        "HTTPRoute" => "httproutes",
        "GRPCRoute" => "grpcroutes",
        "TCPRoute" => "tcproutes",
        "TLSRoute" => "tlsroutes",
        "BackendTrafficPolicy" => "backendtrafficpolicies",
        "SecurityPolicy" => "securitypolicies",
        "SourceBlock" => "sourceblocks",
        "TrafficAdjustment" => "trafficadjustments",
        "Pod" => "pods",
        "Node" => "nodes",
        "AuthorizationPolicy" => "authorizationpolicies",
        "PeerAuthentication" => "peerauthentications",
        "ReferenceGrant" => "referencegrants",
        "Lease" => "leases",
        "ConfigMap" => "configmaps",
        other => panic!("test API server does not know kind {other}"),
    };
    (prefix, plural)
}

#[derive(Clone, Debug)]
struct Event {
    /// `{prefix}/{plural}`
    resource: String,
    rv: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Clone, Debug)]
enum Signal {
    Event(Event),
    Bookmark,
    /// Drop every open watch connection.
    DropWatches,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// resource -> (namespace, name) -> object
    objects: HashMap<String, BTreeMap<(String, String), Value>>,
    history: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// How many list and watch requests were served, by resource.
    lists: HashMap<String, usize>,
    watches: HashMap<String, usize>,
    /// Status patches served: (resource, namespace, name).
    status_patches: Vec<(String, String, String)>,
    /// Resources answered with 404, as for a CRD that is not installed.
    unserved: std::collections::HashSet<String>,
    /// Tokens a TokenReview authenticates: token -> (audiences, user).
    tokens: HashMap<String, (Vec<String>, Value)>,
    /// TokenReviews served.
    reviews: usize,
}

impl State {
    /// Removes an object and records the event (DELETED carries its last state).
    fn remove(&mut self, resource: &str, namespace: &str, name: &str) -> Option<Event> {
        let mut object = self
            .objects
            .get_mut(resource)
            .and_then(|m| m.remove(&(namespace.to_string(), name.to_string())))?;
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let ev = Event {
            resource: resource.to_string(),
            rv,
            kind: "DELETED",
            object,
        };
        self.history.push(ev.clone());
        Some(ev)
    }

    /// Stores an object under a new resourceVersion and records the event.
    fn store(&mut self, resource: &str, mut object: Value) -> Event {
        self.rv += 1;
        let rv = self.rv;
        let ns = meta_str(&object, "namespace").to_string();
        let name = meta_str(&object, "name").to_string();
        let objects = self.objects.entry(resource.to_string()).or_default();
        let existing = objects.get(&(ns.clone(), name.clone()));
        let uid = existing
            .map(|e| e["metadata"]["uid"].clone())
            .unwrap_or_else(|| format!("uid-{rv}").into());
        let kind = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.insert("resourceVersion".into(), rv.to_string().into());
            meta.insert("uid".into(), uid);
            meta.entry("creationTimestamp")
                .or_insert_with(|| "2026-01-01T00:00:00Z".into());
        }
        objects.insert((ns, name), object.clone());
        let ev = Event {
            resource: resource.to_string(),
            rv,
            kind,
            object,
        };
        self.history.push(ev.clone());
        ev
    }
}

pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    signals: broadcast::Sender<Signal>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.signals.send(Signal::DropWatches);
    }
}

fn meta_str<'a>(o: &'a Value, field: &str) -> &'a str {
    o["metadata"][field].as_str().unwrap_or("")
}

impl ApiServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            ..Default::default()
        }));
        let (signals, _) = broadcast::channel(4096);
        let down = Arc::new(AtomicBool::new(false));
        let (st, sig, dn) = (state.clone(), signals.clone(), down.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, sig, dn) = (st.clone(), sig.clone(), dn.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, sig, dn) = (st.clone(), sig.clone(), dn.clone());
                        async move { Ok::<_, Infallible>(handle(&st, &sig, &dn, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        ApiServer {
            addr,
            state,
            signals,
            down,
            task,
        }
    }

    /// A kube client that talks to this server.
    pub fn client(&self) -> kube::Client {
        let url: http::Uri = format!("http://{}", self.addr).parse().expect("uri");
        let config = kube::Config::new(url);
        kube::Client::try_from(config).expect("client")
    }

    /// Creates or replaces an object (ADDED or MODIFIED), like a server-side apply.
    pub fn apply(&self, object: Value) {
        let api_version = object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_string();
        let kind = object["kind"].as_str().expect("kind").to_string();
        let (prefix, plural) = resource_of(&api_version, &kind);
        let ev = self
            .state
            .lock()
            .expect("lock")
            .store(&format!("{prefix}/{plural}"), object);
        let _ = self.signals.send(Signal::Event(ev));
    }

    /// The stored object, as a client would GET it.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let (prefix, plural) = resource_of(api_version, kind);
        let st = self.state.lock().expect("lock");
        st.objects
            .get(&format!("{prefix}/{plural}"))?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// How many status patches were served.
    pub fn status_patches(&self) -> usize {
        self.state.lock().expect("lock").status_patches.len()
    }

    /// Deletes an object (DELETED carries its last state).
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let (prefix, plural) = resource_of(api_version, kind);
        let resource = format!("{prefix}/{plural}");
        let mut st = self.state.lock().expect("lock");
        let Some(ev) = st.remove(&resource, namespace, name) else {
            return;
        };
        drop(st);
        let _ = self.signals.send(Signal::Event(ev));
    }

    /// Forgets the event history: a watch that resumes from an older version gets 410.
    pub fn compact(&self) {
        let mut st = self.state.lock().expect("lock");
        st.compacted = st.rv;
        st.history.clear();
    }

    /// Closes every open watch connection (clients must resume or re-list).
    pub fn drop_watches(&self) {
        let _ = self.signals.send(Signal::DropWatches);
    }

    /// Sends a BOOKMARK with the current version on every open watch.
    pub fn bookmark(&self) {
        let _ = self.signals.send(Signal::Bookmark);
    }

    /// Serves `kind` or answers 404 for it, as when its CRD is installed or not.
    pub fn set_served(&self, api_version: &str, kind: &str, served: bool) {
        let (prefix, plural) = resource_of(api_version, kind);
        let resource = format!("{prefix}/{plural}");
        let mut st = self.state.lock().expect("lock");
        if served {
            st.unserved.remove(&resource);
        } else {
            st.unserved.insert(resource);
        }
    }

    /// While down, every request answers 503 and open watches are dropped.
    /// Makes `token` authenticate, for `audiences`, as `user` (a TokenReview's
    /// `status.user`: username, uid, groups, extra).
    pub fn grant_token(&self, token: &str, audiences: &[&str], user: Value) {
        let auds = audiences.iter().map(|a| a.to_string()).collect();
        self.state
            .lock()
            .expect("lock")
            .tokens
            .insert(token.to_string(), (auds, user));
    }

    /// TokenReviews served so far.
    pub fn token_reviews(&self) -> usize {
        self.state.lock().expect("lock").reviews
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.drop_watches();
        }
    }

    /// (lists, watches) served so far for a resource like `apis/networking.k8s.io/v1/ingresses`.
    pub fn requests(&self, resource: &str) -> (usize, usize) {
        let st = self.state.lock().expect("lock");
        (
            st.lists.get(resource).copied().unwrap_or(0),
            st.watches.get(resource).copied().unwrap_or(0),
        )
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

/// A request path: resource key, namespace, object name and subresource.
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Splits `/api/v1/namespaces/ns/services/web/status` into its parts.
fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix_len = match segs.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return None,
    };
    if segs.len() <= prefix_len {
        return None;
    }
    let prefix = segs[..prefix_len].join("/");
    let rest = &segs[prefix_len..];
    let (namespace, rest): (Option<String>, Vec<&str>) = match rest {
        ["namespaces", ns, plural, more @ ..] => {
            let mut v = vec![*plural];
            v.extend_from_slice(more);
            (Some(ns.to_string()), v)
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    Some(Target {
        resource: format!("{prefix}/{plural}"),
        namespace,
        name,
        subresource: sub,
    })
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn matches(obj: &Value, ns: &Option<String>, field: &Option<(String, String)>) -> bool {
    if let Some(ns) = ns {
        if meta_str(obj, "namespace") != ns {
            return false;
        }
    }
    if let Some((k, v)) = field {
        let actual = match k.as_str() {
            "type" => obj["type"].as_str().unwrap_or(""),
            "metadata.name" => meta_str(obj, "name"),
            "metadata.namespace" => meta_str(obj, "namespace"),
            _ => return false,
        };
        if actual != v {
            return false;
        }
    }
    true
}

async fn handle(
    state: &Arc<Mutex<State>>,
    signals: &broadcast::Sender<Signal>,
    down: &AtomicBool,
    req: Request<Incoming>,
) -> Response<Body> {
    if down.load(Ordering::SeqCst) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable", "the test API server is down"),
        );
    }
    let Some(target) = parse_path(req.uri().path()) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "no such path"),
        );
    };
    if state
        .lock()
        .expect("lock")
        .unserved
        .contains(&target.resource)
    {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    if target.resource == "apis/authentication.k8s.io/v1/tokenreviews"
        && req.method() == http::Method::POST
    {
        return token_review(state, req).await;
    }
    if target.name.is_some() || req.method() != http::Method::GET {
        return object_request(state, signals, target, req).await;
    }
    let Target {
        resource,
        namespace: ns,
        ..
    } = target;
    let query: HashMap<String, String> = req.uri().query().map(url_pairs).unwrap_or_default();
    let field = query
        .get("fieldSelector")
        .and_then(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()));
    if query.get("watch").map(String::as_str) == Some("true")
        || query.get("watch").map(String::as_str) == Some("1")
    {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return watch(state, signals, resource, ns, field, from);
    }
    // List, optionally paged.
    let mut st = state.lock().expect("lock");
    *st.lists.entry(resource.clone()).or_default() += 1;
    let rv = st.rv;
    // Only the page is copied (a real API server pages from its cache the same way).
    let items: Vec<&Value> = st
        .objects
        .get(&resource)
        .map(|m| m.values().filter(|o| matches(o, &ns, &field)).collect())
        .unwrap_or_default();
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items[offset.min(items.len())..end]
        .iter()
        .map(|o| {
            // Like the real API server, list items carry no apiVersion/kind.
            let mut o = (*o).clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    let total = items.len();
    drop(st);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < total {
        metadata["continue"] = end.to_string().into();
        metadata["remainingItemCount"] = (total - end).into();
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": "List", "apiVersion": "v1", "metadata": metadata, "items": page}),
    )
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(c) => {
                        out.push(c);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn event_line(kind: &str, object: &Value) -> Frame<Bytes> {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Frame::data(Bytes::from(line))
}

fn watch(
    state: &Arc<Mutex<State>>,
    signals: &broadcast::Sender<Signal>,
    resource: String,
    ns: Option<String>,
    field: Option<(String, String)>,
    from: u64,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1024);
    // Subscribe under the lock so no event falls between the replay and the live feed.
    let mut st = state.lock().expect("lock");
    *st.watches.entry(resource.clone()).or_default() += 1;
    let mut live = signals.subscribe();
    let expired = from < st.compacted;
    let replay: Vec<Event> = st
        .history
        .iter()
        .filter(|e| e.rv > from && e.resource == resource)
        .cloned()
        .collect();
    let current = st.rv;
    drop(st);
    let kind_of_resource = resource.rsplit('/').next().unwrap_or("").to_string();
    let api_version = {
        let parts: Vec<&str> = resource.split('/').collect();
        parts[1..parts.len() - 1].join("/")
    };
    tokio::spawn(async move {
        if expired {
            let msg = format!("too old resource version: {from} ({current})");
            let _ = tx
                .send(Ok(event_line("ERROR", &status(410, "Expired", &msg))))
                .await;
            return;
        }
        let mut last = from;
        for e in replay {
            if matches(&e.object, &ns, &field) {
                last = e.rv;
                if tx.send(Ok(event_line(e.kind, &e.object))).await.is_err() {
                    return;
                }
            }
        }
        loop {
            match live.recv().await {
                Ok(Signal::Event(e)) => {
                    if e.resource != resource || e.rv <= last || !matches(&e.object, &ns, &field) {
                        continue;
                    }
                    last = e.rv;
                    if tx.send(Ok(event_line(e.kind, &e.object))).await.is_err() {
                        return;
                    }
                }
                Ok(Signal::Bookmark) => {
                    let bm = json!({"apiVersion": api_version, "kind": kind_of_resource, "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(Ok(event_line("BOOKMARK", &bm))).await.is_err() {
                        return;
                    }
                }
                Ok(Signal::DropWatches) | Err(broadcast::error::RecvError::Closed) => return,
                Err(broadcast::error::RecvError::Lagged(_)) => return,
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut r = Response::new(StreamBody::new(Box::pin(stream)).boxed_unsync());
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A TokenReview: the token's user if it was granted for one of the audiences asked
/// for (or, asked for none, for the API server's own), else `authenticated: false`.
async fn token_review(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if review["kind"] != "TokenReview" {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status(400, "BadRequest", "not a TokenReview"),
        );
    }
    let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
    let asked: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_else(|| vec!["https://kubernetes.default.svc".to_string()]);
    let mut st = state.lock().expect("lock");
    st.reviews += 1;
    review["status"] = match st.tokens.get(&token) {
        None => json!({"user": {}, "error": "invalid bearer token"}),
        Some((auds, user)) => {
            let both: Vec<&String> = asked.iter().filter(|a| auds.contains(a)).collect();
            if both.is_empty() {
                json!({"user": {}, "error": "token audiences are invalid for the target audiences"})
            } else {
                json!({"authenticated": true, "user": user, "audiences": both})
            }
        }
    };
    review["metadata"] = json!({"creationTimestamp": null});
    json_response(StatusCode::CREATED, &review)
}

/// GET, PUT, PATCH (including the status subresource) and DELETE of one object; POST
/// to a collection creates one.
async fn object_request(
    state: &Arc<Mutex<State>>,
    signals: &broadcast::Sender<Signal>,
    t: Target,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ns = t.namespace.clone().unwrap_or_default();
    let mut st = state.lock().expect("lock");
    let name = match (&method, &t.name) {
        (&http::Method::POST, None) => meta_str(&sent, "name").to_string(),
        (_, Some(n)) => n.clone(),
        _ => {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &status(405, "MethodNotAllowed", ""),
            )
        }
    };
    let key = (ns.clone(), name.clone());
    let current = st
        .objects
        .get(&t.resource)
        .and_then(|m| m.get(&key))
        .cloned();
    let not_found = || {
        json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", &format!("{name} not found")),
        )
    };
    let ev = match method {
        http::Method::GET => {
            return current
                .map(|o| json_response(StatusCode::OK, &o))
                .unwrap_or_else(not_found)
        }
        http::Method::POST => {
            if current.is_some() {
                return json_response(
                    StatusCode::CONFLICT,
                    &status(409, "AlreadyExists", &format!("{name} already exists")),
                );
            }
            let mut obj = sent;
            if t.namespace.is_some() {
                obj["metadata"]["namespace"] = ns.clone().into();
            }
            st.store(&t.resource, obj)
        }
        http::Method::PUT => {
            let Some(cur) = current else {
                return not_found();
            };
            let want = meta_str(&sent, "resourceVersion");
            if !want.is_empty() && want != meta_str(&cur, "resourceVersion") {
                return json_response(
                    StatusCode::CONFLICT,
                    &status(409, "Conflict", "the object has been modified"),
                );
            }
            st.store(&t.resource, sent)
        }
        http::Method::PATCH => {
            let Some(mut cur) = current else {
                return not_found();
            };
            // A resourceVersion in a merge patch is a precondition, as on a real server.
            let want = meta_str(&sent, "resourceVersion");
            if !want.is_empty() && want != meta_str(&cur, "resourceVersion") {
                return json_response(
                    StatusCode::CONFLICT,
                    &status(409, "Conflict", "the object has been modified"),
                );
            }
            if t.subresource.as_deref() == Some("status") {
                merge_patch(&mut cur["status"], &sent["status"]);
                st.status_patches
                    .push((t.resource.clone(), ns.clone(), name.clone()));
            } else {
                merge_patch(&mut cur, &sent);
            }
            st.store(&t.resource, cur)
        }
        http::Method::DELETE => match st.remove(&t.resource, &ns, &name) {
            Some(ev) => ev,
            None => return not_found(),
        },
        _ => {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &status(405, "MethodNotAllowed", ""),
            )
        }
    };
    drop(st);
    let object = ev.object.clone();
    let _ = signals.send(Signal::Event(ev));
    let code = if method == http::Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(code, &object)
}
