//! The web application firewall on the request path. A route with a WAF policy runs
//! each exchange through a [`Transaction`] of its compiled rule set: request line and
//! headers (phase 1), the request body buffered up to the policy's limit (phase 2),
//! then the upstream's response headers (3) and, when the policy inspects responses,
//! its body (4). A disruptive verdict in blocking mode answers in place of the
//! backend (403 with the request id, or the policy's own response); every match is
//! logged in ModSecurity's error-log form and as a JSON audit event.

use crate::body::{self, Body, RequestBody};
use crate::dataplane::DataPlane;
use crate::handler::{ConnInfo, Routed};
use bytes::Bytes;
use gatehouse_security::exchange::Peer;
use gatehouse_security::transaction::{InterruptAction, Interruption, Transaction};
pub use gatehouse_security::Transaction as WafTransaction;
use gatehouse_translate::waf::{WafMode, WafPolicy};
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use std::sync::Arc;

/// Runs `req` through `waf`, forwarding it with `fwd` if the WAF lets it through.
pub async fn guard(
    dp: &Arc<DataPlane>,
    conn: &Arc<ConnInfo>,
    rid: &HeaderValue,
    waf: &Arc<WafPolicy>,
    fwd: Routed<'static>,
    req: Request<RequestBody>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let target = match parts.uri.path_and_query() {
        Some(pq) if parts.uri.scheme().is_none() => pq.as_str().to_string(),
        _ => parts.uri.to_string(),
    };
    // Header names come lower case from hyper: the rules see them in canonical form
    // (`User-Agent`), as behind Go's HTTP server.
    let headers: Vec<(Vec<u8>, &[u8])> = parts
        .headers
        .iter()
        .map(|(k, v)| (canonical(k.as_str()), v.as_bytes()))
        .collect();
    let mut tx = begin(
        waf,
        conn,
        rid,
        parts.method.as_str().as_bytes(),
        target.as_bytes(),
        version(parts.version),
        headers.iter().map(|(k, v)| (k.as_slice(), *v)),
    );
    if parts.version == Version::HTTP_2 && tx.x.header(b"host").is_none() {
        if let Some(a) = parts.uri.authority() {
            tx.x.add_header(b"host", a.as_str().as_bytes());
        }
    }
    tx.process_request_headers();
    if blocks(waf, &tx) {
        return finish(dp, waf, &mut tx, rid, None);
    }
    let body = match inspect_request_body(&mut tx, body).await {
        Ok(b) => b,
        Err(resp) => {
            conclude(dp, waf, &mut tx, rid);
            return resp;
        }
    };
    tx.process_request_body();
    if blocks(waf, &tx) {
        return finish(dp, waf, &mut tx, rid, None);
    }
    let req = Request::from_parts(parts, body);
    let resp = fwd.send(dp, conn, rid, req).await;
    let (rparts, rbody) = resp.into_parts();
    tx.x.status = rparts.status.as_u16();
    tx.x.response_protocol = version(rparts.version).to_vec();
    for (k, v) in &rparts.headers {
        tx.x.response_headers
            .push((k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    tx.process_response_headers();
    if blocks(waf, &tx) {
        return finish(dp, waf, &mut tx, rid, None);
    }
    let inspect = waf.inspect_responses
        && tx.response_body_access()
        && tx.inspects_response_type(
            rparts
                .headers
                .get(header::CONTENT_TYPE)
                .map_or(&b""[..], |v| v.as_bytes()),
        );
    let rbody = if inspect {
        let Buffered { kept, rest, .. } =
            buffer(rbody, |chunk| tx.append_response_body(chunk)).await;
        tx.process_response_body();
        if blocks(waf, &tx) {
            return finish(dp, waf, &mut tx, rid, None);
        }
        match rest {
            Some(rest) => Prefixed::new(kept, rest).boxed_unsync(),
            None => body::full(kept),
        }
    } else {
        rbody
    };
    finish(
        dp,
        waf,
        &mut tx,
        rid,
        Some(Response::from_parts(rparts, rbody)),
    )
}

/// A transaction for one request of `conn`, its request line and headers filled.
pub(crate) fn begin<'w, 'w2>(
    waf: &'w WafPolicy,
    conn: &ConnInfo,
    rid: &HeaderValue,
    method: &[u8],
    target: &[u8],
    protocol: &[u8],
    headers: impl Iterator<Item = (&'w2 [u8], &'w2 [u8])>,
) -> Transaction<'w> {
    let peer = Peer {
        remote_addr: conn.peer.ip().to_string(),
        remote_port: conn.peer.port(),
        server_addr: conn.listener.ip().to_string(),
        server_port: conn.listener.port(),
        unique_id: String::from_utf8_lossy(rid.as_bytes()).into_owned(),
    };
    let mut tx = Transaction::new(&waf.rules, peer);
    tx.x.set_request_line(method, target, protocol);
    for (k, v) in headers {
        tx.x.add_header(k, v);
    }
    tx
}

/// `user-agent` as `User-Agent`.
fn canonical(name: &str) -> Vec<u8> {
    let mut upper = true;
    name.bytes()
        .map(|b| {
            let c = if upper { b.to_ascii_uppercase() } else { b };
            upper = b == b'-';
            c
        })
        .collect()
}

/// The header lines of a raw HTTP/1 head, names as the client wrote them.
pub(crate) fn raw_headers(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.split(|&b| b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let i = l.iter().position(|&b| b == b':')?;
            Some((&l[..i], l[i + 1..].trim_ascii()))
        })
}

/// Whether the WAF answers in place of the backend.
pub(crate) fn blocks(waf: &WafPolicy, tx: &Transaction<'_>) -> bool {
    waf.mode == WafMode::Blocking && tx.interruption().is_some()
}

fn version(v: Version) -> &'static [u8] {
    match v {
        Version::HTTP_09 => b"HTTP/0.9",
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_2 => b"HTTP/2.0",
        Version::HTTP_3 => b"HTTP/3.0",
        _ => b"HTTP/1.1",
    }
}

/// Buffers the request body for phase 2, up to the rule set's limit; returns the body
/// to forward (the buffered bytes, then whatever was not read).
async fn inspect_request_body(
    tx: &mut Transaction<'_>,
    body: RequestBody,
) -> Result<RequestBody, Response<Body>> {
    use http_body::Body as _;
    if !tx.request_body_access() || body.is_end_stream() {
        return Ok(body);
    }
    let Buffered { kept, rest, failed } = buffer(body, |chunk| tx.append_request_body(chunk)).await;
    if let Some(Interruption { status, .. }) = tx.interruption() {
        let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::PAYLOAD_TOO_LARGE);
        return Err(crate::handler::error(
            code,
            crate::reason::Reason::BodyTooLarge,
            "request body larger than the WAF inspects",
        ));
    }
    if failed {
        return Err(crate::handler::error(
            StatusCode::BAD_REQUEST,
            crate::reason::Reason::BadRequest,
            "request body could not be read",
        ));
    }
    let rest = rest.unwrap_or(RequestBody::Empty);
    Ok(RequestBody::Prefixed(Box::new(Prefixed::new(kept, rest))))
}

/// What [`buffer`] read.
struct Buffered<B> {
    kept: Bytes,
    /// The unread rest, if reading stopped before the end.
    rest: Option<B>,
    failed: bool,
}

/// Reads `body` while `take` accepts more.
async fn buffer<B>(mut body: B, mut take: impl FnMut(&[u8]) -> bool) -> Buffered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut kept = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    kept.extend_from_slice(&data);
                    if !take(&data) {
                        return Buffered {
                            kept: kept.freeze(),
                            rest: Some(body),
                            failed: false,
                        };
                    }
                }
            }
            Some(Err(_)) => {
                return Buffered {
                    kept: kept.freeze(),
                    rest: None,
                    failed: true,
                }
            }
            None => {
                return Buffered {
                    kept: kept.freeze(),
                    rest: None,
                    failed: false,
                }
            }
        }
    }
}

/// Logs the transaction and answers: the blocking response if there is an
/// interruption, else `resp`.
fn finish(
    dp: &DataPlane,
    waf: &WafPolicy,
    tx: &mut Transaction<'_>,
    rid: &HeaderValue,
    resp: Option<Response<Body>>,
) -> Response<Body> {
    conclude(dp, waf, tx, rid);
    match (tx.interruption(), resp) {
        (Some(i), _) if waf.mode == WafMode::Blocking => blocked(waf, i, rid),
        (_, Some(r)) => r,
        (_, None) => crate::handler::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::reason::Reason::UpstreamReset,
            "no response",
        ),
    }
}

/// Runs phase 5 and writes the transaction's logs (once, at its end).
pub(crate) fn conclude(
    dp: &DataPlane,
    waf: &WafPolicy,
    tx: &mut Transaction<'_>,
    rid: &HeaderValue,
) {
    tx.process_logging();
    log(dp, waf, tx, rid);
}

/// The response to a blocked request.
pub(crate) fn blocked(waf: &WafPolicy, i: &Interruption, rid: &HeaderValue) -> Response<Body> {
    let resp = blocked_response(waf, i, rid);
    crate::reason::with_reason(resp, crate::reason::Reason::Waf(i.rule_id.unwrap_or(0)))
}

fn blocked_response(waf: &WafPolicy, i: &Interruption, rid: &HeaderValue) -> Response<Body> {
    let id = String::from_utf8_lossy(rid.as_bytes());
    let mut resp = match &i.action {
        InterruptAction::Redirect(to) => {
            let mut r = Response::new(body::empty());
            if let Ok(v) = HeaderValue::from_str(to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            *r.status_mut() = StatusCode::from_u16(i.status).unwrap_or(StatusCode::FOUND);
            return r;
        }
        _ => {
            let status = match (i.rule_id, i.status) {
                // A rule's own status (e.g. 400 for a body that does not parse) wins
                // over the policy's block status only when it is not the default.
                (Some(_), s) if s != 403 => s,
                _ => waf.block_status,
            };
            let text = match &waf.block_body {
                Some(b) => b.replace("{request_id}", &id),
                None => format!(
                    "{status} {}: request blocked by the web application firewall (request id {id})\n",
                    StatusCode::from_u16(status).map_or("", |s| s.canonical_reason().unwrap_or(""))
                ),
            };
            let mut r = Response::new(body::full(text));
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            r
        }
    };
    if let Ok(ct) = HeaderValue::from_str(&waf.block_content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if matches!(i.action, InterruptAction::Drop) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Writes the error-log lines and the audit event of a transaction that matched.
fn log(dp: &DataPlane, waf: &WafPolicy, tx: &Transaction<'_>, rid: &HeaderValue) {
    let matched = tx.matched();
    if matched.is_empty() {
        return;
    }
    let id = String::from_utf8_lossy(rid.as_bytes());
    let host =
        tx.x.header(b"host")
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
    let client = &tx.x.peer.remote_addr;
    let blocked = blocks(waf, tx);
    for m in matched {
        let line = m.log_line(client, &host, &tx.x.uri, &id);
        match &dp.security_logs.error {
            Some(f) => f.write(line),
            None => tracing::warn!(target: "gatehouse::waf", "{line}"),
        }
    }
    if let Some(audit) = &dp.security_logs.audit {
        let score = |k: &str| {
            tx.tx(k)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        let event = serde_json::json!({
            "time": crate::security_log::now_ms(),
            "request_id": id,
            "client": format!("{}:{}", client, tx.x.peer.remote_port),
            "host": host,
            "method": String::from_utf8_lossy(&tx.x.method),
            "uri": String::from_utf8_lossy(&tx.x.uri),
            "policy": waf.from,
            "mode": match waf.mode { WafMode::Blocking => "Blocking", WafMode::DetectionOnly => "DetectionOnly" },
            "action": if blocked { "blocked" } else { "logged" },
            "status": tx.interruption().map(|i| i.status),
            "inbound_anomaly_score": score("blocking_inbound_anomaly_score"),
            "outbound_anomaly_score": score("blocking_outbound_anomaly_score"),
            "matches": matched.iter().map(|m| m.json()).collect::<Vec<_>>(),
        });
        audit.write(event.to_string());
    }
}

/// A body that yields some bytes already read, then the rest of another body.
pub struct Prefixed<B> {
    head: Option<Bytes>,
    rest: B,
}

impl<B> Prefixed<B> {
    pub fn new(head: Bytes, rest: B) -> Self {
        Prefixed {
            head: (!head.is_empty()).then_some(head),
            rest,
        }
    }
}

impl<B> http_body::Body for Prefixed<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(h) = this.head.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(h))));
        }
        std::pin::Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(u) = rest.upper() {
            hint.set_upper(u + head);
        }
        hint
    }
}
