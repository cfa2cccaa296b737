//! Per-request handling: validate and normalise, pick section, host and route on the
//! loaded Snapshot, then answer (fixed response, redirect) or forward upstream with
//! header rewriting, timeouts, body limits and WebSocket tunnelling.

use crate::affinity;
use crate::body::{self, Body, BoxError, RequestBody};
use crate::dataplane::{Active, DataPlane};
use crate::headers::{add_forwarded, is_upgrade, request_id, strip_hop_by_hop, X_REQUEST_ID};
use crate::metrics::Tally;
use crate::mirror;
use crate::normalize::normalize_path;
use crate::pool::Overflow;
use crate::reason::{with_reason, Reason};
use crate::redirect::{location, RedirectInput};
use crate::retry::{self, Failure};
use crate::upstream::{UpstreamBody, UpstreamError};
use bytes::Bytes;
use gatehouse_translate::cluster::{Cluster, InFlight, Refused};
use gatehouse_translate::hosts::strip_port;
use gatehouse_translate::routes::{modify_path, RequestView};
use gatehouse_translate::{ActionKind, BackendTarget, RouteAction, UpstreamProtocol};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What the connection knows about itself.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The configured listener address (the key of its port in the Snapshot).
    pub listener: SocketAddr,
    pub https: bool,
    pub sni: Option<String>,
}

/// Routes and answers one request of the hyper path or the HTTP/2 path.
pub async fn handle(
    dp: Arc<DataPlane>,
    conn: Arc<ConnInfo>,
    req: Request<RequestBody>,
) -> Response<Body> {
    let start = Instant::now();
    let active = dp.state.load_full();
    let rid = request_id(req.headers());
    let mut req = req;
    let trace = dp.tracer.get().map(|t| t.begin(req.headers_mut()));
    // What the logs and the ring of recent requests keep of the request, whose parts
    // go upstream.
    let mut asked = Asked::of(&req, dp.security_logs.access.is_some());
    let whole = asked.whole.take().unwrap_or_default();
    let head = Head {
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        authority: req.uri().authority().map(|a| a.as_str()),
        headers: req.headers(),
        http10: req.version() < http::Version::HTTP_11,
    };
    let (mut resp, stats) = match decide(&dp, &active, &conn, &head, &rid) {
        (Decision::Respond(r), stats) => (r, stats),
        (Decision::Forward(fwd), stats) => {
            let fwd = fwd.into_owned();
            let req = crate::pace::paced_request(&dp, &conn, &rid, req);
            let action = fwd.action.clone();
            let refused =
                crate::ratelimit::check_global(&dp, &action, &conn, &fwd.path, req.headers(), &rid)
                    .await;
            let mut resp = match (refused, &action.protection.waf) {
                (Some(r), _) => r,
                (None, Some(waf)) => crate::waf::guard(&dp, &conn, &rid, waf, fwd, req).await,
                (None, None) => fwd.send(&dp, &conn, &rid, req).await,
            };
            if let Some(m) = &action.response_headers {
                m.apply(resp.headers_mut());
            }
            (resp, stats)
        }
    };
    // Unique per response: HTTP/2 must not put it in its header compression table
    // (where it would only evict useful entries and cost a search each time).
    let reason = Reason::of(&resp);
    if dp.cfg.debug_headers && reason != Reason::Upstream {
        mark_reason(resp.headers_mut(), reason);
    }
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    // Counted first: once the request shows in the log, it shows in /metrics.
    stats.record(status, reason, elapsed);
    finished(
        dp.as_ref(),
        crate::recent::Seen {
            time_ms: crate::security_log::now_ms(),
            request_id: crate::recent::Short::new(rid.as_bytes()),
            client: conn.peer.ip(),
            method: asked.method,
            host: asked.host,
            target: asked.target,
            protocol: asked.protocol,
            status,
            reason,
            route: route_of(&active, stats.route),
            upstream: resp.extensions_mut().remove::<crate::recent::Upstream>(),
            duration_us: elapsed.as_micros() as u64,
            trace,
        },
        rid.to_str().unwrap_or(""),
        &whole.0,
        &whole.1,
    );
    let mut rid = rid;
    rid.set_sensitive(true);
    resp.headers_mut().insert(X_REQUEST_ID.clone(), rid);
    count_sent(resp, stats.stats)
}

/// The response, its body's bytes counted for its route as they are sent (a body of
/// known length at once, without a wrapper).
fn count_sent(resp: Response<Body>, stats: Arc<crate::metrics::RouteStats>) -> Response<Body> {
    use http_body::Body as _;
    if let Some(n) = resp.body().size_hint().exact() {
        stats.record_sent(n);
        return resp;
    }
    resp.map(|b| {
        http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_frame(b, move |f| {
            if let Some(d) = f.data_ref() {
                stats.record_sent(d.len() as u64);
            }
            f
        }))
    })
}

/// What the logs keep of a request whose parts go upstream.
struct Asked {
    method: Method,
    /// The whole host and path, kept only for the access log.
    whole: Option<(String, String)>,
    host: crate::recent::Short<48>,
    target: crate::recent::Short<96>,
    protocol: &'static str,
}

impl Asked {
    fn of<B>(req: &Request<B>, logged: bool) -> Asked {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| req.headers().get(header::HOST).map(HeaderValue::as_bytes))
            .unwrap_or(b"");
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        Asked {
            whole: logged.then(|| {
                (
                    String::from_utf8_lossy(host).into_owned(),
                    req.uri().path().to_string(),
                )
            }),
            method: req.method().clone(),
            host: crate::recent::Short::new(host),
            target: crate::recent::Short::new(target.as_bytes()),
            protocol: match req.version() {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
        }
    }
}

/// The name of the route with `id` in `active` (None: no route).
pub(crate) fn route_of(active: &Active, id: u32) -> Option<Arc<str>> {
    active.snapshot.route_names.get(id as usize).cloned()
}

/// The end of a request: its line in the access log (when there is one and it is
/// logged; with the whole `host` and `path`, the record keeps only their start) and
/// its record in the ring of recent requests.
pub(crate) fn finished(
    dp: &DataPlane,
    seen: crate::recent::Seen,
    rid: &str,
    host: &str,
    path: &str,
) {
    if let Some(log) = &dp.security_logs.access {
        log.log(&crate::access_log::Entry {
            request_id: rid,
            client: seen.client,
            method: seen.method.as_str(),
            host,
            path,
            protocol: seen.protocol,
            status: seen.status,
            reason: seen.reason,
            route: seen.route.as_deref().unwrap_or(""),
            duration: std::time::Duration::from_micros(seen.duration_us),
            trace: seen.trace,
        });
    }
    if let (Some(tracer), Some(ids)) = (dp.tracer.get(), seen.trace) {
        if ids.sampled && tracer.exports() {
            tracer.finish(crate::trace::Span::of(&seen, ids, host, path));
        }
    }
    dp.recent.record(seen);
}

/// Says why in `x-gatehouse-reason`, unless a more precise reason is there already.
pub(crate) fn mark_reason(headers: &mut HeaderMap, reason: Reason) {
    if !headers.contains_key(&X_GATEHOUSE_REASON) {
        if let Ok(v) = HeaderValue::from_str(&reason.header_value()) {
            headers.insert(X_GATEHOUSE_REASON.clone(), v);
        }
    }
}

/// The parts of a request head that routing reads.
pub struct Head<'a, 'h> {
    pub method: &'h Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The authority of an absolute-form request target (else Host is used).
    pub authority: Option<&'a str>,
    pub headers: &'h HeaderMap,
    /// HTTP/1.0 or older, where Host is optional (such a request without one goes to
    /// the rules that name no host).
    pub http10: bool,
}

/// What routing decided.
pub enum Decision<'a> {
    /// The proxy answers itself (an error, a redirect, a fixed response).
    Respond(Response<Body>),
    /// The request goes to a backend of this route.
    Forward(Routed<'a>),
}

/// A short plain-text response from the proxy itself, marked with why.
pub fn error(status: StatusCode, reason: Reason, msg: &str) -> Response<Body> {
    let text = format!(
        "{} {}: {msg}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    with_reason(r, reason)
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Picks section, host and route for a request head on the loaded Snapshot.
pub fn decide<'a>(
    dp: &DataPlane,
    active: &Active,
    conn: &ConnInfo,
    req: &Head<'a, '_>,
    rid: &HeaderValue,
) -> (Decision<'a>, Tally) {
    let no_route = || dp.no_route.clone();
    let respond = |r: Response<Body>| (Decision::Respond(r), Tally::from(dp.no_route.clone()));
    if let Err(refused) = crate::strict::check(req.method, req.path, req.query, req.headers) {
        // The rest of the connection cannot be trusted to be framed as the client meant.
        let mut resp = error(refused.status, Reason::BadRequest, refused.reason);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return respond(resp);
    }
    let Some(port) = active.snapshot.port(conn.listener) else {
        // The listener left the config while this connection stayed open: answer, then
        // close the connection so the client does not keep using a retired port.
        let mut resp = error(
            StatusCode::NOT_FOUND,
            Reason::ListenerGone,
            "this listener is no longer configured",
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return respond(resp);
    };
    let authority: Option<Cow<'a, str>> = match req.authority {
        Some(a) => Some(Cow::Borrowed(a.rsplit('@').next().unwrap_or(""))),
        None => req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| Cow::Owned(h.to_string())),
    };
    let authority = match authority.filter(|a| !a.is_empty()) {
        Some(a) => Some(a),
        None if req.http10 => Some(Cow::Borrowed("")),
        None => None,
    };
    let Some(authority) = authority else {
        return respond(error(
            StatusCode::BAD_REQUEST,
            Reason::BadRequest,
            "missing Host header",
        ));
    };
    let host = strip_port(&authority);
    let path = match normalize_path(req.path, dp.cfg.merge_slashes) {
        Ok(p) => p,
        Err(e) => {
            return respond(error(
                StatusCode::BAD_REQUEST,
                Reason::BadRequest,
                &format!("malformed request path: {e:?}"),
            ))
        }
    };
    let query = req.query;
    // The listener (section) is chosen by Host. On TLS, a connection whose SNI chose a
    // different listener (HTTP/2 connection reuse across names) is told to retry on a
    // new connection, so one listener's routes never serve another's hostnames.
    let section = port.sections.lookup(host);
    if let (Some(sni), true) = (&conn.sni, conn.https) {
        let by_sni = port.sections.lookup(sni);
        let same = match (section, by_sni) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            return respond(error(
                StatusCode::MISDIRECTED_REQUEST,
                Reason::Misdirected,
                "TLS server name does not match Host",
            ));
        }
    }
    let view = RequestView {
        method: req.method,
        path: &path,
        query,
        headers: req.headers,
    };
    let entry = section
        .and_then(|s| s.hosts.lookup(host))
        .and_then(|t| t.find(&view));
    let (action, prefix_len) = match (entry, section.and_then(|s| s.fallback.as_ref())) {
        (Some(e), _) => (e.action.clone(), e.prefix_len()),
        (None, Some(f)) => (f.clone(), 0),
        (None, None) => {
            let rid = rid.to_str().unwrap_or("");
            let msg = format!("no route for host {host:?} path {path:?} (request id {rid})");
            return respond(error(StatusCode::NOT_FOUND, Reason::NoRoute, &msg));
        }
    };
    let mut stats = Tally::from(
        active
            .stats
            .get(action.id as usize)
            .cloned()
            .unwrap_or_else(no_route),
    );
    stats.route = action.id;
    let guard = &action.protection;
    let client = guard.client(conn.peer.ip(), req.headers);
    if let Some(blocks) = &active.snapshot.blocks {
        if let Some(b) = blocks.check(client, crate::security_log::now_ms()) {
            match &b.limit {
                // A limited source within its rate is served.
                Some(l) if l.allows(client) => {}
                Some(l) => {
                    let resp =
                        crate::blocks::over_limit(dp, b, l.per_second, client, &action.name, rid);
                    return (Decision::Respond(resp), stats);
                }
                None => {
                    let resp =
                        crate::blocks::refuse_request(dp, b, client, &action.name, conn, rid);
                    return (Decision::Respond(resp), stats);
                }
            }
        }
    }
    // Counted before the checks below, so that their refusals count as its errors. A
    // proxy in front (trusted for X-Forwarded-For, or sending PROXY headers) speaks for
    // many clients: it is never counted as one source, so never blocked as one.
    if let Some(adaptive) = &guard.adaptive {
        let in_front = guard
            .trusted_proxies
            .as_ref()
            .is_some_and(|t| t.trusts(client))
            || dp
                .cfg
                .proxy_protocol
                .as_ref()
                .is_some_and(|l| l.check(client) == gatehouse_security::ipacl::Access::Allow);
        if !in_front {
            stats.source = Some(adaptive.tracker.record(client));
        }
    }
    if let Some(acl) = &guard.ip_access {
        if acl.list.check(client) == gatehouse_security::ipacl::Access::Deny {
            let resp = crate::ratelimit::ip_denied(dp, &action, acl, client, conn, rid);
            return (Decision::Respond(resp), stats);
        }
    }
    if let Some(limits) = &guard.rate_limits {
        let header = |n: &str| req.headers.get(n).map(HeaderValue::as_bytes);
        if let Some(over) = limits.check(client, path.as_bytes(), &header) {
            dp.metrics
                .counters
                .rate_limited_total
                .fetch_add(1, Ordering::Relaxed);
            return (
                Decision::Respond(crate::ratelimit::too_many(
                    dp, &action, limits, &over, client, conn, rid,
                )),
                stats,
            );
        }
    }
    let listener_port = section
        .map(|s| s.listener_port)
        .unwrap_or(conn.listener.port());
    let mut resp = match &action.kind {
        ActionKind::Fixed {
            status: code,
            reason,
        } => error(status(*code), Reason::Fixed, reason),
        ActionKind::Redirect(r) => {
            let input = RedirectInput {
                https: conn.https,
                host,
                listener_port,
                path: &path,
                query,
                prefix_len,
            };
            let mut resp = with_reason(Response::new(body::empty()), Reason::Redirect);
            *resp.status_mut() = status(r.status);
            match HeaderValue::from_str(&location(r, &input)) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Err(_) => {
                    return (
                        Decision::Respond(error(
                            StatusCode::BAD_REQUEST,
                            Reason::BadRequest,
                            "cannot build redirect location",
                        )),
                        stats,
                    )
                }
            }
            resp
        }
        ActionKind::Forward { .. } if crate::shed::shedding(dp, guard.priority) => {
            crate::shed::shed_response(dp)
        }
        ActionKind::Forward { .. } => {
            let routed = Routed {
                action,
                authority,
                path,
                query: query.map(Cow::Borrowed),
                prefix_len,
            };
            stats.forwarded = true;
            return (Decision::Forward(routed), stats);
        }
    };
    if let Some(m) = &action.response_headers {
        m.apply(resp.headers_mut());
    }
    (Decision::Respond(resp), stats)
}

/// A request routed to a forwarding rule (borrowing from the request head).
pub struct Routed<'a> {
    pub action: Arc<RouteAction>,
    /// The request's authority (Host), as sent.
    pub authority: Cow<'a, str>,
    /// The normalised path and the query.
    pub path: Cow<'a, str>,
    pub query: Option<Cow<'a, str>>,
    /// Length of the matched path prefix (for prefix rewrites).
    pub prefix_len: usize,
}

impl Routed<'_> {
    /// The same, owning its strings (to outlive the request head).
    pub fn into_owned(self) -> Routed<'static> {
        Routed {
            action: self.action,
            authority: Cow::Owned(self.authority.into_owned()),
            path: Cow::Owned(self.path.into_owned()),
            query: self.query.map(|q| Cow::Owned(q.into_owned())),
            prefix_len: self.prefix_len,
        }
    }
}

/// Largest request body kept in memory so that it can be sent again (retries) or
/// copied (mirrors); larger or unsized bodies stream once.
const REPLAY_LIMIT: u64 = 64 * 1024;

/// What every upstream request of one downstream request shares.
#[derive(Clone)]
struct Outgoing {
    method: Method,
    /// Path and query.
    pq: String,
    /// The upstream Host (HTTP/1.1) or `:authority` (HTTP/2).
    host: String,
}

impl Outgoing {
    /// The request to `cluster`'s endpoint. HTTP/1.1 sends origin-form (the pool dials
    /// the endpoint; Host carries the name); HTTP/2 carries the real authority.
    fn request(
        &self,
        cluster: &Cluster,
        mut headers: HeaderMap,
        body: Body,
    ) -> Option<Request<Body>> {
        let h2 = cluster.protocol == UpstreamProtocol::Http2;
        let uri = match h2 {
            true => {
                headers.remove(header::HOST);
                Uri::builder()
                    .scheme("http")
                    .authority(self.host.as_str())
                    .path_and_query(self.pq.as_str())
                    .build()
            }
            false => Uri::builder().path_and_query(self.pq.as_str()).build(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri.ok()?;
        *req.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = headers;
        Some(req)
    }
}

/// How the attempts at one request ended. (It lives on the stack for one request;
/// boxing the common variant would cost an allocation per request.)
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Response(Response<UpstreamBody>),
    TimedOut,
    Connect(String),
    Exchange(BoxError),
    Overflow(Overflow),
}

impl Outcome {
    fn failure(&self) -> Option<Failure> {
        match self {
            Outcome::Response(r) => Some(Failure::Status(r.status().as_u16())),
            Outcome::TimedOut | Outcome::Exchange(_) => Some(Failure::Reset),
            Outcome::Connect(_) => Some(Failure::Connect),
            Outcome::Overflow(_) => None,
        }
    }

    /// For outlier detection: 5xx answers, failed connections and timeouts count
    /// against the endpoint (a circuit breaker's refusal does not).
    fn ok(&self) -> bool {
        match self {
            Outcome::Response(r) => !r.status().is_server_error(),
            Outcome::Overflow(_) => true,
            _ => false,
        }
    }
}

impl Routed<'_> {
    /// Sends the request upstream (with retries, mirrors and affinity as the route's
    /// backend asks) and returns the response to stream back.
    pub async fn send(
        self,
        dp: &Arc<DataPlane>,
        conn: &ConnInfo,
        rid: &HeaderValue,
        req: Request<RequestBody>,
    ) -> Response<Body> {
        let ActionKind::Forward { rewrite, backends } = &self.action.kind else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::InvalidBackend,
                "not a forwarding route",
            );
        };
        let cluster = match backends.pick() {
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Reason::InvalidBackend,
                    "route has no backend with a non-zero weight",
                )
            }
            Some(BackendTarget::Invalid {
                status: code,
                reason,
            }) => return error(status(*code), Reason::InvalidBackend, reason),
            Some(BackendTarget::Cluster(c)) => c,
        };
        let (mut parts, incoming) = req.into_parts();
        let upgrade = parts.version == Version::HTTP_11 && is_upgrade(&parts.headers);
        let downstream_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|l| l > dp.cfg.max_body_bytes) {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Reason::BodyTooLarge,
                "request body too large",
            );
        }
        let mut affinity = affinity::of_request(&cluster.policy, &parts.headers, conn.peer);
        strip_hop_by_hop(&mut parts.headers, upgrade);
        if let Some(m) = &self.action.request_headers {
            m.apply(&mut parts.headers);
        }
        let host = rewrite
            .as_ref()
            .and_then(|r| r.hostname.as_deref())
            .unwrap_or(&self.authority);
        match HeaderValue::from_str(host) {
            Ok(v) => {
                parts.headers.insert(header::HOST, v);
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, Reason::BadRequest, "invalid Host"),
        }
        add_forwarded(&mut parts.headers, conn.peer.ip(), conn.https);
        parts.headers.insert(X_REQUEST_ID.clone(), rid.clone());
        if parts.version == Version::HTTP_2 {
            join_cookies(&mut parts.headers);
        }
        let path = match rewrite.as_ref().and_then(|r| r.path.as_ref()) {
            Some(m) => modify_path(&self.path, m, self.prefix_len),
            None => self.path.into_owned(),
        };
        let out = Outgoing {
            method: parts.method.clone(),
            pq: match &self.query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            },
            host: host.to_string(),
        };
        // A body that may be sent more than once is read first (up to REPLAY_LIMIT).
        let retry = cluster.policy.retry.as_ref().filter(|_| !upgrade);
        let copies = retry.is_some() || !self.action.mirrors.is_empty();
        let max = dp.cfg.max_body_bytes as usize;
        let mut once: Option<Body> = None;
        let replay: Option<Bytes> = if copies && incoming.is_end_stream() {
            Some(Bytes::new())
        } else if copies && length.is_some_and(|l| l <= REPLAY_LIMIT) {
            match Limited::new(incoming, REPLAY_LIMIT as usize)
                .collect()
                .await
            {
                Ok(b) => Some(b.to_bytes()),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        Reason::BadRequest,
                        "request body not received",
                    )
                }
            }
        } else {
            once = Some(Limited::new(incoming, max).boxed_unsync());
            None
        };
        if let Some(body) = &replay {
            for m in &self.action.mirrors {
                if !mirror::sampled(m.per_million) {
                    continue;
                }
                let headers = parts.headers.clone();
                let target = m.cluster.clone();
                let shadow = out.clone();
                mirror::spawn(dp.clone(), target.clone(), body.clone(), move |b| {
                    shadow.request(&target, headers, b)
                });
            }
        }
        // Gateway API: a zero duration disables a timeout.
        let forever = std::time::Duration::from_secs(365 * 24 * 3600);
        let nonzero = |d: std::time::Duration| if d.is_zero() { forever } else { d };
        let overall = nonzero(self.action.timeout.unwrap_or(dp.cfg.upstream_timeout));
        let per_try = retry
            .and_then(|r| r.per_try_timeout)
            .or(self.action.backend_timeout)
            .map(nonzero);
        let deadline = Instant::now() + overall;
        let counters = &dp.metrics.counters;
        let mut attempt = 0;
        let (outcome, in_flight, set_session, endpoint) = loop {
            let admitted = match cluster.admit(&affinity) {
                Ok(a) => a,
                Err(refused) => return refusal(dp, cluster, refused),
            };
            if attempt == 0 && retry.is_some() {
                cluster.retry_budget().record_request();
            }
            let more = retry.is_some_and(|r| attempt < r.attempts) && replay.is_some();
            let body = match (&replay, once.take()) {
                (Some(b), _) => body::full(b.clone()),
                (None, Some(b)) => b,
                (None, None) => body::empty(),
            };
            let headers = match more {
                true => parts.headers.clone(),
                false => std::mem::take(&mut parts.headers),
            };
            let Some(req) = out.request(cluster, headers, body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    Reason::BadRequest,
                    "cannot build upstream URI",
                );
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = per_try.map_or(left, |p| p.min(left));
            let sent = tokio::time::timeout(
                limit,
                dp.upstreams.send(cluster, admitted.addr, req, upgrade),
            );
            let outcome = match sent.await {
                Err(_) => Outcome::TimedOut,
                Ok(Ok(resp)) => Outcome::Response(resp),
                Ok(Err(UpstreamError::Connect(e))) => Outcome::Connect(e),
                Ok(Err(UpstreamError::Exchange(e))) => Outcome::Exchange(e),
                Ok(Err(UpstreamError::Overflow(o))) => Outcome::Overflow(o),
            };
            admitted.guard.outcome(outcome.ok());
            let failure = outcome.failure().filter(|_| !outcome.ok());
            let again = match (retry, failure) {
                (Some(r), Some(f)) if more && retry::retriable(r, &out.method, f) => {
                    let budget = cluster.retry_budget();
                    let granted = budget.try_retry(r.budget_percent, r.budget_min_per_second);
                    if !granted {
                        counters
                            .retry_budget_exhausted_total
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    granted.then(|| retry::backoff(r, attempt + 1))
                }
                _ => None,
            };
            match again {
                Some(wait) if Instant::now() + wait < deadline => {
                    counters
                        .upstream_retries_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(upstream = %admitted.addr, attempt, ?failure, "retrying");
                    drop(outcome);
                    tokio::time::sleep(wait).await;
                    affinity.avoid = Some(admitted.addr);
                    attempt += 1;
                }
                _ => break (outcome, admitted.guard, admitted.set_session, admitted.addr),
            }
        };
        let went = crate::recent::Upstream {
            cluster: cluster.clone(),
            endpoint,
        };
        let mut resp = match outcome {
            Outcome::Response(r) => r,
            Outcome::TimedOut => {
                counters
                    .upstream_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                return went.tag(error(
                    StatusCode::GATEWAY_TIMEOUT,
                    Reason::UpstreamTimeout,
                    "upstream did not respond in time",
                ));
            }
            Outcome::Connect(e) => {
                counters
                    .upstream_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(upstream = %endpoint, error = %e, "upstream connect failed");
                return went.tag(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Reason::ConnectFailed,
                    "upstream connect error",
                ));
            }
            Outcome::Exchange(e) => {
                counters
                    .upstream_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                if source_is::<http_body_util::LengthLimitError>(e.as_ref()) {
                    return went.tag(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        Reason::BodyTooLarge,
                        "request body too large",
                    ));
                }
                tracing::debug!(upstream = %endpoint, error = %e, "upstream request failed");
                return went.tag(error(
                    StatusCode::BAD_GATEWAY,
                    Reason::UpstreamReset,
                    "upstream connection reset",
                ));
            }
            Outcome::Overflow(o) => return overflow(dp, cluster, o),
        };
        // An upgraded connection never goes back to the pool.
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            resp.body_mut().no_reuse();
            match downstream_upgrade {
                Some(down) => {
                    let up = hyper::upgrade::on(&mut resp);
                    tokio::spawn(tunnel(down, up));
                    strip_hop_by_hop(resp.headers_mut(), true);
                }
                None => {
                    return error(
                        StatusCode::BAD_GATEWAY,
                        Reason::UpstreamReset,
                        "upstream switched protocols unasked",
                    )
                }
            }
        } else {
            strip_hop_by_hop(resp.headers_mut(), false);
        }
        if let (Some(token), Some(s)) = (set_session, &cluster.policy.session) {
            if let Some(v) = affinity::session_cookie(s, token) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        // The request stays in flight (for the balancer and the circuit breaker) until
        // its response body ends; then its connection goes back to the pool.
        went.tag(resp.map(|b| {
            InFlightBody {
                inner: b,
                _in_flight: in_flight,
            }
            .boxed_unsync()
        }))
    }
}

/// The 503 for a request the cluster did not admit.
pub(crate) fn refusal(dp: &DataPlane, cluster: &Cluster, refused: Refused) -> Response<Body> {
    match refused {
        Refused::NoEndpoints => {
            let msg = format!("no ready endpoints for {}", cluster.name);
            error(StatusCode::SERVICE_UNAVAILABLE, Reason::NoEndpoints, &msg)
        }
        Refused::MaxRequests(max) => {
            let msg = format!(
                "circuit breaker: {} has {max} requests in flight",
                cluster.name
            );
            breaker(dp, &msg, "circuit-breaker-max-requests")
        }
    }
}

/// The 503 for a request the connection limit refused.
pub(crate) fn overflow(dp: &DataPlane, cluster: &Cluster, o: Overflow) -> Response<Body> {
    match o {
        Overflow::MaxConnections(max) => {
            let msg = format!(
                "circuit breaker: {} has {max} connections open",
                cluster.name
            );
            breaker(dp, &msg, "circuit-breaker-max-connections")
        }
        Overflow::MaxPending(max) => {
            let msg = format!(
                "circuit breaker: {} has {max} requests waiting for a connection",
                cluster.name
            );
            breaker(dp, &msg, "circuit-breaker-max-pending")
        }
    }
}

fn breaker(dp: &DataPlane, msg: &str, reason: &'static str) -> Response<Body> {
    dp.metrics
        .counters
        .circuit_breaker_open_total
        .fetch_add(1, Ordering::Relaxed);
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, Reason::CircuitOpen, msg);
    resp.headers_mut()
        .insert(X_GATEHOUSE_REASON.clone(), HeaderValue::from_static(reason));
    resp
}

/// Why Gatehouse itself refused a request, for clients and logs.
static X_GATEHOUSE_REASON: http::HeaderName = http::HeaderName::from_static("x-gatehouse-reason");

/// The upstream response body, holding its request's in-flight guard until it ends
/// (its pooled connection goes back to the pool with the body, see [`UpstreamBody`]).
struct InFlightBody {
    inner: UpstreamBody,
    _in_flight: InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// HTTP/2 may split `cookie` into several fields; HTTP/1.1 needs one, joined by "; "
/// (RFC 9113 §8.2.3).
fn join_cookies(h: &mut http::HeaderMap) {
    if h.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = h
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

fn source_is<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Copies bytes both ways between an upgraded client and upstream connection.
async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(down, up) {
        Ok((d, u)) => {
            let mut d = TokioIo::new(d);
            let mut u = TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}
