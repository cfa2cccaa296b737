//! The HTTP/1.1 fast path of plain-text listeners. The connection's own task parses
//! each request head, routes it on the Snapshot (the same `decide` as the hyper path),
//! and forwards it on a pooled raw upstream connection: request head, body and
//! response are copied inline, with the body framing passed through unchanged, so a
//! request costs no task hand-offs and few allocations.
//!
//! Anything the fast path does not handle (HTTP/1.0, h2c, upgrades, `Expect`, odd
//! framing, absolute-form targets, HTTP/2 backends, retries, mirrors) hands the whole
//! connection, with the bytes already read, to hyper.

use crate::affinity;
use crate::chunked::ChunkedScanner;
use crate::dataplane::DataPlane;
use crate::deadline::Deadline;
use crate::handler::{self, error, ConnInfo, Decision, Head, Routed};
use crate::headers::{add_forwarded, request_id, strip_hop_by_hop, X_REQUEST_ID};
use crate::pace::BodyPace;
use crate::pool::{Acquired, Lease, Pool, Pooled, Reusable};
use crate::reason::Reason;
use crate::rewind::Rewind;
use crate::upstream::UpstreamError;
use crate::waf::WafTransaction;
use bytes::{Bytes, BytesMut};
use gatehouse_translate::cluster::Cluster;
use gatehouse_translate::routes::modify_path;
use gatehouse_translate::waf::WafPolicy;
use gatehouse_translate::{ActionKind, BackendTarget, UpstreamProtocol};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most headers a request or response may have on the fast path (more: hyper).
const MAX_HEADERS: usize = 64;

/// A downstream connection: plain TCP or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A raw upstream connection and what was read from it beyond the last response.
pub struct RawConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    /// Where the last response head's headers are in `buf` (reused).
    pub(crate) ranges: Vec<HeaderRange>,
}

/// A header's name and value, as ranges of a buffer.
type HeaderRange = (std::ops::Range<usize>, std::ops::Range<usize>);

impl Reusable for RawConn {
    /// A closed idle connection cannot be told without a system call; the fast path
    /// finds out on use and retries a request that was never answered.
    fn is_closed(&self) -> bool {
        false
    }
}

/// The raw upstream pool.
pub type RawPool = Pool<RawConn>;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Why a request leaves the fast path.
enum Exit {
    /// The connection is done (closed, timed out, shut down, or unusable).
    Close,
    /// Hyper takes over; these bytes were already read.
    Handover(Bytes),
}

/// Serves a plain-text connection.
pub async fn serve<S: Io>(dp: Arc<DataPlane>, mut stream: S, info: ConnInfo) {
    let info = Arc::new(info);
    let mut shutdown = dp.shutdown.subscribe();
    let mut conn = Downstream {
        buf: BytesMut::with_capacity(8 * 1024),
        out: Vec::with_capacity(2 * 1024),
        timer: Deadline::new(tokio::time::Instant::now() + dp.cfg.header_read_timeout),
        stop: Box::pin(async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }),
        stopped: false,
        reason: Reason::Upstream,
        debug: dp.cfg.debug_headers,
        upstream: None,
        sent: 0,
    };
    match conn.run(&dp, &mut stream, &info).await {
        // Close properly: on TLS this sends close_notify, without which clients take
        // the end for a truncation and do not resume the session next time.
        Exit::Close => {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
        Exit::Handover(pre) if pre.starts_with(crate::fast_h2::PREFACE) => {
            let info = Arc::try_unwrap(info).unwrap_or_else(|i| (*i).clone());
            crate::fast_h2::serve(dp, stream, info, BytesMut::from(&pre[..])).await;
        }
        Exit::Handover(pre) => {
            let io = hyper_util::rt::TokioIo::new(Rewind::new(stream, pre));
            let info = Arc::try_unwrap(info).unwrap_or_else(|i| (*i).clone());
            crate::listener::serve_http(&dp, io, info).await;
        }
    }
}

/// A parsed request head.
struct RequestHead {
    /// The head's bytes (header values point into them).
    raw: Bytes,
    target: std::ops::Range<usize>,
    /// The Host header's value in `raw`.
    host: Option<std::ops::Range<usize>>,
    msg: Message,
}

/// The parts of a request the forwarding step takes over.
struct Message {
    method: Method,
    headers: HeaderMap,
    framing: Framing,
    /// The client asked to close after this request.
    close: bool,
}

/// A WAF judging one exchange on the fast path.
struct Judge<'a, 'w> {
    waf: &'a WafPolicy,
    tx: WafTransaction<'w>,
    logged: bool,
}

impl Judge<'_, '_> {
    /// Runs phase 5 and writes the logs, once.
    fn finish(&mut self, dp: &DataPlane, rid: &HeaderValue) {
        if !self.logged {
            self.logged = true;
            crate::waf::conclude(dp, self.waf, &mut self.tx, rid);
        }
    }
}

/// Per-connection state, reused by every request.
struct Downstream {
    /// Bytes read from the client and not yet used.
    buf: BytesMut,
    /// The next write.
    out: Vec<u8>,
    /// The header read and upstream response deadlines.
    timer: Deadline,
    /// Resolves when the proxy shuts down (polled only between requests).
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    stopped: bool,
    /// The reason of the last answer of the proxy's own (else the upstream's).
    reason: Reason,
    /// Answers of the proxy's own say why in a header.
    debug: bool,
    /// Where the request went, once it went upstream.
    upstream: Option<crate::recent::Upstream>,
    /// Bytes of the response body sent to the client.
    sent: u64,
}

impl Downstream {
    async fn run<S: Io>(&mut self, dp: &Arc<DataPlane>, stream: &mut S, info: &ConnInfo) -> Exit {
        loop {
            let head = match self.read_head(dp, stream).await {
                Ok(Some(h)) => h,
                Ok(None) => return Exit::Close,
                Err(()) => return Exit::Handover(self.buf.split().freeze()),
            };
            match self.exchange(dp, stream, info, head).await {
                Ok(true) => {}
                Ok(false) => return Exit::Close,
                Err(pre) => return Exit::Handover(pre),
            }
        }
    }

    /// Reads and parses the next request head, which must be complete within the
    /// header read timeout. None: the connection is done; Err: hand over to hyper
    /// (which also answers malformed requests).
    async fn read_head<S: Io>(
        &mut self,
        dp: &DataPlane,
        stream: &mut S,
    ) -> Result<Option<RequestHead>, ()> {
        self.timer
            .set(tokio::time::Instant::now() + dp.cfg.header_read_timeout);
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = self.parse_head(dp.cfg.max_header_bytes)? {
                    return Ok(Some(head));
                }
                if self.buf.len() > dp.cfg.max_header_bytes {
                    return Err(());
                }
            }
            let idle = self.buf.is_empty();
            if idle && self.stopped {
                return Ok(None);
            }
            self.buf.reserve(4096);
            let read = tokio::select! {
                biased;
                _ = &mut self.stop, if idle && !self.stopped => {
                    self.stopped = true;
                    return Ok(None);
                }
                r = stream.read_buf(&mut self.buf) => r,
                _ = self.timer.expired() => return Ok(None),
            };
            match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// Parses a complete head at the start of the buffer (Ok(None): need more bytes).
    fn parse_head(&mut self, max: usize) -> Result<Option<RequestHead>, ()> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let len = match req.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        // Hyper answers what is too large (431) or malformed (400).
        if len > max || req.version != Some(1) {
            return Err(());
        }
        let (Some(m), Some(path)) = (req.method, req.path) else {
            return Err(());
        };
        if !path.starts_with('/') {
            return Err(());
        }
        let method = Method::from_bytes(m.as_bytes()).map_err(|_| ())?;
        if method == Method::CONNECT {
            return Err(());
        }
        let base = self.buf.as_ptr() as usize;
        let offset = |s: &[u8]| s.as_ptr() as usize - base;
        let target = offset(path.as_bytes())..offset(path.as_bytes()) + path.len();
        let mut ranges: [(std::ops::Range<usize>, std::ops::Range<usize>); MAX_HEADERS] =
            std::array::from_fn(|_| (0..0, 0..0));
        let n = req.headers.len();
        for (slot, h) in ranges.iter_mut().zip(req.headers.iter()) {
            let name = offset(h.name.as_bytes());
            let value = offset(h.value);
            *slot = (name..name + h.name.len(), value..value + h.value.len());
        }
        let raw = self.buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(n + 4);
        let mut framing = Framing::None;
        let mut close = false;
        let mut handover = false;
        let (mut saw_length, mut saw_coding) = (false, false);
        let mut host = None;
        for (name_range, value_range) in &ranges[..n] {
            let (name, value) = (name_range, value_range);
            let name = HeaderName::from_bytes(&raw[name.clone()]).map_err(|_| ())?;
            let value = HeaderValue::from_maybe_shared(raw.slice(value.clone())).map_err(|_| ())?;
            match name {
                header::UPGRADE | header::EXPECT => handover = true,
                header::CONTENT_LENGTH => {
                    saw_length = true;
                    let n = std::str::from_utf8(value.as_bytes())
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok());
                    match (framing, n) {
                        (Framing::None, Some(n)) => framing = Framing::Length(n),
                        _ => handover = true,
                    }
                }
                header::TRANSFER_ENCODING => {
                    saw_coding = true;
                    match framing {
                        Framing::None if value.as_bytes().eq_ignore_ascii_case(b"chunked") => {
                            framing = Framing::Chunked
                        }
                        _ => handover = true,
                    }
                }
                header::HOST => host = Some(value_range.clone()),
                header::CONNECTION => {
                    close |= value
                        .as_bytes()
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
                }
                _ => {}
            }
            headers.append(name, value);
        }
        if saw_length && saw_coding {
            // A smuggling attempt, whatever the values: routing refuses it (`strict`)
            // with both headers in view, and the connection closes after the answer.
            framing = Framing::Close;
        } else if handover {
            self.unread(raw);
            return Err(());
        }
        if framing == Framing::Length(0) {
            framing = Framing::None;
        }
        Ok(Some(RequestHead {
            raw,
            target,
            host,
            msg: Message {
                method,
                headers,
                framing,
                close,
            },
        }))
    }

    /// Puts a head taken from the buffer back in front of it (for a hand-over).
    fn unread(&mut self, head: Bytes) {
        let mut all = BytesMut::with_capacity(head.len() + self.buf.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(&self.buf);
        self.buf = all;
    }

    /// The bytes to hand over with the head `raw` in front.
    fn handover(&mut self, raw: &Bytes) -> Bytes {
        self.unread(raw.clone());
        self.buf.split().freeze()
    }

    /// Serves one request. Ok(true): keep the connection; Ok(false): close it;
    /// Err(bytes): hand it over to hyper.
    async fn exchange<S: Io>(
        &mut self,
        dp: &Arc<DataPlane>,
        stream: &mut S,
        info: &ConnInfo,
        head: RequestHead,
    ) -> Result<bool, Bytes> {
        let start = Instant::now();
        let active = dp.state.load_full();
        let RequestHead {
            raw,
            target,
            host,
            mut msg,
        } = head;
        let rid = request_id(&msg.headers);
        let trace = dp.tracer.get().map(|t| t.begin(&mut msg.headers));
        let (target_range, host_range) = (target.clone(), host.clone());
        let target = std::str::from_utf8(&raw[target]).unwrap_or("/");
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        // The Host header (from the head's bytes, so the headers stay free to change).
        let view_host = host.and_then(|r| std::str::from_utf8(&raw[r]).ok());
        let view = Head {
            method: &msg.method,
            path,
            query,
            authority: view_host,
            headers: &msg.headers,
            http10: false,
        };
        let (decision, stats) = handler::decide(dp, &active, info, &view, &rid);
        self.reason = Reason::Upstream;
        self.upstream = None;
        self.sent = 0;
        let method = msg.method.clone();
        let done = |this: &mut Self, status: u16| {
            let elapsed = start.elapsed();
            // Counted first: once the request shows in the log, it shows in /metrics.
            stats.record(status, this.reason, elapsed);
            stats.stats.record_sent(this.sent);
            handler::finished(
                dp,
                crate::recent::Seen {
                    time_ms: crate::security_log::now_ms(),
                    request_id: crate::recent::Short::new(rid.as_bytes()),
                    client: info.peer.ip(),
                    method: method.clone(),
                    host: crate::recent::Short::new(
                        host_range.clone().map_or(&[][..], |r| &raw[r]),
                    ),
                    target: crate::recent::Short::new(&raw[target_range.clone()]),
                    protocol: "HTTP/1.1",
                    status,
                    reason: this.reason,
                    route: handler::route_of(&active, stats.route),
                    upstream: this.upstream.take(),
                    duration_us: elapsed.as_micros() as u64,
                    trace,
                },
                rid.to_str().unwrap_or(""),
                view_host.unwrap_or(""),
                path,
            );
        };
        let routed = match decision {
            Decision::Respond(resp) => {
                // A body we do not read would be taken for the next request.
                let keep = !msg.close && msg.framing == Framing::None;
                let (status, ok) = self.answer(stream, resp, &rid, keep).await;
                done(&mut *self, status);
                return Ok(ok);
            }
            Decision::Forward(r) => r,
        };
        let ActionKind::Forward { backends, .. } = &routed.action.kind else {
            return Ok(false);
        };
        let cluster = match backends.pick() {
            Some(BackendTarget::Cluster(c)) => c.clone(),
            Some(BackendTarget::Invalid { status, reason }) => {
                let code =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let keep = !msg.close && msg.framing == Framing::None;
                let (status, ok) = self
                    .answer(
                        stream,
                        error(code, Reason::InvalidBackend, reason),
                        &rid,
                        keep,
                    )
                    .await;
                done(&mut *self, status);
                return Ok(ok);
            }
            None => return Err(self.handover(&raw)),
        };
        if cluster.protocol == UpstreamProtocol::Http2
            || cluster.policy.retry.is_some()
            || !routed.action.mirrors.is_empty()
        {
            return Err(self.handover(&raw));
        }
        let refused = crate::ratelimit::check_global(
            dp,
            &routed.action,
            info,
            &routed.path,
            &msg.headers,
            &rid,
        )
        .await;
        if let Some(resp) = refused {
            let keep = !msg.close && msg.framing == Framing::None;
            let (status, ok) = self.answer(stream, resp, &rid, keep).await;
            done(&mut *self, status);
            return Ok(ok);
        }
        let (status, keep) = self
            .forward(
                dp,
                stream,
                info,
                msg,
                routed,
                &cluster,
                &rid,
                (target, &raw),
            )
            .await;
        done(&mut *self, status);
        Ok(keep)
    }

    /// Writes a response of the proxy's own; false if the client is gone.
    async fn respond<S: Io>(
        &mut self,
        stream: &mut S,
        resp: Response<crate::body::Body>,
        rid: &HeaderValue,
        keep: bool,
    ) -> bool {
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        self.out.clear();
        status_line(
            &mut self.out,
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or(""),
        );
        let mut close = !keep;
        for (name, value) in &parts.headers {
            if name == header::CONNECTION {
                close |= value.as_bytes().eq_ignore_ascii_case(b"close");
                continue;
            }
            if name == header::CONTENT_LENGTH || name == X_REQUEST_ID {
                continue;
            }
            header_line(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
        }
        header_line(&mut self.out, b"x-request-id", rid.as_bytes());
        header_line(
            &mut self.out,
            b"content-length",
            itoa_buf(body.len() as u64).as_bytes(),
        );
        self.sent = body.len() as u64;
        if close {
            header_line(&mut self.out, b"connection", b"close");
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(&body);
        send_all(stream, &self.out).await.is_ok() && !close
    }

    /// `respond`, returning the status answered and whether the connection stays open.
    async fn answer<S: Io>(
        &mut self,
        stream: &mut S,
        resp: Response<crate::body::Body>,
        rid: &HeaderValue,
        keep: bool,
    ) -> (u16, bool) {
        let status = resp.status().as_u16();
        self.reason = Reason::of(&resp);
        let mut resp = resp;
        if self.debug {
            handler::mark_reason(resp.headers_mut(), self.reason);
        }
        (status, self.respond(stream, resp, rid, keep).await)
    }

    /// Forwards a request to `cluster`; returns the status answered and whether the
    /// connection stays open. A route with a WAF has the exchange judged on the way
    /// (`target` is the request target as received), and its verdicts logged.
    #[allow(clippy::too_many_arguments)]
    async fn forward<S: Io>(
        &mut self,
        dp: &Arc<DataPlane>,
        stream: &mut S,
        info: &ConnInfo,
        head: Message,
        routed: Routed<'_>,
        cluster: &Arc<Cluster>,
        rid: &HeaderValue,
        (target, raw): (&str, &[u8]),
    ) -> (u16, bool) {
        let Some(waf) = routed.action.protection.waf.clone() else {
            return self
                .forward_judged(dp, stream, info, head, routed, cluster, rid, None)
                .await;
        };
        let method = head.method.as_str().as_bytes();
        let tx = crate::waf::begin(
            &waf,
            info,
            rid,
            method,
            target.as_bytes(),
            b"HTTP/1.1",
            crate::waf::raw_headers(raw),
        );
        let mut judge = Judge {
            waf: &waf,
            tx,
            logged: false,
        };
        let result = self
            .forward_judged(
                dp,
                stream,
                info,
                head,
                routed,
                cluster,
                rid,
                Some(&mut judge),
            )
            .await;
        judge.finish(dp, rid);
        result
    }

    /// [`Self::forward`], with the WAF's transaction if the route has one.
    #[allow(clippy::too_many_arguments)]
    async fn forward_judged<S: Io>(
        &mut self,
        dp: &Arc<DataPlane>,
        stream: &mut S,
        info: &ConnInfo,
        mut head: Message,
        routed: Routed<'_>,
        cluster: &Arc<Cluster>,
        rid: &HeaderValue,
        mut judge: Option<&mut Judge<'_, '_>>,
    ) -> (u16, bool) {
        let close = head.close;
        // After an answer of our own the connection stays only if no request body is
        // left unread on it.
        let mut keep = !close && head.framing == Framing::None;
        if let Framing::Length(n) = head.framing {
            if n > dp.cfg.max_body_bytes {
                let resp = error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Reason::BodyTooLarge,
                    "request body too large",
                );
                return self.answer(stream, resp, rid, false).await;
            }
        }
        if let Some(j) = judge.as_mut() {
            let (waf, tx) = (j.waf, &mut j.tx);
            tx.process_request_headers();
            if crate::waf::blocks(waf, tx) {
                return self.waf_block(dp, stream, j, rid, keep).await;
            }
            if tx.request_body_access() && head.framing != Framing::None {
                let body = match self.read_body(dp, stream, head.framing).await {
                    Ok(b) => b,
                    Err(SendError::TooLarge) => {
                        let resp = error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            Reason::BodyTooLarge,
                            "request body too large",
                        );
                        return self.answer(stream, resp, rid, false).await;
                    }
                    Err(SendError::Slow) => return self.too_slow(dp, stream, info, rid).await,
                    Err(_) => {
                        let resp = error(
                            StatusCode::BAD_REQUEST,
                            Reason::BadRequest,
                            "malformed or truncated request body",
                        );
                        return self.answer(stream, resp, rid, false).await;
                    }
                };
                tx.append_request_body(&body);
                // The body now goes upstream from the buffer, with its length.
                head.headers.remove(header::TRANSFER_ENCODING);
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                head.framing = match body.len() {
                    0 => Framing::None,
                    n => Framing::Length(n as u64),
                };
                keep = !close;
                let mut all = body;
                all.extend_from_slice(&self.buf);
                self.buf = all;
            }
            tx.process_request_body();
            if crate::waf::blocks(waf, tx) {
                // An unread body would be taken for the next request.
                let keep = keep && head.framing == Framing::None;
                return self.waf_block(dp, stream, j, rid, keep).await;
            }
        }
        let affinity = affinity::of_request(&cluster.policy, &head.headers, info.peer);
        let admitted = match cluster.admit(&affinity) {
            Ok(a) => a,
            Err(refused) => {
                let resp = handler::refusal(dp, cluster, refused);
                return self.answer(stream, resp, rid, keep).await;
            }
        };
        self.upstream = Some(crate::recent::Upstream {
            cluster: cluster.clone(),
            endpoint: admitted.addr,
        });
        // The upstream request head.
        let ActionKind::Forward { rewrite, .. } = &routed.action.kind else {
            return (500, false);
        };
        let h = &mut head.headers;
        strip_hop_by_hop(h, false);
        if let Some(m) = &routed.action.request_headers {
            m.apply(h);
        }
        // Host stays as the client sent it, unless the route rewrites it.
        match rewrite
            .as_ref()
            .and_then(|r| r.hostname.as_deref())
            .map(HeaderValue::from_str)
        {
            None => {}
            Some(Ok(v)) => {
                h.insert(header::HOST, v);
            }
            Some(Err(_)) => {
                let resp = error(StatusCode::BAD_REQUEST, Reason::BadRequest, "invalid Host");
                return self.answer(stream, resp, rid, false).await;
            }
        }
        add_forwarded(h, info.peer.ip(), info.https);
        h.insert(X_REQUEST_ID.clone(), rid.clone());
        self.out.clear();
        self.out.extend_from_slice(head.method.as_str().as_bytes());
        self.out.push(b' ');
        match rewrite.as_ref().and_then(|r| r.path.as_ref()) {
            Some(m) => {
                let p = modify_path(&routed.path, m, routed.prefix_len);
                self.out.extend_from_slice(p.as_bytes());
            }
            None => self.out.extend_from_slice(routed.path.as_bytes()),
        }
        if let Some(q) = &routed.query {
            self.out.push(b'?');
            self.out.extend_from_slice(q.as_bytes());
        }
        self.out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in h.iter() {
            header_line(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
        }
        if head.framing == Framing::Chunked {
            header_line(&mut self.out, b"transfer-encoding", b"chunked");
        }
        self.out.extend_from_slice(b"\r\n");
        let head_len = self.out.len();

        let timeout = match routed.action.backend_timeout.or(routed.action.timeout) {
            Some(d) if d.is_zero() => Duration::from_secs(365 * 24 * 3600),
            Some(d) => d,
            None => dp.cfg.upstream_timeout,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let counters = &dp.metrics.counters;
        let upstream = Upstream {
            pool: &dp.upstreams.raw,
            cluster,
            endpoint: admitted.addr,
            connect_timeout: dp.cfg.connect_timeout,
        };
        // A reused connection the backend has closed meanwhile fails before any answer:
        // a request without a body is then sent again on a new connection.
        let mut fresh_only = false;
        let (mut lease, resp_head) = loop {
            let mut lease = match upstream.lease(fresh_only).await {
                Ok(l) => l,
                Err(e) => {
                    admitted
                        .guard
                        .outcome(matches!(e, UpstreamError::Overflow(_)));
                    counters
                        .upstream_errors_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let resp = match e {
                        UpstreamError::Overflow(o) => handler::overflow(dp, cluster, o),
                        _ => error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            Reason::ConnectFailed,
                            "upstream connect error",
                        ),
                    };
                    return self.answer(stream, resp, rid, keep).await;
                }
            };
            let reused = lease.1;
            let up = lease.0.conn();
            self.out.truncate(head_len);
            let sent = self.send_request(dp, stream, up, head.framing).await;
            let answer = match sent {
                Ok(()) => {
                    self.timer.set(deadline);
                    self.timer.run(read_response_head(up)).await
                }
                Err(SendError::Client) => {
                    // Nothing of an answer has gone out: say why (a client that left
                    // does not read it).
                    admitted.guard.outcome(true);
                    let resp = error(
                        StatusCode::BAD_REQUEST,
                        Reason::BadRequest,
                        "malformed or truncated request body",
                    );
                    return self.answer(stream, resp, rid, false).await;
                }
                Err(SendError::Slow) => {
                    // The upstream connection, with half a request on it, is dropped.
                    admitted.guard.outcome(true);
                    return self.too_slow(dp, stream, info, rid).await;
                }
                Err(SendError::TooLarge) => {
                    admitted.guard.outcome(true);
                    let resp = error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        Reason::BodyTooLarge,
                        "request body too large",
                    );
                    return self.answer(stream, resp, rid, false).await;
                }
                Err(SendError::Upstream) => Ok(Err(io::ErrorKind::ConnectionReset.into())),
            };
            match answer {
                Ok(Ok(rh)) => break (lease.0, rh),
                Ok(Err(e)) if stale(reused, head.framing == Framing::None, &e) => {
                    tracing::debug!(upstream = %admitted.addr, error = %e, "stale pooled connection; reconnecting");
                    fresh_only = true;
                }
                Ok(Err(e)) => {
                    admitted.guard.outcome(false);
                    counters
                        .upstream_errors_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(upstream = %admitted.addr, error = %e, "upstream request failed");
                    let resp = error(
                        StatusCode::BAD_GATEWAY,
                        Reason::UpstreamReset,
                        "upstream connection reset",
                    );
                    return self.answer(stream, resp, rid, false).await;
                }
                Err(_) => {
                    admitted.guard.outcome(false);
                    counters
                        .upstream_errors_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let resp = error(
                        StatusCode::GATEWAY_TIMEOUT,
                        Reason::UpstreamTimeout,
                        "upstream did not respond in time",
                    );
                    return self.answer(stream, resp, rid, false).await;
                }
            }
        };
        let status = resp_head.status;
        admitted.guard.outcome(status < 500);
        let framing = resp_head.framing(&head.method);
        if let Some(j) = judge.as_mut() {
            let (waf, tx) = (j.waf, &mut j.tx);
            let up = lease.conn();
            tx.x.status = status;
            tx.x.response_protocol = b"HTTP/1.1".to_vec();
            for (n, v) in &up.ranges {
                let pair = (up.buf[n.clone()].to_vec(), up.buf[v.clone()].to_vec());
                tx.x.response_headers.push(pair);
            }
            tx.process_response_headers();
            let limit = waf.rules.response_body_limit.unwrap_or(512 * 1024);
            let content_type = tx.x.response_header(b"content-type").unwrap_or(b"");
            let inspect = !crate::waf::blocks(waf, tx)
                && waf.inspect_responses
                && tx.response_body_access()
                && tx.inspects_response_type(content_type);
            // Response bodies within the limit are read ahead and inspected, then relayed
            // as they came; larger ones, and those that run to the close, stream
            // through unread.
            match (inspect, framing) {
                (true, Framing::Length(n)) if n <= limit => {
                    let end = resp_head.len + n as usize;
                    while up.buf.len() < end {
                        up.buf.reserve(16 * 1024);
                        match up.stream.read_buf(&mut up.buf).await {
                            Ok(0) | Err(_) => return (502, false),
                            Ok(_) => {}
                        }
                    }
                    tx.append_response_body(&up.buf[resp_head.len..end]);
                    tx.process_response_body();
                }
                (true, Framing::Chunked) => {
                    let cap = resp_head.len + 2 * limit as usize + 16 * 1024;
                    match chunked_end(&mut up.buf, resp_head.len, &mut up.stream, cap, None).await {
                        ChunkedEnd::Done(end) => {
                            let body = dechunk(&up.buf[resp_head.len..end]);
                            tx.append_response_body(&body);
                            tx.process_response_body();
                        }
                        ChunkedEnd::Closed | ChunkedEnd::Slow => return (502, false),
                        // Too large or malformed: relayed unread, as it came.
                        ChunkedEnd::TooLarge | ChunkedEnd::Malformed => {}
                    }
                }
                _ => {}
            }
            if crate::waf::blocks(waf, tx) {
                // The upstream answer is dropped unread, with its connection.
                drop(lease);
                return self.waf_block(dp, stream, j, rid, !close).await;
            }
            // Logged before the client has its answer (phase 5 runs now: everything
            // it may read is known).
            j.finish(dp, rid);
        }
        // The response head for the client.
        let up = lease.conn();
        let close_after = close || framing == Framing::Close || *dp.shutdown.borrow();
        self.out.clear();
        write_response_head(
            &mut self.out,
            &up.buf[..resp_head.len],
            &resp_head,
            &up.ranges,
            routed.action.response_headers.as_deref(),
        );
        bytes::Buf::advance(&mut up.buf, resp_head.len);
        header_line(&mut self.out, b"x-request-id", rid.as_bytes());
        if let (Some(token), Some(s)) = (admitted.set_session, &cluster.policy.session) {
            if let Some(v) = affinity::session_cookie(s, token) {
                header_line(&mut self.out, b"set-cookie", v.as_bytes());
            }
        }
        if close_after {
            header_line(&mut self.out, b"connection", b"close");
        }
        self.out.extend_from_slice(b"\r\n");
        // The body, as framed upstream.
        let complete = self.relay_body(stream, up, framing).await;
        drop(admitted.guard);
        match complete {
            Ok(clean) => {
                if clean && resp_head.keep_alive && framing != Framing::Close {
                    // An idle connection keeps a small buffer, whatever it carried.
                    let up = lease.conn();
                    if up.buf.capacity() > 32 * 1024 {
                        up.buf = BytesMut::with_capacity(4 * 1024);
                    }
                    lease.release();
                }
                (status, !close_after)
            }
            Err(()) => (status, false),
        }
    }

    /// Answers 408 to a client whose request body came too slowly, and closes.
    async fn too_slow<S: Io>(
        &mut self,
        dp: &DataPlane,
        stream: &mut S,
        info: &ConnInfo,
        rid: &HeaderValue,
    ) -> (u16, bool) {
        crate::pace::record_slow(dp, info.peer, rid);
        let resp = error(
            StatusCode::REQUEST_TIMEOUT,
            Reason::BodyTimeout,
            "request body too slow",
        );
        self.answer(stream, resp, rid, false).await
    }

    /// Answers with the WAF's blocking response (logged first), or closes the
    /// connection for `drop`.
    async fn waf_block<S: Io>(
        &mut self,
        dp: &DataPlane,
        stream: &mut S,
        j: &mut Judge<'_, '_>,
        rid: &HeaderValue,
        keep: bool,
    ) -> (u16, bool) {
        j.finish(dp, rid);
        let resp = match j.tx.interruption() {
            // `drop`: the connection closes with no answer at all.
            Some(i) if i.action == gatehouse_security::InterruptAction::Drop => {
                return (i.status, false)
            }
            Some(i) => crate::waf::blocked(j.waf, i, rid),
            None => return (500, false),
        };
        self.answer(stream, resp, rid, keep).await
    }

    /// Reads a whole request body (de-chunked) for inspection, bounded by the largest
    /// body accepted.
    async fn read_body<S: Io>(
        &mut self,
        dp: &DataPlane,
        client: &mut S,
        framing: Framing,
    ) -> Result<BytesMut, SendError> {
        match framing {
            Framing::Length(n) => {
                let n = n as usize;
                let mut pace = dp.cfg.body_pace();
                while self.buf.len() < n {
                    self.buf.reserve((n - self.buf.len()).min(64 * 1024));
                    paced_read(client, &mut self.buf, &mut pace).await?;
                }
                Ok(self.buf.split_to(n))
            }
            Framing::Chunked => {
                let cap = dp.cfg.max_body_bytes as usize;
                let mut pace = dp.cfg.body_pace();
                match chunked_end(&mut self.buf, 0, client, cap, Some(&mut pace)).await {
                    ChunkedEnd::Done(end) => {
                        let raw = self.buf.split_to(end);
                        Ok(BytesMut::from(Bytes::from(dechunk(&raw))))
                    }
                    ChunkedEnd::TooLarge => Err(SendError::TooLarge),
                    ChunkedEnd::Slow => Err(SendError::Slow),
                    ChunkedEnd::Malformed | ChunkedEnd::Closed => Err(SendError::Client),
                }
            }
            Framing::None | Framing::Close => Ok(BytesMut::new()),
        }
    }

    /// Writes the request (head in `out`, then its body) upstream.
    async fn send_request<S: Io>(
        &mut self,
        dp: &DataPlane,
        client: &mut S,
        up: &mut RawConn,
        framing: Framing,
    ) -> Result<(), SendError> {
        match framing {
            Framing::None | Framing::Close => up
                .stream
                .write_all(&self.out)
                .await
                .map_err(|_| SendError::Upstream),
            Framing::Length(n) => {
                let mut left = n;
                let first = (left as usize).min(self.buf.len());
                self.out.extend_from_slice(&self.buf.split_to(first));
                left -= first as u64;
                up.stream
                    .write_all(&self.out)
                    .await
                    .map_err(|_| SendError::Upstream)?;
                let mut pace = dp.cfg.body_pace();
                while left > 0 {
                    self.buf.reserve(16 * 1024);
                    paced_read(client, &mut self.buf, &mut pace).await?;
                    let take = (left as usize).min(self.buf.len());
                    let chunk = self.buf.split_to(take);
                    left -= take as u64;
                    up.stream
                        .write_all(&chunk)
                        .await
                        .map_err(|_| SendError::Upstream)?;
                }
                Ok(())
            }
            Framing::Chunked => {
                let mut scanner = ChunkedScanner::default();
                let mut total = 0u64;
                let mut pace = dp.cfg.body_pace();
                loop {
                    let n = scanner.scan(&self.buf).map_err(|_| SendError::Client)?;
                    total += n as u64;
                    if total > dp.cfg.max_body_bytes {
                        return Err(SendError::TooLarge);
                    }
                    self.out.extend_from_slice(&self.buf.split_to(n));
                    up.stream
                        .write_all(&self.out)
                        .await
                        .map_err(|_| SendError::Upstream)?;
                    self.out.clear();
                    if scanner.is_done() {
                        return Ok(());
                    }
                    self.buf.reserve(16 * 1024);
                    paced_read(client, &mut self.buf, &mut pace).await?;
                }
            }
        }
    }

    /// Sends the response head in `out` and the body as framed upstream. Ok(true):
    /// the body ended where its framing said, and the upstream connection may serve
    /// again; Err: the client went away.
    async fn relay_body<S: Io>(
        &mut self,
        client: &mut S,
        up: &mut RawConn,
        framing: Framing,
    ) -> Result<bool, ()> {
        match framing {
            Framing::None => {
                send_all(client, &self.out).await.map_err(|_| ())?;
                Ok(up.buf.is_empty())
            }
            Framing::Length(n) => {
                self.sent = n;
                let mut left = n;
                let first = (left as usize).min(up.buf.len());
                self.out.extend_from_slice(&up.buf.split_to(first));
                left -= first as u64;
                send_all(client, &self.out).await.map_err(|_| ())?;
                while left > 0 {
                    up.buf.reserve(16 * 1024);
                    match up.stream.read_buf(&mut up.buf).await {
                        Ok(0) | Err(_) => return Err(()),
                        Ok(_) => {}
                    }
                    let take = (left as usize).min(up.buf.len());
                    let chunk = up.buf.split_to(take);
                    left -= take as u64;
                    send_all(client, &chunk).await.map_err(|_| ())?;
                }
                Ok(up.buf.is_empty())
            }
            Framing::Chunked => {
                let mut scanner = ChunkedScanner::default();
                loop {
                    let n = scanner.scan(&up.buf).map_err(|_| ())?;
                    self.sent += n as u64;
                    self.out.extend_from_slice(&up.buf.split_to(n));
                    send_all(client, &self.out).await.map_err(|_| ())?;
                    self.out.clear();
                    if scanner.is_done() {
                        return Ok(up.buf.is_empty());
                    }
                    up.buf.reserve(16 * 1024);
                    match up.stream.read_buf(&mut up.buf).await {
                        Ok(0) | Err(_) => return Err(()),
                        Ok(_) => {}
                    }
                }
            }
            Framing::Close => {
                self.sent = up.buf.len() as u64;
                self.out.extend_from_slice(&up.buf.split());
                send_all(client, &self.out).await.map_err(|_| ())?;
                loop {
                    up.buf.reserve(16 * 1024);
                    match up.stream.read_buf(&mut up.buf).await {
                        Ok(0) | Err(_) => return Ok(false),
                        Ok(_) => {}
                    }
                    let chunk = up.buf.split();
                    self.sent += chunk.len() as u64;
                    send_all(client, &chunk).await.map_err(|_| ())?;
                }
            }
        }
    }
}

/// How reading a chunked body ahead ended.
enum ChunkedEnd {
    /// Complete: it ends at this offset of the buffer.
    Done(usize),
    /// The buffer grew past its cap first.
    TooLarge,
    Malformed,
    /// The stream ended or failed first.
    Closed,
    /// The client sent the body too slowly.
    Slow,
}

/// Reads from `src` into `buf` until the chunked body that starts at `buf[from..]` is
/// complete, without consuming it.
async fn chunked_end<R: tokio::io::AsyncRead + Unpin>(
    buf: &mut BytesMut,
    from: usize,
    src: &mut R,
    cap: usize,
    mut pace: Option<&mut BodyPace>,
) -> ChunkedEnd {
    let mut scanner = ChunkedScanner::default();
    let mut end = from;
    loop {
        match scanner.scan(&buf[end..]) {
            Ok(n) => end += n,
            Err(_) => return ChunkedEnd::Malformed,
        }
        if scanner.is_done() {
            return ChunkedEnd::Done(end);
        }
        if buf.len() > cap {
            return ChunkedEnd::TooLarge;
        }
        buf.reserve(16 * 1024);
        let read = match pace.as_deref_mut() {
            Some(p) => paced_read(src, buf, p).await,
            None => match src.read_buf(buf).await {
                Ok(0) | Err(_) => Err(SendError::Client),
                Ok(n) => Ok(n),
            },
        };
        match read {
            Ok(_) => {}
            Err(SendError::Slow) => return ChunkedEnd::Slow,
            Err(_) => return ChunkedEnd::Closed,
        }
    }
}

/// One read of request body bytes from the client, within the body's pace.
async fn paced_read<R: tokio::io::AsyncRead + Unpin>(
    client: &mut R,
    buf: &mut BytesMut,
    pace: &mut BodyPace,
) -> Result<usize, SendError> {
    let started = tokio::time::Instant::now();
    match tokio::time::timeout(pace.budget(), client.read_buf(buf)).await {
        Err(_) => Err(SendError::Slow),
        Ok(Ok(0)) | Ok(Err(_)) => Err(SendError::Client),
        Ok(Ok(n)) => {
            pace.read(n, started.elapsed());
            Ok(n)
        }
    }
}

/// The data of a complete chunked body.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut scanner = ChunkedScanner::default();
    let mut at = 0;
    while at < raw.len() && !scanner.is_done() {
        match scanner.decode(&raw[at..]) {
            Ok((used, data)) => {
                if let Some(r) = data {
                    out.extend_from_slice(&raw[at + r.start..at + r.end]);
                }
                if used == 0 {
                    break;
                }
                at += used;
            }
            Err(_) => break,
        }
    }
    out
}

/// Whether `e`, on a connection taken from the pool, means the backend had closed it
/// while idle (so a request that can be sent again should go on a new connection)
/// rather than that it answered badly.
pub(crate) fn stale(reused: bool, replayable: bool, e: &io::Error) -> bool {
    reused && replayable && e.kind() != io::ErrorKind::InvalidData
}

/// Why sending a request upstream stopped.
enum SendError {
    /// The client's body broke off or was malformed.
    Client,
    /// The client's body came too slowly (`BodyPace`).
    Slow,
    /// The client's body is over the limit.
    TooLarge,
    /// The upstream connection failed.
    Upstream,
}

/// Where an upstream request goes.
pub(crate) struct Upstream<'a> {
    pub(crate) pool: &'a RawPool,
    pub(crate) cluster: &'a Cluster,
    pub(crate) endpoint: SocketAddr,
    pub(crate) connect_timeout: Duration,
}

impl Upstream<'_> {
    /// A connection for one exchange, and whether it was reused.
    pub(crate) async fn lease(
        &self,
        fresh_only: bool,
    ) -> Result<(Lease<RawConn>, bool), UpstreamError> {
        loop {
            let (acquired, key) = self
                .pool
                .acquire(self.cluster, self.endpoint)
                .await
                .map_err(UpstreamError::Overflow)?;
            match acquired {
                Acquired::Idle(_) if fresh_only => continue,
                Acquired::Idle(p) => return Ok((self.pool.lease(p, key), true)),
                Acquired::New(slot) => {
                    let stream =
                        crate::upstream::connect(self.endpoint, self.connect_timeout).await?;
                    let conn = RawConn {
                        stream,
                        buf: BytesMut::with_capacity(4 * 1024),
                        ranges: Vec::with_capacity(16),
                    };
                    return Ok((self.pool.lease(Pooled::new(conn, slot), key), false));
                }
            }
        }
    }
}

/// A parsed upstream response head (its bytes stay at the front of the buffer).
pub(crate) struct ResponseHead {
    pub(crate) len: usize,
    pub(crate) status: u16,
    reason: std::ops::Range<usize>,
    length: Option<u64>,
    chunked: bool,
    /// Some transfer coding other than a final chunked: the body runs to the close.
    other_coding: bool,
    pub(crate) keep_alive: bool,
}

impl ResponseHead {
    pub(crate) fn framing(&self, method: &Method) -> Framing {
        if method == Method::HEAD || self.status == 204 || self.status == 304 {
            return Framing::None;
        }
        match (self.chunked, self.other_coding, self.length) {
            (true, _, _) => Framing::Chunked,
            (false, true, _) => Framing::Close,
            (false, false, Some(0)) => Framing::None,
            (false, false, Some(n)) => Framing::Length(n),
            (false, false, None) => Framing::Close,
        }
    }
}

/// Reads a final (non-1xx) response head into `up.buf`.
pub(crate) async fn read_response_head(up: &mut RawConn) -> io::Result<ResponseHead> {
    loop {
        if !up.buf.is_empty() {
            match parse_response_head(&up.buf, &mut up.ranges)? {
                Some(h) if (100..200).contains(&h.status) => {
                    // 1xx (e.g. 103 Early Hints): not passed on.
                    let _ = up.buf.split_to(h.len);
                    continue;
                }
                Some(h) => return Ok(h),
                None if up.buf.len() > 64 * 1024 => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "response head too large",
                    ))
                }
                None => {}
            }
        }
        up.buf.reserve(4 * 1024);
        if up.stream.read_buf(&mut up.buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Parses a response head at the start of `buf`; its headers' places go to `ranges`.
fn parse_response_head(
    buf: &[u8],
    ranges: &mut Vec<HeaderRange>,
) -> io::Result<Option<ResponseHead>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(&e.to_string())),
    };
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let status = resp.code.ok_or_else(|| bad("no status"))?;
    let reason = resp.reason.unwrap_or("");
    let reason = offset(reason.as_bytes())..offset(reason.as_bytes()) + reason.len();
    let mut head = ResponseHead {
        len,
        status,
        reason: if reason.is_empty() { 0..0 } else { reason },
        length: None,
        chunked: false,
        other_coding: false,
        keep_alive: resp.version == Some(1),
    };
    ranges.clear();
    for h in resp.headers.iter() {
        let name = offset(h.name.as_bytes());
        let value = offset(h.value);
        ranges.push((name..name + h.name.len(), value..value + h.value.len()));
        let n = h.name.as_bytes();
        if n.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("bad content-length"))?;
            if head.length.is_some_and(|l| l != v) {
                return Err(bad("conflicting content-length"));
            }
            head.length = Some(v);
        } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            head.chunked = last.eq_ignore_ascii_case(b"chunked");
            head.other_coding = !head.chunked;
        } else if n.eq_ignore_ascii_case(b"connection") {
            for t in h.value.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                    head.keep_alive = true;
                }
            }
        }
    }
    Ok(Some(head))
}

/// Response headers not passed on: hop-by-hop ones (RFC 9110 §7.6.1, besides those
/// Connection names) and the backend's X-Request-Id (ours replaces it).
/// Transfer-Encoding stays: the body's framing is passed through as is.
fn dropped_from_response(name: &[u8]) -> bool {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) || name.eq_ignore_ascii_case(b"x-request-id")
}

/// The client's response head (without the final CRLF) from the upstream one: hop-by-hop
/// headers dropped, the route's response header changes applied.
fn write_response_head(
    out: &mut Vec<u8>,
    raw: &[u8],
    head: &ResponseHead,
    headers: &[HeaderRange],
    modifier: Option<&gatehouse_translate::HeaderModifier>,
) {
    let reason = match head.reason.is_empty() {
        true => StatusCode::from_u16(head.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
            .as_bytes(),
        false => &raw[head.reason.clone()],
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa_buf(head.status as u64).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    // Names that Connection lists are hop-by-hop too.
    let listed = |name: &[u8]| {
        headers.iter().any(|(n, v)| {
            raw[n.clone()].eq_ignore_ascii_case(b"connection")
                && raw[v.clone()]
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
        })
    };
    let kept = headers
        .iter()
        .map(|(n, v)| (&raw[n.clone()], &raw[v.clone()]))
        .filter(|(n, _)| !dropped_from_response(n) && !listed(n));
    match modifier {
        None => {
            for (n, v) in kept {
                header_line(out, n, v);
            }
        }
        Some(m) => {
            let mut map = HeaderMap::new();
            for (n, v) in kept {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                    map.append(n, v);
                }
            }
            m.apply(&mut map);
            for (n, v) in &map {
                header_line(out, n.as_str().as_bytes(), v.as_bytes());
            }
        }
    }
}

/// Writes `bytes` to the client and flushes (a TLS stream may hold them otherwise).
async fn send_all<S: Io>(client: &mut S, bytes: &[u8]) -> io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa_buf(status as u64).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A number in decimal, without allocating.
fn itoa_buf(mut n: u64) -> Digits {
    let mut d = Digits {
        buf: [0; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.buf[d.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    d
}

struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_framing_follows_rfc_9112() {
        let mut ranges = Vec::new();
        let mut h = |raw: &[u8]| {
            parse_response_head(raw, &mut ranges)
                .expect("valid")
                .expect("complete")
        };
        let get = Method::GET;
        let r = h(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        assert_eq!((r.framing(&get), r.keep_alive), (Framing::Length(5), true));
        assert_eq!(r.framing(&Method::HEAD), Framing::None);
        let r = h(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(r.framing(&get), Framing::Chunked);
        let r = h(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(r.framing(&get), Framing::Close);
        let r = h(b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(r.framing(&get), Framing::None);
        let r = h(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((r.framing(&get), r.keep_alive), (Framing::Close, false));
        let r = h(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n");
        assert!(!r.keep_alive);
        let mut ranges = Vec::new();
        assert!(parse_response_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            &mut ranges
        )
        .is_err());
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-le", &mut ranges)
                .expect("partial")
                .is_none()
        );
    }

    #[test]
    fn response_heads_drop_hop_by_hop_headers() {
        let raw = b"HTTP/1.1 200 Fine\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\nKeep-Alive: timeout=5\r\nx-request-id: theirs\r\ncontent-length: 2\r\nx-app: yes\r\n\r\n";
        let mut ranges = Vec::new();
        let head = parse_response_head(raw, &mut ranges)
            .expect("valid")
            .expect("complete");
        let mut out = Vec::new();
        write_response_head(&mut out, raw, &head, &ranges, None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 Fine\r\ncontent-length: 2\r\nx-app: yes\r\n"
        );
    }

    #[test]
    fn digits() {
        assert_eq!(itoa_buf(0).as_bytes(), b"0");
        assert_eq!(itoa_buf(1234567).as_bytes(), b"1234567");
    }
}
