//! Traces: an in-process gatehouse with tracing on, sampling every new trace and
//! exporting spans over OTLP/HTTP to an in-test collector (a real HTTP server that
//! keeps what it is sent). A request that carries a `traceparent` is continued: the
//! backend sees the same trace with the proxy's span as its parent, and the collector
//! gets that span with the caller's span as the parent and the request's attributes.
//! A request without one (or with a malformed one) starts a trace; an unsampled one is
//! propagated but not exported. Over HTTP/1.1 (the fast path) and HTTP/2.

mod support;
use gatehouse_proxy::config::ProxyConfig;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// An OTLP/HTTP collector: every POSTed body, parsed.
async fn collector() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let addr = listen(move |s| {
        let keep = keep.clone();
        async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let keep = keep.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(
                            req.headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok()),
                            Some("application/json")
                        );
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        if let Ok(v) = serde_json::from_slice::<Value>(&body.unwrap_or_default()) {
                            keep.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                        ))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        }
    })
    .await;
    (addr, got)
}

/// The spans exported so far, by span id.
fn spans(got: &Mutex<Vec<Value>>) -> Vec<Value> {
    got.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flat_map(|doc| {
            doc["resourceSpans"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
                .flat_map(|s| s["spans"].as_array().into_iter().flatten())
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn span_with_id(got: &Mutex<Vec<Value>>, id: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(s) = spans(got).into_iter().find(|s| s["spanId"] == id) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "span {id} never exported; got {:?}",
            spans(got)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attribute(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| a["value"].clone())
        .unwrap_or(Value::Null)
}

/// (trace id, parent span id, flags) of a `traceparent`.
fn parts(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    assert_eq!(
        (p[0], p[1].len(), p[2].len(), p[3].len()),
        ("00", 32, 16, 2),
        "{tp}"
    );
    (p[1].to_string(), p[2].to_string(), p[3].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_traced_and_spans_exported() {
    let (otlp, got) = collector().await;
    let web = echo("web").await;
    let cfg = ProxyConfig {
        drain_timeout: Duration::from_secs(2),
        tracing: true,
        trace_sample: 1.0,
        otlp_endpoint: Some(format!("http://{otlp}/v1/traces")),
        ..ProxyConfig::default()
    };
    let (p, _) = start_proxy_with(
        &[
            ("classes.yaml", CLASSES),
            ("services.yaml", &service("default", "web", web, None)),
            ("ingresses.yaml", &ingress("web.example", "web")),
        ],
        &[],
        cfg,
    )
    .await;
    let c = client();
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";

    // Continued over HTTP/1.1 (the fast path).
    let r = send(
        &c,
        "GET",
        p.http,
        "web.example",
        "/orders?id=7",
        &[("traceparent", &format!("00-{TRACE}-{CALLER}-01"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let (trace, ours, flags) = parts(&r.upstream_header("traceparent").expect("propagated"));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(ours, CALLER, "the backend's parent is the proxy's span");
    let span = span_with_id(&got, &ours).await;
    assert_eq!(span["traceId"], TRACE);
    assert_eq!(span["parentSpanId"], CALLER);
    assert_eq!(span["kind"], 2);
    assert_eq!(
        attribute(&span, "http.request.method")["stringValue"],
        "GET"
    );
    assert_eq!(attribute(&span, "url.path")["stringValue"], "/orders");
    assert_eq!(
        attribute(&span, "http.response.status_code")["intValue"],
        "200"
    );
    assert_eq!(
        attribute(&span, "gatehouse.route")["stringValue"],
        "ingress/default/web"
    );
    assert_eq!(
        attribute(&span, "gatehouse.upstream.address")["stringValue"],
        web.to_string()
    );
    let (start, end) = (
        span["startTimeUnixNano"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok()),
        span["endTimeUnixNano"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok()),
    );
    assert!(
        start.zip(end).is_some_and(|(s, e)| s > 0 && s <= e),
        "{span}"
    );

    // Started over HTTP/2, and for a malformed traceparent.
    let h2 = h2c_get(p.http, "web.example", "/h2").await;
    assert_eq!(h2.status, 200);
    let (trace2, ours2, flags2) = parts(&h2.upstream_header("traceparent").expect("started"));
    assert_ne!(trace2, TRACE);
    assert_eq!(flags2, "01", "sampled (ratio 1)");
    let span = span_with_id(&got, &ours2).await;
    assert_eq!(span["traceId"], trace2.as_str());
    assert!(span.get("parentSpanId").is_none(), "a root span: {span}");
    assert_eq!(
        attribute(&span, "network.protocol.name")["stringValue"],
        "HTTP/2"
    );
    let bad = send(
        &c,
        "GET",
        p.http,
        "web.example",
        "/",
        &[("traceparent", "00-zz-1-01")],
    )
    .await;
    let (trace3, _, _) = parts(&bad.upstream_header("traceparent").expect("replaced"));
    assert_ne!(trace3, "zz");

    // Not sampled by the caller: propagated as such, never exported.
    let r = send(
        &c,
        "GET",
        p.http,
        "web.example",
        "/quiet",
        &[("traceparent", &format!("00-{TRACE}-{CALLER}-00"))],
    )
    .await;
    let (_, quiet, flags) = parts(&r.upstream_header("traceparent").expect("propagated"));
    assert_eq!(flags, "00");
    // A later sampled request's span arrives; the unsampled one never does.
    let r = send(&c, "GET", p.http, "web.example", "/after", &[]).await;
    let (_, after, _) = parts(&r.upstream_header("traceparent").expect("started"));
    span_with_id(&got, &after).await;
    assert!(
        !spans(&got).iter().any(|s| s["spanId"] == quiet.as_str()),
        "an unsampled span was exported"
    );
    // The proxy's own answers are spans too, and explain shows the trace.
    let lost = send(&c, "GET", p.http, "nowhere.example", "/x", &[]).await;
    assert_eq!(lost.status, 404);
    let rid = lost.header("x-request-id").expect("request id");
    let seen = get(&c, p.admin, "localhost", &format!("/requests/{rid}"))
        .await
        .json();
    let id = seen["spanId"]
        .as_str()
        .expect("the record names its span")
        .to_string();
    let span = span_with_id(&got, &id).await;
    assert_eq!(
        attribute(&span, "gatehouse.reason")["stringValue"],
        "no_route"
    );
    assert_eq!(span["status"]["code"], 0, "a 404 is not the proxy's error");
    let metrics = get(&c, p.admin, "localhost", "/metrics").await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gatehouse_trace_spans_exported_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
