//! W3C Trace Context and OpenTelemetry spans. With tracing on, each request becomes a
//! span of the proxy's: a `traceparent` that arrives well formed is continued (same
//! trace, its span as our parent, its sampled flag kept); anything else starts a new
//! trace, sampled at the configured ratio. The request goes upstream with our span as
//! the parent, so the backend's spans hang under the proxy's.
//!
//! Sampled spans are exported over OTLP/HTTP (JSON encoding) to `--otlp-endpoint`, in
//! batches, by a task of their own: a request only hands its span to a bounded queue
//! (a full queue drops spans, counted, rather than slow a request).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Spans queued for export at most.
const QUEUE: usize = 8192;
/// Spans per export request at most, and the longest a span waits.
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The ids of one request's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, when the request continued a trace.
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
}

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0xf) as usize]);
    }
}

fn hex_string(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    hex(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = (digit(s[2 * i])? << 4) | digit(s[2 * i + 1])?;
    }
    Some(out)
}

impl TraceIds {
    /// The trace id in hex.
    pub fn trace_hex(&self) -> String {
        hex_string(&self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        hex_string(&self.span_id)
    }

    /// The `traceparent` naming this span as the parent of what comes next.
    pub fn header(&self) -> HeaderValue {
        let mut v = Vec::with_capacity(55);
        v.extend_from_slice(b"00-");
        hex(&self.trace_id, &mut v);
        v.push(b'-');
        hex(&self.span_id, &mut v);
        v.extend_from_slice(if self.sampled { b"-01" } else { b"-00" });
        HeaderValue::from_bytes(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A well-formed `traceparent` (version 00, or a later version read as 00): trace id,
/// parent span id, sampled. All-zero ids are invalid.
pub fn parse(v: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    if version == 0xff
        || (version == 0 && v.len() != 55)
        || (version > 0 && v.len() > 55 && v[55] != b'-')
    {
        return None;
    }
    let trace = unhex::<16>(&v[3..35])?;
    let parent = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags & 1 == 1))
}

/// One finished span, as the exporter sends it.
#[derive(Debug)]
pub struct Span {
    pub ids: TraceIds,
    pub name: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub method: String,
    pub host: String,
    pub target: String,
    pub status: u16,
    pub reason: &'static str,
    pub route: Option<Arc<str>>,
    pub upstream: Option<(String, String)>,
    pub client: IpAddr,
    pub protocol: &'static str,
}

impl Span {
    /// The span of a finished request (`host` and `path` whole, where the record keeps
    /// their start).
    pub fn of(seen: &crate::recent::Seen, ids: TraceIds, host: &str, path: &str) -> Span {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let host = match host.is_empty() {
            true => seen.host.text(),
            false => host.to_string(),
        };
        let target = match path.is_empty() {
            true => seen.target.text(),
            false => path.to_string(),
        };
        Span {
            ids,
            name: match &seen.route {
                Some(r) => format!("{} {r}", seen.method),
                None => seen.method.to_string(),
            },
            start_unix_nanos: end.saturating_sub(seen.duration_us * 1000),
            end_unix_nanos: end,
            method: seen.method.to_string(),
            host,
            target,
            status: seen.status,
            reason: seen.reason.code(),
            route: seen.route.clone(),
            upstream: seen
                .upstream
                .as_ref()
                .map(|u| (u.cluster.name.clone(), u.endpoint.to_string())),
            client: seen.client,
            protocol: seen.protocol,
        }
    }

    fn json(&self) -> Value {
        let s = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
        let mut attributes = vec![
            s("http.request.method", &self.method),
            s("url.path", self.target.split('?').next().unwrap_or("")),
            s("server.address", &self.host),
            json!({"key": "http.response.status_code", "value": {"intValue": self.status.to_string()}}),
            s("client.address", &self.client.to_string()),
            s("network.protocol.name", self.protocol),
            s("gatehouse.reason", self.reason),
        ];
        if let Some(r) = &self.route {
            attributes.push(s("gatehouse.route", r));
        }
        if let Some((cluster, endpoint)) = &self.upstream {
            attributes.push(s("gatehouse.upstream.cluster", cluster));
            attributes.push(s("gatehouse.upstream.address", endpoint));
        }
        let mut v = json!({
            "traceId": self.ids.trace_hex(),
            "spanId": self.ids.span_hex(),
            "name": self.name,
            // SERVER: the proxy serves the request it was sent.
            "kind": 2,
            "startTimeUnixNano": self.start_unix_nanos.to_string(),
            "endTimeUnixNano": self.end_unix_nanos.to_string(),
            "attributes": attributes,
            // ERROR for the proxy's own failures and 5xx; UNSET otherwise.
            "status": {"code": if self.status >= 500 { 2 } else { 0 }},
        });
        if let Some(p) = self.ids.parent {
            v["parentSpanId"] = hex_string(&p).into();
        }
        v
    }
}

/// Tracing as configured: the sampling ratio of new traces, and the exporter.
pub struct Tracer {
    /// New traces sampled per million.
    sample_per_million: u32,
    export: Option<tokio::sync::mpsc::Sender<Span>>,
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub export_errors: AtomicU64,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("sample_per_million", &self.sample_per_million)
            .finish()
    }
}

impl Tracer {
    /// A tracer sampling `ratio` (0..1) of new traces, exporting to `endpoint` (an
    /// OTLP/HTTP traces URL, `http://host:4318/v1/traces`) if given. Starts the
    /// exporter's task on the current runtime.
    pub fn new(ratio: f64, endpoint: Option<&str>) -> Result<Arc<Tracer>, String> {
        let export = match endpoint {
            Some(url) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| format!("--otlp-endpoint {url}: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(format!(
                        "--otlp-endpoint {url}: use http://HOST:PORT/v1/traces"
                    ));
                }
                let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
                Some((tx, rx, uri))
            }
            None => None,
        };
        let tracer = Arc::new(Tracer {
            sample_per_million: (ratio.clamp(0.0, 1.0) * 1e6) as u32,
            export: export.as_ref().map(|(tx, _, _)| tx.clone()),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            export_errors: AtomicU64::new(0),
        });
        if let Some((_, rx, uri)) = export {
            tokio::spawn(exporter(Arc::downgrade(&tracer), rx, uri));
        }
        Ok(tracer)
    }

    /// Starts a request's span: continues the trace of its `traceparent`, or starts
    /// one, and sets `traceparent` to name our span as the parent.
    pub fn begin(&self, headers: &mut HeaderMap) -> TraceIds {
        let continued = headers.get(&TRACEPARENT).and_then(|v| parse(v.as_bytes()));
        let span_id = loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                break id;
            }
        };
        let ids = match continued {
            Some((trace_id, parent, sampled)) => TraceIds {
                trace_id,
                span_id,
                parent: Some(parent),
                sampled,
            },
            None => TraceIds {
                trace_id: (fastrand::u128(..) | 1).to_be_bytes(),
                span_id,
                parent: None,
                sampled: fastrand::u32(..1_000_000) < self.sample_per_million,
            },
        };
        headers.insert(TRACEPARENT.clone(), ids.header());
        ids
    }

    /// Whether finished spans go anywhere.
    pub fn exports(&self) -> bool {
        self.export.is_some()
    }

    /// Hands a finished span to the exporter (if sampled), or drops it when the queue
    /// is full.
    pub fn finish(&self, span: Span) {
        if let Some(tx) = &self.export {
            if span.ids.sampled && tx.try_send(span).is_err() {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Sends spans in batches until the tracer is gone.
async fn exporter(
    tracer: std::sync::Weak<Tracer>,
    mut rx: tokio::sync::mpsc::Receiver<Span>,
    uri: http::Uri,
) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // The first span, then whatever comes within FLUSH_EVERY, up to a batch.
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let _ = tokio::time::timeout(FLUSH_EVERY, async {
            while batch.len() < BATCH {
                let room = BATCH - batch.len();
                if rx.recv_many(&mut batch, room).await == 0 {
                    break;
                }
            }
        })
        .await;
        let spans: Vec<Value> = batch.drain(..).map(|s| s.json()).collect();
        let n = spans.len() as u64;
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "gatehouse"}},
            ]},
            "scopeSpans": [{"scope": {"name": "gatehouse", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
        }]});
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(Bytes::from(body.to_string())));
        let sent = match req {
            Ok(req) => {
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(resp)) if resp.status().is_success() => true,
                    Ok(Ok(resp)) => {
                        tracing::warn!(status = %resp.status(), "the OTLP endpoint refused spans");
                        false
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot send spans to the OTLP endpoint");
                        false
                    }
                    Err(_) => false,
                }
            }
            Err(_) => false,
        };
        let Some(t) = tracer.upgrade() else {
            return;
        };
        match sent {
            true => t.exported.fetch_add(n, Relaxed),
            false => t.export_errors.fetch_add(n, Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_and_written() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, p, sampled) = parse(v).expect("valid");
        assert_eq!(hex_string(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex_string(&p), "00f067aa0ba902b7");
        assert!(sampled);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"garbage",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // A later version may carry more fields.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more").is_some());
        let ids = TraceIds {
            trace_id: t,
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent: Some(p),
            sampled: false,
        };
        assert_eq!(
            ids.header().to_str().ok(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-00")
        );
    }

    #[tokio::test]
    async fn a_request_continues_or_starts_a_trace() {
        let tracer = Tracer::new(1.0, None).expect("tracer");
        let mut h = HeaderMap::new();
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let ids = tracer.begin(&mut h);
        assert_eq!(ids.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ids.parent.map(|p| hex_string(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        let sent = h.get(&TRACEPARENT).and_then(|v| parse(v.as_bytes()));
        assert_eq!(sent, Some((ids.trace_id, ids.span_id, true)));
        let mut fresh = HeaderMap::new();
        let ids = tracer.begin(&mut fresh);
        assert!(ids.parent.is_none() && ids.sampled);
        let never = Tracer::new(0.0, None).expect("tracer");
        assert!(!never.begin(&mut HeaderMap::new()).sampled);
    }
}
